"""Linking (issue 6): the JSON API (/rmsync/api/link, /rmsync/api/create-activity, request
polling) and category-driven linking, end to end against Apache + PostgreSQL + the simulator.
"""
import datetime
import os
import sys
import time

import pytest
import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from test_transfer import ALICE, BOB, CATEGORY, stack, wait_for  # noqa: E402,F401


DAY = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=3)).strftime("%Y-%m-%d")


def _event(stack, user=ALICE, subject="Outlook appointment", categories=None,
           attendees=(), **extra):
    """An appointment the user makes in Outlook, inside the sync window (in 3 days, 09:00 UTC)."""
    body = {
        "subject": subject,
        "start": {"dateTime": f"{DAY}T09:00:00", "timeZone": "UTC"},
        "end": {"dateTime": f"{DAY}T10:00:00", "timeZone": "UTC"},
        "attendees": [{"type": "required", "emailAddress": {"address": a}} for a in attendees],
    }
    if categories is not None:
        body["categories"] = categories
    body.update(extra)
    return stack.sim.user_create(user, body)


def _csrf(stack):
    r = requests.get(f"{stack.url}/rmsync/api/csrf", timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["header"] == "X-RMSync-CSRF"
    return r.json()["csrf_token"]


def _post(stack, path, body, headers=None, csrf=True):
    """POST to the API as the CRM's panel does: JSON with the CSRF token in X-RMSync-CSRF
    (csrf=False: without it)."""
    h = {"Content-Type": "application/json"}
    if csrf:
        h["X-RMSync-CSRF"] = _csrf(stack)
    h.update(headers or {})
    data = body if isinstance(body, (str, bytes)) else __import__("json").dumps(body)
    return requests.post(f"{stack.url}/rmsync/api/{path}", data=data, headers=h,
                         allow_redirects=False, timeout=10)


def _poll(stack, resp, timeout=30):
    """Follow a 202's Location until the request is no longer pending; returns the response."""
    assert resp.status_code == 202, resp.text
    loc = resp.headers["Location"]
    assert loc.endswith(f"/api/request/{resp.json()['request_id']}")
    url = f"{stack.url}{loc}"
    deadline = time.monotonic() + timeout
    while True:
        r = requests.get(url, timeout=10)
        if r.status_code != 202:
            return r
        assert r.json()["state"] in ("pending", "processing")
        if time.monotonic() > deadline:
            raise AssertionError("request still pending: " + r.text)
        time.sleep(0.1)


def _unlinked_activity(stack, desc="To be linked", rep="ALICE"):
    return stack.new_activity(rep=rep, desc=desc, flag=False)


# ---- link -------------------------------------------------------------------------------------

def test_link_success_applies_outlook_state(stack):
    no = _unlinked_activity(stack, desc="CRM text before linking")
    ev = _event(stack, subject="Subject from Outlook", attendees=["ann.customer@example.com"])
    r = _post(stack, "link", {"activity_no": no, "representative_id": "ALICE",
                              "event_id": ev["immutableId"]})
    done = _poll(stack, r)
    assert done.status_code == 200, done.text
    j = done.json()
    assert j["state"] == "done" and j["result"]["activity_no"] == no
    link = stack.link_row(no)
    assert link["event_id"] == ev["immutableId"] and link["linked_via"] == "link"
    # Outlook owns the sync fields from now on: its state is applied at once
    act = wait_for(lambda: (lambda a: a if a["description"] == "Subject from Outlook" else None)(
        stack.activity(no)), what="the appointment's subject on the activity")
    assert act["start"] == f"{DAY}T09:00:00"
    assert stack.pg.val("SELECT count(*) FROM crm.business_activity_contact"
                        " WHERE activity_no = $1 AND person_id = 'ANN'", no) == "1"
    logged = stack.pg.val("SELECT count(*) FROM rmsync.sync_log WHERE activity_no = $1"
                          " AND action = 'link'", no)
    assert int(logged) >= 2       # queued + linked
    assert stack.httpd.status()["counters"]["links_created"] >= 1


def test_double_link_refused(stack):
    no = _unlinked_activity(stack)
    ev = _event(stack, subject="Link me once")
    assert _poll(stack, _post(stack, "link", {"activity_no": no, "representative_id": "ALICE",
                                              "event_id": ev["immutableId"]})).status_code == 200
    # the same activity again
    ev2 = _event(stack, subject="Another one")
    r = _post(stack, "link", {"activity_no": no, "representative_id": "ALICE",
                              "event_id": ev2["immutableId"]})
    assert r.status_code == 409 and r.json()["error"] == "activity_already_linked"
    # the same appointment for another activity
    no2 = _unlinked_activity(stack)
    r = _post(stack, "link", {"activity_no": no2, "representative_id": "ALICE",
                              "event_id": ev["immutableId"]})
    assert r.status_code == 409 and r.json()["error"] == "event_already_linked"
    assert stack.link_row(no2) is None
    # a transferred activity is linked too
    no3 = stack.new_activity(desc="Transferred, then linked again?")
    wait_for(lambda: stack.link_row(no3), what="transfer")
    r = _post(stack, "link", {"activity_no": no3, "representative_id": "ALICE",
                              "event_id": ev2["immutableId"]})
    assert r.status_code == 409


def test_link_unknown_event_refused(stack):
    no = _unlinked_activity(stack)
    r = _post(stack, "link", {"activity_no": no, "representative_id": "ALICE",
                              "event_id": "AAMkAGI1AAAnoSuchEventAAA="})
    done = _poll(stack, r)
    assert done.status_code == 404, done.text
    assert done.json()["state"] == "failed"
    assert done.json()["result"]["error"] == "unknown_event"
    assert stack.link_row(no) is None
    # an event of another mailbox is unknown in this one
    bob_ev = _event(stack, user=BOB, subject="Bob's own")
    done = _poll(stack, _post(stack, "link", {"activity_no": no, "representative_id": "ALICE",
                                              "event_id": bob_ev["immutableId"]}))
    assert done.status_code == 404 and stack.link_row(no) is None


def test_link_unknown_activity_refused(stack):
    ev = _event(stack, subject="No such activity")
    r = _post(stack, "link", {"activity_no": 987654321, "representative_id": "ALICE",
                              "event_id": ev["immutableId"]})
    assert r.status_code == 404 and r.json()["error"] == "unknown_activity"


def test_non_syncing_representative_refused(stack):
    no = _unlinked_activity(stack, rep="ALICE")
    ev = _event(stack, subject="Whatever")
    # DAVE does not hold EXCHANGE_SYNC_USER
    r = _post(stack, "link", {"activity_no": no, "representative_id": "DAVE",
                              "event_id": ev["immutableId"]})
    assert r.status_code == 404 and r.json()["error"] == "unknown_representative"
    # granted but Sync Active off
    stack.pg.sql("INSERT INTO crm.fnd_user (identity) VALUES ('ERIN') ON CONFLICT DO NOTHING")
    stack.pg.sql("INSERT INTO crm.permission_set_grant VALUES ('ERIN', 'EXCHANGE_SYNC_USER')"
                 " ON CONFLICT DO NOTHING")
    stack.pg.sql("INSERT INTO crm.business_representative VALUES ('ERIN', 'ERIN', 'Erin',"
                 " 'erin@demo.rmsync.test') ON CONFLICT DO NOTHING")
    r = _post(stack, "link", {"activity_no": no, "representative_id": "ERIN",
                              "event_id": ev["immutableId"]})
    assert r.status_code == 409 and r.json()["error"] == "representative_not_syncing"
    assert stack.link_row(no) is None
    assert stack.pg.val("SELECT count(*) FROM rmsync.request WHERE representative_id IN"
                        " ('DAVE', 'ERIN')") == "0"
    # a request queued while ERIN still synced (Sync Active switched off since): the poll says
    # why it waits instead of pretending progress
    rid = stack.pg.val("INSERT INTO rmsync.request (kind, representative_id, activity_no, payload)"
                       " VALUES ('link', 'ERIN', $1, jsonb_build_object('event_id', $2::text))"
                       " RETURNING id", no, ev["immutableId"])
    p = requests.get(f"{stack.url}/rmsync/api/request/{rid}", timeout=10)
    assert p.status_code == 409 and p.json()["error"] == "representative_not_syncing"
    assert p.json()["state"] == "pending"


def test_bad_requests_change_nothing(stack):
    before = stack.pg.val("SELECT count(*) FROM rmsync.request")
    r = _post(stack, "link", "{not json")
    assert r.status_code == 400
    r = _post(stack, "link", {"activity_no": 1, "representative_id": "ALICE", "event_id": "x"},
              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    r = _post(stack, "link", {"activity_no": "one", "representative_id": "ALICE", "event_id": "x"})
    assert r.status_code == 422 and r.json()["error"] == "invalid_activity_no"
    r = _post(stack, "link", {"activity_no": 1, "representative_id": 7, "event_id": "x"})
    assert r.status_code == 422
    r = _post(stack, "create-activity", {"representative_id": "ALICE"})
    assert r.status_code == 422 and r.json()["error"] == "invalid_event_id"
    r = _post(stack, "link", {"activity_no": 1, "representative_id": "ALICE", "event_id": "x"},
              headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    r = requests.get(f"{stack.url}/rmsync/api/link", timeout=10)
    assert r.status_code == 405
    r = _post(stack, "link", "x" * 9000)
    assert r.status_code == 413
    r = requests.get(f"{stack.url}/rmsync/api/request/999999", timeout=10)
    assert r.status_code == 404
    assert stack.pg.val("SELECT count(*) FROM rmsync.request") == before


def test_api_post_needs_the_csrf_token(stack):
    """A well-formed link / create-activity without the admin pages' CSRF token in
    X-RMSync-CSRF is refused with 403 and a reason, and changes nothing; with the token from
    GET /rmsync/api/csrf or from status.json it goes through."""
    no = _unlinked_activity(stack, desc="CSRF check")
    ev = _event(stack, subject="CSRF check")
    body = {"activity_no": no, "representative_id": "ALICE", "event_id": ev["immutableId"]}
    before = stack.pg.val("SELECT count(*) FROM rmsync.request")
    for path, b in (("link", body), ("create-activity", {"representative_id": "ALICE",
                                                         "event_id": ev["immutableId"]})):
        r = _post(stack, path, b, csrf=False)
        assert r.status_code == 403, r.text
        assert r.json()["error"] == "csrf_token_missing"
        assert "X-RMSync-CSRF" in r.json()["message"] and "/api/csrf" in r.json()["message"]
        for bad in ("0" * 40, "not-a-token", _csrf(stack)[:-1] + "x"):
            r = _post(stack, path, b, csrf=False, headers={"X-RMSync-CSRF": bad})
            assert r.status_code == 403 and r.json()["error"] == "csrf_token_invalid", r.text
    # a same-origin browser request without the token is refused too
    r = _post(stack, "link", body, csrf=False,
              headers={"Origin": stack.url, "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 403 and r.json()["error"] == "csrf_token_missing"
    assert stack.pg.val("SELECT count(*) FROM rmsync.request") == before
    assert stack.link_row(no) is None
    assert requests.post(f"{stack.url}/rmsync/api/csrf", timeout=10).status_code == 405
    # the status JSON's token (the one the admin pages use) works as well
    token = stack.httpd.status()["csrf_token"]
    r = _post(stack, "link", body, csrf=False, headers={"X-RMSync-CSRF": token})
    assert _poll(stack, r).status_code == 200
    assert stack.link_row(no)["event_id"] == ev["immutableId"]


# ---- create-activity ----------------------------------------------------------------------------

def test_create_activity_from_appointment(stack):
    ev = _event(stack, subject="Make an activity of me",
                attendees=["Ben.Buyer@example.com", BOB, "stranger@nowhere.example"])
    done = _poll(stack, _post(stack, "create-activity", {"representative_id": "ALICE",
                                                         "event_id": ev["immutableId"]}))
    assert done.status_code == 200, done.text
    no = done.json()["result"]["activity_no"]
    act = stack.activity(no)
    assert act["description"] == "Make an activity of me"
    assert act["start"] == f"{DAY}T09:00:00" and act["modified_by"] == "SYNC_MASTER"
    assert stack.pg.val("SELECT main_representative_id FROM crm.business_activity"
                        " WHERE activity_no = $1", no) == "ALICE"
    assert stack.link_row(no)["linked_via"] == "api"
    contacts = [r[0] for r in stack.pg.sql("SELECT person_id FROM crm.business_activity_contact"
                                           " WHERE activity_no = $1", no)]
    assert contacts == ["BEN"]
    reps = [r[0] for r in stack.pg.sql("SELECT representative_id FROM"
                                       " crm.business_activity_representative WHERE activity_no = $1",
                                       no)]
    assert reps == ["BOB"]
    # a second create for the same appointment: refused, no second activity
    r = _post(stack, "create-activity", {"representative_id": "ALICE",
                                         "event_id": ev["immutableId"]})
    assert r.status_code == 409 and r.json()["error"] == "event_already_linked"


# ---- category-driven linking ----------------------------------------------------------------------

def _category_links(stack, event_id):
    return stack.pg.json("SELECT * FROM rmsync.event_link WHERE event_id = $1", event_id)


def test_category_creates_one_linked_activity(stack):
    ev = _event(stack, subject="Tagged in Outlook", categories=["crm business activity"],
                attendees=["ann.customer@example.com", BOB])
    links = wait_for(lambda: _category_links(stack, ev["immutableId"]), timeout=30,
                     what="an activity from the category")
    assert len(links) == 1 and links[0]["linked_via"] == "category"
    no = int(links[0]["activity_no"])
    act = stack.activity(no)
    assert act["description"] == "Tagged in Outlook"
    assert stack.pg.val("SELECT main_representative_id FROM crm.business_activity"
                        " WHERE activity_no = $1", no) == "ALICE"
    assert [r[0] for r in stack.pg.sql("SELECT person_id FROM crm.business_activity_contact"
                                       " WHERE activity_no = $1", no)] == ["ANN"]
    # BOB's attendee copy (propagated meeting, isOrganizer false) makes no second activity,
    # and neither do an Initial Sync of both mailboxes nor a repeated notification
    for rep in ("ALICE", "BOB"):
        stack.pg.sql("INSERT INTO rmsync.request (kind, representative_id) VALUES"
                     " ('initial_sync', $1)", rep)
    wait_for(lambda: stack.pg.val("SELECT count(*) FROM rmsync.request WHERE kind = 'initial_sync'"
                                  " AND state IN ('pending', 'processing')") == "0",
             timeout=60, what="the initial syncs")
    stack.sim.user_patch(ALICE, ev["immutableId"], {"subject": "Tagged in Outlook (edited)"})
    wait_for(lambda: stack.activity(no)["description"] == "Tagged in Outlook (edited)",
             timeout=30, what="the edit on the linked activity")
    assert stack.pg.val("SELECT count(*) FROM crm.business_activity"
                        " WHERE description LIKE 'Tagged in Outlook%'") == "1"
    # removing the category deletes nothing
    stack.sim.user_patch(ALICE, ev["immutableId"], {"categories": []})
    stack.sim.user_patch(ALICE, ev["immutableId"], {"subject": "Tagged in Outlook (untagged)"})
    wait_for(lambda: stack.activity(no)["description"] == "Tagged in Outlook (untagged)",
             timeout=30, what="the activity to follow the appointment")
    assert len(_category_links(stack, ev["immutableId"])) == 1


def test_category_ignored_when_not_organizer_or_absent(stack):
    plain = _event(stack, subject="No category here")
    foreign = _event(stack, subject="Someone else organises", categories=[CATEGORY],
                     organizer={"emailAddress": {"address": "boss@elsewhere.example"}})
    marker = _event(stack, subject="Category marker", categories=[CATEGORY])
    wait_for(lambda: _category_links(stack, marker["immutableId"]), timeout=30,
             what="the marker's activity")
    assert not _category_links(stack, plain["immutableId"])
    assert not _category_links(stack, foreign["immutableId"])
    assert stack.pg.val("SELECT count(*) FROM crm.business_activity WHERE description IN"
                        " ('No category here', 'Someone else organises')") == "0"


def test_unlinked_transfer_does_not_come_back_as_category_activity(stack):
    """A transferred appointment carries the category; after an admin unlinks it, the category
    rule must not turn it into a second activity."""
    no = stack.new_activity(desc="Transferred then unlinked")
    link = wait_for(lambda: stack.link_row(no), what="transfer")
    stack.pg.sql("DELETE FROM rmsync.event_link WHERE activity_no = $1", no)
    stack.sim.user_patch(ALICE, link["event_id"], {"subject": "Transferred then unlinked (edit)"})
    rid = stack.pg.val("INSERT INTO rmsync.request (kind, representative_id) VALUES"
                       " ('initial_sync', 'ALICE') RETURNING id")
    wait_for(lambda: stack.pg.val("SELECT state FROM rmsync.request WHERE id = $1", rid)
             in ("done", "failed"), timeout=60, what="an initial sync")
    assert not _category_links(stack, link["event_id"])
    assert stack.pg.val("SELECT count(*) FROM crm.business_activity"
                        " WHERE description LIKE 'Transferred then unlinked%'") == "1"
