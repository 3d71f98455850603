"""Health at a glance and a fix for every error, end to end: real Apache (runner = the engine),
PostgreSQL, the Graph simulator. All green -> health ok (banner, status.json, metrics); the
client secret rotated in Entra (simulator) -> the banner and status.json name the AADSTS code and
RMSyncGraphClientSecretFile within a cycle; a mailbox that does not exist -> the row says what
to check, the Initial Sync request ends as failed, its errors are one row with a count; a
breaker hold -> banner; the database stopped -> no representative shown as "ok"."""
import re
import time

import pytest
import requests

from engine_stack import CLIENT, SECRET, EngineStack
from test_admin import OTHERS


@pytest.fixture(scope="module")
def st():
    s = EngineStack(cycle=1, active=("ALICE",))
    s.httpd.allow = set(OTHERS)
    yield s
    bad = s.close()
    assert not bad, "unexpected error log lines:\n" + "\n".join(bad)


def health(st):
    return st.httpd.status()["health"]


def codes(h):
    return {r["code"] for r in h["reasons"]}


def wait_health(st, pred, timeout=30, what="health"):
    end = time.time() + timeout
    h = None
    while time.time() < end:
        h = health(st)
        if pred(h):
            return h
        time.sleep(0.3)
    raise AssertionError(f"{what}: not reached; last health {h}")


def banner(st, page):
    html = st.httpd.get(f"/rmsync/{page}").text
    m = re.search(r'<div class="health [a-z]+" id="health"[^>]*>.*?</div>', html, re.S)
    assert m, f"no health banner on {page}"
    return m.group(0)


def test_all_green(st):
    st.wait_pass("ALICE")
    h = wait_health(st, lambda h: h["status"] == "ok", what="all green")
    assert h["reasons"] == [] and h["database_reachable"] is True
    for page in ("config", "log", "status"):
        b = banner(st, page)
        assert 'data-health="ok"' in b and "Healthy" in b
    m = st.httpd.get("/rmsync/metrics").text
    assert re.search(r"^rmsync_health_status 0$", m, re.M)
    assert re.search(r'^rmsync_health_reason\{code="token_failing"\} 0$', m, re.M)


def test_shm_copied_per_page(st):
    """No admin request copies all of shared memory when it needs less (X-RMSync-Shm-Bytes:
    the bytes it read): style.css nothing; the log page the fixed part and the slots the
    health banner counts (none in error now); the configuration page also its page's slots;
    status and metrics every slot in use."""
    st.wait_for(lambda: len(st.httpd.status()["representatives"]) >= 3, what="slots published")
    b = {k: int(st.httpd.get(f"/rmsync/{k}").headers["X-RMSync-Shm-Bytes"])
         for k in ("style.css", "log", "config?q=alice", "config", "status", "metrics")}
    assert b["style.css"] == 0
    assert 0 < b["log"] < b["config?q=alice"] < b["config"], b
    assert b["status"] == b["metrics"], b
    assert int(st.httpd.get("/rmsync/status.json").headers["X-RMSync-Shm-Bytes"]) == b["status"]
    # the searched page holds one representative: one slot more than the log page (none in
    # error or held now); the full page holds all n, its slots only
    slot = b["config?q=alice"] - b["log"]
    n = len(st.httpd.status()["representatives"])
    assert b["config"] - b["config?q=alice"] == (n - 1) * slot, (b, n)
    assert b["log"] < b["status"] - (n - 1) * slot, b       # status: the fixed part + n slots


def test_mailbox_not_found(st):
    ghost = "ghost@demo.rmsync.test"
    st.pg.sql("INSERT INTO rmsync.rep_state (representative_id, sync_active, mailbox)"
              " VALUES ('CAROL', true, $1) ON CONFLICT (representative_id) DO UPDATE"
              " SET sync_active = true, mailbox = $1", ghost)
    st.pg.sql("INSERT INTO rmsync.request (kind, representative_id, requested_by)"
              " VALUES ('initial_sync', 'CAROL', 'test')")
    # the request ends as failed with its reason and fix (not resumed every 30 s)
    st.wait_for(lambda: st.pg.val("SELECT state FROM rmsync.request WHERE kind = 'initial_sync'"
                                  " AND representative_id = 'CAROL' ORDER BY id DESC LIMIT 1")
                == "failed", timeout=30, what="initial sync request failed")
    result = st.pg.val("SELECT result FROM rmsync.request WHERE kind = 'initial_sync'"
                       " AND representative_id = 'CAROL' ORDER BY id DESC LIMIT 1")
    assert "e-mail" in result and "licensed" in result, result
    # the row says what to check: status (live) and configuration page, and JSON
    rep = st.wait_for(lambda: (st.rep_status("CAROL") or {}).get("error_class")
                      and st.rep_status("CAROL"), timeout=20, what="CAROL's error")
    assert rep["error_class"] == "mailbox_not_found", rep
    assert "e-mail" in rep["error_fix"] and "exists" in rep["error_fix"]
    for page in ("status", "config"):
        html = st.httpd.get(f"/rmsync/{page}").text
        assert 'data-error-class="mailbox_not_found"' in html, page
        assert "Check the representative&#x27;s e-mail" in html or \
               "Check the representative's e-mail" in html, page
    h = health(st)
    assert h["status"] == "warning" and "representative_errors" in codes(h), h
    # the log: error rows carry the fix too
    rows = requests.get(st.httpd.url("/rmsync/log.json"), params={"rep": "CAROL",
                        "level": "error"}, timeout=10).json()["rows"]
    assert rows and all(r.get("error_fix") for r in rows), rows


def test_repeated_error_is_one_row(st):
    """CAROL's mailbox keeps failing every cycle (1 s): one row with its count, not one row a
    cycle; an hour later a new row starts."""
    where = "representative_id = 'CAROL' AND level = 'error' AND action = 'delta'"
    st.wait_for(lambda: int(st.pg.val(f"SELECT coalesce(max(repeat_count), 0)"
                                      f" FROM rmsync.sync_log WHERE {where}")) >= 4,
                timeout=40, what="a repeated error counted")
    assert st.log_count(where) == 1, st.log_rows(where)
    starts = st.log_rows("representative_id = 'CAROL' AND action = 'initial-sync'")
    assert len([r for r in starts if r["message"].startswith("initial sync started")]) <= 2
    html = requests.get(st.httpd.url("/rmsync/log"), params={"rep": "CAROL"}, timeout=10).text
    assert re.search(r'class="badge repeat"[^>]*>&times; \d+ since \d\d:\d\d', html), html[-3000:]
    j = requests.get(st.httpd.url("/rmsync/log.json"), params={"rep": "CAROL",
                     "level": "error"}, timeout=10).json()["rows"]
    assert any(r["repeat_count"] >= 4 and r.get("last_at") for r in j), j
    # the text log: not a line a cycle
    with open(st.log_file, encoding="utf-8") as f:
        lines = [ln for ln in f if "rep=CAROL" in ln and "action=delta" in ln]
    assert len(lines) <= 3, lines
    # an hour later (the row's first time moved back) the next error starts a new row
    st.pg.sql(f"UPDATE rmsync.sync_log SET at = at - interval '61 minutes' WHERE {where}")
    st.wait_for(lambda: st.log_count(where) == 2, timeout=20, what="a new row after an hour")
    # stop CAROL for the next tests
    st.pg.sql("UPDATE rmsync.rep_state SET sync_active = false WHERE representative_id = 'CAROL'")


def test_breaker_hold_banner(st):
    st.pg.sql("UPDATE rmsync.rep_state SET held_by_breaker = true, held_reason = 'test hold'"
              " WHERE representative_id = 'ALICE'")
    try:
        h = health(st)
        assert "breaker_hold" in codes(h) and h["status"] in ("warning", "error"), h
        b = banner(st, "config")
        assert 'data-code="breaker_hold"' in b and "Approve" in b
        m = st.httpd.get("/rmsync/metrics").text
        assert re.search(r'^rmsync_health_reason\{code="breaker_hold"\} 1$', m, re.M)
    finally:
        st.pg.sql("UPDATE rmsync.rep_state SET held_by_breaker = false, held_reason = NULL"
                  " WHERE representative_id = 'ALICE'")


def test_secret_rotated(st):
    st.sim.app_set(CLIENT, client_secret="rotated-in-entra-" + SECRET)
    st.sim.ctl("POST", "tokens/revoke")
    try:
        t0 = time.time()
        h = wait_health(st, lambda h: "token_failing" in codes(h), timeout=15,
                        what="token failing")
        # within a cycle or two (cycle = 1 s, plus the token request's own time)
        assert time.time() - t0 < 15
        r = [x for x in h["reasons"] if x["code"] == "token_failing"][0]
        assert h["status"] == "error" and r["severity"] == "error"
        assert "AADSTS7000215" in r["message"], r
        assert "RMSyncGraphClientSecretFile" in r["fix"], r
        runner = st.httpd.status()["runner"]
        assert runner["token_error"].startswith("AADSTS7000215"), runner
        for page in ("config", "log", "status"):
            b = banner(st, page)
            assert "AADSTS7000215" in b and "RMSyncGraphClientSecretFile" in b, page
        m = st.httpd.get("/rmsync/metrics").text
        assert re.search(r"^rmsync_health_status 2$", m, re.M)
        assert re.search(r'^rmsync_health_reason\{code="token_failing"\} 1$', m, re.M)
    finally:
        st.sim.app_set(CLIENT, client_secret=SECRET)
    # a token obtained again clears it
    wait_health(st, lambda h: "token_failing" not in codes(h), timeout=30, what="token back")


def test_database_stopped(st):
    st.wait_for(lambda: (st.rep_status("ALICE") or {}).get("state") == "ok", timeout=30,
                what="ALICE ok")
    st.pg.stop()
    try:
        h = wait_health(st, lambda h: "db_unreachable" in codes(h), timeout=20,
                        what="database unreachable")
        assert h["status"] == "error" and h["database_reachable"] is False
        reps = st.httpd.status()["representatives"]
        assert reps and all(r["state"] != "ok" for r in reps), reps
        assert any(r["state"] == "unknown" for r in reps), reps
        html = st.httpd.get("/rmsync/status").text
        assert 'data-code="db_unreachable"' in html
        live = html[html.index('id="live"'):html.index("</table>", html.index('id="live"'))]
        assert ">ok<" not in live and "unknown" in live
        # the configuration page cannot be rendered, but still shows the banner
        r = st.httpd.get("/rmsync/config")
        assert r.status_code == 503 and 'data-code="db_unreachable"' in r.text
    finally:
        st.pg.start()
    wait_health(st, lambda h: "db_unreachable" not in codes(h), timeout=40, what="db back")


def test_database_signals(st):
    """SYNC_MASTER not ready, service stopped, a failing subscription, master categories
    forbidden: each is a reason of the banner, green again when all are fixed."""
    st.pg.sql("UPDATE crm.fnd_user SET active = false WHERE identity = 'SYNC_MASTER'")
    st.pg.sql("UPDATE rmsync.service_state SET running = false WHERE id = 1")
    st.pg.sql("INSERT INTO rmsync.sync_log (level, representative_id, action, message)"
              " VALUES ('error', 'ALICE', 'subscription', 'RMS00604 create subscription failed"
              " (HTTP 400): ValidationError: notification URL unreachable; retried in 300 s')")
    st.pg.sql("UPDATE rmsync.rep_state SET category_state = 'forbidden'"
              " WHERE representative_id = 'ALICE'")
    try:
        h = health(st)
        assert {"master_not_ready", "service_stopped", "subscriptions_failing",
                "categories_forbidden"} <= codes(h), h
        assert h["status"] == "error"
        fixes = {r["code"]: r["fix"] for r in h["reasons"]}
        assert "Activate the user" in fixes["master_not_ready"]
        assert "Start" in fixes["service_stopped"]
        assert "RMSyncNotificationURL" in fixes["subscriptions_failing"]
        assert "MailboxSettings.ReadWrite" in fixes["categories_forbidden"]
        b = banner(st, "log")
        for c in ("master_not_ready", "service_stopped", "subscriptions_failing",
                  "categories_forbidden"):
            assert f'data-code="{c}"' in b
    finally:
        st.pg.sql("UPDATE crm.fnd_user SET active = true WHERE identity = 'SYNC_MASTER'")
        st.pg.sql("UPDATE rmsync.service_state SET running = true WHERE id = 1")
        st.pg.sql("INSERT INTO rmsync.sync_log (level, representative_id, action, message)"
                  " VALUES ('info', 'ALICE', 'subscription', 'subscription created (test)')")
        st.pg.sql("UPDATE rmsync.rep_state SET category_state = 'created'"
                  " WHERE representative_id = 'ALICE'")
    wait_health(st, lambda h: not ({"master_not_ready", "service_stopped",
                                    "subscriptions_failing", "categories_forbidden"} & codes(h)),
                what="signals cleared")


def test_category_state_per_representative(st):
    """The simulator's app loses MailboxSettings.ReadWrite: a representative activated now gets
    "forbidden" on the configuration page with the fix, while ALICE (checked before) stays
    "ok"; with the permission back and a new activation it becomes "ok"."""
    def row(rep):
        t = st.httpd.get("/rmsync/config").text
        return re.search(rf'<tr data-rep="{rep}">.*?</tr>', t, re.S).group(0)

    def cat(rep):
        reps = st.httpd.get("/rmsync/config.json").json()["representatives"]
        return next(x for x in reps if x["representative_id"] == rep)

    st.wait_for(lambda: cat("ALICE")["category"] == "ok", timeout=30, what="ALICE's category")
    assert cat("BOB")["category"] == "not synced"
    st.sim.app_set(CLIENT, permissions=["Calendars.ReadWrite"])
    st.sim.ctl("POST", "tokens/revoke")
    try:
        st.set_active("BOB", True)
        b = st.wait_for(lambda: cat("BOB")["category"] == "forbidden" and cat("BOB"),
                        timeout=40, what="BOB's category forbidden")
        assert "MailboxSettings.ReadWrite" in b["category_fix"]
        r = row("BOB")
        assert "forbidden" in r and 'data-error-class="categories_forbidden"' in r
        assert "MailboxSettings.ReadWrite" in r
        assert cat("ALICE")["category"] == "ok"
        assert "categories_forbidden" in codes(health(st))
    finally:
        st.sim.app_set(CLIENT, permissions=["Calendars.ReadWrite", "MailboxSettings.ReadWrite"])
        st.sim.ctl("POST", "tokens/revoke")
    # a new activation checks again: ok now
    st.set_active("BOB", False)
    st.set_active("BOB", True)
    st.wait_for(lambda: cat("BOB")["category"] == "ok", timeout=40, what="BOB's category ok")
    assert 'class="category"><span class="badge ok">ok' in row("BOB")
    st.set_active("BOB", False)
