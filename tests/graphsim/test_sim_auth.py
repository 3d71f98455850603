import time

from simtestlib import ALICE, CLIENT, SECRET, TENANT


def test_token_success_shape(env):
    st, h, b = env.sim.token_response(TENANT, CLIENT, SECRET)
    assert st == 200
    assert b["token_type"] == "Bearer"
    assert isinstance(b["expires_in"], int) and b["expires_in"] > 3000
    assert b["access_token"] and "request-id" in h


def test_bad_secret_is_invalid_client(env):
    st, _, b = env.sim.token_response(TENANT, CLIENT, "wrong")
    assert st == 401
    assert b["error"] == "invalid_client"
    assert 7000215 in b["error_codes"]
    assert b["error_description"].startswith("AADSTS7000215")
    assert {"timestamp", "trace_id", "correlation_id"} <= set(b)


def test_bad_scope_grant_tenant_client(env):
    st, _, b = env.sim.token_response(TENANT, CLIENT, SECRET, scope="https://graph.microsoft.com/Calendars.Read")
    assert (st, b["error"]) == (400, "invalid_scope")
    st, _, b = env.sim.token_response(TENANT, CLIENT, SECRET, grant_type="password")
    assert (st, b["error"]) == (400, "unsupported_grant_type")
    st, _, b = env.sim.token_response("no-such-tenant", CLIENT, SECRET)
    assert st == 400 and b["error"] == "invalid_request" and 90002 in b["error_codes"]
    st, _, b = env.sim.token_response(TENANT, "other-client", SECRET)
    assert st == 400 and b["error"] == "unauthorized_client"


def test_missing_and_wrong_token_401(env):
    st, h, b = env.sim.graph("GET", "/users/%s/events" % ALICE)
    assert st == 401 and b["error"]["code"] == "InvalidAuthenticationToken"
    assert "www-authenticate" in h
    st, _, b = env.sim.graph("GET", "/users/%s/events" % ALICE, token="garbage")
    assert st == 401 and b["error"]["code"] == "InvalidAuthenticationToken"


def test_token_expiry_then_401(env):
    env.sim.config(token_lifetime_s=2)
    t0 = time.monotonic()
    st, _, b = env.sim.token_response(TENANT, CLIENT, SECRET)
    assert b["expires_in"] == 2
    tok = b["access_token"]
    st, _, _ = env.g("GET", "/users/%s/events" % ALICE, token=tok)
    assert st == 200 or time.monotonic() - t0 >= 2
    time.sleep(max(0.0, 2.2 - (time.monotonic() - t0)))
    st, _, b = env.g("GET", "/users/%s/events" % ALICE, token=tok)
    assert st == 401
    assert b["error"]["code"] == "InvalidAuthenticationToken"
    assert "expired" in b["error"]["message"]
    # a new token works again
    assert env.g("GET", "/users/%s/events" % ALICE, token=env.sim.token(TENANT, CLIENT, SECRET))[0] == 200


def test_error_envelope_and_request_ids(env):
    st, h, b = env.g("GET", "/users/%s/events/AAMkAGI1AAAt9AHjAAAnotthere=" % ALICE,
                     headers={"client-request-id": "11111111-2222-3333-4444-555555555555"})
    assert st == 404
    assert set(b) == {"error"}
    err = b["error"]
    assert err["code"] == "ErrorItemNotFound" and isinstance(err["message"], str)
    inner = err["innerError"]
    assert set(inner) >= {"date", "request-id", "client-request-id"}
    assert inner["client-request-id"] == "11111111-2222-3333-4444-555555555555"
    assert h["client-request-id"] == "11111111-2222-3333-4444-555555555555"
    assert h["request-id"] == inner["request-id"]
    # success responses carry the headers too
    st, h, _ = env.g("GET", "/users/%s/calendar" % ALICE)
    assert st == 200 and h.get("request-id") and h.get("client-request-id")


def test_unknown_user_and_me(env):
    st, _, b = env.g("GET", "/users/nobody@sim.test/events")
    assert st == 404 and b["error"]["code"] == "ErrorInvalidUser"
    st, _, b = env.g("GET", "/me/events")
    assert st == 400


def test_user_lookup_needs_directory_permission(env):
    # Calendars.* / MailboxSettings.* do not allow reading users (a directory call)
    st, _, b = env.g("GET", "/users/%s?$select=id,mail" % ALICE)
    assert st == 403 and b["error"]["code"] == "Authorization_RequestDenied"
    assert env.g("GET", "/users")[0] == 403
    # ... but the calendar APIs take the UPN/mail directly
    assert env.g("GET", "/users/%s/events" % ALICE.upper())[0] == 200
    env.sim.seed({"apps": [{"tenant": TENANT, "client_id": "dir-client", "client_secret": SECRET,
                            "permissions": ["Calendars.ReadWrite", "User.Read.All"]}]})
    tok = env.sim.token(TENANT, "dir-client", SECRET)
    st, _, u = env.g("GET", "/users/%s?$select=id,mail,userPrincipalName" % ALICE.upper(), token=tok)
    assert st == 200 and u["mail"] == ALICE and set(u) == {"@odata.context", "id", "mail", "userPrincipalName"}
    st, _, u2 = env.g("GET", "/users/%s" % u["id"], token=tok)
    assert st == 200 and u2["id"] == u["id"] and u2["displayName"] == "Alice"
    st, _, b = env.g("GET", "/users/nobody@sim.test", token=tok)
    assert st == 404 and b["error"]["code"] == "Request_ResourceNotFound"
    env.sim.fault("status", status=503, count=1, match={"user": ALICE})
    assert env.g("GET", "/users/%s" % ALICE, token=tok)[0] == 503, "faults match GET /users/{u} by user"


def test_request_log(env):
    env.sim.clear_requests()
    env.g("GET", "/users/%s/events" % ALICE, headers={"Prefer": 'IdType="ImmutableId"', "client-request-id": "abc"})
    env.g("GET", "/users/%s/events/bogus" % ALICE)
    log = env.sim.requests(user=ALICE)
    assert [(r["kind"], r["status"]) for r in log] == [("event_list", 200), ("event_get", 400)]
    assert log[0]["headers"]["Prefer"] == 'IdType="ImmutableId"' and log[0]["client-request-id"] == "abc"
    assert log[1]["error"] == "ErrorInvalidIdMalformed"
    assert [r["kind"] for r in env.sim.requests(kind="token")] == ["token"]
