"""Event model of the Graph simulator: validation of request bodies, rendering, recurrence expansion.

Nothing here takes the state lock; callers (simstate.State) hold it.
"""
import base64
import datetime as _dt
import hashlib
import html
import re

from simcore import (GraphError, UTC, change_key, fmt_ts, guid, ical_uid, immutable_id,
                     parse_dttz, render_dttz, resolve_zone, rest_id)

ENUMS = {
    "importance": ("low", "normal", "high"),
    "sensitivity": ("normal", "personal", "private", "confidential"),
    "showAs": ("free", "tentative", "busy", "oof", "workingElsewhere", "unknown"),
    "onlineMeetingProvider": ("unknown", "teamsForBusiness", "skypeForBusiness", "skypeForConsumer"),
}
SIMPLE_DEFAULTS = {
    "subject": "",
    "importance": "normal",
    "sensitivity": "normal",
    "showAs": "busy",
    "isAllDay": False,
    "isReminderOn": True,
    "reminderMinutesBeforeStart": 15,
    "responseRequested": True,
    "allowNewTimeProposals": True,
    "hideAttendees": False,
    "isOnlineMeeting": False,
    "onlineMeetingProvider": "unknown",
    "isDraft": False,
}
SIMPLE_TYPES = {
    "subject": str, "importance": str, "sensitivity": str, "showAs": str, "onlineMeetingProvider": str,
    "isAllDay": bool, "isReminderOn": bool, "responseRequested": bool, "allowNewTimeProposals": bool,
    "hideAttendees": bool, "isOnlineMeeting": bool, "isDraft": bool, "reminderMinutesBeforeStart": int,
}
# writable through Graph (POST/PATCH)
WRITABLE = set(SIMPLE_TYPES) - {"isDraft"} | {
    "body", "start", "end", "attendees", "categories", "location", "locations", "recurrence",
    "singleValueExtendedProperties", "multiValueExtendedProperties", "transactionId", "organizer",
}
# properties Graph knows but that a client cannot set; silently ignored (as Graph does for most of them)
READ_ONLY = {
    "id", "@odata.etag", "@odata.type", "@odata.context", "changeKey", "createdDateTime",
    "lastModifiedDateTime", "iCalUId", "bodyPreview", "isOrganizer", "type", "seriesMasterId",
    "originalStart", "originalStartTimeZone", "originalEndTimeZone", "webLink", "hasAttachments",
    "onlineMeeting", "onlineMeetingUrl", "responseStatus", "isCancelled", "isDraft", "uid",
    "occurrenceId", "cancelledOccurrences", "exceptionOccurrences", "extensions", "attachments",
    "calendar", "instances",
}
# additionally writable by the control API (acting as Outlook / the organizer)
CONTROL_WRITABLE = {"isCancelled", "responseStatus", "isOrganizer", "isDraft"}

EXT_ID_RE = re.compile(
    r"^(String|Integer|Boolean|SystemTime|Binary|Double|Float|Currency|Short|Long|CLSID|Object)\s+"
    r"(?:\{([0-9A-Fa-f-]{36})\}\s+(Name\s+\S.*|Id\s+0x[0-9A-Fa-f]+)|0x[0-9A-Fa-f]+)$")
PATTERNS = ("daily", "weekly", "absoluteMonthly", "absoluteYearly", "relativeMonthly", "relativeYearly")
INDEXES = ("first", "second", "third", "fourth", "last")
DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")


def ext_key(prop_id):
    """Canonical comparison key of an extended property id (type/GUID case-insensitive, name exact)."""
    m = EXT_ID_RE.match(prop_id.strip())
    if not m:
        return None
    typ, g, rest = m.group(1).lower(), (m.group(2) or "").lower(), m.group(3) or ""
    if rest.lower().startswith("name"):
        rest = "name " + rest[4:].strip()
    elif rest:
        rest = "id " + rest[2:].strip().lower()
    else:
        rest = prop_id.strip().split()[-1].lower()
    return "%s|%s|%s" % (typ, g, rest)


def _bad_type(field, value, edm):
    raise GraphError(400, "RequestBodyRead",
                     "Cannot convert the literal '%s' to the expected type '%s' for property '%s'."
                     % (value, edm, field))


class Exc:
    """Override of one occurrence (exception) or its cancellation."""

    def __init__(self, seq):
        self.overrides = {}
        self.cancelled = False
        self.seq = seq
        self.change_key = change_key()
        self.last_modified = _dt.datetime.now(UTC)


class Event:
    def __init__(self, key, user):
        self.key = key
        self.user_key = user.key
        self.imm_id = immutable_id()
        self.rest_id = rest_id()          # id while in the calendar
        self.moved_rest_id = None         # id after a move to Deleted Items
        self.ical_uid = ical_uid()
        self.change_key = change_key()
        self.created = _dt.datetime.now(UTC)
        self.last_modified = self.created
        self.seq = 0
        self.created_seq = 0
        self.deleted = False
        self.deleted_at = None
        self.transaction_id = None
        self.props = dict(SIMPLE_DEFAULTS)
        self.props.update({"categories": [], "attendees": [], "body": ("text", ""),
                           "location": "", "recurrence": None})
        self.start = None
        self.end = None
        self.start_tz = "UTC"
        self.end_tz = "UTC"
        self.organizer = {"emailAddress": {"name": user.display_name, "address": user.mail}}
        self.is_organizer = True
        self.is_cancelled = False
        self.response_status = {"response": "organizer", "time": "0001-01-01T00:00:00Z"}
        self.ext = {}                      # ext_key -> (original id, value)
        self.exceptions = {}               # date key -> Exc
        self.meeting_key = None            # links organizer/attendee copies
        self.calendar_id = user.calendar_id  # the calendar (folder) holding the item; default calendar
        self.render_cache = {}             # rendered JSON per (occurrence, prefs), for the current seq

    @property
    def is_master(self):
        return self.props.get("recurrence") is not None


# ---------------------------------------------------------------- validation


def apply_fields(ev, body, user, creating, control=False):
    """Validate a POST/PATCH body and apply it to ev. Returns set of changed field names."""
    if not isinstance(body, dict):
        raise GraphError(400, "RequestBodyRead", "The request body must be a JSON object.")
    changed = set()
    allowed = WRITABLE | (CONTROL_WRITABLE if control else set())
    for k in body:
        if k in allowed or k.startswith("@odata."):
            continue
        if k in READ_ONLY:
            continue
        raise GraphError(400, "RequestBodyRead",
                         "The property '%s' does not exist on type 'microsoft.graph.event'. Make sure to only "
                         "use property names that are defined by the type or mark the type as open type." % k)
    for k, typ in SIMPLE_TYPES.items():
        if k not in body or (k == "isDraft" and not control):
            continue
        v = body[k]
        if v is None and k == "subject":
            v = ""
        if typ is bool and not isinstance(v, bool):
            _bad_type(k, v, "Edm.Boolean")
        if typ is int and (isinstance(v, bool) or not isinstance(v, int)):
            _bad_type(k, v, "Edm.Int32")
        if typ is str and not isinstance(v, str):
            _bad_type(k, v, "Edm.String")
        if k in ENUMS and v not in ENUMS[k]:
            raise GraphError(400, "RequestBodyRead",
                             "Requested value '%s' was not found for property '%s'." % (v, k))
        if ev.props.get(k) != v:
            ev.props[k] = v
            changed.add(k)
    if "body" in body:
        b = body["body"]
        if b is None:
            b = {"contentType": "text", "content": ""}
        if not isinstance(b, dict) or not isinstance(b.get("content", ""), str):
            _bad_type("body", b, "microsoft.graph.itemBody")
        ct = (b.get("contentType") or "text").lower()
        if ct not in ("text", "html"):
            raise GraphError(400, "RequestBodyRead", "Requested value '%s' was not found." % ct)
        nb = (ct, b.get("content") or "")
        if ev.props["body"] != nb:
            ev.props["body"] = nb
            changed.add("body")
    for fld in ("start", "end"):
        if fld in body:
            dt, zone = parse_dttz(body[fld], fld)
            if fld == "start":
                if ev.start != dt or ev.start_tz != zone:
                    changed.add("start")
                ev.start, ev.start_tz = dt, zone
            else:
                if ev.end != dt or ev.end_tz != zone:
                    changed.add("end")
                ev.end, ev.end_tz = dt, zone
    if creating:
        if ev.start is None or ev.end is None:
            raise GraphError(400, "ErrorInvalidRequest",
                             "Your request can't be completed. The start and end time of the event are required.")
    if ev.start is not None and ev.end is not None and ev.end < ev.start:
        raise GraphError(400, "ErrorInvalidRequest",
                         "Your request can't be completed. The end time must be after the start time.")
    if ev.props.get("isAllDay") and ("start" in changed or "end" in changed or "isAllDay" in changed):
        for dt, zone in ((ev.start, ev.start_tz), (ev.end, ev.end_tz)):
            loc = dt.astimezone(resolve_zone(zone) or UTC)
            if (loc.hour, loc.minute, loc.second, loc.microsecond) != (0, 0, 0, 0):
                raise GraphError(400, "ErrorPropertyValidationFailure",
                                 "At least one property failed validation. (all-day events must start and "
                                 "end at midnight)")
    if "categories" in body:
        cats = body["categories"]
        if cats is None:
            cats = []
        if not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
            _bad_type("categories", cats, "Collection(Edm.String)")
        if ev.props["categories"] != cats:
            ev.props["categories"] = list(cats)
            changed.add("categories")
    if "attendees" in body:
        att = _norm_attendees(body["attendees"], ev.props["attendees"])
        if att != ev.props["attendees"]:
            ev.props["attendees"] = att
            changed.add("attendees")
    if "location" in body or "locations" in body:
        loc = body.get("location")
        if loc is None and isinstance(body.get("locations"), list) and body["locations"]:
            loc = body["locations"][0]
        name = ""
        if isinstance(loc, dict):
            name = loc.get("displayName") or ""
            if not isinstance(name, str):
                _bad_type("location", name, "Edm.String")
        elif loc is not None:
            _bad_type("location", loc, "microsoft.graph.location")
        if ev.props["location"] != name:
            ev.props["location"] = name
            changed.add("location")
    if "organizer" in body and (control or creating):
        org = body["organizer"]
        if not isinstance(org, dict) or not isinstance(org.get("emailAddress"), dict):
            _bad_type("organizer", org, "microsoft.graph.recipient")
        ev.organizer = {"emailAddress": {"name": org["emailAddress"].get("name") or "",
                                         "address": org["emailAddress"].get("address") or ""}}
        if control and "isOrganizer" not in body:
            ev.is_organizer = (ev.organizer["emailAddress"]["address"].lower() == user.mail.lower())
            if not ev.is_organizer:
                ev.response_status = {"response": "notResponded", "time": "0001-01-01T00:00:00Z"}
        changed.add("organizer")
    if control:
        if "isCancelled" in body:
            if not isinstance(body["isCancelled"], bool):
                _bad_type("isCancelled", body["isCancelled"], "Edm.Boolean")
            if ev.is_cancelled != body["isCancelled"]:
                ev.is_cancelled = body["isCancelled"]
                changed.add("isCancelled")
        if "isOrganizer" in body:
            ev.is_organizer = bool(body["isOrganizer"])
            changed.add("isOrganizer")
        if isinstance(body.get("responseStatus"), dict):
            ev.response_status = {"response": body["responseStatus"].get("response", "none"),
                                  "time": body["responseStatus"].get("time", fmt_ts(_dt.datetime.now(UTC)))}
            changed.add("responseStatus")
    if "singleValueExtendedProperties" in body:
        props = body["singleValueExtendedProperties"] or []
        if not isinstance(props, list):
            _bad_type("singleValueExtendedProperties", props, "Collection(microsoft.graph.singleValueLegacyExtendedProperty)")
        for p in props:
            if not isinstance(p, dict) or not isinstance(p.get("id"), str):
                raise GraphError(400, "RequestBodyRead", "Invalid singleValueExtendedProperties entry.")
            k = ext_key(p["id"])
            if k is None:
                raise GraphError(400, "ErrorInvalidProperty",
                                 "The extended property id '%s' is not valid." % p["id"])
            val = p.get("value")
            if val is not None and not isinstance(val, str):
                _bad_type("value", val, "Edm.String")
            if val is None:
                if ev.ext.pop(k, None) is not None:
                    changed.add("singleValueExtendedProperties")
            elif ev.ext.get(k, (None, None))[1] != val:
                ev.ext[k] = (p["id"], val)
                changed.add("singleValueExtendedProperties")
    if "transactionId" in body:
        tx = body["transactionId"]
        if tx is not None and not isinstance(tx, str):
            _bad_type("transactionId", tx, "Edm.String")
        if creating:
            ev.transaction_id = tx
        elif tx is not None and tx != ev.transaction_id:
            raise GraphError(400, "ErrorInvalidPropertyUpdateSentToServer",
                             "transactionId cannot be changed after the event was created.")
    if "recurrence" in body:
        rec = body["recurrence"]
        if rec is not None:
            rec = _norm_recurrence(rec, ev)
        if rec != ev.props["recurrence"]:
            ev.props["recurrence"] = rec
            changed.add("recurrence")
    return changed


def _norm_attendees(att, old):
    if att is None:
        return []
    if not isinstance(att, list):
        _bad_type("attendees", att, "Collection(microsoft.graph.attendee)")
    if len(att) > 500:
        raise GraphError(400, "ErrorInvalidRequest", "An event can have at most 500 attendees.")
    old_status = {a["emailAddress"]["address"].lower(): a["status"] for a in old}
    out = []
    for a in att:
        if not isinstance(a, dict) or not isinstance(a.get("emailAddress"), dict):
            _bad_type("attendees", a, "microsoft.graph.attendee")
        addr = a["emailAddress"].get("address")
        if not isinstance(addr, str) or "@" not in addr:
            raise GraphError(400, "ErrorInvalidRecipients",
                             "At least one recipient isn't valid., Recipient '%s' isn't resolved." % addr)
        typ = a.get("type") or "required"
        if typ not in ("required", "optional", "resource"):
            raise GraphError(400, "RequestBodyRead", "Requested value '%s' was not found." % typ)
        status = a.get("status") if isinstance(a.get("status"), dict) else None
        if status is None:
            status = old_status.get(addr.lower(), {"response": "none", "time": "0001-01-01T00:00:00Z"})
        out.append({"type": typ, "status": dict(status),
                    "emailAddress": {"name": a["emailAddress"].get("name") or addr, "address": addr}})
    return out


def _norm_recurrence(rec, ev):
    def bad(msg):
        raise GraphError(400, "ErrorInvalidRequest", "Recurrence: " + msg)
    if not isinstance(rec, dict) or not isinstance(rec.get("pattern"), dict) or not isinstance(rec.get("range"), dict):
        bad("pattern and range are required")
    p, r = dict(rec["pattern"]), dict(rec["range"])
    if p.get("type") not in PATTERNS:
        bad("pattern.type '%s' is invalid" % p.get("type"))
    interval = p.get("interval", 1)
    if not isinstance(interval, int) or interval < 1 or interval > 99:
        bad("interval must be between 1 and 99")
    p["interval"] = interval
    days = p.get("daysOfWeek") or []
    if not isinstance(days, list) or any(d not in DAYS for d in days):
        bad("daysOfWeek invalid")
    if p["type"] == "weekly" and not days:
        bad("weekly pattern needs daysOfWeek")
    p["daysOfWeek"] = days
    p.setdefault("firstDayOfWeek", "sunday")
    if p["firstDayOfWeek"] not in DAYS:
        bad("firstDayOfWeek invalid")
    if p["type"] in ("relativeMonthly", "relativeYearly"):
        if not days:
            bad("%s pattern needs daysOfWeek" % p["type"])
        if p.get("index", "first") not in INDEXES:
            bad("index invalid")
        if p["type"] == "relativeYearly" and not (isinstance(p.get("month"), int) and 1 <= p["month"] <= 12):
            bad("month invalid")
    if p["type"] in ("absoluteMonthly", "absoluteYearly"):
        dom = p.get("dayOfMonth")
        if not isinstance(dom, int) or not 1 <= dom <= 31:
            bad("dayOfMonth invalid")
        if p["type"] == "absoluteYearly" and not (isinstance(p.get("month"), int) and 1 <= p["month"] <= 12):
            bad("month invalid")
    p.setdefault("dayOfMonth", 0)
    p.setdefault("month", 0)
    p.setdefault("index", "first")
    if r.get("type") not in ("endDate", "noEnd", "numbered"):
        bad("range.type invalid")
    try:
        sd = _dt.date.fromisoformat(r.get("startDate", ""))
    except (TypeError, ValueError):
        bad("range.startDate invalid")
    if ev.start is not None:
        tz = resolve_zone(ev.start_tz) or UTC
        if ev.start.astimezone(tz).date() != sd:
            bad("range.startDate must match the date of the event start")
    if r["type"] == "endDate":
        try:
            ed = _dt.date.fromisoformat(r.get("endDate", ""))
        except (TypeError, ValueError):
            bad("range.endDate invalid")
        if ed < sd:
            bad("range.endDate before startDate")
    else:
        r.setdefault("endDate", "0001-01-01")
    if r["type"] == "numbered":
        n = r.get("numberOfOccurrences")
        if not isinstance(n, int) or n < 1:
            bad("numberOfOccurrences invalid")
    else:
        r.setdefault("numberOfOccurrences", 0)
    r.setdefault("recurrenceTimeZone", ev.start_tz)
    return {"pattern": p, "range": r}


# ---------------------------------------------------------------- recurrence


def _candidate_dates(pat, start_date):
    t = pat["type"]
    iv = pat["interval"]
    if t == "daily":
        d = start_date
        while True:
            yield d
            d += _dt.timedelta(days=iv)
    elif t == "weekly":
        fdw = DAYS.index(pat["firstDayOfWeek"])
        # python: monday=0..sunday=6 ; DAYS: sunday=0..saturday=6
        sd_idx = (start_date.weekday() + 1) % 7
        week0 = start_date - _dt.timedelta(days=(sd_idx - fdw) % 7)
        offs = sorted((DAYS.index(d) - fdw) % 7 for d in pat["daysOfWeek"])
        w = week0
        while True:
            for o in offs:
                d = w + _dt.timedelta(days=o)
                if d >= start_date:
                    yield d
            w += _dt.timedelta(days=7 * iv)
    elif t == "absoluteMonthly":
        y, m = start_date.year, start_date.month
        while True:
            try:
                d = _dt.date(y, m, pat["dayOfMonth"])
                if d >= start_date:
                    yield d
            except ValueError:
                pass
            m += iv
            while m > 12:
                m -= 12
                y += 1
            if y > 9000:
                return
    elif t in ("relativeMonthly", "relativeYearly"):
        y, m = start_date.year, (start_date.month if t == "relativeMonthly" else pat["month"])
        step = iv if t == "relativeMonthly" else 12 * iv
        while y < 9000:
            d = _relative_day(y, m, pat["daysOfWeek"], pat.get("index", "first"))
            if d is not None and d >= start_date:
                yield d
            m += step
            while m > 12:
                m -= 12
                y += 1
    elif t == "absoluteYearly":
        y = start_date.year
        while y < 9000:
            try:
                d = _dt.date(y, pat["month"], pat["dayOfMonth"])
                if d >= start_date:
                    yield d
            except ValueError:
                pass
            y += pat["interval"]


def _relative_day(y, m, days, index):
    """The index-th (first..fourth, last) day of month y-m that is one of days."""
    wanted = {(DAYS.index(d) + 6) % 7 for d in days}      # python weekday numbers
    first = _dt.date(y, m, 1)
    nxt = _dt.date(y + (m == 12), m % 12 + 1, 1)
    cands = [first + _dt.timedelta(days=i) for i in range((nxt - first).days)
             if (first + _dt.timedelta(days=i)).weekday() in wanted]
    if not cands:
        return None
    if index == "last":
        return cands[-1]
    i = INDEXES.index(index)
    return cands[i] if i < len(cands) else None


def base_occurrences(ev, ws, we, limit=20000):
    """Unmodified occurrences of master ev overlapping [ws, we): list of (datekey, start, end)."""
    rec = ev.props["recurrence"]
    tz = resolve_zone(ev.start_tz) or UTC
    local0 = ev.start.astimezone(tz)
    dur = ev.end - ev.start
    rng = rec["range"]
    sd = _dt.date.fromisoformat(rng["startDate"])
    ed = _dt.date.fromisoformat(rng["endDate"]) if rng["type"] == "endDate" else None
    count = rng["numberOfOccurrences"] if rng["type"] == "numbered" else None
    out = []
    n = 0
    for d in _candidate_dates(rec["pattern"], sd):
        n += 1
        if (ed is not None and d > ed) or (count is not None and n > count) or n > limit:
            break
        st = _dt.datetime.combine(d, local0.time().replace(tzinfo=None), tz).astimezone(UTC)
        en = st + dur
        if st >= we:
            break
        if overlaps(st, en, ws, we):
            out.append((d.isoformat(), st, en))
    return out


def base_occurrence_times(ev, datekey):
    tz = resolve_zone(ev.start_tz) or UTC
    local0 = ev.start.astimezone(tz)
    st = _dt.datetime.combine(_dt.date.fromisoformat(datekey), local0.time().replace(tzinfo=None),
                              tz).astimezone(UTC)
    return st, st + (ev.end - ev.start)


def is_valid_occurrence_date(ev, datekey):
    st, _ = base_occurrence_times(ev, datekey)
    return any(k == datekey for k, _, _ in base_occurrences(ev, st - _dt.timedelta(seconds=1),
                                                             st + _dt.timedelta(seconds=1)))


def overlaps(st, en, ws, we):
    if st == en:
        return ws <= st < we
    return st < we and en > ws


def occurrence_times(ev, datekey):
    exc = ev.exceptions.get(datekey)
    st, en = base_occurrence_times(ev, datekey)
    if exc is not None:
        st = exc.overrides.get("_start", st)
        en = exc.overrides.get("_end", en)
    return st, en


def occ_ids(ev, datekey):
    """Deterministic (immutable, rest) ids of an occurrence."""
    h = hashlib.sha256((ev.imm_id + "|" + datekey).encode()).digest()
    imm = base64.urlsafe_b64encode(b"\x00\x00\x09\x00\x2e\x07" + h + h[:16] + datekey.encode()).decode()
    h2 = hashlib.sha256((ev.rest_id + "|" + datekey).encode()).digest()
    rest = base64.b64encode(b"\x00\x00\x03\x24\x00\x07" + h2 + h2[:16] + datekey.encode()).decode()
    return imm, rest


def window_items(user, ws, we, cal=None):
    """Items a calendarView over [ws, we) shows: {key: (seq, start, end)} (read-only, cached per seq).

    key = ("s", event_key) for single instances, ("o", master_key, datekey) for occurrences/exceptions.
    cal: only items of that calendar id (None = every calendar of the mailbox).
    """
    hit = user.win_cache.get((ws, we, cal))
    if hit is not None and hit[0] == user.seq:
        return hit[1]
    out = _window_items(user, ws, we, cal)
    if len(user.win_cache) >= 8:
        user.win_cache.clear()
    user.win_cache[(ws, we, cal)] = (user.seq, out)
    return out


def _window_items(user, ws, we, cal):
    out = {}
    for ev in user.events.values():
        if ev.deleted or (cal is not None and ev.calendar_id != cal):
            continue
        if ev.is_master:
            for dk, st, en in base_occurrences(ev, ws, we):
                if dk in ev.exceptions:
                    continue
                out[("o", ev.key, dk)] = (ev.seq, st, en)
                ids = occ_ids(ev, dk)
                user.occ_index[ids[0]] = (ev.key, dk)
                user.occ_index[ids[1]] = (ev.key, dk)
            for dk, exc in ev.exceptions.items():
                if exc.cancelled:
                    continue
                st, en = occurrence_times(ev, dk)
                if overlaps(st, en, ws, we):
                    out[("o", ev.key, dk)] = (max(ev.seq, exc.seq), st, en)
                    ids = occ_ids(ev, dk)
                    user.occ_index[ids[0]] = (ev.key, dk)
                    user.occ_index[ids[1]] = (ev.key, dk)
        else:
            if overlaps(ev.start, ev.end, ws, we):
                out[("s", ev.key)] = (ev.seq, ev.start, ev.end)
    return out


# ---------------------------------------------------------------- rendering

_TAG_RE = re.compile(r"<[^>]+>")


def _html_of(ct, content):
    if ct == "html":
        if content.lstrip().lower().startswith("<html"):
            return content
        inner = content
    else:
        inner = html.escape(content).replace("\r\n", "\n").replace("\n", "<br>\r\n")
    return ("<html>\r\n<head>\r\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">\r\n"
            "</head>\r\n<body>\r\n%s\r\n</body>\r\n</html>\r\n" % inner)


def _text_of(ct, content):
    if ct == "text":
        return content
    c = re.sub(r"(?is)<head.*?</head>", "", content)
    c = re.sub(r"(?i)<br\s*/?>", "\n", c)
    return html.unescape(_TAG_RE.sub("", c)).strip()


def _location(name):
    if not name:
        return {"displayName": "", "locationType": "default", "uniqueIdType": "unknown",
                "address": {}, "coordinates": {}}, []
    return ({"displayName": name, "locationType": "default", "uniqueId": name, "uniqueIdType": "private"},
            [{"displayName": name, "locationType": "default", "uniqueId": name, "uniqueIdType": "private"}])


def render_event(ev, user, prefs, datekey=None, ext_filter=None, select=None, odata_type=False):
    """Graph JSON of a single instance / series master (datekey None) or of an occurrence.

    Returns a new top-level dict; nested objects may be shared with a per-event cache (valid for
    the event's current change sequence), so callers must not mutate nested values in place.
    """
    exc = ev.exceptions.get(datekey) if datekey else None
    key = (datekey, exc.seq if exc else 0, bool(prefs.immutable), prefs.timezone, bool(prefs.body_text),
           odata_type)
    cache = ev.render_cache
    if cache.get("_seq") != ev.seq:
        cache.clear()
        cache["_seq"] = ev.seq
    d = cache.get(key)
    if d is None:
        d = cache[key] = _render(ev, user, prefs, datekey, odata_type)
    d = dict(d)
    if ext_filter is not None:
        vals = [{"id": orig, "value": val} for k, (orig, val) in ev.ext.items() if k in ext_filter]
        if vals:
            d["singleValueExtendedProperties"] = vals
    if select:
        keep = {"@odata.type", "@odata.etag", "id", "singleValueExtendedProperties"} | set(select)
        d = {k: v for k, v in d.items() if k in keep}
    return d


def _render(ev, user, prefs, datekey, odata_type):
    props = ev.props
    exc = ev.exceptions.get(datekey) if datekey else None
    ov = exc.overrides if exc else {}
    zone = prefs.timezone or "UTC"
    if datekey is None:
        eid = ev.imm_id if prefs.immutable else ev.rest_id
        st, en = ev.start, ev.end
        ck, lm = ev.change_key, ev.last_modified
        typ = "seriesMaster" if ev.is_master else "singleInstance"
        master_id = None
        ical = ev.ical_uid
    else:
        imm, rst = occ_ids(ev, datekey)
        eid = imm if prefs.immutable else rst
        st, en = occurrence_times(ev, datekey)
        ck, lm = (exc.change_key, exc.last_modified) if exc and exc.seq > ev.seq else (ev.change_key, ev.last_modified)
        typ = "exception" if exc else "occurrence"
        master_id = ev.imm_id if prefs.immutable else ev.rest_id
        ical = ev.ical_uid[:-16] + hashlib.sha256((ev.ical_uid + datekey).encode()).hexdigest()[:16].upper()

    def p(name):
        return ov.get(name, props.get(name))
    ct, content = p("body")
    text = _text_of(ct, content)
    if prefs.body_text:
        body = {"contentType": "text", "content": text}
    else:
        body = {"contentType": "html", "content": _html_of(ct, content)}
    loc, locs = _location(p("location"))
    subject = p("subject")
    cancelled = ov.get("isCancelled", ev.is_cancelled)
    d = {}
    if odata_type:
        d["@odata.type"] = "#microsoft.graph.event"
    d.update({
        "@odata.etag": 'W/"%s"' % ck,
        "id": eid,
        "createdDateTime": fmt_ts(ev.created),
        "lastModifiedDateTime": fmt_ts(lm),
        "changeKey": ck,
        "categories": list(p("categories")),
        "transactionId": ev.transaction_id,
        "originalStartTimeZone": ev.start_tz,
        "originalEndTimeZone": ev.end_tz,
        "iCalUId": ical,
        "reminderMinutesBeforeStart": p("reminderMinutesBeforeStart"),
        "isReminderOn": p("isReminderOn"),
        "hasAttachments": False,
        "subject": subject,
        "bodyPreview": text[:255],
        "importance": p("importance"),
        "sensitivity": p("sensitivity"),
        "isAllDay": p("isAllDay"),
        "isCancelled": cancelled,
        "isOrganizer": ev.is_organizer,
        "responseRequested": p("responseRequested"),
        "seriesMasterId": master_id,
        "showAs": p("showAs"),
        "type": typ,
        "webLink": "https://outlook.office365.com/owa/?itemid=%s&exvsurl=1&path=/calendar/item"
                   % eid.replace("/", "%2F").replace("+", "%2B").replace("=", "%3D"),
        "onlineMeetingUrl": None,
        "isOnlineMeeting": p("isOnlineMeeting"),
        "onlineMeetingProvider": p("onlineMeetingProvider"),
        "allowNewTimeProposals": p("allowNewTimeProposals"),
        "isDraft": p("isDraft"),
        "hideAttendees": p("hideAttendees"),
        "responseStatus": dict(ev.response_status),
        "body": body,
        "start": _render_time(ev, st, ev.start_tz, zone, p("isAllDay")),
        "end": _render_time(ev, en, ev.end_tz, zone, p("isAllDay")),
        "location": loc,
        "locations": locs,
        "recurrence": props["recurrence"] if (datekey is None and ev.is_master) else None,
        "attendees": [dict(a, status=dict(a["status"]), emailAddress=dict(a["emailAddress"]))
                      for a in p("attendees")],
        "organizer": {"emailAddress": dict(ev.organizer["emailAddress"])},
        "onlineMeeting": None,
    })
    if datekey is not None:
        d["originalStart"] = fmt_ts(base_occurrence_times(ev, datekey)[0])
    return d


def _render_time(ev, t, own_zone, zone, all_day):
    """dateTimeTimeZone of a start/end. All-day events come back floating (Microsoft Q&A "Graph API -
    Events with property isAllDay", 2022-08; msgraph-sdk-javascript#1158): midnight of the date in the
    zone they were created in, labelled with the requested zone (or UTC), not converted."""
    if not all_day:
        return render_dttz(t, zone)
    d = t.astimezone(resolve_zone(own_zone) or UTC).date()
    return {"dateTime": d.isoformat() + "T00:00:00.0000000", "timeZone": zone}


def new_category(name, color):
    return {"id": guid(), "displayName": name, "color": color}
