"""Recurring series and the dedicated sync calendar (issue 14), end to end: real Apache (webhook
+ runner), PostgreSQL with the demo CRM, the Graph simulator delivering notifications.

RMSyncSyncCycle is 3600 s, so only notifications explain what happens within seconds. Graph
notifies only the series master for an occurrence's change (GRAPH.md 9.3): the runner answers a
master notification with a delta pass, which brings the occurrences' rows."""
import datetime
import json
import time

import pytest
import requests

from engine_stack import EngineStack, ALICE, pg_time

CATEGORY = "CRM Business Activity"


def _ready(s):
    s.wait_for(lambda: s.pg.val("SELECT count(*) FROM rmsync.subscription"
                                " WHERE representative_id = 'ALICE'") == "1", timeout=30,
               what="subscription")
    s.wait_for(lambda: (s.rep_state("ALICE") or {}).get("last_success_at"), timeout=30,
               what="first pass")


def _close(s):
    bad = s.close()
    assert not bad, "unexpected error log lines:\n" + "\n".join(bad)


def _window():
    now = datetime.datetime.now(datetime.timezone.utc)
    return ((now - datetime.timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z"),
            (now + datetime.timedelta(days=50)).strftime("%Y-%m-%dT00:00:00Z"))


def _occurrences(st, subject, calendar=None):
    items = st.sim.user_calendar_view(ALICE, *_window(), calendar=calendar)
    return sorted((i for i in items if i.get("subject") == subject and i.get("seriesMasterId")),
                  key=lambda i: i["start"]["dateTime"])


def _links(st, ids):
    return st.pg.json("SELECT l.activity_no, l.event_id, l.linked_via FROM rmsync.event_link l"
                      " WHERE l.representative_id = 'ALICE' AND l.event_id = ANY($1)",
                      "{" + ",".join('"%s"' % i for i in ids) + "}")


# ---- recurring series (main calendar) ------------------------------------------------------

@pytest.fixture(scope="module")
def st():
    s = EngineStack(cycle=3600, active=("ALICE",), notify=True,
                    sim_config={"allow_http_notification_urls": True},
                    extra="RMSyncDeleteSettle 1 600")
    _ready(s)
    yield s
    _close(s)


def test_categorised_series_one_activity_per_occurrence(st):
    d0 = datetime.date.today() + datetime.timedelta(days=2)
    master = st.sim.user_series(ALICE, "Weekly CRM review", d0.isoformat() + "T10:00:00",
                                d0.isoformat() + "T10:30:00", time_zone="UTC",
                                pattern="weekly", count=4, categories=[CATEGORY])
    occ = _occurrences(st, "Weekly CRM review")
    assert len(occ) == 4
    ids = [o["immutableId"] for o in occ]
    links = st.wait_for(lambda: (lambda r: r if len(r) == 4 else None)(_links(st, ids)),
                        timeout=30, what="4 activities from the series")
    assert {l["linked_via"] for l in links} == {"category"}
    by_event = {l["event_id"]: l["activity_no"] for l in links}
    assert master["immutableId"] not in by_event            # the master is no activity
    for o in occ:
        a = st.activity(by_event[o["immutableId"]])
        assert a["description"] == "Weekly CRM review"
        assert a["start_time"] == pg_time(o["start"]) and a["end_time"] == pg_time(o["end"])

    # one occurrence moved: only its activity moves (Graph notifies the master only)
    moved = occ[1]
    new_start = (datetime.datetime.strptime(moved["start"]["dateTime"][:19], "%Y-%m-%dT%H:%M:%S")
                 + datetime.timedelta(hours=3))
    start = {"dateTime": new_start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}
    end = {"dateTime": (new_start + datetime.timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S"),
           "timeZone": "UTC"}
    st.sim.user_patch(ALICE, moved["immutableId"], {"start": start, "end": end})
    no_moved = by_event[moved["immutableId"]]
    st.wait_for(lambda: st.activity(no_moved)["start_time"] == pg_time(start), timeout=30,
                what="the moved occurrence's activity moves")
    assert st.activity(no_moved)["end_time"] == pg_time(end)
    assert st.activity(by_event[occ[0]["immutableId"]])["start_time"] == pg_time(occ[0]["start"])

    # one occurrence deleted: its activity goes (through the breaker, after the settle delay)
    st.sim.user_delete(ALICE, occ[2]["immutableId"])
    no_deleted = by_event[occ[2]["immutableId"]]
    st.wait_for(lambda: st.activity(no_deleted) is None, timeout=30,
                what="the deleted occurrence's activity is deleted")
    assert st.log_count("activity_no = $1 AND action = 'delete'", no_deleted) == 1
    for o in (occ[0], occ[1], occ[3]):
        assert st.activity(by_event[o["immutableId"]]) is not None

    # the series cut to 2 occurrences: the 4th's activity goes, the first two stay
    rec = st.sim.user_event(ALICE, master["immutableId"])["recurrence"]
    rec["range"]["numberOfOccurrences"] = 2
    st.sim.user_patch(ALICE, master["immutableId"], {"recurrence": rec})
    no_last = by_event[occ[3]["immutableId"]]
    st.wait_for(lambda: st.activity(no_last) is None, timeout=30,
                what="the activity of the occurrence cut off is deleted")
    assert st.activity(by_event[occ[0]["immutableId"]]) is not None
    assert st.activity(no_moved) is not None
    # a pattern change drops the exceptions (Outlook): the moved one is back at its slot
    st.wait_for(lambda: st.activity(no_moved)["start_time"] == pg_time(moved["start"]),
                timeout=30, what="the exception reset by the pattern change")
    assert not (st.rep_state() or {}).get("held_by_breaker")


def test_series_growing_creates_new_occurrences(st):
    d0 = datetime.date.today() + datetime.timedelta(days=3)
    master = st.sim.user_series(ALICE, "Daily standup", d0.isoformat() + "T08:00:00",
                                d0.isoformat() + "T08:15:00", time_zone="UTC",
                                pattern="daily", count=2, categories=[CATEGORY])
    st.wait_for(lambda: len(_links(st, [o["immutableId"] for o in
                                        _occurrences(st, "Daily standup")])) == 2,
                timeout=30, what="2 activities")
    rec = st.sim.user_event(ALICE, master["immutableId"])["recurrence"]
    rec["range"]["numberOfOccurrences"] = 3
    st.sim.user_patch(ALICE, master["immutableId"], {"recurrence": rec})
    occ = _occurrences(st, "Daily standup")
    assert len(occ) == 3
    st.wait_for(lambda: len(_links(st, [o["immutableId"] for o in occ])) == 3, timeout=30,
                what="the new occurrence's activity")


def _api(st, path, body):
    tok = requests.get(f"{st.url}/rmsync/api/csrf", timeout=10).json()["csrf_token"]
    r = requests.post(f"{st.url}/rmsync/api/{path}", data=json.dumps(body),
                      headers={"Content-Type": "application/json", "X-RMSync-CSRF": tok},
                      allow_redirects=False, timeout=10)
    assert r.status_code == 202, r.text
    url = st.url + r.headers["Location"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        p = requests.get(url, timeout=10)
        if p.status_code != 202:
            return p
        time.sleep(0.2)
    raise AssertionError("request still pending")


def test_linking_api_series_master_and_single_occurrence(st):
    d0 = datetime.date.today() + datetime.timedelta(days=5)
    # no category: only the API links these
    master = st.sim.user_series(ALICE, "Uncategorised weekly", d0.isoformat() + "T14:00:00",
                                d0.isoformat() + "T15:00:00", time_zone="UTC",
                                pattern="weekly", count=3)
    occ = _occurrences(st, "Uncategorised weekly")
    ids = [o["immutableId"] for o in occ]
    r = _api(st, "create-activity", {"representative_id": "ALICE",
                                     "event_id": master["immutableId"]})
    assert r.status_code == 200 and r.json()["result"]["status"] == 201, r.text
    links = _links(st, ids)
    assert len(links) == 3 and {l["linked_via"] for l in links} == {"api"}
    # the series grows: the new occurrence gets its activity too (series remembered)
    rec = st.sim.user_event(ALICE, master["immutableId"])["recurrence"]
    rec["range"]["numberOfOccurrences"] = 4
    st.sim.user_patch(ALICE, master["immutableId"], {"recurrence": rec})
    occ4 = _occurrences(st, "Uncategorised weekly")
    st.wait_for(lambda: len(_links(st, [o["immutableId"] for o in occ4])) == 4, timeout=30,
                what="the 4th occurrence's activity")
    # the same series again: refused
    r = _api(st, "create-activity", {"representative_id": "ALICE",
                                     "event_id": master["immutableId"]})
    assert r.status_code == 409, r.text

    # one occurrence of another series: just that occurrence
    d1 = d0 + datetime.timedelta(days=1)
    st.sim.user_series(ALICE, "Other weekly", d1.isoformat() + "T16:00:00",
                       d1.isoformat() + "T16:30:00", time_zone="UTC", pattern="weekly", count=3)
    other = _occurrences(st, "Other weekly")
    no = st.new_activity("ALICE", desc="Link me to one occurrence", day=20)
    r = _api(st, "link", {"activity_no": no, "representative_id": "ALICE",
                          "event_id": other[1]["immutableId"]})
    assert r.status_code == 200, r.text
    links = _links(st, [o["immutableId"] for o in other])
    assert [(l["activity_no"], l["event_id"]) for l in links] == [(no, other[1]["immutableId"])]
    assert st.activity(no)["start_time"] == pg_time(other[1]["start"])


# ---- RMSyncCalendar "CRM" ------------------------------------------------------------------

@pytest.fixture(scope="module")
def crm():
    s = EngineStack(cycle=3600, active=("ALICE",), notify=True,
                    sim_config={"allow_http_notification_urls": True},
                    extra='RMSyncCalendar "CRM"', activity_defaults={"start_h": 30})
    _ready(s)
    yield s
    _close(s)


def _crm_calendars(st):
    return [c for c in st.sim.user_calendars(ALICE) if c["name"].lower() == "crm"]


def _calendar_posts(st):
    return [r for r in st.sim.requests(method="POST")
            if r["path"].rstrip("/").endswith("/calendars")]


def test_sync_calendar_created_once(crm):
    cals = _crm_calendars(crm)
    assert len(cals) == 1
    state = crm.rep_state()
    assert state["calendar_name"] == "CRM" and state["calendar_id"] == cals[0]["id"]
    assert len(_calendar_posts(crm)) == 1
    sub = crm.sim.subscriptions()
    assert len(sub) == 1 and "/calendars/" in sub[0]["resource"]
    # a second runner start creates no other calendar
    crm.reconfigure(crm.extra)
    # and a lost id is found again by name, not created twice
    crm.pg.sql("UPDATE rmsync.rep_state SET calendar_id = NULL WHERE representative_id = 'ALICE'")
    crm.new_activity("ALICE", desc="Wake the runner", flag=True)
    crm.wait_for(lambda: crm.rep_state()["calendar_id"] == cals[0]["id"], timeout=30,
                 what="the calendar id found again")
    assert len(_crm_calendars(crm)) == 1 and len(_calendar_posts(crm)) == 1


def test_transfer_lands_in_sync_calendar(crm):
    cal = _crm_calendars(crm)[0]
    no = crm.new_activity("ALICE", desc="Transferred into CRM", flag=True)
    link = crm.wait_for(lambda: crm.link_row(no), timeout=30, what="the transfer")
    ev = crm.sim.user_event(ALICE, link["event_id"])
    assert ev.get("calendarId") == cal["id"], ev


def test_main_calendar_ignored_crm_calendar_synced(crm):
    main_ev = crm.new_event(ALICE, "Main calendar item", day=4, categories=[CATEGORY])
    crm_ev = crm.sim.user_create(ALICE, {
        "subject": "CRM calendar item", "categories": [CATEGORY],
        "start": {"dateTime": (datetime.datetime.utcnow() + datetime.timedelta(days=4))
                  .strftime("%Y-%m-%dT11:00:00"), "timeZone": "UTC"},
        "end": {"dateTime": (datetime.datetime.utcnow() + datetime.timedelta(days=4))
                .strftime("%Y-%m-%dT12:00:00"), "timeZone": "UTC"}}, calendar="CRM")
    links = crm.wait_for(lambda: _links(crm, [crm_ev["immutableId"]]), timeout=30,
                         what="the CRM calendar's appointment linked")
    no = links[0]["activity_no"]
    # an edit in the main calendar does nothing (no activity, no log row)
    crm.sim.user_patch(ALICE, main_ev["immutableId"], {"subject": "Main calendar item, edited"})
    # an edit in "CRM" syncs
    crm.sim.user_patch(ALICE, crm_ev["immutableId"], {"subject": "CRM calendar item, edited"})
    crm.wait_for(lambda: crm.activity(no)["description"] == "CRM calendar item, edited",
                 timeout=30, what="the CRM calendar's edit applied")
    assert not _links(crm, [main_ev["immutableId"]])
    assert crm.pg.val("SELECT count(*) FROM crm.business_activity"
                      " WHERE description LIKE 'Main calendar item%'") == "0"
    assert crm.log_count("event_id = $1", main_ev["immutableId"]) == 0


def test_directive_change_is_initial_sync(crm):
    """Back to RMSyncCalendar main: initial sync of the main calendar, a new subscription for
    it; links to appointments of "CRM" stay."""
    cal = _crm_calendars(crm)[0]
    kept = crm.pg.json("SELECT activity_no FROM rmsync.event_link")
    crm.reconfigure("")
    no = crm.new_activity("ALICE", desc="Transferred into main", flag=True)   # wakes the runner
    crm.wait_for(lambda: crm.rep_state()["calendar_name"] == "main", timeout=30,
                 what="the directive change seen")
    assert crm.rep_state()["calendar_id"] is None
    crm.wait_for(lambda: [s for s in crm.sim.subscriptions()
                          if s["resource"].endswith("/events") and "/calendars/" not in s["resource"]],
                 timeout=30, what="a subscription for the main calendar")
    assert len(crm.sim.subscriptions()) == 1
    assert crm.log_count("action = 'calendar' AND message LIKE 'RMSyncCalendar changed%'") == 1
    link = crm.wait_for(lambda: crm.link_row(no), timeout=30, what="the transfer")
    assert crm.sim.user_event(ALICE, link["event_id"]).get("calendarId") != cal["id"]
    for k in kept:
        assert crm.link_row(k["activity_no"]) is not None
