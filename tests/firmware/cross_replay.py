#!/usr/bin/env python3
"""Every static cross binary, run under qemu-user (x86_64 natively),
replays captures from tests/data to a private mosquitto: what arrives must
equal, byte for byte,
what the host build publishes for the same captures (ids, capture
timestamps, addresses, counts). A wrong pcap header layout (the 32-bit musl
time_t trap) garbles every timestamp and length, so this catches it. Also
checks that each binary is static (no ELF interpreter).

    cross_replay.py TRIPLE...     (after `cargo build` and `make cross`)
"""

import os
import struct
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import support  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The host build to compare with: the debug one, which `make test` has built
# already (its envelopes are the release build's).
HOST = os.path.join(ROOT, "target", "debug", "sip-capture")
CAPTURES = [
    "pcaps/wireshark.pcap",  # UDP, Ethernet
    "pcaps/sip-i.pcap",  # IPv4 fragments
    "pcaps/sip-i_vlan100.pcap",  # 802.1Q
    "pcaps/sip-tcp.pcap",  # TCP, Linux SLL
    "pcaps/generated/ipv6-fragments.pcap",
    "pcaps/generated/tcp-out-of-order.pcap",
]
QEMU = {
    "aarch64": "qemu-aarch64-static",
    "armv7": "qemu-arm-static",
    "mipsel": "qemu-mipsel-static",
    "mips": "qemu-mips-static",
    "x86_64": None,  # the host's own architecture
}
PT_INTERP = 3


def has_interpreter(path):
    """Whether the ELF file asks for a dynamic loader (a PT_INTERP header)."""
    with open(path, "rb") as f:
        ident = f.read(16)
        wide, order = ident[4] == 2, "<" if ident[5] == 1 else ">"
        # e_type .. e_phnum of the ELF header, after e_ident.
        layout = order + ("HHIQQQIHHH" if wide else "HHIIIIIHHH")
        fields = struct.unpack(layout, f.read(struct.calcsize(layout)))
        phoff, phentsize, phnum = fields[4], fields[8], fields[9]
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            if struct.unpack(order + "I", f.read(4))[0] == PT_INTERP:
                return True
    return False


def replay(command, capture):
    with support.mosquitto() as port:
        sub = support.Subscriber(port, "firmware/sip")
        subprocess.run(command + ["--config", "/dev/null", "--read", os.path.join(ROOT, "tests", "data", capture),
                                  "--broker", f"mqtt://127.0.0.1:{port}", "--topic", "firmware/sip",
                                  "--log-level", "warn"], check=True, stdout=subprocess.DEVNULL)
        return sub.collect()


def main(triples):
    failed = False
    expected = {capture: replay([HOST], capture) for capture in CAPTURES}
    for triple in triples:
        binary = os.path.join(ROOT, "target", triple, "release", "sip-capture")
        qemu = QEMU[triple.split("-")[0]]
        runner = [qemu] if qemu else []
        if has_interpreter(binary):
            print(f"FAIL {triple}: not static (it has an ELF interpreter)")
            failed = True
        for capture in CAPTURES:
            got = replay(runner + [binary], capture)
            if got == expected[capture]:
                print(f"ok   {triple} {capture}: {len(got)} envelopes identical to the host build's")
            else:
                failed = True
                print(f"FAIL {triple} {capture}: {len(got)} envelopes, host build {len(expected[capture])}")
                for mine, theirs in zip(got, expected[capture]):
                    if mine != theirs:
                        print(f"  first difference:\n  {triple}: {mine[:300]}\n  host: {theirs[:300]}")
                        break
        print(f"size {triple}: {os.path.getsize(binary)} bytes")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
