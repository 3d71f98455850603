"""Subscriptions, the validation handshake and notification delivery (GRAPH.md 5).

The Notifier runs one scheduler thread that sleeps on State.cond until the next due job
(debounced batch, retry, subscription expiry) and a small pool of delivery threads.
"""
import heapq
import http.client
import ipaddress
import itertools
import json
import re
import ssl
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from simcore import GraphError, fmt_ts, guid, now, parse_iso, rand_float

LOOPBACK_HOSTS = {"localhost", "localhost.localdomain"}
CHANGE_TYPES = ("created", "updated", "deleted")
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")


class Sub:
    def __init__(self):
        self.id = guid()
        self.created = time.time()
        self.reauth_sent = False
        self.reauth_deadline = None   # monotonic time after which notifications pause until reauthorized
        self.calendar_id = None       # None: every event of the mailbox; else only that calendar's

    def to_json(self):
        return {
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.client_id,
            "changeType": self.change_type,
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": None,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": fmt_ts(self.expires),
            "creatorId": self.creator_id,
            "includeResourceData": None,
            "latestSupportedTlsVersion": self.tls,
            "encryptionCertificate": None,
            "encryptionCertificateId": None,
            "notificationUrlAppId": None,
            "notificationContentType": None,
        }

    def control_json(self):
        d = self.to_json()
        d.update({"userId": self.user_key, "calendarId": self.calendar_id,
                  "tenantId": self.tenant_id, "immutableIds": self.immutable,
                  "reauthorizationPending": self.reauth_deadline is not None,
                  "paused": self.reauth_deadline is not None and time.monotonic() > self.reauth_deadline})
        return d


def _is_loopback(host):
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def http_post(url, body, content_type, timeout, cafile):
    """POST and return (status, content_type, body_bytes, elapsed_s). Raises OSError on failure."""
    u = urllib.parse.urlsplit(url)
    t0 = time.monotonic()
    if u.scheme == "https":
        ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
        conn = http.client.HTTPSConnection(u.hostname, u.port or 443, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    try:
        path = (u.path or "/") + ("?" + u.query if u.query else "")
        conn.request("POST", path, body=body, headers={
            "Content-Type": content_type, "User-Agent": "graphsim-notifier/1.0",
            "Accept": "text/plain, application/json"})
        resp = conn.getresponse()
        data = resp.read(1 << 20)
        return resp.status, resp.getheader("Content-Type") or "", data, time.monotonic() - t0
    finally:
        conn.close()


class Batch:
    __slots__ = ("url", "items", "attempt", "first", "kind", "delayed")

    def __init__(self, url, items, kind):
        self.url = url
        self.items = items          # list of (item dict, subscription id)
        self.attempt = 0
        self.first = time.time()
        self.kind = kind            # "change" | "lifecycle"
        self.delayed = False


class Notifier:
    def __init__(self, state, workers=8):
        self.state = state
        state.notifier = self
        self.pending = {}           # (url, kind) -> [list of (item, sub id), first enqueue monotonic]
        self.retries = []           # heap (due monotonic, seq, Batch)
        self.seq = itertools.count()
        self.endpoints = {}         # url -> {"posts", "slow", "since"} (slow-endpoint classification)
        self.stopping = False
        self._ra_on = None          # whether the last sweep had reauthorization on
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="notify")
        self.thread = threading.Thread(target=self._run, name="notifier", daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        with self.state.cond:
            self.stopping = True
            self.state.cond.notify_all()
        self.thread.join(timeout=5)
        self.pool.shutdown(wait=False, cancel_futures=True)

    def clear_locked(self):
        self.pending.clear()
        self.retries.clear()
        self.endpoints.clear()

    def _endpoint_locked(self, url):
        cfg = self.state.config
        ep = self.endpoints.get(url)
        if ep is None or time.monotonic() - ep["since"] > float(cfg["slow_endpoint_window_s"]):
            ep = self.endpoints[url] = {"posts": 0, "slow": 0, "since": time.monotonic()}
        return ep

    def endpoint_stats_locked(self):
        cfg = self.state.config
        out = {}
        for url, ep in self.endpoints.items():
            pct = 100.0 * ep["slow"] / ep["posts"] if ep["posts"] else 0.0
            state = "ok"
            if ep["posts"] >= int(cfg["slow_endpoint_min_posts"]):
                if pct >= float(cfg["slow_endpoint_drop_pct"]):
                    state = "drop"
                elif pct >= float(cfg["slow_endpoint_delay_pct"]):
                    state = "slow"
            out[url] = {"posts": ep["posts"], "slow": ep["slow"], "slow_pct": round(pct, 1), "state": state}
        return out

    # ------------------------------------------------------------ enqueue (State.lock held)

    def enqueue_change_locked(self, user, ev, ctype):
        st = self.state
        for sub in st.subs.by_user(user.key):
            if ctype not in sub.change_types or sub.expires <= now():
                continue
            if sub.calendar_id is not None and sub.calendar_id != ev.calendar_id:
                continue
            paused = sub.reauth_deadline is not None and time.monotonic() > sub.reauth_deadline
            if paused or st.take_notification_drop(user.key):
                # paused: reauthorizationRequired was ignored, changes meanwhile are lost (GRAPH.md 5.6)
                st.counters["notifications_dropped"] += 1
                st.notif_log.append({"time": fmt_ts(now()), "kind": "dropped", "url": sub.notification_url,
                                     "status": None, "items": 1, "subscriptionId": sub.id,
                                     "changeType": ctype, "error": "paused: reauthorization required"
                                     if paused else "drop_notifications fault"})
                continue
            eid = ev.imm_id if sub.immutable else ev.rest_id
            res = "Users/%s/Events/%s" % (user.key, eid)
            item = {
                "subscriptionId": sub.id,
                "subscriptionExpirationDateTime": fmt_ts(sub.expires),
                "changeType": ctype,
                "resource": res,
                "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "@odata.id": res,
                                 "@odata.etag": 'W/"%s"' % ev.change_key, "id": eid},
                "clientState": sub.client_state,
                "tenantId": sub.tenant_id,
            }
            for _ in range(1 + int(st.config["notification_duplicates"])):
                self._add_locked(sub.notification_url, "change", dict(item), sub.id)
        st.cond.notify_all()

    def lifecycle_locked(self, sub, event):
        st = self.state
        url = sub.lifecycle_url
        if not url:
            return False
        if event == "reauthorizationRequired" and sub.reauth_deadline is None:
            grace = float(st.config["reauthorization_grace_s"])
            if grace >= 0:
                sub.reauth_deadline = time.monotonic() + grace
        item = {"subscriptionId": sub.id, "subscriptionExpirationDateTime": fmt_ts(sub.expires),
                "tenantId": sub.tenant_id, "clientState": sub.client_state, "lifecycleEvent": event}
        self._add_locked(url, "lifecycle", item, sub.id)
        st.cond.notify_all()
        return True

    def _add_locked(self, url, kind, item, sub_id):
        self.state.counters["notifications_enqueued"] += 1
        slot = self.pending.get((url, kind))
        if slot is None:
            slot = self.pending[(url, kind)] = [[], time.monotonic()]
        slot[0].append((item, sub_id))

    # ------------------------------------------------------------ scheduler

    def _run(self):
        st = self.state
        with st.cond:
            while not self.stopping:
                nxt = self._sweep_locked()          # may queue lifecycle events, so it runs first
                t = time.monotonic()
                wake = [t + nxt] if nxt is not None else []
                debounce = st.config["notification_debounce_ms"] / 1000.0
                for key in list(self.pending):
                    items, since = self.pending[key]
                    if since + debounce <= t:
                        del self.pending[key]
                        bmax = max(1, int(st.config["notification_batch_max"]))
                        jitter = float(st.config["notification_jitter_ms"]) / 1000.0
                        for i in range(0, len(items), bmax):
                            b = Batch(key[0], items[i:i + bmax], key[1])
                            if jitter > 0:
                                heapq.heappush(self.retries, (t + rand_float() * jitter, next(self.seq), b))
                            else:
                                self.pool.submit(self._deliver, b)
                    else:
                        wake.append(since + debounce)
                while self.retries and self.retries[0][0] <= time.monotonic():
                    _, _, b = heapq.heappop(self.retries)
                    self.pool.submit(self._deliver, b)
                if self.retries:
                    wake.append(self.retries[0][0])
                timeout = max(0.0, min(wake) - time.monotonic()) if wake else None
                st.cond.wait(timeout)

    def _sweep_locked(self):
        """Remove expired subscriptions, send reauthorizationRequired when due; return seconds
        until the next of either (or None). Pops the subscriptions' due heaps (SubTable): a
        scan of every subscription after each change was ~n^2/2 visits for n created."""
        st = self.state
        subs = st.subs
        ra = float(st.config["reauthorization_before_expiry_s"])
        n = now()

        def top(heap, reauth):
            while heap:
                exp, _, sid = heap[0]
                sub = subs.get(sid)
                if sub is None or sub.expires != exp or (reauth and sub.reauth_sent):
                    heapq.heappop(heap)            # stale: gone, renewed or already sent
                    continue
                return sub
            return None

        while (sub := top(subs.due, False)) is not None and sub.expires <= n:
            heapq.heappop(subs.due)
            del subs[sub.id]
            st.counters["subscriptions_expired"] += 1
        nxt = None if sub is None else (sub.expires - n).total_seconds()
        if ra <= 0:
            subs.reauth.clear()                    # nothing to send: keep it from growing
        elif self._ra_on is not True:
            subs.reauth_from_scratch()
        self._ra_on = ra > 0
        if ra > 0:
            while (sub := top(subs.reauth, True)) is not None \
                    and (sub.expires - n).total_seconds() <= ra:
                heapq.heappop(subs.reauth)
                sub.reauth_sent = True
                self.lifecycle_locked(sub, "reauthorizationRequired")
            if sub is not None:
                left = (sub.expires - n).total_seconds() - ra
                nxt = left if nxt is None else min(nxt, left)
        return nxt

    # ------------------------------------------------------------ delivery (pool threads)

    def _missed_locked(self, b):
        if not self.state.config["missed_on_give_up"]:
            return
        for sid in sorted({sid for _, sid in b.items}):
            sub = self.state.subs.get(sid)
            if sub is not None:
                self.lifecycle_locked(sub, "missed")

    def _deliver(self, b):
        st = self.state
        with st.lock:
            if b.kind == "change":
                b.items = [(it, sid) for it, sid in b.items if sid in st.subs]
            if not b.items:
                return
            cls = self.endpoint_stats_locked().get(b.url, {}).get("state", "ok")
            if cls == "drop":
                # >= 15 % slow answers: notifications are dropped (GRAPH.md 5.4)
                st.counters["notifications_dropped"] += len(b.items)
                st.notif_log.append({"time": fmt_ts(now()), "kind": "dropped", "url": b.url, "status": None,
                                     "error": "slow endpoint", "items": len(b.items)})
                if b.kind == "change":
                    self._missed_locked(b)
                return
            if cls == "slow" and not b.delayed:
                # >= 10 % slow answers: delivery is delayed (~10 min in Graph; slow_endpoint_delay_s here)
                b.delayed = True
                heapq.heappush(self.retries, (time.monotonic() + float(st.config["slow_endpoint_delay_s"]),
                                              next(self.seq), b))
                st.cond.notify_all()
                return
            timeout = float(st.config["notification_timeout_s"])
            cafile = st.config["notification_ca_file"]
        body = json.dumps({"value": [it for it, _ in b.items]}).encode()
        status, err, elapsed = None, None, 0.0
        try:
            status, _, _, elapsed = http_post(b.url, body, "application/json; charset=utf-8", timeout, cafile)
            if elapsed > timeout:
                err = "timeout"
        except (OSError, http.client.HTTPException, ssl.SSLError) as e:
            err = "%s: %s" % (type(e).__name__, e)
            if "timed out" in str(e):
                err = "timeout"
        ok = err is None and status is not None and 200 <= status < 300
        with st.cond:
            b.attempt += 1
            ep = self._endpoint_locked(b.url)
            ep["posts"] += 1
            if err == "timeout" or elapsed * 1000 > float(st.config["slow_endpoint_slow_ms"]):
                ep["slow"] += 1
            st.notif_log.append({"time": fmt_ts(now()), "kind": b.kind, "url": b.url, "status": status,
                                 "error": err, "attempt": b.attempt, "elapsed_ms": int(elapsed * 1000),
                                 "items": len(b.items), "value": [it for it, _ in b.items]})
            if ok:
                st.counters["notification_posts_ok"] += 1
                st.counters["notifications_delivered"] += len(b.items)
                if b.kind == "lifecycle":
                    st.counters["lifecycle_sent"] += len(b.items)
                return
            st.counters["notification_posts_failed"] += 1
            if self.stopping:
                return
            delay = min(st.config["retry_base_ms"] * (2 ** (b.attempt - 1)), st.config["retry_max_delay_ms"]) / 1000.0
            if time.time() + delay - b.first > float(st.config["notification_retry_window_s"]):
                st.counters["notifications_failed"] += len(b.items)
                if b.kind == "change":
                    self._missed_locked(b)
                return
            heapq.heappush(self.retries, (time.monotonic() + delay, next(self.seq), b))
            st.cond.notify_all()


# ---------------------------------------------------------------- subscription API

# users/{u}/events = every event of the mailbox (documented); users/{u}/calendar/events and
# users/{u}/calendars/{id}/events = one calendar (not in the v1.0 docs, used in practice; GRAPH.md 4.1/13)
_RES_RE = re.compile(r"^/?users/([^/]+)/(?:(calendar)/|calendars/([^/]+)/)?events$", re.I)


def validate_endpoint(state, url):
    """The validation handshake (GRAPH.md 5.2). Raises GraphError 400 when it fails."""
    token = "Validation: Testing client application reachability for subscription Request-Id: %s +/=&?" % guid()
    full = url + ("&" if "?" in url else "?") + "validationToken=" + urllib.parse.quote(token, safe="")
    with state.lock:
        timeout = float(state.config["validation_timeout_s"])
        cafile = state.config["notification_ca_file"]
        state.counters["validation_requests"] += 1
    status, ctype, data, err, elapsed = None, "", b"", None, 0.0
    try:
        status, ctype, data, elapsed = http_post(full, b"", "text/plain; charset=utf-8", timeout, cafile)
        if elapsed > timeout:
            err = "timeout"
    except (OSError, http.client.HTTPException, ssl.SSLError) as e:
        err = "timeout" if "timed out" in str(e) else "%s: %s" % (type(e).__name__, e)
    with state.lock:
        state.notif_log.append({"time": fmt_ts(now()), "kind": "validation", "url": url, "status": status,
                                "error": err, "elapsed_ms": int(elapsed * 1000), "items": 0})
        if err is None and status == 200 and ctype.lower().startswith("text/plain") \
                and data.decode("utf-8", "replace") == token:
            return
        state.counters["validation_failures"] += 1
    if err == "timeout":
        raise GraphError(400, "InvalidRequest", "Subscription validation request timed out.")
    if err is not None or status != 200:
        raise GraphError(400, "ValidationError", "Subscription validation request failed. Notification endpoint "
                         "must respond with 200 OK to validation request.")
    if not ctype.lower().startswith("text/plain"):
        raise GraphError(400, "ValidationError", "Subscription validation request failed. Response must have "
                         "Content-Type text/plain.")
    raise GraphError(400, "ValidationError", "Subscription validation request failed. Response must exactly "
                     "match validationToken query parameter.")


def _check_url(state, url, field):
    if not isinstance(url, str) or not url:
        raise GraphError(400, "InvalidRequest", "%s is required." % field)
    u = urllib.parse.urlsplit(url)
    if u.scheme == "https" and u.hostname:
        return
    if u.scheme == "http" and u.hostname and state.config["allow_http_notification_urls"] \
            and _is_loopback(u.hostname):
        return
    raise GraphError(400, "InvalidRequest", "Invalid %s. The Uri scheme must be 'https'." % field)


def _parse_expiry(state, value, min_future=True):
    try:
        exp = parse_iso(value)
    except (ValueError, TypeError):
        raise GraphError(400, "InvalidRequest", "expirationDateTime is invalid.")
    n = now()
    maxm = float(state.config["max_subscription_minutes"])
    if (exp - n).total_seconds() > maxm * 60 + 1:
        raise GraphError(400, "ExtensionError", "Subscription expiration can only be %g minutes in the future."
                         % maxm)
    if min_future and exp <= n:
        raise GraphError(400, "InvalidRequest", "Subscription expiration must be in the future.")
    return exp


def create_subscription(state, tok, body, immutable):
    if not isinstance(body, dict):
        raise GraphError(400, "BadRequest", "Invalid request body.")
    known = {"changeType", "notificationUrl", "lifecycleNotificationUrl", "resource", "expirationDateTime",
             "clientState", "latestSupportedTlsVersion", "includeResourceData", "@odata.type",
             "notificationQueryOptions", "encryptionCertificate", "encryptionCertificateId"}
    for k in body:
        if k not in known:
            raise GraphError(400, "BadRequest", "The property '%s' does not exist on type "
                             "'microsoft.graph.subscription'." % k)
    ct = body.get("changeType")
    if not isinstance(ct, str) or not ct:
        raise GraphError(400, "InvalidRequest", "changeType is required.")
    cts = [c.strip() for c in ct.split(",")]
    if any(c not in CHANGE_TYPES for c in cts):
        raise GraphError(400, "InvalidRequest", "Invalid changeType '%s'." % ct)
    if body.get("includeResourceData"):
        raise GraphError(400, "InvalidRequest", "graphsim: rich notifications (includeResourceData) are not "
                         "implemented.")
    res = body.get("resource")
    m = _RES_RE.match(res or "")
    if not m:
        if isinstance(res, str) and res.lower().startswith(("me/", "/me/")):
            raise GraphError(400, "ExtensionError", "Operation: Create; Exception: [/me request is only valid "
                             "with delegated authentication flow.]")
        raise GraphError(400, "InvalidRequest", "Resource '%s' is not supported." % res)
    _check_url(state, body.get("notificationUrl"), "notificationUrl")
    if body.get("lifecycleNotificationUrl") is not None:
        _check_url(state, body.get("lifecycleNotificationUrl"), "lifecycleNotificationUrl")
    cs = body.get("clientState")
    if cs is not None and (not isinstance(cs, str) or len(cs) > int(state.config["client_state_max_len"])):
        raise GraphError(400, "InvalidRequest", "clientState must be a string of at most %d characters."
                         % state.config["client_state_max_len"])
    tls = body.get("latestSupportedTlsVersion") or "v1_2"
    if tls not in ("v1_0", "v1_1", "v1_2", "v1_3"):
        raise GraphError(400, "InvalidRequest", "Invalid latestSupportedTlsVersion.")
    exp = _parse_expiry(state, body.get("expirationDateTime"))
    with state.lock:
        user = state.find_user(urllib.parse.unquote(m.group(1)))
        if user is None:
            raise GraphError(404, "ExtensionError", "Operation: Create; Exception: [Status Code: NotFound; "
                             "Reason: The requested user '%s' is invalid.]" % m.group(1))
        cal_id = user.calendar_id if m.group(2) else None
        if m.group(3):
            cal_id = urllib.parse.unquote(m.group(3))
            if cal_id not in user.calendars:
                raise GraphError(404, "ExtensionError", "Operation: Create; Exception: [Status Code: NotFound; "
                                 "Reason: The specified object was not found in the store.]")
        if not any(p in tok["roles"] for p in ("Calendars.Read", "Calendars.ReadWrite")):
            raise GraphError(403, "ExtensionError", "Operation: Create; Exception: [Status Code: Forbidden; "
                             "Reason: Access is denied. Check credentials and try again.]")
        if len(state.subs.by_user(user.key)) >= \
                int(state.config["max_subscriptions_per_mailbox"]):
            raise GraphError(403, "ExtensionError", "Operation: Create; Exception: [Status Code: Forbidden; "
                             "Reason: The maximum number of subscriptions for this mailbox has been reached.]")
    validate_endpoint(state, body["notificationUrl"])
    if body.get("lifecycleNotificationUrl"):
        validate_endpoint(state, body["lifecycleNotificationUrl"])
    sub = Sub()
    sub.resource = res
    sub.user_key = user.key
    sub.calendar_id = cal_id
    sub.client_id = tok["client_id"]
    sub.tenant_id = tok["tenant_id"]
    sub.creator_id = tok["app"].sp_id
    sub.change_type = ",".join(cts)
    sub.change_types = set(cts)
    sub.notification_url = body["notificationUrl"]
    sub.lifecycle_url = body.get("lifecycleNotificationUrl")
    sub.client_state = cs
    sub.tls = tls
    sub.expires = exp
    sub.immutable = immutable
    with state.cond:
        state.subs[sub.id] = sub
        state.cond.notify_all()
    return sub


def get_subscription(state, tok, sid):
    with state.lock:
        sub = state.subs.get(sid)
        if sub is None or sub.client_id != tok["client_id"] or sub.expires <= now():
            raise GraphError(404, "ResourceNotFound", "The object was not found.")
        return sub


def patch_subscription(state, tok, sid, body):
    if not isinstance(body, dict) or not ({"expirationDateTime", "notificationUrl"} & set(body)):
        raise GraphError(400, "InvalidRequest", "expirationDateTime or notificationUrl is required.")
    get_subscription(state, tok, sid)
    exp = _parse_expiry(state, body["expirationDateTime"]) if "expirationDateTime" in body else None
    if "notificationUrl" in body:
        _check_url(state, body["notificationUrl"], "notificationUrl")
        validate_endpoint(state, body["notificationUrl"])
    with state.cond:
        sub = get_subscription(state, tok, sid)
        if exp is not None:
            sub.expires = exp
            sub.reauth_sent = False
            sub.reauth_deadline = None        # renewing also reauthorizes
            state.subs.touch(sub)
        if "notificationUrl" in body:
            sub.notification_url = body["notificationUrl"]
        state.cond.notify_all()
        return sub


def reauthorize_subscription(state, tok, sid):
    with state.lock:
        sub = get_subscription(state, tok, sid)
        sub.reauth_deadline = None


def delete_subscription(state, tok, sid):
    with state.cond:
        get_subscription(state, tok, sid)
        del state.subs[sid]


def lifecycle(state, sid, event):
    if event not in LIFECYCLE_EVENTS:
        raise GraphError(400, "BadRequest", "event must be one of %s" % ", ".join(LIFECYCLE_EVENTS))
    with state.cond:
        sub = state.subs.get(sid)
        if sub is None:
            raise GraphError(404, "ResourceNotFound", "The object was not found.")
        sent = state.notifier.lifecycle_locked(sub, event)
        if event == "subscriptionRemoved":
            del state.subs[sid]
        return {"queued": sent, "lifecycleNotificationUrl": sub.lifecycle_url,
                "subscriptionRemoved": event == "subscriptionRemoved"}
