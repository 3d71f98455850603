"""Who and when the engine syncs (issue 4): SYNC_MASTER gate, service state, permission set,
Sync Active. Real Apache + PostgreSQL + the Graph simulator."""
import os

import pytest

from engine_stack import EngineStack, ALICE, BOB, CAROL

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# plus the database layer's connection warnings (RMS00200-00202) and ours (RMS00421) of the outage test
EXPECTED = {"RMS00003", "RMS00430", "RMS00200", "RMS00201", "RMS00202", "RMS00421"}


@pytest.fixture(scope="module")
def st():
    # a fresh install: SYNC_MASTER locked and inactive; ALICE, BOB active; CAROL active but
    # her grant is removed below; DAVE never had the permission set
    s = EngineStack(cycle=1, active=("ALICE", "BOB", "CAROL", "DAVE"), master_ready=False)
    s.httpd.allow = set(EXPECTED)
    # CAROL loses her EXCHANGE_SYNC_USER grant (nothing syncs before the first test unlocks
    # SYNC_MASTER, so she never synced)
    s.pg.sql("DELETE FROM crm.permission_set_grant WHERE identity = 'CAROL'")
    yield s
    bad = s.close()
    assert not bad, "unexpected error log lines:\n" + "\n".join(bad)


def gate_lines(st):
    # one entry per occurrence: a repeated gate error is counted on its row (repeat_count)
    return [r for r in st.log_rows("action = 'gate'") for _ in range(r.get("repeat_count") or 1)]


def test_sync_master_locked_then_unlocked(st):
    assert st.pg.val("SELECT rmsync.master_user_state()") == "locked"
    ev = st.new_event(ALICE, "Before unlock", day=2)
    no = st.new_activity("ALICE", desc="CRM text", day=2)
    st.link(no, ev)
    version = st.activity(no)["row_version"]
    # the runner says why it does nothing: once per cycle, in the sync log and the text log
    st.wait_for(lambda: len(gate_lines(st)) >= 2, what="gate error lines")
    rows = gate_lines(st)
    assert rows[0]["level"] == "error"
    assert "SYNC_MASTER is locked" in rows[0]["message"]
    assert "UpdateSyncMasterUser.sql" in rows[0]["message"]
    assert "RMS00430" in rows[0]["message"]
    with open(st.log_file) as f:
        assert "UpdateSyncMasterUser.sql" in f.read()
    # nothing synced meanwhile
    st.sim.user_patch(ALICE, ev["id"], {"subject": "Changed while locked"})
    n = len(gate_lines(st))
    st.wait_for(lambda: len(gate_lines(st)) >= n + 2, what="two more cycles")
    assert st.activity(no)["row_version"] == version
    assert st.link_row(no)["applied_hash"] is None
    assert st.pg.val("SELECT count(*) FROM rmsync.rep_state WHERE last_attempt_at IS NOT NULL") \
        == "0"

    # the admin runs the manual deploy step: unlocked but still inactive -> still nothing
    st.pg.apply_file(os.path.join(TOP, "sql", "manualdeploy", "UpdateSyncMasterUser.sql"))
    st.wait_for(lambda: "is inactive" in gate_lines(st)[-1]["message"], what="inactive line")
    assert st.activity(no)["row_version"] == version
    # ... and activates the user: the pending change arrives
    st.pg.apply_file(os.path.join(TOP, "sql", "manualdeploy", "ActivateSyncMasterUser.sql"))
    st.wait_for(lambda: st.activity(no)["description"] == "Changed while locked",
                what="pending change applied")
    assert st.activity(no)["modified_by"] == "SYNC_MASTER"
    n = len(gate_lines(st))
    st.wait_pass("ALICE", n=2)
    assert len(gate_lines(st)) == n                       # no more gate errors


def runner_time(st):
    return st.httpd.status()["runner"]["heartbeat_usec"]


def test_service_stop_and_start(st):
    no, ev = st.new_linked(ALICE, "Service", day=3)
    st.pg.sql("UPDATE rmsync.service_state SET running = false, changed_by = 'test'")
    st.wait_for(lambda: st.httpd.status()["runner"]["state"] == "paused", what="runner paused")
    before = st.rep_state("ALICE")["last_attempt_at"]
    st.sim.user_patch(ALICE, ev["id"], {"subject": "Service 2"})
    # the runner keeps its heartbeat while stopped, but attempts nothing for 3+ cycles
    t0 = runner_time(st)
    st.wait_for(lambda: runner_time(st) >= t0 + 3.5e6, what="runner heartbeat 3.5 s on")
    assert st.httpd.status()["runner"]["alive"]
    assert st.activity(no)["description"] == "Service"
    assert st.rep_state("ALICE")["last_attempt_at"] == before
    st.pg.sql("UPDATE rmsync.service_state SET running = true, changed_by = 'test'")
    st.wait_for(lambda: st.activity(no)["description"] == "Service 2", what="resumed")


def test_permission_set_and_sync_active(st):
    # BOB syncs; CAROL loses the grant; DAVE never had it; BOB switches Sync Active off later
    nb, evb = st.new_linked(BOB, "Bob's", day=3)
    evc = st.new_event(CAROL, "Carol's", day=3)
    nc = st.new_activity("CAROL", desc="Carol CRM", day=3)
    st.link(nc, evc, "CAROL")
    evd_no = st.new_activity("DAVE", desc="Dave CRM", day=3)
    st.pg.sql("INSERT INTO rmsync.event_link (activity_no, representative_id, event_id)"
              " VALUES ($1, 'DAVE', 'dave-event-id')", evd_no)
    st.sim.user_patch(CAROL, evc["id"], {"subject": "Carol changed"})
    st.wait_pass("BOB", n=2)
    assert st.activity(nc)["description"] == "Carol CRM"
    assert st.link_row(nc)["applied_hash"] is None
    for rep in ("CAROL", "DAVE"):
        assert st.pg.val("SELECT last_attempt_at FROM rmsync.rep_state"
                         " WHERE representative_id = $1", rep) is None
    assert st.pg.val("SELECT count(*) FROM rmsync.sync_log WHERE representative_id"
                     " IN ('CAROL', 'DAVE')") == "0"
    # Sync Active off: BOB's later Outlook change does not arrive
    st.set_active("BOB", False)
    st.wait_pass("ALICE", n=1)
    st.sim.user_patch(BOB, evb["id"], {"subject": "Bob changed"})
    st.wait_pass("ALICE", n=2)
    assert st.activity(nb)["description"] == "Bob's"
    # on again: it does
    st.set_active("BOB", True)
    st.wait_for(lambda: st.activity(nb)["description"] == "Bob changed", what="BOB resumed")


def test_database_down_and_back(st):
    # PostgreSQL goes away: the runner keeps its heartbeat, says it waits for the database, and
    # picks up the Outlook change made meanwhile once the database is back
    no, ev = st.new_linked(ALICE, "DB outage", day=6)
    st.pg.stop()
    try:
        st.wait_for(lambda: st.httpd.status()["runner"]["state"] == "db_down",
                    what="runner waits for the database")
        st.sim.user_patch(ALICE, ev["id"], {"subject": "DB outage over"})
        t0 = runner_time(st)
        st.wait_for(lambda: runner_time(st) >= t0 + 2e6, what="runner alive while DB down")
    finally:
        st.pg.start()
    st.wait_for(lambda: st.activity(no)["description"] == "DB outage over", timeout=30,
                what="change applied after the outage")
    assert st.log_count("activity_no = $1 AND message LIKE '%DB outage over%'", no) == 1
