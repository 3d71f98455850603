"""Shared stack for the sync engine's end-to-end tests (tests/test_engine_*.py).

A real Apache with mod_rmsync (its sync runner is the engine under test), a private PostgreSQL
cluster with the demo data, and the Graph simulator seeded with the demo mailboxes. Tests act as
the user in Outlook through the simulator's control API and poll the database; no fixed sleeps.

    st = EngineStack(cycle=2, extra="RMSyncDeletePolicy cancel")   # starts everything
    ev = st.new_event(ALICE, "Call", day=2)                        # appointment in Outlook
    no = st.new_linked(ev)                                         # activity linked to it
    st.wait_synced(no)                                             # first apply done
    st.sim.user_patch(ALICE, ev["id"], {...})
    st.wait_for(lambda: st.activity(no)["description"] == "...")
    st.close()

The transfer and linking tests (tests/test_transfer.py, test_linking.py) use the same class with
the demo seed, webhook URLs (notify=True) and flagged activities by default (activity_defaults).
"""
import datetime
import os
import shutil
import sys
import tempfile

TESTS = os.path.dirname(os.path.abspath(__file__))
for p in (TESTS, os.path.join(TESTS, "graphsim")):
    if p not in sys.path:
        sys.path.insert(0, p)

from lib.httpd import Httpd, MODULE, wait_for  # noqa: E402
from lib.pg import PgCluster  # noqa: E402
from simclient import GraphSim  # noqa: E402

TENANT, CLIENT, SECRET = "rmsync-demo-tenant", "rmsync-demo-client", "demo-secret-change-me"
ALICE, BOB, CAROL = "alice@demo.rmsync.test", "bob@demo.rmsync.test", "carol@demo.rmsync.test"
REP_OF = {ALICE: "ALICE", BOB: "BOB", CAROL: "CAROL"}


def utc(day, hour=9, minute=0):
    """A dateTimeTimeZone N days from today at hh:mm UTC."""
    d = datetime.datetime.now(datetime.timezone.utc).replace(hour=hour, minute=minute, second=0,
                                                             microsecond=0)
    d += datetime.timedelta(days=day)
    return {"dateTime": d.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}


def pg_time(dtz):
    """dateTimeTimeZone (UTC) -> "YYYY-MM-DD HH:MM:SS" as EngineStack.activity() gives it."""
    return dtz["dateTime"].replace("T", " ")[:19]


class EngineStack:
    def __init__(self, cycle=2, extra="", active=("ALICE",), master_ready=True, sim_config=None,
                 seed_events=None, seed=None, notify=False, allow=(), activity_defaults=None):
        """seed: a simulator seed (path or dict) instead of the three demo mailboxes;
        notify: RMSyncNotificationURL/RMSyncLifecycleURL point at this Apache; allow: error log
        ids expected from the tests; activity_defaults: keyword defaults for new_activity."""
        if not os.path.exists(MODULE):
            raise RuntimeError(f"{MODULE} is missing: run ./apxs-build.sh first")
        self.cycle = cycle
        self.extra = extra
        self.tmp = tempfile.mkdtemp(prefix="rmsync-engine-")
        os.chmod(self.tmp, 0o777)                  # the runner (www-data) writes the sync log here
        self.log_file = os.path.join(self.tmp, "sync.log")
        self.log_target = self.log_file           # RMSyncLogFile: a path or "|command"
        self.notify = notify
        self.activity_defaults = dict(activity_defaults or {})
        self.pg = PgCluster(demo=True).start()
        seed = seed or {"apps": [{"tenant": TENANT, "client_id": CLIENT, "client_secret": SECRET,
                          "permissions": ["Calendars.ReadWrite", "MailboxSettings.ReadWrite"]}],
                "users": [{"mail": m, "displayName": m.split("@")[0].title()}
                          for m in (ALICE, BOB, CAROL)],
                "events": list(seed_events or [])}
        self.sim = GraphSim(seed=seed, config=sim_config)
        os.chmod(self.sim.state_dir, 0o755)
        os.chmod(self.sim.ca_file, 0o644)
        self.secret_file = os.path.join(self.tmp, "secret")
        with open(self.secret_file, "w") as f:
            f.write(SECRET + "\n")
        os.chmod(self.secret_file, 0o644)
        if master_ready:
            self.pg.sql("UPDATE crm.fnd_user SET locked = false, active = true"
                        " WHERE identity = 'SYNC_MASTER'")
        for rep in active:
            self.set_active(rep, True)
        self.httpd = Httpd(name="rmsync-engine")
        self.httpd.allow = set(allow)
        self.httpd.write_conf(rmsync=self.conf())
        self.httpd.start()

    # ---------------------------------------------------------------- config / lifecycle
    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.port}"

    def conf(self, extra=None):
        return "\n".join([
            f'RMSyncDatabase "{self.pg.conninfo}"',
            f"RMSyncGraphTenant {TENANT}",
            f"RMSyncGraphClientId {CLIENT}",
            f"RMSyncGraphClientSecretFile {self.secret_file}",
            f"RMSyncGraphAuthorityURL {self.sim.authority_url}",
            f"RMSyncGraphURL {self.sim.graph_url}",
            f"RMSyncCAFile {self.sim.ca_file}",
            *([f"RMSyncNotificationURL {self.url}/rmsync/notify",
               f"RMSyncLifecycleURL {self.url}/rmsync/lifecycle"] if self.notify else []),
            f"RMSyncSyncCycle {self.cycle}",
            "RMSyncInitialSyncFrom -7d",
            "RMSyncSyncWindowDays 60",
            f'RMSyncLogFile "{self.log_target}"',
            self.extra if extra is None else extra,
        ])

    def reconfigure(self, extra):
        """Graceful restart with other RMSync* lines; waits for the new runner."""
        old = set(self.httpd.runner_pids())
        self.extra = extra
        self.httpd.write_conf(rmsync=self.conf())
        self.httpd.graceful()
        wait_for(lambda: set(self.httpd.runner_pids()) - old, timeout=30, what="new runner")

    def rep_status(self, rep):
        """The representative's live slot on the status page (shm)."""
        for r in self.httpd.status()["representatives"]:
            if r["representative_id"] == rep:
                return r
        return None

    def close(self):
        bad = []
        try:
            self.httpd.stop()
            bad = self.httpd.bad_log_lines(self.httpd.allow)
        finally:
            self.httpd.destroy()
            self.sim.stop()
            if getattr(self.sim, "_own_dir", False):
                shutil.rmtree(self.sim.state_dir, ignore_errors=True)
            self.pg.destroy()
            shutil.rmtree(self.tmp, ignore_errors=True)
        return bad

    # ---------------------------------------------------------------- CRM side
    def set_active(self, rep, active=True):
        self.pg.sql("INSERT INTO rmsync.rep_state (representative_id, sync_active) VALUES ($1, $2)"
                    " ON CONFLICT (representative_id) DO UPDATE SET sync_active = $2",
                    rep, "true" if active else "false")

    def new_activity(self, rep="ALICE", desc="Activity", **kw):
        """A new activity of rep: day=N (08:00-09:00, N days from today) or start_h=H (H hours
        from now, `minutes` long); contacts and representatives first, then (like a user ticking
        "Transfer to Outlook" last) flag=True sets the transfer flag."""
        kw = {**self.activity_defaults, **kw}
        day, start_h, minutes = kw.get("day", 3), kw.get("start_h"), kw.get("minutes", 60)
        contacts, reps, flag = kw.get("contacts", ()), kw.get("reps", ()), kw.get("flag", False)
        if start_h is None:
            no = int(self.pg.val(
                "INSERT INTO crm.business_activity (description, start_time, end_time,"
                " main_representative_id) VALUES ($1, date_trunc('day', now())"
                " + make_interval(days => $2::int, hours => 8), date_trunc('day', now())"
                " + make_interval(days => $2::int, hours => 9), $3) RETURNING activity_no",
                desc, day, rep, crm_user=rep))
        else:
            no = int(self.pg.val(
                "INSERT INTO crm.business_activity (description, start_time, end_time,"
                " main_representative_id)"
                " VALUES ($1, date_trunc('minute', now()) + make_interval(hours => $2::int),"
                "         date_trunc('minute', now()) + make_interval(hours => $2::int,"
                "                                                     mins => $3::int),"
                "         $4) RETURNING activity_no",
                desc, start_h, minutes, rep, crm_user=rep))
        for c in contacts:
            self.pg.sql("INSERT INTO crm.business_activity_contact VALUES ($1, $2)", no, c,
                        crm_user=rep)
        for r in reps:
            self.pg.sql("INSERT INTO crm.business_activity_representative VALUES ($1, $2)", no, r,
                        crm_user=rep)
        if flag:
            self.pg.sql("UPDATE crm.business_activity SET transfer_to_outlook = true"
                        " WHERE activity_no = $1", no, crm_user=rep)
        return no

    def link(self, no, ev, rep="ALICE"):
        """Link activity no to event ev as the linking API would (no applied state yet)."""
        self.pg.sql("INSERT INTO rmsync.event_link (activity_no, representative_id, event_id,"
                    " linked_via) VALUES ($1, $2, $3, 'api')", no, rep, ev["id"])

    def new_linked(self, mailbox=ALICE, subject="Linked", day=3, attendees=(), **kw):
        """An appointment in Outlook, an activity linked to it, and its first apply done."""
        rep = REP_OF[mailbox]
        ev = self.new_event(mailbox, subject, day=day, attendees=attendees, **kw)
        no = self.new_activity(rep, desc="(from CRM) " + subject, day=day + 1, flag=False,
                               start_h=None)
        self.link(no, ev, rep)
        self.wait_for(lambda: self.link_row(no)["applied_hash"], what=f"first apply of {no}")
        return no, ev

    def activity(self, no):
        rows = self.pg.json(
            "SELECT activity_no, description, status, modified_by, row_version,"
            " to_char(start_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS start_time,"
            " to_char(end_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS end_time,"
            " main_representative_id, transfer_to_outlook,"
            " to_char(start_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') AS start,"
            " to_char(end_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') AS end"
            " FROM crm.business_activity"
            " WHERE activity_no = $1", no)
        return rows[0] if rows else None

    def contacts(self, no):
        return sorted(r[0] for r in self.pg.sql(
            "SELECT person_id FROM crm.business_activity_contact WHERE activity_no = $1", no))

    def reps(self, no):
        return sorted(r[0] for r in self.pg.sql(
            "SELECT representative_id FROM crm.business_activity_representative"
            " WHERE activity_no = $1", no))

    def link_row(self, no):
        rows = self.pg.json("SELECT * FROM rmsync.event_link WHERE activity_no = $1", no)
        return rows[0] if rows else None

    def rep_state(self, rep="ALICE"):
        rows = self.pg.json("SELECT * FROM rmsync.rep_state WHERE representative_id = $1", rep)
        return rows[0] if rows else None

    def log_count(self, where="true", *params):
        return int(self.pg.val(f"SELECT count(*) FROM rmsync.sync_log WHERE {where}", *params))

    def log_rows(self, where="true", *params):
        return self.pg.json(f"SELECT * FROM rmsync.sync_log WHERE {where} ORDER BY id", *params)

    def passes_done(self, rep="ALICE"):
        """Completed passes are visible as last_success_at moving on."""
        return self.pg.val("SELECT last_success_at FROM rmsync.rep_state"
                           " WHERE representative_id = $1", rep)

    def wait_pass(self, rep="ALICE", n=1, timeout=30):
        """Wait until n more passes completed for rep (last_success_at moved n times)."""
        for _ in range(n):
            before = self.passes_done(rep)
            self.wait_for(lambda: self.passes_done(rep) not in (None, before), timeout=timeout,
                          what=f"a completed pass of {rep}")

    # ---------------------------------------------------------------- Outlook side
    def events_for(self, user, no, prop_id):
        """Live events in user's mailbox whose extended property prop_id holds activity no."""
        out = []
        for ev in self.sim.user_events(user, include_deleted=False):
            props = ev.get("singleValueExtendedProperties") or []
            if any(p.get("id", "").lower() == prop_id.lower() and p.get("value") == str(no)
                   for p in props):
                out.append(ev)
        return out

    def error_lines(self, msgid):
        """Error log lines (all of them, not only since the last check) that contain msgid."""
        return [l for l in self.httpd.log_lines(since_last_check=False) if msgid in l]

    def new_event(self, mailbox, subject, day=3, hour=9, minutes=60, attendees=(), **kw):
        start = utc(day, hour)
        end_dt = (datetime.datetime.strptime(start["dateTime"], "%Y-%m-%dT%H:%M:%S")
                  + datetime.timedelta(minutes=minutes))
        body = {"subject": subject, "start": start,
                "end": {"dateTime": end_dt.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
                "attendees": [{"type": "required", "emailAddress": {"address": a}}
                              for a in attendees]}
        body.update(kw)
        return self.sim.user_create(mailbox, body)

    def wait_for(self, fn, timeout=20.0, what="condition"):
        try:
            return wait_for(fn, timeout=timeout, what=what)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.diagnostics()}") from None

    def diagnostics(self):
        """What the runner was doing: rep states, the last sync log lines, the error log tail."""
        out = []
        try:
            for r in self.pg.json("SELECT representative_id, sync_active, round_kind,"
                                  " round_next_link IS NOT NULL AS cursor, last_attempt_at,"
                                  " last_success_at, last_error, held_by_breaker"
                                  " FROM rmsync.rep_state ORDER BY 1"):
                out.append(f"rep_state {r}")
            for r in self.log_rows("id > (SELECT coalesce(max(id), 0) - 15 FROM rmsync.sync_log)"):
                out.append(f"sync_log {r['at']} {r['level']} {r['representative_id']} "
                           f"{r['activity_no']} {r['action']} {r['message'][:200]}")
            out.append(f"runner {self.httpd.status()['runner']}")
        except Exception as e:  # diagnostics must not hide the real failure
            out.append(f"(diagnostics failed: {e})")
        try:
            with open(self.httpd.error_log, errors="replace") as f:
                out += ["error_log " + l.rstrip() for l in f.readlines()[-25:]]
        except OSError:
            pass
        return "\n".join(out)
