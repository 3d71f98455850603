import time
import urllib.parse

import pytest

from simtestlib import ALICE, BOB, ev_body, window

IMM = 'IdType="ImmutableId"'


def q(s):
    return urllib.parse.quote(s, safe="")


def run_round(env, url, pagesize=None, user=ALICE):
    """Follow nextLinks to the deltaLink. Returns (items, deltaLink, pages)."""
    prefer = [IMM] + (["odata.maxpagesize=%d" % pagesize] if pagesize else [])
    headers = {"Prefer": ", ".join(prefer)}
    if not url.startswith("https://"):
        url = "/users/%s/calendarView/delta?%s" % (user, url)
    items, pages = [], []
    for _ in range(100):
        st, h, b = env.g("GET", url, headers=headers)
        assert st == 200, b
        assert "odata.track-changes" in h["preference-applied"]
        pages.append(b)
        items += b["value"]
        assert ("@odata.nextLink" in b) != ("@odata.deltaLink" in b)
        if "@odata.deltaLink" in b:
            return items, b["@odata.deltaLink"], pages
        url = b["@odata.nextLink"]
    raise AssertionError("delta did not finish")


def test_window_required_and_bad_options(env):
    st, _, b = env.g("GET", "/users/%s/calendarView/delta" % ALICE)
    assert st == 400
    for opt in ("$filter=subject%20eq%20'x'", "$orderby=start/dateTime", "$search=%22x%22", "$expand=attachments",
                "$select=subject"):
        st, _, b = env.g("GET", "/users/%s/calendarView/delta?%s&%s" % (ALICE, window(), opt))
        assert st == 400, opt
        assert b["error"]["code"] == "ErrorInvalidUrlQuery"


def test_paging_maxpagesize_and_resume_from_nextlink(env):
    ids = [env.sim.user_create(ALICE, ev_body("e%d" % i, day=1 + i))["immutableId"] for i in range(7)]
    st, h, p1 = env.g("GET", "/users/%s/calendarView/delta?%s" % (ALICE, window()),
                      headers={"Prefer": "odata.maxpagesize=3, " + IMM})
    assert st == 200 and len(p1["value"]) == 3 and "@odata.nextLink" in p1
    assert "odata.maxpagesize=3" in h["preference-applied"]
    nl = p1["@odata.nextLink"]
    assert "$skiptoken=" in nl
    # the same nextLink can be fetched again (client retry after a lost response)
    a = env.g("GET", nl, headers={"Prefer": "odata.maxpagesize=3, " + IMM})[2]
    b = env.g("GET", nl, headers={"Prefer": "odata.maxpagesize=3, " + IMM})[2]
    assert [e["id"] for e in a["value"]] == [e["id"] for e in b["value"]]
    items, dl, pages = run_round(env, nl, pagesize=3)
    got = [e["id"] for e in p1["value"]] + [e["id"] for e in items]
    assert sorted(got) == sorted(ids)
    assert "$deltatoken=" in dl
    # a quiet deltaLink gives an empty page with a new deltaLink
    items, dl2, _ = run_round(env, dl)
    assert items == [] and dl2 != dl


def test_changes_coalesced_delete_removed_and_replay(env):
    a = env.sim.user_create(ALICE, ev_body("a", day=2))
    b = env.sim.user_create(ALICE, ev_body("b", day=3))
    _, dl, _ = run_round(env, window())
    env.sim.user_patch(ALICE, a["immutableId"], {"subject": "a1"})
    env.sim.user_patch(ALICE, a["immutableId"], {"subject": "a2"})
    env.sim.user_delete(ALICE, b["immutableId"])
    c = env.sim.user_create(ALICE, ev_body("c", day=4))
    items, dl2, _ = run_round(env, dl)
    by_id = {}
    for it in items:
        assert it["id"] not in by_id, "one entry per event"
        by_id[it["id"]] = it
    assert by_id[a["immutableId"]]["subject"] == "a2"
    assert by_id[b["immutableId"]] == {"@odata.type": "#microsoft.graph.event", "id": b["immutableId"],
                                       "@removed": {"reason": "deleted"}}
    assert by_id[c["immutableId"]]["subject"] == "c"
    # replaying the old deltaLink returns the same changes again
    again, _, _ = run_round(env, dl)
    assert {i["id"] for i in again} == set(by_id)
    # and the new one is quiet
    assert run_round(env, dl2)[0] == []


def test_moved_out_of_window_and_outside_changes_are_removed(env):
    a = env.sim.user_create(ALICE, ev_body("in", day=2))
    _, dl, _ = run_round(env, window(1, 10))
    env.sim.user_patch(ALICE, a["immutableId"], ev_body("out", day=40))
    far = env.sim.user_create(ALICE, ev_body("far", day=50))
    items, _, _ = run_round(env, dl)
    by_id = {i["id"]: i for i in items}
    assert by_id[a["immutableId"]]["@removed"] == {"reason": "deleted"}
    assert "subject" not in by_id[a["immutableId"]]
    assert by_id[far["immutableId"]]["@removed"] == {"reason": "deleted"}


def test_rest_ids_without_immutable_preference(env):
    a = env.sim.user_create(ALICE, ev_body("r", day=2))
    st, _, b = env.g("GET", "/users/%s/calendarView/delta?%s" % (ALICE, window()))
    assert [e["id"] for e in b["value"]] == [a["restId"]]


def test_eviction_gives_410(env):
    env.sim.user_create(ALICE, ev_body("x", day=2))
    _, dl, _ = run_round(env, window())
    _, dl_b, _ = run_round(env, window(), user=BOB)
    env.sim.evict_delta_tokens(ALICE)
    st, _, b = env.g("GET", dl)
    assert st == 410 and b["error"]["code"] == "SyncStateNotFound"
    assert env.g("GET", dl_b)[0] == 200, "other mailboxes keep their tokens"


def test_token_max_age_gives_410(env):
    env.sim.config(delta_token_max_age_s=0.3)
    _, dl, _ = run_round(env, window())
    time.sleep(0.4)
    st, _, b = env.g("GET", dl)
    assert st == 410 and b["error"]["code"] == "SyncStateNotFound"


@pytest.mark.parametrize("tok", ["garbage", "R0usmcCM996atia_s", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"])
def test_malformed_token_400(env, tok):
    st, _, b = env.g("GET", "/users/%s/calendarView/delta?$deltatoken=%s" % (ALICE, tok))
    assert st == 400 and b["error"]["code"] == "InvalidDeltaToken"


def test_empty_first_page_knob(env):
    env.sim.config(delta_empty_first_page=True)
    env.sim.user_create(ALICE, ev_body("x", day=2))
    items, _, pages = run_round(env, window())
    assert pages[0]["value"] == [] and "@odata.nextLink" in pages[0]
    assert len(items) == 1


def test_occurrence_delete_seen_in_delta(env):
    body = ev_body("daily", day=1, hour=8)
    body["recurrence"] = {"pattern": {"type": "daily", "interval": 1},
                          "range": {"type": "numbered", "startDate": body["start"]["dateTime"][:10],
                                    "numberOfOccurrences": 3}}
    env.sim.user_create(ALICE, body)
    items, dl, _ = run_round(env, window())
    assert len(items) == 3 and all(i["type"] == "occurrence" for i in items)
    assert env.g("DELETE", "/users/%s/events/%s" % (ALICE, q(items[1]["id"])))[0] == 204
    items2, _, _ = run_round(env, dl)
    removed = [i for i in items2 if "@removed" in i]
    assert [i["id"] for i in removed] == [items[1]["id"]]


def _series(env, user, subject, day, hour, n):
    body = ev_body(subject, day=day, hour=hour)
    body["recurrence"] = {"pattern": {"type": "daily", "interval": 1},
                          "range": {"type": "numbered", "startDate": body["start"]["dateTime"][:10],
                                    "numberOfOccurrences": n}}
    return env.sim.user_create(user, body)


def test_series_not_split_across_pages(env):
    env.sim.user_create(ALICE, ev_body("single a", day=1, hour=7))
    _series(env, ALICE, "series", day=1, hour=8, n=5)
    env.sim.user_create(ALICE, ev_body("single b", day=2, hour=9))
    items, _, pages = run_round(env, window(), pagesize=2)
    sizes = [len(p["value"]) for p in pages]
    assert max(sizes) > 2, "the page holding the series overflows maxpagesize"
    for p in pages:
        subjects = [i["subject"] for i in p["value"]]
        if "series" in subjects:
            assert subjects.count("series") == 5
    env.sim.config(delta_series_together=False)
    _, _, pages = run_round(env, window(), pagesize=2)
    assert max(len(p["value"]) for p in pages) == 2


def test_sparse_occurrences_and_duplicates_knobs(env):
    env.sim.config(delta_sparse_occurrences=True, delta_duplicates=1)
    _series(env, ALICE, "sparse", day=1, hour=8, n=2)
    items, _, _ = run_round(env, window())
    assert len(items) == 3 and items[0]["id"] == items[2]["id"], "an item may appear twice in a round"
    assert set(items[0]) == {"@odata.type", "@odata.etag", "id", "seriesMasterId", "type", "start", "end"}


def test_lru_capacity_per_mailbox(env):
    env.sim.config(delta_tokens_per_mailbox=2)
    _, dl1, _ = run_round(env, window())
    _, dl_bob, _ = run_round(env, window(), user=BOB)
    _, dl2, _ = run_round(env, window())
    _, dl3, _ = run_round(env, window())
    assert env.g("GET", dl1)[0] == 410, "oldest token of the mailbox evicted"
    assert env.g("GET", dl_bob)[0] == 200
    assert env.g("GET", dl3)[0] == 200


def test_visibility_delay(env):
    """A change is not in delta right away (GRAPH.md 4.3 'processing delays'), but in a later round."""
    a = env.sim.user_create(ALICE, ev_body("a", day=2))
    _, dl, _ = run_round(env, window())
    env.sim.config(delta_visibility_delay_ms=600000)
    env.sim.user_patch(ALICE, a["immutableId"], {"subject": "a2"})
    b = env.sim.user_create(ALICE, ev_body("b", day=3))
    env.sim.user_delete(ALICE, a["immutableId"])
    items, dl2, _ = run_round(env, dl)
    assert items == [], "nothing visible yet"
    items_init, _, _ = run_round(env, window())
    assert b["immutableId"] not in [i["id"] for i in items_init], "new item not yet in an initial round either"
    env.sim.config(delta_visibility_delay_ms=0)       # processing caught up
    items, _, _ = run_round(env, dl2)
    by_id = {i["id"]: i for i in items}
    assert set(by_id) == {a["immutableId"], b["immutableId"]}
    assert "@removed" in by_id[a["immutableId"]] and by_id[b["immutableId"]]["subject"] == "b"


def test_single_use_skiptokens(env):
    env.sim.config(delta_skiptoken_single_use=True)
    for i in range(3):
        env.sim.user_create(ALICE, ev_body("e%d" % i, day=i + 1))
    _, _, p1 = env.g("GET", "/users/%s/calendarView/delta?%s" % (ALICE, window()),
                     headers={"Prefer": "odata.maxpagesize=1"})
    nl = p1["@odata.nextLink"]
    assert env.g("GET", nl, headers={"Prefer": "odata.maxpagesize=1"})[0] == 200
    st, _, b = env.g("GET", nl, headers={"Prefer": "odata.maxpagesize=1"})
    assert st == 410 and b["error"]["code"] == "SyncStateNotFound"
