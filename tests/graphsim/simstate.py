"""State of the Graph simulator. One lock (State.lock, an RLock; State.cond is a Condition on it)
guards everything here; the notifier waits on State.cond.
"""
import collections
import copy
import heapq
import itertools
import re
import threading
import time

import simevents as E
from simauth import AppCert, verify_assertion
from simfaults import ThrottleFaultsMixin
from simcore import (GraphError, OAuthError, change_key, fmt_ts, guid, looks_like_item_id, now, opaque_token,
                     resolve_zone,
                     opaque_token_valid, rest_id, stable_guid)

DEFAULT_CONFIG = {
    # auth
    "token_lifetime_s": 3599,
    # subscriptions / notifications (GRAPH.md 5)
    "max_subscription_minutes": 4230,
    "max_subscriptions_per_mailbox": 1000,
    "client_state_max_len": 255,
    "allow_http_notification_urls": False,
    "notification_ca_file": None,
    "validation_timeout_s": 10.0,
    "notification_timeout_s": 3.0,
    "notification_debounce_ms": 100,
    "notification_batch_max": 50,
    "notification_jitter_ms": 0,
    "notification_duplicates": 0,
    "retry_base_ms": 1000,
    "retry_max_delay_ms": 60000,
    "notification_retry_window_s": 14400,
    "missed_on_give_up": True,
    "reauthorization_before_expiry_s": 0,
    "reauthorization_grace_s": 600,
    "slow_endpoint_min_posts": 100,
    "slow_endpoint_slow_ms": 2900,
    "slow_endpoint_delay_pct": 10,
    "slow_endpoint_drop_pct": 15,
    "slow_endpoint_delay_s": 600,
    "slow_endpoint_window_s": 600,
    # delta (GRAPH.md 4.6)
    "delta_token_max_age_s": 0,
    "delta_tokens_per_mailbox": 500,
    "delta_default_page_size": 10,
    "delta_max_page_size": 1000,
    "delta_empty_first_page": False,
    "delta_series_together": True,
    "delta_sparse_occurrences": False,
    "delta_duplicates": 0,
    "delta_visibility_delay_ms": 0,
    "delta_skiptoken_single_use": False,
    # listing
    "list_default_page_size": 10,
    "calendarview_default_page_size": 10,
    # throttling per (app, mailbox) (GRAPH.md 7.2)
    "throttle_max_concurrent": 4,
    "throttle_budget": 10000,
    "throttle_window_s": 600,
    "throttle_concurrency_retry_after_s": 1,
    "throttle_app_max_concurrent": 0,
    # misc
    "duplicate_category_status": 409,
    "duplicate_category_code": "ErrorDuplicateCategory",
    "default_master_categories": True,
    "transaction_id_window_s": 0,
    "batch_max_requests": 20,
    "propagate_meetings": True,
    "enforce_directory_permissions": True,
    "notification_log_max": 5000,
    "request_log_max": 5000,
}

DEFAULT_PERMISSIONS = ["Calendars.ReadWrite", "MailboxSettings.ReadWrite"]
PRESET_CATEGORIES = [("Red category", "preset0"), ("Orange category", "preset1"),
                     ("Yellow category", "preset3"), ("Green category", "preset4"),
                     ("Blue category", "preset7"), ("Purple category", "preset8")]
COLORS = {"none"} | {"preset%d" % i for i in range(25)}


class App:
    def __init__(self, tenant, client_id, secret, permissions, tenant_id=None, certificate=None):
        self.tenant = tenant
        self.tenant_id = tenant_id or (tenant if re.fullmatch(r"[0-9a-fA-F-]{36}", tenant or "")
                                       else stable_guid("tenant:" + tenant))
        self.client_id = client_id
        self.secret = secret
        self.permissions = list(permissions if permissions is not None else DEFAULT_PERMISSIONS)
        self.sp_id = stable_guid("sp:" + client_id)
        self.cert = AppCert(certificate) if certificate else None

    def to_json(self):
        return {"tenant": self.tenant, "tenant_id": self.tenant_id, "client_id": self.client_id,
                "client_secret": self.secret, "permissions": self.permissions,
                "certificate_x5t#S256": self.cert.x5t_s256 if self.cert else None}


class User:
    def __init__(self, key, mail, display_name, upn=None):
        self.key = key
        self.mail = mail
        self.upn = upn or mail
        self.display_name = display_name or mail.split("@")[0]
        self.calendar_id = rest_id()
        self.calendars = collections.OrderedDict()   # calendar id -> calendar JSON (the default first)
        self.calendars[self.calendar_id] = new_calendar(self, "Calendar", self.calendar_id, default=True)
        self.time_zone = "UTC"   # mailboxSettings.timeZone (Windows name as Outlook stores it)
        self.seq = 0
        self.events = {}
        self.by_id = {}          # imm/rest id -> event key
        self.occ_index = {}      # occurrence id -> (master key, datekey)
        self.txids = {}          # transactionId -> (event key, time)
        self.categories = []
        self.mailbox_enabled = True
        self.access_denied = False
        self.change_log = collections.deque(maxlen=20000)   # (seq, monotonic time of the change)
        self.win_cache = {}      # (window start, end, calendar) -> (seq, window items)

    def next_seq(self):
        self.seq += 1
        self.change_log.append((self.seq, time.monotonic()))
        return self.seq

    def visible_seq(self, delay_s):
        """Highest change sequence older than delay_s (changes are visible to delta after a delay)."""
        if delay_s <= 0 or not self.change_log:
            return self.seq
        limit = time.monotonic() - delay_s
        for seq, t in reversed(self.change_log):
            if t <= limit:
                return seq
        return self.change_log[0][0] - 1

    def to_json(self):
        return {"id": self.key, "mail": self.mail, "userPrincipalName": self.upn,
                "displayName": self.display_name, "timeZone": self.time_zone}

    def find_calendar(self, ref):
        """Calendar JSON by id or (case-insensitive) name, or None."""
        if ref in self.calendars:
            return self.calendars[ref]
        if isinstance(ref, str):
            for c in self.calendars.values():
                if c["name"].lower() == ref.lower():
                    return c
        return None


def new_calendar(user, name, cid=None, default=False):
    """calendar resource (GRAPH.md 12.2; https://learn.microsoft.com/graph/api/resources/calendar)."""
    return {"id": cid or rest_id(), "name": name, "color": "auto", "hexColor": "",
            "isDefaultCalendar": default, "changeKey": change_key(), "canShare": True,
            "canViewPrivateItems": True, "canEdit": True, "isRemovable": not default,
            "isTallyingResponses": True, "allowedOnlineMeetingProviders": ["teamsForBusiness"],
            "defaultOnlineMeetingProvider": "teamsForBusiness",
            "owner": {"name": user.display_name, "address": user.mail}}


def _clone(v):
    """copy.deepcopy for the JSON-like values of an event (dicts, lists, scalars), several
    times cheaper: a PATCH validates on a copy of the event, and deepcopy's memo and dispatch
    were the largest cost of an edit. Anything else still goes through deepcopy."""
    if isinstance(v, dict):
        return {k: _clone(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clone(x) for x in v]
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return copy.deepcopy(v)


class SubTable(dict):
    """The subscriptions (id -> Sub) with a per-mailbox index kept up to date on every change: a
    change looks up its mailbox's subscriptions instead of scanning all of them under the state
    lock (at 1,000 mailboxes a scan per change made the simulator, not the client, the
    bottleneck). `due` and `reauth` are heaps of (expires, seq, id) pushed on every store and
    expiry edit (touch(sub)), so that the notifier's expiry
    sweep pops what is due instead of scanning every subscription after each change (10,000
    subscriptions created one by one cost it ~n^2/2 visits); an entry whose subscription is
    gone or has another expiry since is stale and dropped when met. A Sub's user_key never
    changes once stored."""

    def __init__(self):
        super().__init__()
        self._index = {}
        self._seq = itertools.count()
        self.due = []                # expiry
        self.reauth = []             # reauthorizationRequired (popped once sent)

    def touch(self, sub):
        """sub.expires (or its reauthorization state) was changed in place."""
        self._push(sub.expires, sub.id)

    def _push(self, expires, k):
        e = (expires, next(self._seq), k)
        heapq.heappush(self.due, e)
        heapq.heappush(self.reauth, e)

    def reauth_from_scratch(self):
        """The reauthorization heap again from every subscription (the setting was turned on:
        while it is off the notifier keeps the heap empty)."""
        self.reauth = [(v.expires, next(self._seq), k) for k, v in self.items()
                       if not v.reauth_sent]
        heapq.heapify(self.reauth)

    def _unindex(self, sub):
        lst = self._index.get(sub.user_key)
        if lst is not None:
            lst[:] = [x for x in lst if x is not sub]
            if not lst:
                del self._index[sub.user_key]

    def __setitem__(self, k, v):
        old = self.get(k)
        if old is not None:
            self._unindex(old)
        super().__setitem__(k, v)
        self._index.setdefault(v.user_key, []).append(v)
        self._push(v.expires, k)

    def __delitem__(self, k):
        self._unindex(self[k])
        super().__delitem__(k)

    def pop(self, k, *default):
        if k in self:
            v = self[k]
            del self[k]
            return v
        return super().pop(k, *default)

    def clear(self):
        self._index.clear()
        self.due, self.reauth = [], []
        super().clear()

    def by_user(self, user_key):
        return list(self._index.get(user_key, ()))


class DeltaState:
    __slots__ = ("user_key", "cal", "ws", "we", "created", "kind", "entries", "offset", "next_seq", "next_set",
                 "base_seq", "prev_set", "empty_done")


class State(ThrottleFaultsMixin):
    def __init__(self):
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.config = dict(DEFAULT_CONFIG)
        self.started = time.time()
        self.notifier = None
        self._reset_locked()

    # ------------------------------------------------------------ lifecycle

    def _reset_locked(self):
        self.apps = {}               # client_id -> App
        self.tokens = {}             # access token -> dict
        self.users = {}              # key -> User
        self.user_names = {}         # lowercased mail/upn -> key
        self.next_event_key = 1
        self.delta_tokens = {}       # token -> DeltaState
        self.delta_by_user = {}      # user key -> OrderedDict(token -> None), LRU order
        self.subs = SubTable()
        self.faults = []
        self.next_fault_id = 1
        self.throttle = {}           # (client_id, user_key) -> [inflight, window_start, count]
        self.app_inflight = {}       # client_id -> requests in flight over all mailboxes
        self.notif_log = collections.deque(maxlen=int(self.config["notification_log_max"]))
        self.request_log = collections.deque(maxlen=int(self.config["request_log_max"]))
        self.meetings = {}           # meeting key -> list of (user_key, event_key)
        self._reset_counters_locked()

    def reset(self):
        with self.lock:
            self._reset_locked()
            if self.notifier:
                self.notifier.clear_locked()
            self.cond.notify_all()

    def _reset_counters_locked(self):
        self.counters = {
            "requests_total": 0,
            "requests_by_mailbox": collections.Counter(),
            "requests_by_kind": collections.Counter(),
            "batch_inner_requests": 0,   # of requests_total: inner requests of a $batch
            "status_counts": collections.Counter(),
            "inflight_by_mailbox": collections.Counter(),
            "peak_concurrency_by_mailbox": collections.Counter(),
            "peak_requested_by_mailbox": collections.Counter(),
            "over_concurrency_by_mailbox": collections.Counter(),
            "throttled_429": 0,
            "throttled_by_mailbox": collections.Counter(),
            "faults_injected": collections.Counter(),
            "token_requests": 0,
            "token_errors": 0,
            "validation_requests": 0,
            "validation_failures": 0,
            "notifications_enqueued": 0,
            "notifications_delivered": 0,
            "notification_posts_ok": 0,
            "notification_posts_failed": 0,
            "notifications_failed": 0,
            "notifications_dropped": 0,
            "lifecycle_sent": 0,
            "subscriptions_expired": 0,
        }

    def reset_counters(self):
        with self.lock:
            inflight = self.counters["inflight_by_mailbox"]
            self._reset_counters_locked()
            self.counters["inflight_by_mailbox"] = inflight

    def counters_json(self):
        with self.lock:
            out = {}
            for k, v in self.counters.items():
                out[k] = dict(v) if isinstance(v, dict) else v
            out["delta_tokens"] = len(self.delta_tokens)
            out["notification_endpoints"] = self.notifier.endpoint_stats_locked() if self.notifier else {}
            out["subscriptions"] = len(self.subs)
            return out

    def set_config(self, changes):
        with self.lock:
            unknown = [k for k in changes if k not in DEFAULT_CONFIG]
            if unknown:
                raise GraphError(400, "BadRequest", "unknown config keys: %s" % ", ".join(unknown))
            for k, v in changes.items():
                d = DEFAULT_CONFIG[k]
                if isinstance(d, bool):
                    v = bool(v)
                elif isinstance(d, (int, float)) and not isinstance(v, (int, float)):
                    raise GraphError(400, "BadRequest", "config %s must be a number" % k)
                self.config[k] = v
            self.cond.notify_all()
            return dict(self.config)

    def cfg(self, k):
        return self.config[k]

    # ------------------------------------------------------------ seed

    def seed(self, data):
        with self.lock:
            out = {"apps": [], "users": [], "events": []}
            for a in data.get("apps", []):
                for k in ("tenant", "client_id"):
                    if not isinstance(a.get(k), str) or not a[k]:
                        raise GraphError(400, "BadRequest", "app.%s is required" % k)
                cert = a.get("certificate")
                if a.get("certificate_file"):
                    with open(a["certificate_file"]) as f:
                        cert = f.read()
                if not a.get("client_secret") and not cert:
                    raise GraphError(400, "BadRequest", "app.client_secret or app.certificate is required")
                try:
                    app = App(a["tenant"], a["client_id"], a.get("client_secret"), a.get("permissions"),
                              a.get("tenant_id"), cert)
                except ValueError as e:
                    raise GraphError(400, "BadRequest", "app.certificate: %s" % e)
                self.apps[app.client_id] = app
                out["apps"].append(app.to_json())
            for u in data.get("users", []):
                out["users"].append(self.add_user(u).to_json())
            for e in data.get("events", []):
                e = dict(e)
                uref = e.pop("user", None)
                user = self.get_user(uref)
                if "when" in e:
                    e.update(_relative_when(e.pop("when")))
                ev = self.user_create_event(user, e)      # "calendar": id or name (control-only field)
                out["events"].append(self.event_summary(user, ev))
            return out

    def add_user(self, u):
        mail = u.get("mail") or u.get("userPrincipalName")
        if not isinstance(mail, str) or "@" not in mail:
            raise GraphError(400, "BadRequest", "user.mail is required")
        key = u.get("id") or guid()
        if key in self.users or mail.lower() in self.user_names:
            raise GraphError(409, "Conflict", "user %s already exists" % mail)
        user = User(key, mail, u.get("displayName"), u.get("userPrincipalName"))
        user.mailbox_enabled = u.get("mailboxEnabled", True)
        tz = u.get("timeZone", (u.get("mailboxSettings") or {}).get("timeZone", "UTC"))
        if tz is not None and not isinstance(tz, str):
            raise GraphError(400, "BadRequest", "user.timeZone must be a string or null")
        user.time_zone = tz
        for name in u.get("calendars") or []:
            self._add_calendar_locked(user, {"name": name})
        user.access_denied = bool(u.get("accessDenied", False))
        if self.config["default_master_categories"]:
            user.categories = [E.new_category(n, c) for n, c in PRESET_CATEGORIES]
        self.users[key] = user
        self.user_names[mail.lower()] = key
        self.user_names[user.upn.lower()] = key
        self.user_names[key.lower()] = key
        return user

    # ------------------------------------------------------------ calendars & mailbox settings

    def add_calendar(self, user, body):
        with self.lock:
            return dict(self._add_calendar_locked(user, body))

    def _add_calendar_locked(self, user, body):
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"].strip():
            raise GraphError(400, "ErrorInvalidRequest", "The calendar name is required.")
        extra = set(body) - {"name", "color", "hexColor", "@odata.type", "isDefaultCalendar"}
        if extra:
            raise GraphError(400, "RequestBodyRead", "The property '%s' does not exist on type "
                             "'microsoft.graph.calendar'." % sorted(extra)[0])
        if user.find_calendar(body["name"]) is not None:
            # Exchange: a folder of that name exists (the name is unique among calendars)
            raise GraphError(409, "ErrorFolderExists", "A folder with the specified name already exists.")
        cal = new_calendar(user, body["name"])
        if isinstance(body.get("color"), str):
            cal["color"] = body["color"]
        user.calendars[cal["id"]] = cal
        return cal

    def get_calendar(self, user, cid):
        cal = user.calendars.get(cid)
        if cal is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        return cal

    def mailbox_settings(self, user):
        """mailboxSettings (https://learn.microsoft.com/graph/api/user-get-mailboxsettings)."""
        tz = user.time_zone
        return {"archiveFolder": rest_id(), "timeZone": tz, "dateFormat": "dd.MM.yyyy", "timeFormat": "HH:mm",
                "delegateMeetingMessageDeliveryOptions": "sendToDelegateOrInformationOnly",
                "userPurpose": "user",
                "automaticRepliesSetting": {"status": "disabled", "externalAudience": "all",
                                            "internalReplyMessage": "", "externalReplyMessage": ""},
                "language": {"locale": "en-US", "displayName": "English (United States)"},
                "workingHours": {"daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                                 "startTime": "08:00:00.0000000", "endTime": "17:00:00.0000000",
                                 "timeZone": {"name": tz}}}

    def set_time_zone(self, user, tz):
        with self.lock:
            if tz is not None and (not isinstance(tz, str) or (tz and self._zone_unknown(tz))):
                raise GraphError(400, "ErrorInvalidTimeZone" if isinstance(tz, str) else "RequestBodyRead",
                                 "The time zone '%s' is not valid." % (tz,))
            user.time_zone = tz

    @staticmethod
    def _zone_unknown(tz):
        return resolve_zone(tz) is None

    def find_user(self, ref):
        if not isinstance(ref, str):
            return None
        key = self.user_names.get(ref.lower())
        return self.users.get(key) if key else None

    def get_user(self, ref):
        u = self.find_user(ref)
        if u is None:
            raise GraphError(404, "ErrorInvalidUser", "The requested user '%s' is invalid." % ref)
        return u

    # ------------------------------------------------------------ apps & tokens

    def issue_token(self, tenant, form, basic, audiences=()):
        """Client-credentials grant: secret or certificate assertion (verified outside the lock)."""
        try:
            with self.lock:
                self.counters["token_requests"] += 1
                app, assertion = self._check_token_request_locked(tenant, form, basic)
            if assertion:
                auds = {"https://login.microsoftonline.com/%s/oauth2/v2.0/token" % t
                        for t in (app.tenant, app.tenant_id)}
                auds |= {a % t for a in audiences for t in (app.tenant, app.tenant_id)}
                verify_assertion(app.cert, app.client_id, form.get("client_assertion_type"),
                                 form.get("client_assertion"), auds)
            with self.lock:
                return self._mint_token_locked(app)
        except OAuthError:
            with self.lock:
                self.counters["token_errors"] += 1
            raise

    def _check_token_request_locked(self, tenant, form, basic):
        apps_in_tenant = [a for a in self.apps.values()
                          if tenant.lower() in (a.tenant.lower(), a.tenant_id.lower())]
        if not apps_in_tenant:
            raise OAuthError(400, "invalid_request", 90002,
                             "AADSTS90002: Tenant '%s' not found. Check to make sure you have the correct "
                             "tenant ID and are signing into the correct cloud." % tenant)
        grant = form.get("grant_type")
        if not grant:
            raise OAuthError(400, "invalid_request", 900144,
                             "AADSTS900144: The request body must contain the following parameter: 'grant_type'.")
        if grant != "client_credentials":
            raise OAuthError(400, "unsupported_grant_type", 70003,
                             "AADSTS70003: The app requested an unsupported grant type '%s'." % grant)
        client_id = form.get("client_id") or (basic[0] if basic else None)
        secret = form.get("client_secret") or (basic[1] if basic else None)
        if not client_id:
            raise OAuthError(400, "invalid_request", 900144,
                             "AADSTS900144: The request body must contain the following parameter: 'client_id'.")
        app = next((a for a in apps_in_tenant if a.client_id == client_id), None)
        if app is None:
            raise OAuthError(400, "unauthorized_client", 700016,
                             "AADSTS700016: Application with identifier '%s' was not found in the directory "
                             "'%s'." % (client_id, tenant))
        scope = form.get("scope")
        if not scope:
            raise OAuthError(400, "invalid_request", 900144,
                             "AADSTS900144: The request body must contain the following parameter: 'scope'.")
        if scope.strip() != "https://graph.microsoft.com/.default":
            raise OAuthError(400, "invalid_scope", 1002012 if ".default" not in scope else 70011,
                             "AADSTS70011: The provided request must include a 'scope' input parameter. The "
                             "provided value for the input parameter 'scope' is not valid. The scope %s is not "
                             "valid." % scope)
        if form.get("client_assertion") or form.get("client_assertion_type"):
            return app, True
        if not secret:
            raise OAuthError(401, "invalid_client", 7000216,
                             "AADSTS7000216: 'client_assertion', 'client_secret' or 'request' is required for "
                             "the 'client_credentials' grant type.")
        if app.secret is None or secret != app.secret:
            raise OAuthError(401, "invalid_client", 7000215,
                             "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in "
                             "the request is the client secret value, not the client secret ID, for a secret "
                             "added to app '%s'." % client_id)
        return app, False

    def _mint_token_locked(self, app):
        lifetime = int(self.config["token_lifetime_s"])
        tok = "eyJ0eXAiOiJKV1QiLCJncmFwaHNpbSI6MX0." + opaque_token(48)
        t = time.time()
        # prune expired tokens occasionally
        if len(self.tokens) > 1000:
            for k in [k for k, v in self.tokens.items() if v["exp"] < t]:
                del self.tokens[k]
        self.tokens[tok] = {"client_id": app.client_id, "tenant_id": app.tenant_id, "exp": t + lifetime,
                            "roles": list(app.permissions)}
        return {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
                "access_token": tok}

    def check_token(self, auth_header):
        """-> token info dict or raise 401."""
        hdr = {"WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/'
                                   'common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'}
        if not auth_header or not auth_header.strip():
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.", hdr)
        parts = auth_header.strip().split(None, 1)
        if len(parts) != 2 or parts[0].lower() != "bearer":
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure.", hdr)
        with self.lock:
            info = self.tokens.get(parts[1].strip())
            if info is None:
                raise GraphError(401, "InvalidAuthenticationToken",
                                 "IDX14100: JWT is not well formed, there are no dots (.).", hdr)
            if info["exp"] <= time.time():
                raise GraphError(401, "InvalidAuthenticationToken",
                                 "Lifetime validation failed, the token is expired.", hdr)
            app = self.apps.get(info["client_id"])
            if app is None:
                raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure.", hdr)
            return dict(info, app=app)

    def revoke_tokens(self):
        with self.lock:
            self.tokens.clear()

    # ------------------------------------------------------------ events: lookup

    def find_event(self, user, eid):
        """-> (event, datekey or None) for a live item, or raise 400/404."""
        if not looks_like_item_id(eid):
            raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
        key = user.by_id.get(eid)
        if key is not None:
            ev = user.events[key]
            if ev.deleted:
                raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            return ev, None
        occ = user.occ_index.get(eid)
        if occ is not None:
            ev = user.events.get(occ[0])
            if ev is not None and not ev.deleted and ev.is_master:
                exc = ev.exceptions.get(occ[1])
                if (exc is None or not exc.cancelled) and E.is_valid_occurrence_date(ev, occ[1]):
                    return ev, occ[1]
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")

    def event_summary(self, user, ev):
        d = E.render_event(ev, user, InspectPrefs(), ext_filter=set(ev.ext))
        d["immutableId"] = ev.imm_id
        d["restId"] = ev.rest_id
        d["movedRestId"] = ev.moved_rest_id
        d["user"] = user.mail
        d["deleted"] = ev.deleted
        d["seq"] = ev.seq
        d["transactionId"] = ev.transaction_id
        d["calendarId"] = ev.calendar_id
        d["calendarName"] = user.calendars.get(ev.calendar_id, {}).get("name")
        if ev.exceptions:
            d["exceptions"] = {k: {"cancelled": x.cancelled,
                                   "overrides": sorted(k2 for k2 in x.overrides)} for k, x in ev.exceptions.items()}
        return d

    # ------------------------------------------------------------ events: changes

    def _bump(self, user, ev, ctype, notify=True):
        ev.seq = user.next_seq()
        ev.change_key = change_key()
        ev.last_modified = now()
        if notify:
            self._notify_change(user, ev, ctype)

    def _new_event(self, user):
        ev = E.Event(self.next_event_key, user)
        self.next_event_key += 1
        return ev

    def _register(self, user, ev):
        user.events[ev.key] = ev
        user.by_id[ev.imm_id] = ev.key
        user.by_id[ev.rest_id] = ev.key

    def create_event(self, user, body, control=False, calendar=None):
        """POST /users/{u}/events (or .../calendars/{id}/events). Returns (event, replayed).

        calendar: calendar id; None = the default calendar. The control API may name the calendar
        in the body ("calendar": id or name)."""
        with self.lock:
            if control and isinstance(body, dict) and "calendar" in body:
                body = dict(body)
                ref = body.pop("calendar")
                cal = user.find_calendar(ref)
                if cal is None:
                    raise GraphError(404, "ErrorItemNotFound", "No calendar %r in %s." % (ref, user.mail))
                calendar = cal["id"]
            tx = body.get("transactionId") if isinstance(body, dict) else None
            if isinstance(tx, str) and tx in user.txids:
                key, t0 = user.txids[tx]
                win = self.config["transaction_id_window_s"]
                ev = user.events.get(key)
                if ev is not None and not ev.deleted and (not win or time.time() - t0 <= win):
                    return ev, True
            ev = self._new_event(user)
            if calendar is not None:
                self.get_calendar(user, calendar)
                ev.calendar_id = calendar
            E.apply_fields(ev, body, user, creating=True, control=control)
            if "organizer" in body and not control:
                # Graph ignores organizer on create by the owner; the owner organizes
                ev.organizer = {"emailAddress": {"name": user.display_name, "address": user.mail}}
            self._register(user, ev)
            if ev.transaction_id:
                user.txids[ev.transaction_id] = (ev.key, time.time())
            ev.meeting_key = ev.key if ev.is_organizer else None
            self._bump(user, ev, "created")
            ev.created_seq = ev.seq
            self._propagate(user, ev, "create")
            return ev, False

    def user_create_event(self, user, body, calendar=None):
        ev, _ = self.create_event(user, body, control=True, calendar=calendar)
        return ev

    def update_event(self, user, eid, body, if_match=None, control=False):
        with self.lock:
            ev, dk = self.find_event(user, eid)
            self._check_if_match(ev, dk, if_match)
            if dk is None:
                before = (ev.start, ev.end, _clone(ev.props["recurrence"]))
                # validate on a copy: a rejected PATCH changes nothing
                scratch = copy.copy(ev)
                scratch.props = _clone(ev.props)
                scratch.ext = dict(ev.ext)
                scratch.organizer = _clone(ev.organizer)
                scratch.response_status = dict(ev.response_status)
                E.apply_fields(scratch, body, user, creating=False, control=control)
                ev.__dict__.update(scratch.__dict__)
                if ev.is_master and (ev.start, ev.end, ev.props["recurrence"]) != before:
                    ev.exceptions.clear()    # pattern/time edits of a series drop its exceptions
                self._bump(user, ev, "updated")      # even a no-op PATCH writes the item
                if control and "responseStatus" in body and not ev.is_organizer:
                    self._update_organizer_status(user, ev)
                self._propagate(user, ev, "update")
                return ev, None
            # occurrence -> exception
            if "recurrence" in body:
                raise GraphError(400, "ErrorInvalidRequest", "Recurrence can only be set on the series master.")
            exc = ev.exceptions.get(dk) or E.Exc(0)
            scratch = copy.copy(ev)
            scratch.props = dict(ev.props)
            scratch.props.update({k: v for k, v in exc.overrides.items() if not k.startswith("_")})
            scratch.props["recurrence"] = None
            scratch.start, scratch.end = E.occurrence_times(ev, dk)
            scratch.ext = dict(ev.ext)
            scratch.is_cancelled = exc.overrides.get("isCancelled", ev.is_cancelled)
            E.apply_fields(scratch, body, user, creating=False, control=control)
            ov = {k: v for k, v in scratch.props.items() if k != "recurrence" and ev.props.get(k) != v}
            bst, ben = E.base_occurrence_times(ev, dk)
            if scratch.start != bst:
                ov["_start"] = scratch.start
            if scratch.end != ben:
                ov["_end"] = scratch.end
            if scratch.is_cancelled != ev.is_cancelled:
                ov["isCancelled"] = scratch.is_cancelled
            exc.overrides = ov
            exc.seq = user.next_seq()
            exc.change_key = change_key()
            exc.last_modified = now()
            ev.exceptions[dk] = exc
            # exceptions are stored on the series master: it changes too (new changeKey), and the
            # notification is an `updated` of the master (GRAPH.md 9.3)
            self._bump(user, ev, "updated")
            exc.seq = user.next_seq()       # the exception stays the newest change of that occurrence
            self._propagate(user, ev, "update")
            return ev, dk

    def respond(self, user, eid, response):
        """An attendee answers (Graph accept/decline/tentativelyAccept or the control API)."""
        with self.lock:
            ev, dk = self.find_event(user, eid)
            if ev.is_organizer:
                raise GraphError(400, "ErrorInvalidRequest", "Your request can't be completed. You can't respond "
                                 "to a meeting you organized.")
            ev.response_status = {"response": response, "time": fmt_ts(now())}
            self._update_organizer_status(user, ev)
            if response == "declined":
                self._soft_delete(user, ev)      # a declined meeting leaves the attendee's calendar
            else:
                self._bump(user, ev, "updated")

    def _update_organizer_status(self, user, ev):
        """The organizer's copy records the attendee's answer (and gets a new changeKey)."""
        org_user = self.find_user(ev.organizer["emailAddress"]["address"])
        if org_user is None or ev.meeting_key is None:
            return
        oev = org_user.events.get(ev.meeting_key)
        if oev is None or oev.deleted:
            return
        for a in oev.props["attendees"]:
            if a["emailAddress"]["address"].lower() == user.mail.lower():
                a["status"] = dict(ev.response_status)
        self._bump(org_user, oev, "updated")

    def _check_if_match(self, ev, dk, if_match):
        if not if_match:
            return
        if if_match.strip() == "*":
            return
        ck = ev.change_key
        if dk is not None and dk in ev.exceptions and ev.exceptions[dk].seq > ev.seq:
            ck = ev.exceptions[dk].change_key
        want = if_match.strip()
        if want.startswith("W/"):
            want = want[2:]
        want = want.strip('"')
        if want != ck:
            raise GraphError(412, "ErrorIrresolvableConflict",
                             "The send or update operation could not be performed because the change key passed "
                             "in the request does not match the current change key for the item.")

    def delete_event(self, user, eid, if_match=None, cancel=False):
        with self.lock:
            ev, dk = self.find_event(user, eid)
            self._check_if_match(ev, dk, if_match)
            if cancel and not ev.is_organizer:
                raise GraphError(400, "ErrorAccessDenied", "You need to be an organizer to cancel a meeting.")
            if dk is not None:
                exc = ev.exceptions.get(dk) or E.Exc(0)
                exc.cancelled = True
                exc.seq = user.next_seq()
                ev.exceptions[dk] = exc
                # deleting an occurrence surfaces as an update of the master (GRAPH.md 9.3)
                self._bump(user, ev, "updated")
                self._propagate(user, ev, "update")
                return
            self._soft_delete(user, ev)
            self._propagate(user, ev, "cancel" if ev.is_organizer else "none")

    def _soft_delete(self, user, ev):
        ev.deleted = True
        ev.deleted_at = now()
        ev.moved_rest_id = rest_id()     # moved to Deleted Items -> new rest id
        user.by_id.pop(ev.rest_id, None)
        self._bump(user, ev, "deleted")

    def restore_event(self, user, eid):
        """Control API: the user restores a deleted item from Deleted Items (new rest id, same immutable id)."""
        with self.lock:
            ev = next((e for e in user.events.values() if e.deleted and eid in (e.imm_id, e.rest_id,
                                                                               e.moved_rest_id)), None)
            if ev is None:
                raise GraphError(404, "ErrorItemNotFound", "No deleted item with that id.")
            ev.deleted = False
            ev.deleted_at = None
            ev.rest_id = ev.moved_rest_id or rest_id()
            ev.moved_rest_id = None
            user.by_id[ev.rest_id] = ev.key
            self._bump(user, ev, "created")
            ev.created_seq = ev.seq
            return ev

    def user_cancel(self, user, eid):
        """Control API: the organizer cancels. Organizer copy -> deleted; attendee copy -> isCancelled."""
        with self.lock:
            ev, dk = self.find_event(user, eid)
            if ev.is_organizer:
                self.delete_event(user, eid, cancel=True)
                return None
            if dk is not None:
                return self.update_event(user, eid, {"isCancelled": True}, control=True)
            ev.is_cancelled = True
            if not ev.props["subject"].startswith("Canceled: "):
                ev.props["subject"] = "Canceled: " + ev.props["subject"]
            self._bump(user, ev, "updated")
            return ev, None

    def bump_change_key(self, user, eid):
        with self.lock:
            ev, dk = self.find_event(user, eid)
            self._bump(user, ev, "updated")
            return ev

    # ------------------------------------------------------------ meeting propagation

    def _propagate(self, user, ev, what):
        """Copies of a meeting in attendee mailboxes that the simulator knows (same iCalUId)."""
        if not self.config["propagate_meetings"] or not ev.is_organizer:
            return
        org_addr = user.mail.lower()
        wanted = {}
        if not ev.deleted:
            for a in ev.props["attendees"]:
                u = self.find_user(a["emailAddress"]["address"])
                if u is not None and u.key != user.key and a["emailAddress"]["address"].lower() != org_addr:
                    wanted[u.key] = a
        copies = self.meetings.setdefault(ev.key, {})
        for ukey, ekey in list(copies.items()):
            au = self.users.get(ukey)
            cev = au.events.get(ekey) if au else None
            if cev is None or cev.deleted:
                copies.pop(ukey, None)
                continue
            if ukey not in wanted:
                # removed attendee or cancelled meeting: their copy is marked cancelled
                if not cev.is_cancelled:
                    cev.is_cancelled = True
                    if not cev.props["subject"].startswith("Canceled: "):
                        cev.props["subject"] = "Canceled: " + cev.props["subject"]
                    self._bump(au, cev, "updated")
                copies.pop(ukey, None)
                continue
            self._sync_copy(ev, cev)
            self._bump(au, cev, "updated")
        for ukey in wanted:
            if ukey in copies:
                continue
            au = self.users[ukey]
            cev = self._new_event(au)
            cev.ical_uid = ev.ical_uid
            cev.is_organizer = False
            cev.organizer = {"emailAddress": {"name": user.display_name, "address": user.mail}}
            cev.response_status = {"response": "notResponded", "time": "0001-01-01T00:00:00Z"}
            self._sync_copy(ev, cev)
            cev.meeting_key = ev.key
            self._register(au, cev)
            copies[ukey] = cev.key
            self._bump(au, cev, "created")
            cev.created_seq = cev.seq

    @staticmethod
    def _sync_copy(src, dst):
        for k in ("subject", "body", "location", "attendees", "isAllDay", "importance", "sensitivity",
                  "recurrence", "isOnlineMeeting"):
            dst.props[k] = copy.deepcopy(src.props[k])
        dst.start, dst.end, dst.start_tz, dst.end_tz = src.start, src.end, src.start_tz, src.end_tz
        dst.exceptions = copy.deepcopy(src.exceptions)

    # ------------------------------------------------------------ categories

    def categories(self, user):
        with self.lock:
            return [dict(c) for c in user.categories]

    def add_category(self, user, body):
        with self.lock:
            if not isinstance(body, dict) or not isinstance(body.get("displayName"), str) \
                    or not body["displayName"].strip():
                raise GraphError(400, "ErrorInvalidRequest", "displayName is required.")
            extra = set(body) - {"displayName", "color", "@odata.type"}
            if extra:
                raise GraphError(400, "RequestBodyRead", "The property '%s' does not exist on type "
                                 "'microsoft.graph.outlookCategory'." % sorted(extra)[0])
            color = body.get("color", "none")
            if color not in COLORS:
                raise GraphError(400, "RequestBodyRead", "Requested value '%s' was not found." % color)
            name = body["displayName"]
            if any(c["displayName"].lower() == name.lower() for c in user.categories):
                raise GraphError(int(self.config["duplicate_category_status"]),
                                 self.config["duplicate_category_code"],
                                 "A category with the name '%s' already exists." % name)
            cat = E.new_category(name, color)
            user.categories.append(cat)
            return dict(cat)

    def find_category(self, user, cid):
        for c in user.categories:
            if c["id"] == cid:
                return c
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")

    def patch_category(self, user, cid, body):
        with self.lock:
            c = self.find_category(user, cid)
            if not isinstance(body, dict):
                raise GraphError(400, "RequestBodyRead", "Invalid body.")
            if "displayName" in body and body["displayName"] != c["displayName"]:
                raise GraphError(400, "ErrorInvalidRequest", "The displayName of a category cannot be changed.")
            if "color" in body:
                if body["color"] not in COLORS:
                    raise GraphError(400, "RequestBodyRead", "Requested value '%s' was not found." % body["color"])
                c["color"] = body["color"]
            return dict(c)

    def delete_category(self, user, cid):
        with self.lock:
            c = self.find_category(user, cid)
            user.categories.remove(c)

    # ------------------------------------------------------------ delta

    def delta_store(self, ds):
        tok = opaque_token(24)
        ds.created = time.time()
        self.delta_tokens[tok] = ds
        lru = self.delta_by_user.setdefault(ds.user_key, collections.OrderedDict())
        lru[tok] = None
        cap = max(1, int(self.config["delta_tokens_per_mailbox"]))
        while len(lru) > cap:
            old, _ = lru.popitem(last=False)
            self.delta_tokens.pop(old, None)
        return tok

    def delta_forget(self, tok):
        ds = self.delta_tokens.pop(tok, None)
        if ds is not None:
            self.delta_by_user.get(ds.user_key, {}).pop(tok, None)

    def delta_load(self, tok, user):
        if not opaque_token_valid(tok):
            raise GraphError(400, "InvalidDeltaToken",
                             "The value '%s' of parameter '$deltaToken' is invalid." % tok[:60])
        ds = self.delta_tokens.get(tok)
        max_age = self.config["delta_token_max_age_s"]
        if ds is not None and max_age and time.time() - ds.created > max_age:
            self.delta_forget(tok)
            ds = None
        if ds is None or ds.user_key != user.key:
            raise GraphError(410, "SyncStateNotFound",
                             "The sync state generation is not found; generation=%d;[highest=%d]"
                             % (max(0, user.seq - 1), user.seq))
        self.delta_by_user[user.key].move_to_end(tok)
        return ds

    def evict_delta_tokens(self, user=None):
        with self.lock:
            victims = [t for t, d in self.delta_tokens.items() if user is None or d.user_key == user.key]
            for t in victims:
                self.delta_forget(t)
            return len(victims)

    # ------------------------------------------------------------ subscriptions (data only)

    def _notify_change(self, user, ev, ctype):
        if self.notifier is not None:
            self.notifier.enqueue_change_locked(user, ev, ctype)


def _relative_when(w):
    """Seed convenience: {"day": +N, "time": "HH:MM", "minutes": M, "timeZone": Z, "weekly": COUNT,
    "daily": COUNT, "allDay": DAYS}."""
    import datetime as dt
    from simcore import resolve_zone
    zone = w.get("timeZone", "UTC")
    tz = resolve_zone(zone)
    if tz is None:
        raise GraphError(400, "BadRequest", "unknown timeZone %r" % zone)
    day = dt.datetime.now(tz).date() + dt.timedelta(days=int(w.get("day", 0)))
    hh, mm = (int(x) for x in w.get("time", "09:00").split(":"))
    start = dt.datetime(day.year, day.month, day.day, hh, mm)
    end = start + dt.timedelta(minutes=int(w.get("minutes", 60)))
    if w.get("allDay"):
        start = dt.datetime(day.year, day.month, day.day)
        end = start + dt.timedelta(days=int(w["allDay"]))
    out = {"start": {"dateTime": start.isoformat(), "timeZone": zone},
           "end": {"dateTime": end.isoformat(), "timeZone": zone}}
    if w.get("allDay"):
        out["isAllDay"] = True
    if w.get("daily"):
        out["recurrence"] = {"pattern": {"type": "daily", "interval": 1},
                             "range": {"type": "numbered", "startDate": day.isoformat(),
                                       "numberOfOccurrences": int(w["daily"])}}
    if w.get("weekly"):
        dow = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")[day.weekday()]
        out["recurrence"] = {"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [dow]},
                             "range": {"type": "numbered", "startDate": day.isoformat(),
                                       "numberOfOccurrences": int(w["weekly"])}}
    return out


class InspectPrefs:
    immutable = True
    timezone = None
    body_text = False
    maxpagesize = None
