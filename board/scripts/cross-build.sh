#!/usr/bin/env bash
# A fully static sip-capture for an ARM or MIPS board, or for any x86_64
# Linux (packages, containers), libpcap linked in.
#
#   cross-build.sh TRIPLE     -> target/TRIPLE/release/sip-capture
#   cross-build.sh --prepare  only the tools and sources every target shares
#
# Triples: aarch64-unknown-linux-musl, armv7-unknown-linux-musleabihf,
# mipsel-unknown-linux-musl, mips-unknown-linux-musl,
# x86_64-unknown-linux-musl. FEATURES picks the cargo features: by default
# filter-compiler for the boards (add tls for mqtts://, about 1 MB), and
# filter-compiler tls for x86_64, whose servers and containers have room.
#
# CARGO_ENV_OF=buildroot|openwrt builds with the release profile that
# Buildroot's pkg-cargo.mk (its defaults: BR2_OPTIMIZE_2, no BR2_ENABLE_LTO)
# or OpenWrt's rust-values.mk give cargo, which override Cargo.toml's, to
# measure what each would ship -> target/TRIPLE/release-ENV/sip-capture.
# Only the profile is theirs: the standard library is still built here.
#
# Everything it needs it fetches itself, under target/cross: a venv with
# zig (the C compiler and linker for every target, PyPI `ziglang`) and
# cargo-zigbuild; rust-src, from which the standard library is built for
# the target (-Z build-std on stable: rustup ships no std for armv7 musl or
# MIPS, and one built here is smaller, sized for size and without the
# backtrace symbolizer); libpcap from Debian's source package,
# built with zig into a static library.
set -euo pipefail
usage="usage: cross-build.sh TRIPLE | --prepare"
triple=${1:?$usage}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$root/target/cross
default_features=filter-compiler
[ "$triple" != x86_64-unknown-linux-musl ] || default_features="filter-compiler tls"
features=${FEATURES:-$default_features}
export PATH=$HOME/.cargo/bin:$PATH

# What every target shares, made once (`--prepare` makes it before several
# builds run side by side): the venv with zig and cargo-zigbuild, rust-src,
# libpcap's source.
venv=$work/venv
if [ ! -x "$venv/bin/cargo-zigbuild" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q ziglang cargo-zigbuild
fi
export PATH=$venv/bin:$PATH
rustup component add rust-src >/dev/null
if ! compgen -G "$work/debian/src/libpcap_*.orig.tar.gz" >/dev/null; then
  "$root/board/scripts/debian-apt.sh" "$work/debian" amd64 source libpcap
fi
tarballs=("$work"/debian/src/libpcap_*.orig.tar.gz)
[ "$triple" != --prepare ] || exit 0

# zig's names: Rust's MIPS musl targets are soft-float (musleabi).
case $triple in
  aarch64-unknown-linux-musl) zig_target=aarch64-linux-musl ;;
  armv7-unknown-linux-musleabihf) zig_target=arm-linux-musleabihf ;;
  mipsel-unknown-linux-musl) zig_target=mipsel-linux-musleabi ;;
  mips-unknown-linux-musl) zig_target=mips-linux-musleabi ;;
  x86_64-unknown-linux-musl) zig_target=x86_64-linux-musl ;;
  *) echo "cross-build.sh: unsupported target $triple; $usage" >&2; exit 2 ;;
esac
bits=64
case $triple in armv7*|mips-*|mipsel-*) bits=32 ;; esac

# libpcap, static, for the target, with zig behind small wrappers (one set
# per target, so that builds can run side by side).
prefix=$work/$triple/libpcap
if [ ! -f "$prefix/lib/libpcap.a" ]; then
  build=$work/$triple/libpcap-build
  bin=$work/$triple/bin
  rm -rf "$build" && mkdir -p "$build" "$bin"
  tar -xzf "${tarballs[0]}" -C "$build" --strip-components=1
  printf '#!/bin/sh\nexec python3 -m ziglang cc -target %s "$@"\n' "$zig_target" > "$bin/cc"
  printf '#!/bin/sh\nexec python3 -m ziglang ar "$@"\n' > "$bin/ar"
  printf '#!/bin/sh\nexec python3 -m ziglang ranlib "$@"\n' > "$bin/ranlib"
  chmod +x "$bin/cc" "$bin/ar" "$bin/ranlib"
  (
    cd "$build"
    CC=$bin/cc AR=$bin/ar RANLIB=$bin/ranlib CFLAGS=-Os \
      ./configure --build=x86_64-pc-linux-gnu --host="$zig_target" --prefix="$prefix" --with-pcap=linux \
      --disable-shared --disable-usb --disable-netmap --disable-bluetooth --disable-dbus \
      --disable-rdma --disable-remote --without-libnl >configure.log 2>&1 \
      || { tail -n 30 configure.log; exit 1; }
    make -j"$(nproc)" libpcap.a >make.log 2>&1 || { tail -n 30 make.log; exit 1; }
    mkdir -p "$prefix/lib" && cp libpcap.a "$prefix/lib/"
  )
fi
version=$(basename "${tarballs[0]}" .orig.tar.gz)

# The pcap crate links what LIBPCAP_LIBDIR holds: only the static library.
export LIBPCAP_LIBDIR=$prefix/lib LIBPCAP_VER=${version#libpcap_}
# The standard library is built here (-Z build-std, allowed on stable by
# RUSTC_BOOTSTRAP), linked with zig's musl (not a self-contained one).
export RUSTC_BOOTSTRAP=1
rustflags="-C target-feature=+crt-static -C link-self-contained=no"
if [ $bits = 32 ]; then
  # musl 1.2 has a 64-bit time_t on 32-bit targets, and libpcap was built
  # with it; the libc crate assumes 32-bit unless told (every pcap header
  # would read as garbage).
  rustflags="$rustflags --cfg libc_unstable_musl_v1_2"
fi
case $triple in
  mips*)
    # The binary is linked static and not position-independent anyway;
    # MIPS position-independent code (abicalls, GOT) is much larger.
    rustflags="$rustflags -C relocation-model=static" ;;
esac
# With TLS, its code apart from the code every capture runs, so that it
# stays out of resident memory with an mqtt:// broker (tls-apart.ld:
# 1,120 KiB of code resident at peak instead of up to 1,260 on x86_64,
# docs/performance.md "The TLS build within 6 MiB"). Measured on x86_64
# only, so only there; the boards ship without TLS.
case ",${features// /,}," in
  *,tls,*) [ "$triple" != x86_64-unknown-linux-musl ] \
    || rustflags="$rustflags -C link-arg=-Wl,-T,$root/board/scripts/tls-apart.ld" ;;
esac
# std without its default "backtrace" feature (no symbolizer: a panic
# still prints its message, without a backtrace), and sized for size.
std_features=optimize_for_size
out=release
case ${CARGO_ENV_OF:-} in
  '') ;;
  buildroot)
    # pkg-cargo.mk, for a release build with Buildroot's defaults.
    export CARGO_PROFILE_RELEASE_OPT_LEVEL=2 CARGO_PROFILE_RELEASE_LTO=false \
      CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_INCREMENTAL=false \
      CARGO_PROFILE_RELEASE_SPLIT_DEBUGINFO=off CARGO_PROFILE_RELEASE_DEBUG=0 \
      CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=false CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=false
    out=release-buildroot ;;
  openwrt)
    # rust-values.mk's CARGO_PKG_CONFIG_VARS. panic=unwind needs std's
    # unwinder.
    export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_PROFILE_RELEASE_DEBUG=false \
      CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=false CARGO_PROFILE_RELEASE_LTO=true \
      CARGO_PROFILE_RELEASE_OPT_LEVEL=z CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true \
      CARGO_PROFILE_RELEASE_PANIC=unwind CARGO_PROFILE_RELEASE_RPATH=false
    std_features=$std_features,panic-unwind
    out=release-openwrt ;;
  *) echo "cross-build.sh: CARGO_ENV_OF must be buildroot or openwrt" >&2; exit 2 ;;
esac
# shellcheck disable=SC2054  # one argument, with a comma
args=(--release --target "$triple" --no-default-features --features "$features"
  -Z build-std=std,panic_abort -Z "build-std-features=$std_features")
# A cargo target directory per target (and profile): a build with
# RUSTC_BOOTSTRAP would otherwise replace the host build's proc-macros and
# make it rebuild, and builds of different targets would wait on each
# other's lock.
cd "$root"
cargo_dir=$work/$triple/cargo${CARGO_ENV_OF:+-$CARGO_ENV_OF}
RUSTFLAGS="$rustflags" CARGO_TARGET_DIR=$cargo_dir cargo zigbuild "${args[@]}"
install -D -m 0755 "$cargo_dir/$triple/release/sip-capture" "target/$triple/$out/sip-capture"
ls -l "target/$triple/$out/sip-capture"
