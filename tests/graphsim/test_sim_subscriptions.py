import datetime as dt
import os
import time
import urllib.parse

import pytest

from simtestlib import ALICE, BOB, Receiver, ev_body


def exp_in(minutes):
    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def sub_body(receiver, user=ALICE, minutes=60, lifecycle=True, **extra):
    b = {"changeType": "created,updated,deleted", "notificationUrl": receiver.url + "/notify?tenant=abc",
         "resource": "users/%s/events" % user, "expirationDateTime": exp_in(minutes),
         "clientState": "secret-state-123"}
    if lifecycle:
        b["lifecycleNotificationUrl"] = receiver.url + "/lifecycle"
    b.update(extra)
    return b


@pytest.fixture
def fast(env):
    env.sim.config(allow_http_notification_urls=True, notification_debounce_ms=20, retry_base_ms=150)
    return env


def test_create_handshake_and_shape(fast, receiver):
    st, _, s = fast.g("POST", "/subscriptions", sub_body(receiver))
    assert st == 201, s
    assert len(receiver.validations) == 2, "notificationUrl and lifecycleNotificationUrl are both validated"
    assert all(" " in v and "+" in v for v in receiver.validations), "token needs URL-decoding"
    assert s["clientState"] == "secret-state-123" and s["changeType"] == "created,updated,deleted"
    assert s["expirationDateTime"].endswith("Z") and s["id"]
    st, _, lst = fast.g("GET", "/subscriptions")
    assert [x["id"] for x in lst["value"]] == [s["id"]]
    assert fast.sim.subscriptions()[0]["clientState"] == "secret-state-123"


@pytest.mark.parametrize("mode", ["wrong", "status500", "json"])
def test_handshake_refused(fast, receiver, mode):
    receiver.validation_mode = mode
    st, _, b = fast.g("POST", "/subscriptions", sub_body(receiver, lifecycle=False))
    assert st == 400 and b["error"]["code"] == "ValidationError"
    assert fast.sim.subscriptions() == []


def test_http_url_refused_unless_allowed(env, receiver):
    st, _, b = env.g("POST", "/subscriptions", sub_body(receiver))
    assert st == 400
    assert receiver.validations == []


def test_expiration_limit(fast, receiver):
    st, _, b = fast.g("POST", "/subscriptions", sub_body(receiver, minutes=4231))
    assert st == 400 and b["error"]["code"] == "ExtensionError"
    assert fast.g("POST", "/subscriptions", sub_body(receiver, minutes=4229))[0] == 201


def test_notification_delivered_with_shape(fast, receiver):
    _, _, s = fast.g("POST", "/subscriptions", sub_body(receiver), headers={"Prefer": 'IdType="ImmutableId"'})
    ev = fast.sim.user_create(ALICE, ev_body("hello"))
    posts = receiver.wait_posts(1)
    path, payload, _ = posts[0]
    assert path == "/notify?tenant=abc", "query string of notificationUrl is preserved"
    item = payload["value"][0]
    assert item["subscriptionId"] == s["id"] and item["clientState"] == "secret-state-123"
    assert item["changeType"] == "created"
    assert item["subscriptionExpirationDateTime"] and item["tenantId"]
    user_id = [u["id"] for u in fast.sim.ctl("GET", "users")["value"] if u["mail"] == ALICE][0]
    assert item["resource"] == "Users/%s/Events/%s" % (user_id, ev["immutableId"])
    rd = item["resourceData"]
    assert rd["@odata.type"] == "#Microsoft.Graph.Event" and rd["id"] == ev["immutableId"]
    assert rd["@odata.id"] == item["resource"] and rd["@odata.etag"] == 'W/"%s"' % ev["changeKey"]
    # no notification for another mailbox
    fast.sim.user_create(BOB, ev_body("bob"))
    fast.sim.user_delete(ALICE, ev["immutableId"])
    posts = receiver.wait_posts(2)
    assert posts[1][1]["value"][0]["changeType"] == "deleted"
    time.sleep(0.2)
    assert len(receiver.posts) == 2


def test_notifications_batched(fast, receiver):
    fast.sim.config(notification_debounce_ms=2000)
    fast.g("POST", "/subscriptions", sub_body(receiver))
    for i in range(3):
        fast.sim.user_create(ALICE, ev_body("e%d" % i))
    posts = receiver.wait_posts(1)
    time.sleep(0.2)
    assert len(receiver.posts) == 1 and len(posts[0][1]["value"]) == 3


def test_retry_after_500(fast, receiver):
    fast.g("POST", "/subscriptions", sub_body(receiver))
    receiver.statuses.extend([500, 503])
    fast.sim.user_create(ALICE, ev_body("retry me"))
    posts = receiver.wait_posts(3, timeout=10)
    assert [p[2] for p in posts[:3]] == [500, 503, 202]
    assert posts[0][1] == posts[2][1], "the same batch is retried"
    log = [n for n in fast.sim.notifications() if n["kind"] == "change"]
    assert [n["status"] for n in log] == [500, 503, 202]
    c = fast.sim.counters()
    assert c["notification_posts_failed"] == 2 and c["notifications_delivered"] == 1


def test_unreachable_endpoint_gives_up_and_sends_missed(fast, receiver):
    fast.sim.config(notification_retry_window_s=0.5, retry_base_ms=100)
    lc = Receiver()
    try:
        _, _, s = fast.g("POST", "/subscriptions", sub_body(receiver, lifecycleNotificationUrl=lc.url + "/lc"))
        receiver.close()      # the notification endpoint goes away
        fast.sim.user_create(ALICE, ev_body("lost"))
        posts = lc.wait_posts(1, timeout=10)
        assert posts[0][1]["value"][0]["lifecycleEvent"] == "missed"
        assert fast.sim.counters()["notifications_failed"] == 1
    finally:
        lc.close()


def test_drop_notifications_fault(fast, receiver):
    fast.g("POST", "/subscriptions", sub_body(receiver))
    fast.sim.fault("drop_notifications", count=1)
    fast.sim.user_create(ALICE, ev_body("dropped"))
    fast.sim.user_create(ALICE, ev_body("kept"))
    posts = receiver.wait_posts(1)
    time.sleep(0.2)
    assert sum(len(p[1]["value"]) for p in posts) == 1
    assert fast.sim.counters()["notifications_dropped"] == 1


def test_renew_delete_and_404(fast, receiver):
    _, _, s = fast.g("POST", "/subscriptions", sub_body(receiver, minutes=10))
    new = exp_in(4000)
    st, _, r = fast.g("PATCH", "/subscriptions/%s" % s["id"], {"expirationDateTime": new})
    assert st == 200 and r["expirationDateTime"][:19] == new[:19]
    assert fast.g("POST", "/subscriptions/%s/reauthorize" % s["id"])[0] == 204
    assert fast.g("DELETE", "/subscriptions/%s" % s["id"])[0] == 204
    for m in ("GET", "PATCH", "DELETE"):
        st, _, b = fast.g(m, "/subscriptions/%s" % s["id"], {"expirationDateTime": new} if m == "PATCH" else None)
        assert st == 404 and b["error"]["code"] == "ResourceNotFound", m


def test_expiry_sweeper(fast, receiver):
    fast.sim.config(max_subscription_minutes=0.1)       # 6 seconds
    st, _, b = fast.g("POST", "/subscriptions", sub_body(receiver, minutes=1))
    assert st == 400 and b["error"]["code"] == "ExtensionError"
    _, _, s = fast.g("POST", "/subscriptions", sub_body(receiver, minutes=0.05))
    assert fast.g("GET", "/subscriptions/%s" % s["id"])[0] == 200
    fast.sim.wait_for(lambda: fast.sim.subscriptions() == [], timeout=8)
    assert fast.g("PATCH", "/subscriptions/%s" % s["id"], {"expirationDateTime": exp_in(0.08)})[0] == 404
    assert fast.sim.counters()["subscriptions_expired"] == 1


def test_lifecycle_events(fast, receiver):
    _, _, s = fast.g("POST", "/subscriptions", sub_body(receiver))
    fast.sim.lifecycle(s["id"], "reauthorizationRequired")
    posts = receiver.wait_posts(1)
    assert posts[0][0] == "/lifecycle"
    it = posts[0][1]["value"][0]
    assert it["lifecycleEvent"] == "reauthorizationRequired" and it["subscriptionId"] == s["id"]
    assert it["clientState"] == "secret-state-123" and "resource" not in it
    fast.sim.lifecycle(s["id"], "subscriptionRemoved")
    posts = receiver.wait_posts(2)
    assert posts[1][1]["value"][0]["lifecycleEvent"] == "subscriptionRemoved"
    assert fast.g("GET", "/subscriptions/%s" % s["id"])[0] == 404


def test_https_notification_url_verified_against_ca(env, sim):
    # a receiver using the simulator's own server certificate (CN 127.0.0.1), trusted through ca.pem
    r = Receiver(certfile=os.path.join(sim.state_dir, "server.pem"), keyfile=os.path.join(sim.state_dir, "server.key"))
    try:
        st, _, b = env.g("POST", "/subscriptions", sub_body(r, lifecycle=False))
        assert st == 400, "unknown CA must fail validation"
        env.sim.config(notification_ca_file=sim.ca_file, notification_debounce_ms=20)
        st, _, s = env.g("POST", "/subscriptions", sub_body(r, lifecycle=False))
        assert st == 201, s
        env.sim.user_create(ALICE, ev_body("tls"))
        assert r.wait_posts(1)[0][1]["value"][0]["changeType"] == "created"
    finally:
        r.close()


def test_attendee_response_bumps_organizer_copy(fast, receiver):
    _, _, ev = fast.g("POST", "/users/%s/events" % ALICE, ev_body("meet", attendees=[
        {"type": "required", "emailAddress": {"address": BOB, "name": "Bob"}}]))
    _, _, s = fast.g("POST", "/subscriptions", sub_body(receiver))
    copy = fast.g("GET", "/users/%s/events" % BOB)[2]["value"][0]
    st, _, _ = fast.g("POST", "/users/%s/events/%s/accept" % (BOB, urllib.parse.quote(copy["id"], safe="")),
                      {"comment": "ok", "sendResponse": True})
    assert st == 202
    org = fast.g("GET", "/users/%s/events/%s" % (ALICE, urllib.parse.quote(ev["id"], safe="")))[2]
    assert org["attendees"][0]["status"]["response"] == "accepted"
    assert org["changeKey"] != ev["changeKey"], "Exchange changed the organizer's item behind the client's back"
    posts = receiver.wait_posts(1)
    assert posts[0][1]["value"][0]["changeType"] == "updated"


def test_reauthorization_required_before_expiry(fast, receiver):
    fast.sim.config(reauthorization_before_expiry_s=59.5)
    _, _, s = fast.g("POST", "/subscriptions", sub_body(receiver, minutes=1))
    posts = receiver.wait_posts(1, timeout=5)
    assert posts[0][0] == "/lifecycle"
    assert posts[0][1]["value"][0]["lifecycleEvent"] == "reauthorizationRequired"


def test_slow_endpoint_delayed_then_dropped(fast, receiver):
    fast.sim.config(slow_endpoint_min_posts=2, slow_endpoint_slow_ms=800, slow_endpoint_delay_pct=10,
                    slow_endpoint_drop_pct=60, slow_endpoint_delay_s=0.5)
    fast.g("POST", "/subscriptions", sub_body(receiver, lifecycle=False))
    receiver.delay_s = 1.0
    fast.sim.user_create(ALICE, ev_body("slow 1"))
    receiver.wait_posts(1)
    receiver.delay_s = 0
    fast.sim.user_create(ALICE, ev_body("fast 1"))
    receiver.wait_posts(2)
    # 1 of 2 answers was slow (50 %): the next batch is delayed but delivered
    t0 = time.monotonic()
    fast.sim.user_create(ALICE, ev_body("delayed"))
    receiver.wait_posts(3)
    assert time.monotonic() - t0 >= 0.45
    ep = list(fast.sim.counters()["notification_endpoints"].values())[0]
    assert ep["state"] == "slow" and ep["posts"] == 3
    # two more slow answers: 3 of 5 slow (60 %) -> dropped
    receiver.delay_s = 1.0
    fast.sim.config(slow_endpoint_delay_pct=100)
    fast.sim.user_create(ALICE, ev_body("slow 2"))
    receiver.wait_posts(4)
    fast.sim.user_create(ALICE, ev_body("slow 3"))
    receiver.wait_posts(5)
    fast.sim.user_create(ALICE, ev_body("dropped"))
    fast.sim.wait_for(lambda: fast.sim.counters()["notifications_dropped"] == 1, timeout=5)
    assert len(receiver.posts) == 5


def test_notification_jitter(fast, receiver):
    fast.sim.config(notification_jitter_ms=1000, notification_debounce_ms=0)
    fast.g("POST", "/subscriptions", sub_body(receiver, lifecycle=False))
    delays = []
    for i in range(3):
        t0 = time.monotonic()
        fast.sim.user_create(ALICE, ev_body("j%d" % i))
        receiver.wait_posts(i + 1, timeout=5)
        delays.append(time.monotonic() - t0)
    assert max(delays) > 0.05 and max(delays) < 3


def test_ignored_reauthorization_pauses_notifications(fast, receiver):
    fast.sim.config(reauthorization_grace_s=0.3)
    _, _, s = fast.g("POST", "/subscriptions", sub_body(receiver))
    fast.sim.lifecycle(s["id"], "reauthorizationRequired")
    receiver.wait_posts(1)
    time.sleep(0.4)
    fast.sim.user_create(ALICE, ev_body("lost while paused"))
    fast.sim.wait_for(lambda: fast.sim.counters()["notifications_dropped"] == 1, timeout=5)
    assert fast.sim.subscriptions()[0]["paused"] is True
    assert fast.g("POST", "/subscriptions/%s/reauthorize" % s["id"])[0] == 204
    fast.sim.user_create(ALICE, ev_body("delivered again"))
    posts = receiver.wait_posts(2)
    assert posts[1][1]["value"][0]["changeType"] == "created"
    assert fast.sim.subscriptions()[0]["paused"] is False


def test_handshake_timeout(fast, receiver):
    fast.sim.config(validation_timeout_s=0.4)
    receiver.validation_mode = "slow"
    st, _, b = fast.g("POST", "/subscriptions", sub_body(receiver, lifecycle=False))
    assert st == 400 and b["error"]["code"] == "InvalidRequest" and "timed out" in b["error"]["message"]
    assert fast.sim.subscriptions() == []
