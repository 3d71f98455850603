"""Admin log page (issue 15): minimum level, text search, CSV export, the admin's time zone.

A real Apache and PostgreSQL; the Graph side is unreachable (the runner idles), the log rows are
seeded in SQL. The million-row timing is a benchmark, not a test: bench/admin_log.py.
"""
import csv
import io
import re

import pytest
import requests

from lib.pg import PgCluster
from test_admin import admin_conf, OTHERS

SEED = r"""
INSERT INTO rmsync.sync_log (at, level, representative_id, action, message, event_id) VALUES
    (now() - interval '50 minutes', 'debug', 'ALICE', 'lt_dbg', 'debug detail', NULL),
    (now() - interval '40 minutes', 'info', 'ALICE', 'lt_info', 'Meeting "Budget, Q3" updated',
     'AAMkAGI2TG93AAA-very-long-outlook-event-identifier-0123456789abcdefghijklmnop='),
    (now() - interval '30 minutes', 'warning', 'BOB', 'lt_warn', 'slow mailbox', NULL),
    (now() - interval '20 minutes', 'error', 'BOB', 'lt_err', '=HYPERLINK("http://x","click")', NULL),
    (now() - interval '10 minutes', 'info', 'ALICE', 'lt_pct', 'progress 100%_done', NULL),
    (now() - interval '9 minutes', 'info', 'ALICE', 'lt_pct', 'progress 100xxdone', NULL),
    (now() - interval '8 minutes', 'info', 'ALICE', 'lt_multi', E'two\nlines, "quoted"', NULL),
    ('2026-01-15 23:30:00+00', 'info', 'ALICE', 'lt_tz', 'late evening in London', NULL);
"""


@pytest.fixture(scope="module")
def pg():
    c = PgCluster(demo=True).start()
    c.sql(SEED)
    yield c
    c.destroy()


@pytest.fixture(scope="module")
def server(pg):
    from lib.httpd import Httpd
    h = Httpd(name="rmsync-admin-log")
    h.write_conf(rmsync=admin_conf(pg, h))
    h.start()
    yield h
    h.stop()
    bad = h.bad_log_lines(OTHERS | {"RMS00711", "RMS00712"})
    h.destroy()
    assert not bad, "unexpected error log lines:\n" + "\n".join(bad)


def log_json(h, cookies=None, **params):
    r = requests.get(h.url("/rmsync/log"), params=dict(params, format="json"), cookies=cookies,
                     timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def actions(j):
    return [x["action"] for x in j["rows"] if x["action"] and x["action"].startswith("lt_")]


def test_default_view_is_info_and_above(server):
    j = log_json(server)
    assert j["filter"]["min_level"] == "info"
    assert "lt_dbg" not in actions(j) and "lt_info" in actions(j)
    assert "lt_dbg" in actions(log_json(server, min_level="debug"))


def test_warning_and_above(server):
    j = log_json(server, min_level="warning")
    assert {x["level"] for x in j["rows"]} <= {"warning", "error"}
    assert {"lt_warn", "lt_err"} <= set(actions(j))
    assert set(actions(log_json(server, min_level="error"))) == {"lt_err"}
    # level= still means exactly that level
    assert {x["level"] for x in log_json(server, level="warning")["rows"]} == {"warning"}


def test_text_search_literal_percent_and_underscore(server):
    assert [x["message"] for x in log_json(server, q="100%_done")["rows"]] == ["progress 100%_done"]
    assert len(log_json(server, q="100%")["rows"]) == 1
    assert log_json(server, q="__")["rows"] == []
    assert actions(log_json(server, q="BUDGET, q3")) == ["lt_info"]   # case-insensitive
    r = requests.get(server.url("/rmsync/log"), params={"q": "x" * 201}, timeout=10)
    assert r.status_code == 400 and "q:" in r.text
    r = requests.get(server.url("/rmsync/log"), params={"min_level": "fatal"}, timeout=10)
    assert r.status_code == 400 and "min_level" in r.text


def test_csv_export_of_filtered_view(server):
    r = requests.get(server.url("/rmsync/log"), params={"format": "csv", "min_level": "warning",
                                                        "rep": "BOB"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/csv")
    assert r.headers["Content-Disposition"].startswith("attachment")
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8"), newline="")))
    assert [x["action"] for x in rows] == ["lt_err", "lt_warn"]
    assert rows[0]["message"] == "'=HYPERLINK(\"http://x\",\"click\")"   # neutralised
    assert rows[0]["level"] == "error" and rows[0]["representative_id"] == "BOB"
    assert r.headers["X-RMSync-Rows"] == "2"
    # quoting round-trips commas, quotes and newlines
    r = requests.get(server.url("/rmsync/log"), params={"format": "csv", "action": "lt_multi"},
                     timeout=10)
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8"), newline="")))
    assert [x["message"] for x in rows] == ['two\nlines, "quoted"']
    # format=csv only on the log page
    assert requests.get(server.url("/rmsync/config"), params={"format": "csv"},
                        timeout=10).status_code == 400


def test_time_zone_switch(server):
    utc = log_json(server, action="lt_tz")
    assert utc["tz"] == "UTC" and utc["rows"][0]["at_local"] == "2026-01-15 23:30:00"
    r = requests.get(server.url("/rmsync/log"), params={"action": "lt_tz", "tz": "Asia/Tokyo"},
                     timeout=10)
    assert r.status_code == 200
    assert re.match(r"rmsync_tz=Asia/Tokyo; Path=/rmsync;.*SameSite=Strict; HttpOnly",
                    r.headers["Set-Cookie"])
    assert "2026-01-16 08:30:00" in r.text and 'title="UTC: 2026-01-15 23:30' in r.text
    # remembered: the cookie alone switches the zone, for times and for the filter's meaning
    ck = {"rmsync_tz": "Asia/Tokyo"}
    j = log_json(server, cookies=ck, action="lt_tz")
    assert j["tz"] == "Asia/Tokyo" and j["rows"][0]["at_local"] == "2026-01-16 08:30:00"
    assert j["rows"][0]["at"] == "2026-01-15T23:30:00Z"
    assert actions(log_json(server, cookies=ck, action="lt_tz", **{"from": "2026-01-16"})) == ["lt_tz"]
    assert actions(log_json(server, action="lt_tz", **{"from": "2026-01-16"})) == []
    assert actions(log_json(server, action="lt_tz", to="2026-01-15")) == ["lt_tz"]
    assert actions(log_json(server, cookies=ck, action="lt_tz", to="2026-01-15")) == []


@pytest.mark.parametrize("bad", ["Mars/Olympus", "../../etc/passwd", "UTC'--", "x" * 80, ""])
def test_bad_tz_cookie_is_ignored(server, bad):
    j = log_json(server, cookies={"rmsync_tz": bad}, action="lt_tz")
    assert j["tz"] == "UTC" and j["rows"][0]["at_local"] == "2026-01-15 23:30:00"


@pytest.mark.parametrize("bad", ["Mars/Olympus", "../x", "Europe/Berlin'"])
def test_bad_tz_param_is_400(server, bad):
    r = requests.get(server.url("/rmsync/log"), params={"tz": bad}, timeout=10)
    assert r.status_code == 400 and "tz:" in r.text and "Set-Cookie" not in r.headers


def test_html_event_ids_and_filters(server):
    r = requests.get(server.url("/rmsync/log"), params={"action": "lt_info"}, timeout=10)
    assert r.status_code == 200
    full = "AAMkAGI2TG93AAA-very-long-outlook-event-identifier-0123456789abcdefghijklmnop="
    assert f'title="{full}"' in r.text and "AAMkAGI2TG&hellip;jklmnop=" in r.text
    assert f'data-copy="event">{full}</code>' in r.text
    assert 'name="min_level"' in r.text and 'name="q"' in r.text and 'name="tz"' in r.text
    assert "format=csv" in r.text and "<script" not in r.text


def test_action_from_filtered_log_keeps_filters(server, pg):
    tok = requests.get(server.url("/rmsync/config?format=json"), timeout=10).json()["csrf_token"]
    lid = pg.val("SELECT id FROM rmsync.sync_log WHERE action = 'lt_info'")
    back = "min_level=warning&q=100%25_done&tz=Asia%2FTokyo&rep=ALICE"
    r = requests.post(server.url("/rmsync/log"), data={"action": "retry", "log": lid,
                      "token": tok, "back": back}, headers={"Origin": server.base_url},
                      allow_redirects=False, timeout=10)
    assert r.status_code == 303, r.text
    assert r.headers["Location"].endswith(
        "/rmsync/log?done=retry&rep=ALICE&min_level=warning&q=100%25_done&tz=Asia%2FTokyo")


def test_search_across_the_recent_window_and_paging(server, pg):
    """A text search reads the newest 2,000 ids below the cursor first (then the next 100,000
    when its matches promise a page there), then the rest of the page from older rows: the
    page is still the newest matches in order, and paging both ways says truly whether there is
    more (issue 15, bench/admin_log.py)."""
    fill = ("INSERT INTO rmsync.sync_log (level, representative_id, action, message)"
            " SELECT 'info', 'ALICE', 'lt_win', CASE WHEN g % $2::int = 0"
            " THEN 'needle ' || g ELSE 'filler ' || g END FROM generate_series(1, $1::int) g")
    first = int(pg.val("SELECT coalesce(max(id), 0) + 1 FROM rmsync.sync_log"))
    try:
        pg.sql(fill, 1200, 20)       # 60 old matches
        pg.sql(fill, 12000, 100000)  # none: pushes them below the first window
        pg.sql(fill, 300, 100)       # 3 recent matches
        want = [int(r[0]) for r in pg.sql("SELECT id FROM rmsync.sync_log WHERE id >= $1"
                                          " AND message LIKE 'needle %' ORDER BY id DESC",
                                          first)]
        assert len(want) == 63
        p1 = log_json(server, q="NEEDLE", n=50)
        assert [x["id"] for x in p1["rows"]] == want[:50]
        assert p1["has_older"] and not p1["has_newer"]
        p2 = log_json(server, q="needle", n=50, before=p1["oldest_id"])
        assert [x["id"] for x in p2["rows"]] == want[50:]
        assert p2["has_newer"] and not p2["has_older"]
        # back up from page 2 (after=): page 1's oldest rows, more newer still
        p1b = log_json(server, q="needle", n=10, after=p2["newest_id"])
        assert [x["id"] for x in p1b["rows"]] == want[40:50]
        assert p1b["has_newer"] and p1b["has_older"]
        # a cursor row that does not match (a hand-made link): still the truth
        p3 = log_json(server, q="needle", n=5, before=want[2] - 1)
        assert [x["id"] for x in p3["rows"]] == want[3:8] and p3["has_newer"]
        p4 = log_json(server, q="needle", n=5, before=want[0] + 1)
        assert [x["id"] for x in p4["rows"]] == want[:5] and not p4["has_newer"]
        # page 1 above and this one: the 3 recent matches promise the page within the next
        # 100,000 ids, read in id order too; p3 (no match in its first window) came from the
        # trigram index
        p6 = log_json(server, q="needle", n=20)
        assert [x["id"] for x in p6["rows"]] == want[:20] and p6["has_older"]
        # exactly a page, nothing more in either direction
        p5 = log_json(server, q="needle", n=63)
        assert len(p5["rows"]) == 63 and not p5["has_older"] and not p5["has_newer"]
        # the same rows in the HTML page and the CSV export
        r = requests.get(server.url("/rmsync/log"), params={"q": "needle", "n": 50}, timeout=10)
        assert r.status_code == 200 and f"before={want[49]}" in r.text
        r = requests.get(server.url("/rmsync/log"), params={"q": "needle", "format": "csv"},
                         timeout=10)
        ids = [int(x["id"]) for x in csv.DictReader(io.StringIO(r.text, newline=""))]
        assert ids == want
        # all three steps: 3 matches in the first window promise 20 rows within the next
        # 100,000 ids; they hold 10, the rest comes from below them (the 1200 block)
        pg.sql("DELETE FROM rmsync.sync_log WHERE action = 'lt_win'")
        first = int(pg.val("SELECT max(id) + 1 FROM rmsync.sync_log"))
        pg.sql(fill, 1200, 20)
        pg.sql(fill, 110000, 10000)
        pg.sql(fill, 300, 100)
        want = [int(r[0]) for r in pg.sql("SELECT id FROM rmsync.sync_log WHERE id >= $1"
                                          " AND message LIKE 'needle %' ORDER BY id DESC",
                                          first)]
        top = want[0] + 1
        assert len([i for i in want if top - 2000 <= i]) == 4
        assert len([i for i in want if top - 102000 <= i < top - 2000]) == 10
        p7 = log_json(server, q="needle", n=20)
        assert [x["id"] for x in p7["rows"]] == want[:20] and p7["has_older"]
    finally:
        pg.sql("DELETE FROM rmsync.sync_log WHERE action = 'lt_win'")
