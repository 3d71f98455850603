"""Bad bytes are 400 at every entry point (issue 12): invalid UTF-8, NUL (raw and \\u0000),
overlong UTF-8 and lone surrogates (\\ud800) in every string field of the webhook and lifecycle
notifications, the admin filters and forms and the linking API are refused with 400 and a
reason before anything reaches PostgreSQL; nothing is stored and the webhook counts them as
`malformed`, not `db_unavailable`. Real Apache, real PostgreSQL; the sync service is off so
queue rows stay as stored.
"""
import json
import os
import urllib.parse

import pytest
import requests

from lib.httpd import Httpd, MODULE
from lib.pg import PgCluster

SUB = "sub-bytes-0001"
SECRET = "bytes-secret-bytes-secret-bytes-secret-1"
JSON = {"Content-Type": "application/json"}
ALLOWED = {"RMS%05d" % i for i in range(200, 300)}

# name -> (raw JSON string literal content, bytes for forms/queries)
BAD = {
    "invalid_utf8": (b"A\xff\xfeB", b"A\xff\xfeB"),
    "raw_nul": (b"A\x00B", b"A\x00B"),
    "escaped_nul": (b"A\\u0000B", None),
    "overlong": (b"A\xc0\xafB", b"A\xc0\xafB"),
    "lone_surrogate": (b"A\\ud800B", b"A\xed\xa0\x80B"),      # JSON escape / UTF-8 encoded
    "low_surrogate": (b"A\\udc00B", b"A\xed\xb0\x80B"),
    "beyond_10ffff": (b"A\xf4\x90\x80\x80B", b"A\xf4\x90\x80\x80B"),
}

NOTIF_FIELDS = ["subscriptionId", "clientState", "changeType", "resource", "tenantId",
                "resourceData.id", "resourceData.@odata.type", "extra"]
LIFECYCLE_FIELDS = ["subscriptionId", "clientState", "lifecycleEvent", "resource", "tenantId"]


@pytest.fixture(scope="module")
def stack():
    if not os.path.exists(MODULE):
        pytest.fail(f"{MODULE} is missing: run ./apxs-build.sh first")
    db = PgCluster(demo=True).start()
    db.sql("UPDATE rmsync.service_state SET running = false")
    db.sql("INSERT INTO rmsync.subscription (subscription_id, representative_id, client_state, "
           "resource, expires_at) VALUES ($1, 'ALICE', $2, 'users/alice/events', "
           "now() + interval '1 day')", SUB, SECRET)
    h = Httpd(name="rmsync-bytes")
    h.write_conf(rmsync="\n".join([f'RMSyncDatabase "{db.conninfo}"',
                                   "RMSyncDatabaseTimeouts 2 2000", "RMSyncSyncCycle 3600"]),
                 loglevel="info")
    h.start()
    h.db = db
    yield h
    h.stop()
    bad = h.bad_log_lines(ALLOWED)
    h.destroy()
    db.destroy()
    assert not bad, "unexpected error log lines:\n" + "\n".join(bad)


def rows(h):
    return int(h.db.sql("SELECT count(*) FROM rmsync.notification")[0][0])


def notif_body(field, bad, lifecycle=False):
    """A valid notification whose `field` carries the bad string (raw JSON bytes)."""
    if lifecycle:
        item = {"subscriptionId": SUB, "clientState": SECRET, "lifecycleEvent": "missed",
                "resource": "Users/u-alice/Events", "tenantId": "t",
                "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z"}
    else:
        item = {"subscriptionId": SUB, "changeType": "updated", "clientState": SECRET,
                "resource": "Users/u-alice/Events/ev-1", "tenantId": "t",
                "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "id": "ev-1"}}
    marker = "@@BAD@@"
    if "." in field:
        a, b = field.split(".", 1)
        item[a][b] = marker
    else:
        item[field] = marker
    return json.dumps({"value": [item]}).encode().replace(marker.encode(), bad)


@pytest.mark.parametrize("kind", sorted(BAD))
@pytest.mark.parametrize("field", NOTIF_FIELDS)
def test_notification(stack, kind, field):
    before = rows(stack)
    r = requests.post(stack.url("/rmsync/notify"), data=notif_body(field, BAD[kind][0]),
                      headers=JSON, timeout=10)
    assert r.status_code == 400, (r.status_code, r.text)
    assert rows(stack) == before


@pytest.mark.parametrize("kind", sorted(BAD))
@pytest.mark.parametrize("field", LIFECYCLE_FIELDS)
def test_lifecycle(stack, kind, field):
    before = rows(stack)
    r = requests.post(stack.url("/rmsync/lifecycle"),
                      data=notif_body(field, BAD[kind][0], lifecycle=True), headers=JSON,
                      timeout=10)
    assert r.status_code == 400, (r.status_code, r.text)
    assert rows(stack) == before


def test_good_notification_still_stored_and_bad_counted_malformed(stack):
    m0 = stack.status()["counters"]["notifications_malformed"]
    d0 = stack.status()["counters"].get("webhook_db_unavailable", 0)
    before = rows(stack)
    r = requests.post(stack.url("/rmsync/notify"), data=notif_body("tenantId", b"t\\u00fc"),
                      headers=JSON, timeout=10)
    assert r.status_code == 202, r.text
    assert rows(stack) == before + 1
    r = requests.post(stack.url("/rmsync/notify"), data=notif_body("resourceData.id",
                                                                    b"A\\u0000B"),
                      headers=JSON, timeout=10)
    assert r.status_code == 400 and "u0000" in r.text
    c = stack.status()["counters"]
    assert c["notifications_malformed"] == m0 + 1
    assert c.get("webhook_db_unavailable", 0) == d0
    # nothing was cut to "A"
    assert not stack.db.sql("SELECT 1 FROM rmsync.notification WHERE event_id = 'A'")


def q(b):
    return urllib.parse.quote_from_bytes(b, safe="")


@pytest.mark.parametrize("kind", sorted(BAD))
@pytest.mark.parametrize("param", ["event", "rep", "activity", "action", "level", "from"])
def test_admin_filters(stack, kind, param):
    raw = BAD[kind][1]
    if raw is None:
        pytest.skip("a JSON escape only")
    r = requests.get(stack.url(f"/rmsync/log?{param}={q(raw)}"), timeout=10)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert "Bad query" in r.text
    # in the parameter name too
    r = requests.get(stack.url(f"/rmsync/log?{q(raw)}=1"), timeout=10)
    assert r.status_code == 400


@pytest.mark.parametrize("kind", sorted(k for k in BAD if BAD[k][1] is not None))
def test_admin_form(stack, kind):
    tok = stack.status()["csrf_token"]
    body = f"action=set_active&rep={q(BAD[kind][1])}&active=1&token={tok}"
    r = requests.post(stack.url("/rmsync/config"), data=body,
                      headers={"Origin": stack.base_url,
                               "Content-Type": "application/x-www-form-urlencoded"},
                      allow_redirects=False, timeout=10)
    assert r.status_code == 400, (r.status_code, r.text[:300])


@pytest.mark.parametrize("kind", sorted(BAD))
@pytest.mark.parametrize("field", ["representative_id", "event_id", "activity_no", "extra"])
@pytest.mark.parametrize("path", ["link", "create-activity"])
def test_linking_api(stack, kind, field, path):
    tok = requests.get(stack.url("/rmsync/api/csrf"), timeout=10).json()["csrf_token"]
    body = {"representative_id": "ALICE", "event_id": "ev-1", "activity_no": "17"}
    body[field] = "@@BAD@@"
    data = json.dumps(body).encode().replace(b"@@BAD@@", BAD[kind][0])
    n0 = int(stack.db.sql("SELECT count(*) FROM rmsync.request")[0][0])
    r = requests.post(stack.url(f"/rmsync/api/{path}"), data=data,
                      headers={"Content-Type": "application/json", "X-RMSync-CSRF": tok},
                      allow_redirects=False, timeout=10)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert r.json()["error"] in ("bad_text", "bad_json")
    assert int(stack.db.sql("SELECT count(*) FROM rmsync.request")[0][0]) == n0
