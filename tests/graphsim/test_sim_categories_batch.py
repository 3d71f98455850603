import urllib.parse

from simtestlib import ALICE, BOB, CLIENT, SECRET, TENANT, ev_body


def test_master_categories_list_create_duplicate(env):
    st, _, b = env.g("GET", "/users/%s/outlook/masterCategories" % ALICE)
    assert st == 200 and "Red category" in [c["displayName"] for c in b["value"]]
    st, _, c = env.g("POST", "/users/%s/outlook/masterCategories" % ALICE,
                     {"displayName": "CRM: Customer meeting", "color": "preset9"})
    assert st == 201 and c["id"] and c["color"] == "preset9"
    st, _, b = env.g("POST", "/users/%s/outlook/masterCategories" % ALICE,
                     {"displayName": "crm: customer MEETING", "color": "preset1"})
    assert st == 409 and "error" in b and "innerError" in b["error"]
    st, _, b = env.g("POST", "/users/%s/outlook/masterCategories" % ALICE, {"displayName": "x", "color": "pink"})
    assert st == 400
    # PATCH may change only the color
    st, _, c2 = env.g("PATCH", "/users/%s/outlook/masterCategories/%s" % (ALICE, c["id"]), {"color": "preset2"})
    assert st == 200 and c2["color"] == "preset2"
    assert env.g("PATCH", "/users/%s/outlook/masterCategories/%s" % (ALICE, c["id"]), {"displayName": "y"})[0] == 400
    assert env.g("DELETE", "/users/%s/outlook/masterCategories/%s" % (ALICE, c["id"]))[0] == 204
    # per-mailbox lists
    names = [x["displayName"] for x in env.g("GET", "/users/%s/outlook/masterCategories" % BOB)[2]["value"]]
    assert "CRM: Customer meeting" not in names


def test_duplicate_status_configurable(env):
    env.sim.config(duplicate_category_status=400, duplicate_category_code="ErrorDuplicate")
    env.g("POST", "/users/%s/outlook/masterCategories" % ALICE, {"displayName": "Dup"})
    st, _, b = env.g("POST", "/users/%s/outlook/masterCategories" % ALICE, {"displayName": "Dup"})
    assert st == 400 and b["error"]["code"] == "ErrorDuplicate"


def test_master_categories_403_when_permission_withheld(env):
    env.sim.seed({"apps": [{"tenant": TENANT, "client_id": "cal-only", "client_secret": SECRET,
                            "permissions": ["Calendars.ReadWrite"]}]})
    tok = env.sim.token(TENANT, "cal-only", SECRET)
    st, _, b = env.g("GET", "/users/%s/outlook/masterCategories" % ALICE, token=tok)
    assert st == 403 and b["error"]["code"] == "ErrorAccessDenied"
    st, _, b = env.g("POST", "/users/%s/outlook/masterCategories" % ALICE, {"displayName": "x"}, token=tok)
    assert st == 403
    assert env.g("GET", "/users/%s/events" % ALICE, token=tok)[0] == 200
    # permissions are carried by the token: granting needs a new token
    env.sim.app_set("cal-only", permissions=["Calendars.ReadWrite", "MailboxSettings.ReadWrite"])
    assert env.g("GET", "/users/%s/outlook/masterCategories" % ALICE, token=tok)[0] == 403
    tok2 = env.sim.token(TENANT, "cal-only", SECRET)
    assert env.g("GET", "/users/%s/outlook/masterCategories" % ALICE, token=tok2)[0] == 200
    assert CLIENT != "cal-only"


def test_batch(env):
    ev = env.sim.user_create(ALICE, ev_body("in batch"))
    reqs = [
        {"id": "1", "method": "GET", "url": "/users/%s/events/%s" % (ALICE, urllib.parse.quote(ev["restId"], safe=""))},
        {"id": "2", "method": "POST", "url": "/users/%s/events" % BOB, "body": ev_body("created in batch"),
         "headers": {"Content-Type": "application/json", "Prefer": 'IdType="ImmutableId"'}},
        {"id": "3", "method": "GET", "url": "/users/%s/events/AAMkAGI1AAAt9AHjAAAnotthere=" % ALICE},
        {"id": "4", "method": "GET", "url": "/users/%s/events" % BOB, "dependsOn": ["3"]},
    ]
    st, _, b = env.g("POST", "/$batch", {"requests": reqs})
    assert st == 200
    r = {x["id"]: x for x in b["responses"]}
    assert r["1"]["status"] == 200 and r["1"]["body"]["subject"] == "in batch"
    assert r["2"]["status"] == 201 and r["2"]["body"]["id"] == env.sim.user_events(BOB)[0]["immutableId"]
    assert r["3"]["status"] == 404 and r["3"]["body"]["error"]["code"] == "ErrorItemNotFound"
    assert r["4"]["status"] == 424


def test_batch_limits(env):
    reqs = [{"id": str(i), "method": "GET", "url": "/users/%s/events" % ALICE} for i in range(21)]
    st, _, b = env.g("POST", "/$batch", {"requests": reqs})
    assert st == 400 and b["error"]["code"] == "BadRequest"
    st, _, b = env.g("POST", "/$batch", {"requests": [{"id": "a", "method": "GET", "url": "/users"},
                                                      {"id": "A", "method": "GET", "url": "/users"}]})
    assert st == 400
    st, _, b = env.g("POST", "/$batch", {"requests": reqs[:20]})
    assert st == 200 and len(b["responses"]) == 20


def test_batch_inner_throttling(env):
    env.sim.config(throttle_budget=2, throttle_window_s=60)
    reqs = [{"id": str(i), "method": "GET", "url": "/users/%s/events" % ALICE} for i in range(3)]
    st, _, b = env.g("POST", "/$batch", {"requests": reqs})
    assert st == 200
    # inner requests run in parallel: which one is over the budget is not fixed
    assert sorted(x["status"] for x in b["responses"]) == [200, 200, 429]
    r429 = [x for x in b["responses"] if x["status"] == 429][0]
    assert "Retry-After" in r429["headers"]


def test_batch_inner_requests_run_in_parallel_up_to_4(env):
    env.sim.fault("latency", ms=700, match={"user": ALICE, "method": "GET"})
    reqs = [{"id": str(i), "method": "GET", "url": "/users/%s/events" % ALICE} for i in range(5)]
    st, _, b = env.g("POST", "/$batch", {"requests": reqs})
    assert st == 200
    assert sorted(x["status"] for x in b["responses"]) == [200] * 5
    assert env.sim.counters()["peak_concurrency_by_mailbox"][ALICE] == 4
    # with a concurrent outside request holding a slot, one inner request is throttled
    env.sim.reset_counters()
    env.sim.clear_faults()
    env.sim.fault("latency", ms=2500, count=1, match={"user": ALICE, "path_regex": r"\$top=1$"})
    env.sim.fault("latency", ms=700, match={"user": ALICE, "method": "GET"})
    import threading
    t = threading.Thread(target=lambda: env.g("GET", "/users/%s/events?$top=1" % ALICE))
    t.start()
    env.sim.wait_for(lambda: env.sim.counters()["inflight_by_mailbox"].get(ALICE) == 1)
    st, _, b = env.g("POST", "/$batch", {"requests": reqs[:4]})
    t.join()
    statuses = sorted(x["status"] for x in b["responses"])
    assert statuses == [200, 200, 200, 429]
    r429 = [x for x in b["responses"] if x["status"] == 429][0]
    assert r429["headers"]["Retry-After"] and r429["body"]["error"]["code"] == "ApplicationThrottled"
