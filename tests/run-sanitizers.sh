#!/usr/bin/env bash
# The sanitizer pass (CI): build everything with AddressSanitizer + UBSan (apxs-build.sh --asan:
# undefined behaviour aborts), run the C unit tests on it, then the webhook and engine pytest
# modules with the ASan runtime preloaded into Apache (the README's ASan recipe). Fails on any
# failed test and on any ASan/UBSan report: report files under the log directory, "runtime
# error:" lines (GCC's combined runtime writes UBSan reports to stderr: the error log, which the
# harness checks per test, or this script's output for the unit tests).
#
#   tests/run-sanitizers.sh [pytest args...]
#
# Environment: RMSYNC_SAN_MODULES (default: the modules below), RMSYNC_SAN_DIR (report
# directory, default a fresh temporary one). Takes about 3-4 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
MODULES=${RMSYNC_SAN_MODULES:-"tests/test_crash_detect.py tests/test_webhook.py tests/test_webhook_intake.py tests/test_engine_apply.py"}
SAN_DIR=${RMSYNC_SAN_DIR:-$(mktemp -d /tmp/rmsync-san.XXXXXX)}
mkdir -p "$SAN_DIR"
rm -f "$SAN_DIR"/asan.* "$SAN_DIR"/ubsan.*
# use_sigaltstack=0: see README (a libsanitizer false report at thread exit, GCC 12).
# Leak detection: on for the unit tests (short-lived, they free their pools), off for Apache.
export ASAN_OPTIONS="use_sigaltstack=0:log_path=$SAN_DIR/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$SAN_DIR/ubsan"
out=$SAN_DIR/build.out
start=$(date +%s)

rc=0
./apxs-build.sh --werror --asan --unit --tools 2>&1 | tee "$out" || rc=1
if grep -q 'runtime error:' "$out"; then
  echo "run-sanitizers.sh: UBSan reports in the unit tests:" >&2; grep 'runtime error:' "$out" >&2; rc=1
fi

if [ "$rc" = 0 ]; then
  CC_USED=${CC:-gcc}
  RMSYNC_APACHE_PRELOAD=$("$CC_USED" -print-file-name=libasan.so)
  [ -e "$RMSYNC_APACHE_PRELOAD" ] || { echo "run-sanitizers.sh: no libasan.so for $CC_USED" >&2; exit 1; }
  export RMSYNC_APACHE_PRELOAD
  ASAN_OPTIONS="detect_leaks=0:$ASAN_OPTIONS"
  # shellcheck disable=SC2086
  env PATH="/usr/sbin:/usr/bin:/sbin:/bin" /usr/bin/pytest-3 -q -p no:cacheprovider $MODULES "$@" || rc=1
fi

reports=$(ls "$SAN_DIR"/asan.* "$SAN_DIR"/ubsan.* 2>/dev/null || true)
if [ -n "$reports" ]; then
  echo "run-sanitizers.sh: sanitizer reports:" >&2
  for f in $reports; do echo "== $f" >&2; head -20 "$f" >&2; done
  rc=1
fi
echo "run-sanitizers.sh: $([ "$rc" = 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - start ))s (reports: $SAN_DIR)"
exit "$rc"
