#!/usr/bin/env bash
# mod_rmsync benchmarks: ONE command, loopback only, bounded in time, stops by itself.
#
#   bench/run.sh            every benchmark (under 20 minutes on 2 cores), then writes
#                           docs/PERFORMANCE.md (the results table, regenerated)
#   bench/run.sh --quick    small sizes, one run each (a few minutes), for development;
#                           writes bench/out/PERFORMANCE-quick.md unless --out is given
#   bench/run.sh [--only intake,memory,lag,initial,scale,lagscale,attack,adminlog,deletion]
#                [--out FILE]
#
# Installs what it needs with apt-get when missing (wrk; pgbench from postgresql-15 /
# postgresql-client-common), builds the module and bench/*.c tools (./apxs-build.sh), then runs
# bench/bench.py with Debian's python3. Raw figures: bench/out/results.json.
# Not part of tests/run-tests.sh: performance is measured here, not asserted in tests.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
for a in "$@"; do [ "$a" = --quick ] && QUICK=1; done
case " $* " in *" --out "*) OUTARG=() ;; *) if [ "$QUICK" = 1 ]; then OUTARG=(--out bench/out/PERFORMANCE-quick.md); else OUTARG=(); fi ;; esac

need=""
command -v wrk >/dev/null || need="$need wrk"
command -v pgbench >/dev/null || need="$need postgresql-client-common postgresql-15"
if [ -n "$need" ]; then
  echo "bench/run.sh: installing:$need"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
fi

./apxs-build.sh --deps --test-deps --tools >/dev/null
mkdir -p bench/out
# hard bound: the full run takes ~16 minutes (the 10,000-representative section ~9 of them);
# never let it hang a CI job, never beyond 20 minutes
LIMIT=$([ "$QUICK" = 1 ] && echo 900 || echo 1170)
exec timeout --signal=TERM --kill-after=30 "$LIMIT" /usr/bin/python3 bench/bench.py "$@" "${OUTARG[@]}"
