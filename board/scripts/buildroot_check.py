#!/usr/bin/env python3
"""Buildroot's own checks of the BR2_EXTERNAL tree (`make buildroot-check`).

Runs, offline, what a Buildroot checkout can check without downloading:
every defconfig loads with no symbol dropped (check-dotconfig.py) and is
minimal (savedefconfig writes back the same BR2_ lines); check-package
finds nothing in the package, the configs, the hash files and the board
scripts Buildroot runs, nor in external.mk (which check-package skips next
to external.desc, so it is checked alone in a scratch directory);
`show-info` parses, lists the package where the defconfig selects it, at
Cargo.toml's version, fetched as a release (not a local directory), and
has a hash for every download of every package (what
BR2_DOWNLOAD_FORCE_CHECK_HASHES requires at download time), kernel and
bootloaders pinned.

It does not build anything (no network). Buildroot itself is used as a
tool from a tarball outside the project, never copied into it.

Usage: buildroot_check.py BUILDROOT_TARBALL [CHECKOUT]
CHECKOUT defaults to this script's checkout; the extraction, a venv with
check-package's Python modules and the outputs go to CHECKOUT/target/buildroot.
"""

import concurrent.futures
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import time

# The package whose release tarball does not exist yet: no hash can be known
# for it (sip-capture.hash says so); every other download needs one.
UNRELEASED = {"sip-capture"}
# Boot software whose version a defconfig must pin, when it builds it.
PINNED = {
    "BR2_LINUX_KERNEL": "BR2_LINUX_KERNEL_CUSTOM_VERSION",
    "BR2_TARGET_UBOOT": "BR2_TARGET_UBOOT_CUSTOM_VERSION",
    "BR2_TARGET_ARM_TRUSTED_FIRMWARE": "BR2_TARGET_ARM_TRUSTED_FIRMWARE_CUSTOM_VERSION",
}
CONFIG_LINE = re.compile(r"^(BR2_\S+=.*|# BR2_\S+ is not set)$")


# Buildroot's make must not inherit the flags and variables of the make
# that runs this script.
ENV = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}


def run(cmd, log=None):
    """Runs cmd and returns its stdout; on failure prints the tail of its
    output and exits 1."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    if log:
        with open(log, "w") as f:
            f.write(p.stdout + p.stderr)
    if p.returncode != 0:
        print(f"FAIL: {' '.join(cmd)} (exit {p.returncode})")
        print("\n".join((p.stdout + p.stderr).splitlines()[-30:]))
        sys.exit(1)
    return p.stdout


def extract(tarball, work):
    """The Buildroot tree, extracted once per tarball (cached in work)."""
    name = os.path.basename(tarball).split(".tar")[0]
    src = os.path.join(work, name)
    stamp = os.path.join(src, ".extracted")
    if not os.path.exists(stamp) or os.path.getmtime(stamp) < os.path.getmtime(tarball):
        shutil.rmtree(src, ignore_errors=True)
        os.makedirs(src)
        run(["tar", "-xJf", tarball, "-C", src])
        open(stamp, "w").close()
    return src


def venv(work):
    """A venv with what utils/check-package imports (python-magic, flake8)."""
    env = os.path.join(work, "venv")
    python = os.path.join(env, "bin", "python3")
    if not os.path.exists(os.path.join(env, ".ready")):
        shutil.rmtree(env, ignore_errors=True)
        run([sys.executable, "-m", "venv", env])
        run([python, "-m", "pip", "install", "-q", "python-magic", "flake8"])
        open(os.path.join(env, ".ready"), "w").close()
    return python


def config_lines(path):
    with open(path) as f:
        return [line.strip() for line in f if CONFIG_LINE.match(line.strip())]


def dotconfig(path):
    values = {}
    for line in config_lines(path):
        if "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    return values


def hashed(path, source):
    try:
        with open(path) as f:
            return any(line.split()[2:3] == [source] for line in f if not line.startswith("#"))
    except FileNotFoundError:
        return False


def check_show_info(info, config, br, version):
    """The problems show-info reveals (an empty list when none)."""
    problems = []
    selected = config.get("BR2_PACKAGE_SIP_CAPTURE") == "y"
    if selected != ("sip-capture" in info):
        problems.append(f"sip-capture in show-info: {not selected}, selected: {selected}")
    if selected:
        pkg = info["sip-capture"]
        if pkg["version"] != version:
            problems.append(f"sip-capture version {pkg['version']}, Cargo.toml says {version}")
        for dl in pkg["downloads"]:
            if any(uri.startswith("local") for uri in dl["uris"]):
                problems.append(f"sip-capture is fetched from a local directory: {dl['uris'][0]}")
    for name, pkg in sorted(info.items()):
        if name in UNRELEASED:
            continue
        for dl in pkg.get("downloads", []):
            files = [h if os.path.isabs(h) else os.path.join(br, h) for h in pkg.get("hashes", [])]
            if not any(hashed(h, dl["source"]) for h in files):
                problems.append(f"{name}: no hash for {dl['source']} in {pkg.get('hashes', [])}")
    for option, pin in PINNED.items():
        if config.get(option) == "y" and config.get(pin) != "y":
            problems.append(f"{option} without {pin}: its version follows each Buildroot release")
    return problems


def check_defconfig(br, external, work, version, name):
    """The problems of one defconfig (an empty list when none) and the
    number of packages show-info lists."""
    problems = []
    defconfig = os.path.join(external, "configs", name)
    out = os.path.join(work, "output", name)
    shutil.rmtree(out, ignore_errors=True)
    run(["make", "-C", br, f"O={out}", f"BR2_EXTERNAL={external}", name], log=out + ".log")
    # Lines of the defconfig that Kconfig dropped (unmet dependency, typo).
    p = subprocess.run([os.path.join(br, "support/scripts/check-dotconfig.py"),
                        os.path.join(out, ".config"), defconfig], stdout=subprocess.PIPE, text=True, env=ENV)
    if p.returncode != 0:
        problems.append(p.stdout.strip())
    # Lines that only repeat defaults: savedefconfig leaves them out.
    saved = os.path.join(out, "defconfig.saved")
    run(["make", "-C", out, "savedefconfig", f"BR2_DEFCONFIG={saved}"])
    diff = list(difflib.unified_diff(config_lines(defconfig), config_lines(saved),
                                     f"configs/{name}", "savedefconfig", lineterm=""))
    if diff:
        problems.append(f"not what savedefconfig writes ({saved}):\n" + "\n".join(diff))
    info = {}
    try:
        info = json.loads(run(["make", "-s", "--no-print-directory", "-C", out, "show-info"]))
        problems += check_show_info(info, dotconfig(os.path.join(out, ".config")), br, version)
    except ValueError as e:
        problems.append(f"show-info is not JSON: {e}")
    return problems, len(info)


def main():
    tarball = os.path.abspath(sys.argv[1])
    checkout = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "../.."))
    external = os.path.join(checkout, "buildroot")
    work = os.path.join(checkout, "target", "buildroot")
    os.makedirs(work, exist_ok=True)
    started = time.monotonic()
    br = extract(tarball, work)
    python = venv(work)
    with open(os.path.join(checkout, "Cargo.toml")) as f:
        version = re.search(r'^version = "([^"]+)"', f.read(), re.M).group(1)
    failed = False

    # Two at a time: loading Buildroot's makefiles is single-threaded.
    defconfigs = sorted(os.listdir(os.path.join(external, "configs")))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = pool.map(lambda n: check_defconfig(br, external, work, version, n), defconfigs)
        for name, (problems, packages) in zip(defconfigs, results):
            for problem in problems:
                print(f"FAIL: {name}: {problem}")
            if not problems:
                print(f"ok: {name}: loads, nothing dropped, minimal, show-info: {packages} packages")
            failed |= bool(problems)

    # Coding style: the files Buildroot reads or runs. external.mk alone in a
    # scratch directory, since check-package skips it next to external.desc.
    files = [os.path.join(external, f) for f in ("Config.in", "external.desc")]
    for folder in ("package/sip-capture", "configs", "patches"):
        for root, _, names in os.walk(os.path.join(external, folder)):
            files += [os.path.join(root, n) for n in sorted(names)]
    for board in ("common", "nanopi-r2s"):
        folder = os.path.join(checkout, "board", board)
        files += [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if n.endswith(".sh")]
    alone = os.path.join(work, "external-mk")
    shutil.rmtree(alone, ignore_errors=True)
    os.makedirs(alone)
    shutil.copy(os.path.join(external, "external.mk"), alone)
    files.append(os.path.join(alone, "external.mk"))
    p = subprocess.run([python, os.path.join(br, "utils/check-package"), "-b"] + files,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    print(p.stdout, end="")
    if p.returncode != 0:
        print("FAIL: check-package")
        failed = True
    else:
        print(f"ok: check-package -b on {len(files)} files")

    print(f"buildroot-check: {'FAILED' if failed else 'passed'} in {time.monotonic() - started:.0f} s")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
