"""Shared pytest fixtures for the mod_rmsync suites.

- `pg`: a throwaway PostgreSQL cluster with the crm + rmsync schemas and demo data
  (tests/lib/pg.py), one per session.
- `db_conninfo`: what RMSyncDatabase gets (the cluster's app conninfo).
- `httpd`: a factory for real Apache instances (tests/lib/httpd.py); every instance is stopped
  and its error log checked for unexpected [warn]/[error] lines (allowed by message id through
  `h.allow`), crashes and AddressSanitizer reports when the test ends.
- after every test (autouse): every Apache still running, the module-scoped stacks' too, is
  checked for crashes ("exit signal", AH00060) and new ASan reports, so the test during which
  a child crashed fails, not a later one.
"""
import os
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from lib import httpd as httpd_lib  # noqa: E402
from lib.httpd import Httpd, MODULE  # noqa: E402
from lib.pg import PgCluster  # noqa: E402


@pytest.fixture(scope="session")
def pg():
    c = PgCluster(demo=True).start()
    yield c
    c.destroy()


@pytest.fixture(scope="session")
def db_conninfo(pg):
    return pg.conninfo


@pytest.fixture(autouse=True)
def no_crash():
    yield
    crashes = []
    for h in list(httpd_lib._live):
        crashes += h.crash_lines(getattr(h, "allow", ()))
    if crashes:
        pytest.fail("Apache crashed during this test:\n" + "\n".join(crashes))


@pytest.fixture
def httpd(request):
    if not os.path.exists(MODULE):
        pytest.fail(f"{MODULE} is missing: run ./apxs-build.sh first")
    made = []

    def make(mpm=None, **kw):
        h = Httpd(mpm=mpm, **kw)
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
