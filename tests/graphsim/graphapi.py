"""Graph v1.0 and the AAD token endpoint, as seen by an app-only client.

GraphApp.handle(req) -> Resp is transport independent, so $batch can run inner requests through it.
"""
import base64
import copy
import json
import re
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import simdelta
import simevents as E
import simsubs as S
from simcore import GraphError, OAuthError, Prefs, fmt_inner_date, fmt_ts, guid, now, parse_iso, parse_window

TOKEN_PATH_RE = re.compile(r"^/([^/]+)/oauth2/v2\.0/token$")
DIRECTORY_READ = ("User.Read.All", "User.ReadBasic.All", "User.ReadWrite.All", "Directory.Read.All",
                  "Directory.ReadWrite.All")
LOGGED_HEADERS = ("Prefer", "If-Match", "Content-Type", "User-Agent")
JSON_CT = "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8"


class CIDict(dict):
    """Case-insensitive header dict (keys stored lowercased); get_all mimics email.message."""

    def __init__(self, items=()):
        super().__init__()
        self._all = {}
        for k, v in items:
            self._all.setdefault(k.lower(), []).append(v)
            super().__setitem__(k.lower(), v)

    def get(self, k, default=None):
        return super().get(k.lower(), default)

    def get_all(self, k, default=None):
        return self._all.get(k.lower(), default)


class Req:
    def __init__(self, method, target, headers, body, host):
        self.method = method.upper()
        parts = urllib.parse.urlsplit(target)
        self.raw_path = parts.path
        self.raw_query = parts.query
        self.segments = [urllib.parse.unquote(s) for s in parts.path.split("/")[1:]]
        self.query = {}
        for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
            self.query.setdefault(k, v)
        self.headers = headers
        self.body = body or b""
        self.host = host
        self.request_id = guid()
        self.client_request_id = headers.get("client-request-id") or self.request_id
        self.user = None           # resolved mailbox (for faults/counters)
        self.kind = "other"

    def json(self):
        if not self.body.strip():
            return None
        ct = (self.headers.get("Content-Type") or "").lower()
        if not ct.startswith("application/json"):
            raise GraphError(415, "UnsupportedMediaType" if ct else "BadRequest",
                             "A supported MIME type could not be found that matches the content type of the "
                             "response. None of the supported type(s) 'application/json' matches the content "
                             "type '%s'." % (ct or "(none)"))
        try:
            return json.loads(self.body)
        except ValueError:
            raise GraphError(400, "BadRequest", "Unable to read JSON request payload. Please ensure Content-Type "
                             "header is set and payload is of valid JSON format.")

    def prefs(self):
        return Prefs(self.headers.get_all("Prefer") or [])


class Resp:
    def __init__(self, status, body=None, headers=None, ctype=None):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.ctype = ctype
        self.drop = False

    def payload(self):
        if self.body is None:
            return b""
        if isinstance(self.body, (bytes, bytearray)):
            return bytes(self.body)
        return json.dumps(self.body).encode()


def error_resp(e, req):
    inner = {"date": fmt_inner_date(), "request-id": req.request_id, "client-request-id": req.client_request_id}
    inner.update(e.inner)
    return Resp(e.status, {"error": {"code": e.code, "message": e.message, "innerError": inner}}, e.headers)


def oauth_error_resp(e, req):
    ts = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    desc = "%s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s" % (
        e.description, req.request_id, req.client_request_id, ts)
    return Resp(e.status, {"error": e.error, "error_description": desc, "error_codes": [e.aadsts],
                           "timestamp": ts, "trace_id": req.request_id, "correlation_id": req.client_request_id,
                           "error_uri": "https://login.microsoftonline.com/error?code=%d" % e.aadsts},
                ctype="application/json; charset=utf-8")


_EXP_RE = re.compile(r"^singleValueExtendedProperties\(\$filter=(.*)\)$", re.I | re.S)
_IDEQ_RE = re.compile(r"^\s*id\s+eq\s+'((?:[^']|'')*)'\s*$", re.I)
_ANY_RE = re.compile(r"^singleValueExtendedProperties/any\(\s*(\w+)\s*:\s*(.*)\)$", re.I | re.S)
_CMP_RE = re.compile(r"^(\w+(?:/\w+)?)\s+(eq|ne|ge|gt|le|lt)\s+'((?:[^']|'')*)'$", re.I | re.S)


def _split_top(expr, word):
    """Split expr on ' word ' outside parentheses and quotes."""
    parts, depth, q, cur, i = [], 0, False, [], 0
    w = " %s " % word
    while i < len(expr):
        ch = expr[i]
        if ch == "'":
            q = not q
        elif not q and ch == "(":
            depth += 1
        elif not q and ch == ")":
            depth -= 1
        if not q and depth == 0 and expr[i:i + len(w)].lower() == w:
            parts.append("".join(cur))
            cur = []
            i += len(w)
            continue
        cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def parse_expand(value):
    """-> set of extended property keys to return, or None when there is no $expand."""
    if value is None:
        return None
    m = _EXP_RE.match(value.strip())
    if not m:
        raise GraphError(400, "ErrorInvalidUrlQuery", "The $expand of '%s' is not supported; expand "
                         "singleValueExtendedProperties with a $filter on id." % value)
    keys = set()
    for clause in _split_top(m.group(1).strip(), "or"):
        mm = _IDEQ_RE.match(clause)
        k = E.ext_key(mm.group(1).replace("''", "'")) if mm else None
        if k is None:
            raise GraphError(400, "ErrorInvalidUrlQuery", "Invalid filter clause in $expand: %s" % clause)
        keys.add(k)
    return keys


EVENT_PROPS = (
    "id", "createdDateTime", "lastModifiedDateTime", "changeKey", "categories", "transactionId",
    "originalStartTimeZone", "originalEndTimeZone", "iCalUId", "reminderMinutesBeforeStart", "isReminderOn",
    "hasAttachments", "subject", "bodyPreview", "importance", "sensitivity", "isAllDay", "isCancelled",
    "isOrganizer", "responseRequested", "seriesMasterId", "showAs", "type", "webLink", "onlineMeetingUrl",
    "isOnlineMeeting", "onlineMeetingProvider", "allowNewTimeProposals", "isDraft", "hideAttendees",
    "responseStatus", "body", "start", "end", "location", "locations", "recurrence", "attendees", "organizer",
    "onlineMeeting", "originalStart")
_EVENT_PROPS_CI = {p.lower(): p for p in EVENT_PROPS}


def parse_select(value):
    """$select on events: property names (case-insensitive) -> canonical names; unknown ones -> 400."""
    if value is None:
        return None
    out = []
    for name in (x.strip() for x in value.split(",")):
        canon = _EVENT_PROPS_CI.get(name.lower())
        if canon is None:
            raise GraphError(400, "RequestBroker--ParseUri",
                             "Could not find a property named '%s' on type 'microsoft.graph.event'." % name)
        out.append(canon)
    return out


def parse_filter(value):
    """-> predicate(ev) for the event-list $filter subset graphsim implements."""
    if value is None:
        return None
    preds = []
    for clause in _split_top(value.strip(), "and"):
        c = clause.strip()
        while c.startswith("(") and c.endswith(")"):
            c = c[1:-1].strip()
        m = _ANY_RE.match(c)
        if m:
            var = m.group(1)
            want_id, want_val = None, None
            for sub in _split_top(m.group(2).strip(), "and"):
                mm = re.match(r"^%s/(id|value)\s+eq\s+'((?:[^']|'')*)'$" % re.escape(var), sub.strip(), re.I)
                if not mm:
                    raise GraphError(400, "ErrorInvalidUrlQueryFilter", "Unsupported filter: %s" % sub)
                if mm.group(1).lower() == "id":
                    want_id = E.ext_key(mm.group(2).replace("''", "'"))
                    if want_id is None:
                        raise GraphError(400, "ErrorInvalidProperty", "The extended property id is not valid.")
                else:
                    want_val = mm.group(2).replace("''", "'")
            if want_id is None:
                raise GraphError(400, "ErrorInvalidUrlQueryFilter", "Any() needs an id comparison.")
            preds.append(lambda ev, k=want_id, v=want_val: k in ev.ext and (v is None or ev.ext[k][1] == v))
            continue
        m = _CMP_RE.match(c)
        if m:
            prop, op, lit = m.group(1), m.group(2).lower(), m.group(3).replace("''", "'")
            getter = {
                "subject": lambda ev: ev.props["subject"],
                "icaluid": lambda ev: ev.ical_uid,
                "transactionid": lambda ev: ev.transaction_id,
                "start/datetime": lambda ev: ev.start,
                "end/datetime": lambda ev: ev.end,
            }.get(prop.lower())
            if getter is None:
                raise GraphError(400, "ErrorInvalidUrlQueryFilter", "Unsupported filter property: %s" % prop)
            if prop.lower().endswith("/datetime"):
                try:
                    lit = parse_iso(lit)
                except ValueError:
                    raise GraphError(400, "ErrorInvalidUrlQueryFilter", "Invalid date-time literal.")
            ops = {"eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "ge": lambda a, b: a >= b,
                   "gt": lambda a, b: a > b, "le": lambda a, b: a <= b, "lt": lambda a, b: a < b}
            preds.append(lambda ev, g=getter, o=ops[op], lv=lit: g(ev) is not None and o(g(ev), lv))
            continue
        raise GraphError(400, "ErrorInvalidUrlQueryFilter", "Unsupported filter clause: %s" % clause)
    return lambda ev: all(p(ev) for p in preds)


def _int_param(q, name, default, lo=0, hi=1000):
    v = q.get(name)
    if v is None:
        return default
    try:
        n = int(v)
    except ValueError:
        raise GraphError(400, "BadRequest", "Invalid value '%s' for query option %s." % (v, name))
    if n < lo or n > hi:
        raise GraphError(400, "BadRequest", "Invalid value '%s' for query option %s." % (v, name))
    return n


class GraphApp:
    def __init__(self, state):
        self.state = state

    # ------------------------------------------------------------ entry

    def handle(self, req, inner=False):
        st = self.state
        t0 = time.monotonic()
        m = TOKEN_PATH_RE.match(req.raw_path)
        with st.lock:
            st.counters["requests_total"] += 1
            if inner:
                st.counters["batch_inner_requests"] += 1
        if m:
            req.kind = "token"
            resp = self._with_faults(req, lambda: self._token(req, urllib.parse.unquote(m.group(1))))
        elif req.segments[:1] == ["v1.0"]:
            resp = self._graph(req, inner)
        else:
            resp = error_resp(GraphError(400, "BadRequest", "Invalid version: %s" % (req.segments[:1] or [""])[0]),
                              req)
        resp.headers.setdefault("request-id", req.request_id)
        resp.headers.setdefault("client-request-id", req.client_request_id)
        if resp.body is not None and req.kind != "token":
            resp.headers.setdefault("OData-Version", "4.0")
        resp.headers.setdefault("x-ms-ags-diagnostic",
                                '{"ServerInfo":{"DataCenter":"Loopback","Slice":"E","Ring":"0",'
                                '"ScaleUnit":"000","RoleInstance":"graphsim"}}')
        with st.lock:
            st.counters["requests_by_kind"][req.kind] += 1
            st.counters["status_counts"][str(resp.status)] += 1
            code = resp.body.get("error") if isinstance(resp.body, dict) else None
            st.request_log.append({
                "time": fmt_ts(now()), "method": req.method,
                "path": req.raw_path + ("?" + req.raw_query if req.raw_query else ""),
                "kind": req.kind, "user": req.user.mail if req.user else None, "status": resp.status,
                "error": (code.get("code") if isinstance(code, dict) else code), "batch_inner": inner,
                "dropped": resp.drop, "ms": int((time.monotonic() - t0) * 1000),
                "request-id": req.request_id, "client-request-id": req.headers.get("client-request-id"),
                "headers": {k: req.headers.get(k) for k in LOGGED_HEADERS if req.headers.get(k) is not None},
            })
        return resp

    def _with_faults(self, req, fn):
        f = self.state.take_faults(req.method, req.raw_path + ("?" + req.raw_query if req.raw_query else ""),
                                   req.user, ("latency", "status", "drop_response", "malformed"),
                                   token_endpoint=req.kind == "token")
        if "latency" in f:
            time.sleep(float(f["latency"].spec["ms"]) / 1000.0)
        if "status" in f:
            spec = f["status"].spec
            code = {400: "BadRequest", 401: "InvalidAuthenticationToken", 403: "ErrorAccessDenied",
                    404: "ErrorItemNotFound", 409: "ErrorIrresolvableConflict", 410: "SyncStateNotFound",
                    412: "ErrorIrresolvableConflict", 429: "TooManyRequests", 500: "ErrorInternalServerError",
                    502: "UnknownError", 503: "ServiceNotAvailable", 504: "UnknownError"}.get(spec["status"],
                                                                                            "UnknownError")
            hdr = {}
            if spec["status"] == 401:
                hdr["WWW-Authenticate"] = 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/' \
                                          'common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'
            if req.kind == "token":
                # the identity platform answers in its own error shape
                stat = spec["status"]
                transient = stat >= 500 or stat == 429
                resp = oauth_error_resp(OAuthError(
                    stat, spec.get("code") or ("temporarily_unavailable" if transient else "invalid_request"),
                    90033 if transient else 900144,
                    spec.get("message") or "AADSTS90033: A transient error has occurred. Please try again."), req)
                if spec.get("retry_after") is not None:
                    resp.headers["Retry-After"] = str(spec["retry_after"])
                return resp
            if spec.get("retry_after") is not None:
                hdr["Retry-After"] = str(spec["retry_after"])
            if spec["status"] == 429:
                with self.state.lock:
                    self.state.counters["throttled_429"] += 1
            msg = spec.get("message") or {429: "Please retry again later.",
                                          503: "The service is temporarily unavailable. Please retry later.",
                                          504: "The operation timed out."}.get(spec["status"],
                                                                              "An internal server error occurred.")
            return error_resp(GraphError(spec["status"], spec.get("code") or code, msg, hdr), req)
        try:
            resp = fn()
        except GraphError as e:
            resp = error_resp(e, req)
        except OAuthError as e:
            resp = oauth_error_resp(e, req)
        if "malformed" in f and isinstance(resp.body, dict):
            _malform(resp.body, f["malformed"].spec)
        if "drop_response" in f:
            resp.drop = True
        return resp

    # ------------------------------------------------------------ token endpoint

    def _token(self, req, tenant):
        if req.method != "POST":
            raise OAuthError(400, "invalid_request", 900561,
                             "AADSTS900561: The endpoint only accepts POST requests. Received a %s request."
                             % req.method)
        form = dict(urllib.parse.parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))
        basic = None
        auth = req.headers.get("Authorization") or ""
        if auth.lower().startswith("basic "):
            try:
                cid, _, sec = base64.b64decode(auth[6:].strip()).decode().partition(":")
                basic = (urllib.parse.unquote_plus(cid), urllib.parse.unquote_plus(sec))
            except ValueError:
                pass
        auds = ("https://%s/%%s/oauth2/v2.0/token" % req.host,)
        return Resp(200, self.state.issue_token(tenant, form, basic, auds), ctype="application/json; charset=utf-8",
                    headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})

    # ------------------------------------------------------------ graph

    def _graph(self, req, inner):
        st = self.state
        try:
            tok = st.check_token(req.headers.get("Authorization"))
            segs = req.segments[1:]
            if segs and segs[-1] == "":
                segs = segs[:-1]
            low = [s.lower() for s in segs]
            user = None
            if low[:1] == ["me"]:
                raise GraphError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
            if low[:1] == ["users"] and len(segs) <= 2 and st.config["enforce_directory_permissions"] and \
                    not any(p in tok["roles"] for p in DIRECTORY_READ):
                # reading users is a directory call: Calendars.* does not grant it
                raise GraphError(403, "Authorization_RequestDenied",
                                 "Insufficient privileges to complete the operation. (graphsim: GET /users needs "
                                 "one of %s for app-only tokens; the calendar APIs accept the UPN/mail "
                                 "directly)" % ", ".join(DIRECTORY_READ))
            if low[:1] == ["users"] and len(segs) == 2:
                with st.lock:
                    user = st.find_user(segs[1])
                    if user is None:
                        raise GraphError(404, "Request_ResourceNotFound",
                                         "Resource '%s' does not exist or one of its queried reference-property "
                                         "objects are not present." % segs[1])
                    req.user = user
            if low[:1] == ["users"] and len(segs) > 2:
                with st.lock:
                    user = st.get_user(segs[1])
                    req.user = user
                    if not user.mailbox_enabled:
                        raise GraphError(404, "MailboxNotEnabledForRESTAPI",
                                         "REST API is not yet supported for this mailbox.")
                    if user.access_denied:
                        raise GraphError(403, "ErrorAccessDenied", "Access to OData is disabled.")
        except GraphError as e:
            return error_resp(e, req)
        tkey = None
        if user is not None and len(segs) > 2:
            try:
                tkey = st.throttle_enter(tok["client_id"], user)
            except GraphError as e:
                req.kind = "throttled"
                return error_resp(e, req)
        try:
            return self._with_faults(req, lambda: self._route(req, tok, segs, low, user, inner))
        finally:
            if tkey is not None:
                st.throttle_exit(tkey, user)

    def _route(self, req, tok, segs, low, user, inner):
        M = req.method
        if low == ["$batch"]:
            req.kind = "batch"
            if inner:
                raise GraphError(400, "BadRequest", "Nested batch requests are not supported.")
            self._allow(M, "POST")
            return self._batch(req)
        if low[:1] == ["subscriptions"]:
            return self._subscriptions(req, tok, segs, low)
        if low[:1] != ["users"]:
            raise GraphError(400, "BadRequest", "Resource not found for the segment '%s'." % (segs[:1] or [""])[0])
        sel = [x.strip() for x in req.query["$select"].split(",")] if req.query.get("$select") else None
        if len(segs) == 1:
            req.kind = "users"
            self._allow(M, "GET")
            with self.state.lock:
                return Resp(200, {"@odata.context": self._base(req) + "/$metadata#users",
                                  "value": [_user_json(u, sel) for u in self.state.users.values()]})
        if len(segs) == 2:
            req.kind = "user"
            self._allow(M, "GET")
            return Resp(200, dict(_user_json(user, sel), **{"@odata.context": self._base(req) + "/$metadata#users/$entity"}))
        rest, lrest = segs[2:], low[2:]
        if lrest[:2] == ["outlook", "mastercategories"]:
            return self._categories(req, tok, user, rest[2:])
        if lrest[:1] == ["mailboxsettings"]:
            return self._mailbox_settings(req, tok, user, lrest[1:])
        # calendar container prefixes: cal = the calendar named by the path (None: no prefix, i.e.
        # the default calendar for lists/views/delta/create, any calendar for an event id)
        cal = None
        if lrest[:1] == ["calendar"]:
            if len(rest) == 1:
                req.kind = "calendar"
                self._allow(M, "GET")
                self._need(tok, "Calendars.Read", "Calendars.ReadWrite")
                with self.state.lock:
                    return Resp(200, self._calendar_json(req, user, user.calendar_id))
            cal = user.calendar_id
            rest, lrest = rest[1:], lrest[1:]
        elif lrest[:1] == ["calendars"]:
            if len(rest) == 1:
                return self._calendars(req, tok, user)
            with self.state.lock:
                self.state.get_calendar(user, rest[1])
            if len(rest) == 2:
                req.kind = "calendar"
                self._allow(M, "GET")
                self._need(tok, "Calendars.Read", "Calendars.ReadWrite")
                with self.state.lock:
                    return Resp(200, self._calendar_json(req, user, rest[1]))
            cal = rest[1]
            rest, lrest = rest[2:], lrest[2:]
        if lrest == ["events"]:
            if M == "GET":
                return self._list_events(req, tok, user, cal)
            self._allow(M, "POST")
            return self._create_event(req, tok, user, cal)
        if lrest[:1] == ["events"] and len(rest) >= 2:
            if lrest[1] in ("delta", "microsoft.graph.delta()"):
                raise GraphError(400, "BadRequest", "graphsim: events/delta is beta-only and not implemented; "
                                 "use calendarView/delta.")
            if cal is not None:
                with self.state.lock:
                    ev, _ = self.state.find_event(user, rest[1])
                    if ev.calendar_id != cal:
                        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the "
                                         "store.")
            return self._event(req, tok, user, rest[1], lrest[2:])
        if lrest == ["calendarview"]:
            self._allow(M, "GET")
            return self._calendar_view(req, tok, user, cal)
        if lrest in (["calendarview", "delta"], ["calendarview", "microsoft.graph.delta()"]):
            self._allow(M, "GET")
            return self._delta(req, tok, user, rest, cal)
        raise GraphError(400, "BadRequest", "Resource not found for the segment '%s'." % rest[0])

    @staticmethod
    def _allow(method, *allowed):
        if method not in allowed:
            raise GraphError(405, "BadRequest", "Specified HTTP method is not allowed for the request target.",
                             {"Allow": ", ".join(allowed)})

    @staticmethod
    def _need(tok, *perms):
        if not any(p in tok["roles"] for p in perms):
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")

    def _base(self, req):
        return "https://%s/v1.0" % (req.host or "127.0.0.1")

    def _calendar_json(self, req, user, cid):
        d = dict(self.state.get_calendar(user, cid))
        d["@odata.context"] = self._base(req) + "/$metadata#users('%s')/calendars/$entity" % req.segments[2]
        return d

    def _calendars(self, req, tok, user):
        """GET/POST /users/{u}/calendars (https://learn.microsoft.com/graph/api/user-list-calendars,
        https://learn.microsoft.com/graph/api/user-post-calendars)."""
        req.kind = "calendar"
        M = req.method
        ctx = self._base(req) + "/$metadata#users('%s')/calendars" % req.segments[2]
        if M == "GET":
            self._need(tok, "Calendars.Read", "Calendars.ReadWrite")
            pred = _calendar_filter(req.query.get("$filter"))
            with self.state.lock:
                cals = [dict(c) for c in user.calendars.values() if pred(c)]
            return Resp(200, {"@odata.context": ctx, "value": cals})
        self._allow(M, "GET", "POST")
        req.kind = "calendar_create"
        self._need(tok, "Calendars.ReadWrite")
        body = req.json()
        cal = self.state.add_calendar(user, body)
        cal["@odata.context"] = ctx + "/$entity"
        return Resp(201, cal, {"Location": self._base(req) + "/Users('%s')/Calendars('%s')"
                               % (user.key, urllib.parse.quote(cal["id"], safe=""))})

    def _mailbox_settings(self, req, tok, user, sub):
        """GET /users/{u}/mailboxSettings[/timeZone] (MailboxSettings.Read or .ReadWrite), PATCH (ReadWrite);
        https://learn.microsoft.com/graph/api/user-get-mailboxsettings,
        https://learn.microsoft.com/graph/api/user-update-mailboxsettings."""
        req.kind = "mailbox_settings"
        M = req.method
        base = self._base(req) + "/$metadata#users('%s')/mailboxSettings" % req.segments[2]
        if M == "PATCH" and not sub:
            self._need(tok, "MailboxSettings.ReadWrite")
            body = req.json()
            if not isinstance(body, dict):
                raise GraphError(400, "RequestBodyRead", "The request body must be a JSON object.")
            known = {"timeZone", "@odata.context", "@odata.type", "automaticRepliesSetting", "language",
                     "workingHours", "dateFormat", "timeFormat", "delegateMeetingMessageDeliveryOptions"}
            bad = set(body) - known
            if bad:
                raise GraphError(400, "RequestBodyRead", "The property '%s' does not exist on type "
                                 "'microsoft.graph.mailboxSettings'." % sorted(bad)[0])
            if "timeZone" in body:
                self.state.set_time_zone(user, body["timeZone"])
            with self.state.lock:
                d = self.state.mailbox_settings(user)
            return Resp(200, dict({"@odata.context": base}, **{k: d[k] for k in body if k in d}))
        self._allow(M, "GET", "PATCH")
        self._need(tok, "MailboxSettings.Read", "MailboxSettings.ReadWrite")
        with self.state.lock:
            d = self.state.mailbox_settings(user)
        if not sub:
            return Resp(200, dict({"@odata.context": base}, **d))
        names = {k.lower(): k for k in d}
        if len(sub) == 1 and sub[0] in names and M == "GET":
            k = names[sub[0]]
            v = d[k]
            if isinstance(v, dict):
                return Resp(200, dict({"@odata.context": base + "/" + k}, **v))
            return Resp(200, {"@odata.context": base + "/" + k, "value": v})
        raise GraphError(400, "BadRequest", "Resource not found for the segment '%s'." % sub[0])

    def _event_headers(self, prefs):
        applied = prefs.applied_for_event()
        return {"Preference-Applied": ", ".join(applied)} if applied else {}

    # ------------------------------------------------------------ events

    def _create_event(self, req, tok, user, cal=None):
        req.kind = "event_create"
        self._need(tok, "Calendars.ReadWrite")
        body = req.json()
        if body is None:
            raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
        if not isinstance(body, dict):
            raise GraphError(400, "RequestBodyRead", "The request body must be a JSON object.")
        prefs = req.prefs()
        with self.state.lock:
            ev, _ = self.state.create_event(user, body, calendar=cal)
            d = E.render_event(ev, user, prefs)
        d["@odata.context"] = self._base(req) + "/$metadata#users('%s')/events/$entity" % urllib.parse.quote(
            req.segments[2], safe="@")
        hdr = self._event_headers(prefs)
        hdr["Location"] = self._base(req) + "/Users('%s')/Events('%s')" % (user.key, urllib.parse.quote(d["id"], safe=""))
        return Resp(201, d, hdr)

    def _event(self, req, tok, user, eid, tail):
        M = req.method
        prefs = req.prefs()
        st = self.state
        if not tail:
            if M == "GET":
                req.kind = "event_get"
                self._need(tok, "Calendars.Read", "Calendars.ReadWrite")
                ext = parse_expand(req.query.get("$expand"))
                sel = parse_select(req.query.get("$select"))
                with st.lock:
                    ev, dk = st.find_event(user, eid)
                    return Resp(200, E.render_event(ev, user, prefs, dk, ext, sel), self._event_headers(prefs))
            if M == "PATCH":
                req.kind = "event_patch"
                self._need(tok, "Calendars.ReadWrite")
                body = req.json()
                if not isinstance(body, dict):
                    raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
                with st.lock:
                    ev, dk = st.update_event(user, eid, body, req.headers.get("If-Match"))
                    return Resp(200, E.render_event(ev, user, prefs, dk), self._event_headers(prefs))
            if M == "DELETE":
                req.kind = "event_delete"
                self._need(tok, "Calendars.ReadWrite")
                st.delete_event(user, eid, req.headers.get("If-Match"))
                return Resp(204)
            self._allow(M, "GET", "PATCH", "DELETE")
        action = tail[0]
        if action == "cancel":
            req.kind = "event_cancel"
            self._allow(M, "POST")
            self._need(tok, "Calendars.ReadWrite")
            body = req.json() or {}
            if not isinstance(body, dict) or (body.get("comment") is not None and not isinstance(body["comment"], str)):
                raise GraphError(400, "RequestBodyRead", "Invalid cancel body.")
            st.delete_event(user, eid, req.headers.get("If-Match"), cancel=True)
            return Resp(202)
        if action == "permanentdelete":
            req.kind = "event_delete"
            self._allow(M, "POST")
            self._need(tok, "Calendars.ReadWrite")
            st.delete_event(user, eid)
            return Resp(204)
        if action in ("accept", "decline", "tentativelyaccept"):
            req.kind = "event_respond"
            self._allow(M, "POST")
            self._need(tok, "Calendars.ReadWrite")
            resp_map = {"accept": "accepted", "decline": "declined", "tentativelyaccept": "tentativelyAccepted"}
            body = req.json() or {}
            if not isinstance(body, dict):
                raise GraphError(400, "RequestBodyRead", "Invalid body.")
            st.respond(user, eid, resp_map[action])
            return Resp(202)
        if action == "instances":
            req.kind = "event_instances"
            self._allow(M, "GET")
            self._need(tok, "Calendars.Read", "Calendars.ReadWrite")
            ws, we = parse_window(req.query)
            with st.lock:
                ev, dk = st.find_event(user, eid)
                if dk is not None or not ev.is_master:
                    return Resp(200, {"value": []})
                items = E.window_items(user, ws, we, ev.calendar_id)
                keys = sorted((k for k in items if k[0] == "o" and k[1] == ev.key), key=lambda k: items[k][1])
                return Resp(200, {"value": [E.render_event(ev, user, prefs, k[2]) for k in keys]},
                            self._event_headers(prefs))
        raise GraphError(400, "BadRequest", "Resource not found for the segment '%s'." % tail[0])

    def _list_events(self, req, tok, user, cal=None):
        req.kind = "event_list"
        self._need(tok, "Calendars.Read", "Calendars.ReadWrite")
        q = req.query
        prefs = req.prefs()
        pred = parse_filter(q.get("$filter"))
        ext = parse_expand(q.get("$expand"))
        sel = parse_select(q.get("$select"))
        top = _int_param(q, "$top", prefs.maxpagesize or self.state.cfg("list_default_page_size"), 1, 1000)
        skip = _int_param(q, "$skip", 0, 0, 10 ** 9)
        with self.state.lock:
            cal = cal or user.calendar_id     # /events lists the default calendar (as /calendar/events)
            evs = [ev for ev in user.events.values() if not ev.deleted and ev.calendar_id == cal
                   and (pred is None or pred(ev))]
            evs.sort(key=lambda ev: ev.key)
            page = evs[skip:skip + top]
            out = {"@odata.context": self._base(req) + "/$metadata#users('%s')/events" % req.segments[2],
                   "value": [E.render_event(ev, user, prefs, None, ext, sel) for ev in page]}
        if skip + top < len(evs):
            out["@odata.nextLink"] = self._relink(req, {"$skip": str(skip + top), "$top": str(top)})
        return Resp(200, out, self._event_headers(prefs))

    def _relink(self, req, changes):
        params = urllib.parse.parse_qsl(req.raw_query, keep_blank_values=True)
        params = [(k, v) for k, v in params if k not in changes] + list(changes.items())
        return "https://%s%s?%s" % (req.host, req.raw_path, urllib.parse.urlencode(params, quote_via=urllib.parse.quote,
                                                                                 safe="$:'(),/"))

    def _calendar_view(self, req, tok, user, cal=None):
        req.kind = "calendarview"
        self._need(tok, "Calendars.Read", "Calendars.ReadWrite")
        q = req.query
        prefs = req.prefs()
        ws, we = parse_window(q)
        sel = parse_select(q.get("$select"))
        if sel:
            # calendarView cannot $select these two (GRAPH.md 3.1): they are simply not returned
            sel = [x for x in sel if x not in ("createdDateTime", "lastModifiedDateTime")] or ["id"]
        top = _int_param(q, "$top", prefs.maxpagesize or self.state.cfg("calendarview_default_page_size"), 1, 1000)
        skip = _int_param(q, "$skip", 0, 0, 10 ** 9)
        with self.state.lock:
            items = E.window_items(user, ws, we, cal or user.calendar_id)
            keys = sorted(items, key=lambda k: (items[k][1], k[1]))
            page = keys[skip:skip + top]
            out = {"@odata.context": self._base(req) + "/$metadata#users('%s')/calendarView" % req.segments[2],
                   "value": [self._render_key(user, k, prefs, sel=sel) for k in page]}
        if skip + top < len(keys):
            out["@odata.nextLink"] = self._relink(req, {"$skip": str(skip + top)})
        return Resp(200, out, self._event_headers(prefs))

    def _render_key(self, user, key, prefs, sel=None, odata_type=False):
        ev = user.events[key[1]]
        return E.render_event(ev, user, prefs, key[2] if key[0] == "o" else None, None, sel, odata_type)

    # ------------------------------------------------------------ delta (simdelta.py)

    def _delta(self, req, tok, user, rest, cal=None):
        req.kind = "delta"
        self._need(tok, "Calendars.Read", "Calendars.ReadWrite")
        body, headers = simdelta.delta_page(self, req, user, cal or user.calendar_id)
        return Resp(200, body, headers)

    # ------------------------------------------------------------ categories

    def _categories(self, req, tok, user, rest):
        req.kind = "categories"
        st = self.state
        M = req.method
        if not rest:
            if M == "GET":
                self._need(tok, "MailboxSettings.Read", "MailboxSettings.ReadWrite")
                return Resp(200, {"@odata.context": self._base(req) + "/$metadata#users('%s')/outlook/"
                                  "masterCategories" % req.segments[2], "value": st.categories(user)})
            self._allow(M, "GET", "POST")
            self._need(tok, "MailboxSettings.ReadWrite")
            return Resp(201, st.add_category(user, req.json()))
        cid = rest[0]
        if M == "GET":
            self._need(tok, "MailboxSettings.Read", "MailboxSettings.ReadWrite")
            with st.lock:
                return Resp(200, dict(st.find_category(user, cid)))
        self._need(tok, "MailboxSettings.ReadWrite")
        if M == "PATCH":
            return Resp(200, st.patch_category(user, cid, req.json()))
        if M == "DELETE":
            st.delete_category(user, cid)
            return Resp(204)
        self._allow(M, "GET", "PATCH", "DELETE")

    # ------------------------------------------------------------ subscriptions

    def _subscriptions(self, req, tok, segs, low):
        st = self.state
        M = req.method
        prefs = req.prefs()
        ctx = self._base(req) + "/$metadata#subscriptions/$entity"
        if len(segs) == 1:
            if M == "GET":
                req.kind = "subscription_list"
                with st.lock:
                    subs = [s.to_json() for s in st.subs.values() if s.client_id == tok["client_id"]]
                return Resp(200, {"@odata.context": self._base(req) + "/$metadata#subscriptions", "value": subs})
            self._allow(M, "GET", "POST")
            req.kind = "subscription_create"
            sub = S.create_subscription(st, tok, req.json(), prefs.immutable)
            return Resp(201, dict(sub.to_json(), **{"@odata.context": ctx}))
        sid = segs[1]
        if len(segs) == 3 and low[2] == "reauthorize":
            req.kind = "subscription_reauthorize"
            self._allow(M, "POST")
            S.reauthorize_subscription(st, tok, sid)
            return Resp(204)
        if len(segs) != 2:
            raise GraphError(400, "BadRequest", "Resource not found for the segment '%s'." % segs[-1])
        if M == "GET":
            req.kind = "subscription_get"
            return Resp(200, dict(S.get_subscription(st, tok, sid).to_json(), **{"@odata.context": ctx}))
        if M == "PATCH":
            req.kind = "subscription_patch"
            return Resp(200, dict(S.patch_subscription(st, tok, sid, req.json()).to_json(), **{"@odata.context": ctx}))
        if M == "DELETE":
            req.kind = "subscription_delete"
            S.delete_subscription(st, tok, sid)
            return Resp(204)
        self._allow(M, "GET", "PATCH", "DELETE")

    # ------------------------------------------------------------ $batch

    def _batch(self, req):
        body = req.json()
        if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
            raise GraphError(400, "BadRequest", "Invalid batch payload format.")
        reqs = body["requests"]
        if len(reqs) > int(self.state.cfg("batch_max_requests")):
            raise GraphError(400, "BadRequest", "Number of requests in a batch exceeds the maximum of %d."
                             % self.state.cfg("batch_max_requests"))
        seen = {}
        for r in reqs:
            if not isinstance(r, dict) or not isinstance(r.get("id"), str) or not r["id"] \
                    or not isinstance(r.get("method"), str) or not isinstance(r.get("url"), str):
                raise GraphError(400, "BadRequest", "Each batch request needs id, method and url.")
            if r["id"].lower() in seen:
                raise GraphError(400, "BadRequest", "Request id '%s' is duplicated in the batch." % r["id"])
            if "body" in r and not any(k.lower() == "content-type" for k in (r.get("headers") or {})):
                raise GraphError(400, "BadRequest", "Content-Type header must be specified for a request with "
                                 "a body.")
            seen[r["id"].lower()] = r
        for r in reqs:
            for d in r.get("dependsOn") or []:
                if not isinstance(d, str) or d.lower() not in seen:
                    raise GraphError(400, "BadRequest", "Request '%s' depends on unknown request '%s'."
                                     % (r["id"], d))
        # execute in waves: every request whose dependencies are done runs in the current wave,
        # at most 4 at a time (Outlook's per-batch parallelism, GRAPH.md 7.3)
        status_of, responses, pending = {}, [], list(reqs)
        while pending:
            wave = [r for r in pending if all(d.lower() in status_of for d in r.get("dependsOn") or [])]
            if not wave:
                raise GraphError(400, "BadRequest", "The batch contains a dependency cycle.")
            runnable = []
            for r in wave:
                pending.remove(r)
                if any(status_of[d.lower()] >= 400 for d in r.get("dependsOn") or []):
                    status_of[r["id"].lower()] = 424
                    responses.append({"id": r["id"], "status": 424, "headers": {"Content-Type": "application/json"},
                                      "body": {"error": {"code": "FailedDependency",
                                                         "message": "Failed dependency."}}})
                else:
                    runnable.append(r)
            if len(runnable) == 1:
                results = [self._inner(req, runnable[0])]
            else:
                with ThreadPoolExecutor(max_workers=4, thread_name_prefix="batch") as pool:
                    results = list(pool.map(lambda r: self._inner(req, r), runnable))
            for r, res in zip(runnable, results):
                status_of[r["id"].lower()] = res["status"]
                responses.append(res)
        return Resp(200, {"responses": responses})

    def _inner(self, outer, r):
        url = r["url"]
        if re.match(r"^[a-z]+://", url, re.I):
            return {"id": r["id"], "status": 400, "headers": {"Content-Type": "application/json"},
                    "body": {"error": {"code": "BadRequest", "message": "Batch request URLs must be relative."}}}
        hdrs = [(k, str(v)) for k, v in (r.get("headers") or {}).items()]
        if not any(k.lower() == "authorization" for k, _ in hdrs):
            hdrs.append(("Authorization", outer.headers.get("Authorization") or ""))
        body = r.get("body")
        raw = b""
        if body is not None:
            raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        ireq = Req(r["method"], "/v1.0/" + url.lstrip("/"), CIDict(hdrs), raw, outer.host)
        ireq.client_request_id = outer.client_request_id
        resp = self.handle(ireq, inner=True)
        out = {"id": r["id"], "status": resp.status,
               "headers": {k: v for k, v in resp.headers.items()
                           if k.lower() not in ("request-id", "client-request-id", "x-ms-ags-diagnostic")}}
        if resp.body is not None:
            out["headers"].setdefault("Content-Type", resp.ctype or JSON_CT)
            out["body"] = resp.body
        return out


_CALNAME_RE = re.compile(r"^\s*name\s+eq\s+'((?:[^']|'')*)'\s*$", re.I)


def _calendar_filter(value):
    """$filter on calendars: only `name eq '...'` (case-insensitive, as Exchange compares folder names)."""
    if value is None:
        return lambda c: True
    m = _CALNAME_RE.match(value)
    if not m:
        raise GraphError(400, "ErrorInvalidUrlQueryFilter", "Unsupported filter on calendars: %s" % value)
    want = m.group(1).replace("''", "'").lower()
    return lambda c: c["name"].lower() == want


def _user_json(u, select=None):
    d = {"businessPhones": [], "displayName": u.display_name, "givenName": None, "jobTitle": None,
         "mail": u.mail, "mobilePhone": None, "officeLocation": None, "preferredLanguage": None, "surname": None,
         "userPrincipalName": u.upn, "id": u.key}
    if select:
        d = {k: v for k, v in d.items() if k in select or k == "id"}
    return d


def _malform(body, spec):
    field = spec.get("field", "start")
    mode = spec.get("mode", "number")
    if isinstance(body.get("value"), list):
        body["value"] = copy.deepcopy(body["value"])     # rendered events share nested objects
        targets = body["value"]
    else:
        for k, v in list(body.items()):
            body[k] = copy.deepcopy(v)
        targets = [body]
    for t in targets:
        if not isinstance(t, dict) or "@removed" in t:
            continue
        path = field.split(".")
        obj = t
        for p in path[:-1]:
            obj = obj.get(p) if isinstance(obj, dict) else None
        if not isinstance(obj, dict):
            continue
        last = path[-1]
        if mode == "missing":
            obj.pop(last, None)
        elif mode == "null":
            obj[last] = None
        elif mode == "string":
            obj[last] = "not-a-%s" % last
        elif mode == "object":
            obj[last] = {"unexpected": True}
        else:
            obj[last] = 1700000000
