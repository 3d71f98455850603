"""Shared pytest fixtures for the mod_rmsync suites.

- `pg`: a throwaway PostgreSQL cluster with the crm + rmsync schemas and demo data
  (tests/lib/pg.py), one per session; None when pg.py is not there.
- `db_conninfo`: what RMSyncDatabase gets (the cluster's app conninfo, or an unreachable one).
- `httpd`: a factory for real Apache instances (tests/lib/httpd.py); every instance is stopped
  and its error log checked for unexpected [warn]/[error] lines (allowed by message id through
  `h.allow`) when the test ends.
"""
import os
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from lib.httpd import Httpd, MODULE  # noqa: E402

try:
    from lib.pg import PgCluster  # noqa: E402
except ImportError:  # the DB fixture has not landed in this checkout
    PgCluster = None


@pytest.fixture(scope="session")
def pg():
    if PgCluster is None:
        yield None
        return
    c = PgCluster(demo=True).start()
    yield c
    c.destroy()


@pytest.fixture(scope="session")
def db_conninfo(pg):
    if pg is None:
        return "host=/nonexistent-rmsync dbname=rmsync connect_timeout=1"
    return pg.conninfo


@pytest.fixture
def httpd(request):
    if not os.path.exists(MODULE):
        pytest.fail(f"{MODULE} is missing: run ./apxs-build.sh first")
    made = []

    def make(mpm=None, **kw):
        h = Httpd(mpm=mpm, **kw)
        h.allow = set()
        made.append(h)
        return h

    yield make
    failures = []
    for h in made:
        try:
            h.stop()
        except Exception as e:  # still check the log, then report
            failures.append(f"stop failed: {e}")
        bad = h.bad_log_lines(h.allow)
        if bad:
            failures.append("unexpected error log lines:\n" + "\n".join(bad))
        h.destroy()
    if failures:
        pytest.fail("\n".join(failures))
