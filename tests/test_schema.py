"""The crm stand-in and rmsync schemas: idempotent install, the sync-field guard, the
representatives view, the SYNC_MASTER states, the notification queue and NOTIFY."""
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib.pg import PgCluster, PgError, SQL_DIR  # noqa: E402

MASTER = "SYNC_MASTER"


@pytest.fixture(scope="module")
def pg():
    c = PgCluster(demo=True).start()
    yield c
    c.destroy()


@pytest.fixture
def linked(pg):
    """A fresh activity of ALICE with contact ANN and representative BOB, linked to an event."""
    no = pg.val("INSERT INTO crm.business_activity (description, start_time, end_time, main_representative_id)"
                " VALUES ('linked one', '2030-01-01 10:00Z', '2030-01-01 11:00Z', 'ALICE') RETURNING activity_no",
                crm_user="ALICE")
    pg.sql("INSERT INTO crm.business_activity_contact VALUES ($1, 'ANN');"
           "INSERT INTO crm.business_activity_representative VALUES ($1, 'BOB');", no, crm_user="ALICE")
    pg.sql("INSERT INTO rmsync.event_link (activity_no, representative_id, event_id, linked_via)"
           " VALUES ($1, 'ALICE', $2, 'link')", no, "evt-" + no, crm_user=MASTER)
    return int(no)


def test_install_twice_is_clean(pg):
    before = pg.sql("SELECT count(*) FROM crm.business_activity")
    for _ in range(2):
        pg.install(demo=True)
    assert pg.sql("SELECT count(*) FROM crm.business_activity") == before
    assert pg.val("SELECT version FROM rmsync.schema_version WHERE component = 'rmsync'") == "2"
    assert pg.val("SELECT version FROM crm.schema_version WHERE component = 'crm'") == "1"
    # the master user is not re-locked by a re-install once unlocked
    assert pg.val("SELECT count(*) FROM crm.fnd_user WHERE identity = $1", MASTER) == "1"


def test_install_sh_twice(pg):
    db = pg.create_database("via_install_sh", schema=False)
    env = dict(pg.env(), PGDATABASE=db)
    for _ in range(2):
        r = subprocess.run([os.path.join(SQL_DIR, "install.sh"), "--demo", "--app-role", pg.app_user],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert r.returncode == 0, r.stdout
        assert "rmsync v2" in r.stdout
    assert pg.val("SELECT count(*) FROM rmsync.representatives", db=db) == "3"
    # the app role can use it over TCP with its password
    assert pg.val("SELECT rmsync.master_user_state()", role="app", db=db) == "locked"
    # a bad option is refused
    r = subprocess.run([os.path.join(SQL_DIR, "install.sh"), "--bogus"], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert r.returncode == 2 and "unknown option" in r.stdout


def test_rmsync_into_existing_crm_without_demo(pg):
    db = pg.create_database("no_demo")
    assert pg.val("SELECT count(*) FROM rmsync.representatives", db=db) == "0"
    assert pg.val("SELECT rmsync.master_user_state()", db=db) == "locked"


@pytest.mark.parametrize("col,value", [
    ("description", "'changed in CRM'"),
    ("start_time", "start_time - interval '1 hour'"),
    ("end_time", "end_time + interval '1 hour'"),
    ("main_representative_id", "'BOB'"),
])
def test_guard_rejects_sync_field_of_linked(pg, linked, col, value):
    before = pg.sql("SELECT * FROM crm.business_activity WHERE activity_no = $1", linked)
    with pytest.raises(PgError) as e:
        pg.sql(f"UPDATE crm.business_activity SET {col} = {value} WHERE activity_no = $1", linked,
               crm_user="ALICE")
    assert e.value.sqlstate == "RMS01"
    assert f"RMSYNC: description, start, end, contacts and representatives of activity {linked}" in e.value.message
    assert "change them in Outlook" in e.value.message
    assert col in e.value.stderr  # DETAIL names the field
    assert pg.sql("SELECT * FROM crm.business_activity WHERE activity_no = $1", linked) == before


def test_guard_acting_user_defaults_to_db_role(pg, linked):
    # no crm.user set: the acting user is the DB role (POSTGRES / RMSYNC), not the master
    with pytest.raises(PgError) as e:
        pg.sql("UPDATE crm.business_activity SET description = 'x' WHERE activity_no = $1", linked)
    assert e.value.sqlstate == "RMS01"
    with pytest.raises(PgError) as e:
        pg.sql("UPDATE crm.business_activity SET description = 'x' WHERE activity_no = $1", linked,
               role="app")
    assert e.value.sqlstate == "RMS01"
    # writing modified_by by hand does not impersonate the master
    with pytest.raises(PgError):
        pg.sql("UPDATE crm.business_activity SET description = 'x', modified_by = $2 WHERE activity_no = $1",
               linked, MASTER, crm_user="ALICE")


@pytest.mark.parametrize("stmt", [
    "INSERT INTO crm.business_activity_contact VALUES ($1, 'BEN')",
    "DELETE FROM crm.business_activity_contact WHERE activity_no = $1",
    "UPDATE crm.business_activity_contact SET person_id = 'BEN' WHERE activity_no = $1",
    "INSERT INTO crm.business_activity_representative VALUES ($1, 'CAROL')",
    "DELETE FROM crm.business_activity_representative WHERE activity_no = $1",
])
def test_guard_rejects_contacts_and_reps_of_linked(pg, linked, stmt):
    with pytest.raises(PgError) as e:
        pg.sql(stmt, linked, crm_user="BOB")
    assert e.value.sqlstate == "RMS01"
    assert pg.sql("SELECT person_id FROM crm.business_activity_contact WHERE activity_no = $1", linked) == [("ANN",)]
    assert pg.sql("SELECT representative_id FROM crm.business_activity_representative WHERE activity_no = $1",
                  linked) == [("BOB",)]


def test_guard_allows_noop_reinsert(pg, linked):
    pg.sql("INSERT INTO crm.business_activity_contact VALUES ($1, 'ANN') ON CONFLICT DO NOTHING", linked,
           crm_user="ALICE")


def test_master_may_change_everything(pg, linked):
    pg.sql("UPDATE crm.business_activity SET description = 'from Outlook', start_time = '2030-01-02 10:00Z',"
           " end_time = '2030-01-02 12:00Z', main_representative_id = 'BOB' WHERE activity_no = $1;"
           "INSERT INTO crm.business_activity_contact VALUES ($1, 'BEN');"
           "DELETE FROM crm.business_activity_representative WHERE activity_no = $1;", linked, crm_user=MASTER)
    row = pg.json("SELECT description, main_representative_id, modified_by, row_version"
                  " FROM crm.business_activity WHERE activity_no = $1", linked)[0]
    assert row == {"description": "from Outlook", "main_representative_id": "BOB",
                   "modified_by": MASTER, "row_version": 2}
    # transaction-local setting (what rmsync_db_begin_as does) works too
    pg.sql("BEGIN; SELECT set_config('crm.user', $2, true) \\g /dev/null\n"
           "UPDATE crm.business_activity SET description = 'again' WHERE activity_no = $1; COMMIT;",
           linked, MASTER)
    assert pg.val("SELECT description FROM crm.business_activity WHERE activity_no = $1", linked) == "again"
    # master name is case-insensitive and follows rmsync.settings
    pg.sql("UPDATE crm.business_activity SET description = 'lower' WHERE activity_no = $1", linked,
           crm_user="sync_master")


def test_master_name_from_settings(pg, linked):
    try:
        pg.sql("UPDATE rmsync.settings SET value = 'OTHER_MASTER' WHERE key = 'master_user'")
        with pytest.raises(PgError):
            pg.sql("UPDATE crm.business_activity SET description = 'y' WHERE activity_no = $1", linked,
                   crm_user=MASTER)
        pg.sql("UPDATE crm.business_activity SET description = 'y' WHERE activity_no = $1", linked,
               crm_user="OTHER_MASTER")
        assert pg.val("SELECT rmsync.master_user_state()") == "missing"
    finally:
        pg.sql("UPDATE rmsync.settings SET value = $1 WHERE key = 'master_user'", MASTER)


def test_non_sync_fields_stay_editable(pg, linked):
    pg.sql("UPDATE crm.business_activity SET notes = 'my notes', status = 'Completed',"
           " transfer_to_outlook = true WHERE activity_no = $1", linked, crm_user="ALICE")
    row = pg.json("SELECT notes, status, modified_by, row_version FROM crm.business_activity"
                  " WHERE activity_no = $1", linked)[0]
    assert row == {"notes": "my notes", "status": "Completed", "modified_by": "ALICE", "row_version": 2}


def test_noop_update_keeps_audit(pg, linked):
    before = pg.sql("SELECT modified_at, row_version FROM crm.business_activity WHERE activity_no = $1", linked)
    pg.sql("UPDATE crm.business_activity SET description = description WHERE activity_no = $1", linked,
           crm_user=MASTER)
    assert pg.sql("SELECT modified_at, row_version FROM crm.business_activity WHERE activity_no = $1",
                  linked) == before


def test_unlinked_is_free(pg):
    no = pg.val("INSERT INTO crm.business_activity (description, start_time, end_time, main_representative_id)"
                " VALUES ('free', '2030-01-01 10:00Z', '2030-01-01 11:00Z', 'BOB') RETURNING activity_no",
                crm_user="BOB")
    pg.sql("UPDATE crm.business_activity SET description = 'free 2', start_time = '2030-01-01 09:00Z',"
           " main_representative_id = 'ALICE' WHERE activity_no = $1;"
           "INSERT INTO crm.business_activity_contact VALUES ($1, 'ANN');"
           "DELETE FROM crm.business_activity_contact WHERE activity_no = $1;"
           "DELETE FROM crm.business_activity WHERE activity_no = $1;", no, crm_user="BOB")
    assert pg.val("SELECT count(*) FROM crm.business_activity WHERE activity_no = $1", no) == "0"


def test_delete_linked(pg, linked):
    with pytest.raises(PgError) as e:
        pg.sql("DELETE FROM crm.business_activity WHERE activity_no = $1", linked, crm_user="ALICE")
    assert e.value.sqlstate == "RMS02" and "unlink" in e.value.message
    # the master deletes it; link and child rows go with it
    pg.sql("DELETE FROM crm.business_activity WHERE activity_no = $1", linked, crm_user=MASTER)
    assert pg.val("SELECT count(*) FROM rmsync.event_link WHERE activity_no = $1", linked) == "0"
    assert pg.val("SELECT count(*) FROM crm.business_activity_contact WHERE activity_no = $1", linked) == "0"


def test_unlink_then_user_may_edit_and_delete(pg, linked):
    pg.sql("DELETE FROM rmsync.event_link WHERE activity_no = $1", linked)
    pg.sql("UPDATE crm.business_activity SET description = 'mine again' WHERE activity_no = $1;"
           "DELETE FROM crm.business_activity WHERE activity_no = $1", linked, crm_user="ALICE")


def test_event_link_unique(pg, linked):
    other = pg.val("INSERT INTO crm.business_activity (description, start_time, end_time, main_representative_id)"
                   " VALUES ('x', now(), now(), 'ALICE') RETURNING activity_no")
    with pytest.raises(PgError) as e:   # same event of the same mailbox linked twice
        pg.sql("INSERT INTO rmsync.event_link (activity_no, representative_id, event_id) VALUES ($1, 'ALICE', $2)",
               other, f"evt-{linked}")
    assert e.value.sqlstate == "23505"
    with pytest.raises(PgError) as e:   # one activity, one link
        pg.sql("INSERT INTO rmsync.event_link (activity_no, representative_id, event_id) VALUES ($1, 'ALICE', 'z')",
               linked)
    assert e.value.sqlstate == "23505"


def test_representatives_view_lists_granted_only(pg):
    reps = pg.json("SELECT representative_id, mailbox, sync_active FROM rmsync.representatives"
                   " ORDER BY representative_id")
    assert [r["representative_id"] for r in reps] == ["ALICE", "BOB", "CAROL"]
    assert reps[0]["mailbox"] == "alice@demo.rmsync.test" and reps[0]["sync_active"] is False
    pg.sql("INSERT INTO rmsync.rep_state (representative_id, sync_active) VALUES ('BOB', true)"
           " ON CONFLICT (representative_id) DO UPDATE SET sync_active = true")
    assert pg.val("SELECT sync_active FROM rmsync.representatives WHERE representative_id = 'BOB'") == "t"
    # granting DAVE lists him; revoking removes him again
    pg.sql("INSERT INTO crm.permission_set_grant VALUES ('DAVE', 'EXCHANGE_SYNC_USER')")
    assert pg.val("SELECT count(*) FROM rmsync.representatives WHERE representative_id = 'DAVE'") == "1"
    pg.sql("DELETE FROM crm.permission_set_grant WHERE identity = 'DAVE'")
    assert pg.val("SELECT count(*) FROM rmsync.representatives WHERE representative_id = 'DAVE'") == "0"
    # the permission set name comes from rmsync.settings
    try:
        pg.sql("UPDATE rmsync.settings SET value = 'OTHER_SET' WHERE key = 'permission_set'")
        assert pg.val("SELECT count(*) FROM rmsync.representatives") == "0"
    finally:
        pg.sql("UPDATE rmsync.settings SET value = 'EXCHANGE_SYNC_USER' WHERE key = 'permission_set'")


def test_master_user_states(pg):
    db = pg.create_database("master_states")
    assert pg.json("SELECT * FROM rmsync.master_user", db=db) == [{"identity": MASTER, "state": "locked"}]
    assert pg.sql("SELECT active, locked FROM crm.fnd_user WHERE identity = $1", MASTER, db=db) == [("f", "t")]
    out = pg.apply_file(os.path.join(SQL_DIR, "manualdeploy/UpdateSyncMasterUser.sql"), db=db)
    assert "inactive" in out
    assert pg.val("SELECT rmsync.master_user_state()", db=db) == "inactive"
    pg.apply_file(os.path.join(SQL_DIR, "manualdeploy/UpdateSyncMasterUser.sql"), db=db)  # idempotent
    assert pg.val("SELECT rmsync.master_user_state()", db=db) == "inactive"
    pg.apply_file(os.path.join(SQL_DIR, "manualdeploy/ActivateSyncMasterUser.sql"), db=db)
    assert pg.val("SELECT rmsync.master_user_state()", db=db) == "ready"
    # a re-install neither re-locks nor re-creates it
    pg.install(db=db)
    assert pg.val("SELECT rmsync.master_user_state()", db=db) == "ready"
    pg.sql("DELETE FROM crm.fnd_user WHERE identity = $1", MASTER, db=db)
    assert pg.val("SELECT rmsync.master_user_state()", db=db) == "missing"


def test_activation_alone_does_not_unlock(pg):
    db = pg.create_database("activate_only")
    pg.apply_file(os.path.join(SQL_DIR, "manualdeploy/ActivateSyncMasterUser.sql"), db=db)
    assert pg.val("SELECT rmsync.master_user_state()", db=db) == "locked"
    r = subprocess.run([os.path.join(SQL_DIR, "install.sh"), "--unlock-master"],
                       env=dict(pg.env(), PGDATABASE=db), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    assert r.returncode == 0 and "ready" in r.stdout, r.stdout


def test_notification_queue_coalesces_pending(pg):
    pg.sql("INSERT INTO rmsync.subscription (subscription_id, representative_id, client_state)"
           " VALUES ('sub-q', 'ALICE', 'cs') ON CONFLICT DO NOTHING")
    enq = ("SELECT rmsync.notification_enqueue('sub-q', $1, $2, $3, $4, $5)")
    a = pg.val(enq, "change", "created", None, "Users/u1/Events/AAMk=1", None)
    assert a is not None
    # the same event again while pending: coalesced (NULL), also with another change type
    assert pg.val(enq, "change", "updated", None, "Users/u1/Events/AAMk=1", None) is None
    assert pg.val(enq, "change", "deleted", None, "Users('u1')/Events('AAMk=1')", None) is None
    # another event and lifecycle events are separate items
    assert pg.val(enq, "change", "updated", None, "Users/u1/Events/other", None) is not None
    assert pg.val(enq, "lifecycle", None, "missed", None, None) is not None
    assert pg.val(enq, "lifecycle", None, "reauthorizationRequired", None, None) is not None
    assert pg.val(enq, "lifecycle", None, "missed", None, None) is None
    row = pg.json("SELECT representative_id, event_id, state FROM rmsync.notification WHERE id = $1", a)[0]
    assert row == {"representative_id": "ALICE", "event_id": "AAMk=1", "state": "pending"}
    # a plain INSERT of a pending duplicate violates the partial unique index
    with pytest.raises(PgError) as e:
        pg.sql("INSERT INTO rmsync.notification (subscription_id, kind, event_id) VALUES ('sub-q', 'change', 'AAMk=1')")
    assert e.value.sqlstate == "23505"
    # once claimed (processing), a repeat is queued again
    claimed = pg.json("SELECT id, state, attempts FROM rmsync.notification_claim('runner-1', 100)")
    assert {c["id"] for c in claimed} >= {int(a)}
    assert all(c["state"] == "processing" and c["attempts"] == 1 for c in claimed)
    assert pg.json("SELECT * FROM rmsync.notification_claim('runner-2', 100)") == []
    b = pg.val(enq, "change", "updated", None, "Users/u1/Events/AAMk=1", None)
    assert b is not None and b != a
    # a stale claim of a dead runner is superseded by the pending repeat, others go back to pending
    pg.sql("UPDATE rmsync.notification SET claimed_at = now() - interval '1 hour' WHERE state = 'processing'")
    again = pg.json("SELECT id FROM rmsync.notification_claim('runner-2', 100)")
    ids = {r["id"] for r in again}
    assert int(b) in ids and int(a) not in ids
    assert pg.val("SELECT last_error FROM rmsync.notification WHERE id = $1", a) == "superseded"
    pg.sql("UPDATE rmsync.notification SET state = 'done', done_at = now() WHERE subscription_id = 'sub-q'")


def test_notify_on_insert(pg):
    lis = pg.listener()
    try:
        pg.sql("INSERT INTO rmsync.subscription (subscription_id, representative_id, client_state)"
               " VALUES ('sub-n', 'BOB', 'cs') ON CONFLICT DO NOTHING")
        pg.val("SELECT rmsync.notification_enqueue('sub-n', 'change', 'created', NULL, NULL, 'ev-n')")
        got = lis.poll(want=1)
        assert ("rmsync", "notification") in got
        pg.sql("INSERT INTO rmsync.request (kind, representative_id, requested_by) VALUES ('initial_sync', 'BOB', 'admin')")
        got = lis.poll(want=2)
        assert ("rmsync", "request") in got
        # transfer: flagged and unlinked -> 'transfer'
        pg.sql("INSERT INTO crm.business_activity (description, start_time, end_time, main_representative_id,"
               " transfer_to_outlook) VALUES ('to outlook', now(), now(), 'BOB', true)", crm_user="BOB")
        got = lis.poll(want=3)
        assert ("rmsync", "transfer") in got
        pg.sql("UPDATE rmsync.service_state SET running = false, changed_by = 'admin'")
        pg.sql("INSERT INTO rmsync.rep_state (representative_id, sync_active) VALUES ('CAROL', true)"
               " ON CONFLICT (representative_id) DO UPDATE SET sync_active = true")
        got = lis.poll(want=5)
        assert ("rmsync", "service") in got and ("rmsync", "rep_state") in got
        # a flagged activity that is already linked does not notify
        n = len(lis.got)
        no = pg.val("INSERT INTO crm.business_activity (description, start_time, end_time, main_representative_id)"
                    " VALUES ('linked', now(), now(), 'BOB') RETURNING activity_no")
        pg.sql("INSERT INTO rmsync.event_link (activity_no, representative_id, event_id) VALUES ($1, 'BOB', 'e-l')", no)
        pg.sql("UPDATE crm.business_activity SET transfer_to_outlook = true WHERE activity_no = $1", no)
        assert len(lis.poll(timeout=0.5, want=n + 1)) == n
    finally:
        pg.sql("UPDATE rmsync.service_state SET running = true")
        lis.close()


def test_pending_transfer_view(pg):
    no = pg.val("INSERT INTO crm.business_activity (description, start_time, end_time, main_representative_id,"
                " transfer_to_outlook) VALUES ('t', now(), now(), 'CAROL', true) RETURNING activity_no")
    assert pg.val("SELECT representative_id FROM rmsync.pending_transfer WHERE activity_no = $1", no) == "CAROL"
    pg.sql("INSERT INTO rmsync.event_link (activity_no, representative_id, event_id, linked_via)"
           " VALUES ($1, 'CAROL', 'tr-1', 'transfer')", no, crm_user=MASTER)
    assert pg.val("SELECT count(*) FROM rmsync.pending_transfer WHERE activity_no = $1", no) == "0"


def test_rep_lease(pg):
    assert pg.val("SELECT rmsync.rep_lease_acquire('CAROL', 'node-a', 60)") == "t"
    assert pg.val("SELECT rmsync.rep_lease_acquire('CAROL', 'node-b', 60)") == "f"
    assert pg.val("SELECT rmsync.rep_lease_acquire('CAROL', 'node-a', 60)") == "t"   # renew
    assert pg.val("SELECT rmsync.rep_lease_release('CAROL', 'node-b')") is None
    assert pg.val("SELECT rmsync.rep_lease_release('CAROL', 'node-a')") == "t"
    assert pg.val("SELECT rmsync.rep_lease_acquire('CAROL', 'node-b', 0)") == "t"
    assert pg.val("SELECT rmsync.rep_lease_acquire('CAROL', 'node-a', 60)") == "t"   # expired


def test_checks_reject_bad_values(pg):
    for stmt in ["INSERT INTO rmsync.sync_log (level, message) VALUES ('fatal', 'x')",
                 "INSERT INTO rmsync.request (kind) VALUES ('Drop Table')",
                 "INSERT INTO rmsync.service_state (id) VALUES (2)",
                 "INSERT INTO crm.business_activity (description, start_time, end_time, main_representative_id)"
                 " VALUES ('bad', '2030-01-02Z', '2030-01-01Z', 'ALICE')"]:
        with pytest.raises(PgError) as e:
            pg.sql(stmt)
        assert e.value.sqlstate == "23514", stmt


def test_app_role_privileges(pg):
    # the module's role can do its work but not DDL
    pg.sql("INSERT INTO rmsync.sync_log (level, message) VALUES ('info', 'hello')", role="app")
    with pytest.raises(PgError) as e:
        pg.sql("DROP TABLE rmsync.sync_log", role="app")
    assert e.value.sqlstate == "42501"


def test_request_claim_and_finish(pg):
    pg.sql("UPDATE rmsync.request SET state = 'done' WHERE state <> 'done'")
    ids = [pg.val("INSERT INTO rmsync.request (kind, representative_id, requested_by) VALUES ($1, 'ALICE', 'admin')"
                  " RETURNING id", k) for k in ("initial_sync", "approve", "unlink")]
    got = pg.json("SELECT id, kind, state, claimed_by FROM rmsync.request_claim('r1', 2) ORDER BY id")
    assert [g["id"] for g in got] == [int(ids[0]), int(ids[1])]
    assert all(g["state"] == "processing" and g["claimed_by"] == "r1" for g in got)
    assert [g["id"] for g in pg.json("SELECT id FROM rmsync.request_claim('r2', 10)")] == [int(ids[2])]
    assert pg.json("SELECT id FROM rmsync.request_claim('r2', 10)") == []
    pg.sql("SELECT rmsync.request_finish($1, true, 'ok'); SELECT rmsync.request_finish($2, false, 'no such rep')",
           ids[0], ids[1])
    assert pg.sql("SELECT state, result FROM rmsync.request WHERE id IN ($1, $2) ORDER BY id", ids[0], ids[1]) == \
        [("done", "ok"), ("failed", "no such rep")]
    # a dead runner's claim is taken over after the stale interval
    pg.sql("UPDATE rmsync.request SET claimed_at = now() - interval '1 hour' WHERE id = $1", ids[2])
    assert [g["id"] for g in pg.json("SELECT id FROM rmsync.request_claim('r3', 10)")] == [int(ids[2])]


def test_housekeeping(pg):
    pg.sql("INSERT INTO rmsync.sync_log (at, level, message) VALUES (now() - interval '100 days', 'info', 'old'),"
           " (now(), 'info', 'fresh-hk')")
    pg.sql("INSERT INTO rmsync.notification (subscription_id, kind, event_id, state, done_at)"
           " VALUES ('hk', 'change', 'e1', 'done', now() - interval '3 days'), ('hk', 'change', 'e2', 'pending', NULL)")
    n = int(pg.val("SELECT rmsync.housekeeping()"))
    assert n >= 2
    assert pg.val("SELECT count(*) FROM rmsync.sync_log WHERE message = 'old'") == "0"
    assert pg.val("SELECT count(*) FROM rmsync.sync_log WHERE message = 'fresh-hk'") == "1"
    assert pg.sql("SELECT event_id FROM rmsync.notification WHERE subscription_id = 'hk'") == [("e2",)]


def test_queue_purge(pg):
    """The runner's per-representative purge: closed items by age (done 2 days, failed 30),
    bounded per call, through notification_closed_rep_idx rather than a scan of the table."""
    pg.sql("INSERT INTO rmsync.notification (subscription_id, representative_id, kind, event_id, state, done_at)"
           " VALUES ('qp', 'QP1', 'change', 'old-done', 'done', now() - interval '3 days'),"
           "        ('qp', 'QP1', 'change', 'young-done', 'done', now() - interval '1 day'),"
           "        ('qp', 'QP1', 'change', 'failed-10d', 'failed', now() - interval '10 days'),"
           "        ('qp', 'QP1', 'change', 'failed-31d', 'failed', now() - interval '31 days'),"
           "        ('qp', 'QP1', 'change', 'open', 'pending', NULL),"
           "        ('qp', 'QP2', 'change', 'other-rep', 'done', now() - interval '3 days')")
    assert pg.val("SELECT rmsync.queue_purge('QP1')") == "2"
    left = {e for (e,) in pg.sql("SELECT event_id FROM rmsync.notification WHERE subscription_id = 'qp'")}
    assert left == {"young-done", "failed-10d", "open", "other-rep"}
    # bounded: at most p_limit rows a call
    pg.sql("INSERT INTO rmsync.notification (subscription_id, representative_id, kind, event_id, state, done_at)"
           " SELECT 'qp', 'QP1', 'change', 'bulk' || g, 'done', now() - interval '5 days'"
           " FROM generate_series(1, 7) g")
    assert pg.val("SELECT rmsync.queue_purge('QP1', 5)") == "5"
    assert pg.val("SELECT rmsync.queue_purge('QP1', 5)") == "2"
    assert pg.val("SELECT rmsync.queue_purge('QP1', 5)") == "0"
    # many closed items of other representatives: the purge's read is an index range scan
    pg.sql("INSERT INTO rmsync.notification (subscription_id, representative_id, kind, event_id, state, done_at)"
           " SELECT 'qp', 'R' || (g % 500), 'change', 'x' || g, 'done', now() - interval '1 hour'"
           " FROM generate_series(1, 20000) g")
    pg.sql("ANALYZE rmsync.notification")
    plan = "\n".join(r[0] for r in pg.sql(
        "EXPLAIN SELECT id FROM rmsync.notification"
        " WHERE representative_id = 'QP1' AND state IN ('done', 'failed')"
        "   AND done_at < now() - interval '2 days'"
        "   AND (state = 'done' OR done_at < now() - interval '30 days') LIMIT 5000"))
    assert "notification_closed_rep_idx" in plan, plan
    pg.sql("DELETE FROM rmsync.notification WHERE subscription_id = 'qp'")


def test_upgrade_from_v1_adds_columns(pg):
    # simulate a v1 install: drop the v2 columns, re-apply, they are back
    pg.sql("ALTER TABLE rmsync.request DROP COLUMN claimed_by CASCADE, DROP COLUMN claimed_at CASCADE")
    pg.install()
    assert pg.val("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'rmsync'"
                  " AND table_name = 'request' AND column_name IN ('claimed_by', 'claimed_at')") == "2"
