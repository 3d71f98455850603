#!/usr/bin/env bash
# Build the Debian package from a clean clone of the committed tree (HEAD) in a temp dir and check
# it the way an admin uses it:
#   dpkg-buildpackage -us -uc -b  ->  libapache2-mod-rmsync_<version>_<arch>.deb
#   its contents (module, a2enmod files as conffiles, SQL + install.sh, docs), lintian (no errors)
#   apt-get install ./<deb> && a2enmod rmsync && apache2ctl configtest
# and at the end a2dismod rmsync + apt-get purge, so the machine's Apache is left as it was.
# Needs root (or sudo) for apt-get; installs the Build-Depends and lintian when missing.
# Refuses to run when libapache2-mod-rmsync is already installed (it would purge it).
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
PKG=libapache2-mod-rmsync
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
say() { printf 'package-test: %s\n' "$*"; }
die() { printf 'package-test: FAIL: %s\n' "$*" >&2; exit 1; }
apt_install() {
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q 'ok installed'; then
  die "$PKG is already installed here; this test would purge it (remove it first)"
fi

WORK=$(mktemp -d /tmp/rmsync-pkg-XXXXXX)
INSTALLED=0
cleanup() {
  rc=$?
  if [ "$INSTALLED" = 1 ]; then
    $SUDO a2dismod -q -f rmsync >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get purge -y -qq "$PKG" >/dev/null 2>&1 || rc=1
    [ ! -e /etc/apache2/mods-enabled/rmsync.load ] || { echo "package-test: rmsync still enabled" >&2; rc=1; }
    [ ! -e /etc/apache2/mods-available/rmsync.conf ] || { echo "package-test: conffile left after purge" >&2; rc=1; }
    say "a2dismod + purge done"
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT

# 1. Tools and Build-Depends (from debian/control).
command -v dpkg-buildpackage >/dev/null && command -v lintian >/dev/null && command -v dh >/dev/null \
  || { $SUDO apt-get update -qq; apt_install dpkg-dev debhelper lintian; }
git clone -q "$TOP" "$WORK/src"
cd "$WORK/src"
missing=$(dpkg-checkbuilddeps 2>&1 | sed -n 's/.*Unmet build dependencies: //p' \
          | sed 's/([^)]*)//g; s/<[^>]*>//g; s/|[^ ]*//g')
if [ -n "$missing" ]; then
  say "installing Build-Depends:" $missing
  $SUDO apt-get update -qq
  apt_install $missing
fi

# 2. Build.
VERSION=$(dpkg-parsechangelog -S Version)
ARCH=$(dpkg --print-architecture)
DEB=$WORK/${PKG}_${VERSION}_${ARCH}.deb
say "dpkg-buildpackage -us -uc -b ($VERSION, $ARCH)"
dpkg-buildpackage -us -uc -b >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log" >&2; die "dpkg-buildpackage"; }
[ -f "$DEB" ] || die "$DEB was not built"

# 3. Contents.
MODDIR=$(apxs -q LIBEXECDIR 2>/dev/null || echo /usr/lib/apache2/modules)
files=$(dpkg-deb -c "$DEB" | awk '{print $6}' | sed 's|^\./|/|')
for f in "$MODDIR/mod_rmsync.so" /etc/apache2/mods-available/rmsync.load \
         /etc/apache2/mods-available/rmsync.conf /usr/share/mod-rmsync/sql/install.sh \
         /usr/share/mod-rmsync/sql/rmsync/rmsync_schema.sql /usr/share/mod-rmsync/sql/rmsync/grants.sql \
         /usr/share/mod-rmsync/sql/manualdeploy/UpdateSyncMasterUser.sql \
         /usr/share/doc/$PKG/README.md.gz /usr/share/doc/$PKG/install.md.gz /usr/share/doc/$PKG/copyright; do
  grep -qx "$f" <<<"$files" || die "$f is not in the package"
done
dpkg-deb -e "$DEB" "$WORK/control"
for f in /etc/apache2/mods-available/rmsync.load /etc/apache2/mods-available/rmsync.conf; do
  grep -qx "$f" "$WORK/control/conffiles" || die "$f is not a conffile"
done
grep -q apache2-maintscript-helper "$WORK/control/postinst" || die "postinst without apache2-maintscript-helper"
dpkg-deb -f "$DEB" Depends | grep -q 'apache2-api-' || die "no apache2-api dependency"
say "contents ok"

# 4. lintian: no errors (warnings are printed).
lintian --fail-on error "$WORK"/mod-rmsync_"${VERSION}"_"${ARCH}".changes || die "lintian reports errors"
say "lintian: no errors"

# 5. Install, enable, configtest.
INSTALLED=1
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$DEB" >"$WORK/install.log" 2>&1 \
  || { cat "$WORK/install.log" >&2; die "apt-get install"; }
$SUDO a2enmod -q rmsync
$SUDO apache2ctl configtest 2>&1 | tee "$WORK/configtest.log" | grep -q 'Syntax OK' \
  || { cat "$WORK/configtest.log" >&2; die "apache2ctl configtest"; }
$SUDO apache2ctl -M 2>/dev/null | grep -q 'rmsync_module' || die "rmsync_module not loaded by apache2ctl -M"
/usr/share/mod-rmsync/sql/install.sh --help | grep -q -- '--app-role' || die "sql/install.sh --help"
say "apt-get install + a2enmod rmsync + apache2ctl configtest: ok"
