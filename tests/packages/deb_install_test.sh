#!/usr/bin/env bash
# The .deb in a throwaway Debian root: installed with `dpkg --root` (its
# maintainer scripts run chrooted there), then checked the way an operator
# would use it; then upgraded with a changed /etc/sip-capture.conf, which
# must survive; then purged.
#
#   deb_install_test.sh PACKAGE.deb     (as root: dpkg --root and chroot)
#
# The root is Debian bookworm minbase plus libpcap0.8 and systemd (a
# server's; systemd-analyze verify needs its units), made by debootstrap
# once and cached in target/package-test/bookworm-systemd; each run works
# on a copy.
set -euo pipefail
deb=$(realpath "${1:?usage: deb_install_test.sh PACKAGE.deb}")
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=$root/target/package-test/bookworm-systemd
if [ ! -x "$cache/usr/bin/dpkg" ]; then
  mkdir -p "$root/target/package-test"
  rm -rf "$cache.tmp"
  debootstrap --variant=minbase --include=libpcap0.8,systemd \
    bookworm "$cache.tmp" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" > "$root/target/package-test/debootstrap.log" 2>&1 \
    || { tail -n 20 "$root/target/package-test/debootstrap.log"; exit 1; }
  mv "$cache.tmp" "$cache"
fi
chroot_dir=$root/target/package-test/run
rm -rf "$chroot_dir"
cp -a "$cache" "$chroot_dir"
trap 'rm -rf "$chroot_dir"' EXIT

passed=0 failed=0
check() { # check WHAT COMMAND...: one line, ok or FAIL
  local what=$1; shift
  if out=$("$@" 2>&1); then
    echo "ok   $what"; passed=$((passed + 1))
  else
    echo "FAIL $what"; printf '%s\n' "$out" | sed 's/^/     /'; failed=$((failed + 1))
  fi
}
in_root() { chroot "$chroot_dir" "$@"; }

unit=$chroot_dir/usr/lib/systemd/system/sip-capture.service
version_runs() { [[ $(in_root /usr/bin/sip-capture --version) == sip-capture/* ]]; }
no_login() { in_root getent passwd sip-capture | grep -q ':/usr/sbin/nologin$'; }
is_conffile() { dpkg-query --root="$chroot_dir" -W -f='${Conffiles}' sip-capture | grep -q '^ /etc/sip-capture.conf '; }
only_net_raw() {
  grep -qx 'User=sip-capture' "$unit" && grep -qx 'CapabilityBoundingSet=CAP_NET_RAW' "$unit" &&
    grep -qx 'AmbientCapabilities=CAP_NET_RAW' "$unit" && grep -qx 'NoNewPrivileges=yes' "$unit"
}
# grep reads to the end (no -q): the agent's output must not meet a closed pipe.
config_kept() { in_root /usr/bin/sip-capture --check | grep -x 'TOPIC=sip/site-17' >/dev/null; }
purged() {
  dpkg --root="$chroot_dir" --purge sip-capture &&
    [ ! -e "$chroot_dir/etc/sip-capture.conf" ] && [ ! -e "$chroot_dir/usr/bin/sip-capture" ]
}

check "dpkg --root installs it (dependencies present, maintainer scripts succeed)" \
  dpkg --root="$chroot_dir" --install "$deb"
check "--version runs: $(in_root /usr/bin/sip-capture --version 2>&1)" version_runs
check "--check accepts the shipped /etc/sip-capture.conf, read as the service user" \
  in_root setpriv --reuid=sip-capture --regid=sip-capture --clear-groups /usr/bin/sip-capture --check
check "the system user exists, without a login shell" no_login
check "/etc/sip-capture.conf is a conffile" is_conffile
check "the man page is installed" test -f "$chroot_dir/usr/share/man/man8/sip-capture.8.gz"
check "the unit runs a non-root user with only CAP_NET_RAW" only_net_raw
check "systemd-analyze verify accepts the installed unit" \
  systemd-analyze verify --root="$chroot_dir" --man=no sip-capture.service
check "the service is installed, not enabled (it starts once configured)" \
  test ! -e "$chroot_dir/etc/systemd/system/multi-user.target.wants/sip-capture.service"

# An upgrade (the same files, a newer revision) keeps the operator's config.
sed -i 's|^TOPIC=.*|TOPIC=sip/site-17|' "$chroot_dir/etc/sip-capture.conf"
upgrade=$(mktemp -d)
dpkg-deb --raw-extract "$deb" "$upgrade/pkg"
sed -i 's/^Version: \(.*\)-1$/Version: \1-2/' "$upgrade/pkg/DEBIAN/control"
dpkg-deb --root-owner-group --build "$upgrade/pkg" "$upgrade/upgrade.deb" >/dev/null
check "an upgrade installs over it" dpkg --root="$chroot_dir" --install "$upgrade/upgrade.deb"
rm -rf "$upgrade"
check "the upgrade kept the changed /etc/sip-capture.conf" config_kept
check "dpkg --purge removes it, config included" purged

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
