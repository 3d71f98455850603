"""Several nodes on one database (issue 17): two Apache instances with the module share one
PostgreSQL. Each runner keeps a heartbeat row in rmsync.node; the status page (HTML and JSON) of
either node lists both runners and flags a node whose heartbeat stopped (kill -9 of its
processes). Stop on node A stops node B's syncing too (an Outlook change arriving through B's
webhook is queued, not applied), Start resumes it."""
import os
import signal
import time

import pytest
import requests

from engine_stack import ALICE, EngineStack
from lib.httpd import Httpd, wait_for
from test_admin import OTHERS

SUB, SECRET = "sub-nodes-alice", "nodes-test-client-state-0123456789abcdef"
STALE_S = 15          # RMSYNC_NODE_STALE_S: three beats of 5 s


@pytest.fixture(scope="module")
def two():
    st = EngineStack(cycle=1, active=("ALICE",))
    st.httpd.allow = set(OTHERS)
    b = Httpd(name="rmsync-node-b")
    b.allow = set(OTHERS)
    b.write_conf(rmsync=st.conf())
    b.start()
    yield st, b
    bad = []
    try:
        b.stop()
        bad = b.bad_log_lines(b.allow)
    except Exception:
        pass
    finally:
        b.destroy()
    bad += st.close()
    assert not bad, "unexpected error log lines:\n" + "\n".join(bad)


def nodes(h):
    return {n["node_id"]: n for n in h.status()["nodes"]}


def node_of(h):
    return [k for k in nodes(h) if k.endswith(f":{h.port}")]


def action(h, name, **params):
    tok = h.get("/rmsync/config.json").json()["csrf_token"]
    r = requests.post(h.url("/rmsync/config"), data={"action": name, "token": tok, **params},
                      headers={"Origin": h.base_url}, allow_redirects=False, timeout=10)
    assert r.status_code == 303, r.text


def notify(h, event_id, sub, secret):
    body = {"value": [{
        "subscriptionId": sub, "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
        "changeType": "updated", "clientState": secret, "tenantId": "t",
        "resource": f"Users/u-alice/Events/{event_id}",
        "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "id": event_id}}]}
    r = requests.post(h.url("/rmsync/notify"), json=body, timeout=10)
    assert r.status_code == 202, r.text


def test_both_nodes_listed(two):
    st, b = two
    a = st.httpd
    for h in (a, b):
        wait_for(lambda: len(h.status()["nodes"]) == 2, timeout=30, what="two node rows")
    ns = nodes(a)
    assert nodes(b).keys() == ns.keys()
    pids = {a.port: a.runner_pids(), b.port: b.runner_pids()}
    for h in (a, b):
        (nid,) = node_of(h)
        assert ns[nid]["pid"] in pids[h.port]
        assert ns[nid]["stale"] is False and ns[nid]["beat_age_s"] <= STALE_S
    page = a.get("/rmsync/status").text
    assert 'id="nodes"' in page
    for nid in ns:
        assert nid in page
    assert "stale-node" not in page


def test_stop_on_a_stops_b(two):
    st, b = two
    a = st.httpd
    no, ev = st.new_linked(ALICE, "Node test", day=3)
    assert st.activity(no)["description"] == "Node test"
    st.pg.sql("INSERT INTO rmsync.subscription (subscription_id, representative_id, client_state,"
              " resource, expires_at) VALUES ($1, 'ALICE', $2, 'users/alice/events',"
              " now() + interval '1 day') ON CONFLICT DO NOTHING", SUB, SECRET)
    sub, secret = st.pg.sql("SELECT subscription_id, client_state FROM rmsync.subscription"
                            " WHERE representative_id = 'ALICE'")[0]
    action(a, "stop", confirm="1")
    for h in (a, b):
        h.wait_for(lambda s: "stopped" in s["runner"]["activity"], what="runner paused")
    # the node rows say so too (within a beat)
    wait_for(lambda: all("stopped" in (n["state"] or "") for n in nodes(a).values()),
             timeout=20, what="node rows show the stop")
    st.sim.user_patch(ALICE, ev["id"], {"subject": "Renamed while stopped"})
    notify(b, ev["id"], sub, secret)
    t0 = b.status()["runner"]["heartbeat_usec"]
    b.wait_for(lambda s: s["runner"]["heartbeat_usec"] > t0 + 4_000_000 and s["runner"]["alive"],
               timeout=30, what="4 s of node B's heartbeats while stopped")
    assert st.activity(no)["description"] == "Node test"
    assert st.pg.sql("SELECT state FROM rmsync.notification WHERE event_id = $1",
                     ev["id"]) == [("pending",)]
    action(b, "start")
    st.wait_for(lambda: st.activity(no)["description"] == "Renamed while stopped",
                timeout=30, what="change applied after Start")


def test_graceful_and_clean_stop(two):
    """A graceful restart: the node's row carries the new runner. A node stopped normally is
    listed as stopped (its runner said so), without the warning a silent node gets."""
    st, b = two
    a = st.httpd
    (nid_b,) = node_of(b)
    old = set(b.runner_pids())
    b.graceful()
    new = wait_for(lambda: set(b.runner_pids()) - old, timeout=30, what="new runner")
    wait_for(lambda: nodes(a)[nid_b]["pid"] in new and nodes(a)[nid_b]["state"] != "stopped",
             timeout=20, what="node B's row with the new runner")
    c = Httpd(name="rmsync-node-c")
    c.allow = set(OTHERS)
    c.write_conf(rmsync=st.conf())
    c.start()
    try:
        wait_for(lambda: node_of(c), timeout=30, what="node C listed")
        (nid_c,) = node_of(c)
        c.stop()
        assert c.bad_log_lines(c.allow) == []
    finally:
        c.destroy()
    n = nodes(a)[nid_c]
    assert n["state"] == "stopped" and n["working_on"] is None
    page = a.get("/rmsync/status").text
    assert nid_c in page and "stale-node" not in page


def test_killed_node_is_flagged(two):
    st, b = two
    a = st.httpd
    (nid_b,) = node_of(b)
    # the parent first: its runner then sees it gone (PR_SET_PDEATHSIG) and must not call its
    # node stopped normally
    victims = [b.parent_pid()] + list(b.children())
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    t0 = time.time()
    wait_for(lambda: nodes(a)[nid_b]["stale"], timeout=STALE_S + 15, interval=0.5,
             what="node B flagged stopped")
    waited = time.time() - t0
    assert waited >= STALE_S - 6          # not flagged before the timeout (less one beat)
    ns = nodes(a)
    (nid_a,) = node_of(a)
    assert ns[nid_a]["stale"] is False
    page = a.get("/rmsync/status").text
    assert "stale-node" in page and nid_b in page
