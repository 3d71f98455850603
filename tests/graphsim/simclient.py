"""Python helper to run and drive graphsim from tests (stdlib only).

    import sys; sys.path.insert(0, "tests/graphsim")
    from simclient import GraphSim
    sim = GraphSim(state_dir="/tmp/x", seed="tests/graphsim/demo-seed.json")   # starts the simulator
    tok = sim.token("rmsync-demo-tenant", "rmsync-demo-client", "demo-secret-change-me")
    st, hdrs, body = sim.graph("GET", "/users/alice@demo.rmsync.test/events", token=tok)
    sim.user_create("alice@demo.rmsync.test", {"subject": "x", "start": {...}, "end": {...}})
    sim.stop()

The API of this module is documented in README.md and kept stable.
"""
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3"


class SimError(Exception):
    def __init__(self, status, body):
        super().__init__("graphsim control call failed: %s %s" % (status, body))
        self.status = status
        self.body = body


class GraphSim:
    """Start graphsim as a subprocess (or attach to a running one) and talk to it over HTTPS."""

    def __init__(self, state_dir=None, seed=None, config=None, host="127.0.0.1", port=0,
                 start=True, ready_timeout=30.0, log_file=None, extra_args=()):
        self.proc = None
        self._own_dir = state_dir is None
        self.state_dir = state_dir or tempfile.mkdtemp(prefix="graphsim-")
        os.makedirs(self.state_dir, exist_ok=True)
        self.ready_file = os.path.join(self.state_dir, "ready.json")
        self.log_path = log_file or os.path.join(self.state_dir, "graphsim.log")
        if start:
            self._start(seed, config, host, port, ready_timeout, extra_args)

    @classmethod
    def attach(cls, ready_file):
        """Use an already running simulator described by its ready file."""
        self = cls.__new__(cls)
        self.proc = None
        self._own_dir = False
        self.state_dir = os.path.dirname(os.path.abspath(ready_file))
        self.ready_file = ready_file
        self.log_path = None
        self._load_ready()
        return self

    # ------------------------------------------------------------ process

    def _start(self, seed, config, host, port, ready_timeout, extra_args):
        if os.path.exists(self.ready_file):
            os.unlink(self.ready_file)
        seed_file = None
        if isinstance(seed, dict):
            seed_file = os.path.join(self.state_dir, "seed.json")
            with open(seed_file, "w") as f:
                json.dump(seed, f)
        elif seed:
            seed_file = seed
        cmd = [PYTHON, os.path.join(HERE, "graphsim.py"), "--host", host, "--port", str(port),
               "--state-dir", self.state_dir, "--ready-file", self.ready_file]
        if seed_file:
            cmd += ["--seed", seed_file]
        if config:
            cmd += ["--config", json.dumps(config)]
        cmd += list(extra_args)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + ready_timeout
        while not os.path.exists(self.ready_file):
            if self.proc.poll() is not None:
                raise RuntimeError("graphsim exited with %s; see %s" % (self.proc.returncode, self.log_path))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("graphsim not ready after %ss; see %s" % (ready_timeout, self.log_path))
            time.sleep(0.05)
        self._load_ready()

    def _load_ready(self):
        with open(self.ready_file) as f:
            self.ready = json.load(f)
        self.port = self.ready["port"]
        self.base_url = self.ready["base_url"]
        self.graph_url = self.ready["graph_url"]
        self.authority_url = self.ready["authority_url"]
        self.ca_file = self.ready["ca_file"]
        self.pid = self.ready["pid"]
        self.ssl_context = ssl.create_default_context(cafile=self.ca_file)

    def stop(self, timeout=10):
        """SIGTERM the simulator and wait for it (only if this object started it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self._log.close()
        self.proc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    # ------------------------------------------------------------ raw HTTPS

    def request(self, method, url, body=None, headers=None, timeout=30, raw=False):
        """HTTPS request to an absolute URL or a path on the simulator.

        Returns (status, headers dict with lowercased keys, parsed JSON or text or None).
        body: dict/list (sent as JSON), str/bytes (sent as is).
        """
        if not url.startswith("https://"):
            url = self.base_url + url
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            if isinstance(body, (dict, list)):
                data = json.dumps(body).encode()
                hdrs.setdefault("Content-Type", "application/json")
            else:
                data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, context=self.ssl_context, timeout=timeout) as r:
                status, rh, payload = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            status, rh, payload = e.code, e.headers, e.read()
        h = {k.lower(): v for k, v in rh.items()}
        if raw:
            return status, h, payload
        if not payload:
            return status, h, None
        try:
            return status, h, json.loads(payload)
        except ValueError:
            return status, h, payload.decode("utf-8", "replace")

    def graph(self, method, path, token=None, body=None, headers=None, timeout=30):
        """Call a Graph path ('/users/...' or a full nextLink URL) with a bearer token."""
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = "Bearer " + token
        url = path if path.startswith("https://") else self.graph_url + path
        return self.request(method, url, body, hdrs, timeout)

    def token(self, tenant, client_id, secret, scope="https://graph.microsoft.com/.default"):
        """Client-credentials token; returns the access token string (raises SimError otherwise)."""
        st, _, b = self.token_response(tenant, client_id, secret, scope)
        if st != 200:
            raise SimError(st, b)
        return b["access_token"]

    def token_response(self, tenant, client_id, secret, scope="https://graph.microsoft.com/.default",
                       grant_type="client_credentials"):
        form = urllib.parse.urlencode({"client_id": client_id, "client_secret": secret, "scope": scope,
                                       "grant_type": grant_type})
        return self.request("POST", "/%s/oauth2/v2.0/token" % urllib.parse.quote(tenant, safe=""), form,
                            {"Content-Type": "application/x-www-form-urlencoded"})

    # ------------------------------------------------------------ control API

    def ctl(self, method, path, body=None):
        """Call /_sim/<path>; returns parsed JSON, raises SimError on a non-2xx answer."""
        st, _, b = self.request(method, "/_sim/" + path.lstrip("/"), body)
        if st >= 300:
            raise SimError(st, b)
        return b

    def reset(self):
        return self.ctl("POST", "reset")

    def seed(self, data):
        return self.ctl("POST", "seed", data)

    def config(self, **knobs):
        """Set knobs (returns the full config). config() with no knobs just reads it."""
        return self.ctl("POST", "config", knobs) if knobs else self.ctl("GET", "config")

    def config_defaults(self):
        return self.ctl("POST", "config/reset")

    @staticmethod
    def _q(ref):
        return urllib.parse.quote(ref, safe="@")

    def user_add(self, mail, display_name=None, id=None):
        body = {"mail": mail, "displayName": display_name or mail.split("@")[0]}
        if id:
            body["id"] = id
        return self.ctl("POST", "users", body)

    def user_events(self, user, include_deleted=True):
        return self.ctl("GET", "users/%s/events%s" % (self._q(user), "" if include_deleted else "?deleted=0"))["value"]

    def user_event(self, user, event_id):
        return self.ctl("GET", "users/%s/events/%s" % (self._q(user), urllib.parse.quote(event_id, safe="")))

    def user_create(self, user, event, calendar=None):
        """Create as the user in Outlook; calendar = id or name of a calendar (default: the main one)."""
        if calendar is not None:
            event = dict(event, calendar=calendar)
        return self.ctl("POST", "users/%s/events" % self._q(user), event)

    def user_calendars(self, user):
        return self.ctl("GET", "users/%s/calendars" % self._q(user))["value"]

    def user_calendar_add(self, user, name, **fields):
        """The user creates a calendar (the same as POST /users/{u}/calendars) -> calendar JSON."""
        return self.ctl("POST", "users/%s/calendars" % self._q(user), dict(fields, name=name))

    def user_mailbox_settings(self, user):
        return self.ctl("GET", "users/%s/mailboxSettings" % self._q(user))

    def user_series(self, user, subject, start, end, time_zone="UTC", pattern="weekly", count=None,
                    end_date=None, calendar=None, **extra):
        """Create a recurring series as the user: start/end = naive ISO local times in time_zone of the
        first occurrence; pattern weekly (on start's weekday) or daily; count or end_date ends it."""
        import datetime as _dt
        sd = _dt.date.fromisoformat(start[:10])
        pat = {"type": pattern, "interval": 1}
        if pattern == "weekly":
            pat["daysOfWeek"] = [("monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
                                  "sunday")[sd.weekday()]]
        rng = {"type": "numbered", "startDate": sd.isoformat(), "numberOfOccurrences": count} if count \
            else {"type": "endDate", "startDate": sd.isoformat(), "endDate": end_date} if end_date \
            else {"type": "noEnd", "startDate": sd.isoformat()}
        body = dict({"subject": subject, "start": {"dateTime": start, "timeZone": time_zone},
                     "end": {"dateTime": end, "timeZone": time_zone},
                     "recurrence": {"pattern": pat, "range": rng}}, **extra)
        return self.user_create(user, body, calendar=calendar)

    def user_patch(self, user, event_id, patch):
        return self.ctl("PATCH", "users/%s/events/%s" % (self._q(user), urllib.parse.quote(event_id, safe="")),
                        patch)

    def user_delete(self, user, event_id):
        return self.ctl("DELETE", "users/%s/events/%s" % (self._q(user), urllib.parse.quote(event_id, safe="")))

    def user_cancel(self, user, event_id):
        return self.ctl("POST", "users/%s/events/%s/cancel" % (self._q(user),
                                                                urllib.parse.quote(event_id, safe="")))

    def user_restore(self, user, event_id):
        """Restore a deleted event from Deleted Items (new rest id, same immutable id, `created` change)."""
        return self.ctl("POST", "users/%s/events/%s/restore" % (self._q(user), urllib.parse.quote(event_id, safe="")))

    def user_calendar_view(self, user, start, end, calendar=None):
        """Inspection calendarView (occurrences expanded; immutableId/restId/calendarId on each item);
        calendar = id or name limits it to one calendar (default: all calendars)."""
        q = {"startDateTime": start, "endDateTime": end}
        if calendar is not None:
            q["calendar"] = calendar
        return self.ctl("GET", "users/%s/calendarView?%s" % (self._q(user), urllib.parse.urlencode(q)))["value"]

    def user_set(self, user, **fields):
        """accessDenied / mailboxEnabled / displayName / timeZone (mailboxSettings) of a mailbox."""
        return self.ctl("PATCH", "users/%s" % self._q(user), fields)

    def app_set(self, client_id, **fields):
        """permissions / client_secret of an app."""
        return self.ctl("PATCH", "apps/%s" % urllib.parse.quote(client_id, safe=""), fields)

    def fault(self, kind, **spec):
        """POST /_sim/faults, e.g. fault("status", status=503, retry_after=1, count=3, match={...})."""
        spec["kind"] = kind
        return self.ctl("POST", "faults", spec)

    def clear_faults(self):
        return self.ctl("DELETE", "faults")

    def evict_delta_tokens(self, user=None):
        return self.fault("evict_delta_tokens", **({"user": user} if user else {}))

    def lifecycle(self, subscription_id, event):
        return self.ctl("POST", "subscriptions/%s/lifecycle" % subscription_id, {"event": event})

    def expire_subscription(self, subscription_id):
        return self.ctl("POST", "subscriptions/%s/expire" % subscription_id)

    def subscriptions(self):
        return self.ctl("GET", "subscriptions")["value"]

    def counters(self):
        return self.ctl("GET", "counters")

    def reset_counters(self):
        return self.ctl("POST", "counters/reset")

    def notifications(self):
        return self.ctl("GET", "notifications")["value"]

    def requests(self, user=None, kind=None, method=None):
        """Graph/token requests the simulator served (newest last): method, path, kind, user, status,
        error code, ms, request ids and the Prefer/If-Match/Content-Type/User-Agent headers."""
        q = {k: v for k, v in (("user", user), ("kind", kind), ("method", method)) if v}
        return self.ctl("GET", "requests" + ("?" + urllib.parse.urlencode(q) if q else ""))["value"]

    def clear_requests(self):
        return self.ctl("DELETE", "requests")

    def clear_notifications(self):
        return self.ctl("DELETE", "notifications")

    def wait_for(self, predicate, timeout=10.0, interval=0.05):
        """Poll predicate() until truthy (returns its value) or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            v = predicate()
            if v:
                return v
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met within %ss" % timeout)
            time.sleep(interval)
