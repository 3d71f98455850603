#!/usr/bin/env bash
# Build mod_rmsync with apxs against Debian's apache2-dev, libcurl, cJSON and libpq.
#
#   ./apxs-build.sh [--deps] [--asan] [--unit] [--install] [--clean]
#
#   --deps     first install the Debian packages the build, the demo and the tests need (apt-get)
#   --asan     build with AddressSanitizer (module, core library and unit tests)
#   --unit     also build and run the C unit tests in tests/unit (Check)
#   --install  install the module with `apxs -i` and the a2enmod files conf/rmsync.{load,conf}
#   --clean    remove build/ first
#
# Output: build/librmsync_core.a (the APR-only sync core), build/mod_rmsync.so,
#         build/unit/test_* (unit test binaries).
set -euo pipefail
cd "$(dirname "$0")"
TOP=$PWD
DEPS=0 ASAN=0 UNIT=0 INSTALL=0 CLEAN=0
for a in "$@"; do
  case "$a" in
    --deps) DEPS=1 ;; --asan) ASAN=1 ;; --unit) UNIT=1 ;; --install) INSTALL=1 ;; --clean) CLEAN=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "apxs-build.sh: unknown option '$a' (try --help)" >&2; exit 2 ;;
  esac
done

PKGS="build-essential pkg-config apache2 apache2-dev libcurl4-openssl-dev libcjson-dev libpq-dev libssl-dev
      postgresql postgresql-client check openssl curl python3 python3-pytest python3-requests
      valgrind apache2-utils chromium chromium-driver python3-selenium"
if [ "$DEPS" = 1 ]; then
  missing=$(for p in $PKGS; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || echo "$p"; done)
  if [ -n "$missing" ]; then
    echo "apxs-build.sh: installing:" $missing
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
fi

APXS=${APXS:-apxs}
command -v "$APXS" >/dev/null || { echo "apxs-build.sh: apxs not found (install apache2-dev, or run with --deps)" >&2; exit 1; }
[ "$CLEAN" = 1 ] && rm -rf build mod_rmsync/*.lo mod_rmsync/*.slo mod_rmsync/*.o mod_rmsync/.libs
mkdir -p build/core build/unit

PKG_CFLAGS=$(pkg-config --cflags libcurl libcjson libpq libcrypto)
PKG_LIBS=$(pkg-config --libs libcurl libcjson libpq libcrypto)
APR_CFLAGS="$(apr-1-config --cppflags --includes) $(apu-1-config --includes)"
APR_LIBS="$(apr-1-config --link-ld --libs) $(apu-1-config --link-ld --libs)"
WARN="-Wall -Wextra -Werror -Wshadow -Wmissing-prototypes -Wstrict-prototypes -Wformat=2
      -Wformat-security -Wvla -Wpointer-arith -Wcast-align -Wundef -Wno-unused-parameter"
OPT="-O2 -g -fPIC -D_FORTIFY_SOURCE=2 -fstack-protector-strong"
SAN=""
if [ "$ASAN" = 1 ]; then OPT="-O1 -g -fPIC -fno-omit-frame-pointer"; SAN="-fsanitize=address"; fi
CC=${CC:-gcc}

# Objects built with other flags (e.g. a previous --asan build) must not be mixed in.
FLAGSIG="$CC $OPT $SAN"
if [ "$(cat build/.flags 2>/dev/null)" != "$FLAGSIG" ]; then
  rm -rf build/core/*.o build/unit/* build/tools/* mod_rmsync/*.lo mod_rmsync/*.slo mod_rmsync/*.o mod_rmsync/.libs
  printf '%s\n' "$FLAGSIG" > build/.flags
fi

# 1. The sync core: APR, libcurl, cJSON and libpq, never httpd headers.
objs=()
for src in mod_rmsync/core/*.c; do
  [ -e "$src" ] || continue
  obj=build/core/$(basename "${src%.c}").o
  if [ ! -e "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find include -newer "$obj" -name '*.h' | head -1)" ] || [ "$0" -nt "$obj" ]; then
    $CC $OPT $SAN $WARN -Iinclude $APR_CFLAGS $PKG_CFLAGS -c "$src" -o "$obj"
  fi
  objs+=("$obj")
done
rm -f build/librmsync_core.a
ar rcs build/librmsync_core.a "${objs[@]}"

# 2. The module: httpd glue + the core library.
glue=(mod_rmsync/*.c)
"$APXS" -c -o build/mod_rmsync.la -n rmsync \
  $(for w in $WARN $SAN; do printf -- '-Wc,%s ' "$w"; done) -Wc,-g -Wc,-O2 \
  -Iinclude $PKG_CFLAGS "${glue[@]}" build/librmsync_core.a $PKG_LIBS ${SAN:+-Wl,$SAN} >build/apxs.log 2>&1 \
  || { cat build/apxs.log >&2; exit 1; }
cp -f build/.libs/mod_rmsync.so build/mod_rmsync.so
echo "apxs-build.sh: built $TOP/build/mod_rmsync.so"

# 3. Unit tests (Check) against the core library.
if [ "$UNIT" = 1 ]; then
  CHECK_CFLAGS=$(pkg-config --cflags check) CHECK_LIBS=$(pkg-config --libs check)
  rc=0
  for t in tests/unit/test_*.c; do
    [ -e "$t" ] || continue
    bin=build/unit/$(basename "${t%.c}")
    $CC $OPT $SAN $WARN -Wno-missing-prototypes -Iinclude $APR_CFLAGS $PKG_CFLAGS $CHECK_CFLAGS \
      "$t" build/librmsync_core.a $PKG_LIBS $APR_LIBS $CHECK_LIBS -o "$bin"
    CK_FORK=yes "$bin" || rc=1
  done
  [ "$rc" = 0 ] || { echo "apxs-build.sh: unit tests failed" >&2; exit 1; }
fi

# 4. Test and benchmark tools (tests/tools/*.c, bench/*.c): C drivers that link the core library.
for t in tests/tools/*.c bench/*.c; do
  [ -e "$t" ] || continue
  bin=build/tools/$(basename "${t%.c}")
  mkdir -p build/tools
  $CC $OPT $SAN $WARN -Wno-missing-prototypes -Iinclude $APR_CFLAGS $PKG_CFLAGS \
    "$t" build/librmsync_core.a $PKG_LIBS $APR_LIBS -lpthread -o "$bin"
done

if [ "$INSTALL" = 1 ]; then
  "$APXS" -i -n rmsync build/mod_rmsync.la
  if [ -d /etc/apache2/mods-available ]; then
    install -m644 conf/rmsync.load conf/rmsync.conf /etc/apache2/mods-available/
    echo "apxs-build.sh: installed; enable with: a2enmod rmsync && systemctl reload apache2"
  fi
fi
