#!/usr/bin/env bash
# mod_rmsync: install the database schemas with psql, idempotently (running it twice is fine).
#
#   sql/install.sh [--crm] [--demo] [--app-role ROLE] [--unlock-master] [--activate-master] [CONNINFO]
#
#   --crm              also install the stand-in CRM schema (sql/crm/crm_schema.sql) first;
#                      omit it when installing into an existing CRM database
#   --demo             also load sql/demo/demo_data.sql (implies --crm)
#   --app-role ROLE    grant ROLE (the module's login role, which must exist) access (grants.sql)
#   --unlock-master    run sql/manualdeploy/UpdateSyncMasterUser.sql
#   --activate-master  run sql/manualdeploy/ActivateSyncMasterUser.sql
#   CONNINFO           libpq conninfo or URI of the target database (default: PG* environment)
#
# Order: crm_schema.sql -> rmsync/rmsync_schema.sql -> rmsync/grants.sql -> demo -> manualdeploy.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CRM=0 DEMO=0 ROLE= UNLOCK=0 ACTIVATE=0 CONN=
while [ $# -gt 0 ]; do
  case "$1" in
    --crm) CRM=1 ;;
    --demo) DEMO=1; CRM=1 ;;
    --app-role) ROLE=${2:?--app-role needs a role name}; shift ;;
    --unlock-master) UNLOCK=1 ;;
    --activate-master) ACTIVATE=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "install.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    *) CONN=$1 ;;
  esac
  shift
done
PSQL=${PSQL:-psql}
run() { "$PSQL" -X -q -v ON_ERROR_STOP=1 ${CONN:+-d "$CONN"} "$@"; }
if [ "$CRM" = 1 ]; then run -f "$HERE/crm/crm_schema.sql"; fi
run -f "$HERE/rmsync/rmsync_schema.sql"
if [ -n "$ROLE" ]; then run -v app_role="$ROLE" -f "$HERE/rmsync/grants.sql"; fi
if [ "$DEMO" = 1 ]; then run -f "$HERE/demo/demo_data.sql"; fi
if [ "$UNLOCK" = 1 ]; then run -At -f "$HERE/manualdeploy/UpdateSyncMasterUser.sql"; fi
if [ "$ACTIVATE" = 1 ]; then run -At -f "$HERE/manualdeploy/ActivateSyncMasterUser.sql"; fi
echo "install.sh: installed: $(run -At -c "SELECT string_agg(component || ' v' || version, ', ' ORDER BY component) FROM rmsync.schema_version")"
