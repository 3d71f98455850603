-- mod_rmsync: the sync's own schema "rmsync", installed into the CRM database.
--
-- Needs the CRM tables crm.fnd_user, crm.permission_set_grant, crm.business_representative,
-- crm.person, crm.business_activity, crm.business_activity_contact and
-- crm.business_activity_representative (sql/crm/crm_schema.sql is a stand-in with those).
--
-- Idempotent: apply as often as you like; each run upgrades in place and records its version
-- in rmsync.schema_version. Apply with:  psql -v ON_ERROR_STOP=1 -f rmsync_schema.sql
-- Grant the module's login role access with sql/rmsync/grants.sql (install.sh does both).
--
-- NOTIFY: everything the runner must react to sends pg_notify('rmsync', <payload>) with payload
--   'notification' (new webhook row), 'request' (new admin request), 'transfer' (an activity was
--   flagged transfer_to_outlook and is not linked), 'rep_state' (sync_active changed),
--   'service' (service_state changed).
--
-- Errors raised by the sync-field guard: SQLSTATE RMS01 (sync field of a linked activity),
-- RMS02 (delete of a linked activity); messages start with "RMSYNC: ".
-- schema-version: rmsync 2
BEGIN;

CREATE SCHEMA IF NOT EXISTS rmsync;

CREATE TABLE IF NOT EXISTS rmsync.schema_version (
    component  text PRIMARY KEY,
    version    integer NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Key/value settings. The runner upserts master_user and permission_set from its directives
-- (RMSyncMasterUser, RMSyncPermissionSet) at start, so triggers and views use the same names.
CREATE TABLE IF NOT EXISTS rmsync.settings (
    key   text PRIMARY KEY,
    value text
);
INSERT INTO rmsync.settings (key, value) VALUES
    ('master_user', 'SYNC_MASTER'),
    ('permission_set', 'EXCHANGE_SYNC_USER')
ON CONFLICT (key) DO NOTHING;

CREATE OR REPLACE FUNCTION rmsync.setting(p_key text) RETURNS text
LANGUAGE sql STABLE AS $$ SELECT value FROM rmsync.settings WHERE key = p_key $$;

-- True when the acting CRM user (crm.current_user_id()) is the configured SYNC_MASTER.
-- PL/pgSQL, not SQL: the guard triggers call it for every row, and a SQL function whose body
-- reads a table is parsed and planned again on every call (a PL/pgSQL one keeps its plan for the
-- session); the initial sync's activity writes took twice as long with the SQL version.
CREATE OR REPLACE FUNCTION rmsync.is_master() RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce(upper(crm.current_user_id())
                    = upper((SELECT value FROM rmsync.settings WHERE key = 'master_user')), false);
END;
$$;

-- SYNC_MASTER: a fresh install creates it locked and inactive (the admin runs
-- sql/manualdeploy/UpdateSyncMasterUser.sql, then activates it).
INSERT INTO crm.fnd_user (identity, description, active, locked)
    VALUES (coalesce(rmsync.setting('master_user'), 'SYNC_MASTER'),
            'Outlook Calendar Sync: writes Outlook changes to Business Activities', false, true)
ON CONFLICT (identity) DO NOTHING;

-- 'missing' | 'locked' | 'inactive' | 'ready'; the runner syncs only when 'ready'.
CREATE OR REPLACE FUNCTION rmsync.master_user_state() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN u.identity IS NULL THEN 'missing'
                WHEN u.locked THEN 'locked'
                WHEN NOT u.active THEN 'inactive'
                ELSE 'ready' END
      FROM (SELECT 1) AS one
      LEFT JOIN crm.fnd_user u ON u.identity = rmsync.setting('master_user')
$$;
CREATE OR REPLACE VIEW rmsync.master_user AS
    SELECT rmsync.setting('master_user') AS identity, rmsync.master_user_state() AS state;

-- Per representative sync state (a row exists once the admin touched it or the runner ran).
CREATE TABLE IF NOT EXISTS rmsync.rep_state (
    representative_id         text PRIMARY KEY
                              REFERENCES crm.business_representative(representative_id) ON DELETE CASCADE,
    sync_active               boolean NOT NULL DEFAULT false,
    mailbox                   text,          -- NULL: the representative's e-mail
    graph_user_id             text,          -- Graph user id once resolved
    delta_link                text,          -- @odata.deltaLink of the last completed round
    round_next_link           text,          -- @odata.nextLink of the round in progress
    round_kind                text CHECK (round_kind IN ('delta', 'initial')),
    window_start              timestamptz,   -- calendarView window of the current delta token
    window_end                timestamptz,
    initial_sync_requested_at timestamptz,
    last_success_at           timestamptz,
    last_attempt_at           timestamptz,
    last_error                text,
    last_error_at             timestamptz,
    held_by_breaker           boolean NOT NULL DEFAULT false,
    held_reason               text,
    breaker_approved_at       timestamptz,
    category_state            text NOT NULL DEFAULT 'unknown'
                              CHECK (category_state IN ('unknown', 'created', 'forbidden')),
    lease_owner               text,
    lease_until               timestamptz,
    updated_at                timestamptz NOT NULL DEFAULT now()
);

-- Link between a Business Activity and its Outlook event.
CREATE TABLE IF NOT EXISTS rmsync.event_link (
    activity_no       bigint PRIMARY KEY
                      REFERENCES crm.business_activity(activity_no) ON DELETE CASCADE,
    representative_id text NOT NULL
                      REFERENCES crm.business_representative(representative_id) ON DELETE CASCADE,
    event_id          text NOT NULL,             -- Graph immutable id
    ical_uid          text,
    change_key        text,
    applied_hash      text,                      -- hash of the last applied Outlook state
    linked_at         timestamptz NOT NULL DEFAULT now(),
    linked_via        text NOT NULL DEFAULT 'api'
                      CHECK (linked_via IN ('transfer', 'link', 'category', 'api')),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT event_link_event_uq UNIQUE (representative_id, event_id)
);

-- Transfer attempts (CRM -> Outlook); a transfer is pending while the activity has
-- transfer_to_outlook and no event_link. This table only carries retry bookkeeping.
CREATE TABLE IF NOT EXISTS rmsync.transfer_state (
    activity_no     bigint PRIMARY KEY
                    REFERENCES crm.business_activity(activity_no) ON DELETE CASCADE,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    last_error      text,
    last_error_at   timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE OR REPLACE VIEW rmsync.pending_transfer AS
    SELECT a.activity_no, a.main_representative_id AS representative_id,
           coalesce(t.attempts, 0) AS attempts, t.next_attempt_at, t.last_error
      FROM crm.business_activity a
      LEFT JOIN rmsync.transfer_state t ON t.activity_no = a.activity_no
     WHERE a.transfer_to_outlook
       AND NOT EXISTS (SELECT 1 FROM rmsync.event_link l WHERE l.activity_no = a.activity_no);

-- Graph subscriptions (one per active representative).
CREATE TABLE IF NOT EXISTS rmsync.subscription (
    subscription_id   text PRIMARY KEY,
    representative_id text NOT NULL UNIQUE
                      REFERENCES crm.business_representative(representative_id) ON DELETE CASCADE,
    client_state      text NOT NULL,
    resource          text,
    expires_at        timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    renewed_at        timestamptz
);

-- Durable webhook queue. A repeat of a still *pending* item coalesces (same subscription,
-- kind, event and lifecycle event); use rmsync.notification_enqueue() to insert.
CREATE TABLE IF NOT EXISTS rmsync.notification (
    id                bigserial PRIMARY KEY,
    received_at       timestamptz NOT NULL DEFAULT now(),
    subscription_id   text NOT NULL,
    representative_id text,
    kind              text NOT NULL CHECK (kind IN ('change', 'lifecycle')),
    change_type       text,                    -- created | updated | deleted
    lifecycle_event   text,                    -- reauthorizationRequired | subscriptionRemoved | missed
    resource          text,
    event_id          text,
    state             text NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'processing', 'done', 'failed')),
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz,
    claimed_by        text,
    claimed_at        timestamptz,
    done_at           timestamptz,
    last_error        text
);
CREATE UNIQUE INDEX IF NOT EXISTS notification_pending_uq
    ON rmsync.notification (subscription_id, kind, coalesce(event_id, ''), coalesce(lifecycle_event, ''))
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS notification_state_idx
    ON rmsync.notification (state, next_attempt_at, id) WHERE state IN ('pending', 'processing');
CREATE INDEX IF NOT EXISTS notification_done_idx ON rmsync.notification (done_at) WHERE state = 'done';
-- a representative's open items (the runner's queue step reads them per job; without it every
-- read scanned the whole backlog of all representatives)
CREATE INDEX IF NOT EXISTS notification_rep_open_idx
    ON rmsync.notification (representative_id, id) WHERE state IN ('pending', 'processing');
-- a representative's closed items by age: the runner's purge (rmsync.queue_purge) reads them
-- per representative; without it every purge scanned the whole table, two days of items
CREATE INDEX IF NOT EXISTS notification_closed_rep_idx
    ON rmsync.notification (representative_id, done_at) WHERE state IN ('done', 'failed');

-- Enqueue one notification item. Returns the new id, or NULL when it coalesced with a pending
-- one. representative_id is taken from the subscription when NULL; event_id from the resource
-- ("Users/{id}/Events/{id}" or "Users('..')/Events('..')") when NULL.
CREATE OR REPLACE FUNCTION rmsync.notification_enqueue(
    p_subscription_id text, p_kind text, p_change_type text, p_lifecycle_event text,
    p_resource text, p_event_id text, p_representative_id text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_id  bigint;
    v_rep text := p_representative_id;
    v_evt text := p_event_id;
BEGIN
    IF v_rep IS NULL THEN
        SELECT representative_id INTO v_rep FROM rmsync.subscription
         WHERE subscription_id = p_subscription_id;
    END IF;
    IF v_evt IS NULL AND p_kind = 'change' AND p_resource IS NOT NULL THEN
        v_evt := substring(p_resource FROM '(?i)events[/(]''?([^''/()]+)');
    END IF;
    INSERT INTO rmsync.notification (subscription_id, representative_id, kind, change_type,
                                     lifecycle_event, resource, event_id)
    VALUES (p_subscription_id, v_rep, p_kind, p_change_type, p_lifecycle_event, p_resource, v_evt)
    ON CONFLICT (subscription_id, kind, coalesce(event_id, ''), coalesce(lifecycle_event, ''))
        WHERE state = 'pending'
    DO NOTHING
    RETURNING id INTO v_id;
    RETURN v_id;
END;
$$;

-- Claim up to p_limit due pending items for p_owner (FOR UPDATE SKIP LOCKED: safe with several
-- runners). Items a dead runner left in 'processing' for longer than p_stale are put back first
-- (or closed as superseded when an equal item is pending again).
CREATE OR REPLACE FUNCTION rmsync.notification_claim(
    p_owner text, p_limit integer DEFAULT 50, p_stale interval DEFAULT interval '5 minutes')
RETURNS SETOF rmsync.notification
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE rmsync.notification n
       SET state = 'done', done_at = now(), last_error = 'superseded'
     WHERE n.state = 'processing' AND n.claimed_at < now() - p_stale
       AND EXISTS (SELECT 1 FROM rmsync.notification p
                    WHERE p.state = 'pending' AND p.subscription_id = n.subscription_id
                      AND p.kind = n.kind
                      AND coalesce(p.event_id, '') = coalesce(n.event_id, '')
                      AND coalesce(p.lifecycle_event, '') = coalesce(n.lifecycle_event, ''));
    UPDATE rmsync.notification
       SET state = 'pending', claimed_by = NULL, claimed_at = NULL
     WHERE state = 'processing' AND claimed_at < now() - p_stale;
    RETURN QUERY
    UPDATE rmsync.notification n
       SET state = 'processing', attempts = n.attempts + 1, claimed_by = p_owner, claimed_at = now()
     WHERE n.id IN (SELECT id FROM rmsync.notification
                     WHERE state = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= now())
                     ORDER BY id
                     FOR UPDATE SKIP LOCKED
                     LIMIT p_limit)
    RETURNING n.*;
END;
$$;

-- Durable admin requests (the admin pages write, the runner executes).
CREATE TABLE IF NOT EXISTS rmsync.request (
    id                bigserial PRIMARY KEY,
    kind              text NOT NULL CHECK (kind ~ '^[a-z_]{1,40}$'),
                      -- initial_sync | initial_sync_all | approve | retry | unlink | set_active | ...
    representative_id text,
    activity_no       bigint,
    payload           jsonb,
    requested_by      text,
    requested_at      timestamptz NOT NULL DEFAULT now(),
    state             text NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'processing', 'done', 'failed')),
    done_at           timestamptz,
    result            text
);
-- v2: claim bookkeeping
ALTER TABLE rmsync.request ADD COLUMN IF NOT EXISTS claimed_by text;
ALTER TABLE rmsync.request ADD COLUMN IF NOT EXISTS claimed_at timestamptz;
CREATE INDEX IF NOT EXISTS request_pending_idx ON rmsync.request (id) WHERE state = 'pending';

-- Claim up to p_limit pending requests, oldest first (SKIP LOCKED: one runner per request).
-- Requests left 'processing' by a dead runner for longer than p_stale are claimed again.
CREATE OR REPLACE FUNCTION rmsync.request_claim(
    p_owner text, p_limit integer DEFAULT 20, p_stale interval DEFAULT interval '10 minutes')
RETURNS SETOF rmsync.request
LANGUAGE sql AS $$
    UPDATE rmsync.request r
       SET state = 'processing', claimed_by = p_owner, claimed_at = now()
     WHERE r.id IN (SELECT id FROM rmsync.request
                     WHERE state = 'pending'
                        OR (state = 'processing' AND claimed_at < now() - p_stale)
                     ORDER BY id
                     FOR UPDATE SKIP LOCKED
                     LIMIT p_limit)
    RETURNING r.*
$$;

-- Close a claimed request: p_ok -> 'done' else 'failed', with a short result text.
CREATE OR REPLACE FUNCTION rmsync.request_finish(p_id bigint, p_ok boolean, p_result text)
RETURNS void
LANGUAGE sql AS $$
    UPDATE rmsync.request
       SET state = CASE WHEN p_ok THEN 'done' ELSE 'failed' END, done_at = now(), result = p_result
     WHERE id = p_id
$$;

-- The sync log (the Calendar Sync Log page).
CREATE TABLE IF NOT EXISTS rmsync.sync_log (
    id                bigserial PRIMARY KEY,
    at                timestamptz NOT NULL DEFAULT now(),
    level             text NOT NULL CHECK (level IN ('error', 'warning', 'info', 'debug')),
    representative_id text,
    activity_no       bigint,
    event_id          text,
    action            text,
    message           text NOT NULL,
    graph_request_id  text
);
CREATE INDEX IF NOT EXISTS sync_log_rep_idx      ON rmsync.sync_log (representative_id, id DESC);
CREATE INDEX IF NOT EXISTS sync_log_level_idx    ON rmsync.sync_log (level, id DESC);
CREATE INDEX IF NOT EXISTS sync_log_activity_idx ON rmsync.sync_log (activity_no, id DESC)
    WHERE activity_no IS NOT NULL;
CREATE INDEX IF NOT EXISTS sync_log_at_idx       ON rmsync.sync_log (at);
-- The subscription step's pending query skips a representative whose subscription call failed in
-- the last minute: this index holds only those rows (the level index made it read every error).
CREATE INDEX IF NOT EXISTS sync_log_subs_error_idx ON rmsync.sync_log (at, representative_id)
    WHERE action = 'subscription' AND level = 'error';

-- The sync service switch (singleton row; the admin's stop/start).
CREATE TABLE IF NOT EXISTS rmsync.service_state (
    id         integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    running    boolean NOT NULL DEFAULT true,
    changed_at timestamptz NOT NULL DEFAULT now(),
    changed_by text
);
INSERT INTO rmsync.service_state (id) VALUES (1) ON CONFLICT (id) DO NOTHING;

-- The runner's purge of one representative's closed queue items (its queue step, about hourly
-- per mailbox): done items after 2 days, failed ones after 30 (kept longer for the admin).
-- Found through notification_closed_rep_idx and at most p_limit rows a call, so one call is
-- a bounded index range scan whatever the size of the table. Returns the rows deleted.
CREATE OR REPLACE FUNCTION rmsync.queue_purge(p_rep text, p_limit integer DEFAULT 5000)
RETURNS bigint
LANGUAGE sql AS $$
    WITH d AS (
        DELETE FROM rmsync.notification
         WHERE id = ANY (ARRAY (
               SELECT id FROM rmsync.notification
                WHERE representative_id = p_rep AND state IN ('done', 'failed')
                  AND done_at < now() - interval '2 days'
                  AND (state = 'done' OR done_at < now() - interval '30 days')
                LIMIT p_limit))
        RETURNING 1)
    SELECT count(*) FROM d
$$;

-- Housekeeping: drop finished queue rows and requests older than p_keep_done, and sync log
-- rows older than p_keep_log (failed queue items after 30 days). Returns the number of rows
-- removed. For a DBA: all of it at once, by housekeeping_step() below in steps of 50,000; the
-- runner takes those steps itself, one a second, as RMSyncLogRetention says (default 90 days;
-- Off: nothing, the DBA schedules this one).
CREATE OR REPLACE FUNCTION rmsync.housekeeping(
    p_keep_log interval DEFAULT interval '90 days', p_keep_done interval DEFAULT interval '2 days')
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint := 0;
    m bigint;
BEGIN
    LOOP
        m := rmsync.housekeeping_step(p_keep_log, p_keep_done, 50000);
        n := n + m;
        EXIT WHEN m = 0;
    END LOOP;
    RETURN n;
END;
$$;

-- One bounded step of housekeeping: at most p_limit rows of each table (the oldest log rows first;
-- sync_log_at_idx). The runner repeats it, one step a second, until a step removes nothing.
CREATE OR REPLACE FUNCTION rmsync.housekeeping_step(
    p_keep_log interval, p_keep_done interval, p_limit integer)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint := 0;
    m bigint;
BEGIN
    DELETE FROM rmsync.sync_log WHERE id IN (
        SELECT id FROM rmsync.sync_log WHERE at < now() - p_keep_log ORDER BY at LIMIT p_limit);
    GET DIAGNOSTICS m = ROW_COUNT; n := n + m;
    -- failed items stay 30 days (as the runner's own purge keeps them: post-mortems)
    DELETE FROM rmsync.notification WHERE id IN (
        SELECT id FROM rmsync.notification
         WHERE (state = 'done' AND coalesce(done_at, received_at) < now() - p_keep_done)
            OR (state = 'failed'
                AND coalesce(done_at, received_at) < now() - greatest(p_keep_done, interval '30 days'))
         LIMIT p_limit);
    GET DIAGNOSTICS m = ROW_COUNT; n := n + m;
    DELETE FROM rmsync.request WHERE id IN (
        SELECT id FROM rmsync.request
         WHERE state IN ('done', 'failed') AND coalesce(done_at, requested_at) < now() - p_keep_done
         LIMIT p_limit);
    GET DIAGNOSTICS m = ROW_COUNT; n := n + m;
    RETURN n;
END;
$$;

-- Representatives that may sync: their CRM user holds the configured permission set.
-- The setting is a sub-SELECT (one InitPlan per query): as a plain call it ran once per
-- representative whenever a scan probed the grants in a nested loop (10,000 calls a scan).
CREATE OR REPLACE VIEW rmsync.representatives AS
    SELECT r.representative_id, r.name, r.user_id, r.email,
           coalesce(s.mailbox, r.email) AS mailbox,
           coalesce(s.sync_active, false) AS sync_active,
           coalesce(u.active, false) AND NOT coalesce(u.locked, true) AS user_enabled,
           coalesce(s.held_by_breaker, false) AS held_by_breaker,
           s.held_reason, s.graph_user_id,
           (s.delta_link IS NOT NULL) AS has_delta_link,
           s.round_kind, s.initial_sync_requested_at, s.last_success_at, s.last_attempt_at,
           s.last_error, s.last_error_at, coalesce(s.category_state, 'unknown') AS category_state,
           (SELECT count(*) FROM rmsync.event_link l
             WHERE l.representative_id = r.representative_id) AS linked_count
      FROM crm.business_representative r
      JOIN crm.fnd_user u ON u.identity = r.user_id
      LEFT JOIN rmsync.rep_state s ON s.representative_id = r.representative_id
     WHERE EXISTS (SELECT 1 FROM crm.permission_set_grant g
                    WHERE g.identity = r.user_id
                      AND g.permission_set = (SELECT rmsync.setting('permission_set')));

-- Leases on a representative's mailbox (several nodes may share the DB).
CREATE OR REPLACE FUNCTION rmsync.rep_lease_acquire(p_rep text, p_owner text, p_seconds integer)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE ok boolean;
BEGIN
    INSERT INTO rmsync.rep_state (representative_id) VALUES (p_rep) ON CONFLICT DO NOTHING;
    UPDATE rmsync.rep_state
       SET lease_owner = p_owner, lease_until = now() + make_interval(secs => p_seconds)
     WHERE representative_id = p_rep
       AND (lease_owner IS NULL OR lease_owner = p_owner OR lease_until IS NULL OR lease_until < now())
    RETURNING true INTO ok;
    RETURN coalesce(ok, false);
END;
$$;
CREATE OR REPLACE FUNCTION rmsync.rep_lease_release(p_rep text, p_owner text) RETURNS boolean
LANGUAGE sql AS $$
    UPDATE rmsync.rep_state SET lease_owner = NULL, lease_until = NULL
     WHERE representative_id = p_rep AND lease_owner = p_owner
    RETURNING true
$$;

-- NOTIFY triggers ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION rmsync.notify_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('rmsync', TG_ARGV[0]);
    RETURN NULL;
END;
$$;
-- A writer that wakes the runner itself after its commit (the webhook: one NOTIFY for the rows
-- of many POSTs) sets rmsync.intake_wake = 'deferred' for its transaction: a NOTIFY in every
-- commit serialises all commits on the cluster-wide notify lock.
DROP TRIGGER IF EXISTS notification_notify ON rmsync.notification;
CREATE TRIGGER notification_notify AFTER INSERT ON rmsync.notification
    FOR EACH ROW WHEN (current_setting('rmsync.intake_wake', true) IS DISTINCT FROM 'deferred')
    EXECUTE FUNCTION rmsync.notify_trigger('notification');
DROP TRIGGER IF EXISTS request_notify ON rmsync.request;
CREATE TRIGGER request_notify AFTER INSERT ON rmsync.request
    FOR EACH ROW EXECUTE FUNCTION rmsync.notify_trigger('request');
DROP TRIGGER IF EXISTS service_state_notify ON rmsync.service_state;
CREATE TRIGGER service_state_notify AFTER UPDATE OF running ON rmsync.service_state
    FOR EACH ROW WHEN (OLD.running IS DISTINCT FROM NEW.running)
    EXECUTE FUNCTION rmsync.notify_trigger('service');
DROP TRIGGER IF EXISTS rep_state_notify ON rmsync.rep_state;
CREATE TRIGGER rep_state_notify AFTER INSERT OR UPDATE OF sync_active ON rmsync.rep_state
    FOR EACH ROW EXECUTE FUNCTION rmsync.notify_trigger('rep_state');

-- Reactivation (Sync Active false -> true) re-checks the master category in the mailbox: the
-- user may have deleted it, or the app's MailboxSettings permission changed, while it was off.
-- (A representative who lost and regained the permission set is reset by the runner, which
-- sees the grant only through rmsync.representatives.)
CREATE OR REPLACE FUNCTION rmsync.rep_state_reactivated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.sync_active AND NOT OLD.sync_active THEN
        NEW.category_state := 'unknown';
    END IF;
    RETURN NEW;
END;
$$;
DROP TRIGGER IF EXISTS rep_state_reactivated ON rmsync.rep_state;
CREATE TRIGGER rep_state_reactivated BEFORE UPDATE OF sync_active ON rmsync.rep_state
    FOR EACH ROW EXECUTE FUNCTION rmsync.rep_state_reactivated();

-- Transfer: an activity flagged for Outlook and not linked wakes the runner.
CREATE OR REPLACE FUNCTION rmsync.transfer_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.transfer_to_outlook
       AND (TG_OP = 'INSERT' OR NOT OLD.transfer_to_outlook)
       AND NOT EXISTS (SELECT 1 FROM rmsync.event_link WHERE activity_no = NEW.activity_no) THEN
        PERFORM pg_notify('rmsync', 'transfer');
    END IF;
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS rmsync_transfer_notify ON crm.business_activity;
CREATE TRIGGER rmsync_transfer_notify AFTER INSERT OR UPDATE OF transfer_to_outlook
    ON crm.business_activity FOR EACH ROW EXECUTE FUNCTION rmsync.transfer_notify();

-- The sync-field guard ----------------------------------------------------------------------
-- Outlook owns the sync fields of a linked activity: only SYNC_MASTER may change description,
-- start_time, end_time, main_representative_id, and the contact / representative rows.
-- Deleting a linked activity is refused too for anyone but SYNC_MASTER (the Outlook event
-- would stay and be re-applied): delete it in Outlook, or unlink it first (DELETE FROM
-- rmsync.event_link). Unlinked activities and non-sync fields (status, notes, ...) are free.
CREATE OR REPLACE FUNCTION rmsync.guard_activity() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changed text[] := '{}';
BEGIN
    IF rmsync.is_master()
       OR NOT EXISTS (SELECT 1 FROM rmsync.event_link WHERE activity_no = OLD.activity_no) THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'RMSYNC: activity % is linked to an Outlook appointment; delete the appointment in Outlook or unlink the activity first', OLD.activity_no
            USING ERRCODE = 'RMS02',
                  HINT = 'Only the sync user ' || coalesce(rmsync.setting('master_user'), '?') || ' deletes linked activities.';
    END IF;
    IF NEW.activity_no IS DISTINCT FROM OLD.activity_no THEN changed := changed || 'activity_no'::text; END IF;
    IF NEW.description IS DISTINCT FROM OLD.description THEN changed := changed || 'description'::text; END IF;
    IF NEW.start_time IS DISTINCT FROM OLD.start_time THEN changed := changed || 'start_time'::text; END IF;
    IF NEW.end_time IS DISTINCT FROM OLD.end_time THEN changed := changed || 'end_time'::text; END IF;
    IF NEW.main_representative_id IS DISTINCT FROM OLD.main_representative_id THEN
        changed := changed || 'main_representative_id'::text;
    END IF;
    IF cardinality(changed) > 0 THEN
        RAISE EXCEPTION 'RMSYNC: description, start, end, contacts and representatives of activity % are owned by its Outlook appointment; change them in Outlook', OLD.activity_no
            USING ERRCODE = 'RMS01',
                  DETAIL = 'Changed sync field(s): ' || array_to_string(changed, ', ') || '; acting user ' || crm.current_user_id() || '.';
    END IF;
    RETURN NEW;
END;
$$;
-- WHEN: the sync's own writes (SYNC_MASTER; an initial sync writes thousands of rows) skip the
-- guard's call; the functions still check is_master() for anyone calling them otherwise.
DROP TRIGGER IF EXISTS rmsync_guard_sync_fields ON crm.business_activity;
CREATE TRIGGER rmsync_guard_sync_fields BEFORE UPDATE OR DELETE ON crm.business_activity
    FOR EACH ROW WHEN (NOT rmsync.is_master()) EXECUTE FUNCTION rmsync.guard_activity();

CREATE OR REPLACE FUNCTION rmsync.guard_activity_child() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_no  bigint;
    v_dup boolean;
BEGIN
    IF rmsync.is_master() THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    -- No-op writes (re-inserting an existing row for ON CONFLICT DO NOTHING, an UPDATE that
    -- changes nothing) change no sync field: let them through.
    IF TG_OP = 'UPDATE' AND NEW IS NOT DISTINCT FROM OLD THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.%I t WHERE t = $1)', TG_TABLE_SCHEMA, TG_TABLE_NAME)
           INTO v_dup USING NEW;
        IF v_dup THEN
            RETURN NEW;
        END IF;
    END IF;
    FOR v_no IN SELECT DISTINCT x FROM unnest(ARRAY[
                    CASE WHEN TG_OP <> 'INSERT' THEN OLD.activity_no END,
                    CASE WHEN TG_OP <> 'DELETE' THEN NEW.activity_no END]) AS x WHERE x IS NOT NULL
    LOOP
        IF EXISTS (SELECT 1 FROM rmsync.event_link WHERE activity_no = v_no) THEN
            RAISE EXCEPTION 'RMSYNC: description, start, end, contacts and representatives of activity % are owned by its Outlook appointment; change them in Outlook', v_no
                USING ERRCODE = 'RMS01',
                      DETAIL = 'Changed sync field: ' || TG_TABLE_NAME || ' (' || lower(TG_OP) || '); acting user ' || crm.current_user_id() || '.';
        END IF;
    END LOOP;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END;
$$;
DROP TRIGGER IF EXISTS rmsync_guard_sync_fields ON crm.business_activity_contact;
CREATE TRIGGER rmsync_guard_sync_fields BEFORE INSERT OR UPDATE OR DELETE
    ON crm.business_activity_contact FOR EACH ROW WHEN (NOT rmsync.is_master())
    EXECUTE FUNCTION rmsync.guard_activity_child();
DROP TRIGGER IF EXISTS rmsync_guard_sync_fields ON crm.business_activity_representative;
CREATE TRIGGER rmsync_guard_sync_fields BEFORE INSERT OR UPDATE OR DELETE
    ON crm.business_activity_representative FOR EACH ROW WHEN (NOT rmsync.is_master())
    EXECUTE FUNCTION rmsync.guard_activity_child();

-- Sync engine bookkeeping (added by the engine; additive, idempotent) -------------------------
-- event_link.applied_attendees: the attendee addresses (sorted, lowercase, '\n'-joined) last
--   applied, so contacts/representatives change only when the Outlook attendee set changed;
-- event_link.gone_at: the event was confirmed deleted in Outlook; the deletion waits for the
--   mass-delete circuit breaker (carried out, or held until an admin approves);
-- event_link.seen_at: marked by an initial sync round; links not seen are reconciled;
-- rep_state.round_started_at: when the current delta / initial round started.
ALTER TABLE rmsync.event_link ADD COLUMN IF NOT EXISTS applied_attendees text;
ALTER TABLE rmsync.event_link ADD COLUMN IF NOT EXISTS gone_at timestamptz;
ALTER TABLE rmsync.event_link ADD COLUMN IF NOT EXISTS seen_at timestamptz;
ALTER TABLE rmsync.rep_state  ADD COLUMN IF NOT EXISTS round_started_at timestamptz;
CREATE INDEX IF NOT EXISTS event_link_gone_idx ON rmsync.event_link (representative_id)
    WHERE gone_at IS NOT NULL;

-- Admin CSRF secret shared by every node and restart (issue 17): one random 32-byte secret per
-- UTC day (period = days since the epoch), made by the first worker that needs it; tokens of the
-- current and the previous day verify; older rows are dropped by the same statement. Only the
-- module's role (grants.sql) may read it.
CREATE TABLE IF NOT EXISTS rmsync.csrf_secret (
    period     bigint PRIMARY KEY,
    secret     bytea NOT NULL CHECK (octet_length(secret) = 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON rmsync.csrf_secret FROM PUBLIC;

-- Deletion safety and link integrity (issue 13; additive, idempotent) -------------------------
-- event_link.gone_kind: why the link waits for the breaker: 'deleted' (Graph 404) or
--   'cancelled' (RMSyncCancelPolicy delete);
-- rep_state.breaker_rejected_at: the admin's last Reject (like breaker_approved_at, it starts a
--   new breaker window);
-- deletion_done: deletions carried out, the breaker's sliding window (approved: by an admin's
--   Approve, not counted); the runner drops rows older than a day;
-- unlinked_event: appointments an admin unlinked (Unlink, Reject): never linked again by the
--   category rule or a repeated notification; an explicit link (linked_via 'link' or 'api')
--   forgets them (trigger below);
-- synclog_cursor: the last sync_log id the runner copied to RMSyncLogFile (admin actions are
--   written by worker processes; the runner copies them, each once, also across restarts).
ALTER TABLE rmsync.event_link ADD COLUMN IF NOT EXISTS gone_kind text;
ALTER TABLE rmsync.rep_state  ADD COLUMN IF NOT EXISTS breaker_rejected_at timestamptz;
CREATE TABLE IF NOT EXISTS rmsync.deletion_done (
    representative_id text NOT NULL
                      REFERENCES crm.business_representative(representative_id) ON DELETE CASCADE,
    activity_no       bigint NOT NULL,
    done_at           timestamptz NOT NULL DEFAULT now(),
    approved          boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS deletion_done_rep_idx ON rmsync.deletion_done (representative_id, done_at);
CREATE TABLE IF NOT EXISTS rmsync.unlinked_event (
    representative_id text NOT NULL
                      REFERENCES crm.business_representative(representative_id) ON DELETE CASCADE,
    event_id          text NOT NULL,
    activity_no       bigint,
    unlinked_by       text NOT NULL,
    unlinked_at       timestamptz NOT NULL DEFAULT now(),
    noted_change_key  text,          -- the Outlook state last logged as "not linked again"
    PRIMARY KEY (representative_id, event_id)
);
CREATE OR REPLACE FUNCTION rmsync.forget_unlinked() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM rmsync.unlinked_event
     WHERE representative_id = NEW.representative_id AND event_id = NEW.event_id;
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS rmsync_forget_unlinked ON rmsync.event_link;
CREATE TRIGGER rmsync_forget_unlinked AFTER INSERT ON rmsync.event_link
    FOR EACH ROW WHEN (NEW.linked_via IN ('link', 'api'))
    EXECUTE FUNCTION rmsync.forget_unlinked();
-- sync_log.by_admin: the admin user of a row an admin action wrote (worker processes).
ALTER TABLE rmsync.sync_log ADD COLUMN IF NOT EXISTS by_admin text;
CREATE INDEX IF NOT EXISTS sync_log_admin_idx ON rmsync.sync_log (id) WHERE by_admin IS NOT NULL;
CREATE TABLE IF NOT EXISTS rmsync.synclog_cursor (
    id      integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    last_id bigint NOT NULL
);
-- installed/upgraded now: older rows are not copied
INSERT INTO rmsync.synclog_cursor (id, last_id)
    SELECT 1, coalesce(max(id), 0) FROM rmsync.sync_log ON CONFLICT (id) DO NOTHING;
DROP TRIGGER IF EXISTS sync_log_admin_notify ON rmsync.sync_log;
CREATE TRIGGER sync_log_admin_notify AFTER INSERT ON rmsync.sync_log
    FOR EACH ROW WHEN (NEW.by_admin IS NOT NULL)
    EXECUTE FUNCTION rmsync.notify_trigger('admin_log');
-- sync_log repeats (issue 15): the runner counts an identical error/warning row (same
-- representative, action, event, activity and message) written again within an hour of the
-- row's first time on that row instead of inserting a new one (rmsync_synclog.c). `at` is the
-- first time, last_at the latest; admin-action rows (by_admin) are never aggregated, so the
-- text-log cursor over their ids is unaffected.
ALTER TABLE rmsync.sync_log ADD COLUMN IF NOT EXISTS repeat_count integer NOT NULL DEFAULT 1;
ALTER TABLE rmsync.sync_log ADD COLUMN IF NOT EXISTS last_at timestamptz;

-- Nodes (issue 17): one heartbeat row per Apache node's sync runner, upserted by its control
-- thread every few seconds (node_id: host name and first listening port); the status page
-- lists them and flags a row whose last_beat is older than three beats; rows silent for a day
-- are dropped by the beat statement of any live node.
CREATE TABLE IF NOT EXISTS rmsync.node (
    node_id    text PRIMARY KEY,
    pid        integer NOT NULL,
    generation bigint NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL,
    last_beat  timestamptz NOT NULL DEFAULT now(),
    state      text,
    working_on text
);

-- Calendar fields (issue 14): the mailbox owner's time zone for all-day events, read from
-- mailboxSettings/timeZone once a day (rmsync_calfields.c). mailbox_tz: the IANA name, NULL =
-- RMSyncDefaultTimeZone; mailbox_tz_source: 'mailbox' or 'default' (could not be read: logged
-- once when it becomes 'default'); mailbox_tz_at: when it was last read.
ALTER TABLE rmsync.rep_state  ADD COLUMN IF NOT EXISTS mailbox_tz text;
ALTER TABLE rmsync.rep_state  ADD COLUMN IF NOT EXISTS mailbox_tz_source text;
ALTER TABLE rmsync.rep_state  ADD COLUMN IF NOT EXISTS mailbox_tz_at timestamptz;

-- issue 14 (RMSyncCalendar): the calendar the runner syncs in this mailbox. calendar_name =
-- the configured value the state was made for ('main' or the name; NULL = main, as before);
-- calendar_id = that calendar's Graph id (NULL = the main calendar).
ALTER TABLE rmsync.rep_state ADD COLUMN IF NOT EXISTS calendar_name text;
ALTER TABLE rmsync.rep_state ADD COLUMN IF NOT EXISTS calendar_id text;
-- issue 14: series linked through the linking API (given a series master id): every occurrence
-- inside the sync window has an activity, also those entering the window or made by a pattern
-- change later (the category rule needs no such row: each occurrence carries the category).
CREATE TABLE IF NOT EXISTS rmsync.linked_series (
    representative_id text NOT NULL
                      REFERENCES crm.business_representative(representative_id) ON DELETE CASCADE,
    series_master_id  text NOT NULL,
    linked_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (representative_id, series_master_id)
);

-- Admin log page (issue 15): "warning and above" pages by (level, id); the text search
-- (message ILIKE '%...%') uses a trigram index when pg_trgm can be had. pg_trgm is a trusted
-- extension (a database owner may create it); where it cannot be created the schema still
-- installs and the search scans (docs/admin.md).
DO $$
BEGIN
    BEGIN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'pg_trgm not available (%): the log text search works without an index',
                     SQLERRM;
    END;
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        EXECUTE format('CREATE INDEX IF NOT EXISTS sync_log_message_trgm ON rmsync.sync_log'
                       ' USING gin (message %I.gin_trgm_ops)',
                       (SELECT n.nspname FROM pg_extension e
                          JOIN pg_namespace n ON n.oid = e.extnamespace
                         WHERE e.extname = 'pg_trgm'));
    END IF;
END;
$$;

INSERT INTO rmsync.schema_version (component, version) VALUES ('rmsync', 2)
    ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version, applied_at = now();

COMMIT;
