#!/usr/bin/python3
"""Admin log page at a million rows (issue 15): ms per page, printed, never asserted.

    env PATH=/usr/sbin:/usr/bin:/sbin:/bin /usr/bin/python3 bench/admin_log.py [--rows N] [--runs R]

Starts a throw-away PostgreSQL cluster and Apache (tests/lib), inserts N sync_log rows with
generate_series (70% info, 20% debug, 8% warning, 2% error over 5 representatives and 90 days),
ANALYZEs, then times each page R times through Apache (median ms, the whole HTTP round trip:
query + HTML/JSON/CSV rendering). Pages: the default view (info and above), a deep page
(before= the middle id), warning and above, errors of one representative, text searches, a
time-zone page with a from/to range, and CSV exports (errors: about 2% of the rows; the
default view: the 100,000-row bound). The text searches: 'subject 123 ' (0.1% of the rows),
a rare word (10 rows over the 90 days), a rare phrase made of words in every row ('subject 996
changed', 0.1%: the trigram index cannot narrow it), a word in 5% of the older half only (the
planner, seeing it in 2.5% of all rows, would walk the primary key across the newer half), a
word in every row, the second page of the rare phrase, and no match.
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import requests  # noqa: E402

from lib.pg import PgCluster  # noqa: E402
from lib.httpd import Httpd  # noqa: E402
from test_admin import admin_conf  # noqa: E402

FILL = """
DROP INDEX IF EXISTS rmsync.sync_log_message_trgm;
INSERT INTO rmsync.sync_log (at, level, representative_id, action, message, event_id)
SELECT now() - (({n} - g) * interval '90 days' / {n}),
       CASE WHEN g % 50 = 0 THEN 'error' WHEN g % 50 < 5 THEN 'warning'
            WHEN g % 10 < 2 THEN 'debug' ELSE 'info' END,
       (ARRAY['ALICE','BOB','CAROL','DAVE','EVE'])[1 + (g / 7) % 5],
       (ARRAY['update','create','skip','delete'])[1 + g % 4],
       CASE WHEN g % 100000 = 50000 THEN 'Budget escalation for ' || md5(g::text)
            ELSE 'Meeting ' || md5(g::text) || ' subject ' || (g % 997) || ' changed'
                 || CASE WHEN g % 20 = 7 AND g <= {n} / 2 THEN ' ErrorInvalidUser' ELSE '' END
       END,
       'AAMkAGI2' || md5((g * 7)::text) || md5(g::text)
  FROM generate_series(1, {n}) g;
"""
RARE_PHRASE = "subject 996 changed"
# bulk load first, then the trigram index (as a restore would)
INDEX = """
CREATE INDEX IF NOT EXISTS sync_log_message_trgm ON rmsync.sync_log
    USING gin (message gin_trgm_ops);
ANALYZE rmsync.sync_log;
"""


def timed(url, params, runs):
    ms, size = [], 0
    for _ in range(runs):
        t = time.perf_counter()
        r = requests.get(url, params=params, timeout=120)
        ms.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, r.text[:300]
        size = len(r.content)
    return statistics.median(ms), size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()

    pg = PgCluster(demo=True).start()
    h = None
    try:
        t = time.perf_counter()
        pg.sql(FILL.format(n=a.rows), timeout=1800)
        print(f"inserted {a.rows} rows in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        pg.sql(INDEX, timeout=1800)
        print(f"trigram index + ANALYZE in {time.perf_counter() - t:.1f} s")
        h = Httpd(name="rmsync-bench-log")
        h.write_conf(rmsync=admin_conf(pg, h))
        h.start()
        url = h.url("/rmsync/log")
        mid = pg.val("SELECT max(id) / 2 FROM rmsync.sync_log")
        day = pg.val("SELECT to_char(now() - interval '45 days', 'YYYY-MM-DD')")
        page2 = requests.get(url, params={"q": RARE_PHRASE, "format": "json"},
                             timeout=120).json()["oldest_id"]
        pages = [
            ("default (info+), HTML", {}),
            ("default, JSON", {"format": "json"}),
            ("deep page before=<middle id>", {"before": mid}),
            ("warning and above", {"min_level": "warning"}),
            ("errors of BOB", {"min_level": "error", "rep": "BOB"}),
            ("text search 'subject 123 '", {"q": "subject 123 "}),
            ("text search, rare word (10 rows)", {"q": "escalation"}),
            ("text search, rare phrase of common words", {"q": RARE_PHRASE}),
            ("text search, 2nd page of the phrase", {"q": RARE_PHRASE, "before": page2}),
            ("text search, word in old rows only", {"q": "ErrorInvalidUser"}),
            ("text search, word in every row", {"q": "Meeting"}),
            ("text search, no match", {"q": "no such text"}),
            ("tz Europe/Berlin, one day", {"tz": "Europe/Berlin", "from": day, "to": day}),
            ("n=500", {"n": "500"}),
            ("no match: errors of a rep without any", {"min_level": "error", "rep": "NOBODY"}),
            ("CSV errors (~2%)", {"format": "csv", "min_level": "error"}),
            ("CSV default view (100k bound)", {"format": "csv"}),
        ]
        print(f"{'page':40s} {'median ms':>10s} {'bytes':>10s}")
        for name, params in pages:
            ms, size = timed(url, params, a.runs if "CSV" not in name else max(1, a.runs // 2))
            print(f"{name:40s} {ms:10.1f} {size:10d}")
    finally:
        if h:
            h.stop()
            h.destroy()
        pg.destroy()


if __name__ == "__main__":
    main()
