-- mod_rmsync (stand-in CRM only): activate the SYNC_MASTER user, the step a real CRM does in
-- its user administration window. Does not unlock it (UpdateSyncMasterUser.sql does that).
-- Usage: psql -v ON_ERROR_STOP=1 -f ActivateSyncMasterUser.sql   (idempotent)
BEGIN;
UPDATE crm.fnd_user SET active = true
 WHERE identity = rmsync.setting('master_user') AND NOT active;
SELECT 'SYNC_MASTER user ' || coalesce(rmsync.setting('master_user'), '?') || ': '
       || rmsync.master_user_state() AS "rmsync";
COMMIT;
