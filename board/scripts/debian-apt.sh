#!/usr/bin/env bash
# Debian packages for another architecture without touching the host's dpkg:
# apt-get with a private state (lists, cache, sources) under DIR.
#
#   debian-apt.sh DIR ARCH download PKG...   .deb files into DIR/debs
#   debian-apt.sh DIR ARCH source PKG        the package's source tarballs into DIR/src
#
# `dpkg --add-architecture` is fragile on these machines (mirror index size
# mismatches, version skew with the host's security updates); a private apt
# state reads only what it is asked for.
set -euo pipefail
dir=$1 arch=$2 what=$3
shift 3
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=${DEBIAN_SUITE:-bookworm}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

state=$dir/apt-$arch
mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$dir/debs" "$dir/src"
cat > "$state/sources.list" <<LIST
deb [arch=$arch signed-by=$keyring] $mirror $suite main
deb-src [signed-by=$keyring] $mirror $suite main
LIST
apt_get() {
  apt-get -q \
    -o APT::Architecture="$arch" -o APT::Architectures="$arch" \
    -o Dir::State="$state" -o Dir::State::Lists="$state/lists" -o Dir::State::status=/dev/null \
    -o Dir::Cache="$state/cache" -o Dir::Etc::SourceList="$state/sources.list" \
    -o Dir::Etc::SourceParts=/dev/null -o Dir::Etc::Preferences=/dev/null \
    -o Dir::Etc::PreferencesParts=/dev/null -o Debug::NoLocking=1 \
    -o APT::Sandbox::User="$(id -un)" "$@"
}
# One index update a day is plenty.
if [ -z "$(find "$state/lists" -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null)" ]; then
  apt_get update >/dev/null
fi
case $what in
  download) (cd "$dir/debs" && apt_get download "$@" >/dev/null) ;;
  source) (cd "$dir/src" && apt_get source --download-only "$@" >/dev/null) ;;
  *) echo "debian-apt.sh: unknown action $what" >&2; exit 2 ;;
esac
