import http.client
import ssl
import threading
import urllib.parse

from simtestlib import ALICE, BOB, CAROL, ev_body, window


def q(s):
    return urllib.parse.quote(s, safe="")


def test_fifth_concurrent_request_gets_429(env):
    tok = env.token
    env.sim.fault("latency", ms=2500, count=4, match={"user": ALICE, "method": "GET"})
    results = []

    def call():
        results.append(env.g("GET", "/users/%s/events" % ALICE, token=tok)[0])
    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    env.sim.wait_for(lambda: env.sim.counters()["inflight_by_mailbox"].get(ALICE) == 4, timeout=5)
    st, h, b = env.g("GET", "/users/%s/events" % ALICE)
    assert st == 429
    assert float(h["retry-after"]) > 0
    assert b["error"]["code"] == "ApplicationThrottled"
    assert "MailboxConcurrency" in b["error"]["message"]
    # another mailbox is not affected
    assert env.g("GET", "/users/%s/events" % BOB)[0] == 200
    for t in threads:
        t.join()
    assert results == [200] * 4
    c = env.sim.counters()
    assert c["peak_concurrency_by_mailbox"][ALICE] == 4 and c["throttled_429"] == 1
    # the fifth was asked for (peak requested 5) and refused for concurrency
    assert c["peak_requested_by_mailbox"] == {ALICE: 5, BOB: 1}
    assert c["over_concurrency_by_mailbox"] == {ALICE: 1}


def test_request_budget_per_window(env):
    env.sim.config(throttle_budget=3, throttle_window_s=60)
    sts = [env.g("GET", "/users/%s/events" % ALICE)[0] for _ in range(4)]
    assert sts == [200, 200, 200, 429]
    st, h, _ = env.g("GET", "/users/%s/events" % ALICE)
    assert st == 429 and 1 <= int(h["retry-after"]) <= 60
    assert env.g("GET", "/users/%s/events" % BOB)[0] == 200
    # budget refusals are not concurrency refusals
    assert env.sim.counters()["over_concurrency_by_mailbox"] == {}


def test_status_fault_with_retry_after_and_count(env):
    env.sim.fault("status", status=503, retry_after=2, count=2, match={"path_regex": "/calendarView/delta"})
    url = "/users/%s/calendarView/delta?%s" % (ALICE, window())
    st1, h1, b1 = env.g("GET", url)
    st2, _, _ = env.g("GET", url)
    st3, _, _ = env.g("GET", url)
    assert (st1, st2, st3) == (503, 503, 200)
    assert h1["retry-after"] == "2" and b1["error"]["code"] == "ServiceNotAvailable"
    assert "request-id" in b1["error"]["innerError"]
    assert env.g("GET", "/users/%s/events" % ALICE)[0] == 200


def test_fault_match_by_method_and_user(env):
    env.sim.fault("status", status=504, match={"method": "POST", "user": BOB})
    assert env.g("POST", "/users/%s/events" % ALICE, ev_body("a"))[0] == 201
    assert env.g("POST", "/users/%s/events" % BOB, ev_body("b"))[0] == 504
    assert env.g("GET", "/users/%s/events" % BOB)[0] == 200
    env.sim.clear_faults()
    assert env.g("POST", "/users/%s/events" % BOB, ev_body("b"))[0] == 201


def test_drop_response_applies_the_request(env):
    env.sim.fault("drop_response", count=1, match={"method": "POST", "path_regex": "/events$"})
    u = urllib.parse.urlsplit(env.sim.base_url)
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=ssl.create_default_context(cafile=env.sim.ca_file),
                                       timeout=10)
    body = '{"subject":"ghost","start":{"dateTime":"2030-01-01T10:00:00","timeZone":"UTC"},' \
           '"end":{"dateTime":"2030-01-01T11:00:00","timeZone":"UTC"},"transactionId":"tx-ghost"}'
    conn.request("POST", "/v1.0/users/%s/events" % ALICE, body=body,
                 headers={"Authorization": "Bearer " + env.token, "Content-Type": "application/json"})
    try:
        conn.getresponse()
        raise AssertionError("expected the connection to be closed without a response")
    except (http.client.RemoteDisconnected, ConnectionError, ssl.SSLError):
        pass
    conn.close()
    evs = env.sim.user_events(ALICE)
    assert [e["subject"] for e in evs] == ["ghost"]
    # the client retries with the same transactionId and gets the same event
    st, _, ev = env.g("POST", "/users/%s/events" % ALICE, body.encode(), headers={"Content-Type": "application/json"})
    assert st == 201 and ev["id"] == evs[0]["restId"]
    assert len(env.sim.user_events(ALICE)) == 1


def test_malformed_fault(env):
    ev = env.sim.user_create(ALICE, ev_body("m"))
    env.sim.fault("malformed", field="start", mode="number", count=1)
    st, _, b = env.g("GET", "/users/%s/events/%s" % (ALICE, q(ev["restId"])))
    assert st == 200 and isinstance(b["start"], int)
    env.sim.fault("malformed", field="subject", mode="missing", count=1)
    st, _, b = env.g("GET", "/users/%s/calendarView/delta?%s" % (ALICE, window()))
    assert st == 200 and "subject" not in b["value"][0]
    st, _, b = env.g("GET", "/users/%s/events/%s" % (ALICE, q(ev["restId"])))
    assert isinstance(b["start"], dict) and b["subject"] == "m"


def test_latency_fault(env):
    import time
    env.sim.fault("latency", ms=400, count=1)
    t0 = time.monotonic()
    assert env.g("GET", "/users/%s/events" % ALICE)[0] == 200
    assert time.monotonic() - t0 >= 0.4
    env.g("GET", "/users/%s/events" % ALICE)
    assert env.sim.counters()["faults_injected"] == {"latency": 1}, "count=1: only the first request waits"


def test_revoke_tokens_and_access_policy(env):
    assert env.g("GET", "/users/%s/events" % ALICE)[0] == 200
    env.sim.fault("revoke_tokens")
    assert env.g("GET", "/users/%s/events" % ALICE)[0] == 401
    env._token = None
    env.sim.user_set(BOB, accessDenied=True)
    st, _, b = env.g("GET", "/users/%s/events" % BOB)
    assert st == 403 and b["error"]["code"] == "ErrorAccessDenied"
    env.sim.user_set(BOB, accessDenied=False, mailboxEnabled=False)
    st, _, b = env.g("GET", "/users/%s/events" % BOB)
    assert st == 404 and b["error"]["code"] == "MailboxNotEnabledForRESTAPI"


def test_token_endpoint_fault_needs_path_regex(env):
    env.sim.fault("status", status=503, count=5)
    from simtestlib import CLIENT, SECRET, TENANT
    assert env.sim.token_response(TENANT, CLIENT, SECRET)[0] == 200, "plain faults hit Graph paths only"
    env.sim.clear_faults()
    env.sim.fault("status", status=503, retry_after=3, count=1, match={"path_regex": "oauth2"})
    st, h, b = env.sim.token_response(TENANT, CLIENT, SECRET)
    assert st == 503 and b["error"] == "temporarily_unavailable" and h["retry-after"] == "3"
    assert env.sim.token_response(TENANT, CLIENT, SECRET)[0] == 200


def test_status_fault_401_looks_like_graph(env):
    env.sim.fault("status", status=401, count=1, match={"user": ALICE})
    st, h, b = env.g("GET", "/users/%s/events" % ALICE)
    assert st == 401 and b["error"]["code"] == "InvalidAuthenticationToken" and "www-authenticate" in h


def test_fault_probability(env):
    env.sim.fault("status", status=503, probability=0.5, match={"user": ALICE})
    sts = [env.g("GET", "/users/%s/events" % ALICE)[0] for _ in range(60)]
    assert 5 < sts.count(503) < 55 and sts.count(200) == 60 - sts.count(503)


def test_app_wide_concurrency_cap(env):
    env.sim.config(throttle_app_max_concurrent=2)
    env.sim.fault("latency", ms=2000, count=2, match={"method": "GET"})
    tok = env.token
    ts = [threading.Thread(target=lambda u=u: env.g("GET", "/users/%s/events" % u, token=tok)) for u in (ALICE, BOB)]
    for t in ts:
        t.start()
    env.sim.wait_for(lambda: sum(env.sim.counters()["inflight_by_mailbox"].values()) == 2, timeout=5)
    st, h, b = env.g("GET", "/users/%s/events" % CAROL)
    for t in ts:
        t.join()
    assert st == 429 and b["error"]["innerError"]["code"] == "ApplicationConcurrency"
