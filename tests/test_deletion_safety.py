"""Deletion safety and link integrity (issue 13), in webhook mode as the demo runs: real Apache
(webhook + runner), PostgreSQL with the demo CRM, the Graph simulator delivering notifications.

RMSyncSyncCycle is 3600 s, so only notifications explain what happens within seconds. The
breaker (RMSyncMassDeleteLimit) judges every deletion over a window per representative; a
deletion waits RMSyncDeleteSettle (5 s) so a burst is judged as a whole before any of it is
carried out. Unlink is remembered; every admin action reaches the text log (RMSyncLogFile)."""
import re
import statistics
import time

import pytest
import requests

from engine_stack import EngineStack, ALICE, BOB, CAROL, REP_OF

CATEGORY = "CRM Business Activity"
LIMIT = 5
EXPECTED = {"RMS00403"}          # the breaker's hold (a warning, on purpose)
DELAYS = []                      # single deletion: Outlook delete -> activity gone (s)


@pytest.fixture(scope="module")
def st():
    s = EngineStack(cycle=3600, active=("ALICE", "BOB", "CAROL"), notify=True,
                    sim_config={"allow_http_notification_urls": True},
                    extra=f"RMSyncMassDeleteLimit {LIMIT} 50\nRMSyncDeleteSettle 5 600",
                    allow=EXPECTED)
    s.wait_for(lambda: all(s.pg.val("SELECT count(*) FROM rmsync.subscription"
                                    " WHERE representative_id = $1", r) == "1"
                           for r in ("ALICE", "BOB", "CAROL")), timeout=30,
               what="subscriptions")
    s.wait_for(lambda: all((s.rep_state(r) or {}).get("last_success_at")
                           for r in ("ALICE", "BOB", "CAROL")), timeout=30,
               what="first passes")
    yield s
    if DELAYS:
        print(f"\nsingle deletion delay over {len(DELAYS)} samples: p50 "
              f"{statistics.median(DELAYS):.2f} s, max {max(DELAYS):.2f} s")
    bad = s.close()
    assert not bad, "unexpected error log lines:\n" + "\n".join(bad)


def linked(st, mailbox, n, prefix):
    """n appointments in Outlook, each linked to a new activity (as the linking API would)."""
    rep = REP_OF[mailbox]
    out = []
    for i in range(n):
        ev = st.new_event(mailbox, f"{prefix} {i}", day=2 + i % 20, hour=8 + i % 8)
        no = st.new_activity(rep, desc=f"(CRM) {prefix} {i}", day=3 + i % 20)
        st.link(no, ev, rep)
        out.append((no, ev))
    return out


def action(st, name, page="config", **params):
    h = st.httpd
    tok = h.get("/rmsync/config.json").json()["csrf_token"]
    r = requests.post(h.url("/rmsync/" + page), data={"action": name, "token": tok, **params},
                      headers={"Origin": h.base_url}, allow_redirects=False, timeout=10)
    assert r.status_code == 303, r.text
    return r


def gone(st, links):
    return [no for no, _ in links if st.activity(no) is None]


def held(st, rep):
    return (st.rep_state(rep) or {}).get("held_by_breaker") is True


def assert_held_everywhere(st, rep):
    assert held(st, rep)
    cfg = st.httpd.get("/rmsync/config.json").json()
    row = [r for r in cfg["representatives"] if r["representative_id"] == rep][0]
    assert row["held_by_breaker"] is True and "RMS00403" in row["held_reason"]
    page = st.httpd.get("/rmsync/config").text
    tr = re.search(r'<tr data-rep="%s">.*?</tr>' % rep, page, re.S).group(0)
    assert 'data-action="approve"' in tr and 'data-action="reject"' in tr
    # the status page (shm) shows the hold too
    st.wait_for(lambda: st.rep_status(rep) and st.rep_status(rep)["held"], timeout=15,
                what="held on the status page")
    assert "held" in st.httpd.get("/rmsync/status").text


def burst(st, mailbox, links, n):
    for no, ev in links[:n]:
        st.sim.user_delete(mailbox, ev["id"])


def single_delete(st, mailbox, no, ev):
    t0 = time.monotonic()
    st.sim.user_delete(mailbox, ev["id"])
    st.wait_for(lambda: st.activity(no) is None, timeout=30, what=f"activity {no} deleted")
    DELAYS.append(time.monotonic() - t0)


# ------------------------------------------------------------------------- single deletions

def test_single_deletions_go_through(st):
    links = linked(st, ALICE, 4, "Single")
    for no, ev in links[:3]:
        single_delete(st, ALICE, no, ev)
    assert not held(st, "ALICE")
    assert st.activity(links[3][0]) is not None
    print(f"single deletion delays: {', '.join(f'{d:.2f}' for d in DELAYS)} s")
    # nothing is deleted before the settling delay
    assert min(DELAYS) >= 4.5


# ------------------------------------------------------------------------- bursts

def test_burst_held_by_count_then_approved(st):
    links = linked(st, BOB, 24, "Bob burst")
    burst(st, BOB, links, 22)
    st.wait_for(lambda: held(st, "BOB"), timeout=30, what="BOB held")
    time.sleep(7)                                       # past the settling delay
    assert len(gone(st, links)) <= LIMIT
    assert len(gone(st, links)) == 0                   # the burst was judged as a whole
    assert_held_everywhere(st, "BOB")
    assert "would remove" in st.rep_state("BOB")["held_reason"]
    # updates keep flowing while held
    st.sim.user_patch(BOB, links[23][1]["id"], {"subject": "Bob renamed while held"})
    st.wait_for(lambda: st.activity(links[23][0])["description"] == "Bob renamed while held",
                timeout=30, what="update while held")
    assert len(gone(st, links)) == 0
    action(st, "approve", rep="BOB")
    st.wait_for(lambda: len(gone(st, links)) == 22, timeout=30, what="approved deletions")
    assert not held(st, "BOB")
    assert st.activity(links[22][0]) is not None and st.activity(links[23][0]) is not None
    assert st.log_count("representative_id = 'BOB' AND action = 'hold'") == 1
    # after the approval single deletions flow again (a new window)
    single_delete(st, BOB, *links[22])
    assert not held(st, "BOB")


def test_burst_rejected_keeps_and_unlinks(st):
    links = linked(st, CAROL, 24, "Carol burst")
    burst(st, CAROL, links, 22)
    st.wait_for(lambda: held(st, "CAROL"), timeout=30, what="CAROL held")
    time.sleep(6)
    assert gone(st, links) == []
    assert_held_everywhere(st, "CAROL")
    action(st, "reject", rep="CAROL")
    st.wait_for(lambda: not held(st, "CAROL"), timeout=30, what="hold ended by Reject")
    for no, ev in links[:22]:
        assert st.activity(no) is not None and st.link_row(no) is None
    assert st.pg.val("SELECT count(*) FROM rmsync.unlinked_event"
                     " WHERE representative_id = 'CAROL'") == "22"
    assert st.log_count("representative_id = 'CAROL' AND action = 'unlink'"
                        " AND message LIKE '%rejected by -%'") == 22
    assert st.link_row(links[23][0]) is not None
    time.sleep(6)
    assert gone(st, links) == []


def test_burst_in_several_notification_batches(st):
    # small notification batches, three groups of deletions a second apart
    links = linked(st, CAROL, 12, "Carol batches")
    st.sim.config(notification_batch_max=2)
    try:
        for k in range(3):
            for no, ev in links[k * 3:(k + 1) * 3]:
                st.sim.user_delete(CAROL, ev["id"])
            time.sleep(1.0)
        st.wait_for(lambda: held(st, "CAROL"), timeout=30, what="CAROL held")
    finally:
        st.sim.config(notification_batch_max=50)
    time.sleep(6)
    assert len(gone(st, links)) <= LIMIT
    action(st, "approve", rep="CAROL")
    st.wait_for(lambda: len(gone(st, links)) == 9, timeout=30, what="approved")
    assert not held(st, "CAROL")


def test_deletions_spread_beyond_the_settling_delay(st):
    # three groups of 3 deletions 8 s apart: each group alone is below the limit, the window
    # (10 min) sees 6 > 5 at the second group and holds; at most the limit is carried out
    links = linked(st, CAROL, 12, "Carol spread")
    for k in range(3):
        for no, ev in links[k * 3:(k + 1) * 3]:
            st.sim.user_delete(CAROL, ev["id"])
        if k == 0:
            st.wait_for(lambda: len(gone(st, links)) == 3, timeout=30, what="first group")
        else:
            st.wait_for(lambda: held(st, "CAROL"), timeout=30, what="held by the window")
            break
    time.sleep(6)
    assert 3 <= len(gone(st, links)) <= LIMIT
    assert "already carried out" in st.rep_state("CAROL")["held_reason"]
    action(st, "approve", rep="CAROL")
    st.wait_for(lambda: len(gone(st, links)) == 6, timeout=30, what="approved")


def test_burst_held_by_percent(st):
    st.reconfigure("RMSyncMassDeleteLimit 1000 50\nRMSyncDeleteSettle 5 600")
    links = linked(st, BOB, 22, "Bob percent")        # BOB has 1 link left: 23
    burst(st, BOB, links, 13)                          # 13 of 23: 57 % > 50 %
    st.wait_for(lambda: held(st, "BOB"), timeout=30, what="BOB held by percent")
    time.sleep(6)
    assert gone(st, links) == []
    assert_held_everywhere(st, "BOB")
    assert "more than 50%" in st.rep_state("BOB")["held_reason"]
    action(st, "approve", rep="BOB")
    st.wait_for(lambda: len(gone(st, links)) == 13, timeout=30, what="approved")
    # single deletions below the limits still go through
    for no, ev in links[13:16]:
        single_delete(st, BOB, no, ev)
    assert not held(st, "BOB")


# ------------------------------------------------------------------------- unlink is remembered

def test_unlink_of_categorised_appointment_stays_unlinked(st):
    ev = st.new_event(ALICE, "Tagged for unlink", day=5, categories=[CATEGORY])
    eid = ev.get("immutableId", ev["id"])
    link = st.wait_for(lambda: st.pg.json("SELECT * FROM rmsync.event_link WHERE event_id = $1",
                                          eid), timeout=30, what="category link")
    no = int(link[0]["activity_no"])
    log_id = st.pg.val("SELECT max(id) FROM rmsync.sync_log WHERE activity_no = $1", no)
    action(st, "unlink", page="log", log=log_id, confirm="1")
    assert st.link_row(no) is None
    # an Outlook edit, then an Initial Sync: still exactly one activity, unlinked
    st.sim.user_patch(ALICE, ev["id"], {"subject": "Tagged for unlink (edited)"})
    st.wait_for(lambda: st.log_count("event_id = $1 AND message LIKE 'not linked again:"
                                     " unlinked by - at %'", eid) == 1,
                timeout=30, what="the 'not linked again' row")
    action(st, "initial_sync", rep="ALICE")
    st.wait_for(lambda: st.pg.val("SELECT count(*) FROM rmsync.request WHERE kind ="
                                  " 'initial_sync' AND representative_id = 'ALICE'"
                                  " AND state IN ('pending', 'processing')") == "0",
                timeout=60, what="initial sync done")
    assert st.pg.val("SELECT count(*) FROM rmsync.event_link WHERE event_id = $1", eid) == "0"
    assert st.pg.val("SELECT count(*) FROM crm.business_activity"
                     " WHERE description LIKE 'Tagged for unlink%'") == "1"
    assert st.activity(no)["description"] == "Tagged for unlink"
    # logged once per Outlook state, not on every pass
    assert st.log_count("event_id = $1 AND message LIKE 'not linked again:%'", eid) == 1
    # an explicit link (the linking API's link row) links it again and forgets the unlink
    st.pg.sql("INSERT INTO rmsync.event_link (activity_no, representative_id, event_id,"
              " linked_via) VALUES ($1, 'ALICE', $2, 'link')", no, eid)
    assert st.pg.val("SELECT count(*) FROM rmsync.unlinked_event WHERE event_id = $1",
                     eid) == "0"


# ------------------------------------------------------------------------- text log

def test_every_admin_action_in_the_text_log(st):
    action(st, "set_active", rep="ALICE", active="0")
    action(st, "set_active", rep="ALICE", active="1")
    action(st, "stop", confirm="1")
    action(st, "start")
    action(st, "initial_sync", rep="BOB")
    action(st, "initial_sync_all")
    log_id = st.pg.val("SELECT max(id) FROM rmsync.sync_log WHERE event_id IS NOT NULL"
                       " AND representative_id = 'BOB'")
    action(st, "retry", page="log", log=log_id)
    wanted = ["set_active", "stop", "start", "initial_sync", "initial_sync_all", "retry",
              "approve", "reject", "unlink"]

    def lines():
        with open(st.log_file, errors="replace") as f:
            return [l for l in f if "(admin -)" in l]
    def missing():
        have = {m.group(1) for m in (re.search(r" action=(\S+)", l) for l in lines()) if m}
        return [w for w in wanted if w not in have]
    st.wait_for(lambda: not missing(), timeout=20, what="admin actions in the text log")
    # the same format as the sync lines, each row once
    for l in lines():
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[info\] ", l), l
    n = st.pg.val("SELECT count(*) FROM rmsync.sync_log WHERE by_admin IS NOT NULL")
    assert len(lines()) == int(n)
