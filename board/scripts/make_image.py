#!/usr/bin/env python3
"""make image BOARD=<name>: a board's firmware image without Buildroot.

Buildroot cannot fetch its sources on machines without network access, so
this assembles the same board from Debian's packages: that architecture's
kernel (linux-image-*) and busybox-static, fetched with a private apt
state (board/scripts/debian-apt.sh), the static sip-capture from
`make cross`, and the board's overlays. Output in target/firmware/BOARD/:

  kernel              Debian's kernel for the board
  initramfs.cpio.gz   busybox, the virtio and squashfs modules (Debian
                      builds them as modules), and an init that loads them,
                      mounts the root read-only and switches to it
  rootfs.squashfs     the read-only root: busybox, /usr/bin/sip-capture,
                      the overlays (init scripts, the baked-in config)

Needs squashfs-tools, cpio and dpkg-deb (Debian's packages of those names
and dpkg); `make image` installs them.
"""

import gzip
import lzma
import os
import shlex
import shutil
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BOARDS = os.path.join(ROOT, "board")
WORK = os.path.join(ROOT, "target", "firmware")
# Drivers the image needs beyond what Debian's kernels build in (af_packet
# is built in): the disk and NICs are virtio over PCI, the root squashfs.
MODULES = ["virtio_pci", "virtio_blk", "virtio_net", "squashfs"]
INITRAMFS_APPLETS = ["sh", "mount", "umount", "insmod", "sleep", "switch_root", "echo"]
ROOTFS_APPLETS = [
    "sh", "ash", "init", "mount", "umount", "mkdir", "cat", "echo", "grep", "sed", "touch", "rm", "ls",
    "sleep", "hostname", "ifconfig", "route", "ip", "udhcpc", "insmod", "lsmod", "dmesg", "ps", "kill",
    "poweroff", "reboot", "halt", "uname", "free", "df", "top", "nc", "vi", "less",
    "readlink", "tr", "cut",  # sip-capture-hardware-id
]


def board_settings(board):
    """board/BOARD/board.env, KEY=value lines with shell quoting."""
    settings = {}
    with open(os.path.join(BOARDS, board, "board.env")) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                key, value = line.split("=", 1)
                settings[key] = " ".join(shlex.split(value))
    return settings


def fetch(arch, *packages):
    """Download Debian packages for `arch`; return their .deb paths."""
    debs = os.path.join(WORK, "debian", "debs")
    subprocess.run([os.path.join(BOARDS, "scripts", "debian-apt.sh"), os.path.join(WORK, "debian"), arch,
                    "download", *packages], check=True)
    found = []
    for package in packages:
        matches = sorted(n for n in os.listdir(debs) if n.startswith(package + "_") and n.endswith(f"_{arch}.deb"))
        found.append(os.path.join(debs, matches[-1]))
    return found


def field(deb, name):
    return subprocess.run(["dpkg-deb", "-f", deb, name], check=True, capture_output=True, text=True).stdout.strip()


def extract(deb, into):
    shutil.rmtree(into, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", deb, into], check=True)
    return into


def module_name(path):
    return os.path.basename(path).split(".ko")[0].replace("-", "_")


def read_module(path):
    """A module's bytes, uncompressed (busybox insmod reads plain .ko)."""
    if path.endswith(".xz"):
        return lzma.open(path).read()
    if path.endswith(".gz"):
        return gzip.open(path).read()
    if path.endswith(".zst"):
        return subprocess.run(["zstd", "-dc", path], check=True, capture_output=True).stdout
    with open(path, "rb") as f:
        return f.read()


def module_load_order(modules_dir, wanted):
    """`wanted` and every module they depend on, dependencies first, as
    paths under `modules_dir`. Debian's packages carry no modules.dep (depmod
    makes it on install), so dependencies come from each module's own
    `.modinfo` strings (`depends=a,b`)."""
    by_name = {}
    for directory, _, names in os.walk(modules_dir):
        for name in names:
            if ".ko" in name:
                by_name[module_name(name)] = os.path.join(directory, name)
    order = []

    def visit(name):
        path = by_name[name]
        if path in order:
            return
        for entry in read_module(path).split(b"\0"):
            if entry.startswith(b"depends="):
                for dep in filter(None, entry[len(b"depends="):].decode().split(",")):
                    visit(dep.replace("-", "_"))
        order.append(path)

    for name in wanted:
        if name in by_name:
            visit(name)
        # else: built into this kernel
    return order


def busybox_tree(into, busybox, applets, applet_dirs):
    os.makedirs(os.path.join(into, "bin"), exist_ok=True)
    shutil.copy(busybox, os.path.join(into, "bin", "busybox"))
    for applet in applets:
        where = applet_dirs.get(applet, "bin")
        os.makedirs(os.path.join(into, where), exist_ok=True)
        link = os.path.join(into, where, applet)
        if not os.path.lexists(link):
            os.symlink("/bin/busybox", link)


def copy_overlay(overlay, into):
    shutil.copytree(overlay, into, symlinks=True, dirs_exist_ok=True)


def make_image(board):
    settings = board_settings(board)
    if "DEBIAN_ARCH" not in settings:
        sys.exit(f"make-image: {board} is built with Buildroot, not from Debian's packages (docs/firmware.md)")
    arch, out = settings["DEBIAN_ARCH"], os.path.join(WORK, board)
    binary = os.path.join(ROOT, "target", settings["RUST_TARGET"], "release", "sip-capture")
    if not os.path.exists(binary):
        sys.exit(f"make-image: {binary} is missing; run `make cross TARGET={settings['RUST_TARGET']}` first")
    scratch = os.path.join(out, "build")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(scratch)

    # The kernel package named by the board is a metapackage: its first
    # dependency is the versioned image.
    (meta,) = fetch(arch, settings["KERNEL_PACKAGE"])
    image_package = field(meta, "Depends").split(",")[0].split()[0]
    kernel_deb, busybox_deb = fetch(arch, image_package, "busybox-static")
    kernel_root = extract(kernel_deb, os.path.join(scratch, "kernel"))
    busybox = os.path.join(extract(busybox_deb, os.path.join(scratch, "busybox")), "bin", "busybox")
    boot = os.path.join(kernel_root, "boot")
    (kernel,) = [n for n in os.listdir(boot) if n.startswith(("vmlinuz-", "vmlinux-"))]
    shutil.copy(os.path.join(boot, kernel), os.path.join(out, "kernel"))
    (version,) = os.listdir(os.path.join(kernel_root, "lib", "modules"))
    modules_dir = os.path.join(kernel_root, "lib", "modules", version)

    # initramfs: busybox, modules in load order, init.
    initramfs = os.path.join(scratch, "initramfs")
    busybox_tree(initramfs, busybox, INITRAMFS_APPLETS, {})
    for d in ["proc", "sys", "dev", "newroot", "lib/modules"]:
        os.makedirs(os.path.join(initramfs, d), exist_ok=True)
    loaded = []
    for path in module_load_order(modules_dir, MODULES):
        name = os.path.basename(path).split(".ko")[0] + ".ko"
        with open(os.path.join(initramfs, "lib", "modules", name), "wb") as f:
            f.write(read_module(path))
        loaded.append(name)
    with open(os.path.join(initramfs, "lib", "modules", "load-order"), "w") as f:
        f.write("".join(name + "\n" for name in loaded))
    shutil.copy(os.path.join(BOARDS, "common", "initramfs", "init"), os.path.join(initramfs, "init"))
    files = subprocess.run(["find", "."], cwd=initramfs, check=True, capture_output=True).stdout
    archive = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], cwd=initramfs, input=files,
                             check=True, capture_output=True).stdout
    with gzip.open(os.path.join(out, "initramfs.cpio.gz"), "wb", compresslevel=9) as f:
        f.write(archive)

    # The read-only root.
    rootfs = os.path.join(scratch, "rootfs")
    busybox_tree(rootfs, busybox, ROOTFS_APPLETS, {"init": "sbin", "ifconfig": "sbin", "route": "sbin",
                                                   "insmod": "sbin", "poweroff": "sbin", "reboot": "sbin",
                                                   "halt": "sbin", "udhcpc": "sbin"})
    for d in ["proc", "sys", "dev", "tmp", "var", "root", "usr/bin"]:
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    shutil.copy(binary, os.path.join(rootfs, "usr", "bin", "sip-capture"))
    for overlay in settings["OVERLAYS"].split():
        copy_overlay(os.path.join(BOARDS, overlay), rootfs)
    subprocess.run(["mksquashfs", rootfs, os.path.join(out, "rootfs.squashfs"), "-all-root", "-noappend",
                    "-comp", "xz", "-quiet"], check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(scratch)
    for name in ["kernel", "initramfs.cpio.gz", "rootfs.squashfs"]:
        print(f"{board}: {name} {os.path.getsize(os.path.join(out, name)):,} bytes")
    print(f"{board}: {image_package}, modules {' '.join(loaded)}")


if __name__ == "__main__":
    if len(sys.argv) != 2 or not os.path.exists(os.path.join(BOARDS, sys.argv[1], "board.env")):
        boards = sorted(b for b in os.listdir(BOARDS) if os.path.exists(os.path.join(BOARDS, b, "board.env")))
        sys.exit(f"usage: make-image.py BOARD   (one of: {' '.join(boards)})")
    make_image(sys.argv[1])
