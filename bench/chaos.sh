#!/usr/bin/env bash
# mod_rmsync chaos scenarios: ONE command, loopback only, bounded in time, stops by itself.
#
#   bench/chaos.sh                 the 8 scenarios (about 13-16 minutes on 2 cores), then
#                                  rewrites the chaos section of docs/RELIABILITY.md
#   bench/chaos.sh --quick         small loads (a few minutes), writes bench/out/RELIABILITY-quick.md
#   bench/chaos.sh --only graceful,nodes [--out FILE]
#                                  replaces only those scenarios' rows and detail lines
#                                  (--merge: rewrites the section with the other scenarios'
#                                  figures from bench/out/chaos.json)
#
# Not in CI. Builds the module when missing (./apxs-build.sh); raw figures in
# bench/out/chaos.json. Exits non-zero when a scenario lost or duplicated anything (or sent
# more than 4 requests at once to one mailbox).
set -euo pipefail
cd "$(dirname "$0")/.."
ARGS=("$@")
case " $* " in
  *" --out "*) ;;
  *" --quick "*) ARGS+=(--out bench/out/RELIABILITY-quick.md) ;;
esac
[ -e build/mod_rmsync.so ] || ./apxs-build.sh >/dev/null
mkdir -p bench/out
# a hard bound on the whole run: every scenario also has its own timeouts
exec timeout --signal=TERM --kill-after=30 1500 env PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  /usr/bin/python3 bench/chaos.py "${ARGS[@]}"
