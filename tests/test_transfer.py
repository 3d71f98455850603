"""CRM -> Outlook transfer, master categories (issue 6), end to end.

Real Apache with mod_rmsync, a private PostgreSQL cluster (demo data) and the Graph simulator.
The stack is started once per module (`stack`); test_linking.py imports the same fixture.
Every wait polls the database or the simulator; nothing sleeps a fixed time.
"""
import datetime
import json
import os
import re
import sys
import time

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TESTS)
sys.path.insert(0, os.path.join(TESTS, "graphsim"))

from engine_stack import ALICE, BOB, CAROL, CLIENT, SECRET, TENANT, EngineStack  # noqa: E402
from lib.httpd import wait_for  # noqa: E402,F401  (test_linking.py imports it from here)

CATEGORY = "CRM Business Activity"
PROP_ID = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name RMSyncActivityNo"
# Lines we provoke on purpose: Graph-level failure reports (RMS00312) of the faults we inject,
# the one master-category permission warning, and the linking API's refused CSRF tokens
# (test_linking.py shares this stack).
EXPECTED_IDS = {"RMS00312", "RMS00820", "RMS00836"}


def transfer_conf(attendees=False):
    """The RMSync* lines of this stack beyond EngineStack's base configuration."""
    return "\n".join([
        f'RMSyncMasterCategory "{CATEGORY}" preset4',
        "RMSyncActivityURL https://crm.example.com/activity/%s",
        f"RMSyncTransferAttendees {'On' if attendees else 'Off'}",
    ])


@pytest.fixture(scope="module")
def stack():
    # SYNC_MASTER ready, ALICE and BOB syncing (CAROL is left for the permission test); new
    # activities are flagged for transfer and start 30 h from now unless a test says otherwise
    st = EngineStack(cycle=10, extra=transfer_conf(), active=("ALICE", "BOB"),
                     seed=os.path.join(TESTS, "graphsim", "demo-seed.json"),
                     sim_config={"allow_http_notification_urls": True}, notify=True,
                     allow=EXPECTED_IDS, activity_defaults={"flag": True, "start_h": 30})
    try:
        yield st
    finally:
        bad = st.close()
    assert not bad, "unexpected error log lines:\n" + "\n".join(bad)


# ---- transfer ---------------------------------------------------------------------------------

def test_flagged_activity_is_transferred_once_with_all_fields(stack):
    no = stack.new_activity(desc="Kick-off <Contoso> \"Q4\"", contacts=["ANN"], reps=["BOB"])
    link = wait_for(lambda: stack.link_row(no), what="the transfer link")
    assert link["linked_via"] == "transfer"
    assert link["representative_id"] == "ALICE"
    evs = stack.events_for(ALICE, no, PROP_ID)
    assert len(evs) == 1, evs
    ev = evs[0]
    assert ev["immutableId"] == link["event_id"]
    assert ev["subject"] == "Kick-off <Contoso> \"Q4\""
    act = stack.activity(no)
    assert ev["start"]["dateTime"].startswith(act["start"])
    assert ev["end"]["dateTime"].startswith(act["end"])
    assert [c.lower() for c in ev["categories"]] == [CATEGORY.lower()]
    assert re.fullmatch(r"rmsync-[0-9a-f]{32}-%d" % no, ev["transactionId"]), ev["transactionId"]
    assert not ev["attendees"], "attendees are off by default (they would get invitations)"
    body = json.dumps(ev["body"])
    assert str(no) in body and f"https://crm.example.com/activity/{no}" in body
    # flag cleared in the linking transaction, as SYNC_MASTER
    assert act["transfer_to_outlook"] is False
    assert act["modified_by"] == "SYNC_MASTER"
    # no appointment for it anywhere else
    assert not stack.events_for(BOB, no, PROP_ID)
    # counted for the status page / metrics
    assert stack.httpd.status()["counters"]["events_created"] >= 1


def test_own_appointment_echo_writes_nothing(stack):
    """The appointment the transfer made comes back through delta/notifications: same state as
    the activity, so the engine writes nothing (row_version stays, no update log line)."""
    no = stack.new_activity(desc="Echo check", contacts=["BEN"])
    wait_for(lambda: stack.link_row(no), what="transfer")
    before = stack.pg.val("SELECT row_version FROM crm.business_activity WHERE activity_no = $1", no)
    rid = stack.pg.val("INSERT INTO rmsync.request (kind, representative_id) VALUES"
                       " ('initial_sync', 'ALICE') RETURNING id")
    wait_for(lambda: stack.pg.val("SELECT state FROM rmsync.request WHERE id = $1", rid)
             in ("done", "failed"), timeout=60, what="an initial sync")
    assert stack.pg.val("SELECT state FROM rmsync.request WHERE id = $1", rid) == "done"
    assert stack.pg.val("SELECT row_version FROM crm.business_activity WHERE activity_no = $1",
                        no) == before
    assert stack.pg.val("SELECT count(*) FROM crm.business_activity_contact"
                        " WHERE activity_no = $1", no) == "1", "the contact must stay"
    assert stack.pg.val("SELECT count(*) FROM rmsync.sync_log WHERE activity_no = $1"
                        " AND action NOT IN ('transfer')", no) == "0"


def test_transfer_is_prompt(stack):
    """NOTIFY 'transfer' wakes the runner: a flagged activity is transferred without anyone
    asking for it. A generous deadline (loaded CI machine), not a speed target: how fast is
    measured in bench/."""
    no = stack.new_activity(desc="Prompt transfer")
    wait_for(lambda: stack.link_row(no), timeout=60, what="a prompt transfer")


def test_unflagged_activity_is_not_transferred(stack):
    no = stack.new_activity(desc="Stay in CRM", flag=False)
    marker = stack.new_activity(desc="Marker after")
    wait_for(lambda: stack.link_row(marker), what="the marker's transfer")
    assert stack.link_row(no) is None
    assert not stack.events_for(ALICE, no, PROP_ID)


def test_lost_create_response_still_one_appointment(stack):
    sim = stack.sim
    sim.fault("drop_response", count=1,
              match={"method": "POST", "path_regex": r"/users/[^/?]+/events$"})
    try:
        no = stack.new_activity(desc="Response lost")
        link = wait_for(lambda: stack.link_row(no), timeout=40, what="link after a lost response")
        assert sim.counters()["faults_injected"].get("drop_response", 0) >= 1, "never fired"
        evs = stack.events_for(ALICE, no, PROP_ID)
        assert len(evs) == 1, [e["immutableId"] for e in evs]
        assert evs[0]["immutableId"] == link["event_id"]
        assert int(stack.pg.val("SELECT count(*) FROM rmsync.event_link WHERE activity_no = $1",
                                no)) == 1
    finally:
        sim.clear_faults()


def test_create_timeout_still_one_appointment(stack):
    """The create outlives the client's timeout (Graph still makes the event): the retry finds
    or replays it; one appointment, one link."""
    sim = stack.sim
    stack.reconfigure(transfer_conf() + "\nRMSyncGraphTimeouts 2 2")
    try:
        sim.fault("latency", ms=3500, count=1,
                  match={"method": "POST", "path_regex": r"/users/[^/?]+/events$"})
        no = stack.new_activity(desc="Create times out")
        link = wait_for(lambda: stack.link_row(no), timeout=40, what="link after a timed-out create")
        assert sim.counters()["faults_injected"].get("latency", 0) >= 1, "never fired"
        # the slow first create has finished by now too
        time.sleep(2)
        evs = stack.events_for(ALICE, no, PROP_ID)
        assert len(evs) == 1, [e["immutableId"] for e in evs]
        assert evs[0]["immutableId"] == link["event_id"]
    finally:
        sim.clear_faults()
        stack.reconfigure(transfer_conf())


def test_failed_create_is_retried_with_backoff(stack):
    sim = stack.sim
    # a 400 is not retried inside the Graph client: the transfer backs off and tries again
    sim.fault("status", status=400, count=1, code="ErrorInvalidRequest",
              match={"method": "POST", "path_regex": r"/users/[^/?]+/events$"})
    try:
        no = stack.new_activity(desc="Graph down for a while")
        st = wait_for(lambda: stack.pg.json("SELECT * FROM rmsync.transfer_state"
                                            " WHERE activity_no = $1", no),
                      what="a recorded failed attempt")[0]
        assert int(st["attempts"]) >= 1 and st["last_error"]
        assert stack.link_row(no) is None
    finally:
        sim.clear_faults()
    wait_for(lambda: stack.link_row(no), timeout=40, what="the retried transfer")
    assert len(stack.events_for(ALICE, no, PROP_ID)) == 1
    assert not stack.pg.json("SELECT * FROM rmsync.transfer_state WHERE activity_no = $1", no)


def test_transferred_activity_sync_fields_locked_in_crm(stack):
    from lib.pg import PgError
    no = stack.new_activity(desc="Locked after transfer")
    wait_for(lambda: stack.link_row(no), what="transfer")
    with pytest.raises(PgError) as e:
        stack.pg.sql("UPDATE crm.business_activity SET description = 'edited in CRM'"
                     " WHERE activity_no = $1", no, crm_user="ALICE")
    assert e.value.sqlstate == "RMS01"
    stack.pg.sql("UPDATE crm.business_activity SET notes = 'fine' WHERE activity_no = $1", no,
                 crm_user="ALICE")


def test_outlook_move_updates_transferred_activity(stack):
    no = stack.new_activity(desc="Move me in Outlook")
    link = wait_for(lambda: stack.link_row(no), what="transfer")
    ev = stack.sim.user_event(ALICE, link["event_id"])
    day = (datetime.datetime.now(datetime.timezone.utc)
           + datetime.timedelta(days=5)).strftime("%Y-%m-%d")
    new_start = f"{day}T10:00:00"
    stack.sim.user_patch(ALICE, link["event_id"], {
        "start": {"dateTime": new_start, "timeZone": "UTC"},
        "end": {"dateTime": f"{day}T11:30:00", "timeZone": "UTC"},
        "subject": ev["subject"] + " (moved)"})
    act = wait_for(lambda: (lambda a: a if a["start"] == new_start else None)(stack.activity(no)),
                   timeout=30, what="the Outlook move to reach the activity")
    assert act["end"] == f"{day}T11:30:00"
    assert act["description"] == "Move me in Outlook (moved)"
    assert act["modified_by"] == "SYNC_MASTER"


def test_attendees_only_when_configured(stack):
    stack.reconfigure(transfer_conf(attendees=True))
    try:
        no = stack.new_activity(desc="With attendees", contacts=["ANN", "CLARA"], reps=["BOB"])
        link = wait_for(lambda: stack.link_row(no), timeout=30, what="transfer with attendees")
        ev = stack.sim.user_event(ALICE, link["event_id"])
        addrs = sorted(a["emailAddress"]["address"].lower() for a in ev["attendees"])
        assert addrs == ["ann.customer@example.com", "bob@demo.rmsync.test",
                         "clara.client@example.com"]
    finally:
        stack.reconfigure(transfer_conf(attendees=False))


# ---- master categories -------------------------------------------------------------------------

def _has_category(sim, user):
    cats = sim.ctl("GET", f"users/{user}/categories")["value"]
    return [c for c in cats if c["displayName"].lower() == CATEGORY.lower()]


def test_master_category_created_once_per_mailbox(stack):
    for user, rep in ((ALICE, "ALICE"), (BOB, "BOB")):
        wait_for(lambda: _has_category(stack.sim, user), what=f"category in {user}")
        wait_for(lambda: stack.pg.val("SELECT category_state FROM rmsync.rep_state"
                                      " WHERE representative_id = $1", rep) == "created",
                 what="category_state created")
        cats = _has_category(stack.sim, user)
        assert len(cats) == 1 and cats[0]["color"] == "preset4"


def test_category_permission_withheld_warns_once(stack):
    sim, pg = stack.sim, stack.pg
    sim.app_set(CLIENT, permissions=["Calendars.ReadWrite"])
    sim.ctl("POST", "tokens/revoke")

    def carol_warnings():
        return [l for l in stack.error_lines("RMS00820") if "mailbox of CAROL" in l]

    try:
        pg.sql("INSERT INTO rmsync.rep_state (representative_id, sync_active) VALUES ('CAROL', true)"
               " ON CONFLICT (representative_id) DO UPDATE SET sync_active = true")
        wait_for(lambda: pg.val("SELECT category_state FROM rmsync.rep_state"
                                " WHERE representative_id = 'CAROL'") == "forbidden",
                 timeout=30, what="category_state forbidden")
        # the sync goes on for CAROL: a transfer works
        no = stack.new_activity(rep="CAROL", desc="Carol without categories")
        wait_for(lambda: stack.link_row(no), timeout=30, what="CAROL's transfer")
        no2 = stack.new_activity(rep="CAROL", desc="Carol again")
        wait_for(lambda: stack.link_row(no2), timeout=30, what="CAROL's second transfer")
        # CAROL's lines only: run alone, ALICE's and BOB's first check may meet the 403 too
        lines = carol_warnings()
        assert len(lines) == 1, lines
        assert "MailboxSettings.ReadWrite" in lines[0] and "CAROL" in lines[0]
        # and it is the only warning about it: the Graph layer reports that 403 at info level
        assert not [l for l in stack.error_lines("masterCategories")
                    if ":warn]" in l or ":error]" in l]
        assert not _has_category(sim, CAROL)
        logged = pg.val("SELECT count(*) FROM rmsync.sync_log WHERE representative_id = 'CAROL'"
                        " AND level = 'warning' AND message LIKE '%MailboxSettings.ReadWrite%'")
        assert int(logged) == 1
        # a comeback (Sync Active off and on) checks again: one more warning for that
        # activation, and still none per cycle
        pg.sql("UPDATE rmsync.rep_state SET sync_active = false WHERE representative_id = 'CAROL'")
        pg.sql("UPDATE rmsync.rep_state SET sync_active = true WHERE representative_id = 'CAROL'")
        wait_for(lambda: len(carol_warnings()) == 2, timeout=40,
                 what="the warning for the new activation")
        wait_for(lambda: pg.val("SELECT category_state FROM rmsync.rep_state"
                                " WHERE representative_id = 'CAROL'") == "forbidden",
                 timeout=30, what="category_state forbidden again")
        # one more completed pass of CAROL (each runs the categories step): no new warning
        before = pg.val("SELECT last_success_at FROM rmsync.rep_state"
                        " WHERE representative_id = 'CAROL'")
        wait_for(lambda: pg.val("SELECT last_success_at FROM rmsync.rep_state"
                                " WHERE representative_id = 'CAROL'") != before,
                 timeout=40, what="a completed pass of CAROL")
        assert len(carol_warnings()) == 2
        assert not _has_category(sim, CAROL)
    finally:
        sim.app_set(CLIENT, permissions=["Calendars.ReadWrite", "MailboxSettings.ReadWrite"])
        sim.ctl("POST", "tokens/revoke")


# ---- master categories after a comeback (Sync Active off/on, permission set revoked/granted) ---

def _delete_category(sim, user):
    """The user deletes the master category in Outlook (a Graph DELETE, as Outlook would)."""
    tok = sim.token(TENANT, CLIENT, SECRET)
    for c in _has_category(sim, user):
        st, _, b = sim.graph("DELETE", f"/users/{user}/outlook/masterCategories/{c['id']}",
                             token=tok)
        assert st == 204, (st, b)
    assert not _has_category(sim, user)


def _category_state(pg, rep):
    return pg.val("SELECT category_state FROM rmsync.rep_state WHERE representative_id = $1", rep)


def test_master_category_rechecked_after_reactivation(stack):
    """A representative switched off and on again gets the category back (the user deleted it
    meanwhile) without an Initial Sync."""
    sim, pg = stack.sim, stack.pg
    wait_for(lambda: _category_state(pg, "BOB") == "created", timeout=30, what="BOB created")
    pg.sql("UPDATE rmsync.rep_state SET sync_active = false WHERE representative_id = 'BOB'")
    _delete_category(sim, BOB)
    pg.sql("UPDATE rmsync.rep_state SET sync_active = true WHERE representative_id = 'BOB'")
    wait_for(lambda: _has_category(sim, BOB), timeout=40, what="category back in BOB's mailbox")
    assert len(_has_category(sim, BOB)) == 1
    assert pg.val("SELECT count(*) FROM rmsync.request WHERE representative_id = 'BOB'") == "0"


def test_master_category_rechecked_after_permission_set_regranted(stack):
    """Losing EXCHANGE_SYNC_USER and getting it again counts as a comeback too."""
    sim, pg = stack.sim, stack.pg
    wait_for(lambda: _category_state(pg, "ALICE") == "created", timeout=30, what="ALICE created")
    pg.sql("DELETE FROM crm.permission_set_grant WHERE identity = 'ALICE'"
           " AND permission_set = 'EXCHANGE_SYNC_USER'")
    try:
        # the runner notices that ALICE no longer syncs (it sees grants only through the view)
        wait_for(lambda: _category_state(pg, "ALICE") == "unknown", timeout=30,
                 what="category_state reset while ALICE is not granted")
        _delete_category(sim, ALICE)
    finally:
        pg.sql("INSERT INTO crm.permission_set_grant (identity, permission_set)"
               " VALUES ('ALICE', 'EXCHANGE_SYNC_USER') ON CONFLICT DO NOTHING")
    wait_for(lambda: _has_category(sim, ALICE), timeout=40, what="category back in ALICE's mailbox")
    wait_for(lambda: _category_state(pg, "ALICE") == "created", timeout=30, what="ALICE created")
    assert len(_has_category(sim, ALICE)) == 1


# ---- live status: subscription expiry ----------------------------------------------------------

def test_status_shows_subscription_expiry(stack):
    """The runner publishes each representative's subscription expiry (rmsync.subscription) into
    shared memory; /rmsync/status JSON and the metrics show it."""
    pg = stack.pg

    def db_expiry():
        v = pg.val("SELECT extract(epoch FROM expires_at) FROM rmsync.subscription"
                   " WHERE representative_id = 'ALICE'")
        return float(v) if v else None

    def shown():
        for r in stack.httpd.status()["representatives"]:
            if r["representative_id"] == "ALICE" and r["subscription_expiry"]:
                return datetime.datetime.strptime(
                    r["subscription_expiry"][:19], "%Y-%m-%dT%H:%M:%S").replace(
                        tzinfo=datetime.timezone.utc).timestamp()
        return None

    exp = wait_for(db_expiry, timeout=30, what="ALICE's subscription")
    assert exp > time.time()
    wait_for(lambda: shown() is not None and abs(shown() - db_expiry()) < 1.5, timeout=30,
             what="the subscription expiry on the status JSON")
    # a renewal (here: the DB moved by hand, as a renew would) is followed
    pg.sql("UPDATE rmsync.subscription SET expires_at = expires_at - interval '1 hour'"
           " WHERE representative_id = 'ALICE'")
    wait_for(lambda: shown() is not None and abs(shown() - db_expiry()) < 1.5, timeout=30,
             what="the moved expiry on the status JSON")
    metrics = stack.httpd.get("/rmsync/metrics").text
    assert 'rmsync_subscription_seconds_to_expiry{representative="ALICE"}' in metrics
    # without a subscription row the slot says so: null, not a date
    pg.sql("UPDATE rmsync.rep_state SET sync_active = false WHERE representative_id = 'BOB'")
    try:
        wait_for(lambda: pg.val("SELECT count(*) FROM rmsync.subscription"
                                " WHERE representative_id = 'BOB'") == "0"
                 and [r for r in stack.httpd.status()["representatives"]
                      if r["representative_id"] == "BOB" and r["subscription_expiry"] is None],
                 timeout=30, what="BOB's subscription gone from the status JSON")
    finally:
        pg.sql("UPDATE rmsync.rep_state SET sync_active = true WHERE representative_id = 'BOB'")
