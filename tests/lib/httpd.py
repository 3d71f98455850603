"""A real Apache httpd with mod_rmsync for the pytest suites (pyhttpd style, stdlib + requests).

    from lib.httpd import Httpd

    h = Httpd(mpm="event")                      # temp dir under /tmp, free port on 127.0.0.1
    h.write_conf(rmsync='RMSyncDatabase "host=/tmp dbname=x"\\nRMSyncSyncCycle 10',
                 extra="...more httpd.conf lines...")
    rc, out = h.configtest()                    # apache2 -t
    h.start()                                   # apache2 -k start, waits for the pid file + port
    st = h.status()                             # GET /rmsync/status.json -> dict
    h.wait_for(lambda s: s["runner"]["alive"])  # poll status until true (no sleeps in tests)
    h.graceful(); h.stop()
    h.check_log(allow=["RMS00033"])             # no unexpected [warn]/[error] lines since last check
                                                # (nor crashes: "exit signal", AH00060, ASan reports)
    h.destroy()

The generated httpd.conf loads the MPM (env MPM=event|prefork|worker, default event), authz_core,
authz_host, mime and the module from <repo>/build/mod_rmsync.so (env RMSYNC_MODULE overrides),
listens on 127.0.0.1:<free port>, keeps PidFile, DefaultRuntimeDir and ErrorLog in the temp dir
and runs as www-data when started as root. It mounts the admin handler at /rmsync/ (Require
local) and the webhook handler at /rmsync/notify and /rmsync/lifecycle (Require all granted).

Debian's /usr/sbin/apache2 is run directly with a clean environment (APACHE_* variables from
the caller's environment are dropped: the config here does not use them).
"""
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import requests

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APACHE = os.environ.get("APACHE_BIN", "/usr/sbin/apache2")
MODDIR = os.environ.get("APACHE_MODDIR", "/usr/lib/apache2/modules")
MODULE = os.environ.get("RMSYNC_MODULE", os.path.join(TOP, "build", "mod_rmsync.so"))

# [Wed Nov 25 23:30:24.726270 2026] [rmsync:warn] [pid 17785:tid 17785] RMS00033: ...
LOG_RE = re.compile(r"^\[[^\]]*\] \[(?P<mod>[^:\]]*):(?P<level>[a-z0-9]+)\] (?P<rest>.*)$")
ID_RE = re.compile(r"\b(RMS\d{5}|AH\d{5})\b")
BAD_LEVELS = {"warn", "error", "crit", "alert", "emerg"}
# A crash, whatever the level: httpd reports a child killed by a signal at notice level
# ("AH00052: child pid N exit signal Segmentation fault (11)", AH00051 with a core dump) and a
# crash of the parent as AH00060. Only an explicit allow of the id lets one pass. A UBSan report
# ("file.c:12:5: runtime error: ...") lands in the error log when the runtime writes to stderr
# (GCC's ASan+UBSan build ignores UBSAN_OPTIONS log_path; httpd's stderr is the error log).
CRASH_RE = re.compile(r"exit signal|\bAH00060\b|: runtime error: ")


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_info(pid):
    """(ppid, uid, comm) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
        with open(f"/proc/{pid}/status") as f:
            uid = next(int(l.split()[1]) for l in f if l.startswith("Uid:"))
    except (OSError, StopIteration, ValueError):
        return None
    comm = st[st.index("(") + 1:st.rindex(")")]
    fields = st[st.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None   # zombie: gone for our purposes
    return int(fields[1]), uid, comm


def processes_named(comm):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            info = proc_info(int(d))
            if info and info[2] == comm:
                out.append(int(d))
    return out


def pid_alive(pid):
    return proc_info(pid) is not None


def wait_for(fn, timeout=20.0, interval=0.1, what="condition"):
    """Poll fn() until it returns something true (returned); AssertionError after timeout.
    Exceptions from fn propagate: wrap fn when failures mean "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def asan_log_prefix(var="ASAN_OPTIONS"):
    """log_path of ASAN_OPTIONS (or UBSAN_OPTIONS): reports go to <log_path>.<pid>; or None."""
    for opt in re.split(r"[:,]", os.environ.get(var, "")):
        if opt.startswith("log_path="):
            return opt.split("=", 1)[1] or None
    return None


def asan_reports():
    """The AddressSanitizer and UBSan report files that exist now (a set of paths)."""
    out = set()
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        prefix = asan_log_prefix(var)
        if not prefix:
            continue
        d, base = os.path.split(prefix)
        try:
            names = os.listdir(d or ".")
        except OSError:
            continue
        out |= {os.path.join(d, n) for n in names if n.startswith(base + ".")}
    return out


_live = []   # Httpd instances not yet destroyed: the per-test crash check looks at them


class Httpd:
    def __init__(self, mpm=None, name="rmsync", module=None):
        self.mpm = mpm or os.environ.get("MPM", "event")
        self.module = module or MODULE
        self.dir = tempfile.mkdtemp(prefix=f"{name}-httpd-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.conf = os.path.join(self.dir, "httpd.conf")
        self.error_log = os.path.join(self.dir, "error.log")
        self.pid_file = os.path.join(self.dir, "httpd.pid")
        self._log_pos = 0
        self._crash_pos = 0
        self._asan_seen = asan_reports()   # reports from before this instance are not ours
        self._parent_pid = None
        self.as_root = os.geteuid() == 0
        self.allow = set()
        _live.append(self)

    # ------------------------------------------------------------------ config
    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}"

    def url(self, path):
        return self.base_url + path

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def write_file(self, name, content, mode=0o644):
        p = self.path(name)
        with open(p, "w") as f:
            f.write(content)
        os.chmod(p, mode)
        return p

    def write_conf(self, rmsync="", extra="", loglevel="info rmsync:debug", locations=True):
        mods = [f"mpm_{self.mpm}", "authz_core", "authz_host", "mime"]
        lines = [f"ServerRoot {self.dir}"]
        lines += [f"LoadModule {m}_module {MODDIR}/mod_{m}.so" for m in mods]
        lines += [
            f"LoadModule rmsync_module {self.module}",
            f"Listen 127.0.0.1:{self.port}",
            "ServerName 127.0.0.1",
            f"PidFile {self.pid_file}",
            f"DefaultRuntimeDir {self.dir}",
            f"ErrorLog {self.error_log}",
            f"LogLevel {loglevel}",
            "Timeout 30",
            "TypesConfig " + ("/etc/mime.types" if os.path.exists("/etc/mime.types") else "/dev/null"),
        ]
        if self.as_root:
            lines += ["User www-data", "Group www-data"]
        if self.mpm == "prefork":
            lines += ["StartServers 2", "MinSpareServers 1", "MaxSpareServers 4"]
        else:
            lines += ["StartServers 1", "ServerLimit 4", "ThreadsPerChild 10",
                      "MaxRequestWorkers 40", "MinSpareThreads 10", "MaxSpareThreads 30"]
        lines.append(rmsync)
        if locations:
            lines += [
                "<Location /rmsync/>",
                "  SetHandler rmsync-admin",
                "  Require local",
                "</Location>",
                "<Location /rmsync/notify>",
                "  SetHandler rmsync-webhook",
                "  Require all granted",
                "</Location>",
                "<Location /rmsync/lifecycle>",
                "  SetHandler rmsync-webhook",
                "  Require all granted",
                "</Location>",
            ]
        lines.append(extra)
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        return self.conf

    # ------------------------------------------------------------------ control
    def env(self):
        e = {k: v for k, v in os.environ.items() if not k.startswith("APACHE_")}
        e.update(PATH="/usr/sbin:/usr/bin:/sbin:/bin", LANG="C", LC_ALL="C")
        if os.environ.get("RMSYNC_APACHE_PRELOAD"):   # e.g. libasan for an --asan build
            e["LD_PRELOAD"] = os.environ["RMSYNC_APACHE_PRELOAD"]
        return e

    def apachectl(self, *args, timeout=60):
        cmd = [APACHE, "-d", self.dir, "-f", self.conf] + list(args)
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=self.env(), timeout=timeout)
        return r.returncode, r.stdout

    def configtest(self):
        return self.apachectl("-t")

    def start(self, timeout=20):
        rc, out = self.apachectl("-k", "start")
        if rc != 0:
            raise RuntimeError(f"apache2 -k start failed ({rc}): {out}\n{self.log_tail()}")
        deadline = time.time() + timeout
        while time.time() < deadline:
            pid = self.parent_pid()
            if pid and self._port_open():
                self._parent_pid = pid
                return self
            time.sleep(0.05)
        raise RuntimeError(f"apache2 did not come up\n{out}\n{self.log_tail()}")

    def graceful(self):
        rc, out = self.apachectl("-k", "graceful")
        if rc != 0:
            raise RuntimeError(f"apache2 -k graceful failed ({rc}): {out}")

    def stop(self, timeout=30):
        pid = self.parent_pid() or self._parent_pid
        if not pid:
            return
        rc, out = self.apachectl("-k", "stop")
        deadline = time.time() + timeout
        while time.time() < deadline and pid_alive(pid):
            time.sleep(0.05)
        if pid_alive(pid):
            raise RuntimeError(f"apache2 (pid {pid}) did not stop: {out}")

    def destroy(self):
        try:
            self.stop()
        except Exception:
            pid = self.parent_pid() or self._parent_pid
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if self in _live:
            _live.remove(self)
        if not os.environ.get("RMSYNC_HTTPD_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def parent_pid(self):
        try:
            with open(self.pid_file) as f:
                pid = int(f.read().strip())
            return pid if pid_alive(pid) else None
        except (OSError, ValueError):
            return None

    def children(self):
        """Live children of the httpd parent: {pid: (uid, comm)}."""
        parent = self.parent_pid() or self._parent_pid
        out = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                info = proc_info(int(d))
                if info and info[0] == parent:
                    out[int(d)] = (info[1], info[2])
        return out

    def runner_pids(self):
        return [p for p, (_, comm) in self.children().items() if comm == "rmsync-runner"]

    def _port_open(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    # ------------------------------------------------------------------ requests
    def get(self, path, **kw):
        kw.setdefault("timeout", 10)
        return requests.get(self.url(path), **kw)

    def post(self, path, **kw):
        kw.setdefault("timeout", 10)
        return requests.post(self.url(path), **kw)

    def status(self):
        r = self.get("/rmsync/status.json")
        r.raise_for_status()
        return r.json()

    def wait_for(self, pred, timeout=20, interval=0.2, what="condition"):
        """Poll status() until pred(status) is true; returns that status."""
        last = [None]

        def probe():
            try:
                last[0] = self.status()
                return last[0] if pred(last[0]) else None
            except (requests.RequestException, ValueError, KeyError, TypeError):
                return None
        try:
            return wait_for(probe, timeout=timeout, interval=interval, what=what)
        except AssertionError as e:
            raise AssertionError(f"{e}; last status: {last[0]}") from None

    # ------------------------------------------------------------------ error log
    def log_text(self):
        try:
            with open(self.error_log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_tail(self, n=40):
        return "\n".join(self.log_text().splitlines()[-n:])

    def log_lines(self, since_last_check=True):
        text = self.log_text()
        part = text[self._log_pos:] if since_last_check else text
        return part.splitlines()

    def bad_log_lines(self, allow=()):
        """Since the last check: [warn]-or-worse lines whose message id is not allowed, crash
        lines (any level) and new AddressSanitizer reports."""
        allow = set(allow)
        bad = []
        for line in self.log_lines():
            m = LOG_RE.match(line)
            if not m:
                continue
            ids = set(ID_RE.findall(m.group("rest")))
            if CRASH_RE.search(line):
                if not (ids and ids <= allow):
                    bad.append(line)
                continue
            if m.group("level") not in BAD_LEVELS:
                continue
            if ids and ids <= allow:
                continue
            bad.append(line)
        return bad + self.new_asan_reports()

    def crash_lines(self, allow=()):
        """Crash lines and AddressSanitizer reports since the last crash check (the per-test
        check in conftest.py; bad_log_lines reports them again at the instance's end)."""
        text = self.log_text()
        lines = text[self._crash_pos:].splitlines()
        self._crash_pos = len(text)
        out = []
        for line in lines:
            if CRASH_RE.search(line):
                ids = set(ID_RE.findall(line))
                if not (ids and ids <= set(allow)):
                    out.append(line)
        return out + self.new_asan_reports()

    def new_asan_reports(self):
        """AddressSanitizer reports written since this instance was made (each reported once),
        as 'AddressSanitizer report <file>: <first lines>'."""
        out = []
        for f in sorted(asan_reports() - self._asan_seen):
            self._asan_seen.add(f)
            try:
                with open(f, errors="replace") as fh:
                    head = " | ".join(l.strip() for l in fh.read().splitlines()[:6] if l.strip())
            except OSError:
                head = "(unreadable)"
            out.append(f"AddressSanitizer report {f}: {head}")
        return out

    def mark_checked(self):
        """Everything logged so far counts as seen (a test that provoked lines on purpose)."""
        self._log_pos = self._crash_pos = len(self.log_text())
        self._asan_seen |= asan_reports()

    def check_log(self, allow=()):
        bad = self.bad_log_lines(allow)
        self._log_pos = len(self.log_text())
        assert not bad, "unexpected error log lines:\n" + "\n".join(bad)

    def wait_log(self, pattern, timeout=20):
        rx = re.compile(pattern)
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in self.log_lines(since_last_check=False):
                if rx.search(line):
                    return line
            time.sleep(0.1)
        raise AssertionError(f"no log line matching {pattern!r}; tail:\n{self.log_tail()}")


def www_data_uid():
    try:
        return pwd.getpwnam("www-data").pw_uid
    except KeyError:
        return None
