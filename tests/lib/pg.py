"""Throwaway PostgreSQL clusters for mod_rmsync tests (Debian python3, stdlib only).

A PgCluster is a private cluster in a fresh temp dir under /tmp, listening on a free port on
127.0.0.1 (and a unix socket in its own dir), fsync off, with the crm + rmsync schemas (and
optionally the demo data) applied and a password login role for the module:

    from lib.pg import PgCluster, PgError

    @pytest.fixture(scope="module")
    def pg():
        c = PgCluster(demo=True).start()     # about 1-2 s
        yield c
        c.destroy()

    def test_x(pg):
        pg.conninfo          # 'host=127.0.0.1 port=N dbname=rmsync user=rmsync password=...'
                             # (usable by Apache's www-data: TCP + scram password)
        pg.super_conninfo    # same over TCP as the superuser 'postgres' (password too)
        rows = pg.sql("SELECT identity, locked FROM crm.fnd_user WHERE identity = $1", "ALICE")
        # -> [('ALICE', 'f')]  values are psql's text forms, NULL -> None
        pg.val("SELECT rmsync.master_user_state()")            # -> 'locked'
        pg.json("SELECT * FROM rmsync.representatives")         # -> [{'representative_id': ...}]
        with pytest.raises(PgError) as e:
            pg.sql("UPDATE crm.business_activity SET description = 'x' WHERE activity_no = $1",
                   42, crm_user="ALICE")
        assert e.value.sqlstate == "RMS01"
        pg.stop(); pg.start()    # same port and data: provoke 503s, then recover
        pg.kill()                # SIGKILL the postmaster (crash); start() recovers
        pg.restart()
        pg.create_database("other", demo=False)   # cheap extra DB: pg.sql(..., db="other")

Parameters: $1..$n in the query are replaced by psql variables (:'pN', quoted by psql as
literals) so values with quotes or backslashes are safe; None becomes NULL. Do not use $n
inside string literals or dollar-quoted bodies of the query. crm_user= sets the CRM acting
user (SET crm.user) for that psql session; role='app' connects as the module's role over TCP
(default: the superuser over the unix socket).

Listening: pg.listener() returns a Listener (a psql session that ran LISTEN rmsync);
listener.poll(timeout) returns the (channel, payload) pairs received so far.

Root vs not: as root, initdb/pg_ctl run as the `postgres` user via runuser and the temp dir is
chowned to it (chmod 755 so www-data can reach the socket dir); as a normal user they run
directly. Environment: RMSYNC_PG_BIN overrides /usr/lib/postgresql/15/bin; RMSYNC_PG_KEEP=1
keeps the temp dir on destroy() for post-mortems.
"""

import atexit
import csv
import io
import json
import os
import pwd
import pty
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SQL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "sql")
PG_BIN = os.environ.get("RMSYNC_PG_BIN", "/usr/lib/postgresql/15/bin")
NULL = "\x01NULL\x01"

_live = []
_template_dir = {}


@atexit.register
def _stop_all():
    for c in list(_live):
        try:
            c.destroy()
        except Exception:
            pass


class PgError(Exception):
    """A psql/SQL failure: .sqlstate (e.g. 'RMS01', '57014'), .message, .stderr."""

    def __init__(self, stderr, sqlstate=None, message=None):
        super().__init__(stderr.strip())
        self.stderr = stderr
        self.sqlstate = sqlstate
        self.message = message or stderr.strip()


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class PgCluster:
    def __init__(self, dbname="rmsync", schema=True, crm=True, demo=False, app_user="rmsync",
                 app_password=None, super_password=None, port=None, settings=None):
        self.dbname = dbname
        self.schema = schema
        self.crm = crm
        self.demo = demo
        self.app_user = app_user
        self.app_password = app_password or ("app-" + secrets.token_hex(8))
        self.super_user = "postgres"
        self.super_password = super_password or ("su-" + secrets.token_hex(8))
        self.port = port
        self.settings = dict(settings or {})
        self.dir = None
        self.running = False
        self._as_root = os.geteuid() == 0

    # ---------------------------------------------------------------- paths and conninfo
    @property
    def datadir(self):
        return os.path.join(self.dir, "data")

    @property
    def sockdir(self):
        return os.path.join(self.dir, "sock")

    @property
    def logfile(self):
        return os.path.join(self.dir, "postgres.log")

    @property
    def conninfo(self):
        """libpq conninfo for the module's login role over TCP (what RMSyncDatabase takes)."""
        return (f"host=127.0.0.1 port={self.port} dbname={self.dbname} "
                f"user={self.app_user} password={self.app_password}")

    @property
    def super_conninfo(self):
        return (f"host=127.0.0.1 port={self.port} dbname={self.dbname} "
                f"user={self.super_user} password={self.super_password}")

    @property
    def socket_conninfo(self):
        """Superuser over the unix socket (trust)."""
        return f"host={self.sockdir} port={self.port} dbname={self.dbname} user={self.super_user}"

    def env(self):
        """Environment for psql/libpq clients as the superuser (unix socket)."""
        e = dict(os.environ)
        e.update(PGHOST=self.sockdir, PGPORT=str(self.port), PGUSER=self.super_user,
                 PGDATABASE=self.dbname)
        e.pop("PGPASSWORD", None)
        return e

    # ---------------------------------------------------------------- lifecycle
    def _run_pg(self, args, **kw):
        """Run a server binary as the cluster owner."""
        cmd = [os.path.join(PG_BIN, args[0])] + list(args[1:])
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              **kw)

    def start(self):
        """Create (first call) and start the cluster; returns self."""
        if self.dir is None:
            self._create()
            _live.append(self)
        if self.running:
            return self
        tries = 1 if self.port else 5
        for i in range(tries):
            if not self.port or i > 0:
                self.port = free_port()
            opts = (f"-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1")
            r = self._run_pg(["pg_ctl", "-D", self.datadir, "-l", self.logfile, "-w", "-t", "30",
                              "-o", opts, "start"])
            if r.returncode == 0:
                self.running = True
                break
            if i == tries - 1:
                raise RuntimeError(f"pg_ctl start failed: {r.stdout}\n{self.log_tail()}")
        if not getattr(self, "_provisioned", False):
            self._provision()
            self._provisioned = True
        return self

    def _create(self):
        self.dir = tempfile.mkdtemp(prefix="rmsync-pg-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        os.makedirs(self.sockdir)
        os.chmod(self.sockdir, 0o755)
        if self._as_root:
            pw = pwd.getpwnam("postgres")
            for p in (self.dir, self.sockdir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        r = subprocess.run(["cp", "-a", self._template(), self.datadir], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"copying the initdb template failed: {r.stdout}")
        conf = {
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
            "shared_buffers": "16MB", "max_connections": "100", "log_min_messages": "warning",
            "log_line_prefix": "'%m [%p] %q%u@%d '", "password_encryption": "scram-sha-256",
            "timezone": "UTC",
        }
        conf.update(self.settings)
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write("\n# rmsync test cluster\n")
            for k, v in conf.items():
                f.write(f"{k} = {v}\n")
        with open(os.path.join(self.datadir, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\n"
                    "host all all 127.0.0.1/32 scram-sha-256\n")

    def _template(self):
        """A pristine initdb output, made once per process and copied for every cluster
        (copying is about twice as fast as initdb)."""
        global _template_dir
        key = (self.super_user, self._as_root)
        if _template_dir.get(key) is None:
            d = tempfile.mkdtemp(prefix="rmsync-pg-template-", dir="/tmp")
            os.chmod(d, 0o755)
            if self._as_root:
                pw = pwd.getpwnam("postgres")
                os.chown(d, pw.pw_uid, pw.pw_gid)
            data = os.path.join(d, "data")
            r = self._run_pg(["initdb", "-D", data, "-U", self.super_user, "-A", "trust",
                              "-E", "UTF8", "--locale=C", "-N"])
            if r.returncode != 0:
                shutil.rmtree(d, ignore_errors=True)
                raise RuntimeError(f"initdb failed: {r.stdout}")
            atexit.register(shutil.rmtree, d, True)
            _template_dir[key] = data
        return _template_dir[key]

    def _provision(self):
        q = lambda s: "'" + s.replace("'", "''") + "'"
        self._psql_raw(f"ALTER ROLE {self.super_user} PASSWORD {q(self.super_password)};"
                       f"CREATE ROLE {self.app_user} LOGIN PASSWORD {q(self.app_password)};"
                       f"CREATE DATABASE {self.dbname} OWNER {self.super_user};", db="postgres")
        if self.schema:
            self.install()

    def install(self, demo=None, db=None):
        """Apply the schema files (idempotent); demo=None uses the constructor's choice."""
        demo = self.demo if demo is None else demo
        files = []
        if self.crm:
            files.append("crm/crm_schema.sql")
        files.append("rmsync/rmsync_schema.sql")
        for f in files:
            self.apply_file(os.path.join(SQL_DIR, f), db=db)
        self.apply_file(os.path.join(SQL_DIR, "rmsync/grants.sql"), variables={"app_role": self.app_user}, db=db)
        if demo and self.crm:
            self.apply_file(os.path.join(SQL_DIR, "demo/demo_data.sql"), db=db)

    def apply_file(self, path, variables=None, db=None):
        """Run one SQL file with psql (ON_ERROR_STOP); returns psql's output."""
        args = []
        for k, v in (variables or {}).items():
            args += ["-v", f"{k}={v}"]
        return self._psql_raw(None, args=args + ["-f", path], db=db)

    def create_database(self, name, schema=True, demo=False):
        """Another database in the same cluster (much cheaper than another cluster), owned by
        the superuser, optionally with the schemas; use it with sql(..., db=name) and
        conninfo_for(name)."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError("database name must be a plain identifier")
        self._psql_raw(f"CREATE DATABASE {name};", db="postgres")
        if schema:
            self.install(demo=demo, db=name)
        return name

    def conninfo_for(self, dbname):
        return self.conninfo.replace(f"dbname={self.dbname} ", f"dbname={dbname} ")

    def stop(self, mode="fast"):
        if self.dir and self.running:
            self._run_pg(["pg_ctl", "-D", self.datadir, "-w", "-m", mode, "stop"])
            self.running = False

    def kill(self):
        """SIGKILL the postmaster and its backends (a hard crash); start() recovers."""
        pid = self.pid()
        if pid:
            victims = [pid] + _children(pid)
            for v in victims:
                try:
                    os.kill(v, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.time() + 10
            while time.time() < deadline and any(self._alive(v) for v in victims):
                time.sleep(0.02)
        self.running = False

    def restart(self):
        self.stop()
        return self.start()

    def destroy(self):
        try:
            self.stop("immediate")
        finally:
            if self in _live:
                _live.remove(self)
            if self.dir and not os.environ.get("RMSYNC_PG_KEEP"):
                shutil.rmtree(self.dir, ignore_errors=True)

    def pid(self):
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                return int(f.readline().strip())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _alive(pid):
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True

    def log_tail(self, n=40):
        try:
            with open(self.logfile, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.destroy()

    # ---------------------------------------------------------------- queries
    def _psql_cmd(self, db=None, role=None):
        if role == "app":
            return (["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
                     "-U", self.app_user, "-d", db or self.dbname],
                    dict(os.environ, PGPASSWORD=self.app_password))
        return (["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.sockdir, "-p", str(self.port),
                 "-U", self.super_user, "-d", db or self.dbname], dict(os.environ))

    def _psql_raw(self, script, args=(), db=None, role=None, timeout=60):
        cmd, env = self._psql_cmd(db, role)
        r = subprocess.run(cmd + list(args), input=script, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env, timeout=timeout)
        if r.returncode != 0:
            raise _pg_error(r.stderr)
        return r.stdout

    def sql(self, query, *params, crm_user=None, role=None, db=None, timeout=60):
        """Run query (one or more statements); return all result rows as tuples of str/None."""
        args = ["--csv", "-t", "-P", f"null={NULL}", "-v", "VERBOSITY=verbose"]
        for i, p in enumerate(params, 1):
            if p is not None:
                if isinstance(p, bool):
                    p = "true" if p else "false"
                args += ["-v", f"p{i}={p}"]

        def subst(m):
            i = int(m.group(1))
            if i < 1 or i > len(params):
                raise ValueError(f"query uses ${i} but {len(params)} parameter(s) given")
            return "NULL" if params[i - 1] is None else f":'p{i}'"

        text = re.sub(r"\$(\d+)", subst, query)
        pre = ""
        if crm_user is not None:
            args += ["-v", f"crm_user={crm_user}"]
            pre = "SELECT set_config('crm.user', :'crm_user', false) \\g /dev/null\n"
        out = self._psql_raw(pre + text.rstrip().rstrip(";") + ";\n", args=args, db=db, role=role,
                             timeout=timeout)
        return [tuple(None if v == NULL else v for v in rec)
                for rec in csv.reader(io.StringIO(out, newline=""))]

    def val(self, query, *params, **kw):
        """First column of the first row (or None)."""
        rows = self.sql(query, *params, **kw)
        return rows[0][0] if rows else None

    def json(self, query, *params, **kw):
        """Rows of a SELECT as a list of dicts (typed through JSON)."""
        v = self.val(f"SELECT coalesce(json_agg(t), '[]'::json) FROM ({query.rstrip().rstrip(';')}) t",
                     *params, **kw)
        return json.loads(v)

    def listener(self, channel="rmsync"):
        return Listener(self, channel)


def _children(pid):
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            if int(st[st.rindex(")") + 2:].split()[1]) == pid:
                kids.append(int(d))
        except (OSError, ValueError):
            pass
    return kids


def _pg_error(stderr):
    m = re.search(r"ERROR:\s+([0-9A-Z]{5}):\s*(.*)", stderr)
    if m:
        return PgError(stderr, m.group(1), m.group(2).strip())
    m = re.search(r"(?:ERROR|FATAL):\s+(.*)", stderr)
    return PgError(stderr, None, m.group(1).strip() if m else None)


class Listener:
    """A psql session that LISTENs on a channel; poll() returns notifications as (channel, payload)."""

    _re = re.compile(r'Asynchronous notification "([^"]*)" (?:with payload "(.*)" )?received')

    def __init__(self, cluster, channel="rmsync"):
        cmd, env = cluster._psql_cmd()
        # psql flushes stdout only on a tty: give it a pty so answers arrive promptly
        self._master, slave = pty.openpty()
        env = dict(env, PAGER="", TERM="dumb")
        self.p = subprocess.Popen(cmd + ["-P", "pager=off"], stdin=subprocess.PIPE, stdout=slave,
                                  stderr=slave, text=True, env=env)
        os.close(slave)
        self._n = 0
        self._buf = ""
        self.got = []
        self._send(f'LISTEN "{channel}";')

    def _send(self, line):
        self._n += 1
        mark = f"__rmsync_mark_{self._n}__"
        self.p.stdin.write(f"{line}\n\\echo {mark}\n")
        self.p.stdin.flush()
        deadline = time.time() + 10
        while True:
            while "\n" in self._buf:
                ln, self._buf = self._buf.split("\n", 1)
                m = self._re.search(ln)
                if m:
                    self.got.append((m.group(1), m.group(2) or ""))
                if mark in ln:
                    return
            r, _, _ = select.select([self._master], [], [], max(0.0, deadline - time.time()))
            if not r:
                raise TimeoutError("psql listener did not answer")
            try:
                data = os.read(self._master, 65536)
            except OSError:
                data = b""
            if not data:
                raise RuntimeError("psql listener exited: " + self._buf)
            self._buf += data.decode("utf-8", "replace").replace("\r", "")

    def poll(self, timeout=2.0, want=1):
        """Collect notifications until at least `want` arrived in total or timeout; returns all."""
        deadline = time.time() + timeout
        while True:
            self._send("SELECT 1 \\g /dev/null")
            if len(self.got) >= want or time.time() >= deadline:
                return list(self.got)
            time.sleep(0.05)

    def close(self):
        try:
            self.p.stdin.close()
            self.p.wait(timeout=5)
        except Exception:
            self.p.kill()
            self.p.wait()
        finally:
            os.close(self._master)
