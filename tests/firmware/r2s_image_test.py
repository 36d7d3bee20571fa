#!/usr/bin/env python3
"""The NanoPi R2S SD card layout, built by the real genimage from
board/nanopi-r2s/genimage.cfg out of stand-in boot files.

Checks what the board's boot ROM and U-Boot rely on: the Rockchip loader at
32 KiB and U-Boot at 8 MiB, byte for byte and outside the partitions; an
MBR whose first partition (bootable FAT at 16 MiB) holds the kernel, the
device tree and extlinux/extlinux.conf, and whose second holds the squashfs
root; and that extlinux.conf agrees with the image and the defconfig (the
device tree Buildroot builds, the root partition, read-only squashfs).
"""
import os
import re
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOARD = os.path.join(ROOT, "board", "nanopi-r2s")
DEFCONFIG = os.path.join(ROOT, "buildroot", "configs", "sip_capture_nanopi_r2s_defconfig")
KIB, MIB = 1024, 1024 * 1024

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def defconfig_value(key):
    with open(DEFCONFIG) as f:
        for line in f:
            if line.startswith(key + "="):
                return line.split("=", 1)[1].strip().strip('"')
    sys.exit(f"{DEFCONFIG}: no {key}")


def mbr_partitions(image):
    """(bootable, type, start byte, size bytes) of each used MBR entry."""
    with open(image, "rb") as f:
        mbr = f.read(512)
    assert mbr[510:512] == b"\x55\xaa", "no MBR signature"
    parts = []
    for i in range(4):
        entry = mbr[446 + 16 * i: 446 + 16 * (i + 1)]
        status, ptype = entry[0], entry[4]
        start, sectors = struct.unpack("<II", entry[8:16])
        if ptype:
            parts.append((status == 0x80, ptype, start * 512, sectors * 512))
    return parts


def read_at(image, offset, length):
    with open(image, "rb") as f:
        f.seek(offset)
        return f.read(length)


def fat_file(image, offset, path):
    """A file out of the FAT partition at `offset`, read with mtools."""
    return subprocess.run(["mtype", "-i", f"{image}@@{offset}", "::" + path],
                          check=True, capture_output=True).stdout


def main():
    dtb = os.path.basename(defconfig_value("BR2_LINUX_KERNEL_INTREE_DTS_NAME")) + ".dtb"
    with tempfile.TemporaryDirectory() as tmp:
        images = os.path.join(tmp, "images")
        os.makedirs(os.path.join(images, "extlinux"))
        # Stand-ins with distinct contents, named as Buildroot names them.
        inputs = {
            "idbloader.img": os.urandom(200 * KIB),
            "u-boot.itb": os.urandom(900 * KIB),
            "Image": os.urandom(3 * MIB),
            dtb: os.urandom(50 * KIB),
            "rootfs.squashfs": os.urandom(2 * MIB + 123),
        }
        for name, data in inputs.items():
            with open(os.path.join(images, name), "wb") as f:
                f.write(data)
        # What post-image.sh does before it calls genimage.
        with open(os.path.join(BOARD, "extlinux.conf"), "rb") as f:
            extlinux = f.read()
        with open(os.path.join(images, "extlinux", "extlinux.conf"), "wb") as f:
            f.write(extlinux)
        for d in ("root", "tmp", "out"):
            os.makedirs(os.path.join(tmp, d))
        made = subprocess.run(["genimage", "--config", os.path.join(BOARD, "genimage.cfg"),
                               "--inputpath", images, "--outputpath", os.path.join(tmp, "out"),
                               "--rootpath", os.path.join(tmp, "root"), "--tmppath", os.path.join(tmp, "tmp")],
                              capture_output=True, text=True)
        if made.returncode != 0:
            sys.exit(f"genimage failed (inputs named after the defconfig: {sorted(inputs)}):\n{made.stderr}")
        image = os.path.join(tmp, "out", "sdcard.img")

        loader, uboot = inputs["idbloader.img"], inputs["u-boot.itb"]
        check(read_at(image, 32 * KIB, len(loader)) == loader, "idbloader.img at 32 KiB (sector 64)")
        check(read_at(image, 8 * MIB, len(uboot)) == uboot, "u-boot.itb at 8 MiB")
        check(32 * KIB + len(loader) <= 8 * MIB, "the loader ends before U-Boot")

        parts = mbr_partitions(image)
        check(len(parts) == 2, f"two partitions in the MBR ({len(parts)})")
        (boot_flag, boot_type, boot_at, boot_size), (_, root_type, root_at, _) = parts[:2]
        check(boot_flag and boot_type == 0x0C and boot_at == 16 * MIB,
              "partition 1: bootable FAT32 (LBA) at 16 MiB")
        check(8 * MIB + len(uboot) <= boot_at, "U-Boot ends before partition 1")
        check(root_type == 0x83 and root_at >= boot_at + boot_size, "partition 2: Linux, after partition 1")
        rootfs = inputs["rootfs.squashfs"]
        check(read_at(image, root_at, len(rootfs)) == rootfs, "partition 2 holds rootfs.squashfs")

        check(fat_file(image, boot_at, "/Image") == inputs["Image"], "FAT: /Image")
        check(fat_file(image, boot_at, "/" + dtb) == inputs[dtb], f"FAT: /{dtb} (the defconfig's device tree)")
        check(fat_file(image, boot_at, "/extlinux/extlinux.conf") == extlinux, "FAT: /extlinux/extlinux.conf")

        conf = extlinux.decode()
        kernel = re.search(r"^\s*kernel\s+(\S+)", conf, re.M)
        fdt = re.search(r"^\s*(?:devicetree|fdt)\s+(\S+)", conf, re.M)
        append = re.search(r"^\s*append\s+(.*)$", conf, re.M)
        check(kernel is not None and kernel.group(1) == "/Image", "extlinux: kernel /Image")
        check(fdt is not None and fdt.group(1) == "/" + dtb, f"extlinux: devicetree /{dtb}")
        args = append.group(1).split() if append else []
        check("root=/dev/mmcblk0p2" in args, "extlinux: root= is partition 2 of the SD card")
        check("ro" in args and "rootfstype=squashfs" in args, "extlinux: read-only squashfs root")
    if failures:
        sys.exit(f"{len(failures)} check(s) failed")


if __name__ == "__main__":
    main()
