#!/usr/bin/env python3
"""make qemu-test BOARD=<name>: boot the board's image (from `make image`)
under qemu-system, software emulation, and check it does its job.

The guest has two NICs, as a tap appliance does:
  eth0  management: qemu user networking with restrict=on, whose only way
        out is a guestfwd of 10.0.2.100:1883 to the test's mosquitto on the
        host's loopback (tests/firmware/forward.py);
  eth1  capture: `-netdev dgram` on 127.0.0.1, a mirror port: every UDP
        datagram the test sends to its port arrives as one raw Ethernet frame.
        On boards whose board.env names a CAPTURE_HOTPLUG slot, eth1 is
        plugged in only once the guest is up and waiting for it, as a USB
        NIC that is still enumerating at boot (the NanoPi R2S's) would be.

The test replays the frames of captures from tests/data (UDP, IPv4 and IPv6
fragments, VLAN, TCP) into eth1 and asserts that exactly the envelopes the
host build publishes for the same frames arrive at the host's broker (all
fields but `time`, which is the guest's capture time and is checked to be
now); that / is a read-only squashfs; that the agent runs with the
baked-in configuration, as the unprivileged user it names.

A second instance of the same image boots at the same time, its NICs with
other MAC addresses (its capture NIC always cold-plugged): the two must
name themselves tap-<MAC of eth1> and take CLIENT_IDs of their own,
sip-capture-tap-<MAC of eth1>, which their retained statuses on the
broker show (docs/configuration.md, "The default CLIENT_ID").
"""

import datetime
import json
import os
import shlex
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "..", "board", "scripts"))
import support  # noqa: E402
from make_image import BOARDS, WORK, board_settings  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
HOST_AGENT = os.path.join(ROOT, "target", "debug", "sip-capture")  # as in cross_replay.py
CAPTURES = [
    "pcaps/wireshark.pcap",  # UDP
    "pcaps/sip-i.pcap",  # IPv4 fragments
    "pcaps/sip-i_vlan100.pcap",  # 802.1Q
    "pcaps/generated/ipv6-fragments.pcap",
    "pcaps/generated/tcp-out-of-order.pcap",  # TCP
    "pcaps/generated/tcp-50-in-one-segment.pcap",
]
BOOT_TIMEOUT_S = 300  # TCG on a busy 2-core machine
FRAME_GAP_S = 0.002
CAPTURE_NIC = "virtio-net-pci,netdev=mirror,romfile="
# The NICs' MAC addresses (management, capture) of each instance: not
# qemu's default, which every instance shares, as appliances share an image.
MACS = [("52:54:00:5c:01:00", "52:54:00:5c:01:01"), ("52:54:00:5c:02:00", "52:54:00:5c:02:01")]
# Console text that means the boot or the agent has failed.
FATAL = ["Kernel panic", "init: cannot", "init: no root disk", "sip-capture: config:"]


def ethernet_frames(path):
    """The frames of a classic pcap file of link type Ethernet."""
    with open(path, "rb") as f:
        data = f.read()
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    assert struct.unpack(order + "I", data[20:24])[0] == 1, f"{path}: not Ethernet"
    frames, at = [], 24
    while at + 16 <= len(data):
        caplen = struct.unpack(order + "I", data[at + 8:at + 12])[0]
        frames.append(data[at + 16:at + 16 + caplen])
        at += 16 + caplen
    return frames


def write_pcap(path, frames, start):
    """The frames as one pcap, FRAME_GAP_S apart from `start` (as sent)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for n, frame in enumerate(frames):
            micros = int((start + n * FRAME_GAP_S) * 1e6)
            f.write(struct.pack("<IIII", micros // 1_000_000, micros % 1_000_000, len(frame), len(frame)))
            f.write(frame)


def replay(sender, qemu_port, frames):
    """The frames into the guest's capture NIC, FRAME_GAP_S apart."""
    for frame in frames:
        sender.sendto(frame, ("127.0.0.1", qemu_port))
        time.sleep(FRAME_GAP_S)


def without_time(envelopes):
    return [{k: v for k, v in e.items() if k != "time"} for e in envelopes]


def expected_envelopes(frames):
    """What the host build publishes for these frames, read from a file."""
    with support.mosquitto() as port, tempfile.TemporaryDirectory() as tmp:
        pcap = os.path.join(tmp, "frames.pcap")
        write_pcap(pcap, frames, time.time())
        sub = support.Subscriber(port, "expected")
        subprocess.run([HOST_AGENT, "--config", "/dev/null", "--read", pcap, "--broker", f"mqtt://127.0.0.1:{port}",
                        "--topic", "expected", "--log-level", "warn"], check=True, stdout=subprocess.DEVNULL)
        return support.envelopes(sub.collect())


def qemu_command(settings, out, broker_port, capture_port, qemu_port, macs, hotplug, monitor_path):
    """The qemu command line of one instance; its capture NIC is plugged
    later through the monitor at `monitor_path` when `hotplug`."""
    forward = f"python3 {os.path.join(HERE, 'forward.py')} {broker_port}"
    assert "," not in forward, "qemu would split the guestfwd command at a comma"
    return [
        settings["QEMU_SYSTEM"], *shlex.split(settings["QEMU_MACHINE"]), "-m", "256", "-nographic", "-no-reboot",
        "-kernel", os.path.join(out, "kernel"), "-initrd", os.path.join(out, "initramfs.cpio.gz"),
        "-append", f"console={settings['CONSOLE']} panic=-1 quiet",
        "-drive", f"file={os.path.join(out, 'rootfs.squashfs')},if=none,format=raw,id=root,readonly=on",
        "-device", "virtio-blk-pci,drive=root",
        "-netdev", f"user,id=mgmt,restrict=on,guestfwd=tcp:10.0.2.100:1883-cmd:{forward}",
        "-device", f"virtio-net-pci,netdev=mgmt,romfile=,mac={macs[0]}",
        "-netdev", f"dgram,id=mirror,local.type=inet,local.host=127.0.0.1,local.port={qemu_port},"
                   f"remote.type=inet,remote.host=127.0.0.1,remote.port={capture_port}",
        *(["-device", f"{settings['CAPTURE_HOTPLUG']},id=capture-slot,chassis=1",
           "-monitor", f"unix:{monitor_path},server=on,wait=off"]
          if hotplug else ["-device", f"{CAPTURE_NIC},mac={macs[1]}"]),
    ]


def monitor(out, command):
    """One command to qemu's human monitor; fails on an error reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(monitor_path(out))
        sock.settimeout(10)
        sock.sendall(command.encode() + b"\n")
        reply, deadline = b"", time.monotonic() + 10
        while not (command.encode() in reply and reply.rstrip().endswith(b"(qemu)")) and time.monotonic() < deadline:
            reply += sock.recv(4096)
    if b"Error" in reply:
        raise AssertionError(f"qemu: {command}: {reply.decode(errors='replace')}")


def monitor_path(out):
    return os.path.join(out, "monitor.sock")


def plug_capture_nic(out):
    monitor(out, f"device_add {CAPTURE_NIC},mac={MACS[0][1]},bus=capture-slot,id=capture-nic")


def unplug_capture_nic(out):
    monitor(out, "device_del capture-nic")


class Console:
    """The guest's serial console, which qemu writes to a log file (never
    a pipe, which a guest nobody reads for a while would fill), read as it
    comes."""

    def __init__(self, proc, log_path):
        self.proc, self.text = proc, ""
        self.log = open(log_path, "rb")

    def read(self):
        chunk = self.log.read()
        if chunk:
            self.text += chunk.decode("utf-8", "replace")

    def wait_for(self, needle, timeout, times=1):
        """Until `needle` has shown `times` times; fails at once on a sign
        that it never will."""
        deadline = time.monotonic() + timeout
        while self.text.count(needle) < times:
            fatal = [sign for sign in FATAL if sign in self.text]
            if fatal or self.proc.poll() is not None or time.monotonic() > deadline:
                self.read()
                if self.text.count(needle) >= times:
                    return
                raise AssertionError(f"console: no {needle!r} (#{times}) within {timeout} s (qemu exit "
                                     f"{self.proc.poll()}); last lines:\n" + "\n".join(self.text.splitlines()[-25:]))
            time.sleep(0.2)
            self.read()


def baked_config(settings):
    """KEY=value lines of the board's /etc/sip-capture.conf (last overlay wins)."""
    lines = []
    for overlay in settings["OVERLAYS"].split():
        path = os.path.join(BOARDS, overlay, "etc", "sip-capture.conf")
        if os.path.exists(path):
            lines = [line.strip() for line in open(path) if line.strip() and not line.startswith("#")]
    return lines


def hardware_id(mac):
    """The id the image forms from its capture NIC's MAC address."""
    return mac.replace(":", "").lower()


def start_qemu(settings, out, broker_port, instance, hotplug):
    """Instance `instance` (0 or 1) of the image, its console logged in
    out/console.log (console-2.log for the second); returns (qemu, the
    console, the socket that feeds its mirror port, that port)."""
    capture_port, qemu_port = support.free_port(), support.free_port()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", capture_port))
    log_path = os.path.join(out, "console.log" if instance == 0 else f"console-{instance + 1}.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(qemu_command(settings, out, broker_port, capture_port, qemu_port, MACS[instance],
                                             hotplug, monitor_path(out)),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    return proc, Console(proc, log_path), sender, qemu_port


def retained_statuses(broker_port):
    """topic -> payload of every retained status under sip/tap/status/."""
    out = subprocess.run(["mosquitto_sub", "-p", str(broker_port), "-t", "sip/tap/status/+", "-v", "-W", "2",
                          "--retained-only"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def main(board):
    settings = board_settings(board)
    out = os.path.join(WORK, board)
    for name in ["kernel", "initramfs.cpio.gz", "rootfs.squashfs"]:
        if not os.path.exists(os.path.join(out, name)):
            sys.exit(f"qemu-test: {out}/{name} is missing; run `make image BOARD={board}` first")
    frames = [frame for capture in CAPTURES for frame in ethernet_frames(os.path.join(ROOT, "tests", "data", capture))]
    expected = expected_envelopes(frames)
    failures = []

    with support.mosquitto() as broker_port:
        sub = support.Subscriber(broker_port, "sip/tap")
        sub.start()
        started = time.monotonic()
        hotplug = bool(settings.get("CAPTURE_HOTPLUG"))
        proc, console, sender, qemu_port = start_qemu(settings, out, broker_port, 0, hotplug)
        log_path = console.log.name
        # The second instance boots meanwhile (qemu's TCG uses one core per
        # instance); it is only checked for its identity.
        proc2, console2, sender2, _ = start_qemu(settings, out, broker_port, 1, False)
        try:
            if settings.get("CAPTURE_HOTPLUG"):
                console.wait_for("start-sip-capture: waiting for capture port", BOOT_TIMEOUT_S)
                time.sleep(2)  # waiting a while, as for a slow USB NIC
                plug_capture_nic(out)
                console.wait_for("start-sip-capture: waited", 60)
                print(f"{board}: capture NIC plugged in after boot; "
                      + next(line for line in console.text.splitlines() if "start-sip-capture: waited" in line))
            console.wait_for("connected to broker", BOOT_TIMEOUT_S)
            print(f"{board}: booted and connected in {time.monotonic() - started:.1f} s")
            sent_at = datetime.datetime.now(datetime.timezone.utc)
            replay(sender, qemu_port, frames)
            sub.wait_for(len(expected), 120)
            rounds = 1
            if settings.get("CAPTURE_HOTPLUG"):
                # The NIC goes away (a USB reset, a replug) and comes back:
                # the agent ends, init restarts it through start-sip-capture,
                # which sets the new port up before the agent opens it.
                unplug_capture_nic(out)
                console.wait_for("start-sip-capture: waiting for capture port", 60, times=2)
                plug_capture_nic(out)
                console.wait_for("connected to broker", 120, times=2)
                print(f"{board}: capture NIC unplugged and plugged back; the agent started again on it")
                replay(sender, qemu_port, frames)
                rounds = 2
                sub.wait_for(rounds * len(expected), 120)
            time.sleep(1)  # anything beyond the expected would show now
            arrived = support.envelopes(sub.collect())
            done_at = datetime.datetime.now(datetime.timezone.utc)
            console2.wait_for("connected to broker", BOOT_TIMEOUT_S)
            print(f"{board}: second instance connected {time.monotonic() - started:.1f} s after the first started")
            statuses = retained_statuses(broker_port)
        finally:
            for p in (proc, proc2):
                p.kill()
                p.wait()
            sender2.close()
            console.read()
            console2.read()

    if without_time(arrived) != rounds * without_time(expected):
        failures.append(f"{len(arrived)} envelopes arrived, {rounds} x {len(expected)} expected (first difference: "
                        f"{first_difference(without_time(arrived), rounds * without_time(expected))})")
    for envelope in arrived:
        when = datetime.datetime.fromisoformat(envelope["time"].replace("Z", "+00:00"))
        if not sent_at - datetime.timedelta(seconds=5) <= when <= done_at + datetime.timedelta(seconds=5):
            failures.append(f"capture time {envelope['time']} is not the time it was sent ({sent_at.isoformat()})")
            break
    text = console.text
    root_line = next((line for line in text.splitlines() if "rcS: root file system:" in line), "")
    if "squashfs ro" not in root_line:
        failures.append(f"/ is not a read-only squashfs: {root_line!r}")
    if "rcS: root file system is read-only" not in text:
        failures.append("writing to / did not fail")
    for line in baked_config(settings):
        if f"start-sip-capture:   {line}" not in text:
            failures.append(f"the agent does not run with the baked-in {line}")
    user = next((line.split("=", 1)[1] for line in baked_config(settings) if line.startswith("RUN_AS_USER=")), None)
    if user and f"running as user {user}" not in text:
        failures.append(f"the agent does not run as {user}")
    # Each instance its own identity, from its capture NIC's MAC address.
    for n, instance_console in enumerate([console, console2]):
        host = f"tap-{hardware_id(MACS[n][1])}"
        if f"start-sip-capture: hostname {host}\n" not in instance_console.text.replace("\r", ""):
            failures.append(f"instance {n + 1}: hostname is not {host}: "
                            + next((line for line in instance_console.text.splitlines()
                                    if "start-sip-capture: hostname" in line), "no hostname line"))
        if f"start-sip-capture:   CLIENT_ID=sip-capture-{host}" not in instance_console.text:
            failures.append(f"instance {n + 1}: CLIENT_ID is not sip-capture-{host}")
    want = {f"sip/tap/status/sip-capture-tap-{hardware_id(macs[1])}" for macs in MACS}
    if set(statuses) != want:
        failures.append(f"retained statuses on {sorted(statuses)}, want one on each of {sorted(want)}")
    print(f"{board}: two instances, retained statuses: {statuses}")

    print(f"{board}: {len(arrived)} envelopes arrived from {rounds} x {len(frames)} frames, "
          f"{rounds * len(expected)} expected")
    print(f"{board}: {root_line.strip()}")
    for failure in failures:
        print(f"FAIL {board}: {failure}")
    print(f"{board}: console log in {log_path}")
    return 1 if failures else 0


def first_difference(got, want):
    for n, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return f"#{n}: got {json.dumps(a)[:200]} want {json.dumps(b)[:200]}"
    return f"lengths {len(got)} and {len(want)}"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: qemu_test.py BOARD")
    sys.exit(main(sys.argv[1]))
