"""Foundation: directives validated at configtest, the sync runner's lifecycle under the
parent's supervision (start, graceful, kill -9, stop), the status JSON, both MPMs."""
import os
import signal
import time

import pytest

from lib.httpd import Httpd, pid_alive, proc_info, processes_named, www_data_uid

MPMS = ["event", "prefork"]


def base_rmsync(conninfo, cycle=10):
    return f'RMSyncDatabase "{conninfo}"\nRMSyncSyncCycle {cycle}\n'


# ---------------------------------------------------------------------------- configtest

def _secret(h, content="demo-secret-change-me\n"):
    return h.write_file("secret.txt", content, 0o600)


BAD = [
    # (id, directive lines (may use {dir}), directive named, text in the message)
    ("secret-missing", "RMSyncGraphClientSecretFile {dir}/nope.txt",
     "RMSyncGraphClientSecretFile", "nope.txt"),
    ("secret-empty", "RMSyncGraphClientSecretFile {dir}/empty.txt",
     "RMSyncGraphClientSecretFile", "is empty"),
    ("graph-http", "RMSyncGraphURL http://graph.microsoft.com/v1.0", "RMSyncGraphURL", "https"),
    ("authority-ftp", "RMSyncGraphAuthorityURL ftp://login.example.com", "RMSyncGraphAuthorityURL",
     "expected https"),
    ("graph-not-url", "RMSyncGraphURL graph.microsoft.com", "RMSyncGraphURL", "not an absolute URL"),
    ("notify-http-public", "RMSyncNotificationURL http://crm.example.com/rmsync/notify",
     "RMSyncNotificationURL", "loopback"),
    ("lifecycle-http-public", "RMSyncLifecycleURL http://10.1.2.3/rmsync/lifecycle",
     "RMSyncLifecycleURL", "loopback"),
    ("cycle-low", "RMSyncSyncCycle 0", "RMSyncSyncCycle", "out of range"),
    ("cycle-word", "RMSyncSyncCycle often", "RMSyncSyncCycle", "not a number"),
    ("lifetime-high", "RMSyncSubscriptionLifetime 4231", "RMSyncSubscriptionLifetime",
     "out of range"),
    ("concurrency-high", "RMSyncGraphConcurrency 5", "RMSyncGraphConcurrency", "out of range"),
    ("timeouts-order", "RMSyncGraphTimeouts 60 30", "RMSyncGraphTimeouts", "longer than"),
    ("db-timeouts", "RMSyncDatabaseTimeouts 0 1000", "RMSyncDatabaseTimeouts", "out of range"),
    ("max-response", "RMSyncGraphMaxResponse 1K", "RMSyncGraphMaxResponse", "out of range"),
    ("max-body-garbage", "RMSyncMaxBodySize lots", "RMSyncMaxBodySize", "not a size"),
    ("window", "RMSyncSyncWindowDays 0", "RMSyncSyncWindowDays", "out of range"),
    ("log-retention", "RMSyncLogRetention 0", "RMSyncLogRetention", "out of range"),
    ("log-retention-word", "RMSyncLogRetention forever", "RMSyncLogRetention", "not a number"),
    ("delete-policy", "RMSyncDeletePolicy purge", "RMSyncDeletePolicy", "unknown policy 'purge'"),
    ("cancel-policy", "RMSyncCancelPolicy unlink", "RMSyncCancelPolicy", "unknown policy"),
    ("sync-from", "RMSyncInitialSyncFrom 2023-02-29", "RMSyncInitialSyncFrom", "not a date"),
    ("sync-from-word", "RMSyncInitialSyncFrom lastweek", "RMSyncInitialSyncFrom", "not a date"),
    ("conninfo", 'RMSyncDatabase "host=/tmp bogus_option=1"', "RMSyncDatabase",
     "bad connection string"),
    ("conninfo-quote", "RMSyncDatabase \"host='/tmp\"", "RMSyncDatabase", "bad connection string"),
    ("ca-missing", "RMSyncCAFile {dir}/no-ca.pem", "RMSyncCAFile", "no-ca.pem"),
    ("category-color", 'RMSyncMasterCategory "CRM Business Activity" preset99',
     "RMSyncMasterCategory", "preset0..preset24"),
    ("activity-url", "RMSyncActivityURL https://crm.example.com/activity",
     "RMSyncActivityURL", "%s"),
    ("permission-set", 'RMSyncPermissionSet "EXCHANGE SYNC"', "RMSyncPermissionSet",
     "characters"),
    ("mass-delete", "RMSyncMassDeleteLimit 10 150", "RMSyncMassDeleteLimit", "out of range"),
    ("log-dir", "RMSyncLogFile /nonexistent-rmsync-dir/sync.log", "RMSyncLogFile",
     "does not exist"),
    ("log-level", "RMSyncLogLevel trace", "RMSyncLogLevel", "unknown level"),
    ("max-reps", "RMSyncMaxRepresentatives 0", "RMSyncMaxRepresentatives", "out of range"),
    ("stall-low", "RMSyncRunnerStallTimeout 2", "RMSyncRunnerStallTimeout", "out of range"),
    ("stall-word", "RMSyncRunnerStallTimeout never", "RMSyncRunnerStallTimeout", "not a number"),
    ("stall-vs-db", "RMSyncDatabaseTimeouts 10 30000\nRMSyncRunnerStallTimeout 30",
     "RMSyncRunnerStallTimeout", "longer than one database wait"),
    ("tenant-chars", "RMSyncGraphTenant tenant/../x", "RMSyncGraphTenant", "characters"),
    ("flag", "RMSyncTransferAttendees maybe", "RMSyncTransferAttendees", "On or Off"),
    ("vhost", "<VirtualHost 127.0.0.1:{port}>\nRMSyncSyncCycle 60\n</VirtualHost>",
     "RMSyncSyncCycle", "cannot occur within"),
    ("cross-field", "RMSyncGraphTenant t1\nRMSyncGraphClientSecretFile {dir}/secret.txt",
     "RMSyncGraphClientId", "must be set together"),
    ("lifecycle-alone", "RMSyncLifecycleURL https://crm.example.com/rmsync/lifecycle",
     "RMSyncNotificationURL", "is not"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_configtest_rejects(httpd, case):
    _id, lines, directive, text = case
    h = httpd()
    h.write_file("empty.txt", "  \n", 0o600)
    _secret(h)
    h.write_conf(rmsync=lines.format(dir=h.dir, port=h.port))
    rc, out = h.configtest()
    assert rc != 0, out
    assert directive in out, out
    assert text in out, out
    assert "Syntax OK" not in out
    assert "demo-secret-change-me" not in out


def test_configtest_accepts_full_config(httpd, db_conninfo):
    h = httpd()
    secret = _secret(h)
    ca = h.write_file("ca.pem", "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    h.write_conf(rmsync="\n".join([
        f'RMSyncDatabase "{db_conninfo}"',
        "RMSyncDatabaseTimeouts 5 10000",
        "RMSyncGraphTenant rmsync-demo-tenant",
        "RMSyncGraphClientId rmsync-demo-client",
        f"RMSyncGraphClientSecretFile {secret}",
        "RMSyncGraphAuthorityURL https://127.0.0.1:9443/",
        "RMSyncGraphURL https://127.0.0.1:9443/v1.0",
        f"RMSyncCAFile {ca}",
        "RMSyncGraphTimeouts 5 30",
        "RMSyncGraphConcurrency 4 8",
        "RMSyncGraphMaxResponse 16M",
        f"RMSyncNotificationURL http://127.0.0.1:{h.port}/rmsync/notify",
        f"RMSyncLifecycleURL http://localhost:{h.port}/rmsync/lifecycle",
        "RMSyncSubscriptionLifetime 4230",
        "RMSyncMaxBodySize 512K",
        "RMSyncSyncCycle 60",
        "RMSyncInitialSyncFrom 2024-02-29",
        "RMSyncSyncWindowDays 180",
        "RMSyncDeletePolicy unlink",
        "RMSyncCancelPolicy delete",
        "RMSyncTransferAttendees On",
        'RMSyncMasterCategory "CRM Business Activity" preset7',
        "RMSyncActivityURL https://crm.example.com/activity/%s",
        "RMSyncPermissionSet EXCHANGE_SYNC_USER",
        "RMSyncMasterUser SYNC_MASTER",
        "RMSyncMassDeleteLimit 25 40%",
        f"RMSyncLogFile {h.dir}/sync.log",
        "RMSyncLogLevel debug",
        "RMSyncAdminRequireUser Off",
        "RMSyncMaxRepresentatives 500",
        "RMSyncRunnerStallTimeout 30",
        f"Mutex file:{h.dir} rmsync-shm",
    ]))
    rc, out = h.configtest()
    assert rc == 0, out
    assert "Syntax OK" in out
    assert "demo-secret-change-me" not in out


# ---------------------------------------------------------------------------- runner lifecycle

def runner_pid_of(st):
    return st["runner"]["pid"] if st["runner"]["alive"] else None


@pytest.fixture
def started(httpd, db_conninfo, request):
    """A started Apache with the module and a database configured (runner expected)."""
    def start(mpm):
        h = httpd(mpm=mpm)
        h.write_conf(rmsync=base_rmsync(db_conninfo))
        h.start()
        return h
    return start


@pytest.mark.parametrize("mpm", MPMS)
def test_runner_lifecycle(started, mpm):
    h = started(mpm)
    parent = h.parent_pid()
    st = h.wait_for(lambda s: s["runner"]["alive"], what="runner alive")
    pid = st["runner"]["pid"]
    gen = st["generation"]
    assert st["enabled"] is True

    # the runner is a child of the parent, runs as www-data, is the only one
    info = proc_info(pid)
    assert info is not None and info[0] == parent, info
    if h.as_root:
        assert info[1] == www_data_uid()
    assert info[2] == "rmsync-runner"
    assert h.runner_pids() == [pid]
    assert st["counters"]["runner_starts"] == 1

    # the heartbeat advances (a second status read later shows a newer beat)
    hb = st["runner"]["heartbeat_usec"]
    st = h.wait_for(lambda s: s["runner"]["heartbeat_usec"] > hb + 500000, timeout=5,
                    what="heartbeat to advance")
    assert st["runner"]["heartbeat_age_s"] < 3

    # graceful: a new generation with exactly one new runner; the old one is gone
    h.graceful()
    st = h.wait_for(lambda s: s["generation"] > gen and s["runner"]["alive"]
                    and s["runner"]["pid"] != pid, what="new runner after graceful")
    new = st["runner"]["pid"]
    assert not pid_alive(pid)
    assert h.parent_pid() == parent
    assert h.runner_pids() == [new]
    assert st["counters"]["runner_starts"] == 1   # counters are per generation

    # kill -9: the monitor hook respawns it within one monitor interval (~10 s)
    t0 = time.time()
    os.kill(new, signal.SIGKILL)
    st = h.wait_for(lambda s: s["runner"]["alive"] and s["runner"]["pid"] != new, timeout=40,
                    what="respawn after kill -9")
    assert time.time() - t0 < 40   # a few monitor ticks at most, with room for a loaded machine
    again = st["runner"]["pid"]
    assert h.runner_pids() == [again]
    assert st["counters"]["runner_starts"] == 2
    h.allow.add("RMS00033")   # "runner ... killed by signal 9, will respawn"

    # stop: nothing left behind
    h.stop()
    assert not pid_alive(parent)
    assert not pid_alive(again)
    assert again not in processes_named("rmsync-runner")


def test_cycle_ticks_reach_the_runner(started):
    h = started("event")
    st = h.wait_for(lambda s: s["runner"]["alive"], what="runner alive")
    assert st["runner"]["cycles"] == 0
    st = h.wait_for(lambda s: s["runner"]["cycles"] >= 1, timeout=30, interval=0.5,
                    what="a cycle tick (RMSyncSyncCycle 10)")
    assert st["runner"]["last_cycle"] is not None


def test_no_database_no_runner(httpd):
    h = httpd()
    h.write_conf(rmsync="RMSyncSyncCycle 30")
    h.start()
    st = h.status()
    assert st["enabled"] is False
    assert st["runner"]["pid"] is None
    assert st["runner"]["alive"] is False
    assert h.runner_pids() == []
    h.wait_log(r"RMS00004: RMSyncDatabase is not set")


def test_status_endpoint_contract(started):
    h = started("event")
    h.wait_for(lambda s: s["runner"]["alive"], what="runner alive")
    for path in ("/rmsync/status.json", "/rmsync/status?format=json"):
        r = h.get(path)
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.headers["Cache-Control"] == "no-store"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        j = r.json()
        for key in ("generation", "runner", "counters", "representatives", "time"):
            assert key in j
        for key in ("notifications_received", "notifications_accepted",
                    "notifications_bad_clientstate", "events_applied", "graph_429",
                    "delta_resyncs", "errors", "queue_depth"):
            assert j["counters"][key] == 0
        assert j["runner"]["heartbeat"].endswith("Z")
    r = h.get("/rmsync/status")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "Calendar Sync status" in r.text
    assert h.post("/rmsync/status.json").status_code == 405
    assert h.get("/rmsync/no-such-page").status_code == 404


def test_secret_never_logged(httpd, db_conninfo):
    h = httpd()
    secret = h.write_file("secret.txt", "Sup3r-S3cret-Value\n", 0o600)
    h.write_conf(rmsync=base_rmsync(db_conninfo) + "\n".join([
        "RMSyncGraphTenant rmsync-demo-tenant",
        "RMSyncGraphClientId rmsync-demo-client",
        f"RMSyncGraphClientSecretFile {secret}",
    ]), loglevel="trace8")
    h.start()
    h.wait_for(lambda s: s["runner"]["alive"], what="runner alive")
    h.allow.add("RMS00003")   # no RMSyncNotificationURL: periodic delta only
    h.wait_log("RMS00003")
    h.stop()
    assert "Sup3r-S3cret-Value" not in h.log_text()


def test_sample_conf_parses(httpd):
    """conf/rmsync.conf as shipped (all directives commented) passes configtest."""
    h = httpd()
    sample = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "conf", "rmsync.conf")
    h.write_conf(locations=False, extra=f"Include {sample}")
    rc, out = h.configtest()
    assert rc == 0 and "Syntax OK" in out, out


def test_sample_conf_directives_documented():
    """Every directive the module knows is in README.md's table and in conf/rmsync.conf."""
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(top, "mod_rmsync", "rmsync_config.c")) as f:
        src = f.read()
    import re
    names = set(re.findall(r'AP_INIT_\w+\("(RMSync\w+)"', src))
    assert len(names) >= 30
    with open(os.path.join(top, "README.md")) as f:
        readme = f.read()
    with open(os.path.join(top, "conf", "rmsync.conf")) as f:
        conf = f.read()
    for n in sorted(names):
        assert f"| `{n}` |" in readme, n
        assert f"#{n} " in conf, n


def test_run_demo_script(tmp_path):
    """tests/run-demo.sh starts PostgreSQL, the simulator and Apache; demo.env describes them;
    `stop` leaves nothing running."""
    import shlex
    import subprocess
    import requests
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = tmp_path / "demo-run"
    env = dict(os.environ, RMSYNC_DEMO_DIR=str(run), RMSYNC_DEMO_CYCLE="10", RMSYNC_DEMO_NOBUILD="1")
    script = os.path.join(top, "tests", "run-demo.sh")
    try:
        r = subprocess.run([script], cwd=top, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=300)
        assert r.returncode == 0, r.stdout
        assert "/rmsync/" in r.stdout
        out = subprocess.run(["bash", "-c", f". {shlex.quote(str(run / 'demo.env'))} && env"],
                             stdout=subprocess.PIPE, text=True, check=True).stdout
        denv = dict(l.split("=", 1) for l in out.splitlines() if l.startswith("RMSYNC_"))
        st = requests.get(denv["RMSYNC_STATUS_URL"], timeout=10).json()
        assert st["enabled"] is True
        pid = st["runner"]["pid"]
        # the database answers with the module's credentials and holds the demo data
        n = subprocess.run(["psql", "-X", "-At", denv["RMSYNC_DB_CONNINFO"], "-c",
                            "SELECT count(*) FROM crm.business_representative"],
                           stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
        assert int(n) >= 3
        if denv.get("RMSYNC_GRAPHSIM_URL"):
            assert denv["RMSYNC_TENANT"] == "rmsync-demo-tenant"
            tok = requests.post(f'{denv["RMSYNC_AUTHORITY_URL"]}/{denv["RMSYNC_TENANT"]}'
                                "/oauth2/v2.0/token", verify=denv["RMSYNC_CA_FILE"], timeout=10,
                                data={"grant_type": "client_credentials",
                                      "client_id": denv["RMSYNC_CLIENT_ID"],
                                      "client_secret": denv["RMSYNC_CLIENT_SECRET"],
                                      "scope": "https://graph.microsoft.com/.default"})
            assert tok.status_code == 200, tok.text
            # the demo switched Sync Active on; the runner then syncs the demo mailboxes
            assert denv["RMSYNC_DEMO_ACTIVE_REPS"] == "ALICE BOB CAROL"
            deadline = time.time() + 40
            while time.time() < deadline:
                st = requests.get(denv["RMSYNC_STATUS_URL"], timeout=10).json()
                if st["counters"]["delta_passes"] >= 3:
                    break
                time.sleep(0.5)
            assert st["counters"]["delta_passes"] >= 3, st
    finally:
        s = subprocess.run([script, "stop"], cwd=top, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=120)
    assert s.returncode == 0, s.stdout
    assert not (run / "demo.env").exists()
    assert not pid_alive(pid)
    with pytest.raises(requests.RequestException):
        requests.get(denv["RMSYNC_STATUS_URL"], timeout=2)


def test_runner_exits_when_parent_dies(httpd, db_conninfo):
    """kill -9 of the httpd parent: the runner notices (pipe EOF / parent-death signal) and
    exits by itself instead of lingering as an orphan."""
    h = httpd()
    h.write_conf(rmsync=base_rmsync(db_conninfo))
    h.start()
    st = h.wait_for(lambda s: s["runner"]["alive"], what="runner alive")
    runner = st["runner"]["pid"]
    parent = h.parent_pid()
    kids = list(h.children())
    os.kill(parent, signal.SIGKILL)
    deadline = time.time() + 5
    while time.time() < deadline and pid_alive(runner):
        time.sleep(0.05)
    gone = not pid_alive(runner)
    for k in kids:   # the orphaned worker children are ours to clean up
        try:
            os.kill(k, signal.SIGKILL)
        except OSError:
            pass
    assert gone, "runner still alive 5 s after its parent was killed"


@pytest.mark.parametrize("mech", ["flock", "fcntl", "sysvsem"])
def test_mutex_directive_mechanisms(httpd, db_conninfo, mech):
    """`Mutex <mech> rmsync-shm` is honoured; the runner (after dropping privileges) and the
    workers both take the lock: the heartbeat keeps advancing and status answers."""
    h = httpd()
    where = f":{h.dir}" if mech in ("flock", "fcntl") else ""
    h.write_conf(rmsync=base_rmsync(db_conninfo) + f"Mutex {mech}{where} rmsync-shm\n")
    h.start()
    st = h.wait_for(lambda s: s["runner"]["alive"], what="runner alive")
    hb = st["runner"]["heartbeat_usec"]
    h.wait_for(lambda s: s["runner"]["heartbeat_usec"] > hb + 1000000, timeout=6,
               what="heartbeat to advance")
    if mech == "flock":   # (APR unlinks an fcntl lock file right after opening it)
        assert any(n.startswith("rmsync-shm") for n in os.listdir(h.dir)), os.listdir(h.dir)
    h.graceful()
    h.wait_for(lambda s: s["generation"] > st["generation"] and s["runner"]["alive"],
               what="runner after graceful")


@pytest.mark.parametrize("mpm", MPMS)
def test_restart_and_graceful_stop(started, mpm):
    """`-k restart` (SIGHUP, also sent to the process group) replaces the runner cleanly;
    `-k graceful-stop` (SIGWINCH) ends with no runner left."""
    h = started(mpm)
    st = h.wait_for(lambda s: s["runner"]["alive"], what="runner alive")
    old, gen = st["runner"]["pid"], st["generation"]
    rc, out = h.apachectl("-k", "restart")
    assert rc == 0, out
    st = h.wait_for(lambda s: s["generation"] > gen and s["runner"]["alive"]
                    and s["runner"]["pid"] != old, what="new runner after restart")
    assert not pid_alive(old)
    assert h.runner_pids() == [st["runner"]["pid"]]
    parent, runner = h.parent_pid(), st["runner"]["pid"]
    rc, out = h.apachectl("-k", "graceful-stop")
    assert rc == 0, out
    deadline = time.time() + 20
    while time.time() < deadline and (pid_alive(parent) or pid_alive(runner)):
        time.sleep(0.05)
    assert not pid_alive(parent)
    assert not pid_alive(runner)


def test_single_process_debug_mode(httpd, db_conninfo):
    """`apache2 -X` (one process, for debugging): the runner is forked and keeps running (the
    parent-as-child must not close the runner's pipe); SIGTERM ends both. With
    RMSYNC_VALGRIND=1 the server runs under valgrind and must report no errors."""
    import subprocess
    h = httpd()
    h.write_conf(rmsync=base_rmsync(db_conninfo))
    cmd = ["/usr/sbin/apache2", "-X", "-d", h.dir, "-f", h.conf]
    vg = os.environ.get("RMSYNC_VALGRIND") == "1"
    if vg:
        cmd = ["valgrind", "--quiet", "--error-exitcode=99",
               f"--log-file={h.dir}/valgrind.%p.log"] + cmd
    p = subprocess.Popen(cmd, env=h.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        st = h.wait_for(lambda s: s["runner"]["alive"], timeout=60 if vg else 20,
                        what="runner alive")
        runner = st["runner"]["pid"]
        t_end = time.time() + 3
        while time.time() < t_end:
            assert pid_alive(runner), "runner exited in -X mode"
            h.get("/rmsync/status")
            time.sleep(0.2)
        st = h.status()
        assert st["runner"]["alive"] and st["runner"]["pid"] == runner
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
    deadline = time.time() + 10
    while time.time() < deadline and pid_alive(runner):
        time.sleep(0.05)
    assert not pid_alive(runner)
    if vg:
        reports = ""
        for f in os.listdir(h.dir):
            if f.startswith("valgrind."):
                with open(os.path.join(h.dir, f)) as fh:
                    reports += "".join(l for l in fh if "could not unlink" not in l)
        assert not reports.strip(), reports
        assert rc in (0, 1), rc   # apache2 -X exits 1 on SIGTERM in some MPMs; 99 = valgrind errors


# ---------------------------------------------------------------------------- hung runner

def test_hung_runner_is_replaced_and_sync_goes_on():
    """A runner that is alive but does nothing (SIGSTOP) is stopped and replaced by the parent
    (RMSyncRunnerStallTimeout), with an error line that names it; the sync goes on."""
    from engine_stack import ALICE, EngineStack

    st = EngineStack(cycle=2, extra="RMSyncDatabaseTimeouts 2 2000\nRMSyncRunnerStallTimeout 5")
    bad = []
    try:
        h = st.httpd
        # no webhook URL here (RMS00003); the stall report and the stalled runner's end:
        # SIGTERM handled (exit status, RMS00034) or SIGKILL after the grace (RMS00041, RMS00033)
        h.allow.update({"RMS00003", "RMS00040", "RMS00041", "RMS00033", "RMS00034"})
        no, ev = st.new_linked(ALICE, "Before the stall")
        old = h.runner_pids()
        assert len(old) == 1, old
        old = old[0]
        os.kill(old, signal.SIGSTOP)
        try:
            # timeout + monitor interval (~10 s) + SIGTERM grace / reaping + respawn interval
            new = st.wait_for(lambda: [p for p in h.runner_pids() if p != old], timeout=90,
                              what="a new runner after the stall")
        finally:
            if pid_alive(old):
                os.kill(old, signal.SIGCONT)
        line = h.wait_log(r"RMS00040: runner %d stalled: no heartbeat for \d+ s "
                          r"\(RMSyncRunnerStallTimeout 5 s\)" % old, timeout=5)
        assert ":error]" in line
        st.wait_for(lambda: not pid_alive(old), timeout=30, what="the stalled runner gone")
        assert h.runner_pids() == new
        s = h.wait_for(lambda s: s["runner"]["alive"] and s["runner"]["pid"] == new[0],
                       timeout=30, what="the new runner's heartbeat")
        assert s["counters"]["runner_starts"] == 2
        # the sync goes on: an Outlook edit reaches the linked activity
        st.sim.user_patch(ALICE, ev["id"], {"subject": "After the stall"})
        st.wait_for(lambda: st.activity(no)["description"] == "After the stall", timeout=30,
                    what="the edit applied by the new runner")
        # exactly one stall report for the one stall
        assert len([l for l in h.log_lines(since_last_check=False) if "RMS00040" in l]) == 1
    finally:
        bad = st.close()
    assert not bad, "unexpected error log lines:\n" + "\n".join(bad)

