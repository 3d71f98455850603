"""Outlook -> CRM apply rules, end to end (issue 4).

Real Apache (its sync runner), PostgreSQL with the demo CRM, the Graph simulator. The tests act
as the user editing Outlook through the simulator and poll the database.
"""
import datetime
import os

import pytest

from engine_stack import EngineStack, ALICE, BOB, utc, pg_time
from lib.httpd import proc_info

# Warnings we provoke on purpose: the Graph client reports the malformed-response fault.
EXPECTED = {"RMS00003", "RMS00320", "RMS00348", "RMS00312", "RMS00313", "RMS00314", "RMS00315"}


@pytest.fixture(scope="module")
def st():
    s = EngineStack(cycle=1, active=("ALICE",))
    s.httpd.allow = set(EXPECTED)
    yield s
    bad = s.close()
    assert not bad, "unexpected error log lines:\n" + "\n".join(bad)


def test_move_rename_attendees(st):
    no, ev = st.new_linked(ALICE, "Quarterly call", day=3)
    a = st.activity(no)
    # the first apply makes the activity match the appointment it was linked to
    assert a["description"] == "Quarterly call"
    assert a["modified_by"] == "SYNC_MASTER"
    assert a["start_time"] == pg_time(ev["start"])

    # move it
    start, end = utc(5, 14), utc(5, 15, 30)
    st.sim.user_patch(ALICE, ev["id"], {"start": start, "end": end})
    st.wait_for(lambda: st.activity(no)["start_time"] == pg_time(start), what="moved start")
    assert st.activity(no)["end_time"] == pg_time(end)

    # rename it
    st.sim.user_patch(ALICE, ev["id"], {"subject": "Quarterly call (renamed)"})
    st.wait_for(lambda: st.activity(no)["description"] == "Quarterly call (renamed)",
                what="renamed")

    # an attendee who is a CRM contact (e-mail matched case-insensitively) -> contact
    assert st.contacts(no) == []
    st.sim.user_patch(ALICE, ev["id"], {"attendees": [
        {"type": "required", "emailAddress": {"address": "ANN.Customer@Example.com"}}]})
    st.wait_for(lambda: st.contacts(no) == ["ANN"], what="contact ANN added")

    # an attendee who is a representative -> activity representative (main stays ALICE)
    st.sim.user_patch(ALICE, ev["id"], {"attendees": [
        {"type": "required", "emailAddress": {"address": "ann.customer@example.com"}},
        {"type": "required", "emailAddress": {"address": BOB}}]})
    st.wait_for(lambda: st.reps(no) == ["BOB"], what="representative BOB added")
    assert st.activity(no)["main_representative_id"] == "ALICE"
    assert st.contacts(no) == ["ANN"]

    # an unknown attendee changes nothing: no write, no log line
    version = st.activity(no)["row_version"]
    logs = st.log_count("activity_no = $1", no)
    st.sim.user_patch(ALICE, ev["id"], {"attendees": [
        {"type": "required", "emailAddress": {"address": "ann.customer@example.com"}},
        {"type": "required", "emailAddress": {"address": BOB}},
        {"type": "optional", "emailAddress": {"address": "stranger@nowhere.example"}}]})
    st.wait_for(lambda: "stranger@nowhere.example" in (st.link_row(no)["applied_attendees"] or ""),
                what="unknown attendee seen")
    assert st.activity(no)["row_version"] == version
    assert st.contacts(no) == ["ANN"] and st.reps(no) == ["BOB"]
    assert st.log_count("activity_no = $1", no) == logs

    # removing an attendee in Outlook removes the contact
    st.sim.user_patch(ALICE, ev["id"], {"attendees": [
        {"type": "required", "emailAddress": {"address": BOB}}]})
    st.wait_for(lambda: st.contacts(no) == [], what="contact ANN removed")
    assert st.reps(no) == ["BOB"]

    # every change is in the sync log as SYNC_MASTER's update, with the Graph request id
    rows = st.log_rows("activity_no = $1 AND action = 'update'", no)
    assert len(rows) >= 5
    assert all(r["graph_request_id"] for r in rows)
    assert any("+contact ANN" in r["message"] for r in rows)
    assert any("+representative BOB" in r["message"] for r in rows)
    # ... and in the text log file (RMSyncLogFile)
    with open(st.log_file) as f:
        text = f.read()
    assert f"activity={no}" in text and "Quarterly call (renamed)" in text
    # the status page shows the representative's live state from shm
    slot = st.wait_for(lambda: (st.rep_status("ALICE") or {}).get("last_success")
                       and st.rep_status("ALICE"), what="ALICE's slot")
    assert slot["state"] in ("ok", "syncing") and slot["held"] is False
    assert slot["mailbox"] == ALICE
    counters = st.httpd.status()["counters"]
    assert counters["events_applied"] >= 5 and counters["delta_passes"] >= 1


def test_idempotent_second_pass_writes_nothing(st):
    no, ev = st.new_linked(ALICE, "Idempotence", day=4)
    st.sim.user_patch(ALICE, ev["id"], {"subject": "Idempotence 2"})
    st.wait_for(lambda: st.activity(no)["description"] == "Idempotence 2", what="applied")
    version = st.activity(no)["row_version"]
    last_id = int(st.pg.val("SELECT coalesce(max(id), 0) FROM rmsync.sync_log"))
    # the same Outlook state again: Exchange touches the item (new changeKey, delta reports it)
    # and an Initial Sync re-reads the whole mailbox: neither writes nor logs anything
    st.sim.request("POST", f"/_sim/users/{ALICE}/events/{ev['id']}/bump")
    st.wait_pass("ALICE", n=2)
    st.pg.sql("INSERT INTO rmsync.request (kind, representative_id, requested_by)"
              " VALUES ('initial_sync', 'ALICE', 'test')")
    st.wait_for(lambda: st.pg.val("SELECT state FROM rmsync.request WHERE kind = 'initial_sync'"
                                  " ORDER BY id DESC LIMIT 1") == "done", what="initial sync")
    st.wait_pass("ALICE", n=1)
    assert st.activity(no)["row_version"] == version
    added = st.log_rows("id > $1", last_id)
    # only the initial sync's own requested/started/completed lines were added
    assert added and all(r["action"] == "initial-sync" for r in added), added
    assert not [r for r in added if r["activity_no"]]


def test_unlinked_appointments_never_touch_activities(st):
    count = int(st.pg.val("SELECT count(*) FROM crm.business_activity"))
    last = st.pg.val("SELECT max(modified_at) FROM crm.business_activity")
    a = st.new_event(ALICE, "Private dentist", day=2, attendees=["ann.customer@example.com"])
    b = st.new_event(ALICE, "Gym", day=3)
    st.wait_pass("ALICE", n=2)
    st.sim.user_patch(ALICE, a["id"], {"subject": "Dentist (moved)", "start": utc(6, 10),
                                       "end": utc(6, 11)})
    st.sim.user_delete(ALICE, b["id"])
    c = st.new_event(ALICE, "Lunch", day=4, attendees=["bob@demo.rmsync.test"])
    st.wait_pass("ALICE", n=2)
    assert int(st.pg.val("SELECT count(*) FROM crm.business_activity")) == count
    assert st.pg.val("SELECT max(modified_at) FROM crm.business_activity") == last
    for ev in (a, b, c):
        assert st.log_count("event_id = $1", ev["id"]) == 0


def test_cancelled_appointment_marks_activity_cancelled(st):
    no, ev = st.new_linked(ALICE, "Will be cancelled", day=5)
    st.sim.user_patch(ALICE, ev["id"], {"isCancelled": True})
    st.wait_for(lambda: st.activity(no)["status"] == "Cancelled", what="cancelled")
    assert st.link_row(no) is not None                   # still linked: the event exists
    assert st.log_count("activity_no = $1 AND action = 'cancel'", no) == 1


def test_deleted_appointment_deletes_activity(st):
    no, ev = st.new_linked(ALICE, "Will be deleted", day=6,
                           attendees=["ann.customer@example.com"])
    assert st.contacts(no) == ["ANN"]
    st.sim.user_delete(ALICE, ev["id"])
    st.wait_for(lambda: st.activity(no) is None, what="activity deleted")
    assert st.link_row(no) is None
    rows = st.log_rows("activity_no = $1 AND action = 'delete'", no)
    assert len(rows) == 1 and "deleted in Outlook" in rows[0]["message"]


def test_moved_out_of_window_is_not_a_delete(st):
    # calendarView delta reports an event moved outside the window as @removed: the engine
    # asks Graph (GET) and applies the new state instead of deleting
    no, ev = st.new_linked(ALICE, "Far future", day=7)
    start, end = utc(400, 9), utc(400, 10)
    st.sim.user_patch(ALICE, ev["id"], {"start": start, "end": end})
    st.wait_for(lambda: st.activity(no)["start_time"] == pg_time(start), what="moved far")
    assert st.link_row(no) is not None


def test_malformed_graph_field_is_logged_not_fatal(st):
    no, ev = st.new_linked(ALICE, "Malformed", day=8)
    st.sim.fault("malformed", field="start", mode="number", count=3,
                 match={"path_regex": "calendarView/delta"})
    st.sim.user_patch(ALICE, ev["id"], {"subject": "Malformed 2"})
    st.wait_for(lambda: st.log_count("message LIKE '%RMS00410%' AND action = 'skip'") > 0,
                what="skip logged")
    st.sim.clear_faults()
    # the runner lives on: the next change arrives
    st.sim.user_patch(ALICE, ev["id"], {"subject": "Malformed 3"})
    st.wait_for(lambda: st.activity(no)["description"] == "Malformed 3", what="next change")


def test_refused_item_does_not_hold_up_its_page(st):
    # A delta page is written in one go; an item the CRM refuses must still be skipped alone:
    # the others of the same page applied once, the refused one logged once and left as it was.
    nos, evs = [], []
    for i, day in enumerate((13, 14, 15)):
        no, ev = st.new_linked(ALICE, f"Page item {i}", day=day)
        nos.append(no)
        evs.append(ev)
    versions = [st.activity(no)["row_version"] for no in nos]
    # the CRM's own business rule (not ours) refuses one of the writes
    st.pg.sql("CREATE OR REPLACE FUNCTION crm.test_refuse() RETURNS trigger LANGUAGE plpgsql AS"
              " $$ BEGIN IF NEW.description LIKE '%[refuse]%' THEN"
              " RAISE EXCEPTION 'CRM rule: no [refuse] in descriptions'; END IF;"
              " RETURN NEW; END $$")
    st.pg.sql("CREATE TRIGGER test_refuse BEFORE UPDATE ON crm.business_activity"
              " FOR EACH ROW EXECUTE FUNCTION crm.test_refuse()")
    try:
        # all three edits land in one delta page: made while the service is stopped
        st.pg.sql("UPDATE rmsync.service_state SET running = false, changed_by = 'test'")
        st.wait_for(lambda: st.httpd.status()["runner"]["state"] == "paused",
                    what="runner paused")
        for ev, subject in zip(evs, ("Page item 0 v2", "Page item 1 [refuse]",
                                     "Page item 2 v2")):
            st.sim.user_patch(ALICE, ev["id"], {"subject": subject})
        st.pg.sql("UPDATE rmsync.service_state SET running = true, changed_by = 'test'")
        st.wait_for(lambda: st.activity(nos[0])["description"] == "Page item 0 v2"
                    and st.activity(nos[2])["description"] == "Page item 2 v2",
                    what="the page's good items")
        st.wait_pass("ALICE", 2)
        assert st.activity(nos[1])["description"] == "Page item 1"
        assert st.activity(nos[1])["row_version"] == versions[1]
        # written once each (a rolled back first attempt leaves no trace)
        assert [st.activity(nos[i])["row_version"] for i in (0, 2)] == [versions[0] + 1,
                                                                        versions[2] + 1]
        for i in (0, 2):
            assert st.log_count("activity_no = $1 AND action = 'update' AND message LIKE"
                                " '%Page item ' || $2 || ' v2%'", nos[i], str(i)) == 1
        errs = st.log_rows("activity_no = $1 AND level = 'error'", nos[1])
        assert len(errs) == 1, errs                        # once, not on every pass
        assert "CRM rule: no [refuse] in descriptions" in errs[0]["message"]
        assert "RMS00402" in errs[0]["message"]
    finally:
        st.pg.sql("DROP TRIGGER IF EXISTS test_refuse ON crm.business_activity")


def test_linked_series_master_follows_series_edits(st):
    # a weekly series linked by its master id: calendarView delta only shows occurrences, the
    # engine applies the master's state when one of them changes
    start = utc(1, 7)
    day = datetime.datetime.strptime(start["dateTime"][:10], "%Y-%m-%d").strftime("%A").lower()
    body = {"subject": "Weekly standup", "start": start, "end": utc(1, 7, 30),
            "recurrence": {"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [day]},
                           "range": {"type": "numbered", "startDate": start["dateTime"][:10],
                                     "numberOfOccurrences": 4}}}
    master = st.sim.user_create(ALICE, body)
    assert master["type"] == "seriesMaster"
    no = st.new_activity("ALICE", desc="Series in CRM", day=1)
    st.link(no, master)
    st.wait_for(lambda: st.activity(no)["description"] == "Weekly standup", what="first apply")
    st.sim.user_patch(ALICE, master["id"], {"subject": "Weekly standup (new room)"})
    st.wait_for(lambda: st.activity(no)["description"] == "Weekly standup (new room)",
                what="series rename applied")
    assert st.log_count("activity_no = $1 AND action = 'update'", no) == 2


def test_delete_policy_cancel(st):
    st.reconfigure("RMSyncDeletePolicy cancel")
    no, ev = st.new_linked(ALICE, "Cancel on delete", day=9)
    st.sim.user_delete(ALICE, ev["id"])
    st.wait_for(lambda: st.link_row(no) is None, what="unlinked")
    a = st.activity(no)
    assert a["status"] == "Cancelled" and a["description"] == "Cancel on delete"
    assert st.log_count("activity_no = $1 AND action = 'cancel'", no) == 1


def test_delete_policy_unlink_and_cancel_policy_delete(st):
    st.reconfigure("RMSyncDeletePolicy unlink\nRMSyncCancelPolicy delete")
    no, ev = st.new_linked(ALICE, "Unlink on delete", day=10)
    version = st.activity(no)["row_version"]
    st.sim.user_delete(ALICE, ev["id"])
    st.wait_for(lambda: st.link_row(no) is None, what="unlinked")
    assert st.activity(no)["row_version"] == version          # kept as it was
    assert st.log_count("activity_no = $1 AND action = 'unlink'", no) == 1
    # isCancelled with RMSyncCancelPolicy delete: the activity goes
    no2, ev2 = st.new_linked(ALICE, "Delete on cancel", day=11)
    st.sim.user_patch(ALICE, ev2["id"], {"isCancelled": True})
    st.wait_for(lambda: st.activity(no2) is None, what="deleted on cancel")
    assert st.log_count("activity_no = $1 AND action = 'delete'", no2) == 1


def test_sync_log_file_survives_logrotate_and_pipes(st):
    no, ev = st.new_linked(ALICE, "Log file", day=12)
    # logrotate moves the file away: the next line goes to a new file at the configured path
    os.rename(st.log_file, st.log_file + ".1")
    st.sim.user_patch(ALICE, ev["id"], {"subject": "Log file rotated"})
    st.wait_for(lambda: os.path.exists(st.log_file)
                and "Log file rotated" in open(st.log_file).read(), what="reopened log")
    # a piped log ("|command", like Apache's): restarted when the command dies
    piped = os.path.join(st.tmp, "piped.log")
    st.log_target = f"|exec /bin/cat >> {piped}"
    st.reconfigure(st.extra)
    st.sim.user_patch(ALICE, ev["id"], {"subject": "Log file piped"})
    st.wait_for(lambda: os.path.exists(piped) and "Log file piped" in open(piped).read(),
                what="piped line")
    pids = st.wait_for(lambda: cat_pids(st), what="the piped command")
    for pid in pids:
        os.kill(pid, 9)
    st.sim.user_patch(ALICE, ev["id"], {"subject": "Log file piped again"})
    st.wait_for(lambda: "Log file piped again" in open(piped).read(), what="after restart")


def cat_pids(st):
    """The runner's piped log command (its child /bin/cat)."""
    runners = set(st.httpd.runner_pids())
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            info = proc_info(int(d))
            if info and info[2] == "cat" and info[0] in runners:
                out.append(int(d))
    return out
