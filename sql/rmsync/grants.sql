-- mod_rmsync: give the module's login role what it needs in the crm and rmsync schemas.
-- Usage: psql -v ON_ERROR_STOP=1 -v app_role=rmsync -f grants.sql   (idempotent)
-- The role must exist (CREATE ROLE rmsync LOGIN PASSWORD '...').
BEGIN;
GRANT USAGE ON SCHEMA crm, rmsync TO :"app_role";
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA crm TO :"app_role";
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA rmsync TO :"app_role";
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA crm, rmsync TO :"app_role";
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA crm, rmsync TO :"app_role";
-- objects created later by the installing role (upgrades) are granted too
ALTER DEFAULT PRIVILEGES IN SCHEMA crm, rmsync GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app_role";
ALTER DEFAULT PRIVILEGES IN SCHEMA crm, rmsync GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO :"app_role";
COMMIT;
