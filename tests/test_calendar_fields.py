"""Calendar fields (issue 14), end to end: private appointments (RMSyncPrivateAppointments),
all-day events in the mailbox owner's time zone (mailboxSettings/timeZone, RMSyncDefaultTimeZone)
and the organizer as an activity representative.

Real Apache (its sync runner), PostgreSQL with the demo CRM, the Graph simulator; the tests act
as the user in Outlook and poll the database.
"""
import datetime

import pytest

from engine_stack import (EngineStack, ALICE, BOB, CAROL, TENANT, CLIENT, SECRET, utc, pg_time)

CATEGORY = "CRM Business Activity"            # the default RMSyncMasterCategory
SECRET_SUBJECT = "Kidney surgery at St. Mary's"
ZONES = {ALICE: "W. Europe Standard Time", BOB: "Eastern Standard Time",
         CAROL: "W. Europe Standard Time"}


@pytest.fixture(scope="module")
def st():
    seed = {"apps": [{"tenant": TENANT, "client_id": CLIENT, "client_secret": SECRET,
                      "permissions": ["Calendars.ReadWrite", "MailboxSettings.ReadWrite"]}],
            "users": [{"mail": m, "displayName": m.split("@")[0].title(), "timeZone": ZONES[m]}
                      for m in (ALICE, BOB, CAROL)],
            "events": []}
    s = EngineStack(cycle=1, active=("ALICE", "BOB"), seed=seed, allow=("RMS00003",))
    yield s
    bad = s.close()
    assert not bad, "unexpected error log lines:\n" + "\n".join(bad)


def linked_activity(st, ev, rep="ALICE"):
    v = st.pg.val("SELECT activity_no FROM rmsync.event_link WHERE representative_id = $1"
                  " AND event_id = $2", rep, ev["id"])
    return int(v) if v is not None else None


def wait_linked(st, ev, rep="ALICE"):
    return st.wait_for(lambda: linked_activity(st, ev, rep), what=f"activity for {ev['subject']}")


def text_log(st):
    try:
        with open(st.log_file, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def wait_zone(st, rep):
    st.wait_for(lambda: (st.rep_state(rep) or {}).get("mailbox_tz_source"), timeout=30,
                what=f"time zone of {rep} read")
    return st.rep_state(rep)


# ---- private appointments ---------------------------------------------------------------------

def test_private_masked_by_default(st):
    ev = st.new_event(ALICE, SECRET_SUBJECT, day=4, categories=[CATEGORY], sensitivity="private",
                      attendees=["ann.customer@example.com", BOB])
    no = wait_linked(st, ev)
    st.wait_for(lambda: st.link_row(no)["applied_hash"], what="first apply")
    a = st.activity(no)
    assert a["description"] == "Private appointment"
    assert a["start_time"] == pg_time(ev["start"]) and a["end_time"] == pg_time(ev["end"])
    assert st.contacts(no) == [] and st.reps(no) == []

    # an edit in Outlook: the times still sync, the subject still does not
    start, end = utc(6, 13), utc(6, 14)
    st.sim.user_patch(ALICE, ev["id"], {"start": start, "end": end,
                                        "subject": SECRET_SUBJECT + " (follow-up)"})
    st.wait_for(lambda: st.activity(no)["start_time"] == pg_time(start), what="moved")
    assert st.activity(no)["description"] == "Private appointment"

    # nowhere in the CRM, the sync log or the text log
    assert int(st.pg.val("SELECT count(*) FROM crm.business_activity"
                         " WHERE description LIKE '%Kidney%'")) == 0
    assert st.log_count("message LIKE '%Kidney%'") == 0
    assert st.log_count("activity_no = $1", no) >= 1
    assert "Kidney" not in text_log(st)


def test_turns_private_masked_without_repeating_the_subject(st):
    no, ev = st.new_linked(ALICE, "Liver checkup", day=5, hour=11,
                           attendees=["ann.customer@example.com"])
    st.wait_for(lambda: st.contacts(no) == ["ANN"], what="contact ANN")
    st.sim.user_patch(ALICE, ev["id"], {"sensitivity": "private"})
    st.wait_for(lambda: st.activity(no)["description"] == "Private appointment", what="masked")
    # the contacts it had stay (the attendee list is no longer read), the subject is not logged
    assert st.contacts(no) == ["ANN"]
    rows = st.log_rows("activity_no = $1 AND action = 'update'", no)
    assert "Liver" not in rows[-1]["message"] and "masked" in rows[-1]["message"]


def test_private_skip_and_sync(st):
    try:
        # a linked appointment that turns private: the activity is left as it was, one line
        no, ev = st.new_linked(ALICE, "Plain meeting", day=5)
        st.reconfigure("RMSyncPrivateAppointments skip")
        st.sim.user_patch(ALICE, ev["id"], {"sensitivity": "confidential",
                                            "subject": "Confidential: " + SECRET_SUBJECT})
        st.wait_for(lambda: (st.link_row(no)["applied_hash"] or "").startswith("private:"),
                    what="private state seen")
        assert st.activity(no)["description"] == "Plain meeting"
        assert st.log_count("activity_no = $1 AND action = 'skip'", no) == 1

        # a categorised private appointment makes no activity
        ev2 = st.new_event(ALICE, SECRET_SUBJECT + " II", day=7, categories=[CATEGORY],
                           sensitivity="private")
        plain = st.new_event(ALICE, "Categorised plain", day=7, hour=15, categories=[CATEGORY])
        wait_linked(st, plain)              # the pass that saw both is done
        st.wait_pass("ALICE", n=1)
        assert linked_activity(st, ev2) is None
        assert st.log_count("message LIKE '%Kidney%'") == 0
        assert "Kidney" not in text_log(st)

        # sync: copied as any other appointment
        st.reconfigure("RMSyncPrivateAppointments sync")
        ev3 = st.new_event(ALICE, "Private but synced", day=8, categories=[CATEGORY],
                           sensitivity="private", attendees=["ann.customer@example.com"])
        no3 = wait_linked(st, ev3)
        st.wait_for(lambda: st.activity(no3)["description"] == "Private but synced",
                    what="subject copied")
        st.wait_for(lambda: st.contacts(no3) == ["ANN"], what="contact copied")
    finally:
        st.reconfigure("")


# ---- all-day events ------------------------------------------------------------------------------

def all_day(st, mailbox, subject, day):
    d = datetime.date.today() + datetime.timedelta(days=day)
    e = d + datetime.timedelta(days=1)
    ev = st.sim.user_create(mailbox, {
        "subject": subject, "isAllDay": True, "categories": [CATEGORY],
        "start": {"dateTime": d.isoformat() + "T00:00:00", "timeZone": ZONES[mailbox]},
        "end": {"dateTime": e.isoformat() + "T00:00:00", "timeZone": ZONES[mailbox]}})
    return ev, d.isoformat()


def covers_day(st, no, day, zone):
    """The activity runs from local midnight of day to the next local midnight in zone."""
    return st.pg.val(
        "SELECT start_time = ($2::date)::timestamp AT TIME ZONE $3"
        "   AND end_time = ($2::date + 1)::timestamp AT TIME ZONE $3"
        "  FROM crm.business_activity WHERE activity_no = $1", no, day, zone) in (True, "t")


def test_all_day_in_owner_zone(st):
    assert wait_zone(st, "ALICE")["mailbox_tz"] == "Europe/Berlin"
    assert wait_zone(st, "BOB")["mailbox_tz"] == "America/New_York"

    ev, d = all_day(st, ALICE, "Trade fair", 9)
    no = wait_linked(st, ev)
    st.wait_for(lambda: covers_day(st, no, d, "Europe/Berlin"),
                what=f"activity {no} covers {d} in Europe/Berlin")

    ev, d = all_day(st, BOB, "Offsite", 10)
    no = wait_linked(st, ev, "BOB")
    st.wait_for(lambda: covers_day(st, no, d, "America/New_York"),
                what=f"activity {no} covers {d} in America/New_York")

    # moved to another day in Outlook: still whole local days
    d2 = (datetime.date.today() + datetime.timedelta(days=12)).isoformat()
    d3 = (datetime.date.today() + datetime.timedelta(days=13)).isoformat()
    st.sim.user_patch(BOB, ev["id"], {"start": {"dateTime": d2 + "T00:00:00", "timeZone": ZONES[BOB]},
                                      "end": {"dateTime": d3 + "T00:00:00", "timeZone": ZONES[BOB]}})
    st.wait_for(lambda: covers_day(st, no, d2, "America/New_York"), what="moved all-day")


def test_zone_unreadable_uses_default_once(st):
    # CAROL's mailbox settings answer 403 (as without MailboxSettings.Read)
    st.sim.fault("status", status=403, match={"path_regex": "mailboxSettings", "user": CAROL})
    try:
        st.reconfigure('RMSyncDefaultTimeZone "Pacific Standard Time"')
        st.set_active("CAROL", True)
        s = wait_zone(st, "CAROL")
        assert s["mailbox_tz_source"] == "default" and s["mailbox_tz"] is None
        ev, d = all_day(st, CAROL, "Holiday", 11)
        no = wait_linked(st, ev, "CAROL")
        st.wait_for(lambda: covers_day(st, no, d, "America/Los_Angeles"),
                    what="all-day in RMSyncDefaultTimeZone")
        # read again (as the daily refresh would): still one line
        st.pg.sql("UPDATE rmsync.rep_state SET mailbox_tz_at = now() - interval '2 days'"
                  " WHERE representative_id = 'CAROL'")
        st.wait_for(lambda: st.pg.val("SELECT mailbox_tz_at > now() - interval '1 hour'"
                                      " FROM rmsync.rep_state WHERE representative_id = 'CAROL'")
                    in (True, "t"), what="zone read again")
        assert st.log_count("representative_id = 'CAROL' AND action = 'timezone'") == 1
        assert len(st.error_lines("RMS00470")) == 1
        assert text_log(st).count("RMS00471") == 1
    finally:
        st.sim.clear_faults()
        st.set_active("CAROL", False)
        st.reconfigure("")


# ---- organizer -----------------------------------------------------------------------------------

def test_organizer_added_to_representatives(st):
    no, ev = st.new_linked(ALICE, "Bob's review", day=3,
                           organizer={"emailAddress": {"address": BOB, "name": "Bob"}},
                           attendees=[ALICE, "ann.customer@example.com"])
    assert ev["isOrganizer"] is False
    st.wait_for(lambda: st.reps(no) == ["BOB"], what="organizer BOB added")
    assert st.contacts(no) == ["ANN"]
    assert st.activity(no)["main_representative_id"] == "ALICE"
