#!/usr/bin/env bash
# Build mod_rmsync (installing the Debian build/test packages if missing), run the C unit tests,
# then the whole pytest suite (integration tests, schema tests, the Graph simulator's tests).
#
#   tests/run-tests.sh [pytest args...]     e.g. tests/run-tests.sh -k foundation -x
#   tests/run-tests.sh tests/test_webhook.py  only the named test files
#
# Environment: MPM=event|prefork (default event, where a test does not choose itself),
#              RMSYNC_BUILD_FLAGS (extra apxs-build.sh flags, e.g. --asan).
# Exit status: non-zero when the build, a unit test or any pytest test fails, and also when
# pytest collects no tests at all (its exit status 5).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck disable=SC2086
./apxs-build.sh --deps --test-deps --werror --unit --tools ${RMSYNC_BUILD_FLAGS:-}

# Debian's python with python3-pytest / python3-requests (not a pyenv python on PATH).
PYTEST=/usr/bin/pytest-3
[ -x "$PYTEST" ] || { echo "run-tests.sh: $PYTEST missing (apt-get install python3-pytest)" >&2; exit 1; }

# The whole suite, unless test files or directories are named (then only those).
targets=(tests)
for a in "$@"; do
  case "$a" in -*) ;; *) [ -e "${a%%::*}" ] && targets=() ;; esac
done
rc=0
env PATH="/usr/sbin:/usr/bin:/sbin:/bin" "$PYTEST" -q -p no:cacheprovider "${targets[@]}" "$@" || rc=$?
if [ "$rc" = 5 ]; then
  echo "run-tests.sh: pytest collected no tests" >&2
  exit 1
fi
if [ "$rc" != 0 ]; then
  echo "run-tests.sh: pytest failed (exit $rc)" >&2
  exit "$rc"
fi
echo "run-tests.sh: all tests passed"
