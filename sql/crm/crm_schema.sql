-- mod_rmsync: stand-in CRM schema "crm" (demo and tests only).
--
-- A deliberately small model of the CRM tables the sync touches. A real installation already
-- has its CRM; it installs only sql/rmsync/rmsync_schema.sql next to it.
--
-- Who is acting: the CRM user performing a change is the session setting `crm.user`
--   SELECT set_config('crm.user', 'ALICE', true);   -- transaction-local; false = session
--   SET LOCAL crm."user" = 'ALICE';                  -- same (USER is a keyword: quote it)
-- When it is unset the acting user is the database role name in upper case (session_user).
-- crm.current_user_id() returns it; triggers stamp created_by / modified_by from it (a value
-- written into modified_by by hand is overwritten), so modified_by always says who changed a row.
--
-- Idempotent: apply as often as you like (psql -v ON_ERROR_STOP=1 -f crm_schema.sql).
-- schema-version: crm 1
BEGIN;

CREATE SCHEMA IF NOT EXISTS crm;

CREATE TABLE IF NOT EXISTS crm.schema_version (
    component  text PRIMARY KEY,
    version    integer NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- The acting CRM user (see the header).
CREATE OR REPLACE FUNCTION crm.current_user_id() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('crm.user', true), ''), upper(session_user::text))
$$;

CREATE TABLE IF NOT EXISTS crm.fnd_user (
    identity    text PRIMARY KEY,
    description text,
    active      boolean NOT NULL DEFAULT true,
    locked      boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Permission sets granted to users; the sync's one is EXCHANGE_SYNC_USER (configurable).
CREATE TABLE IF NOT EXISTS crm.permission_set_grant (
    identity       text NOT NULL REFERENCES crm.fnd_user(identity) ON DELETE CASCADE,
    permission_set text NOT NULL,
    granted_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (identity, permission_set)
);

CREATE TABLE IF NOT EXISTS crm.business_representative (
    representative_id text PRIMARY KEY,
    user_id           text REFERENCES crm.fnd_user(identity) ON DELETE SET NULL,
    name              text NOT NULL,
    email             text
);
CREATE INDEX IF NOT EXISTS business_representative_email_idx
    ON crm.business_representative (lower(email));
CREATE INDEX IF NOT EXISTS business_representative_user_idx
    ON crm.business_representative (user_id);

-- Contacts.
CREATE TABLE IF NOT EXISTS crm.person (
    person_id text PRIMARY KEY,
    name      text NOT NULL,
    email     text
);
CREATE INDEX IF NOT EXISTS person_email_idx ON crm.person (lower(email));

CREATE SEQUENCE IF NOT EXISTS crm.business_activity_seq START 1000;

-- Business Activities. Sync fields: description, start_time, end_time, main_representative_id,
-- plus the contact and representative rows below. Everything else is CRM-only.
CREATE TABLE IF NOT EXISTS crm.business_activity (
    activity_no            bigint PRIMARY KEY DEFAULT nextval('crm.business_activity_seq'),
    description            text NOT NULL DEFAULT '',
    start_time             timestamptz NOT NULL,
    end_time               timestamptz NOT NULL,
    main_representative_id text NOT NULL REFERENCES crm.business_representative(representative_id),
    status                 text NOT NULL DEFAULT 'Planned'
                           CHECK (status IN ('Planned', 'Cancelled', 'Completed')),
    transfer_to_outlook    boolean NOT NULL DEFAULT false,
    notes                  text,
    created_by             text,
    created_at             timestamptz NOT NULL DEFAULT now(),
    modified_by            text,
    modified_at            timestamptz NOT NULL DEFAULT now(),
    row_version            integer NOT NULL DEFAULT 1,
    CONSTRAINT business_activity_time_order CHECK (end_time >= start_time)
);
ALTER SEQUENCE crm.business_activity_seq OWNED BY crm.business_activity.activity_no;
CREATE INDEX IF NOT EXISTS business_activity_main_rep_idx
    ON crm.business_activity (main_representative_id, start_time);

-- Contacts of an activity.
CREATE TABLE IF NOT EXISTS crm.business_activity_contact (
    activity_no bigint NOT NULL REFERENCES crm.business_activity(activity_no) ON DELETE CASCADE,
    person_id   text NOT NULL REFERENCES crm.person(person_id) ON DELETE CASCADE,
    PRIMARY KEY (activity_no, person_id)
);

-- Further representatives taking part in an activity (the main one is main_representative_id
-- and need not be repeated here).
CREATE TABLE IF NOT EXISTS crm.business_activity_representative (
    activity_no       bigint NOT NULL REFERENCES crm.business_activity(activity_no) ON DELETE CASCADE,
    representative_id text NOT NULL REFERENCES crm.business_representative(representative_id) ON DELETE CASCADE,
    PRIMARY KEY (activity_no, representative_id)
);

-- Audit columns: stamped from crm.current_user_id(). An UPDATE that changes nothing but the
-- audit columns keeps them as they were (no row_version bump), so "write nothing when nothing
-- changed" stays observable.
CREATE OR REPLACE FUNCTION crm.business_activity_audit() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    probe crm.business_activity;
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.created_by  := coalesce(NEW.created_by, crm.current_user_id());
        NEW.created_at  := coalesce(NEW.created_at, now());
        NEW.modified_by := NEW.created_by;
        NEW.modified_at := NEW.created_at;
        NEW.row_version := 1;
        RETURN NEW;
    END IF;
    probe := NEW;
    probe.created_by  := OLD.created_by;
    probe.created_at  := OLD.created_at;
    probe.modified_by := OLD.modified_by;
    probe.modified_at := OLD.modified_at;
    probe.row_version := OLD.row_version;
    IF probe IS NOT DISTINCT FROM OLD THEN
        RETURN probe;                        -- no real change: keep the audit columns
    END IF;
    NEW.created_by  := OLD.created_by;
    NEW.created_at  := OLD.created_at;
    NEW.modified_by := crm.current_user_id();
    NEW.modified_at := now();
    NEW.row_version := OLD.row_version + 1;
    RETURN NEW;
END;
$$;
DROP TRIGGER IF EXISTS business_activity_audit ON crm.business_activity;
CREATE TRIGGER business_activity_audit BEFORE INSERT OR UPDATE ON crm.business_activity
    FOR EACH ROW EXECUTE FUNCTION crm.business_activity_audit();

INSERT INTO crm.schema_version (component, version) VALUES ('crm', 1)
    ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version, applied_at = now();

COMMIT;
