"""The core libpq layer (mod_rmsync/core/rmsync_db.c) against a live cluster, through the
C driver build/tools/dbcheck (built by ./apxs-build.sh): prepared statements with NULLs and
quotes, errors, transactions and the acting CRM user, statement_timeout, LISTEN/NOTIFY,
advisory locks, the thread pool, and reconnects across server stop/start/crash."""
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib.pg import PgCluster  # noqa: E402

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DBCHECK = os.path.join(TOP, "build", "tools", "dbcheck")

pytestmark = pytest.mark.skipif(not os.access(DBCHECK, os.X_OK),
                                reason="build/tools/dbcheck missing: run ./apxs-build.sh")


@pytest.fixture(scope="module")
def pg():
    c = PgCluster(demo=True).start()
    yield c
    c.destroy()


def run(check, conninfo, env=None, timeout=60):
    r = subprocess.run([DBCHECK, check, conninfo], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=timeout, env=dict(os.environ, **(env or {})))
    assert r.returncode == 0 and f"OK {check}" in r.stdout, r.stdout
    return r.stdout


def test_skip_without_conninfo():
    env = dict(os.environ)
    env.pop("RMSYNC_TEST_DB", None)
    r = subprocess.run([DBCHECK, "params"], stdout=subprocess.PIPE, text=True, env=env)
    assert r.returncode == 77 and "SKIP" in r.stdout


def test_params_errors_transactions(pg):
    no = pg.val("INSERT INTO crm.business_activity (description, start_time, end_time, main_representative_id)"
                " VALUES ('dbcheck', now(), now() + interval '1 hour', 'ALICE') RETURNING activity_no")
    pg.sql("INSERT INTO rmsync.event_link (activity_no, representative_id, event_id) VALUES ($1, 'ALICE', $2)",
           no, "dbcheck-" + no)
    out = run("params", pg.conninfo, env={"DBCHECK_LINKED_ACTIVITY": no})
    # the layer logs the failing prepare of t_missing_table with its id, and nothing else
    assert "RMS00203" in out
    assert pg.val("SELECT description FROM crm.business_activity WHERE activity_no = $1", no) == "by the sync"


def test_deferred_statements_and_async_commit(pg):
    # rmsync_db_defer / begin_as queue statements for one libpq pipeline; their failure is the
    # failure of what they were sent with; commit_async turns synchronous_commit off for that
    # one transaction only
    run("defer", pg.conninfo)


def test_statement_timeout(pg):
    run("timeout", pg.conninfo)


def test_listen_notify(pg):
    run("listen", pg.conninfo)


def test_advisory_locks(pg):
    run("lock", pg.conninfo)


def test_pool_threads(pg):
    run("pool", pg.conninfo)


def test_handle_inherited_across_fork(pg):
    out = run("fork", pg.conninfo)
    assert "RMS00205" in out      # the child noticed and connected afresh


def test_enqueue_bench_runs(pg):
    # numbers only (printed with -s); asserts that 4000 pooled inserts all succeed and coalesce nothing
    out = run("bench", pg.conninfo, timeout=120)
    print(out)
    assert pg.val("SELECT count(*) FROM rmsync.notification WHERE subscription_id = 'bench-sub'") == "4000"


def test_bad_password_is_down_fast(pg):
    t0 = time.time()
    r = subprocess.run([DBCHECK, "reconnect", pg.conninfo.replace(pg.app_password, "wrong")],
                       input="quit\n", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
    assert r.returncode != 0 and "RMS00200" in r.stdout and "password authentication failed" in r.stdout
    assert pg.app_password not in r.stdout and "wrong" not in r.stdout   # conninfo never logged
    assert time.time() - t0 < 5


class Driver:
    """The interactive `dbcheck reconnect` process."""

    def __init__(self, conninfo):
        self.p = subprocess.Popen([DBCHECK, "reconnect", conninfo], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.out = []
        self.expect("READY")

    def expect(self, prefix):
        while True:
            line = self.p.stdout.readline()
            assert line, "dbcheck exited:\n" + "".join(self.out)
            self.out.append(line)
            assert not line.startswith("FAIL"), "".join(self.out)
            if line.startswith(prefix):
                return line

    def cmd(self, c, expect):
        self.p.stdin.write(c + "\n")
        self.p.stdin.flush()
        return self.expect(expect)

    def finish(self):
        self.p.stdin.write("quit\n")
        self.p.stdin.flush()
        rest, _ = self.p.communicate(timeout=30)
        self.out.append(rest)
        assert self.p.returncode == 0, "".join(self.out)
        return "".join(self.out)


def test_reconnect_after_restart_stop_and_crash(pg):
    d = Driver(pg.conninfo)
    try:
        # a clean restart while idle: the next statement reconnects transparently
        pg.restart()
        line = d.cmd("up", "OK up")
        assert "tries=1" in line            # no failed statement: the dead idle session was noticed
        # server down: statements fail fast with EDOWN (the webhook's 503) ...
        pg.stop()
        line = d.cmd("down", "OK down")
        assert int(line.split()[2]) < 1000
        # ... and work again once it is back
        pg.start()
        d.cmd("up", "OK up")
        # a crash (SIGKILL of every server process)
        pg.kill()
        pg.start()
        d.cmd("up", "OK up")
        # a transaction open across a restart is lost, never half-applied or silently resumed
        d.cmd("txn", "OK txn")
        pg.restart()
        d.cmd("txn_lost", "OK txn_lost")
        out = d.finish()
    finally:
        if d.p.poll() is None:
            d.p.kill()
    assert "RMS00201" in out   # the loss is logged (as a warning)
