#!/bin/sh
# cross-rs pre-build step (Cross.toml): runs inside the target's image,
# as root, with the target triple as $1. Builds a static libpcap with the
# image's cross compiler into /usr/local/libpcap, where LIBPCAP_LIBDIR
# points the pcap crate.
set -eu
triple=$1
version=1.10.5
apt-get update -q
apt-get install -y -q --no-install-recommends flex bison curl ca-certificates make
cc_var=CC_$(echo "$triple" | tr - _)
cc=$(eval echo "\${$cc_var:-}")
[ -n "$cc" ] || { echo "cross-rs-libpcap.sh: the image sets no $cc_var" >&2; exit 1; }
cd /tmp
curl -fsSL "https://www.tcpdump.org/release/libpcap-$version.tar.gz" | tar -xz
cd "libpcap-$version"
CC=$cc ./configure --host="$(echo "$cc" | sed 's/-gcc$//')" --prefix=/usr/local/libpcap \
	--with-pcap=linux --disable-shared --disable-usb --disable-netmap --disable-bluetooth \
	--disable-dbus --disable-rdma --disable-remote --without-libnl
make -j"$(nproc)" libpcap.a
mkdir -p /usr/local/libpcap/lib
cp libpcap.a /usr/local/libpcap/lib/
