"""Graph client (mod_rmsync/core/rmsync_graph.c) against the Graph simulator, through the C driver
build/tools/graphcheck (tests/tools/graphcheck.c).

Run: pytest-3 tests/test_graph_client.py   (builds the driver with ./apxs-build.sh if missing)
"""
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import http.server
import urllib.parse

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIMDIR = os.environ.get("RMSYNC_GRAPHSIM_DIR", os.path.join(TOP, "tests", "graphsim"))
GRAPHCHECK = os.path.join(TOP, "build", "tools", "graphcheck")

if not os.path.exists(os.path.join(SIMDIR, "simclient.py")):
    pytest.skip("Graph simulator not found in %s" % SIMDIR, allow_module_level=True)
sys.path.insert(0, SIMDIR)
from simclient import GraphSim  # noqa: E402

TENANT = "gc-tenant"
CLIENT = "gc-client"
SECRET = "gc-s3cret+/=&value"
ALICE = "alice@gc.test"
BOB = "bob@gc.test"
ALICE_ID = "11111111-1111-4111-8111-aaaaaaaaaaaa"
BOB_ID = "22222222-2222-4222-8222-bbbbbbbbbbbb"


def utc_day(offset_days=0):
    base = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return base + dt.timedelta(days=offset_days)


def iso(d):
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


def ev_body(subject, day, hour=10, minutes=60, **extra):
    st = utc_day(day) + dt.timedelta(hours=hour)
    en = st + dt.timedelta(minutes=minutes)
    b = {"subject": subject,
         "start": {"dateTime": st.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
         "end": {"dateTime": en.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}}
    b.update(extra)
    return b


WIN_START = iso(utc_day(-2))
WIN_END = iso(utc_day(30))


@pytest.fixture(scope="session")
def graphcheck():
    srcs = [os.path.join(TOP, "tests", "tools", "graphcheck.c")] + \
        [os.path.join(TOP, "mod_rmsync", "core", f) for f in os.listdir(os.path.join(TOP, "mod_rmsync", "core"))]
    if not os.path.exists(GRAPHCHECK) or any(os.path.getmtime(s) > os.path.getmtime(GRAPHCHECK) for s in srcs):
        subprocess.run([os.path.join(TOP, "apxs-build.sh"), "--tools"], cwd=TOP, check=True,
                       stdout=subprocess.DEVNULL)
    return GRAPHCHECK


@pytest.fixture(scope="session")
def sim():
    d = tempfile.mkdtemp(prefix="gc-graphsim-")
    s = GraphSim(state_dir=d)
    yield s
    s.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def env(sim, graphcheck):
    sim.reset()
    sim.config_defaults()
    sim.clear_faults()
    sim.seed({
        # User.Read.All: the driver's scenarios resolve users (GET /users/{upn}), a directory
        # call Graph refuses without it; the module itself never needs it.
        "apps": [{"tenant": TENANT, "client_id": CLIENT, "client_secret": SECRET,
                  "permissions": ["Calendars.ReadWrite", "MailboxSettings.ReadWrite",
                                  "User.Read.All"]}],
        "users": [{"id": ALICE_ID, "mail": ALICE, "displayName": "Alice"},
                  {"id": BOB_ID, "mail": BOB, "displayName": "Bob"}],
    })
    for i in range(5):
        sim.user_create(ALICE, ev_body("Alice meeting %d" % i, day=i + 1,
                                       attendees=[{"type": "required",
                                                   "emailAddress": {"address": "Bob@GC.test", "name": "Bob"}}]))
    sim.user_create(BOB, ev_body("Bob meeting", day=2))
    sim.reset_counters()
    yield Driver(sim, graphcheck)
    sim.clear_faults()


class Driver:
    def __init__(self, sim, exe):
        self.sim = sim
        self.exe = exe

    def args(self, **opts):
        a = {"authority": self.sim.authority_url, "graph": self.sim.graph_url, "tenant": TENANT,
             "client-id": CLIENT, "secret": SECRET, "ca-file": self.sim.ca_file,
             "backoff-ms": 100, "max-wait": 20, "timeout": 20}
        a.update({k.replace("_", "-"): v for k, v in opts.items()})
        out = [self.exe]
        for k, v in a.items():
            if v is not None:
                out += ["--" + k, str(v)]
        return out

    def run(self, *scenario, expect_rc=None, timeout=120, valgrind=False, **opts):
        cmd = self.args(**opts) + [str(s) for s in scenario]
        if valgrind:
            cmd = ["valgrind", "--quiet", "--error-exitcode=99", "--leak-check=full",
                   "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite"] + cmd
        t0 = time.monotonic()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        elapsed = time.monotonic() - t0
        out, err = p.stdout.decode(), p.stderr.decode()
        if expect_rc is not None:
            assert p.returncode == expect_rc, "rc %d\nstdout: %s\nstderr: %s" % (p.returncode, out, err)
        assert p.returncode in (0, 1), "driver crashed or misused: rc %d\n%s\n%s" % (p.returncode, out, err)
        lines = [l for l in out.splitlines() if l.strip()]
        assert lines, "no output; stderr: %s" % err
        return json.loads(lines[-1]), err, elapsed

    def counters(self):
        return self.sim.counters()


# ---------------------------------------------------------------------------------------- token

def test_token_fetched_once_and_reused(env):
    r, err, _ = env.run("user", ALICE, 10, expect_rc=0)
    assert r["ok"] == 10
    assert all(c["status"] == "OK" and c["id"] == ALICE_ID for c in r["calls"])
    assert r["stats"]["token_requests"] == 1
    assert env.counters()["token_requests"] == 1
    # every call has its own client-request-id, echoed request ids are captured
    crids = {c["client_request_id"] for c in r["calls"]}
    assert len(crids) == 10 and all(c["request_id"] for c in r["calls"])
    assert "s3cret" not in err


def test_token_expiry_refreshes_proactively(env):
    env.sim.config(token_lifetime_s=3)
    # calls at ~0 s, 1.6 s, 3.2 s: the token is refreshed before it expires (10% early), never 401
    r, _, _ = env.run("user-wait", ALICE, 3, 1600, expect_rc=0)
    assert r["ok"] == 3
    assert r["stats"]["token_requests"] == 2
    assert r["stats"]["auth_retries"] == 0
    assert env.counters()["status_counts"].get("401", 0) == 0


def test_401_once_refreshes_and_retries(env):
    env.sim.fault("status", status=401, count=1, match={"user": ALICE})
    r, _, _ = env.run("user", ALICE, 2, expect_rc=0)
    assert r["ok"] == 2
    assert r["calls"][0]["attempts"] == 2
    assert r["stats"]["auth_retries"] == 1
    assert r["stats"]["token_requests"] == 2


def test_revoked_token_refreshes(env):
    # the token is revoked between two calls of one process: 401 -> new token -> success
    p = subprocess.Popen(env.args() + ["user-wait", ALICE, "2", "1500"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    time.sleep(0.7)
    env.sim.fault("revoke_tokens")
    out, _ = p.communicate(timeout=30)
    r = json.loads(out.decode().splitlines()[-1])
    assert p.returncode == 0 and r["ok"] == 2
    assert r["calls"][1]["attempts"] == 2
    assert r["stats"]["token_requests"] == 2


def test_401_twice_gives_auth_error_not_a_loop(env):
    env.sim.fault("status", status=401, count=5, match={"user": ALICE})
    r, err, _ = env.run("user", ALICE, 1, expect_rc=1)
    c = r["calls"][0]
    assert c["status"] == "AUTH" and c["attempts"] == 2 and c["http_status"] == 401
    assert "RMS00312" in err


def test_bad_secret_clear_error_without_secret(env):
    bad = "wrong-Secret-XYZ987"
    r, err, _ = env.run("user", ALICE, 1, secret=bad, expect_rc=1)
    c = r["calls"][0]
    assert c["status"] == "AUTH"
    assert c["error_code"] == "invalid_client"
    assert "RMS00301" in err and "invalid client secret" in err and "AADSTS7000215" in err
    assert bad not in err and bad not in json.dumps(r)
    assert r["stats"]["requests"] == 0          # no Graph call without a token


def test_bad_secret_many_threads_ask_the_authority_once(env):
    r, err, _ = env.run("hammer", ALICE, 8, 2, secret="bad-secret", expect_rc=1)
    assert r["ok"] == 0 and all(t["last"] == "AUTH" for t in r["threads"])
    assert env.counters()["token_requests"] == 1        # refusal remembered briefly
    assert err.count("RMS00301") == 1


def test_token_refresh_under_load_never_401(env):
    env.sim.config(token_lifetime_s=2)
    env.sim.fault("latency", ms=100, count=10000, match={"user": ALICE})
    r, _, elapsed = env.run("hammer", ALICE, 6, 25, expect_rc=0)
    assert r["ok"] == 150
    assert elapsed > 3          # lived through at least one refresh
    c = env.counters()
    assert c["status_counts"].get("401", 0) == 0
    # refreshed a quarter of the 2 s lifetime early: one token per ~1.5 s at most
    assert 2 <= c["token_requests"] <= 1 + int(elapsed / 1.4) + 1


def test_tls_verification_needs_the_ca_file(env):
    # system store only: the simulator's own CA is not trusted
    r, err, _ = env.run("token", ca_file="", expect_rc=1)
    assert r["status"] == "ETLS"
    assert "RMS00300" in err
    # a CA file that is not the simulator's
    r, _, _ = env.run("token", ca_file="/etc/ssl/certs/ca-certificates.crt", expect_rc=1)
    assert r["status"] == "ETLS"
    r, _, _ = env.run("token", expect_rc=0)
    assert r["status"] == "OK"


def test_plain_http_refused(env):
    p = subprocess.run(env.args(graph=env.sim.graph_url.replace("https://", "http://")) + ["token"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.returncode == 2 and b"RMS00340" in p.stderr


# ---------------------------------------------------------------------------------------- delta

def test_delta_paging_changes_and_removed(env):
    r, _, _ = env.run("delta", ALICE, WIN_START, WIN_END, 2, expect_rc=0)
    assert r["pages"] >= 3                      # 5 events, 2 per page
    evs = r["events"]
    subjects = sorted(e["subject"] for e in evs if not e["removed"])
    assert subjects == ["Alice meeting %d" % i for i in range(5)]
    assert all(e["hash"] and len(e["hash"]) == 40 for e in evs)
    assert all(e["attendees"] == ["bob@gc.test"] for e in evs)
    link = r["delta_link"]
    assert link.startswith(env.sim.graph_url)
    # a later delta shows a change and a removal
    ids = {e["subject"]: e for e in evs}
    changed, gone = ids["Alice meeting 1"], ids["Alice meeting 3"]
    env.sim.user_patch(ALICE, changed["id"], {"subject": "Alice meeting 1 (moved)"})
    env.sim.user_delete(ALICE, gone["id"])
    r2, _, _ = env.run("delta", ALICE, WIN_START, WIN_END, 2, link, expect_rc=0)
    by_id = {e["id"]: e for e in r2["events"]}
    assert by_id[changed["id"]]["subject"] == "Alice meeting 1 (moved)"
    assert by_id[changed["id"]]["hash"] != changed["hash"]
    assert by_id[gone["id"]]["removed"] is True
    assert by_id[gone["id"]]["reason"] == "deleted"
    # and then nothing
    r3, _, _ = env.run("delta", ALICE, WIN_START, WIN_END, 2, r2["delta_link"], expect_rc=0)
    assert [e for e in r3["events"] if e["id"] in (changed["id"], gone["id"])] == [] or \
        all(e["removed"] or e["hash"] == by_id[e["id"]]["hash"] for e in r3["events"])


def test_immutable_ids_and_utc_on_every_request(env):
    import zoneinfo
    local = (utc_day(6) + dt.timedelta(hours=9, minutes=30)).replace(tzinfo=None)
    made = env.sim.user_create(ALICE, {"subject": "Berlin time",
                                       "start": {"dateTime": local.strftime("%Y-%m-%dT%H:%M:%S"),
                                                 "timeZone": "W. Europe Standard Time"},
                                       "end": {"dateTime": (local + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"),
                                               "timeZone": "W. Europe Standard Time"}})
    want = local.replace(tzinfo=zoneinfo.ZoneInfo("Europe/Berlin")).astimezone(dt.timezone.utc)
    r, _, _ = env.run("delta", ALICE, WIN_START, WIN_END, 3, expect_rc=0)
    ev = [e for e in r["events"] if e.get("subject") == "Berlin time"][0]
    assert ev["id"] == made["immutableId"] != made["restId"]
    assert ev["start"] == iso(want)
    assert 'IdType="ImmutableId"' in r["result"]["preference_applied"]
    g, _, _ = env.run("get-event", ALICE, ev["id"], expect_rc=0)
    assert g["event"]["start"] == iso(want)
    assert 'outlook.timezone="UTC"' in g["preference_applied"]


def test_same_state_same_hash(env):
    r1, _, _ = env.run("delta", ALICE, WIN_START, WIN_END, 10, expect_rc=0)
    ev = r1["events"][0]
    # a change that is not sync-relevant (categories) keeps the hash, a subject change does not
    env.sim.user_patch(ALICE, ev["id"], {"categories": ["Red category"]})
    r2, _, _ = env.run("get-event", ALICE, ev["id"], expect_rc=0)
    assert r2["event"]["change_key"] != ev["change_key"]
    assert r2["event"]["hash"] == ev["hash"]
    env.sim.user_patch(ALICE, ev["id"], {"subject": "renamed"})
    r3, _, _ = env.run("get-event", ALICE, ev["id"], expect_rc=0)
    assert r3["event"]["hash"] != ev["hash"]


def test_delta_410_and_invalid_token_give_resync(env):
    r, _, _ = env.run("delta", ALICE, WIN_START, WIN_END, 10, expect_rc=0)
    link = r["delta_link"]
    env.sim.evict_delta_tokens(ALICE)
    r2, err, _ = env.run("delta", ALICE, WIN_START, WIN_END, 10, link, expect_rc=1)
    assert r2["status"] == "RESYNC"
    assert r2["result"]["http_status"] == 410
    assert r2["result"]["error_code"].lower() == "syncstatenotfound"
    assert r2["stats"]["resyncs"] == 1
    # a mangled token: 400 InvalidDeltaToken is a resync too
    u = urllib.parse.urlsplit(link)
    q = urllib.parse.parse_qsl(u.query)
    bad = urllib.parse.urlunsplit(u._replace(query=urllib.parse.urlencode(
        [(k, "garbage" if "token" in k.lower() else v) for k, v in q])))
    r3, _, _ = env.run("delta", ALICE, WIN_START, WIN_END, 10, bad, expect_rc=1)
    assert r3["status"] == "RESYNC" and r3["result"]["http_status"] == 400


def test_delta_link_to_foreign_host_refused(env):
    r, err, _ = env.run("delta", ALICE, WIN_START, WIN_END, 10,
                        "https://evil.example/v1.0/users/x/calendarView/delta?$deltatoken=x", expect_rc=1)
    assert r["status"] == "BADRESPONSE"
    assert "RMS00313" in err
    assert r["stats"]["requests"] == 0


def test_response_size_cap(env):
    r, err, _ = env.run("delta", ALICE, WIN_START, WIN_END, 10, max_response=300, expect_rc=1)
    assert r["status"] == "ETOOLARGE"


# ---------------------------------------------------------------------------------------- throttling

def test_429_retry_after_respected_then_success(env):
    env.sim.fault("status", status=429, retry_after=1, count=2, match={"user": ALICE})
    r, err, elapsed = env.run("user", ALICE, 1, expect_rc=0)
    c = r["calls"][0]
    assert c["status"] == "OK" and c["attempts"] == 3
    assert c["waited_ms"] >= 2000
    assert elapsed >= 2.0
    assert r["stats"]["throttled"] == 2 and r["stats"]["retries"] == 2
    assert env.counters()["throttled_429"] == 2


def test_503_retry_after_and_backoff_without_header(env):
    env.sim.fault("status", status=503, retry_after=1, count=1, match={"user": ALICE})
    env.sim.fault("status", status=504, count=1, match={"user": ALICE})
    env.sim.fault("status", status=500, count=1, match={"user": ALICE})
    r, _, elapsed = env.run("user", ALICE, 1, expect_rc=0)
    c = r["calls"][0]
    assert c["status"] == "OK" and c["attempts"] == 4
    assert elapsed >= 1.0
    assert r["stats"]["unavailable"] == 2 and r["stats"]["status_5xx"] == 3


def test_retry_after_beyond_budget_gives_up(env):
    env.sim.fault("status", status=429, retry_after=60, count=3, match={"user": ALICE})
    r, err, elapsed = env.run("user", ALICE, 1, max_wait=5, expect_rc=1)
    assert r["calls"][0]["status"] == "THROTTLED"
    assert elapsed < 30         # gave up at once instead of sleeping the 60 s Retry-After
    assert "RMS00312" in err


def test_attempts_bounded(env):
    env.sim.fault("status", status=503, count=50, match={"user": ALICE})
    r, _, _ = env.run("user", ALICE, 1, max_attempts=3, expect_rc=1)
    assert r["calls"][0]["status"] == "THROTTLED" and r["calls"][0]["attempts"] == 3
    assert env.counters()["status_counts"].get("503", 0) == 3


def test_stop_aborts_a_back_off(env):
    env.sim.fault("status", status=429, retry_after=10, count=3, match={"user": ALICE})
    r, _, elapsed = env.run("user", ALICE, 1, stop_after_ms=500, max_wait=60, expect_rc=1)
    assert r["calls"][0]["status"] == "EABORTED"
    assert elapsed < 8          # the stop cut the 10 s back-off short


# ---------------------------------------------------------------------------------------- concurrency

@pytest.mark.parametrize("limit", [2, 4])
def test_per_mailbox_concurrency_limit(env, limit):
    env.sim.fault("latency", ms=150, count=1000, match={"user": ALICE})
    r, _, _ = env.run("hammer", ALICE, 10, 4, per_mailbox=limit, expect_rc=0)
    assert r["ok"] == 40
    c = env.counters()
    peak = c["peak_concurrency_by_mailbox"][ALICE]
    assert peak <= limit, "peak %d > limit %d" % (peak, limit)
    assert peak == limit            # the limit is also used, not undercut
    assert c["throttled_429"] == 0


def test_slow_mailbox_does_not_block_another(env):
    env.sim.fault("latency", ms=1000, count=1000, match={"user": ALICE})
    r, _, _ = env.run("slow-fast", ALICE, BOB, 4, per_mailbox=2, expect_rc=0)
    assert r["fast_ok"] == 3
    assert r["fast_max_ms"] < 700, r
    assert r["fast_done_ms"] < r["slow_done_ms"]
    assert r["slow_done_ms"] >= 3500          # 8 slow calls, 2 at a time, 1 s each
    assert env.counters()["peak_concurrency_by_mailbox"][ALICE] <= 2


# ---------------------------------------------------------------------------------------- events

def test_create_replay_after_dropped_response_gives_one_event(env):
    s, e = iso(utc_day(3) + dt.timedelta(hours=9)), iso(utc_day(3) + dt.timedelta(hours=10))
    env.sim.fault("drop_response", count=1, match={"user": ALICE, "method": "POST"})
    r, err, _ = env.run("create", ALICE, "Transferred BA-42", s, e, "rmsync-test-BA-42", "BA-42", expect_rc=0)
    # the answer was lost: resent (by us, or by libcurl on a stale reused connection), and the
    # transactionId makes the server return the first event instead of a second one
    assert r["status"] == "OK" and r["attempts"] in (1, 2)
    assert env.counters()["faults_injected"]["drop_response"] == 1
    assert r["event"]["transaction_id"] == "rmsync-test-BA-42"
    evs = [x for x in env.sim.user_events(ALICE, include_deleted=False) if x.get("subject") == "Transferred BA-42"]
    assert len(evs) == 1
    # found by its extended property, with the activity number expanded
    f, _, _ = env.run("find", ALICE, "BA-42", expect_rc=0)
    assert f["count"] == 1 and f["event"]["id"] == r["event"]["id"]
    assert f["event"]["activity_no"] == "BA-42"
    g, _, _ = env.run("get-event", ALICE, r["event"]["id"], expect_rc=0)
    assert g["event"]["activity_no"] == "BA-42"
    assert g["event"]["start"] == s and g["event"]["end"] == e
    nf, _, _ = env.run("find", ALICE, "BA-43'quote", expect_rc=1)
    assert nf["status"] == "NOTFOUND"


def test_create_without_transaction_id_is_not_blindly_resent(env):
    s, e = iso(utc_day(4)), iso(utc_day(4) + dt.timedelta(hours=1))
    env.sim.fault("drop_response", count=1, match={"user": ALICE, "method": "POST"})
    r, err, _ = env.run("create", ALICE, "No txid", s, e, "", "", expect_rc=1)
    assert r["status"] == "ENET" and r["attempts"] == 1
    assert "RMS00310" in err
    evs = [x for x in env.sim.user_events(ALICE, include_deleted=False) if x.get("subject") == "No txid"]
    assert len(evs) == 1


def test_get_patch_delete_notfound_conflict(env):
    r, _, _ = env.run("delta", ALICE, WIN_START, WIN_END, 10, expect_rc=0)
    ev = r["events"][0]
    p1, _, _ = env.run("patch", ALICE, ev["id"], ev["etag"], "patched", expect_rc=0)
    assert p1["event"]["subject"] == "patched" and p1["event"]["etag"] != ev["etag"]
    p2, _, _ = env.run("patch", ALICE, ev["id"], ev["etag"], "stale", expect_rc=1)
    assert p2["status"] == "CONFLICT" and p2["http_status"] in (409, 412)
    d, _, _ = env.run("delete", ALICE, ev["id"], expect_rc=0)
    assert d["status"] == "OK"
    g, err, _ = env.run("get-event", ALICE, ev["id"], expect_rc=1)
    assert g["status"] == "NOTFOUND" and g["http_status"] == 404 and g["request_id"]
    assert "RMS00312" not in err             # a 404 is the caller's business: not a warning here
    d2, _, _ = env.run("delete", ALICE, ev["id"], expect_rc=1)
    assert d2["status"] == "NOTFOUND"


def test_malformed_response_is_an_error_not_a_crash(env):
    r, _, _ = env.run("delta", ALICE, WIN_START, WIN_END, 10, expect_rc=0)
    ev = r["events"][0]
    env.sim.fault("malformed", field="start", mode="string", count=1, match={"user": ALICE})
    g, err, _ = env.run("get-event", ALICE, ev["id"], expect_rc=1)
    assert g["status"] == "BADRESPONSE"
    assert "RMS00314" in err and g["request_id"] in err
    env.sim.fault("malformed", field="subject", mode="number", count=1, match={"user": ALICE})
    d, err, _ = env.run("delta", ALICE, WIN_START, WIN_END, 10, expect_rc=0)
    assert len(d["bad_items"]) == 5 and "subject" in d["bad_items"][0]
    assert "RMS00320" in err
    env.sim.fault("malformed", field="id", mode="missing", count=1, match={"user": ALICE})
    g, _, _ = env.run("get-event", ALICE, ev["id"], expect_rc=1)
    assert g["status"] == "BADRESPONSE"


def test_unknown_user_notfound(env):
    r, _, _ = env.run("user", "nobody@gc.test", 1, expect_rc=1)
    assert r["calls"][0]["status"] == "NOTFOUND"


# ---------------------------------------------------------------------------------------- categories

def test_master_categories_create_is_idempotent(env):
    name = "CRM Business Activity"
    r, _, _ = env.run("category-create", ALICE, name, "preset9", expect_rc=0)
    assert r["created"] is True
    r2, _, _ = env.run("category-create", ALICE, name, "preset9", expect_rc=0)
    assert r2["status"] == "OK" and r2["created"] is False and r2["http_status"] == 409
    l, _, _ = env.run("categories", ALICE, expect_rc=0)
    assert [c for c in l["categories"] if c["name"] == name][0]["color"] == "preset9"


def test_master_categories_forbidden_without_permission(env):
    env.sim.app_set(CLIENT, permissions=["Calendars.ReadWrite"])
    r, err, _ = env.run("category-create", ALICE, "X", "preset1", expect_rc=1)
    assert r["status"] == "FORBIDDEN" and r["http_status"] == 403


# ---------------------------------------------------------------------------------------- subscriptions

class Echo(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        body = q["validationToken"][0].encode() if "validationToken" in q else b""
        self.send_response(200 if body else 202)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def receiver():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_subscription_lifecycle(env, receiver):
    env.sim.config(allow_http_notification_urls=True)
    r, _, _ = env.run("sub-create", ALICE_ID, receiver + "/notify", receiver + "/lifecycle", "cs-123", 60,
                      expect_rc=0)
    sub = r["subscription"]
    assert sub["resource"].lower() == ("users/%s/events" % ALICE_ID).lower()
    assert sub["change_type"] == "created,updated,deleted"
    assert 3400 < sub["expires_in_s"] <= 3600
    g, _, _ = env.run("sub-get", sub["id"], expect_rc=0)
    assert g["subscription"]["id"] == sub["id"]
    n, _, _ = env.run("sub-renew", sub["id"], 2000, expect_rc=0)
    assert n["subscription"]["expires_in_s"] > 100000
    d, _, _ = env.run("sub-delete", sub["id"], expect_rc=0)
    assert d["status"] == "OK"
    g2, _, _ = env.run("sub-get", sub["id"], expect_rc=1)
    assert g2["status"] == "NOTFOUND"
    n2, _, _ = env.run("sub-renew", sub["id"], 60, expect_rc=1)
    assert n2["status"] == "NOTFOUND"


# ---------------------------------------------------------------------------------------- memory

def _asan_build():
    try:
        with open(os.path.join(TOP, "build", ".flags")) as f:
            return "-fsanitize=address" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not shutil.which("valgrind"), reason="valgrind not installed")
@pytest.mark.skipif(_asan_build(), reason="ASan build: valgrind cannot run it (ASan checks memory)")
def test_driver_valgrind_clean(env):
    env.sim.fault("status", status=429, retry_after=1, count=1, match={"user": ALICE})
    r, err, _ = env.run("delta", ALICE, WIN_START, WIN_END, 2, valgrind=True, timeout=300, expect_rc=0)
    assert r["status"] == "OK"
    env.sim.fault("latency", ms=50, count=100, match={"user": ALICE})
    r, err, _ = env.run("hammer", ALICE, 4, 3, per_mailbox=2, valgrind=True, timeout=300, expect_rc=0)
    assert r["ok"] == 12


def test_events_batch_sequential_with_own_prefer(env):
    """Issue 18: rmsync_graph_get_events_batch -- one POST $batch, inner GETs chained with
    dependsOn (one in flight on the mailbox), each with the Prefer header; an inner 404 leaves
    its slot empty and the ones after it (424 Failed Dependency) too, for the caller to GET."""
    r, _, _ = env.run("delta", ALICE, WIN_START, WIN_END, 10, expect_rc=0)
    evs = r["events"][:4]
    assert len(evs) == 4
    env.sim.user_delete(ALICE, evs[1]["id"])
    env.sim.clear_requests()
    env.sim.reset_counters()
    b, _, _ = env.run("get-events-batch", ALICE, *[e["id"] for e in evs], expect_rc=0)
    got = b["events"]
    assert got[0]["id"] == evs[0]["id"] and got[0]["subject"] == evs[0]["subject"]
    assert got[1] is None and got[2] is None and got[3] is None
    log = env.sim.requests()
    outer = [x for x in log if x["kind"] == "batch"]
    inner = [x for x in log if x["batch_inner"]]
    assert len(outer) == 1 and outer[0]["method"] == "POST" and outer[0]["status"] == 200
    assert sorted(x["status"] for x in inner) == [200, 404]       # the two after the 404: 424
    assert all('IdType="ImmutableId"' in (x["headers"].get("Prefer") or "") for x in inner)
    assert env.counters()["peak_concurrency_by_mailbox"].get(ALICE, 0) <= 1
    # all found: every slot filled, one round trip
    env.sim.clear_requests()
    ok = [evs[0]["id"], evs[2]["id"], evs[3]["id"]]
    b, _, _ = env.run("get-events-batch", ALICE, *ok, expect_rc=0)
    assert [e["id"] for e in b["events"]] == ok
    assert len([x for x in env.sim.requests() if not x["batch_inner"] and x["kind"] != "token"]) == 1
    # more than Graph's 20 in one batch: refused before any request
    b, _, _ = env.run("get-events-batch", ALICE, *([evs[0]["id"]] * 21), expect_rc=1)
    assert b["status"] != "OK"
