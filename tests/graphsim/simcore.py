"""Shared helpers for the Graph simulator: errors, ids, time handling, Prefer parsing.

Standard library only (Debian /usr/bin/python3).
"""
import base64
import datetime as _dt
import hashlib
import os
import re
import uuid
import zoneinfo

UTC = _dt.timezone.utc


class GraphError(Exception):
    """An error answered with the Graph error envelope (see GRAPH.md 2.1)."""

    def __init__(self, status, code, message, headers=None, inner=None):
        super().__init__("%s %s: %s" % (status, code, message))
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.inner = dict(inner or {})


class OAuthError(Exception):
    """An error answered with the AAD OAuth error shape (see GRAPH.md 1.4)."""

    def __init__(self, status, error, aadsts, description):
        super().__init__("%s %s" % (error, description))
        self.status = status
        self.error = error
        self.aadsts = aadsts
        self.description = description


def now():
    return _dt.datetime.now(UTC)


def fmt_ts(dt):
    """DateTimeOffset as Graph writes it: UTC with 7 fractional digits and Z."""
    dt = dt.astimezone(UTC)
    return "%s.%06d0Z" % (dt.strftime("%Y-%m-%dT%H:%M:%S"), dt.microsecond)


def fmt_local(dt):
    """dateTime of a dateTimeTimeZone: no offset, 7 fractional digits."""
    return "%s.%06d0" % (dt.strftime("%Y-%m-%dT%H:%M:%S"), dt.microsecond)


def fmt_inner_date(dt=None):
    return (dt or now()).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


_FRAC_RE = re.compile(r"^(.*T\d\d:\d\d(?::\d\d)?)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?$")


def parse_iso(value, default_tz=UTC):
    """Parse an ISO 8601 date-time leniently (up to 7+ fractional digits, Z or offset).

    Naive values are interpreted in default_tz. Returns an aware datetime or raises ValueError.
    """
    if not isinstance(value, str):
        raise ValueError("not a string")
    v = value.strip()
    if re.fullmatch(r"\d{4}-\d\d-\d\d", v):
        v += "T00:00:00"
    m = _FRAC_RE.match(v)
    if not m:
        raise ValueError("bad date-time %r" % value)
    base, frac, zone = m.group(1), m.group(2), m.group(3)
    if len(base) == 16:
        base += ":00"
    micro = 0
    if frac:
        micro = int((frac + "000000")[:6])
    dt = _dt.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(microsecond=micro)
    if zone is None:
        return dt.replace(tzinfo=default_tz)
    if zone == "Z":
        return dt.replace(tzinfo=UTC)
    sign = 1 if zone[0] == "+" else -1
    z = zone[1:].replace(":", "")
    off = _dt.timedelta(hours=int(z[:2]), minutes=int(z[2:]))
    return dt.replace(tzinfo=_dt.timezone(sign * off))


def parse_window(q):
    s, e = q.get("startDateTime"), q.get("endDateTime")
    if not s or not e:
        raise GraphError(400, "ErrorInvalidParameter", "This request requires a time window specified by the "
                         "query string parameters StartDateTime and EndDateTime.")
    try:
        ws, we = parse_iso(s), parse_iso(e)
    except ValueError:
        raise GraphError(400, "ErrorInvalidParameter", "The parameter 'StartDateTime' or 'EndDateTime' is not a "
                         "valid date-time.")
    if we < ws:
        raise GraphError(400, "ErrorInvalidParameter", "The EndDateTime must be later than the StartDateTime.")
    return ws, we


# Windows zone names (what Outlook uses) -> IANA. A subset; IANA names are accepted as-is.
WINDOWS_ZONES = {
    "UTC": "UTC",
    "Coordinated Universal Time": "UTC",
    "GMT Standard Time": "Europe/London",
    "Greenwich Standard Time": "Atlantic/Reykjavik",
    "W. Europe Standard Time": "Europe/Berlin",
    "Central Europe Standard Time": "Europe/Budapest",
    "Central European Standard Time": "Europe/Warsaw",
    "Romance Standard Time": "Europe/Paris",
    "E. Europe Standard Time": "Europe/Chisinau",
    "FLE Standard Time": "Europe/Kiev",
    "GTB Standard Time": "Europe/Bucharest",
    "Russian Standard Time": "Europe/Moscow",
    "Eastern Standard Time": "America/New_York",
    "Central Standard Time": "America/Chicago",
    "Mountain Standard Time": "America/Denver",
    "US Mountain Standard Time": "America/Phoenix",
    "Pacific Standard Time": "America/Los_Angeles",
    "Alaskan Standard Time": "America/Anchorage",
    "Hawaiian Standard Time": "Pacific/Honolulu",
    "Atlantic Standard Time": "America/Halifax",
    "E. South America Standard Time": "America/Sao_Paulo",
    "India Standard Time": "Asia/Kolkata",
    "China Standard Time": "Asia/Shanghai",
    "Tokyo Standard Time": "Asia/Tokyo",
    "Korea Standard Time": "Asia/Seoul",
    "Singapore Standard Time": "Asia/Singapore",
    "AUS Eastern Standard Time": "Australia/Sydney",
    "New Zealand Standard Time": "Pacific/Auckland",
    "South Africa Standard Time": "Africa/Johannesburg",
    "Arabian Standard Time": "Asia/Dubai",
    "Israel Standard Time": "Asia/Jerusalem",
    "Turkey Standard Time": "Europe/Istanbul",
}
_ZONE_CACHE = {}


def resolve_zone(name):
    """Return a tzinfo for a Windows or IANA zone name, or None if unsupported."""
    if not isinstance(name, str) or not name:
        return None
    if name in _ZONE_CACHE:
        return _ZONE_CACHE[name]
    iana = WINDOWS_ZONES.get(name, name)
    if iana in ("UTC", "Etc/UTC", "GMT"):
        tz = UTC
    else:
        try:
            tz = zoneinfo.ZoneInfo(iana)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            tz = None
    _ZONE_CACHE[name] = tz
    return tz


def parse_dttz(obj, field):
    """Parse a dateTimeTimeZone object -> (aware UTC datetime, zone name). Raises GraphError."""
    if not isinstance(obj, dict) or not isinstance(obj.get("dateTime"), str):
        raise GraphError(400, "RequestBodyRead",
                         "Cannot convert the literal to the expected type 'microsoft.graph.dateTimeTimeZone' "
                         "for property '%s'." % field)
    zone = obj.get("timeZone") or "UTC"
    tz = resolve_zone(zone)
    if tz is None:
        raise GraphError(400, "TimeZoneNotSupportedException",
                         "A valid TimeZone value must be specified. The following TimeZone value is not "
                         "supported: '%s'." % zone)
    try:
        dt = parse_iso(obj["dateTime"], default_tz=tz)
    except ValueError:
        raise GraphError(400, "ErrorInvalidRequest", "Invalid dateTime value for '%s'." % field)
    return dt.astimezone(UTC), zone


def render_dttz(dt_utc, zone_name):
    tz = resolve_zone(zone_name) or UTC
    return {"dateTime": fmt_local(dt_utc.astimezone(tz)), "timeZone": zone_name}


# ---------------------------------------------------------------- ids

_rng = None          # random.Random when --random-seed is given (reproducible ids), else os.urandom


def set_random_seed(seed):
    import random
    global _rng
    _rng = random.Random(seed) if seed is not None else None


def rand_float():
    import random
    return (_rng or random).random()


def rand_bytes(n):
    if _rng is not None:
        return bytes(_rng.getrandbits(8) for _ in range(n))
    return os.urandom(n)

def rest_id():
    """A mailbox item id: standard base64 (so it contains '/', '+', '=') as Outlook rest ids can."""
    raw = b"\x00\x00\x03\x24\x00" + rand_bytes(96)
    s = base64.b64encode(raw).decode()
    # make sure the characters that must be percent-encoded in a path really occur
    if "/" not in s:
        s = s[:20] + "/" + s[21:]
    if "+" not in s:
        s = s[:30] + "+" + s[31:]
    return s


def immutable_id():
    raw = b"\x00\x00\x09\x00\x2e" + rand_bytes(96)
    return base64.urlsafe_b64encode(raw).decode()


def looks_like_item_id(s):
    """Shape check for ErrorInvalidIdMalformed vs ErrorItemNotFound."""
    if not isinstance(s, str) or len(s) < 16 or len(s) > 400:
        return False
    return re.fullmatch(r"[A-Za-z0-9+/_=-]+", s) is not None


def change_key():
    return base64.b64encode(b"\x00\x00\x00\x16" + rand_bytes(14)).decode()


def ical_uid():
    return "040000008200E00074C5B7101A82E00800000000" + rand_bytes(24).hex().upper()


def guid():
    return str(uuid.UUID(bytes=rand_bytes(16), version=4))


def stable_guid(name):
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "graphsim:" + name))


def opaque_token(nbytes=24):
    raw = rand_bytes(nbytes)
    tag = hashlib.sha256(b"graphsim-token" + raw).digest()[:4]
    return base64.urlsafe_b64encode(raw + tag).decode().rstrip("=")


def opaque_token_valid(tok):
    """True when tok is a token this simulator could have minted (independent of state)."""
    if not isinstance(tok, str) or not re.fullmatch(r"[A-Za-z0-9_-]{20,80}", tok):
        return False
    try:
        data = base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4))
    except (ValueError, TypeError):
        return False
    if len(data) < 8:
        return False
    raw, tag = data[:-4], data[-4:]
    return hashlib.sha256(b"graphsim-token" + raw).digest()[:4] == tag


# ---------------------------------------------------------------- Prefer header

_PREF_RE = re.compile(r'\s*([A-Za-z0-9._-]+)\s*(?:=\s*("([^"]*)"|[^,;]*))?')


def parse_prefer(values):
    """Parse one or more Prefer header values into {lowercased name: (raw name, value)}."""
    out = {}
    for v in values or []:
        for part in _split_outside_quotes(v, ","):
            m = _PREF_RE.match(part)
            if not m or not m.group(1):
                continue
            val = m.group(3) if m.group(3) is not None else (m.group(2) or "").strip()
            out[m.group(1).lower()] = (m.group(1), val)
    return out


def _split_outside_quotes(s, sep):
    parts, cur, q = [], [], False
    for ch in s:
        if ch == '"':
            q = not q
        if ch == sep and not q:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in parts if p.strip()]


class Prefs:
    """Request preferences that shape the response."""

    def __init__(self, header_values):
        p = parse_prefer(header_values)
        self.applied = []
        self.immutable = False
        self.timezone = None
        self.body_text = False
        self.body_pref = None
        self.maxpagesize = None
        if "idtype" in p and p["idtype"][1].lower() == "immutableid":
            self.immutable = True
        if "outlook.timezone" in p:
            name = p["outlook.timezone"][1]
            if resolve_zone(name) is not None:
                self.timezone = name
        if "outlook.body-content-type" in p:
            self.body_pref = p["outlook.body-content-type"][1].lower()
            self.body_text = self.body_pref == "text"
        if "odata.maxpagesize" in p:
            try:
                n = int(p["odata.maxpagesize"][1])
                if n > 0:
                    self.maxpagesize = n
            except ValueError:
                pass

    def applied_for_event(self):
        out = []
        if self.timezone:
            out.append('outlook.timezone="%s"' % self.timezone)
        if self.body_pref:
            out.append('outlook.body-content-type="%s"' % self.body_pref)
        if self.immutable:
            out.append('IdType="ImmutableId"')
        return out
