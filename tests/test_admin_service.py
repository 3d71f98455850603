"""The admin actions end to end with the real runner: real Apache (runner = the engine),
PostgreSQL, the Graph simulator. Stop / Start: while stopped, a change made in Outlook is queued
(the webhook stores its notification) but not applied; after Start it is applied. Initial Sync,
Retry (from the log page) and Approve (of a breaker hold) are carried out by the runner."""
import re
import time

import pytest
import requests

from engine_stack import ALICE, CAROL, EngineStack
from test_admin import OTHERS

SUB, SECRET = "sub-admin-alice", "admin-test-client-state-0123456789abcdef"


@pytest.fixture(scope="module")
def st():
    s = EngineStack(cycle=1, active=("ALICE", "CAROL"), extra="RMSyncMassDeleteLimit 3 50")
    s.httpd.allow = set(OTHERS)
    yield s
    bad = s.close()
    assert not bad, "unexpected error log lines:\n" + "\n".join(bad)


def action(st, name, page="config", **params):
    h = st.httpd
    tok = h.get("/rmsync/config.json").json()["csrf_token"]
    r = requests.post(h.url("/rmsync/" + page), data={"action": name, "token": tok, **params},
                      headers={"Origin": h.base_url}, allow_redirects=False, timeout=10)
    assert r.status_code == 303, r.text
    return r


def request_row(st, kind, rep):
    rows = st.pg.json("SELECT id, state, result, requested_by FROM rmsync.request"
                      " WHERE kind = $1 AND representative_id = $2 ORDER BY id DESC LIMIT 1",
                      kind, rep)
    return rows[0] if rows else None


def notify(st, event_id, sub, secret):
    body = {"value": [{
        "subscriptionId": sub, "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
        "changeType": "updated", "clientState": secret, "tenantId": "t",
        "resource": f"Users/u-alice/Events/{event_id}",
        "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "id": event_id}}]}
    r = requests.post(st.httpd.url("/rmsync/notify"), json=body, timeout=10)
    assert r.status_code == 202, r.text


def test_stop_queues_start_applies(st):
    h = st.httpd
    no, ev = st.new_linked(ALICE, "Service test", day=3)
    assert st.activity(no)["description"] == "Service test"
    # ALICE's subscription: the runner's own when it made one, else one for this test
    st.pg.sql("INSERT INTO rmsync.subscription (subscription_id, representative_id, client_state,"
              " resource, expires_at) VALUES ($1, 'ALICE', $2, 'users/alice/events',"
              " now() + interval '1 day') ON CONFLICT DO NOTHING", SUB, SECRET)
    sub, secret = st.pg.sql("SELECT subscription_id, client_state FROM rmsync.subscription"
                            " WHERE representative_id = 'ALICE'")[0]

    action(st, "stop", confirm="1")
    assert st.pg.sql("SELECT running, changed_by FROM rmsync.service_state") == [("f", "-")]
    h.wait_for(lambda s: "stopped" in s["runner"]["activity"], what="runner paused")
    page = h.get("/rmsync/config").text
    assert "stopped" in page and 'data-action="start"' in page

    # the user renames the appointment in Outlook; Graph notifies us
    st.sim.user_patch(ALICE, ev["id"], {"subject": "Renamed while stopped"})
    notify(st, ev["id"], sub, secret)
    assert st.pg.sql("SELECT state FROM rmsync.notification WHERE event_id = $1",
                     ev["id"]) == [("pending",)]
    # several runner seconds later (cycle 1 s; the heartbeat shows it is alive): still queued,
    # nothing applied
    t0 = h.status()["runner"]["heartbeat_usec"]
    h.wait_for(lambda s: s["runner"]["heartbeat_usec"] > t0 + 4_000_000 and s["runner"]["alive"],
               timeout=30, what="4 s of runner heartbeats while stopped")
    assert st.activity(no)["description"] == "Service test"
    assert st.pg.sql("SELECT state FROM rmsync.notification WHERE event_id = $1",
                     ev["id"]) == [("pending",)]

    action(st, "start")
    assert st.pg.val("SELECT running FROM rmsync.service_state") == "t"
    st.wait_for(lambda: st.activity(no)["description"] == "Renamed while stopped",
                timeout=30, what="change applied after Start")
    assert st.activity(no)["modified_by"] == "SYNC_MASTER"

    # the log page tells the story, newest first
    j = h.get("/rmsync/log.json", params={"n": "200"}).json()
    acts = [r["action"] for r in j["rows"]]
    assert "stop" in acts and "start" in acts
    assert acts.index("start") < acts.index("stop")
    assert any(r["action"] == "update" and r["activity_no"] == no for r in j["rows"])


def test_initial_sync_is_carried_out(st):
    action(st, "initial_sync", rep="ALICE")
    assert request_row(st, "initial_sync", "ALICE")["requested_by"] == "-"
    st.wait_for(lambda: request_row(st, "initial_sync", "ALICE")["state"] == "done",
                timeout=30, what="initial sync done")
    assert st.log_count("representative_id = 'ALICE' AND action = 'initial-sync'"
                        " AND message LIKE 'initial sync requested by -%'") >= 1
    # the configuration page shows it done under the latest requests, no longer pending
    t = st.httpd.get("/rmsync/config").text
    alice = re.search(r'<tr data-rep="ALICE">.*?</tr>', t, re.S).group(0)
    assert 'data-action="initial_sync"' in alice


def test_retry_from_the_log_page(st):
    no, ev = st.new_linked(ALICE, "Retry me", day=4)
    st.wait_for(lambda: st.log_count("event_id = $1", ev["id"]) > 0, what="a log line")
    log_id = st.pg.val("SELECT max(id) FROM rmsync.sync_log WHERE event_id = $1", ev["id"])
    # the user changed the subject meanwhile; Retry fetches the event and applies it
    st.sim.user_patch(ALICE, ev["id"], {"subject": "Retried"})
    r = action(st, "retry", page="log", log=log_id, back="rep=ALICE")
    assert r.headers["Location"].endswith("/rmsync/log?done=retry&rep=ALICE")
    st.wait_for(lambda: request_row(st, "retry", "ALICE")["state"] in ("done", "failed"),
                timeout=30, what="retry carried out")
    assert request_row(st, "retry", "ALICE")["state"] == "done"
    assert st.activity(no)["description"] == "Retried"
    rows = st.log_rows("action = 'retry' AND event_id = $1", ev["id"])
    assert any("(admin -)" in r["message"] for r in rows)                 # the admin's line
    assert any("retry requested by -" in r["message"] for r in rows)      # the runner's


def test_approve_a_breaker_hold(st):
    # RMSyncMassDeleteLimit 3 50: deleting 4 of CAROL's 5 linked appointments trips it
    links = [st.new_linked(CAROL, f"Carol {i}", day=2 + i) for i in range(5)]
    action(st, "stop", confirm="1")          # one pass must see all four deletions
    st.httpd.wait_for(lambda s: s["runner"]["state"] == "paused", what="paused")
    for no, ev in links[:4]:
        st.sim.user_delete(CAROL, ev["id"])
    action(st, "start")
    st.wait_for(lambda: st.rep_state("CAROL")["held_by_breaker"] is True, timeout=30,
                what="held")
    t = st.httpd.get("/rmsync/config").text
    carol = re.search(r'<tr data-rep="CAROL">.*?</tr>', t, re.S).group(0)
    assert "held" in carol and 'data-action="approve"' in carol
    assert all(st.activity(no) is not None for no, _ in links[:4])
    action(st, "approve", rep="CAROL")
    st.wait_for(lambda: all(st.activity(no) is None for no, _ in links[:4]), timeout=30,
                what="deleted after approval")
    assert st.activity(links[4][0]) is not None
    assert request_row(st, "approve", "CAROL")["state"] == "done"
    t = st.httpd.get("/rmsync/config").text
    carol = re.search(r'<tr data-rep="CAROL">.*?</tr>', t, re.S).group(0)
    assert 'data-action="approve"' not in carol
