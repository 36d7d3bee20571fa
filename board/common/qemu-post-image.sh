#!/bin/sh
# Buildroot post-image script of the qemu boards: writes start-qemu.sh
# beside the images, booting them as `make qemu-test` boots the images
# made from Debian's packages (without the test's mirror port).
#   $1  the images directory (Buildroot passes it)
#   $2  the board: board/<name>/board.env gives qemu's machine and console
set -eu
images=$1
board=$2
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=/dev/null
. "$here/$board/board.env"
kernel=
for name in Image zImage vmlinux; do
	[ -n "$kernel" ] || [ ! -e "$images/$name" ] || kernel=$name
done
cat > "$images/start-qemu.sh" <<SCRIPT
#!/bin/sh
# $board: the squashfs root read-only on a virtio disk; eth0 user
# networking, eth1 (the capture port) a dgram socket on 127.0.0.1:9000.
cd "\$(dirname "\$0")"
exec $QEMU_SYSTEM $QEMU_MACHINE -m 256 -nographic \\
	-kernel $kernel -append "console=$CONSOLE root=/dev/vda ro rootfstype=squashfs" \\
	-drive file=rootfs.squashfs,if=none,format=raw,id=root,readonly=on \\
	-device virtio-blk-pci,drive=root \\
	-netdev user,id=mgmt -device virtio-net-pci,netdev=mgmt,romfile= \\
	-netdev dgram,id=mirror,local.type=inet,local.host=127.0.0.1,local.port=9000,remote.type=inet,remote.host=127.0.0.1,remote.port=9001 \\
	-device virtio-net-pci,netdev=mirror,romfile= "\$@"
SCRIPT
chmod +x "$images/start-qemu.sh"
