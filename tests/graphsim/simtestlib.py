"""Helpers shared by the simulator's own tests (constants, event bodies, a webhook receiver).

Kept out of conftest.py so that `from simtestlib import ...` is unambiguous when the whole
tests/ tree is collected together.
"""
import collections
import datetime as dt
import http.server
import json
import ssl
import threading
import time
import urllib.parse

TENANT = "test-tenant"
CLIENT = "test-client"
SECRET = "s3cret+/= value"
ALICE = "alice@sim.test"
BOB = "bob@sim.test"
CAROL = "carol@sim.test"
EXT_ID = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name CrmActivityId"



class Env:
    """A freshly reset simulator with one app (both permissions) and three mailboxes."""

    def __init__(self, sim):
        self.sim = sim
        self._token = None

    @property
    def token(self):
        if self._token is None:
            self._token = self.sim.token(TENANT, CLIENT, SECRET)
        return self._token

    def g(self, method, path, body=None, headers=None, token=None):
        return self.sim.graph(method, path, token=token or self.token, body=body, headers=headers)



def ev_body(subject="Meeting", day=1, hour=10, minutes=60, tz="UTC", **extra):
    """An event body starting `day` days from today (UTC) at `hour`."""
    base = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    st = base + dt.timedelta(days=day, hours=hour)
    en = st + dt.timedelta(minutes=minutes)
    b = {"subject": subject,
         "start": {"dateTime": st.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": tz},
         "end": {"dateTime": en.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": tz}}
    b.update(extra)
    return b


def window(days_before=1, days_after=30):
    base = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    s = (base - dt.timedelta(days=days_before)).strftime("%Y-%m-%dT%H:%M:%SZ")
    e = (base + dt.timedelta(days=days_after)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return "startDateTime=%s&endDateTime=%s" % (s, e)


class Receiver:
    """A tiny webhook endpoint (http, or https with a given cert) recording what graphsim posts."""

    def __init__(self, certfile=None, keyfile=None):
        self.posts = []                     # list of (path, parsed json)
        self.validations = []
        self.validation_mode = "echo"       # echo | wrong | status500 | json | slow
        self.statuses = collections.deque()  # statuses for the next notification POSTs (default 202)
        self.delay_s = 0.0                  # sleep before answering a notification POST
        self.cond = threading.Condition()
        rcv = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(n) if n else b""
                q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                if "validationToken" in q:
                    tokv = q["validationToken"][0]
                    with rcv.cond:
                        rcv.validations.append(tokv)
                    mode = rcv.validation_mode
                    if mode == "status500":
                        return self._send(500, b"no", "text/plain")
                    if mode == "wrong":
                        return self._send(200, b"not-the-token", "text/plain")
                    if mode == "slow":
                        time.sleep(1.0)
                    if mode == "json":
                        return self._send(200, json.dumps(tokv).encode(), "application/json")
                    return self._send(200, tokv.encode(), "text/plain; charset=utf-8")
                if rcv.delay_s:
                    time.sleep(rcv.delay_s)
                with rcv.cond:
                    st = rcv.statuses.popleft() if rcv.statuses else 202
                    rcv.posts.append((self.path, json.loads(data), st))
                    rcv.cond.notify_all()
                self._send(st, b"", "text/plain")

            def _send(self, status, body, ctype):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        scheme = "http"
        if certfile:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(certfile, keyfile)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = "%s://127.0.0.1:%d" % (scheme, self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_posts(self, n, timeout=10):
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.posts) >= n, timeout)
        assert ok, "expected %d notification POSTs, got %d" % (n, len(self.posts))
        return self.posts

    def close(self):
        self.server.shutdown()
        self.server.server_close()
