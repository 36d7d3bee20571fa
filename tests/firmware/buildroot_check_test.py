#!/usr/bin/env python3
"""Each check of `make buildroot-check` fails on a broken copy of the tree.

Copies buildroot/, board/, Cargo.toml and LICENSE to a scratch directory,
breaks one thing, keeps one defconfig (a run per defconfig costs about a
minute of Buildroot parsing), runs board/scripts/buildroot_check.py on the
copy and requires it to fail with the expected message. Slow (one run per
case), so not in CI; run it after changing the checker:

    python3 tests/firmware/buildroot_check_test.py /path/to/buildroot-e991fa07.tar.xz
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
AARCH64 = "buildroot/configs/sip_capture_qemu_aarch64_virt_defconfig"
MIPSEL = "buildroot/configs/sip_capture_qemu_mipsel_malta_defconfig"
MK = "buildroot/package/sip-capture/sip-capture.mk"

# (what is broken, the defconfig kept, file, regex, replacement, expected output)
CASES = [
    ("a symbol Kconfig drops", MIPSEL, MIPSEL, r"\Z", "BR2_PACKAGE_SIP_CAPTURE=y\n",
     "Missing: BR2_PACKAGE_SIP_CAPTURE=y"),
    ("a line that repeats a default", AARCH64, AARCH64, r"\Z", "BR2_INIT_BUSYBOX=y\n",
     "-BR2_INIT_BUSYBOX=y"),
    ("an unpinned kernel", AARCH64, AARCH64, r"BR2_LINUX_KERNEL_CUSTOM_VERSION=y\n.*\n", "",
     "BR2_LINUX_KERNEL without BR2_LINUX_KERNEL_CUSTOM_VERSION"),
    ("a kernel hash missing", AARCH64, "buildroot/patches/linux/linux.hash", r".*linux-6\.18\.7\.tar\.xz\n", "",
     "linux: no hash for linux-6.18.7.tar.xz"),
    ("a local source", AARCH64, MK, r"SIP_CAPTURE_SITE = .*",
     "SIP_CAPTURE_SITE = $(BR2_EXTERNAL_SIP_CAPTURE_PATH)/..\nSIP_CAPTURE_SITE_METHOD = local",
     "sip-capture is fetched from a local directory"),
    ("a version other than Cargo.toml's", AARCH64, MK, r"VERSION = 0\.1\.0", "VERSION = 0.0.9",
     "sip-capture version 0.0.9, Cargo.toml says"),
    ("show-info that is not JSON", AARCH64, MK, r"\Z", "$(info sip-capture)\n",
     "show-info is not JSON"),
    ("a space-indented package line", AARCH64, MK, r"\tLIBPCAP_LIBDIR", "    LIBPCAP_LIBDIR",
     "sip-capture.mk:"),
    ("a defconfig without forced hashes", AARCH64, AARCH64, r"BR2_DOWNLOAD_FORCE_CHECK_HASHES=y\n", "",
     "BR2_DOWNLOAD_FORCE_CHECK_HASHES"),
    ("external.mk", AARCH64, "buildroot/external.mk", r"\Z", "ifdef FOO\nendif\n",
     "external-mk/external.mk:"),
    ("a board script", AARCH64, "board/common/post-build.sh", r"\Z", "echo $target/*\n",
     "post-build.sh:0: run 'shellcheck'"),
]


def main():
    tarball = os.path.abspath(sys.argv[1])
    failures = 0
    for what, keep, path, pattern, replacement, expected in CASES:
        with tempfile.TemporaryDirectory() as tree:
            for d in ("buildroot", "board"):
                shutil.copytree(os.path.join(ROOT, d), os.path.join(tree, d), symlinks=True)
            for f in ("Cargo.toml", "LICENSE"):
                shutil.copy(os.path.join(ROOT, f), tree)
            # The extraction and the venv of the checkout, not one per copy.
            os.makedirs(os.path.join(tree, "target"))
            os.symlink(os.path.join(ROOT, "target", "buildroot"), os.path.join(tree, "target", "buildroot"))
            configs = os.path.join(tree, "buildroot", "configs")
            for name in os.listdir(configs):
                if name != os.path.basename(keep):
                    os.remove(os.path.join(configs, name))
            target = os.path.join(tree, path)
            with open(target) as f:
                text = f.read()
            broken = re.sub(pattern, lambda _: replacement, text, count=1)
            assert broken != text, what
            with open(target, "w") as f:
                f.write(broken)
            p = subprocess.run([sys.executable, os.path.join(ROOT, "board/scripts/buildroot_check.py"), tarball, tree],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            ok = p.returncode != 0 and expected in p.stdout
            print(f"{'ok' if ok else 'FAIL'}: {what}: exit {p.returncode}")
            if not ok:
                print(p.stdout)
                failures += 1
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
