-- mod_rmsync demo data for the stand-in CRM (apply after crm and rmsync schemas; idempotent).
-- Representatives ALICE, BOB, CAROL (mailboxes alice@, bob@, carol@demo.rmsync.test, users
-- granted EXCHANGE_SYNC_USER) and DAVE (dave@demo.rmsync.test, NOT granted); a few contacts
-- and unlinked activities. The Graph simulator seeds the same three mailboxes.
-- schema-version: demo 1
BEGIN;
INSERT INTO crm.fnd_user (identity, description) VALUES
    ('ALICE', 'Alice Anderson'), ('BOB', 'Bob Brown'), ('CAROL', 'Carol Clark'), ('DAVE', 'Dave Davis')
ON CONFLICT (identity) DO NOTHING;
INSERT INTO crm.permission_set_grant (identity, permission_set) VALUES
    ('ALICE', 'EXCHANGE_SYNC_USER'), ('BOB', 'EXCHANGE_SYNC_USER'), ('CAROL', 'EXCHANGE_SYNC_USER')
ON CONFLICT DO NOTHING;
INSERT INTO crm.business_representative (representative_id, user_id, name, email) VALUES
    ('ALICE', 'ALICE', 'Alice Anderson', 'alice@demo.rmsync.test'),
    ('BOB',   'BOB',   'Bob Brown',      'bob@demo.rmsync.test'),
    ('CAROL', 'CAROL', 'Carol Clark',    'carol@demo.rmsync.test'),
    ('DAVE',  'DAVE',  'Dave Davis',     'dave@demo.rmsync.test')
ON CONFLICT (representative_id) DO NOTHING;
INSERT INTO crm.person (person_id, name, email) VALUES
    ('ANN',   'Ann Customer', 'ann.customer@example.com'),
    ('BEN',   'Ben Buyer',    'ben.buyer@example.com'),
    ('CLARA', 'Clara Client', 'Clara.Client@example.com'),
    ('DAN',   'Dan Nomail',   NULL)
ON CONFLICT (person_id) DO NOTHING;

DO $$ BEGIN PERFORM set_config('crm.user', 'ALICE', true); END $$;  -- acting CRM user
INSERT INTO crm.business_activity (activity_no, description, start_time, end_time, main_representative_id, notes)
VALUES
    (1, 'Kick-off with Ann',    date_trunc('day', now()) + interval '1 day 9 hours',  date_trunc('day', now()) + interval '1 day 10 hours', 'ALICE', 'demo'),
    (2, 'Pricing call (Ben)',   date_trunc('day', now()) + interval '2 day 14 hours', date_trunc('day', now()) + interval '2 day 15 hours', 'ALICE', NULL),
    (3, 'Quarterly review',     date_trunc('day', now()) + interval '3 day 11 hours', date_trunc('day', now()) + interval '3 day 12 hours', 'BOB',   NULL),
    (4, 'Site visit (Clara)',   date_trunc('day', now()) + interval '4 day 8 hours',  date_trunc('day', now()) + interval '4 day 12 hours', 'CAROL', NULL),
    (5, 'Dave internal sync',   date_trunc('day', now()) + interval '1 day 16 hours', date_trunc('day', now()) + interval '1 day 17 hours', 'DAVE',  NULL)
ON CONFLICT (activity_no) DO NOTHING;
INSERT INTO crm.business_activity_contact (activity_no, person_id) VALUES
    (1, 'ANN'), (2, 'BEN'), (3, 'ANN'), (3, 'BEN'), (4, 'CLARA')
ON CONFLICT DO NOTHING;
INSERT INTO crm.business_activity_representative (activity_no, representative_id) VALUES
    (3, 'ALICE')
ON CONFLICT DO NOTHING;
-- keep the sequence above the demo's fixed numbers
SELECT FROM setval('crm.business_activity_seq',
              greatest((SELECT max(activity_no) FROM crm.business_activity),
                       (SELECT last_value FROM crm.business_activity_seq), 999));

INSERT INTO crm.schema_version (component, version) VALUES ('demo', 1)
    ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version, applied_at = now();
COMMIT;
