import urllib.parse

from simtestlib import ALICE, BOB, EXT_ID, ev_body, window

IMM = {"Prefer": 'IdType="ImmutableId"'}


def q(s):
    return urllib.parse.quote(s, safe="")


def test_create_get_ids_and_etag(env):
    st, h, ev = env.g("POST", "/users/%s/events" % ALICE, ev_body("Lunch", attendees=[
        {"type": "required", "emailAddress": {"address": "x@example.com", "name": "X"}}]), headers=IMM)
    assert st == 201
    assert ev["@odata.etag"] == 'W/"%s"' % ev["changeKey"]
    assert ev["type"] == "singleInstance" and ev["isOrganizer"] is True and ev["isCancelled"] is False
    assert ev["organizer"]["emailAddress"]["address"] == ALICE
    assert ev["attendees"][0]["status"]["response"] == "none"
    assert ev["iCalUId"] and ev["lastModifiedDateTime"].endswith("Z")
    assert ev["start"]["timeZone"] == "UTC" and len(ev["start"]["dateTime"].split(".")[1]) == 7
    imm = ev["id"]
    st, _, ev2 = env.g("GET", "/users/%s/events/%s" % (ALICE, q(imm)))
    assert st == 200
    rest = ev2["id"]
    assert rest != imm, "rest id and immutable id must differ"
    st, _, ev3 = env.g("GET", "/users/%s/events/%s" % (ALICE, q(rest)), headers=IMM)
    assert st == 200 and ev3["id"] == imm


def test_patch_rotates_changekey_and_if_match_412(env):
    _, _, ev = env.g("POST", "/users/%s/events" % ALICE, ev_body("A"))
    eid, etag = ev["id"], ev["@odata.etag"]
    st, _, ev2 = env.g("PATCH", "/users/%s/events/%s" % (ALICE, q(eid)), {"subject": "B"},
                       headers={"If-Match": etag})
    assert st == 200 and ev2["subject"] == "B"
    assert ev2["changeKey"] != ev["changeKey"] and ev2["@odata.etag"] != etag
    assert ev2["start"] == ev["start"], "PATCH is partial"
    st, _, b = env.g("PATCH", "/users/%s/events/%s" % (ALICE, q(eid)), {"subject": "C"},
                     headers={"If-Match": etag})
    assert st == 412 and b["error"]["code"] == "ErrorIrresolvableConflict"
    st, _, b = env.g("DELETE", "/users/%s/events/%s" % (ALICE, q(eid)), headers={"If-Match": etag})
    assert st == 412
    # a Graph-side bump (Exchange assistant) also invalidates the etag
    env.sim.fault("bump_changekey", user=ALICE, event=eid)
    st, _, _ = env.g("PATCH", "/users/%s/events/%s" % (ALICE, q(eid)), {"subject": "D"},
                     headers={"If-Match": ev2["@odata.etag"]})
    assert st == 412


def test_delete_then_404_and_malformed_id(env):
    _, _, ev = env.g("POST", "/users/%s/events" % ALICE, ev_body("gone"))
    st, _, body = env.g("DELETE", "/users/%s/events/%s" % (ALICE, q(ev["id"])))
    assert st == 204 and body is None
    st, _, b = env.g("GET", "/users/%s/events/%s" % (ALICE, q(ev["id"])))
    assert st == 404 and b["error"]["code"] == "ErrorItemNotFound"
    st, _, b = env.g("GET", "/users/%s/events/not-an-id" % ALICE)
    assert st == 400 and b["error"]["code"] == "ErrorInvalidIdMalformed"
    # the deleted item got a new rest id (moved to Deleted Items)
    inspected = [e for e in env.sim.user_events(ALICE) if e["restId"] == ev["id"]][0]
    assert inspected["deleted"] and inspected["movedRestId"] not in (None, ev["id"])


def test_transaction_id_replay_returns_same_event(env):
    body = ev_body("idem", transactionId="crm:t:42:1")
    st1, _, a = env.g("POST", "/users/%s/events" % ALICE, body)
    st2, _, b = env.g("POST", "/users/%s/events" % ALICE, body)
    assert st1 == st2 == 201
    assert a["id"] == b["id"] and b["transactionId"] == "crm:t:42:1"
    assert len(env.sim.user_events(ALICE)) == 1


def test_extended_property_expand_and_filter(env):
    body = ev_body("ext", singleValueExtendedProperties=[{"id": EXT_ID, "value": "BA-1001"}])
    _, _, ev = env.g("POST", "/users/%s/events" % ALICE, body)
    env.g("POST", "/users/%s/events" % ALICE, ev_body("other", singleValueExtendedProperties=[
        {"id": EXT_ID, "value": "BA-2002"}]))
    assert "singleValueExtendedProperties" not in ev
    exp = "singleValueExtendedProperties($filter=id eq '%s')" % EXT_ID
    st, _, got = env.g("GET", "/users/%s/events/%s?$expand=%s" % (ALICE, q(ev["id"]), q(exp)))
    assert st == 200 and got["singleValueExtendedProperties"] == [{"id": EXT_ID, "value": "BA-1001"}]
    flt = "singleValueExtendedProperties/Any(ep: ep/id eq '%s' and ep/value eq 'BA-1001')" % EXT_ID
    st, _, lst = env.g("GET", "/users/%s/events?$filter=%s" % (ALICE, q(flt)))
    assert st == 200 and [e["id"] for e in lst["value"]] == [ev["id"]]
    flt = "singleValueExtendedProperties/Any(ep: ep/id eq '%s' and ep/value eq 'nope')" % EXT_ID
    assert env.g("GET", "/users/%s/events?$filter=%s" % (ALICE, q(flt)))[2]["value"] == []


def test_timezone_preference(env):
    _, _, ev = env.g("POST", "/users/%s/events" % ALICE, ev_body("tz", hour=12, tz="UTC"))
    st, h, got = env.g("GET", "/users/%s/events/%s" % (ALICE, q(ev["id"])),
                       headers={"Prefer": 'outlook.timezone="Pacific Standard Time"'})
    assert st == 200 and got["start"]["timeZone"] == "Pacific Standard Time"
    assert 'outlook.timezone="Pacific Standard Time"' in h["preference-applied"]
    assert got["start"]["dateTime"][11:13] in ("04", "05")
    _, _, ev = env.g("POST", "/users/%s/events" % ALICE, ev_body("berlin", hour=9, tz="W. Europe Standard Time"))
    assert ev["originalStartTimeZone"] == "W. Europe Standard Time"
    assert ev["start"]["timeZone"] == "UTC" and ev["start"]["dateTime"][11:13] in ("07", "08")


def test_bad_bodies_rejected(env):
    st, _, b = env.g("POST", "/users/%s/events" % ALICE, ev_body("x", nosuchprop=1))
    assert st == 400 and b["error"]["code"] == "RequestBodyRead"
    bad = ev_body("x")
    bad["subject"] = 5
    st, _, b = env.g("POST", "/users/%s/events" % ALICE, bad)
    assert st == 400 and b["error"]["code"] == "RequestBodyRead"
    st, _, b = env.g("POST", "/users/%s/events" % ALICE, ev_body("x", tz="Mars/Olympus"))
    assert st == 400


def test_cancel_by_organizer_and_attendee_copy(env):
    _, _, ev = env.g("POST", "/users/%s/events" % ALICE, ev_body("meet", attendees=[
        {"type": "required", "emailAddress": {"address": BOB, "name": "Bob"}}]), headers=IMM)
    # Bob's mailbox got a copy with the same iCalUId
    _, _, bl = env.g("GET", "/users/%s/events" % BOB, headers=IMM)
    assert len(bl["value"]) == 1
    copy = bl["value"][0]
    assert copy["iCalUId"] == ev["iCalUId"] and copy["isOrganizer"] is False and copy["id"] != ev["id"]
    st, _, b = env.g("POST", "/users/%s/events/%s/cancel" % (BOB, q(copy["id"])), {"comment": "no"})
    assert st == 400, "only the organizer may cancel"
    st, _, _ = env.g("POST", "/users/%s/events/%s/cancel" % (ALICE, q(ev["id"])), {"comment": "sorry"})
    assert st == 202
    assert env.g("GET", "/users/%s/events/%s" % (ALICE, q(ev["id"])))[0] == 404
    _, _, c2 = env.g("GET", "/users/%s/events/%s" % (BOB, q(copy["id"])))
    assert c2["isCancelled"] is True


def test_recurring_occurrences_in_calendar_view(env):
    body = ev_body("standup", day=0, hour=9, minutes=15)
    d = body["start"]["dateTime"][:10]
    body["recurrence"] = {"pattern": {"type": "daily", "interval": 1},
                          "range": {"type": "numbered", "startDate": d, "numberOfOccurrences": 5}}
    st, _, master = env.g("POST", "/users/%s/events" % ALICE, body)
    assert st == 201 and master["type"] == "seriesMaster"
    st, _, cv = env.g("GET", "/users/%s/calendarView?%s&$top=50" % (ALICE, window()))
    occ = [e for e in cv["value"] if e["seriesMasterId"] == master["id"]]
    assert len(occ) == 5 and {e["type"] for e in occ} == {"occurrence"}
    assert len({e["id"] for e in occ}) == 5 and len({e["iCalUId"] for e in occ}) == 5
    # editing one occurrence makes it an exception
    st, _, x = env.g("PATCH", "/users/%s/events/%s" % (ALICE, q(occ[2]["id"])), {"subject": "moved"})
    assert st == 200 and x["type"] == "exception" and x["subject"] == "moved"
    # deleting one removes it from the view
    assert env.g("DELETE", "/users/%s/events/%s" % (ALICE, q(occ[3]["id"])))[0] == 204
    _, _, cv = env.g("GET", "/users/%s/calendarView?%s&$top=50" % (ALICE, window()))
    occ2 = [e for e in cv["value"] if e["seriesMasterId"] == master["id"]]
    assert len(occ2) == 4 and "moved" in [e["subject"] for e in occ2]


def test_calendar_view_requires_window_and_pages(env):
    st, _, b = env.g("GET", "/users/%s/calendarView" % ALICE)
    assert st == 400
    for i in range(5):
        env.sim.user_create(ALICE, ev_body("e%d" % i, day=i + 1))
    st, _, b = env.g("GET", "/users/%s/calendarView?%s" % (ALICE, window()), headers={"Prefer": "odata.maxpagesize=2"})
    seen = [e["subject"] for e in b["value"]]
    while "@odata.nextLink" in b:
        b = env.g("GET", b["@odata.nextLink"], headers={"Prefer": "odata.maxpagesize=2"})[2]
        seen += [e["subject"] for e in b["value"]]
    assert seen == ["e0", "e1", "e2", "e3", "e4"]


def test_restore_from_deleted_items_and_control_calendar_view(env):
    import datetime as dt
    ev = env.sim.user_create(ALICE, ev_body("back again", day=2))
    env.sim.user_delete(ALICE, ev["immutableId"])
    r = env.sim.user_restore(ALICE, ev["immutableId"])
    assert r["immutableId"] == ev["immutableId"] and r["restId"] != ev["restId"] and not r["deleted"]
    st, _, got = env.g("GET", "/users/%s/events/%s" % (ALICE, q(r["restId"])))
    assert st == 200 and got["subject"] == "back again"
    assert env.g("GET", "/users/%s/events/%s" % (ALICE, q(ev["restId"])))[0] == 404, "old rest id is gone"
    body = ev_body("series", day=1)
    body["recurrence"] = {"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [
        dt.date.fromisoformat(body["start"]["dateTime"][:10]).strftime("%A").lower()]},
        "range": {"type": "numbered", "startDate": body["start"]["dateTime"][:10], "numberOfOccurrences": 3}}
    env.sim.user_create(ALICE, body)
    s, e = window(1, 30).replace("startDateTime=", "").split("&endDateTime=")
    view = env.sim.user_calendar_view(ALICE, s, e)
    occ = [v for v in view if v["type"] == "occurrence"]
    assert len(occ) == 3
    env.sim.user_patch(ALICE, occ[1]["immutableId"], {"subject": "one-off"})
    st, h, got = env.g("GET", "/users/%s/events/%s" % (ALICE, q(occ[1]["restId"])))
    assert st == 200 and got["type"] == "exception" and got["subject"] == "one-off"
    st, h, created = env.g("POST", "/users/%s/events" % ALICE, ev_body("loc"))
    assert h["location"].startswith(env.sim.graph_url + "/Users(") and h["odata-version"] == "4.0"


def test_rejected_patch_changes_nothing(env):
    _, _, ev = env.g("POST", "/users/%s/events" % ALICE, ev_body("atomic", hour=10))
    bad = {"subject": "half", "end": {"dateTime": "2000-01-01T00:00:00", "timeZone": "UTC"}}
    st, _, b = env.g("PATCH", "/users/%s/events/%s" % (ALICE, q(ev["id"])), bad)
    assert st == 400
    _, _, got = env.g("GET", "/users/%s/events/%s" % (ALICE, q(ev["id"])))
    assert got["subject"] == "atomic" and got["end"] == ev["end"] and got["changeKey"] == ev["changeKey"]


def test_relative_monthly_recurrence(env):
    import datetime as dt
    body = ev_body("first monday", day=0, hour=9)
    d = body["start"]["dateTime"][:10]
    body["recurrence"] = {"pattern": {"type": "relativeMonthly", "interval": 1, "daysOfWeek": ["monday"],
                                      "index": "first"},
                          "range": {"type": "numbered", "startDate": d, "numberOfOccurrences": 3}}
    assert env.g("POST", "/users/%s/events" % ALICE, body)[0] == 201
    _, _, cv = env.g("GET", "/users/%s/calendarView?%s&$top=50" % (ALICE, window(1, 130)))
    days = [dt.date.fromisoformat(e["start"]["dateTime"][:10]) for e in cv["value"] if e["type"] == "occurrence"]
    assert len(days) == 3
    assert all(x.weekday() == 0 and x.day <= 7 for x in days)
    assert len({(x.year, x.month) for x in days}) == 3


def test_select(env):
    _, _, ev = env.g("POST", "/users/%s/events" % ALICE, ev_body("sel"))
    st, _, got = env.g("GET", "/users/%s/events/%s?$select=subject,Start" % (ALICE, q(ev["id"])))
    assert st == 200 and set(got) == {"@odata.etag", "id", "subject", "start"}
    st, _, b = env.g("GET", "/users/%s/events/%s?$select=subject,nosuch" % (ALICE, q(ev["id"])))
    assert st == 400 and b["error"]["code"] == "RequestBroker--ParseUri"


def test_occurrence_edit_changes_the_master(env):
    body = ev_body("series", day=1, hour=9)
    body["recurrence"] = {"pattern": {"type": "daily", "interval": 1},
                          "range": {"type": "numbered", "startDate": body["start"]["dateTime"][:10],
                                    "numberOfOccurrences": 3}}
    _, _, master = env.g("POST", "/users/%s/events" % ALICE, body)
    _, _, cv = env.g("GET", "/users/%s/calendarView?%s" % (ALICE, window()))
    occ = [e for e in cv["value"] if e["type"] == "occurrence"]
    st, _, x = env.g("PATCH", "/users/%s/events/%s" % (ALICE, q(occ[0]["id"])), {"subject": "special"},
                     headers={"If-Match": occ[0]["@odata.etag"]})
    assert st == 200 and x["type"] == "exception" and x["changeKey"] != occ[0]["changeKey"]
    _, _, m2 = env.g("GET", "/users/%s/events/%s" % (ALICE, q(master["id"])))
    assert m2["changeKey"] != master["changeKey"], "the master item changed as well"
    assert m2["subject"] == "series"


def test_body_html_by_default_text_on_request(env):
    _, _, ev = env.g("POST", "/users/%s/events" % ALICE, ev_body("b", body={"contentType": "text",
                                                                           "content": "Line 1\nA & B"}))
    assert ev["body"]["contentType"] == "html" and "<html>" in ev["body"]["content"]
    assert "A &amp; B" in ev["body"]["content"] and ev["bodyPreview"] == "Line 1\nA & B"
    st, h, got = env.g("GET", "/users/%s/events/%s" % (ALICE, q(ev["id"])),
                       headers={"Prefer": 'outlook.body-content-type="text"'})
    assert got["body"] == {"contentType": "text", "content": "Line 1\nA & B"}
    assert 'outlook.body-content-type="text"' in h["preference-applied"]
