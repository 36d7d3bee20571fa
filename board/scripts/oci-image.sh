#!/usr/bin/env bash
# The container image, without a daemon: from scratch, the static binary,
# Debian's CA certificates (for mqtts://), a non-root user.
#
#   oci-image.sh ARCH BINARY    ARCH: amd64 or arm64
#
# Adds the tag ARCH to the OCI layout target/packages/oci (umoci) and
# writes target/packages/sip-capture-VERSION-ARCH.docker.tar (skopeo), which
# `docker load` and `podman load` take.
#
# The image holds /usr/bin/sip-capture with the file capability
# cap_net_raw=ep, so that the unprivileged user (uid 10001, named in
# /etc/passwd) can open a live capture when the runtime grants NET_RAW
# (docker run --cap-add NET_RAW; Kubernetes capabilities.add), as the
# systemd unit's AmbientCapabilities does on a host. The agent reads its
# settings from the environment (docs/configuration.md); there is no
# /etc/sip-capture.conf in the image unless one is mounted there.
set -euo pipefail
arch=${1:?usage: oci-image.sh ARCH BINARY} binary=${2:?usage: oci-image.sh ARCH BINARY}
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$root/target/packages
layout=$out/oci
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)
# The user the agent runs as: numeric, so no runtime needs /etc/passwd to
# resolve it; the entry is there for tools that show names.
uid=10001

[ -f "$layout/index.json" ] || umoci init --layout "$layout"
umoci new --image "$layout:$arch"
# The tree goes into an unpacked bundle and back as one layer (umoci
# 0.4.7's `insert` writes a truncated tar).
bundle=$out/bundle-$arch
rm -rf "$bundle"
umoci unpack --image "$layout:$arch" "$bundle" >/dev/null
rootfs=$bundle/rootfs
install -D -m 0755 "$binary" "$rootfs/usr/bin/sip-capture"
setcap cap_net_raw=ep "$rootfs/usr/bin/sip-capture"
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/:/sbin/nologin\nsip-capture:x:%s:%s:sip-capture:/:/sbin/nologin\n' $uid $uid > "$rootfs/etc/passwd"
printf 'root:x:0:\nsip-capture:x:%s:\n' $uid > "$rootfs/etc/group"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"
umoci repack --image "$layout:$arch" --history.created_by "board/scripts/oci-image.sh $arch" "$bundle"
rm -rf "$bundle"
umoci config --image "$layout:$arch" --no-history \
  --os linux --architecture "$arch" \
  --config.user "$uid:$uid" \
  --config.entrypoint /usr/bin/sip-capture \
  --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --config.label org.opencontainers.image.title=sip-capture \
  --config.label org.opencontainers.image.version="$version" \
  --config.label org.opencontainers.image.licenses=MIT
umoci gc --layout "$layout"

archive=$out/sip-capture-$version-$arch.docker.tar
rm -f "$archive"
skopeo --insecure-policy copy --quiet "oci:$layout:$arch" "docker-archive:$archive:sip-capture:$version-$arch"
ls -l "$archive"
