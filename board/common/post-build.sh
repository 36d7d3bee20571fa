#!/bin/sh
# Buildroot post-build script of every sip-capture board.
#   $1  the target directory (Buildroot passes it)
#   $2  the board: board/<name>/board.env
# Boards Buildroot's pre-built Rust cannot target (MIPS: Rust publishes no
# std for it since 1.72) install the static binary from `make cross`
# instead of building the package.
set -eu
target=$1
board=$2
here=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -x "$target/usr/bin/sip-capture" ]; then
	triple=$(sed -n 's/^RUST_TARGET=//p' "$here/$board/board.env")
	prebuilt=$here/../target/$triple/release/sip-capture
	if [ ! -x "$prebuilt" ]; then
		echo "post-build: no sip-capture for $board: run 'make cross TARGET=$triple' first" >&2
		exit 1
	fi
	install -D -m 0755 "$prebuilt" "$target/usr/bin/sip-capture"
fi
# Mount points for the tmpfs that rcS mounts on the read-only root.
rm -rf "${target:?}/var" && mkdir -p "$target/var" "$target/tmp"
