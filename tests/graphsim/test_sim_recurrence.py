"""Recurring series as GRAPH.md 9 describes: calendarView/delta rows, exceptions, cancelled
occurrences, pattern changes, master-only notifications (issue 14)."""
import datetime as dt
import time
import urllib.parse

from simtestlib import ALICE, ev_body, window

from test_sim_delta import run_round
from test_sim_subscriptions import sub_body

IMM = 'IdType="ImmutableId"'


def q(s):
    return urllib.parse.quote(s, safe="")


def by_id(items):
    return {i["id"]: i for i in items}


def replays_only(items, occ, skip):
    """The series' other occurrences may come again unchanged (the master changed, GRAPH.md 9.3)."""
    before = by_id(occ)
    for i in items:
        if i["id"] in skip:
            continue
        assert "@removed" not in i and i["type"] == "occurrence", i
        assert i["start"] == before[i["id"]]["start"]


def weekly4(env, **extra):
    d0 = dt.date.today() + dt.timedelta(days=1)
    return env.sim.user_series(ALICE, "weekly sync", d0.isoformat() + "T10:00:00", d0.isoformat() + "T10:30:00",
                               time_zone="W. Europe Standard Time", pattern="weekly", count=4, **extra), d0


def test_series_rows_in_calendar_view_and_delta(env):
    master, d0 = weekly4(env)
    assert master["type"] == "seriesMaster" and master["recurrence"]["range"]["numberOfOccurrences"] == 4
    # /events lists the master (with its pattern), not the occurrences
    _, _, lst = env.g("GET", "/users/%s/events" % ALICE, headers={"Prefer": IMM})
    assert [(e["type"], e["id"]) for e in lst["value"]] == [("seriesMaster", master["immutableId"])]
    # calendarView and delta: occurrences, not the master
    _, _, cv = env.g("GET", "/users/%s/calendarView?%s&$top=50" % (ALICE, window(1, 40)), headers={"Prefer": IMM})
    assert [e["type"] for e in cv["value"]] == ["occurrence"] * 4
    items, _, _ = run_round(env, window(1, 40))
    assert [i["type"] for i in items] == ["occurrence"] * 4
    assert {i["seriesMasterId"] for i in items} == {master["immutableId"]}
    assert len({i["id"] for i in items}) == 4 and master["immutableId"] not in {i["id"] for i in items}
    starts = sorted(i["originalStart"] for i in items)
    assert starts[0].startswith(d0.isoformat()) and all(i["recurrence"] is None for i in items)
    # occurrence ids are stable across rounds and match /instances
    items2, _, _ = run_round(env, window(1, 40))
    assert sorted(i["id"] for i in items) == sorted(i["id"] for i in items2)
    _, _, inst = env.g("GET", "/users/%s/events/%s/instances?%s" % (ALICE, q(master["immutableId"]), window(1, 40)),
                       headers={"Prefer": IMM})
    assert sorted(i["id"] for i in inst["value"]) == sorted(i["id"] for i in items)
    # endDate range: weekly until 15 days later -> 3 occurrences
    d1 = dt.date.today() + dt.timedelta(days=2)
    env.sim.user_series(ALICE, "until", d1.isoformat() + "T08:00:00", d1.isoformat() + "T09:00:00",
                        pattern="weekly", end_date=(d1 + dt.timedelta(days=15)).isoformat())
    _, _, cv = env.g("GET", "/users/%s/calendarView?%s&$top=50" % (ALICE, window(1, 40)))
    assert len([e for e in cv["value"] if e["subject"] == "until"]) == 3


def test_move_delete_and_pattern_change_in_delta(env):
    master, d0 = weekly4(env)
    items, dl, _ = run_round(env, window(1, 40))
    occ = sorted(items, key=lambda i: i["start"]["dateTime"])
    # move the second occurrence by 2 hours (control API) -> it comes back as an exception, same id
    st0 = dt.datetime.fromisoformat(occ[1]["start"]["dateTime"][:19])
    moved = {"start": {"dateTime": (st0 + dt.timedelta(hours=2)).isoformat(), "timeZone": "UTC"},
             "end": {"dateTime": (st0 + dt.timedelta(hours=2, minutes=30)).isoformat(), "timeZone": "UTC"}}
    env.sim.user_patch(ALICE, occ[1]["id"], moved)
    items, dl, _ = run_round(env, dl)
    x = by_id(items)[occ[1]["id"]]
    assert x["type"] == "exception" and x["seriesMasterId"] == master["immutableId"]
    assert x["start"]["dateTime"].startswith((st0 + dt.timedelta(hours=2)).isoformat())
    assert x["originalStart"].startswith(occ[1]["originalStart"][:19])
    replays_only(items, occ, {occ[1]["id"]})
    occ[1] = x
    # delete the third occurrence -> @removed for that occurrence only
    env.sim.user_delete(ALICE, occ[2]["id"])
    items, dl, _ = run_round(env, dl)
    assert [(i["id"], i["@removed"]["reason"]) for i in items if "@removed" in i] == [(occ[2]["id"], "deleted")]
    assert occ[2]["id"] not in [i["id"] for i in items if "@removed" not in i]
    assert env.g("GET", "/users/%s/events/%s" % (ALICE, q(occ[2]["id"])))[0] == 404
    # an edit of an occurrence through Graph PATCH also makes it an exception
    st, _, x = env.g("PATCH", "/users/%s/events/%s" % (ALICE, q(occ[3]["id"])), {"subject": "special"},
                     headers={"Prefer": IMM})
    assert st == 200 and x["type"] == "exception" and x["seriesMasterId"] == master["immutableId"]
    items, dl, _ = run_round(env, dl)
    assert (by_id(items)[occ[3]["id"]]["type"], by_id(items)[occ[3]["id"]]["subject"]) == ("exception", "special")
    assert all("@removed" not in i for i in items)
    # cut the series to 2 occurrences: the ones beyond go as @removed; the rest come again
    # (a pattern change drops the exceptions, as Outlook does)
    rec = master["recurrence"]
    rec["range"]["numberOfOccurrences"] = 2
    env.sim.user_patch(ALICE, master["immutableId"], {"recurrence": rec})
    items, dl, _ = run_round(env, dl)
    removed = sorted(i["id"] for i in items if "@removed" in i)
    assert removed == sorted([occ[3]["id"]])    # occ[2] was already removed
    live = {i["id"]: i["type"] for i in items if "@removed" not in i}
    assert live == {occ[0]["id"]: "occurrence", occ[1]["id"]: "occurrence"}
    _, _, cv = env.g("GET", "/users/%s/calendarView?%s&$top=50" % (ALICE, window(1, 40)), headers={"Prefer": IMM})
    assert sorted(e["id"] for e in cv["value"]) == sorted([occ[0]["id"], occ[1]["id"]])
    # widening the pattern brings occurrences back (as new rows), daily now
    rec = {"pattern": {"type": "daily", "interval": 1},
           "range": {"type": "numbered", "startDate": d0.isoformat(), "numberOfOccurrences": 3}}
    env.sim.user_patch(ALICE, master["immutableId"], {"recurrence": rec})
    items, dl, _ = run_round(env, dl)
    assert len([i for i in items if "@removed" not in i]) == 3
    assert {i["id"] for i in items if "@removed" in i} == {occ[1]["id"]}   # the week-2 date is no longer in it


def test_series_notifications_are_master_updates(env, receiver):
    env.sim.config(allow_http_notification_urls=True, notification_debounce_ms=20)
    st, _, s = env.g("POST", "/subscriptions", sub_body(receiver), headers={"Prefer": IMM})
    assert st == 201
    master, d0 = weekly4(env)
    receiver.wait_posts(1)
    occ = sorted(env.sim.user_calendar_view(ALICE, "2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z"),
                 key=lambda v: v["start"]["dateTime"])

    def items_after(n):
        receiver.wait_posts(n)
        time.sleep(0.2)
        return [i for _, p, _ in receiver.posts[n - 1:] for i in p["value"]]

    created = [i for _, p, _ in receiver.posts for i in p["value"]]
    assert [(i["changeType"], i["resourceData"]["id"]) for i in created] == [("created", master["immutableId"])]
    n = len(receiver.posts)
    env.sim.user_patch(ALICE, occ[1]["immutableId"], {"subject": "moved one"})
    got = items_after(n + 1)
    # GRAPH.md 9.3 (docs#5520, PnP#1894): the occurrence's change surfaces as `updated` of the master
    assert [(i["changeType"], i["resourceData"]["id"]) for i in got] == [("updated", master["immutableId"])]
    n = len(receiver.posts)
    env.sim.user_delete(ALICE, occ[2]["immutableId"])
    got = items_after(n + 1)
    assert [(i["changeType"], i["resourceData"]["id"]) for i in got] == [("updated", master["immutableId"])]
    n = len(receiver.posts)
    rec = dict(master["recurrence"])
    rec["range"] = dict(rec["range"], numberOfOccurrences=2)
    env.sim.user_patch(ALICE, master["immutableId"], {"recurrence": rec})
    got = items_after(n + 1)
    assert [(i["changeType"], i["resourceData"]["id"]) for i in got] == [("updated", master["immutableId"])]
    n = len(receiver.posts)
    env.sim.user_delete(ALICE, master["immutableId"])
    got = items_after(n + 1)
    assert [(i["changeType"], i["resourceData"]["id"]) for i in got] == [("deleted", master["immutableId"])]


def test_delete_whole_series_removes_every_occurrence_in_delta(env):
    master, _ = weekly4(env)
    single = env.sim.user_create(ALICE, ev_body("single", day=2))
    items, dl, _ = run_round(env, window(1, 40))
    assert len(items) == 5
    env.sim.user_delete(ALICE, master["immutableId"])
    items, dl, _ = run_round(env, dl)
    assert len(items) == 4 and all("@removed" in i for i in items)
    assert single["immutableId"] not in {i["id"] for i in items}
