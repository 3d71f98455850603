#!/usr/bin/env bash
# mod_rmsync demo on loopback: a PostgreSQL cluster with the schemas and demo data, the Microsoft
# Graph simulator (HTTPS, own test CA) with the demo mailboxes, and Apache with the module
# configured against both. Everything lives under ./demo-run/.
#
#   tests/run-demo.sh          build (installing missing Debian packages), start everything,
#                              print the admin URL, write demo-run/demo.env
#   tests/run-demo.sh stop     stop everything started by the last run
#   tests/run-demo.sh status   show what is running
#
# `. demo-run/demo.env` then gives a shell RMSYNC_ADMIN_URL, RMSYNC_DB_CONNINFO, the simulator's
# URLs and app credentials, etc. A new start stops a running demo first and starts from fresh
# data. Options (environment): MPM=event|prefork, RMSYNC_DEMO_CYCLE (sync cycle, default 30 s),
# RMSYNC_DEMO_MASTER=locked (leave SYNC_MASTER locked and inactive, like a fresh install),
# RMSYNC_DEMO_ACTIVE=0 (do not switch Sync Active on for the demo representatives),
# RMSYNC_DEMO_DIR (instead of ./demo-run; the tests use a temp dir), RMSYNC_DEMO_NOBUILD=1,
# RMSYNC_DEMO_AUTH=certificate (certificate credentials instead of the client secret: a
# self-signed certificate + key is made, registered on the simulator's app (which then has no
# secret) and configured with RMSyncGraphClientCertificate).
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
RUN=${RMSYNC_DEMO_DIR:-$TOP/demo-run}
STATE=$RUN/state.env
PG_BIN=${RMSYNC_PG_BIN:-/usr/lib/postgresql/15/bin}
APACHE=/usr/sbin/apache2
MODDIR=/usr/lib/apache2/modules
PY=/usr/bin/python3
MPM=${MPM:-event}
CYCLE=${RMSYNC_DEMO_CYCLE:-30}
AUTH=${RMSYNC_DEMO_AUTH:-secret}
case "$AUTH" in secret|certificate) ;; *) echo "run-demo: RMSYNC_DEMO_AUTH must be secret or certificate" >&2; exit 2 ;; esac
TENANT=rmsync-demo-tenant CLIENT_ID=rmsync-demo-client CLIENT_SECRET=demo-secret-change-me

say() { printf 'run-demo: %s\n' "$*"; }
die() { printf 'run-demo: %s\n' "$*" >&2; exit 1; }
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
is_root() { [ "$(id -u)" = 0 ]; }
as_pg() { if is_root; then runuser -u postgres -- "$@"; else "$@"; fi; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
apache_env() {   # a clean environment (Debian's APACHE_* variables are not wanted here)
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C ${RMSYNC_APACHE_PRELOAD:+LD_PRELOAD=$RMSYNC_APACHE_PRELOAD} \
    ${ASAN_OPTIONS:+ASAN_OPTIONS=$ASAN_OPTIONS} "$@"
}

stop_all() {
  [ -f "$STATE" ] || { say "nothing to stop (no $STATE)"; return 0; }
  # shellcheck disable=SC1090
  . "$STATE"
  if [ -n "${APACHE_CONF:-}" ] && [ -f "${APACHE_PIDFILE:-/nonexistent}" ]; then
    local ap; ap=$(cat "$APACHE_PIDFILE" 2>/dev/null || true)
    if alive "$ap"; then
      apache_env "$APACHE" -d "$APACHE_DIR" -f "$APACHE_CONF" -k stop || true
      for _ in $(seq 1 100); do alive "$ap" || break; sleep 0.1; done
      say "Apache stopped"
    fi
  fi
  if alive "${GRAPHSIM_PID:-}"; then
    kill "$GRAPHSIM_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do alive "$GRAPHSIM_PID" || break; sleep 0.1; done
    alive "$GRAPHSIM_PID" && kill -9 "$GRAPHSIM_PID" 2>/dev/null || true
    say "Graph simulator stopped"
  fi
  if [ -n "${PG_DATA:-}" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
    say "PostgreSQL stopped"
  fi
  rm -f "$STATE" "$RUN/demo.env"
}

show_status() {
  [ -f "$STATE" ] || { say "not running"; return 0; }
  # shellcheck disable=SC1090
  . "$STATE"
  alive "$(cat "$APACHE_PIDFILE" 2>/dev/null)" && say "Apache: up ($ADMIN_URL)" || say "Apache: down"
  alive "${GRAPHSIM_PID:-}" && say "Graph simulator: up (pid $GRAPHSIM_PID)" || say "Graph simulator: not running"
  [ -f "$PG_DATA/postmaster.pid" ] && say "PostgreSQL: up (port $PG_PORT)" || say "PostgreSQL: down"
  curl -fsS "${ADMIN_URL}status.json" 2>/dev/null | "$PY" -c 'import json,sys; s=json.load(sys.stdin); r=s["runner"]; print("run-demo: runner pid %s %s, heartbeat age %.1fs, cycles %s" % (r["pid"], r["state"], r["heartbeat_age_s"] or -1, r["cycles"]))' || true
}

case "${1:-start}" in
  stop) stop_all; exit 0 ;;
  status) show_status; exit 0 ;;
  start) ;;
  -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
  *) die "unknown command '$1' (start | stop | status)" ;;
esac

stop_all >/dev/null 2>&1 || true
cd "$TOP"
if [ "${RMSYNC_DEMO_NOBUILD:-}" = 1 ] && [ -f build/mod_rmsync.so ]; then
  say "using the existing build/mod_rmsync.so"
else
  ./apxs-build.sh --deps --test-deps
fi
[ -x "$PG_BIN/initdb" ] || die "PostgreSQL binaries not found in $PG_BIN (apt-get install postgresql)"

# a cluster left running by an interrupted start
if [ -f "$RUN/pg/data/postmaster.pid" ]; then
  as_pg "$PG_BIN/pg_ctl" -D "$RUN/pg/data" -m fast -w stop >/dev/null 2>&1 || true
fi
rm -rf "$RUN"
mkdir -p "$RUN"
chmod 755 "$RUN"
# The cluster owner (postgres when root) and Apache's User (www-data) must reach ./demo-run/.
# If the checkout is in a private directory (e.g. /root), keep the live files in /tmp instead.
LIVE=$RUN
if is_root && ! { runuser -u postgres -- test -x "$RUN" && runuser -u www-data -- test -x "$RUN"; }; then
  LIVE=$(mktemp -d /tmp/rmsync-demo-XXXXXX)
  chmod 755 "$LIVE"
  say "checkout not reachable by postgres/www-data: live files in $LIVE (linked from demo-run/)"
fi
: >"$STATE"
mkdir -p "$LIVE/pg" "$LIVE/graphsim" "$LIVE/apache/logs"
chmod 755 "$LIVE/pg" "$LIVE/graphsim" "$LIVE/apache"
if [ "$LIVE" != "$RUN" ]; then
  for d in pg graphsim apache; do ln -s "$LIVE/$d" "$RUN/$d"; done
fi

# ------------------------------------------------------------------ PostgreSQL
PG_DATA=$LIVE/pg/data PG_SOCK=$LIVE/pg/sock PG_PORT=$(free_port)
DB=rmsync APP_ROLE=rmsync APP_PW=$("$PY" -c 'import secrets; print("demo-" + secrets.token_hex(8))')
mkdir -p "$PG_SOCK"
is_root && chown -R postgres:postgres "$LIVE/pg"
as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C -N >"$LIVE/pg/initdb.log" 2>&1 \
  || die "initdb failed, see $LIVE/pg/initdb.log"
cat >>"$PG_DATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
timezone = 'UTC'
password_encryption = 'scram-sha-256'
EOF
printf 'local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n' >"$PG_DATA/pg_hba.conf"
printf 'PG_DATA=%q\nPG_PORT=%q\n' "$PG_DATA" "$PG_PORT" >>"$STATE"
as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$LIVE/pg/postgres.log" -w -t 30 start >/dev/null \
  || die "PostgreSQL did not start, see $LIVE/pg/postgres.log"
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE ROLE $APP_ROLE LOGIN PASSWORD '$APP_PW'" -c "CREATE DATABASE $DB"
MASTER_OPTS=(--unlock-master --activate-master)
[ "${RMSYNC_DEMO_MASTER:-}" = locked ] && MASTER_OPTS=()
PGOPTIONS="-c client_min_messages=warning" sql/install.sh --demo --app-role "$APP_ROLE" "${MASTER_OPTS[@]}" \
  "host=$PG_SOCK port=$PG_PORT dbname=$DB user=postgres" >/dev/null
DB_CONNINFO="host=127.0.0.1 port=$PG_PORT dbname=$DB user=$APP_ROLE password=$APP_PW"
say "PostgreSQL on 127.0.0.1:$PG_PORT (database $DB, demo data loaded)"

# ------------------------------------------------------------------ Graph simulator
GRAPHSIM_PID= GRAPH_URL= AUTHORITY_URL= CA_FILE= SIM_URL=
if [ -f tests/graphsim/graphsim.py ]; then
  READY=$LIVE/graphsim/ready.json
  setsid "$PY" tests/graphsim/graphsim.py --host 127.0.0.1 --port 0 --state-dir "$LIVE/graphsim" \
    --seed tests/graphsim/demo-seed.json --ready-file "$READY" \
    --config '{"allow_http_notification_urls": true}' >"$LIVE/graphsim/graphsim.log" 2>&1 </dev/null &
  for _ in $(seq 1 200); do [ -s "$READY" ] && break; sleep 0.1; done
  printf 'GRAPHSIM_PID=%q\n' "$!" >>"$STATE"
  [ -s "$READY" ] || die "the Graph simulator did not start, see $LIVE/graphsim/graphsim.log"
  eval "$("$PY" - "$READY" <<'EOF'
import json, shlex, sys
r = json.load(open(sys.argv[1]))
for k, v in (("GRAPHSIM_PID", r["pid"]), ("SIM_URL", r["base_url"]), ("GRAPH_URL", r["graph_url"]),
             ("AUTHORITY_URL", r["authority_url"]), ("CA_FILE", r["ca_file"])):
    print(f"{k}={shlex.quote(str(v))}")
EOF
)"
  chmod 644 "$CA_FILE"
  say "Graph simulator at $SIM_URL (tenant $TENANT, client $CLIENT_ID)"
else
  say "tests/graphsim/graphsim.py not found: starting without the Graph simulator"
fi

# ------------------------------------------------------------------ Apache
A=$LIVE/apache HTTP_PORT=$(free_port)
APACHE_DIR=$A APACHE_CONF=$A/httpd.conf APACHE_PIDFILE=$A/httpd.pid
ADMIN_URL="http://127.0.0.1:$HTTP_PORT/rmsync/"
printf '%s\n' "$CLIENT_SECRET" >"$A/client-secret"
chmod 600 "$A/client-secret"
CRED="RMSyncGraphClientSecretFile $A/client-secret"
if [ "$AUTH" = certificate ] && [ -n "$GRAPH_URL" ]; then
  # What an admin does with Entra ID: make a key pair and certificate, upload the certificate
  # to the app registration (here: the simulator's control API), keep the key 0600.
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 365 -subj "/CN=mod_rmsync demo" \
    -keyout "$A/client-key.pem" -out "$A/client-cert.pem" 2>/dev/null
  chmod 600 "$A/client-key.pem"
  "$PY" - "$LIVE/graphsim/ready.json" "$A/client-cert.pem" "$TENANT" "$CLIENT_ID" <<'EOF'
import sys
sys.path.insert(0, "tests/graphsim")
from simclient import GraphSim
ready, cert, tenant, client = sys.argv[1:]
sim = GraphSim.attach(ready)
apps = sim.ctl("GET", "apps")
apps = apps.get("value", apps) if isinstance(apps, dict) else apps
app = [a for a in apps if a["client_id"] == client][0]
sim.seed({"apps": [{"tenant": tenant, "client_id": client, "certificate_file": cert,
                    "permissions": app["permissions"]}]})
EOF
  CRED="RMSyncGraphClientCertificate $A/client-cert.pem $A/client-key.pem"
  CLIENT_SECRET=
  say "certificate credentials: $A/client-cert.pem registered on the simulator's app (no secret)"
fi
is_root && chown www-data:www-data "$A/logs"
{
  echo "ServerRoot $A"
  for m in "mpm_$MPM" authz_core authz_host mime reqtimeout; do echo "LoadModule ${m}_module $MODDIR/mod_$m.so"; done
  echo "LoadModule rmsync_module $TOP/build/mod_rmsync.so"
  echo "Listen 127.0.0.1:$HTTP_PORT"
  echo "ServerName 127.0.0.1"
  echo "PidFile $APACHE_PIDFILE"
  echo "DefaultRuntimeDir $A"
  echo "ErrorLog $A/logs/error.log"
  echo "LogLevel info rmsync:debug"
  echo "TypesConfig /etc/mime.types"
  # slow clients: headers within 5 s, bodies at 500 bytes/s at least (README, Deployment)
  echo "RequestReadTimeout handshake=5 header=5-10,MinRate=500 body=5,MinRate=500"
  is_root && printf 'User www-data\nGroup www-data\n'
  echo
  echo "RMSyncDatabase \"$DB_CONNINFO\""
  echo "RMSyncSyncCycle $CYCLE"
  echo "RMSyncLogFile $A/logs/rmsync-sync.log"
  echo "RMSyncLogLevel debug"
  if [ -n "$GRAPH_URL" ]; then
    echo "RMSyncGraphTenant $TENANT"
    echo "RMSyncGraphClientId $CLIENT_ID"
    echo "$CRED"
    echo "RMSyncGraphAuthorityURL $AUTHORITY_URL"
    echo "RMSyncGraphURL $GRAPH_URL"
    echo "RMSyncCAFile $CA_FILE"
    echo "RMSyncNotificationURL http://127.0.0.1:$HTTP_PORT/rmsync/notify"
    echo "RMSyncLifecycleURL http://127.0.0.1:$HTTP_PORT/rmsync/lifecycle"
  fi
  cat <<'EOF'

<Location /rmsync/>
    SetHandler rmsync-admin
    Require local
</Location>
<Location /rmsync/notify>
    SetHandler rmsync-webhook
    Require all granted
</Location>
<Location /rmsync/lifecycle>
    SetHandler rmsync-webhook
    Require all granted
</Location>
EOF
} >"$APACHE_CONF"
[ -f /etc/mime.types ] || sed -i 's|^TypesConfig .*|TypesConfig /dev/null|' "$APACHE_CONF"

cat >>"$STATE" <<EOF
APACHE_DIR=$(printf %q "$APACHE_DIR")
APACHE_CONF=$(printf %q "$APACHE_CONF")
APACHE_PIDFILE=$(printf %q "$APACHE_PIDFILE")
ADMIN_URL=$(printf %q "$ADMIN_URL")
EOF

apache_env "$APACHE" -d "$A" -f "$APACHE_CONF" -k start || die "Apache did not start, see $A/logs/error.log"
ok=0
for _ in $(seq 1 100); do
  if curl -fsS "${ADMIN_URL}status.json" >/dev/null 2>&1; then ok=1; break; fi
  sleep 0.1
done
[ "$ok" = 1 ] || die "Apache does not answer on $ADMIN_URL, see $A/logs/error.log"

# ------------------------------------------------------------------ Sync Active
# Switch the sync on for the demo representatives through the admin JSON API (what an admin
# does on the configuration page), unless RMSYNC_DEMO_ACTIVE=0 (then it is left to you).
ACTIVE_REPS=
if [ -n "$GRAPH_URL" ] && [ "${RMSYNC_DEMO_ACTIVE:-1}" = 1 ]; then
  for _ in $(seq 1 50); do
    tok=$(curl -fsS "${ADMIN_URL}config.json" 2>/dev/null | "$PY" -c 'import json,sys; print(json.load(sys.stdin).get("csrf_token",""))' 2>/dev/null || true)
    [ -n "$tok" ] && break
    sleep 0.2
  done
  for rep in ALICE BOB CAROL; do
    if [ -n "${tok:-}" ] && curl -fsS -o /dev/null -H "Origin: http://127.0.0.1:$HTTP_PORT" \
         --data-urlencode "token=$tok" -d "action=set_active&rep=$rep&active=1&format=json" \
         "${ADMIN_URL}config" 2>/dev/null; then
      ACTIVE_REPS="$ACTIVE_REPS $rep"
    fi
  done
  [ -n "$ACTIVE_REPS" ] && say "Sync Active set for:$ACTIVE_REPS" \
    || say "could not set Sync Active through ${ADMIN_URL}config (do it on the page)"
fi

# ------------------------------------------------------------------ demo.env
q() { printf 'export %s=%q\n' "$1" "$2"; }
{
  echo "# mod_rmsync demo ($(date -u +%Y-%m-%dT%H:%M:%SZ)); source me: . demo-run/demo.env"
  q RMSYNC_DEMO_DIR "$RUN"
  q RMSYNC_HTTP_PORT "$HTTP_PORT"
  q RMSYNC_BASE_URL "http://127.0.0.1:$HTTP_PORT"
  q RMSYNC_ADMIN_URL "$ADMIN_URL"
  q RMSYNC_STATUS_URL "${ADMIN_URL}status.json"
  q RMSYNC_NOTIFY_URL "http://127.0.0.1:$HTTP_PORT/rmsync/notify"
  q RMSYNC_LIFECYCLE_URL "http://127.0.0.1:$HTTP_PORT/rmsync/lifecycle"
  q RMSYNC_APACHE_CONF "$APACHE_CONF"
  q RMSYNC_ERROR_LOG "$A/logs/error.log"
  q RMSYNC_SYNC_LOG "$A/logs/rmsync-sync.log"
  q RMSYNC_DB_PORT "$PG_PORT"
  q RMSYNC_DB_CONNINFO "$DB_CONNINFO"
  q RMSYNC_DB_SUPER_CONNINFO "host=$PG_SOCK port=$PG_PORT dbname=$DB user=postgres"
  q RMSYNC_DB_SOCKET_DIR "$PG_SOCK"
  q RMSYNC_GRAPHSIM_URL "$SIM_URL"
  q RMSYNC_GRAPHSIM_CONTROL_URL "${SIM_URL:+$SIM_URL/_sim}"
  q RMSYNC_GRAPHSIM_READY_FILE "${SIM_URL:+$LIVE/graphsim/ready.json}"
  q RMSYNC_GRAPH_URL "$GRAPH_URL"
  q RMSYNC_AUTHORITY_URL "$AUTHORITY_URL"
  q RMSYNC_CA_FILE "$CA_FILE"
  q RMSYNC_TENANT "$TENANT"
  q RMSYNC_CLIENT_ID "$CLIENT_ID"
  q RMSYNC_CLIENT_SECRET "$CLIENT_SECRET"
  q RMSYNC_DEMO_AUTH "$AUTH"
  q RMSYNC_DEMO_MAILBOXES "alice@demo.rmsync.test bob@demo.rmsync.test carol@demo.rmsync.test"
  q RMSYNC_DEMO_ACTIVE_REPS "${ACTIVE_REPS# }"
} >"$RUN/demo.env"

say "Apache ($MPM MPM) on 127.0.0.1:$HTTP_PORT with mod_rmsync"
say ""
say "  admin:   ${ADMIN_URL}config   (log: ${ADMIN_URL}log, status: ${ADMIN_URL}status)"
say "  JSON:    ${ADMIN_URL}status.json, config.json, log.json; metrics: ${ADMIN_URL}metrics"
say "  Outlook: ${SIM_URL:-(no simulator)}${SIM_URL:+ (control API $SIM_URL/_sim, CA $CA_FILE)}"
say "  env:     . demo-run/demo.env"
say "  stop:    tests/run-demo.sh stop"
