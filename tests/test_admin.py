"""Admin pages (rmsync-admin): every page renders with representatives, log rows and settings;
hostile strings are escaped; actions need POST + CSRF token + same origin and change exactly what
they say (checked in PostgreSQL); GET never changes anything; the JSON API and the metrics."""
import json
import re
import time

import pytest
import requests

from lib.pg import PgCluster

XSS = "<script>alert('x')</script> \"quoted\" & more"
XSS_ESC = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &quot;quoted&quot; &amp; more"

# Everything but the admin range may log warnings here: the runner works against no Graph.
OTHERS = {f"RMS{n:05d}" for n in range(0, 1000) if not 700 <= n < 800}

SEED = """
BEGIN;
INSERT INTO crm.fnd_user (identity, description) VALUES ('EVE', 'Eve') ON CONFLICT DO NOTHING;
INSERT INTO crm.permission_set_grant (identity, permission_set)
    VALUES ('EVE', 'EXCHANGE_SYNC_USER') ON CONFLICT DO NOTHING;
INSERT INTO crm.business_representative (representative_id, user_id, name, email)
    VALUES ('EVE', 'EVE', $1, 'eve@demo.rmsync.test') ON CONFLICT DO NOTHING;
INSERT INTO rmsync.rep_state (representative_id, sync_active, last_success_at, last_error,
                              last_error_at)
    VALUES ('ALICE', true, now() - interval '3 minutes', NULL, NULL),
           ('EVE', false, NULL, $1, now())
    ON CONFLICT (representative_id) DO NOTHING;
INSERT INTO rmsync.rep_state (representative_id, sync_active, held_by_breaker, held_reason)
    VALUES ('CAROL', true, true, 'would delete 9 of 10 linked activities')
    ON CONFLICT (representative_id) DO NOTHING;
INSERT INTO rmsync.subscription (subscription_id, representative_id, client_state, expires_at)
    VALUES ('sub-alice', 'ALICE', 'cs', now() + interval '2 days') ON CONFLICT DO NOTHING;
INSERT INTO rmsync.event_link (activity_no, representative_id, event_id, linked_via)
    VALUES (1, 'ALICE', 'AAMkEvt-1', 'transfer') ON CONFLICT DO NOTHING;
INSERT INTO rmsync.sync_log (at, level, representative_id, activity_no, event_id, action,
                             message, graph_request_id) VALUES
    (now() - interval '2 hours', 'info', 'ALICE', 1, 'AAMkEvt-1', 'update',
     'Description changed', 'req-0001'),
    (now() - interval '1 hour', 'error', 'EVE', NULL, 'AAMkEvt-9', 'skip', $1, 'req-0002'),
    (now() - interval '30 minutes', 'warning', 'BOB', 3, NULL, 'skip', 'BOB warning', NULL),
    (now() - interval '20 minutes', 'info', 'BOB', NULL, 'AAMkEvt-B', 'update',
     'BOB event updated', 'req-0003');
COMMIT;
"""


@pytest.fixture(scope="module")
def pg():
    c = PgCluster(demo=True).start()
    c.sql(SEED, XSS)
    yield c
    c.destroy()


def admin_conf(pg, h, extra=""):
    secret = h.write_file("secret.txt", "Very-Secret-Value-42\n", 0o600)
    return "\n".join([
        f'RMSyncDatabase "{pg.conninfo}"',
        "RMSyncSyncCycle 30",
        "RMSyncGraphTenant rmsync-test-tenant",
        "RMSyncGraphClientId 11111111-2222-3333-4444-555555555555",
        f"RMSyncGraphClientSecretFile {secret}",
        "RMSyncGraphAuthorityURL https://127.0.0.1:9/",
        "RMSyncGraphURL https://127.0.0.1:9/v1.0",
        "RMSyncInitialSyncFrom 2025-01-01",
        "RMSyncSyncWindowDays 120",
        "RMSyncDeletePolicy cancel",
        'RMSyncMasterCategory "CRM Business Activity" preset7',
        "RMSyncActivityURL https://crm.example.com/activity?no=%s&x=1",
        f"Mutex file:{h.dir} rmsync-shm",
        # the admin-page tests seed sync log rows with fixed dates (January 2026)
        "RMSyncLogRetention Off",
        extra,
    ])


@pytest.fixture(scope="module")
def server(pg):
    from lib.httpd import Httpd
    h = Httpd(name="rmsync-admin")
    h.write_conf(rmsync=admin_conf(pg, h))
    h.start()
    h.wait_for(lambda s: s["runner"]["pid"] is not None, what="runner started")
    yield h
    h.stop()
    bad = h.bad_log_lines(OTHERS | {"RMS00711", "RMS00712"})
    h.destroy()
    assert not bad, "unexpected error log lines:\n" + "\n".join(bad)


def origin(h):
    return {"Origin": h.base_url}


def token(h, session=None):
    r = (session or requests).get(h.url("/rmsync/config?format=json"), timeout=10)
    assert r.status_code == 200, r.text
    t = r.json()["csrf_token"]
    assert re.fullmatch(r"[0-9a-f]{40}", t)
    return t


def post(h, data, headers=None, path="/rmsync/config", tok=True):
    d = dict(data)
    if tok is True:
        d["token"] = token(h)
    elif tok:
        d["token"] = tok
    hd = origin(h)
    hd.update(headers or {})
    return requests.post(h.url(path), data=d, headers={k: v for k, v in hd.items() if v},
                         allow_redirects=False, timeout=10)


def db_state(pg):
    """Everything an admin action can change, to prove that refused requests change nothing."""
    return (pg.sql("SELECT representative_id, sync_active, held_by_breaker FROM rmsync.rep_state"
                   " ORDER BY 1"),
            pg.sql("SELECT id, kind, representative_id, state FROM rmsync.request ORDER BY id"),
            pg.sql("SELECT running, changed_by FROM rmsync.service_state"),
            pg.sql("SELECT activity_no FROM rmsync.event_link ORDER BY 1"),
            pg.val("SELECT count(*) FROM rmsync.sync_log WHERE action IN ('set_active',"
                   " 'initial_sync', 'initial_sync_all', 'stop', 'start', 'approve', 'retry',"
                   " 'unlink')"))


def assert_headers(r):
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "style-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp


# ------------------------------------------------------------------------------------ pages

def test_config_page_renders(server, pg):
    r = server.get("/rmsync/config")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/html")
    assert_headers(r)
    t = r.text
    # settings header, secret never shown
    for s in ("rmsync-test-tenant", "11111111-2222-3333-4444-555555555555", "30 s",
              "2025-01-01", "120 days ahead", "cancel", "CRM Business Activity", "preset7",
              "set (not shown)", "EXCHANGE_SYNC_USER"):
        assert s in t, s
    assert "Very-Secret-Value-42" not in t
    # SYNC_MASTER is locked in a fresh install: state and what to do
    assert "SYNC_MASTER" in t and "locked" in t and "UpdateSyncMasterUser.sql" in t
    # service with Stop, Initial Sync for all
    assert 'data-action="stop"' in t and 'data-action="initial_sync_all"' in t
    # representatives holding the permission set (DAVE does not)
    for rep in ("ALICE", "BOB", "CAROL", "EVE"):
        assert f'<tr data-rep="{rep}">' in t, rep
    assert 'data-rep="DAVE"' not in t
    alice = re.search(r'<tr data-rep="ALICE">.*?</tr>', t, re.S).group(0)
    assert "Alice Anderson" in alice and "alice@demo.rmsync.test" in alice
    assert "Deactivate" in alice          # ALICE is active
    assert "ago" in alice                 # last successful sync with its age
    assert re.search(r"in 1d 2\dh|in 2d 00h|in 1d 23h", alice), alice   # subscription expiry
    assert re.search(r'<td class="num">1</td>', alice)                   # linked count
    assert 'data-action="initial_sync"' in alice
    carol = re.search(r'<tr data-rep="CAROL">.*?</tr>', t, re.S).group(0)
    assert "held" in carol and "would delete 9 of 10" in carol and 'data-action="approve"' in carol
    # every form carries the token
    forms = re.findall(r"<form [^>]*method=\"post\".*?</form>", t, re.S)
    assert len(forms) >= 9
    # an inactive representative's Initial Sync is disabled, not a form
    eve = re.search(r'<tr data-rep="EVE">.*?</tr>', t, re.S).group(0)
    assert 'data-action="initial_sync"' not in eve and "disabled" in eve
    tok = token(server)
    for f in forms:
        assert f'name="token" value="{tok}"' in f


def test_hostile_strings_escaped(server):
    for path in ("/rmsync/config", "/rmsync/log", "/rmsync/log?rep=EVE"):
        t = server.get(path).text
        assert "<script" not in t, path
        assert XSS_ESC in t, path
    # the filter form echoes values escaped
    r = server.get("/rmsync/log", params={"event": '"><script>x</script>'})
    assert r.status_code == 200
    assert "<script" not in r.text
    assert 'value="&quot;&gt;&lt;script&gt;x&lt;/script&gt;"' in r.text
    # and in JSON the strings come back exactly
    j = server.get("/rmsync/config.json").json()
    eve = [x for x in j["representatives"] if x["representative_id"] == "EVE"][0]
    assert eve["name"] == XSS and eve["last_error"] == XSS


def test_log_page_renders(server):
    r = server.get("/rmsync/log")
    assert r.status_code == 200
    assert_headers(r)
    t = r.text
    rows = re.findall(r'<tr data-log="(\d+)">(.*?)</tr>', t, re.S)
    assert len(rows) >= 3
    ids = [int(i) for i, _ in rows]
    assert ids == sorted(ids, reverse=True)          # newest first
    upd = [body for _, body in rows if "Description changed" in body][0]
    for s in ("Alice Anderson", "update", "req-0001", "AAMkEvt-1",
              '<a href="https://crm.example.com/activity?no=1&amp;x=1" rel="noopener noreferrer">'
              '1</a>'):
        assert s in upd, s
    assert 'data-action="retry"' in upd and 'data-action="unlink"' in upd   # linked
    bob = [body for _, body in rows if "BOB warning" in body][0]
    assert 'data-action="unlink"' not in bob and 'data-action="retry"' not in bob  # no event
    bob = [body for _, body in rows if "BOB event updated" in body][0]
    assert 'data-action="unlink"' not in bob and 'data-action="retry"' in bob


def test_log_filters_and_paging(server, pg):
    j = server.get("/rmsync/log.json", params={"rep": "ALICE"}).json()
    assert j["rows"] and all(x["representative_id"] == "ALICE" for x in j["rows"])
    j = server.get("/rmsync/log", params={"level": "error", "format": "json"}).json()
    assert [x["level"] for x in j["rows"]] == ["error"] * len(j["rows"]) and j["rows"]
    j = server.get("/rmsync/log.json", params={"activity": "3"}).json()
    assert [x["message"] for x in j["rows"]] == ["BOB warning"]
    j = server.get("/rmsync/log.json", params={"event": "AAMkEvt-9"}).json()
    assert [x["graph_request_id"] for x in j["rows"]] == ["req-0002"]
    # time range (UTC): only the entry from 2 hours ago
    frm = pg.val("SELECT to_char(now() AT TIME ZONE 'UTC' - interval '150 minutes',"
                 " 'YYYY-MM-DD\"T\"HH24:MI')")
    to = pg.val("SELECT to_char(now() AT TIME ZONE 'UTC' - interval '90 minutes',"
                " 'YYYY-MM-DD\"T\"HH24:MI')")
    j = server.get("/rmsync/log.json", params={"from": frm, "to": to}).json()
    assert [x["message"] for x in j["rows"]] == ["Description changed"]
    # paging: 1 per page, walk older then newer
    j1 = server.get("/rmsync/log.json", params={"n": "1", "action": "skip"}).json()
    assert len(j1["rows"]) == 1 and j1["has_older"] and not j1["has_newer"]
    assert j1["rows"][0]["message"] == "BOB warning"
    j2 = server.get("/rmsync/log.json", params={"n": "1", "action": "skip",
                                                "before": str(j1["oldest_id"])}).json()
    assert [x["message"] for x in j2["rows"]] == [XSS]
    assert j2["has_newer"] and not j2["has_older"]
    j3 = server.get("/rmsync/log.json", params={"n": "1", "action": "skip",
                                                "after": str(j2["newest_id"])}).json()
    assert j3["rows"][0]["id"] == j1["rows"][0]["id"]
    html = server.get("/rmsync/log", params={"n": "1", "action": "skip"}).text
    assert "Older" in html and "before=" in html and "action=skip" in html
    assert "Newer" not in html


@pytest.mark.parametrize("q,what", [
    ({"level": "fatal"}, "level"), ({"activity": "12x"}, "activity"),
    ({"from": "2025-02-30"}, "from"), ({"to": "yesterday"}, "to"), ({"n": "100000"}, "n"),
    ({"before": "-1"}, "before"), ({"bogus": "1"}, "bogus"), ({"format": "xml"}, "format"),
])
def test_log_bad_filter_is_400(server, q, what):
    r = server.get("/rmsync/log", params=q)
    assert r.status_code == 400
    assert what in r.text
    assert "<script" not in r.text


def test_status_and_metrics(server):
    r = server.get("/rmsync/status")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert_headers(r)
    t = r.text
    st = server.status()
    assert f"{st['runner']['pid']}" in t and "Heartbeat" in t and "Queue depth" in t
    assert "notifications_received" in t and "Generation" in t
    for k in ("generation", "runner", "counters", "representatives", "time", "queue_depth"):
        assert k in st
    assert "http-equiv" not in t
    r = server.get("/rmsync/status", params={"refresh": "15"})
    assert '<meta http-equiv="refresh" content="15">' in r.text
    assert server.get("/rmsync/status", params={"refresh": "0"}).status_code == 400
    assert server.get("/rmsync/config", params={"refresh": "5"}).status_code == 400
    r = server.get("/rmsync/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    m = r.text
    for s in ("rmsync_notifications_received_total 0",
              'rmsync_notifications_rejected_total{reason="bad_clientstate"} 0',
              "rmsync_queue_depth 0", 'rmsync_events_total{action="applied"} 0',
              'rmsync_graph_responses_total{status="5xx"} 0', "rmsync_graph_429_total 0",
              "rmsync_delta_resyncs_total 0", "rmsync_runner_up 1",
              "# TYPE rmsync_sync_lag_seconds gauge",
              "# TYPE rmsync_seconds_since_last_success gauge",
              "# TYPE rmsync_subscription_seconds_to_expiry gauge"):
        assert s in m, s
    # every sample line is "name{labels} value"
    for line in m.splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r'[a-z_][a-z0-9_]*(\{[a-z_]+="[^"]*"\})? (-?[0-9.]+|NaN)', line), line
    css = server.get("/rmsync/style.css")
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    assert "body{" in css.text


def test_misc_routes(server):
    assert server.get("/rmsync/nope").status_code == 404
    r = server.get("/rmsync/", allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"].endswith("/rmsync/config")
    assert requests.put(server.url("/rmsync/config"), data="x", timeout=10).status_code == 405
    assert server.post("/rmsync/status", data={}).status_code == 405
    assert server.post("/rmsync/metrics", data={}).status_code == 405


# ----------------------------------------------------------------------------- protection

def test_post_without_token_is_403(server, pg):
    before = db_state(pg)
    r = post(server, {"action": "set_active", "rep": "BOB", "active": "1"}, tok=None)
    assert r.status_code == 403 and "token" in r.text
    r = post(server, {"action": "stop"}, tok="0" * 40)
    assert r.status_code == 403
    assert db_state(pg) == before


def test_post_cross_site_is_403(server, pg):
    before = db_state(pg)
    data = {"action": "set_active", "rep": "BOB", "active": "1"}
    for hd in ({"Origin": "http://evil.example"},
               {"Origin": "http://127.0.0.1:1"},
               {"Origin": "null"},
               {"Origin": None, "Referer": "http://evil.example/rmsync/config"},
               {"Origin": None},                                   # neither header
               {"Sec-Fetch-Site": "cross-site"}):
        r = post(server, data, headers=hd)
        assert r.status_code == 403, hd
        assert "Cross-site" in r.text
    assert db_state(pg) == before
    # a same-origin Referer alone is accepted
    r = post(server, {"action": "set_active", "rep": "ALICE", "active": "1"},
             headers={"Origin": None, "Referer": server.url("/rmsync/config")})
    assert r.status_code == 303


def test_get_with_action_parameters_changes_nothing(server, pg):
    before = db_state(pg)
    tok = token(server)
    for path in ("/rmsync/config", "/rmsync/log", "/rmsync/status"):
        r = server.get(path, params={"action": "stop", "token": tok, "rep": "BOB",
                                     "active": "1"})
        assert r.status_code in (200, 400)
        r = server.get(path + "?action=stop")
        assert r.status_code in (200, 400)
    assert db_state(pg) == before
    assert pg.val("SELECT running FROM rmsync.service_state") == "t"


def test_post_bad_requests(server, pg):
    before = db_state(pg)
    tok = token(server)
    # unknown parameter, unknown action, bad value, wrong content type, too big
    assert post(server, {"action": "stop", "evil": "1"}, tok=tok).status_code == 400
    assert post(server, {"action": "drop_tables"}, tok=tok).status_code == 400
    assert post(server, {"action": "set_active", "rep": "BOB", "active": "yes"},
                tok=tok).status_code == 400
    assert post(server, {"action": "set_active", "rep": "DAVE", "active": "1"},
                tok=tok).status_code == 404
    r = requests.post(server.url("/rmsync/config"), json={"action": "stop", "token": tok},
                      headers=origin(server), timeout=10)
    assert r.status_code == 415
    r = requests.post(server.url("/rmsync/config"),
                      data="action=stop&token=" + tok + "&back=" + "x" * 20000,
                      headers={**origin(server),
                               "Content-Type": "application/x-www-form-urlencoded"}, timeout=10)
    assert r.status_code == 413
    assert db_state(pg) == before


# ---------------------------------------------------------------------------------- actions

def last_log(pg, action):
    return pg.json("SELECT level, representative_id, activity_no, message FROM rmsync.sync_log"
                   " WHERE action = $1 ORDER BY id DESC LIMIT 1", action)[0]


def test_action_set_active(server, pg):
    r = post(server, {"action": "set_active", "rep": "BOB", "active": "1"})
    assert r.status_code == 303
    assert r.headers["Location"].endswith("/rmsync/config?done=set_active")
    assert pg.val("SELECT sync_active FROM rmsync.rep_state WHERE representative_id = 'BOB'") == "t"
    lg = last_log(pg, "set_active")
    assert lg["representative_id"] == "BOB" and "Yes" in lg["message"]
    assert "(admin -)" in lg["message"]
    page = server.get(r.headers["Location"]).text
    assert "Sync Active changed." in page
    bob = re.search(r'<tr data-rep="BOB">.*?</tr>', page, re.S).group(0)
    assert "Deactivate" in bob
    r = post(server, {"action": "set_active", "rep": "BOB", "active": "0"})
    assert r.status_code == 303
    assert pg.val("SELECT sync_active FROM rmsync.rep_state WHERE representative_id = 'BOB'") == "f"


def test_action_initial_sync(server, pg):
    # not active -> refused with a clear message
    pg.sql("UPDATE rmsync.rep_state SET sync_active = false WHERE representative_id = 'BOB'")
    r = post(server, {"action": "initial_sync", "rep": "BOB"})
    assert r.status_code == 409 and "activate it first" in r.text
    n0 = int(pg.val("SELECT count(*) FROM rmsync.request"))
    r = post(server, {"action": "initial_sync", "rep": "ALICE"})
    assert r.status_code == 303
    req = pg.json("SELECT kind, representative_id, requested_by FROM rmsync.request"
                  " ORDER BY id DESC LIMIT 1")[0]
    assert req == {"kind": "initial_sync", "representative_id": "ALICE", "requested_by": "-"}
    assert int(pg.val("SELECT count(*) FROM rmsync.request")) == n0 + 1
    assert last_log(pg, "initial_sync")["representative_id"] == "ALICE"
    # again while pending: no second request
    assert post(server, {"action": "initial_sync", "rep": "ALICE"}).status_code == 303
    assert int(pg.val("SELECT count(*) FROM rmsync.request")) == n0 + 1
    # the configuration page shows it pending and lists it under the latest requests
    t = server.get("/rmsync/config").text
    alice = re.search(r'<tr data-rep="ALICE">.*?</tr>', t, re.S).group(0)
    assert "pending" in alice and 'data-action="initial_sync"' not in alice
    reqs = re.search(r'<table id="requests">.*?</table>', t, re.S).group(0)
    assert "initial_sync" in reqs and "ALICE" in reqs
    j = server.get("/rmsync/config.json").json()
    assert j["requests"][0]["kind"] == "initial_sync"
    assert j["requests"][0]["representative_id"] == "ALICE"


def test_action_initial_sync_all_and_json_api(server, pg):
    tok = token(server)
    r = requests.post(server.url("/rmsync/config"),
                      data={"action": "initial_sync_all", "token": tok, "format": "json"},
                      headers=origin(server), timeout=10)
    assert r.status_code == 200
    j = r.json()
    assert j["ok"] is True and j["action"] == "initial_sync_all" and j["request_id"] > 0
    assert pg.val("SELECT kind FROM rmsync.request WHERE id = $1", j["request_id"]) \
        == "initial_sync_all"
    assert last_log(pg, "initial_sync_all")["representative_id"] is None


def test_action_stop_start(server, pg):
    # Stop asks first: a confirmation page (no script), nothing changed; a script gets a 400
    before = db_state(pg)
    r = post(server, {"action": "stop"})
    assert r.status_code == 200 and "Stop the sync service?" in r.text
    assert 'name="confirm" value="1"' in r.text and 'data-action="stop"' in r.text
    assert 'data-action="cancel"' in r.text and "<script" not in r.text
    assert_headers(r)
    r = post(server, {"action": "stop", "format": "json"})
    assert r.status_code == 400 and "confirm=1" in r.json()["error"]
    assert post(server, {"action": "stop", "confirm": "yes"}).status_code == 400
    assert db_state(pg) == before
    r = post(server, {"action": "stop", "confirm": "1"})
    assert r.status_code == 303
    assert pg.sql("SELECT running, changed_by FROM rmsync.service_state") == [("f", "-")]
    page = server.get("/rmsync/config").text
    assert "stopped" in page and 'data-action="start"' in page
    assert "Sync service stopped" in last_log(pg, "stop")["message"]
    r = post(server, {"action": "start"})
    assert r.status_code == 303
    assert pg.val("SELECT running FROM rmsync.service_state") == "t"
    assert "Sync service started" in last_log(pg, "start")["message"]


def test_action_approve(server, pg):
    r = post(server, {"action": "approve", "rep": "ALICE"})
    assert r.status_code == 409 and "not held" in r.text
    r = post(server, {"action": "approve", "rep": "CAROL"})
    assert r.status_code == 303
    assert pg.val("SELECT count(*) FROM rmsync.request WHERE kind = 'approve'"
                  " AND representative_id = 'CAROL'") == "1"
    assert last_log(pg, "approve")["representative_id"] == "CAROL"


def test_action_retry_and_unlink_from_log(server, pg):
    log_id = pg.val("SELECT id FROM rmsync.sync_log WHERE message = 'Description changed'")
    back = "rep=ALICE&level=info"
    r = post(server, {"action": "retry", "log": log_id, "back": back}, path="/rmsync/log")
    assert r.status_code == 303
    assert r.headers["Location"].endswith("/rmsync/log?done=retry&rep=ALICE&level=info")
    req = pg.json("SELECT kind, representative_id, activity_no, payload FROM rmsync.request"
                  " WHERE kind = 'retry' ORDER BY id DESC LIMIT 1")[0]
    assert req["representative_id"] == "ALICE" and req["activity_no"] == 1
    assert req["payload"]["event_id"] == "AAMkEvt-1" and req["payload"]["log_id"] == int(log_id)
    # a hostile "back" is dropped, never reflected
    r = post(server, {"action": "retry", "log": log_id, "back": "x=1&//evil.example"},
             path="/rmsync/log")
    assert r.status_code == 303 and r.headers["Location"].endswith("/rmsync/log?done=retry")
    # unlink asks first: the page names the activity, nothing changes
    r = post(server, {"action": "unlink", "log": log_id, "back": back}, path="/rmsync/log")
    assert r.status_code == 200 and "Unlink activity 1 from its Outlook appointment?" in r.text
    assert 'name="confirm" value="1"' in r.text and f'name="log" value="{log_id}"' in r.text
    assert pg.val("SELECT count(*) FROM rmsync.event_link WHERE activity_no = 1") == "1"
    r = post(server, {"action": "unlink", "log": log_id, "format": "json"}, path="/rmsync/log")
    assert r.status_code == 400
    assert pg.val("SELECT count(*) FROM rmsync.event_link WHERE activity_no = 1") == "1"
    r = post(server, {"action": "unlink", "log": log_id, "confirm": "1"}, path="/rmsync/log")
    assert r.status_code == 303
    assert pg.val("SELECT count(*) FROM rmsync.event_link WHERE activity_no = 1") == "0"
    # remembered as unlinked, by whom
    assert pg.sql("SELECT event_id, unlinked_by FROM rmsync.unlinked_event"
                  " WHERE activity_no = 1") == [("AAMkEvt-1", "-")]
    lg = last_log(pg, "unlink")
    assert lg["activity_no"] == 1 and "unlinked" in lg["message"]
    # again: not linked any more
    r = post(server, {"action": "unlink", "log": log_id, "confirm": "1"}, path="/rmsync/log")
    assert r.status_code == 409
    assert post(server, {"action": "retry", "log": "999999"}, path="/rmsync/log").status_code \
        == 404
    # an entry without an Outlook event cannot be retried
    warn_id = pg.val("SELECT id FROM rmsync.sync_log WHERE message = 'BOB warning'")
    r = post(server, {"action": "retry", "log": warn_id}, path="/rmsync/log")
    assert r.status_code == 409 and "no Outlook event" in r.text


def test_database_down(httpd):
    """No database: the pages say so with 503 (and Retry-After), status and metrics still
    work from shm, actions change nothing and answer 503."""
    from lib.httpd import free_port
    h = httpd(name="rmsync-admin-nodb")
    h.allow |= OTHERS | {"RMS00701", "RMS00702"}
    conn = f"host=127.0.0.1 port={free_port()} dbname=rmsync user=rmsync connect_timeout=2"
    h.write_conf(rmsync="\n".join([f'RMSyncDatabase "{conn}"', "RMSyncSyncCycle 30",
                                   f"Mutex file:{h.dir} rmsync-shm"]))
    h.start()
    for path in ("/rmsync/config", "/rmsync/log", "/rmsync/config.json"):
        r = h.get(path)
        assert r.status_code == 503, path
        assert r.headers.get("Retry-After") == "10"
        assert "not reachable" in r.text
        assert_headers(r)
    assert h.get("/rmsync/status").status_code == 200
    assert h.get("/rmsync/metrics").status_code == 200
    assert h.get("/rmsync/status.json").json()["runner"] is not None
    tok = h.status()["csrf_token"]
    r = h.post("/rmsync/config", data={"action": "stop", "token": tok, "confirm": "1"},
               headers={"Origin": h.base_url}, allow_redirects=False)
    assert r.status_code == 503 and "not reachable" in r.text
    r = h.post("/rmsync/config", data={"action": "stop", "token": "0" * 40},
               headers={"Origin": h.base_url})
    assert r.status_code == 403
    h.allow.add("RMS00712")


def test_token_survives_graceful_restart(httpd, pg):
    """The CSRF secret is shared through the database (rmsync.csrf_secret; issue 17), no longer
    made anew for every generation: a form served before a graceful restart still posts after
    it, and the token stays the same."""
    h = httpd(name="rmsync-admin-gen")
    h.allow |= OTHERS | {"RMS00712"}
    h.write_conf(rmsync=admin_conf(pg, h))
    h.start()
    gen = h.status()["generation"]
    old = token(h)
    h.graceful()
    h.wait_for(lambda s: s["generation"] != gen, what="new generation")
    assert token(h) == old
    data = {"action": "set_active", "rep": "BOB", "active": "0"}
    assert post(h, data, tok=old).status_code == 303
    assert post(h, data, tok="0" * 40).status_code == 403


def test_head_accept_json_and_html_format(server):
    r = requests.head(server.url("/rmsync/config"), timeout=10)
    assert r.status_code == 200 and r.text == ""
    assert r.headers["Content-Type"].startswith("text/html")
    r = server.get("/rmsync/config", headers={"Accept": "application/json"})
    assert r.headers["Content-Type"].startswith("application/json")
    assert "representatives" in r.json()
    r = server.get("/rmsync/config.json", params={"format": "html"})
    assert r.headers["Content-Type"].startswith("application/json")   # the suffix wins
    r = server.get("/rmsync/log", params={"format": "html"})
    assert r.headers["Content-Type"].startswith("text/html")


# ----------------------------------------------------------------- RMSyncAdminRequireUser

def test_require_user(httpd, pg):
    h = httpd(name="rmsync-admin-auth")
    h.allow |= OTHERS | {"RMS00704"}
    pw = h.write_file("htpasswd", "", 0o644)
    import subprocess
    for user in ("carla", "dora"):
        subprocess.run(["htpasswd", "-b", "-B", pw, user, "pw-" + user], check=True,
                       capture_output=True)
    extra = "\n".join([
        "LoadModule authn_core_module /usr/lib/apache2/modules/mod_authn_core.so",
        "LoadModule authn_file_module /usr/lib/apache2/modules/mod_authn_file.so",
        "LoadModule auth_basic_module /usr/lib/apache2/modules/mod_auth_basic.so",
        "LoadModule authz_user_module /usr/lib/apache2/modules/mod_authz_user.so",
        "<Location /auth/rmsync/>",
        "  SetHandler rmsync-admin",
        "  AuthType Basic",
        '  AuthName "rmsync admin"',
        f"  AuthUserFile {pw}",
        "  Require valid-user",
        "</Location>",
    ])
    h.write_conf(rmsync=admin_conf(pg, h, "RMSyncAdminRequireUser On"), extra=extra)
    h.start()
    # no user (the /rmsync/ mount has no auth): refused
    assert h.get("/rmsync/config").status_code == 403
    # authenticated: the token is bound to the user and the user is in the log
    s = requests.Session()
    s.auth = ("carla", "pw-carla")
    j = s.get(h.url("/auth/rmsync/config.json"), timeout=10).json()
    tok = j["csrf_token"]
    assert j["user"] == "carla"
    r = s.post(h.url("/auth/rmsync/config"), data={"action": "set_active", "rep": "BOB",
                                                   "active": "1", "token": tok},
               headers={"Origin": h.base_url}, allow_redirects=False, timeout=10)
    assert r.status_code == 303
    assert r.headers["Location"].endswith("/auth/rmsync/config?done=set_active")
    assert "(admin carla)" in last_log(pg, "set_active")["message"]
    # carla's token is no good for dora
    d = requests.Session()
    d.auth = ("dora", "pw-dora")
    assert d.get(h.url("/auth/rmsync/config.json"), timeout=10).json()["csrf_token"] != tok
    r = d.post(h.url("/auth/rmsync/config"), data={"action": "stop", "token": tok},
               headers={"Origin": h.base_url}, allow_redirects=False, timeout=10)
    assert r.status_code == 403
    assert pg.val("SELECT running FROM rmsync.service_state") == "t"
    # a forged token is refused
    r = s.post(h.url("/auth/rmsync/config"), data={"action": "stop", "token": "f" * 40},
                headers={"Origin": h.base_url}, allow_redirects=False, timeout=10)
    assert r.status_code == 403
    h.allow.add("RMS00712")



def test_master_category_state_per_representative(server, pg):
    """The master-category state of each representative (rmsync.rep_state.category_state):
    ok, forbidden with the fix (MailboxSettings.ReadWrite), not yet, not synced."""
    pg.sql("UPDATE rmsync.rep_state SET category_state = 'created' WHERE representative_id = 'ALICE'")
    pg.sql("UPDATE rmsync.rep_state SET category_state = 'forbidden'"
           " WHERE representative_id = 'CAROL'")
    try:
        d = server.get("/rmsync/config.json").json()
        reps = {x["representative_id"]: x for x in d["representatives"]}
        assert reps["ALICE"]["category"] == "ok" and "category_fix" not in reps["ALICE"]
        assert reps["CAROL"]["category"] == "forbidden"
        assert "MailboxSettings.ReadWrite" in reps["CAROL"]["category_fix"]
        assert reps["EVE"]["category"] == "not synced"          # Sync Active off
        assert d["paging"]["categories_forbidden"] == 1
        t = server.get("/rmsync/config").text
        cell = lambda rep: re.search(rf'<tr data-rep="{rep}">.*?<td class="category">(.*?)</td>',
                                     t, re.S).group(1)
        assert "badge ok" in cell("ALICE") and ">ok<" in cell("ALICE")
        assert "forbidden" in cell("CAROL") and "MailboxSettings.ReadWrite" in cell("CAROL")
        assert 'data-error-class="categories_forbidden"' in cell("CAROL")
        assert "not synced" in cell("EVE")
        assert "Master category</b>" in t                  # the column is explained
        pg.sql("UPDATE rmsync.rep_state SET category_state = 'unknown'"
               " WHERE representative_id = 'CAROL'")
        assert "not yet" in re.search(r'<tr data-rep="CAROL">.*?</tr>',
                                      server.get("/rmsync/config").text, re.S).group(0)
    finally:
        pg.sql("UPDATE rmsync.rep_state SET category_state = 'unknown'"
               " WHERE representative_id IN ('ALICE', 'CAROL')")


def test_many_representatives_and_log_rows(server, pg):
    """Pages stay linear: 1500 representatives and 3000 log rows render quickly (runs last:
    it adds rows the other tests do not expect)."""
    pg.sql("""
        INSERT INTO crm.fnd_user (identity) SELECT 'U' || g FROM generate_series(1, 1500) g;
        INSERT INTO crm.permission_set_grant (identity, permission_set)
            SELECT 'U' || g, 'EXCHANGE_SYNC_USER' FROM generate_series(1, 1500) g;
        INSERT INTO crm.business_representative (representative_id, user_id, name, email)
            SELECT 'R' || g, 'U' || g, 'Rep ' || g, 'r' || g || '@demo.rmsync.test'
              FROM generate_series(1, 1500) g;
        INSERT INTO rmsync.sync_log (level, representative_id, action, message)
            SELECT 'info', 'R' || (g % 1500 + 1), 'update', 'bulk row ' || g
              FROM generate_series(1, 3000) g;
    """)
    t0 = time.monotonic()
    r = server.get("/rmsync/config")
    t_config = time.monotonic() - t0
    # one page of 100 (a search box and page links, no script), not 1504 rows
    assert r.status_code == 200 and r.text.count("<tr data-rep=") == 100
    assert "1&ndash;100 of 1504" in r.text and 'name="q"' in r.text
    assert 'href="/rmsync/config?page=16#representatives">last' in r.text
    t0 = time.monotonic()
    r = server.get("/rmsync/log", params={"n": "500"})
    t_log = time.monotonic() - t0
    assert r.status_code == 200 and r.text.count("<tr data-log=") == 500
    # more than 200 representatives: the log filter asks for the id as text, not a 1500-option
    # <select> (a 460 KB page at 10,000); the filter still works
    assert '<select name="rep">' not in r.text and r.text.count("<option ") < 20
    assert re.search(r'<input type="text" name="rep" value=""', r.text)
    j = server.get("/rmsync/log", params={"rep": "R7", "n": "500", "format": "json"}).json()
    assert "representatives" not in j
    assert j["rows"] and {x["representative_id"] for x in j["rows"]} == {"R7"}
    assert 'value="R7"' in server.get("/rmsync/log", params={"rep": "R7"}).text
    print(f"config page with 1504 reps: {t_config:.3f} s, log page n=500: {t_log:.3f} s")
    assert t_config < 3 and t_log < 3, (t_config, t_log)
    # the pages together hold every representative once, in the page's order
    ids, pages = [], None
    for n in range(1, 17):
        d = server.get("/rmsync/config.json", params={"page": str(n)}).json()
        pages = d["paging"]
        assert pages["total"] == 1504 and pages["pages"] == 16 and pages["page"] == n
        ids += [x["representative_id"] for x in d["representatives"]]
    assert len(ids) == 1504 and set(ids) == {
        row[0] for row in pg.sql("SELECT representative_id FROM rmsync.representatives")}
    assert len(d["representatives"]) == 4
    # past the end: the last page; a search (ILIKE, its % and _ literal)
    assert server.get("/rmsync/config.json", params={"page": "99"}).json()["paging"]["page"] == 16
    d = server.get("/rmsync/config.json", params={"q": "rep 1499"}).json()
    assert [x["representative_id"] for x in d["representatives"]] == ["R1499"]
    assert d["paging"]["total"] == 1
    d = server.get("/rmsync/config.json", params={"q": "%"}).json()
    assert d["representatives"] == [] and d["paging"]["total"] == 0
    t = server.get("/rmsync/config", params={"q": "r1499@"}).text
    assert t.count("<tr data-rep=") == 1 and 'value="r1499@"' in t
    assert "No representative matches" in server.get("/rmsync/config", params={"q": "_x_"}).text
    for bad in ({"page": "0"}, {"page": "abc"}, {"page": "-1"}, {"q": "x" * 201}):
        assert server.get("/rmsync/config", params=bad).status_code == 400, bad
    # an action on page 3 comes back to page 3 (whitelisted "back": nothing else passes)
    r = post(server, {"action": "set_active", "rep": "R1", "active": "1", "back": "page=3&q=Rep"})
    assert r.status_code == 303
    assert r.headers["Location"].endswith("/rmsync/config?done=set_active&q=Rep&page=3")
    r = post(server, {"action": "set_active", "rep": "R1", "active": "0",
                      "back": "page=3&evil=https://x.example/"})
    assert r.status_code == 303 and r.headers["Location"].endswith("/rmsync/config?done=set_active")
    t = server.get("/rmsync/config", params={"q": "Rep", "page": "3"}).text
    assert 'name="back" value="q=Rep&amp;page=3"' in t
