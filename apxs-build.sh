#!/usr/bin/env bash
# Build mod_rmsync with apxs against Debian's apache2-dev, libcurl, cJSON and libpq.
#
#   ./apxs-build.sh [--deps] [--test-deps] [--werror] [--asan] [--unit] [--tools] [--install] [--clean]
#
#   --deps       first install the Debian packages the build needs (apt-get; sudo when not root)
#   --test-deps  first install the packages the tests and the demo need (Apache, PostgreSQL,
#                pytest, chromium...)
#   --werror     warnings are errors (also RMSYNC_WERROR=1); tests/run-tests.sh and .ci/run use it
#   --asan       build with AddressSanitizer and UBSan (module, core library, unit tests and
#                tools; undefined behaviour aborts: -fno-sanitize-recover=undefined)
#   --unit       also build and run the C unit tests in tests/unit (Check)
#   --tools      also build the test and benchmark drivers (tests/tools/*.c, bench/*.c)
#   --install    install the module into $DESTDIR$(apxs -q LIBEXECDIR) and the a2enmod files
#                conf/rmsync.{load,conf} into $DESTDIR/etc/apache2/mods-available
#   --clean      remove build/ first
#
# Environment: CC (default gcc; clang works too), CFLAGS, CPPFLAGS, LDFLAGS (appended after the
# project's flags), DESTDIR (for --install), APXS (default apxs), RMSYNC_WERROR=1.
# Output: build/librmsync_core.a (the APR-only sync core), build/mod_rmsync.so,
#         build/unit/test_* (unit test binaries), build/tools/* (with --tools).
# Files a running Apache may have mapped (build/mod_rmsync.so, the installed module) are
# replaced by rename, never rewritten in place.
set -euo pipefail
cd "$(dirname "$0")"
TOP=$PWD
DEPS=0 TDEPS=0 WERROR=${RMSYNC_WERROR:-0} ASAN=0 UNIT=0 TOOLS=0 INSTALL=0 CLEAN=0
for a in "$@"; do
  case "$a" in
    --deps) DEPS=1 ;; --test-deps) TDEPS=1 ;; --werror) WERROR=1 ;; --asan) ASAN=1 ;;
    --unit) UNIT=1 ;; --tools) TOOLS=1 ;; --install) INSTALL=1 ;; --clean) CLEAN=1 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "apxs-build.sh: unknown option '$a' (try --help)" >&2; exit 2 ;;
  esac
done
CC=${CC:-gcc}

BUILD_PKGS="build-essential pkg-config apache2-dev libcurl4-openssl-dev libcjson-dev libpq-dev libssl-dev check"
case "$CC" in clang*) BUILD_PKGS="$BUILD_PKGS clang" ;; esac
TEST_PKGS="apache2 apache2-utils postgresql postgresql-client openssl curl ca-certificates procps
           python3 python3-pytest python3-requests valgrind chromium chromium-driver python3-selenium"
want=""
[ "$DEPS" = 1 ] && want="$want $BUILD_PKGS"
[ "$TDEPS" = 1 ] && want="$want $TEST_PKGS"
if [ -n "$want" ]; then
  missing=$(for p in $want; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || echo "$p"; done)
  if [ -n "$missing" ]; then
    echo "apxs-build.sh: installing:" $missing
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
fi

APXS=${APXS:-apxs}
command -v "$APXS" >/dev/null || { echo "apxs-build.sh: apxs not found (install apache2-dev, or run with --deps)" >&2; exit 1; }
command -v "$CC" >/dev/null || { echo "apxs-build.sh: compiler '$CC' not found" >&2; exit 1; }

# The sync core must stay free of httpd: it is compiled without httpd's include path anyway,
# but say clearly which file broke the rule.
httpd_inc=$(grep -rnE '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"](httpd\.h|http_[^>"]*\.h|ap_[^>"]*\.h|mod_[^>"]*\.h|util_[^>"]*\.h)[>"]' \
            mod_rmsync/core || true)
if [ -n "$httpd_inc" ]; then
  echo "apxs-build.sh: mod_rmsync/core/ must not include httpd headers (the core is httpd-free;" \
       "move the code to the glue in mod_rmsync/rmsync_*.c):" >&2
  echo "$httpd_inc" >&2
  exit 1
fi

[ "$CLEAN" = 1 ] && rm -rf build mod_rmsync/*.lo mod_rmsync/*.slo mod_rmsync/*.o mod_rmsync/.libs
mkdir -p build/core build/unit

PKG_CFLAGS=$(pkg-config --cflags libcurl libcjson libpq libcrypto)
PKG_LIBS=$(pkg-config --libs libcurl libcjson libpq libcrypto)
APR_CFLAGS="$(apr-1-config --cppflags --includes) $(apu-1-config --includes)"
APR_LIBS="$(apr-1-config --link-ld --libs) $(apu-1-config --link-ld --libs)"
WARN="-Wall -Wextra -Wshadow -Wmissing-prototypes -Wstrict-prototypes -Wformat=2
      -Wformat-security -Wvla -Wpointer-arith -Wcast-align -Wundef -Wno-unused-parameter"
[ "$WERROR" = 1 ] && WARN="$WARN -Werror"
OPT="-O2 -g -fPIC -D_FORTIFY_SOURCE=2 -fstack-protector-strong"
SAN=""
if [ "$ASAN" = 1 ]; then OPT="-O1 -g -fPIC -fno-omit-frame-pointer"; SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"; fi
# the packager's flags come last so they win
USER_CFLAGS="${CPPFLAGS:-} ${CFLAGS:-}"
USER_LDFLAGS="${LDFLAGS:-}"

# Objects built with other flags (another compiler, a previous --asan build, warnings that were
# not errors then) must not be mixed in.
FLAGSIG="$CC $OPT $SAN $WARN $USER_CFLAGS $USER_LDFLAGS"
if [ "$(cat build/.flags 2>/dev/null)" != "$(printf '%s\n' "$FLAGSIG")" ]; then
  rm -rf build/core/*.o build/unit/* build/tools/* mod_rmsync/*.lo mod_rmsync/*.slo mod_rmsync/*.o mod_rmsync/.libs
  printf '%s\n' "$FLAGSIG" > build/.flags
fi

# Replace dst by a copy of src through a temp name in dst's directory and rename(2): a process
# that has the old file mapped (a running Apache) keeps its inode; cp over it would rewrite the
# mapped pages in place and crash it.
replace_file() {  # src dst mode
  local src=$1 dst=$2 mode=$3 tmp
  tmp=$(mktemp "$(dirname "$dst")/.$(basename "$dst").XXXXXX")
  if ! install -m "$mode" "$src" "$tmp" || ! mv -f "$tmp" "$dst"; then
    rm -f "$tmp"; return 1
  fi
}

# 1. The sync core: APR, libcurl, cJSON and libpq, never httpd headers.
objs=()
for src in mod_rmsync/core/*.c; do
  [ -e "$src" ] || continue
  obj=build/core/$(basename "${src%.c}").o
  if [ ! -e "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find include -newer "$obj" -name '*.h' | head -1)" ] || [ "$0" -nt "$obj" ]; then
    # shellcheck disable=SC2086
    $CC $OPT $SAN $WARN -Iinclude $APR_CFLAGS $PKG_CFLAGS $USER_CFLAGS -c "$src" -o "$obj"
  fi
  objs+=("$obj")
done
rm -f build/librmsync_core.a
ar rcs build/librmsync_core.a "${objs[@]}"

# 2. The module: httpd glue + the core library. -S CC: the glue is compiled (and libtool links)
# with the same compiler as the core.
glue=(mod_rmsync/*.c)
# Link flags go after the objects, where apxs hands them to libtool verbatim: libtool takes
# -Wl,/-L/-l itself and drops other compiler-driver flags unless wrapped in -XCClinker.
ltlink=()
for w in $SAN $USER_LDFLAGS; do
  case "$w" in -Wl,*|-L*|-l*) ltlink+=("$w") ;; *) ltlink+=(-XCClinker "$w") ;; esac
done
# apxs compiles with the CC it is given, but libtool links with the compiler it was configured
# with (x86_64-linux-gnu-gcc, looked up in PATH): for another CC, a PATH entry of that name that
# runs CC, for this apxs call only.
APXS_PATH=$PATH
lt=$(apr-1-config --apr-libtool); lt=${lt##* }
lt_cc=$(sed -n 's/^CC="\(.*\)"$/\1/p' "$lt" | head -1)
rm -rf build/ltcc
if [ -n "$lt_cc" ] && [ "$(readlink -f "$(command -v "$CC")")" != "$(readlink -f "$(command -v "$lt_cc" || echo none)")" ]; then
  mkdir -p build/ltcc
  printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v "$CC")" > "build/ltcc/$lt_cc"
  chmod +x "build/ltcc/$lt_cc"
  APXS_PATH=$TOP/build/ltcc:$PATH
fi
# shellcheck disable=SC2046,SC2086
PATH=$APXS_PATH "$APXS" -S CC="$CC" -c -o build/mod_rmsync.la -n rmsync \
  -Wc,-g -Wc,-O2 $(for w in $WARN $SAN $USER_CFLAGS; do printf -- '-Wc,%s ' "$w"; done) \
  -Iinclude $PKG_CFLAGS "${glue[@]}" build/librmsync_core.a $PKG_LIBS \
  "${ltlink[@]}" >build/apxs.log 2>&1 \
  || { cat build/apxs.log >&2; exit 1; }
# warnings that are not errors (no --werror) are still shown
grep -E 'warning:' -A3 build/apxs.log >&2 || true
replace_file build/.libs/mod_rmsync.so build/mod_rmsync.so 755
echo "apxs-build.sh: built $TOP/build/mod_rmsync.so"

# 3. Unit tests (Check) against the core library.
if [ "$UNIT" = 1 ]; then
  CHECK_CFLAGS=$(pkg-config --cflags check) CHECK_LIBS=$(pkg-config --libs check)
  rc=0
  for t in tests/unit/test_*.c; do
    [ -e "$t" ] || continue
    bin=build/unit/$(basename "${t%.c}")
    # shellcheck disable=SC2086
    $CC $OPT $SAN $WARN -Wno-missing-prototypes -Iinclude $APR_CFLAGS $PKG_CFLAGS $CHECK_CFLAGS $USER_CFLAGS \
      "$t" build/librmsync_core.a $PKG_LIBS $APR_LIBS $CHECK_LIBS $USER_LDFLAGS -o "$bin"
    CK_FORK=yes "$bin" || rc=1
  done
  [ "$rc" = 0 ] || { echo "apxs-build.sh: unit tests failed" >&2; exit 1; }
fi

# 4. Test and benchmark tools (tests/tools/*.c, bench/*.c): C drivers that link the core library.
if [ "$TOOLS" = 1 ]; then
  mkdir -p build/tools
  for t in tests/tools/*.c bench/*.c; do
    [ -e "$t" ] || continue
    bin=build/tools/$(basename "${t%.c}")
    # shellcheck disable=SC2086
    $CC $OPT $SAN $WARN -Wno-missing-prototypes -Iinclude $APR_CFLAGS $PKG_CFLAGS $USER_CFLAGS \
      "$t" build/librmsync_core.a $PKG_LIBS $APR_LIBS -lpthread $USER_LDFLAGS -o "$bin.tmp"
    mv -f "$bin.tmp" "$bin"   # a test may be running the old binary
  done
fi

# 5. Install (DESTDIR-aware; apxs -i would not honour DESTDIR). Both files are renamed into
# place so a running Apache keeps the module it mapped until it restarts.
if [ "$INSTALL" = 1 ]; then
  DESTDIR=${DESTDIR:-}
  libexec=$DESTDIR$("$APXS" -q LIBEXECDIR)
  install -d "$libexec"
  replace_file build/mod_rmsync.so "$libexec/mod_rmsync.so" 644
  echo "apxs-build.sh: installed $libexec/mod_rmsync.so"
  mods=$DESTDIR/etc/apache2/mods-available
  if [ -n "$DESTDIR" ] || [ -d /etc/apache2/mods-available ]; then
    install -d "$mods"
    for f in rmsync.load rmsync.conf; do replace_file "conf/$f" "$mods/$f" 644; done
    echo "apxs-build.sh: installed $mods/rmsync.{load,conf}"
    [ -z "$DESTDIR" ] && echo "apxs-build.sh: enable with: a2enmod rmsync && systemctl reload apache2"
  fi
fi
exit 0
