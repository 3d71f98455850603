#!/usr/bin/env bash
# Build and run the libFuzzer targets (tests/fuzz/fuzz_*.c) against the sync core.
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]   fuzz each target for SECONDS (default 60) each
#   tests/fuzz/run.sh --replay [TARGET...]    only replay the checked-in corpora (fast; CI)
#   tests/fuzz/run.sh --build                 only build
#   tests/fuzz/run.sh --merge [TARGET...]     fold the inputs found by earlier runs that add
#                                             coverage into the checked-in corpora (-merge=1)
#
# The core is compiled with clang -fsanitize=fuzzer-no-link,address,undefined into build/fuzz/
# (apart from the normal build), the targets with -fsanitize=fuzzer,address,undefined; UBSan
# aborts on the first report (-fno-sanitize-recover). Needs clang and libclang-rt-dev
# (libFuzzer). Corpora: tests/fuzz/corpus/<target>/ (seeds from tests/corpus and the unit
# tests, checked in, read here); new inputs go to build/fuzz/corpus/<target>/, crashes to
# build/fuzz/crashes/. Exit status non-zero on any crash, leak, sanitizer report or timeout.
# Environment: CC (default clang), FUZZ_JOBS (not used: one process per target, in turn),
#              FUZZ_FLAGS (extra libFuzzer flags, e.g. -runs=10000000).
# One line per target goes to stdout and build/fuzz/summary.txt:
#   <target> <executions> <seconds> <corpus files checked-in+new> ok|CRASH
set -euo pipefail
cd "$(dirname "$0")/../.."
TOP=$PWD
MODE=fuzz SECS=60
case "${1:-}" in
  --replay) MODE=replay; shift ;;
  --build) MODE=build; shift ;;
  --merge) MODE=merge; shift ;;
  -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
  [0-9]*) SECS=$1; shift ;;
esac
CC=${CC:-clang}
command -v "$CC" >/dev/null || { echo "fuzz/run.sh: $CC not found (apt-get install clang)" >&2; exit 1; }
# libFuzzer ships apart from clang on Debian (libclang-rt-N-dev, only recommended by clang)
if [ ! -e "$($CC -print-file-name=libclang_rt.fuzzer-x86_64.a)" ] \
   && [ ! -e "$($CC -print-runtime-dir 2>/dev/null)/libclang_rt.fuzzer-x86_64.a" ]; then
  echo "fuzz/run.sh: libFuzzer missing for $CC (apt-get install libclang-rt-14-dev)" >&2; exit 1
fi

OUT=build/fuzz
mkdir -p "$OUT/core" "$OUT/bin" "$OUT/corpus" "$OUT/crashes"
PKG_CFLAGS=$(pkg-config --cflags libcurl libcjson libpq)
PKG_LIBS=$(pkg-config --libs libcurl libcjson libpq)
APR_CFLAGS="$(apr-1-config --cppflags --includes) $(apu-1-config --includes)"
APR_LIBS="$(apr-1-config --link-ld --libs) $(apu-1-config --link-ld --libs)"
OPT="-O1 -g -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
WARN="-Wall -Wextra -Wno-unused-parameter"

# 1. The core library with coverage instrumentation (no libFuzzer main).
objs=()
for src in mod_rmsync/core/*.c; do
  obj=$OUT/core/$(basename "${src%.c}").o
  if [ ! -e "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find include -newer "$obj" -name '*.h' | head -1)" ] || [ "$0" -nt "$obj" ]; then
    # shellcheck disable=SC2086
    $CC $OPT -fsanitize=fuzzer-no-link,address,undefined $WARN -Iinclude $APR_CFLAGS $PKG_CFLAGS \
      -c "$src" -o "$obj"
  fi
  objs+=("$obj")
done
rm -f "$OUT/librmsync_core.a"
ar rcs "$OUT/librmsync_core.a" "${objs[@]}"

# 2. The targets.
all=()
for t in tests/fuzz/fuzz_*.c; do n=$(basename "${t%.c}"); all+=("${n#fuzz_}"); done
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for n in "${targets[@]}"; do
  src=tests/fuzz/fuzz_$n.c bin=$OUT/bin/fuzz_$n
  [ -e "$src" ] || { echo "fuzz/run.sh: no target '$n' (have: ${all[*]})" >&2; exit 2; }
  if [ ! -e "$bin" ] || [ "$src" -nt "$bin" ] || [ "$OUT/librmsync_core.a" -nt "$bin" ] \
     || [ tests/fuzz/fuzz_common.h -nt "$bin" ]; then
    # shellcheck disable=SC2086
    $CC $OPT -fsanitize=fuzzer,address,undefined $WARN -Iinclude $APR_CFLAGS $PKG_CFLAGS \
      "$src" "$OUT/librmsync_core.a" $PKG_LIBS $APR_LIBS -o "$bin"
  fi
done
[ "$MODE" = build ] && { echo "fuzz/run.sh: built ${targets[*]} in $OUT/bin"; exit 0; }

# 3. Replay, merge or fuzz.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
rc=0
[ "$MODE" = fuzz ] && : > "$OUT/summary.txt"
for n in "${targets[@]}"; do
  bin=$OUT/bin/fuzz_$n seeds=tests/fuzz/corpus/$n work=$OUT/corpus/$n log=$OUT/fuzz_$n.log
  mkdir -p "$seeds" "$work"
  case "$MODE" in
  replay)
    files=("$seeds"/*)
    [ -e "${files[0]}" ] || { echo "fuzz/run.sh: $seeds is empty" >&2; rc=1; continue; }
    if "$bin" -timeout=10 "${files[@]}" >"$log" 2>&1; then
      echo "fuzz_$n: replayed ${#files[@]} inputs, ok"
    else
      echo "fuzz_$n: REPLAY FAILED (see $log)" >&2; tail -30 "$log" >&2; rc=1
    fi ;;
  merge)
    "$bin" -merge=1 "$seeds" "$work" >"$log" 2>&1 || { echo "fuzz_$n: merge failed ($log)" >&2; rc=1; }
    echo "fuzz_$n: $(ls "$seeds" | wc -l) inputs in $seeds" ;;
  fuzz)
    start=$(date +%s)
    # shellcheck disable=SC2086
    if "$bin" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
         -print_final_stats=1 -artifact_prefix="$OUT/crashes/$n-" ${FUZZ_FLAGS:-} \
         "$work" "$seeds" >"$log" 2>&1; then res=ok; else res=CRASH; rc=1; fi
    secs=$(( $(date +%s) - start ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    line="fuzz_$n ${execs:-?} ${secs} $(ls "$seeds" | wc -l)+$(ls "$work" | wc -l) $res"
    echo "$line" | tee -a "$OUT/summary.txt"
    [ "$res" = ok ] || { grep -E 'ERROR|runtime error|fuzz assertion|Test unit written' "$log" | head -10 >&2; }
    ;;
  esac
done
[ "$rc" = 0 ] || echo "fuzz/run.sh: failures (logs in $OUT/)" >&2
exit "$rc"
