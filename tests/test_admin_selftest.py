"""Test connection / Test mailbox (issue 15) end to end: the admin page queues a request, the
runner carries it out with the Graph client (the simulator), the result page shows each check
with the fix for what failed. Also the JSON action (202 + Location to poll)."""
import re
import time

import pytest
import requests

from engine_stack import CLIENT, SECRET, EngineStack
from test_admin import OTHERS


@pytest.fixture(scope="module")
def st():
    s = EngineStack(cycle=1, active=("ALICE",), notify=True,
                    sim_config={"allow_http_notification_urls": True})
    s.httpd.allow = set(OTHERS)
    yield s
    bad = s.close()
    assert not bad, "unexpected error log lines:\n" + "\n".join(bad)


def start_test(st, action, fmt="json", **params):
    h = st.httpd
    tok = h.get("/rmsync/config.json").json()["csrf_token"]
    data = {"action": action, "token": tok, **params}
    if fmt:
        data["format"] = fmt
    return requests.post(h.url("/rmsync/config"), data=data, headers={"Origin": h.base_url},
                         allow_redirects=False, timeout=10)


def result(st, location, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        j = requests.get(st.httpd.url(location), timeout=10).json()
        if j["state"] in ("done", "failed"):
            return j
        time.sleep(0.3)
    raise AssertionError(f"test {location} not finished: {j}")


def checks(j):
    return {c["name"]: c for c in j["result"]["checks"]}


def test_connection_passes(st):
    r = start_test(st, "test_connection")
    assert r.status_code == 202, r.text
    loc = r.headers["Location"]
    assert re.fullmatch(r"/rmsync/test\.json\?id=\d+", loc) and r.json()["location"] == loc
    j = result(st, loc)
    assert j["state"] == "done" and j["result"]["ok"] is True, j["result"]
    assert set(checks(j)) == {"token", "mailbox call", "subscription handshake"}
    assert all(c["ok"] for c in j["result"]["checks"])
    # the HTML result page and the config page's readable request row
    page = requests.get(st.httpd.url(loc.replace(".json", "")), timeout=10).text
    assert "passed" in page and 'http-equiv="refresh"' not in page and "<script" not in page
    cfg = st.httpd.get("/rmsync/config").text
    assert "Test connection" in cfg and "3 of 3 checks passed" in cfg


def test_mailbox_passes(st):
    st.wait_for(lambda: st.pg.val("SELECT count(*) FROM rmsync.subscription"
                                  " WHERE representative_id = 'ALICE'") in (1, "1"),
                timeout=30, what="ALICE's subscription")
    r = start_test(st, "test_mailbox", rep="ALICE")
    assert r.status_code == 202, r.text
    j = result(st, r.headers["Location"])
    c = checks(j)
    assert set(c) == {"calendar read", "subscription", "category permission",
                      "mailbox time zone"}
    assert j["state"] == "done" and all(x["ok"] for x in c.values()), j


def test_html_flow_and_pending_page(st):
    r = start_test(st, "test_mailbox", fmt=None, rep="ALICE")
    assert r.status_code == 303 and re.search(r"/rmsync/test\?id=\d+$", r.headers["Location"])
    # a request the runner has not seen yet: the page reloads itself (no script)
    rid = st.pg.val("INSERT INTO rmsync.request (kind, representative_id, state)"
                    " VALUES ('test_mailbox', 'NOSUCHREP', 'pending') RETURNING id")
    page = requests.get(st.httpd.url(f"/rmsync/test?id={rid}"), timeout=10).text
    assert 'http-equiv="refresh"' in page and "reloads every 2 s" in page
    st.pg.sql("DELETE FROM rmsync.request WHERE id = $1", rid)
    assert requests.get(st.httpd.url("/rmsync/test?id=x"), timeout=10).status_code == 400
    assert requests.get(st.httpd.url("/rmsync/test?id=999999"), timeout=10).status_code == 404


def test_mailbox_not_found_shows_fix(st):
    st.pg.sql("INSERT INTO rmsync.rep_state (representative_id, mailbox) VALUES"
              " ('BOB', 'ghost@demo.rmsync.test') ON CONFLICT (representative_id) DO UPDATE"
              " SET mailbox = EXCLUDED.mailbox")
    r = start_test(st, "test_mailbox", rep="BOB")
    assert r.status_code == 202, r.text
    j = result(st, r.headers["Location"])
    c = checks(j)
    assert j["state"] == "failed" and not c["calendar read"]["ok"]
    assert "404" in c["calendar read"]["reason"]
    assert "e-mail address" in c["calendar read"]["fix"]
    page = requests.get(st.httpd.url(r.headers["Location"].replace(".json", "")), timeout=10).text
    assert "failed" in page and "e-mail address" in page
    # unknown representative: 404, nothing queued
    assert start_test(st, "test_mailbox", rep="NOBODY").status_code == 404


def test_secret_rotated_fails_with_fix(st):
    st.sim.app_set(CLIENT, client_secret="rotated-in-entra")
    try:
        r = start_test(st, "test_connection")
        j = result(st, r.headers["Location"])
        c = checks(j)
        assert j["state"] == "failed" and not c["token"]["ok"], j
        assert "RMSyncGraphClientSecretFile" in c["token"]["fix"]
        assert "AADSTS" in c["token"]["reason"], c["token"]
        assert not c["mailbox call"]["ok"] and "skipped" in c["mailbox call"]["reason"]
    finally:
        st.sim.app_set(CLIENT, client_secret=SECRET)


def test_notification_url_refused_shows_fix(st):
    st.sim.config(allow_http_notification_urls=False)
    try:
        j = result(st, start_test(st, "test_connection").headers["Location"])
        c = checks(j)["subscription handshake"]
        assert j["state"] == "failed" and not c["ok"] and "https" in c["reason"]
        assert "RMSyncNotificationURL" in c["fix"]
    finally:
        st.sim.config(allow_http_notification_urls=True)
