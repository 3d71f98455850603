"""Retention: the runner deletes sync log rows older than RMSyncLogRetention days (default 90; 30
here), closed queue items and admin requests older than 2 days (failed queue items after 30
days) shortly after its start and then daily, in bounded steps (rmsync.housekeeping_step, 5,000
rows a table a step), and says so once in the error log (RMS00472). Younger rows stay. (Off:
the admin-page tests keep their fixed-date log rows with it.)"""
import re
import time

import pytest

from engine_stack import EngineStack

OLD_LOG_ROWS = 12_000          # more than two steps of 5,000


@pytest.fixture(scope="module")
def stack():
    st = EngineStack(cycle=2, extra="RMSyncLogRetention 30",
                     allow=("RMS00003",))   # no webhook URL: a warning
    yield st
    bad = st.close()
    assert not bad, "unexpected error log lines:\n" + "\n".join(bad)


def count(pg, sql):
    return int(pg.val(sql))


def test_old_rows_go_young_rows_stay(stack):
    pg = stack.pg
    # written right after the start: the first pass comes 10 s after it
    pg.sql(f"""
        INSERT INTO rmsync.sync_log (at, level, representative_id, action, message)
        SELECT now() - interval '100 days' - g * interval '1 second', 'info', 'ALICE', 'test',
               'retention-old ' || g FROM generate_series(1, {OLD_LOG_ROWS}) g;
        INSERT INTO rmsync.sync_log (at, level, representative_id, action, message) VALUES
            (now() - interval '31 days', 'info', 'ALICE', 'test', 'retention-old 31d'),
            (now() - interval '29 days', 'info', 'ALICE', 'test', 'retention-young 29d'),
            (now(), 'info', 'ALICE', 'test', 'retention-young now');
        INSERT INTO rmsync.notification (subscription_id, kind, change_type, event_id, state,
                                         received_at, done_at) VALUES
            ('ret-sub', 'change', 'updated', 'ret-done-3d', 'done',
             now() - interval '3 days', now() - interval '3 days'),
            ('ret-sub', 'change', 'updated', 'ret-done-1d', 'done',
             now() - interval '1 day', now() - interval '1 day'),
            ('ret-sub', 'change', 'updated', 'ret-failed-3d', 'failed',
             now() - interval '3 days', now() - interval '3 days'),
            ('ret-sub', 'change', 'updated', 'ret-failed-31d', 'failed',
             now() - interval '31 days', now() - interval '31 days');
        INSERT INTO rmsync.request (kind, representative_id, state, requested_at, done_at, result)
        VALUES ('initial_sync', 'ALICE', 'done', now() - interval '3 days',
                now() - interval '3 days', 'ret-request-3d'),
               ('initial_sync', 'ALICE', 'done', now() - interval '1 hour',
                now() - interval '1 hour', 'ret-request-1h');
    """)
    deadline = time.time() + 60
    while time.time() < deadline:
        if "RMS00472" in stack.httpd.log_text():
            break
        time.sleep(0.5)
    log = stack.httpd.log_text()
    m = re.search(r"RMS00472: sync runner: retention removed (\d+) rows", log)
    assert m, log[-3000:]
    # 12,000 + 1 log rows + the 3-day done item + the 31-day failed item + the 3-day request
    assert int(m.group(1)) == OLD_LOG_ROWS + 4, m.group(0)
    assert "older than 30 days (RMSyncLogRetention)" in log
    assert count(pg, "SELECT count(*) FROM rmsync.sync_log WHERE message LIKE 'retention-old %'") == 0
    assert sorted(r[0] for r in pg.sql(
        "SELECT message FROM rmsync.sync_log WHERE message LIKE 'retention-young %'")) == \
        ["retention-young 29d", "retention-young now"]
    assert sorted(r[0] for r in pg.sql(
        "SELECT event_id FROM rmsync.notification WHERE subscription_id = 'ret-sub'")) == \
        ["ret-done-1d", "ret-failed-3d"]
    assert [r[0] for r in pg.sql(
        "SELECT result FROM rmsync.request WHERE result LIKE 'ret-request-%'")] == \
        ["ret-request-1h"]
    # once: a pass ends with one line, the next pass is a day away
    time.sleep(3)
    assert stack.httpd.log_text().count("RMS00472") == 1
