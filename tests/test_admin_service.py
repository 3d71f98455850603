"""Stop / Start of the sync service from the admin page, end to end: real Apache (runner =
the engine), PostgreSQL, the Graph simulator. While stopped, a change made in Outlook is queued
(the webhook stores its notification) but not applied; after Start it is applied."""
import time

import pytest
import requests

from engine_stack import ALICE, EngineStack
from test_admin import OTHERS

SUB, SECRET = "sub-admin-alice", "admin-test-client-state-0123456789abcdef"


@pytest.fixture(scope="module")
def st():
    s = EngineStack(cycle=1, active=("ALICE",))
    s.httpd.allow = set(OTHERS)
    yield s
    bad = s.close()
    assert not bad, "unexpected error log lines:\n" + "\n".join(bad)


def action(st, name):
    h = st.httpd
    tok = h.get("/rmsync/config.json").json()["csrf_token"]
    r = requests.post(h.url("/rmsync/config"), data={"action": name, "token": tok},
                      headers={"Origin": h.base_url}, allow_redirects=False, timeout=10)
    assert r.status_code == 303, r.text
    return r


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

    action(st, "stop")
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
