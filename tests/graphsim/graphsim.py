#!/usr/bin/python3
"""graphsim: a Microsoft Graph (v1.0 calendar subset) + AAD token endpoint simulator over HTTPS.

    /usr/bin/python3 tests/graphsim/graphsim.py --host 127.0.0.1 --port 0 --state-dir DIR \
        [--seed FILE] [--ready-file FILE] [--config JSON]

See README.md in this directory. Standard library only; the openssl CLI makes the test CA.
"""
import argparse
import http.server
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from control import ControlApp  # noqa: E402
from graphapi import JSON_CT, CIDict, GraphApp, Req, error_resp  # noqa: E402
from simcore import GraphError, set_random_seed  # noqa: E402
from simstate import State  # noqa: E402
from simsubs import Notifier  # noqa: E402

MAX_BODY = 8 * 1024 * 1024


# ---------------------------------------------------------------- certificates

def make_certs(state_dir, regen=False):
    """Create (or reuse) ca.pem/ca.key and server.pem/server.key in state_dir with the openssl CLI."""
    ca, cakey = os.path.join(state_dir, "ca.pem"), os.path.join(state_dir, "ca.key")
    crt, key = os.path.join(state_dir, "server.pem"), os.path.join(state_dir, "server.key")
    if not regen and all(os.path.exists(p) for p in (ca, cakey, crt, key)):
        r = subprocess.run(["openssl", "x509", "-checkend", "86400", "-noout", "-in", crt], capture_output=True)
        if r.returncode == 0:
            return ca, crt, key

    def run(*args):
        r = subprocess.run(["openssl"] + list(args), capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("openssl %s failed: %s" % (args[0], r.stderr.strip()))
    ext = os.path.join(state_dir, "server.ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", cakey, "-out", ca, "-days", "30", "-subj", "/CN=graphsim test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    csr = os.path.join(state_dir, "server.csr")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
        "-out", csr, "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", cakey, "-CAcreateserial", "-out", crt,
        "-days", "30", "-extfile", ext)
    os.chmod(cakey, 0o600)
    os.chmod(key, 0o600)
    return ca, crt, key


# ---------------------------------------------------------------- HTTP layer

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "graphsim/1.0"
    sys_version = ""
    timeout = 120

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("graphsim: %s - %s\n" % (self.address_string(), fmt % args))

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(n) if n else b""

    def _dispatch(self):
        try:
            body = self._read_body()
            too_large = False
        except ValueError:
            self.close_connection = True
            body, too_large = b"", True
        hdrs = CIDict(self.headers.items())
        host = self.headers.get("Host") or "%s:%d" % self.server.server_address[:2]
        req = Req(self.command, self.path, hdrs, body, host)
        try:
            if too_large:
                raise GraphError(413, "RequestEntityTooLarge", "The request body is too large.")
            if req.segments[:1] == ["_sim"]:
                resp = self.server.control.handle(req)
                resp.ctype = resp.ctype or "application/json"
            else:
                resp = self.server.graph.handle(req)
        except GraphError as e:
            resp = error_resp(e, req)
        except Exception:   # a simulator bug must not look like a dropped response
            traceback.print_exc()
            resp = error_resp(GraphError(500, "generalException", "graphsim internal error (see its log)"), req)
        if resp.drop:
            # the request was applied; the answer never arrives
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        payload = resp.payload()
        resp.headers.setdefault("request-id", req.request_id)
        resp.headers.setdefault("client-request-id", req.client_request_id)
        self.send_response(resp.status)
        if resp.status != 204 or payload:
            self.send_header("Content-Type", resp.ctype or JSON_CT)
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = _dispatch


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, ssl_ctx, state, info, verbose=False):
        super().__init__(addr, Handler)
        self.ssl_ctx = ssl_ctx
        self.state = state
        self.verbose = verbose
        self.graph = GraphApp(state)
        self.control = ControlApp(state, info)

    def finish_request(self, request, client_address):
        # TLS handshake in the per-connection thread, not in the accept loop
        try:
            request.settimeout(30)
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = self.ssl_ctx.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        if self.verbose:
            super().handle_error(request, client_address)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--seed", help="JSON seed file (same shape as POST /_sim/seed)")
    ap.add_argument("--ready-file")
    ap.add_argument("--config", help="JSON object of config knobs (same as POST /_sim/config)")
    ap.add_argument("--regen-certs", action="store_true")
    ap.add_argument("--random-seed", type=int, help="make generated ids/tokens reproducible")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args(argv)

    os.makedirs(a.state_dir, exist_ok=True)
    ca, crt, key = make_certs(a.state_dir, a.regen_certs)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(crt, key)

    set_random_seed(a.random_seed)
    state = State()
    if a.config:
        state.set_config(json.loads(a.config))
    if a.seed:
        with open(a.seed) as f:
            state.seed(json.load(f))
    notifier = Notifier(state)
    info = {}
    srv = Server((a.host, a.port), ctx, state, info, a.verbose)
    port = srv.server_address[1]
    base = "https://%s:%d" % (a.host, port)
    info.update({"port": port, "base_url": base, "graph_url": base + "/v1.0", "authority_url": base,
                 "ca_file": os.path.abspath(ca), "pid": os.getpid()})
    notifier.start()
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.5}, name="serve", daemon=True)
    t.start()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if a.ready_file:
        tmp = a.ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.replace(tmp, a.ready_file)
    sys.stderr.write("graphsim: listening on %s (pid %d)\n" % (base, os.getpid()))
    sys.stderr.flush()
    while not stop.wait(3600):
        pass
    srv.shutdown()
    notifier.stop()
    srv.server_close()
    if a.ready_file:
        try:
            os.unlink(a.ready_file)
        except OSError:
            pass
    sys.stderr.write("graphsim: stopped\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
