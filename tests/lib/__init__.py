"""Helpers shared by the mod_rmsync pytest suites (pg.py: throwaway PostgreSQL clusters)."""
