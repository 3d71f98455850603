"""All-day events, mailboxSettings time zone, secondary calendars, sensitivity (issue 14)."""
import datetime as dt
import json
import os
import time
import urllib.parse

from simtestlib import ALICE, BOB, SECRET, TENANT, ev_body, window

from test_sim_delta import run_round
from test_sim_subscriptions import sub_body

IMM = 'IdType="ImmutableId"'
HERE = os.path.dirname(os.path.abspath(__file__))


def q(s):
    return urllib.parse.quote(s, safe="")


def allday_body(subject, date, days=1, tz="W. Europe Standard Time", **extra):
    d0 = dt.date.fromisoformat(date)
    d1 = d0 + dt.timedelta(days=days)
    b = {"subject": subject, "isAllDay": True,
         "start": {"dateTime": d0.isoformat() + "T00:00:00", "timeZone": tz},
         "end": {"dateTime": d1.isoformat() + "T00:00:00", "timeZone": tz}}
    b.update(extra)
    return b


# ---------------------------------------------------------------- all-day events


def test_all_day_event_is_floating(env):
    day = (dt.date.today() + dt.timedelta(days=3)).isoformat()
    st, _, ev = env.g("POST", "/users/%s/events" % ALICE, allday_body("holiday", day))
    assert st == 201 and ev["isAllDay"] is True
    # no conversion: midnight of the date, labelled UTC (Q&A 2022-08, msgraph-sdk-javascript#1158)
    assert ev["start"] == {"dateTime": day + "T00:00:00.0000000", "timeZone": "UTC"}
    nxt = (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()
    assert ev["end"] == {"dateTime": nxt + "T00:00:00.0000000", "timeZone": "UTC"}
    assert ev["originalStartTimeZone"] == "W. Europe Standard Time"
    # the zone the request prefers labels it, still midnight
    st, h, g = env.g("GET", "/users/%s/events/%s" % (ALICE, q(ev["id"])),
                     headers={"Prefer": 'outlook.timezone="Pacific Standard Time"'})
    assert g["start"] == {"dateTime": day + "T00:00:00.0000000", "timeZone": "Pacific Standard Time"}
    assert 'outlook.timezone="Pacific Standard Time"' in h["preference-applied"]
    # a timed event is converted as before
    st, _, t = env.g("POST", "/users/%s/events" % ALICE, ev_body("timed", day=3, hour=9, tz="W. Europe Standard Time"))
    assert t["start"]["dateTime"][11:13] in ("07", "08") and t["start"]["timeZone"] == "UTC"
    # the same in calendarView and delta rows
    _, _, cv = env.g("GET", "/users/%s/calendarView?%s" % (ALICE, window()))
    row = [e for e in cv["value"] if e["subject"] == "holiday"][0]
    assert row["start"]["dateTime"] == day + "T00:00:00.0000000"
    items, _, _ = run_round(env, window())
    row = [e for e in items if e.get("subject") == "holiday"][0]
    assert row["start"]["dateTime"] == day + "T00:00:00.0000000" and row["end"]["dateTime"].startswith(nxt)


def test_all_day_must_be_midnight_and_control_api_and_multi_day(env):
    day = (dt.date.today() + dt.timedelta(days=2)).isoformat()
    b = allday_body("bad", day)
    b["start"]["dateTime"] = day + "T09:00:00"
    st, _, err = env.g("POST", "/users/%s/events" % ALICE, b)
    assert st == 400 and err["error"]["code"] == "ErrorPropertyValidationFailure"
    ev = env.sim.user_create(BOB, allday_body("trip", day, days=3, tz="Pacific Standard Time"))
    st, _, g = env.g("GET", "/users/%s/events/%s" % (BOB, q(ev["immutableId"])), headers={"Prefer": IMM})
    assert g["isAllDay"] and g["start"]["dateTime"].startswith(day + "T00:00:00")
    assert g["end"]["dateTime"].startswith((dt.date.fromisoformat(day) + dt.timedelta(days=3)).isoformat())
    # all-day series: occurrences are floating too
    s = env.sim.user_series(ALICE, "gym", day + "T00:00:00", (dt.date.fromisoformat(day) + dt.timedelta(days=1))
                            .isoformat() + "T00:00:00", time_zone="Tokyo Standard Time", pattern="daily", count=3,
                            isAllDay=True)
    assert s["type"] == "seriesMaster"
    _, _, cv = env.g("GET", "/users/%s/calendarView?%s" % (ALICE, window()))
    occ = sorted(e["start"]["dateTime"] for e in cv["value"] if e["subject"] == "gym")
    d0 = dt.date.fromisoformat(day)
    assert occ == [(d0 + dt.timedelta(days=i)).isoformat() + "T00:00:00.0000000" for i in range(3)]


# ---------------------------------------------------------------- mailboxSettings


def test_mailbox_settings_time_zone(env):
    env.sim.user_set(ALICE, timeZone="W. Europe Standard Time")
    st, _, ms = env.g("GET", "/users/%s/mailboxSettings" % ALICE)
    assert st == 200 and ms["timeZone"] == "W. Europe Standard Time"
    assert ms["workingHours"]["timeZone"]["name"] == "W. Europe Standard Time"
    st, _, tz = env.g("GET", "/users/%s/mailboxSettings/timeZone" % ALICE)
    assert st == 200 and tz["value"] == "W. Europe Standard Time"
    assert tz["@odata.context"].endswith("/mailboxSettings/timeZone")
    # other mailboxes keep their own zone (default UTC)
    assert env.g("GET", "/users/%s/mailboxSettings/timeZone" % BOB)[2]["value"] == "UTC"
    # PATCH needs ReadWrite and changes it
    st, _, p = env.g("PATCH", "/users/%s/mailboxSettings" % BOB, {"timeZone": "Pacific Standard Time"})
    assert st == 200 and p["timeZone"] == "Pacific Standard Time"
    assert env.sim.user_mailbox_settings(BOB)["timeZone"] == "Pacific Standard Time"
    assert env.g("GET", "/users/%s/mailboxSettings/nonsense" % BOB)[0] == 400
    # a mailbox whose zone was never set
    env.sim.user_set(BOB, timeZone=None)
    assert env.g("GET", "/users/%s/mailboxSettings/timeZone" % BOB)[2]["value"] is None


def test_mailbox_settings_needs_permission(env):
    env.sim.seed({"apps": [{"tenant": TENANT, "client_id": "cal-only", "client_secret": SECRET,
                            "permissions": ["Calendars.ReadWrite"]},
                           {"tenant": TENANT, "client_id": "ms-read", "client_secret": SECRET,
                            "permissions": ["Calendars.Read", "MailboxSettings.Read"]}]})
    tok = env.sim.token(TENANT, "cal-only", SECRET)
    st, _, b = env.g("GET", "/users/%s/mailboxSettings/timeZone" % ALICE, token=tok)
    assert st == 403 and b["error"]["code"] == "ErrorAccessDenied"
    assert env.g("GET", "/users/%s/mailboxSettings" % ALICE, token=tok)[0] == 403
    tok2 = env.sim.token(TENANT, "ms-read", SECRET)
    assert env.g("GET", "/users/%s/mailboxSettings/timeZone" % ALICE, token=tok2)[0] == 200
    assert env.g("PATCH", "/users/%s/mailboxSettings" % ALICE, {"timeZone": "UTC"}, token=tok2)[0] == 403


def test_demo_seed_zones(env):
    with open(os.path.join(HERE, "demo-seed.json")) as f:
        seed = json.load(f)
    zones = [u.get("timeZone") for u in seed["users"]]
    assert len(set(zones)) == 3 and "W. Europe Standard Time" in zones
    env.sim.reset()
    env.sim.seed(seed)
    tok = env.sim.token("rmsync-demo-tenant", "rmsync-demo-client", "demo-secret-change-me")
    got = [env.g("GET", "/users/%s/mailboxSettings/timeZone" % u["mail"], token=tok)[2]["value"]
           for u in seed["users"]]
    assert got == zones


# ---------------------------------------------------------------- secondary calendars


def test_calendars_create_list_get_and_duplicate(env):
    st, _, cals = env.g("GET", "/users/%s/calendars" % ALICE)
    assert st == 200 and len(cals["value"]) == 1 and cals["value"][0]["isDefaultCalendar"]
    st, h, crm = env.g("POST", "/users/%s/calendars" % ALICE, {"name": "CRM"})
    assert st == 201 and crm["name"] == "CRM" and not crm["isDefaultCalendar"] and h["location"]
    st, _, b = env.g("POST", "/users/%s/calendars" % ALICE, {"name": "crm"})
    assert st == 409 and b["error"]["code"] == "ErrorFolderExists"
    st, _, one = env.g("GET", "/users/%s/calendars/%s" % (ALICE, q(crm["id"])))
    assert st == 200 and one["id"] == crm["id"]
    st, _, f = env.g("GET", "/users/%s/calendars?$filter=%s" % (ALICE, q("name eq 'CRM'")))
    assert [c["id"] for c in f["value"]] == [crm["id"]]
    assert env.g("GET", "/users/%s/calendars/AAMkAGNvbnRyb2wtdGVzdA%%3D%%3D" % ALICE)[0] == 404
    # control API
    c2 = env.sim.user_calendar_add(BOB, "Private stuff")
    assert [c["name"] for c in env.sim.user_calendars(BOB)] == ["Calendar", "Private stuff"]
    assert c2["id"] in [c["id"] for c in env.g("GET", "/users/%s/calendars" % BOB)[2]["value"]]
    # permissions: creating needs ReadWrite
    env.sim.seed({"apps": [{"tenant": TENANT, "client_id": "ro", "client_secret": SECRET,
                            "permissions": ["Calendars.Read"]}]})
    tok = env.sim.token(TENANT, "ro", SECRET)
    assert env.g("GET", "/users/%s/calendars" % ALICE, token=tok)[0] == 200
    assert env.g("POST", "/users/%s/calendars" % ALICE, {"name": "X"}, token=tok)[0] == 403


def test_events_views_and_delta_per_calendar(env):
    _, _, crm = env.g("POST", "/users/%s/calendars" % ALICE, {"name": "CRM"})
    cid = q(crm["id"])
    st, _, a = env.g("POST", "/users/%s/calendars/%s/events" % (ALICE, cid), ev_body("in crm", day=2),
                     headers={"Prefer": IMM})
    assert st == 201
    main = env.sim.user_create(ALICE, ev_body("in main", day=2))
    ctl = env.sim.user_create(ALICE, ev_body("crm by user", day=3), calendar="CRM")
    assert ctl["calendarId"] == crm["id"] and main["calendarId"] != crm["id"]
    # lists and views are per calendar; the default calendar stays at the old paths
    subj = lambda b: sorted(e["subject"] for e in b["value"])  # noqa: E731
    assert subj(env.g("GET", "/users/%s/events" % ALICE)[2]) == ["in main"]
    assert subj(env.g("GET", "/users/%s/calendar/events" % ALICE)[2]) == ["in main"]
    assert subj(env.g("GET", "/users/%s/calendars/%s/events" % (ALICE, cid))[2]) == ["crm by user", "in crm"]
    assert subj(env.g("GET", "/users/%s/calendarView?%s" % (ALICE, window()))[2]) == ["in main"]
    assert subj(env.g("GET", "/users/%s/calendars/%s/calendarView?%s" % (ALICE, cid, window()))[2]) == \
        ["crm by user", "in crm"]
    # an event id works mailbox-wide, but not under another calendar
    assert env.g("GET", "/users/%s/events/%s" % (ALICE, q(a["id"])))[0] == 200
    assert env.g("GET", "/users/%s/calendars/%s/events/%s" % (ALICE, cid, q(a["id"])))[0] == 200
    assert env.g("GET", "/users/%s/calendar/events/%s" % (ALICE, q(a["id"])))[0] == 404
    # delta per calendar
    url = "/users/%s/calendars/%s/calendarView/delta?%s" % (ALICE, cid, window())
    items, dl, _ = run_round(env, env.sim.graph_url + url)
    assert sorted(i["subject"] for i in items) == ["crm by user", "in crm"]
    main_items, main_dl, _ = run_round(env, window())
    assert [i["subject"] for i in main_items] == ["in main"]
    assert "/calendars/" in dl
    # edits: only the calendar's own delta sees them
    env.sim.user_patch(ALICE, ctl["immutableId"], {"subject": "crm edited"})
    env.sim.user_patch(ALICE, main["immutableId"], {"subject": "main edited"})
    env.sim.user_delete(ALICE, a["id"])
    items, dl, _ = run_round(env, dl)
    assert [i.get("subject") for i in items if "@removed" not in i] == ["crm edited"]
    assert [i["id"] for i in items if "@removed" in i] == [a["id"]]
    items, _, _ = run_round(env, main_dl)
    assert [i.get("subject") for i in items] == ["main edited"]
    # control API: inspection view of one calendar
    view = env.sim.user_calendar_view(ALICE, "2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z", calendar="CRM")
    assert [v["subject"] for v in view] == ["crm edited"] and view[0]["calendarId"] == crm["id"]


def test_subscription_on_one_calendar(env, receiver):
    env.sim.config(allow_http_notification_urls=True, notification_debounce_ms=20)
    crm = env.sim.user_calendar_add(ALICE, "CRM")
    st, _, s = env.g("POST", "/subscriptions", sub_body(receiver, resource="users/%s/calendars/%s/events"
                                                        % (ALICE, q(crm["id"]))))
    assert st == 201 and s["resource"].endswith("/events")
    st, _, s2 = env.g("POST", "/subscriptions", sub_body(receiver, resource="users/%s/calendars/nope/events"
                                                         % ALICE))
    assert st == 404
    env.sim.user_create(ALICE, ev_body("main"))
    ev = env.sim.user_create(ALICE, ev_body("crm"), calendar=crm["id"])
    receiver.wait_posts(1)
    time.sleep(0.3)
    items = [i for _, p, _ in receiver.posts for i in p["value"]]
    assert len(items) == 1 and items[0]["resourceData"]["id"] in (ev["immutableId"], ev["restId"])
    assert env.sim.subscriptions()[0]["calendarId"] == crm["id"]


# ---------------------------------------------------------------- sensitivity


def test_sensitivity_stored_returned_and_settable(env):
    st, _, ev = env.g("POST", "/users/%s/events" % ALICE, ev_body("doctor", sensitivity="private"))
    assert st == 201 and ev["sensitivity"] == "private"
    st, _, p = env.g("PATCH", "/users/%s/events/%s" % (ALICE, q(ev["id"])), {"sensitivity": "confidential"})
    assert st == 200 and p["sensitivity"] == "confidential"
    assert env.g("GET", "/users/%s/events/%s" % (ALICE, q(ev["id"])))[2]["sensitivity"] == "confidential"
    st, _, b = env.g("PATCH", "/users/%s/events/%s" % (ALICE, q(ev["id"])), {"sensitivity": "secret"})
    assert st == 400
    c = env.sim.user_create(BOB, ev_body("lunch", sensitivity="personal"))
    assert c["sensitivity"] == "personal"
    assert env.sim.user_patch(BOB, c["immutableId"], {"sensitivity": "normal"})["sensitivity"] == "normal"
    assert env.g("GET", "/users/%s/events" % ALICE)[2]["value"][0]["sensitivity"] == "confidential"
    items, _, _ = run_round(env, window())
    assert items[0]["sensitivity"] == "confidential"
