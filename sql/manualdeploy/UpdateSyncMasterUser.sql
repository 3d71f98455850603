-- mod_rmsync manual deploy step: unlock the SYNC_MASTER user (the one named in
-- rmsync.settings 'master_user'). A fresh install creates it locked and inactive; this unlocks
-- it and does nothing else. Activate it afterwards (ActivateSyncMasterUser.sql in this stand-in
-- CRM; the CRM's user administration in a real one), then restart the sync service.
-- Usage: psql -v ON_ERROR_STOP=1 -f UpdateSyncMasterUser.sql   (idempotent)
BEGIN;
UPDATE crm.fnd_user SET locked = false
 WHERE identity = rmsync.setting('master_user') AND locked;
SELECT 'SYNC_MASTER user ' || coalesce(rmsync.setting('master_user'), '?') || ': '
       || rmsync.master_user_state() AS "rmsync";
COMMIT;
