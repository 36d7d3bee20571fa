#!/usr/bin/env python3
"""Write the small reassembly captures in tests/data/pcaps/generated/.

Each capture X.pcap comes with X.expected: the SIP messages sip-capture must
publish from it, in order, as a JSON list of strings. Deterministic: running
it again writes the same bytes. Standard library only.

    python3 tests/data/make_captures.py
"""

import json
import os
import struct
import time
import zlib

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pcaps", "generated")
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
T0 = 1_700_000_000


def sip(method, n, body=""):
    """A small SIP request with a distinct Call-ID."""
    return (
        f"{method} sip:bob@192.0.2.2 SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 192.0.2.1:5080;branch=z9hG4bK-{method.lower()}-{n}\r\n"
        f"From: <sip:alice@192.0.2.1>;tag={n}\r\n"
        f"To: <sip:bob@192.0.2.2>\r\n"
        f"Call-ID: {n}@generated\r\n"
        f"CSeq: {n} {method}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    )


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(src, dst, proto, payload, ident=1, offset=0, more=False, total_length=None):
    """total_length: the header's field, if not the true length (0 on a
    segmentation-offload super-packet seen on the sending host)."""
    flags = (0x2000 if more else 0) | (offset // 8)
    total = 20 + len(payload) if total_length is None else total_length
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident, flags, 64, proto, 0,
                         bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def ipv6_addr(text):
    head, _, tail = text.partition("::")
    h = [int(x, 16) for x in head.split(":") if x]
    t = [int(x, 16) for x in tail.split(":") if x]
    return struct.pack("!8H", *(h + [0] * (8 - len(h) - len(t)) + t))


def ipv6(src, dst, next_header, payload):
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), next_header, 64,
                       ipv6_addr(src), ipv6_addr(dst)) + payload


def ipv6_fragment(src, dst, proto, data, offset, more, ident):
    frag = struct.pack("!BBHI", proto, 0, offset | (1 if more else 0), ident)
    return ipv6(src, dst, 44, frag + data)


def udp(sport, dport, payload):
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp(sport, dport, seq, payload=b"", flags=0x18):
    return struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, 1, 5 << 4, flags, 65535, 0, 0) + payload


def ether(ip_packet, ether_type=0x0800, tags=()):
    """An Ethernet frame; `tags`: VLAN tags (TPID, VLAN id), outermost first."""
    tagged = b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in tags)
    return MAC_B + MAC_A + tagged + struct.pack("!H", ether_type) + ip_packet


def vlan_encap(tags):
    """The envelope's `encap` for a frame with VLAN `tags` (TPID, VLAN id):
    None when untagged."""
    return "/".join(f"vlan:{vid}" for _, vid in tags) or None


def rfc3339(micros):
    """A capture time as the envelope writes it: UTC, microseconds, Z."""
    secs, frac = divmod(micros, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:06d}Z"


class Pcap:
    """A classic pcap file being written, and what the agent must publish
    from it.

    X.expected is a JSON object: "messages", each with the exact "sip" text,
    "time" (the capture time of the frame that completed it), "src", "dst"
    and "transport" as the envelope has them, in publishing order; and
    optionally "counters" (summary values that must match exactly),
    "args" (extra command-line arguments for the replay) and "exit" (the
    agent's exit status, 0 when absent)."""

    def __init__(self, name, linktype=1, snaplen=65535):
        self.name = name
        self.linktype = linktype
        self.snaplen = snaplen


        self.snaplen = snaplen  # frames longer than this are cut, as by tcpdump -s
        self.frames = []  # (capture time in microseconds since the epoch, bytes)
        self.messages = []

    def add(self, frame, at=None):
        """Append a frame captured at `at` microseconds since the epoch
        (default: 1 ms after the previous frame, the first at T0). Returns
        its capture time."""
        if at is None:
            at = self.frames[-1][0] + 1000 if self.frames else T0 * 1_000_000
        self.frames.append((at, frame))
        return at

    def last(self):
        """The capture time of the newest frame."""
        return self.frames[-1][0]

    def expect(self, msg, at, src, dst, transport, encap=None):
        """The agent must publish `msg` (str or bytes) stamped `at`, found
        inside the tags and tunnels `encap` names (the envelope's field;
        None for a plain frame)."""
        text = msg if isinstance(msg, str) else msg.decode()
        message = {"time": rfc3339(at), "transport": transport, "src": src, "dst": dst}
        if encap:
            message["encap"] = encap
        message["sip"] = text
        self.messages.append(message)

    def write(self, counters=None, args=None):
        os.makedirs(OUT, exist_ok=True)
        with open(os.path.join(OUT, self.name + ".pcap"), "wb") as f:
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, self.snaplen, self.linktype))
            for at, frame in self.frames:
                secs, micros = divmod(at, 1_000_000)
                captured = frame[:self.snaplen]  # caplen < orig len when cut
                f.write(struct.pack("<IIII", secs, micros, len(captured), len(frame)))
                f.write(captured)
        expected = {"messages": self.messages}
        if counters:
            expected["counters"] = counters
        if args:
            expected["args"] = args
        with open(os.path.join(OUT, self.name + ".expected"), "w") as f:
            json.dump(expected, f, indent=1)
            f.write("\n")


CLIENT, SERVER = "192.0.2.1:40000", "192.0.2.2"


class Stream:
    """One direction of a TCP connection, client 192.0.2.1:40000 -> server.

    It remembers which bytes each frame carried, so `expect` can stamp a
    message with the capture time of the frame that completed it in order
    (the stream is assumed to have no hole before the message)."""

    def __init__(self, pcap, dport=5080, isn=1000, syn=True, tags=()):
        self.pcap, self.dport, self.seq, self.tags = pcap, dport, isn, tags
        self.base = isn + 1 if syn else isn
        self.carried = []  # (capture time, first sequence number, length)
        if syn:
            self.segment(b"", flags=0x02)
            self.seq += 1

    @property
    def dst(self):
        return f"{SERVER}:{self.dport}"

    def segment(self, payload, seq=None, flags=0x18, at=None, total_length=None):
        seq = self.seq if seq is None else seq
        packet = ipv4("192.0.2.1", "192.0.2.2", 6, tcp(40000, self.dport, seq, payload, flags),
                      total_length=total_length)
        at = self.pcap.add(ether(packet, tags=self.tags), at)
        if payload:
            self.carried.append((at, seq, len(payload)))
        return at

    def send(self, payload, at=None, total_length=None):
        at = self.segment(payload, at=at, total_length=total_length)
        self.seq += len(payload)
        return at

    def lose(self, payload):
        """A segment the capture never got (lost before the tap, dropped by
        the kernel): its bytes are a hole in the stream."""
        self.seq += len(payload)

    def completed_at(self, end, since=None):
        """When the bytes from the stream's start (or from `since`, where
        the stream resynchronised after a hole) to sequence `end` were
        first all captured."""
        have = self.base if since is None else since
        pending = []
        for at, seq, length in self.carried:
            pending.append((seq, seq + length))
            grew = True
            while grew:
                grew = False
                for a, b in pending:
                    if a <= have < b:
                        have, grew = b, True
            if have >= end:
                return at
        raise ValueError(f"sequence {end} never completed")

    def expect_one(self, msg, end, since=None):
        """Expect `msg`, whose last byte is before sequence `end`."""
        self.pcap.expect(msg, self.completed_at(end, since), CLIENT, self.dst, "tcp", vlan_encap(self.tags))

    def expect(self, msgs, start=None, since=None):
        """Expect `msgs`, laid out back to back from sequence `start`
        (default: the stream's first byte), each at its completion time
        (counted from `since` when the stream resynchronised there)."""
        at = self.base if start is None else start
        for m in msgs:
            at += len(m.encode() if isinstance(m, str) else m)
            self.pcap.expect(m, self.completed_at(at, since), CLIENT, self.dst, "tcp", vlan_encap(self.tags))


def out_of_order():
    p, msgs = Pcap("tcp-out-of-order"), [sip("INVITE", 1, "v=0\r\n"), sip("ACK", 1), sip("BYE", 1)]
    s = Stream(p)
    data = "".join(msgs).encode()
    cuts = [0, 150, 420, len(data)]
    chunks = [(s.seq + a, data[a:b]) for a, b in zip(cuts, cuts[1:])]
    for seq, chunk in [chunks[0], chunks[2], chunks[1]]:
        s.segment(chunk, seq=seq)
    s.expect(msgs)
    p.write(counters={"tcp_out_of_order": 1})


def retransmissions():
    p, msgs = Pcap("tcp-retransmissions"), [sip("REGISTER", n) for n in range(3)]
    s = Stream(p)
    data = "".join(msgs).encode()
    base = s.seq
    for a in range(0, len(data), 200):
        s.segment(data[a:a + 200], seq=base + a)
        s.segment(data[a:a + 200], seq=base + a)  # exact retransmission
    s.segment(data[100:500], seq=base + 100)  # overlaps delivered bytes only
    s.expect(msgs)
    p.write(counters={"tcp_retransmissions": 5})


def byte_by_byte():
    p, msg = Pcap("tcp-byte-by-byte"), sip("OPTIONS", 7)
    s = Stream(p)
    for byte in msg.encode():
        s.send(bytes([byte]))
    s.expect([msg])
    p.write()


def fifty_in_one_segment():
    p, msgs = Pcap("tcp-50-in-one-segment"), [sip("NOTIFY", n) for n in range(50)]
    s = Stream(p, dport=6060, syn=False)  # mid-stream, no handshake seen
    s.send("".join(msgs).encode())
    s.expect(msgs)
    p.write(counters={"tcp_junk_lines": 0})


def keepalives():
    p, msgs = Pcap("tcp-keepalives"), [sip("OPTIONS", n) for n in range(3)]
    s = Stream(p)
    s.send(b"\r\n\r\n")
    s.send(msgs[0].encode() + b"\r\n\r\n")
    s.expect_one(msgs[0], s.seq - 4)
    s.send(b"\r\n")
    s.send(b"\r\n\r\n" + msgs[1].encode())
    s.expect_one(msgs[1], s.seq)
    s.send(b"\r\n\r\n")
    s.send(msgs[2].encode())
    s.expect_one(msgs[2], s.seq)
    p.write(counters={"tcp_junk_lines": 0})


def cut_mid_message():
    p, msgs = Pcap("tcp-cut-mid-message"), [sip("INVITE", 1, "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"), sip("BYE", 1)]
    s = Stream(p)
    s.send(msgs[0].encode() + msgs[1].encode()[:60])
    s.expect(msgs[:1])
    p.write()


def overlapping_fragments():
    msg = sip("INVITE", 3, "v=0\r\n" + "a=x-pad:" + "p" * 300 + "\r\n")
    datagram = udp(5060, 5060, msg.encode())
    p = Pcap("ip-overlapping-fragments")
    pieces = [(0, 200), (192, 400), (400, len(datagram))]  # 192..200 overlaps
    for a, b in reversed(pieces):
        p.add(ether(ipv4("192.0.2.1", "192.0.2.2", 17, datagram[a:b], ident=77, offset=a, more=b < len(datagram))))
    p.expect(msg, p.frames[0][0], "192.0.2.1:5060", "192.0.2.2:5060", "udp")
    p.add(ether(ipv4("192.0.2.1", "192.0.2.2", 17, datagram[0:200], ident=77, offset=0, more=True)))  # duplicate
    # The duplicate first fragment came after the datagram was complete: it
    # starts a datagram of its own, which never completes.
    p.write(counters={"frag_overlaps": 1, "frag_reassembled": 1, "frag_expired": 1})


def tiny_fragments():
    msg = sip("MESSAGE", 4, "short fragments, as some carriers send")
    datagram = udp(5060, 5060, msg.encode())
    p = Pcap("ip-tiny-fragments")
    for a in range(0, len(datagram), 16):
        b = min(a + 16, len(datagram))
        p.add(ether(ipv4("192.0.2.1", "192.0.2.2", 17, datagram[a:b], ident=78, offset=a, more=b < len(datagram))))
    p.expect(msg, p.frames[0][0], "192.0.2.1:5060", "192.0.2.2:5060", "udp")
    p.write()


def ipv6_fragments():
    msg = sip("INVITE", 6, "v=0\r\n" + "a=x-pad:" + "q" * 1200 + "\r\n")
    src, dst = "2001:db8::1", "2001:db8::2"
    data = udp(5060, 5060, msg.encode())
    p = Pcap("ipv6-fragments")
    cuts = [0, 504, 1008, len(data)]
    frames = [ipv6_fragment(src, dst, 17, data[a:b], a, b < len(data), 0xABCDEF) for a, b in zip(cuts, cuts[1:])]
    for frame in [frames[1], frames[2], frames[0]]:
        p.add(ether(frame, 0x86DD))
    p.expect(msg, p.frames[0][0], "[2001:db8::1]:5060", "[2001:db8::2]:5060", "udp")
    p.write()


def link_types():
    """The same two messages over the link types no shared capture has:
    Linux cooked v2 (276), BSD loopback (0) and raw IPv6 (229)."""
    msgs = [sip("OPTIONS", 8), sip("NOTIFY", 9)]
    v4 = [ipv4("192.0.2.1", "192.0.2.2", 17, udp(5060, 5062, m.encode())) for m in msgs]
    sll2 = Pcap("link-sll2", 276)
    for m, packet in zip(msgs, v4):
        # protocol, reserved, ifindex, hatype, pkttype, halen, address
        at = sll2.add(struct.pack("!HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, MAC_A + b"\0\0") + packet)
        sll2.expect(m, at, "192.0.2.1:5060", "192.0.2.2:5062", "udp")
    sll2.write()
    null = Pcap("link-null", 0)
    for m, packet in zip(msgs, v4):
        at = null.add(struct.pack("<I", 2) + packet)  # AF_INET, little-endian host
        null.expect(m, at, "192.0.2.1:5060", "192.0.2.2:5062", "udp")
    null.write()
    raw6 = Pcap("link-raw-ipv6", 229)
    for m in msgs:
        at = raw6.add(ipv6("2001:db8::1", "2001:db8::2", 17, udp(5060, 5062, m.encode())))
        raw6.expect(m, at, "[2001:db8::1]:5060", "[2001:db8::2]:5062", "udp")
    raw6.write()


def udp_framing():
    """RFC 3261 18.3: a UDP message ends at its Content-Length; what follows
    in the datagram is discarded and counted. Without a usable
    Content-Length the datagram is the message. The SIP-Version of a status
    line in any case (7.1)."""
    p = Pcap("udp-content-length-framing")
    src, dst = "192.0.2.1:5060", "192.0.2.2:5060"
    invite = sip("INVITE", 20, "v=0\r\n")
    second = sip("BYE", 20)
    no_length = "OPTIONS sip:bob@192.0.2.2 SIP/2.0\r\nCall-ID: 21@generated\r\n\r\n\r\n"
    overlong = sip("MESSAGE", 22, "hello")[:-2]  # claims 5 body bytes, has 3
    lowercase = ("sip/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-23\r\n"
                 "Call-ID: 23@generated\r\nCSeq: 23 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    trailing = 0
    for message, after in [(invite, b"\0" * 8), (invite, b"\r\n\r\n"), (invite, b"junk junk"),
                           (invite, second.encode()), (no_length, b""), (overlong, b""), (lowercase, b"")]:
        at = p.add(ether(ipv4("192.0.2.1", "192.0.2.2", 17, udp(5060, 5060, message.encode() + after))))
        p.expect(message, at, src, dst, "udp")
        trailing += len(after)
    p.write(counters={"udp_trailing_bytes": trailing, "sip_messages": 7, "not_sip": 0})


# --- Files as users have them: pcapng, 2038+, byte orders, cut short -------


def write_expected(name, messages, counters=None, args=None, exit_status=None):
    """X.expected beside X.pcap or X.pcapng: see Pcap."""
    expected = {"messages": messages}
    if counters:
        expected["counters"] = counters
    if args:
        expected["args"] = args
    if exit_status:
        expected["exit"] = exit_status
    with open(os.path.join(OUT, name + ".expected"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


def units(resolution):
    """Timestamp units per second of an if_tsresol byte (pcapng §4.2)."""
    return 2 ** (resolution & 0x7F) if resolution & 0x80 else 10 ** resolution


class PcapNg:
    """A pcapng file: one section, interfaces of their own link type, snap
    length, if_tsresol and if_tsoffset, and Enhanced Packet Blocks (with
    options) in either byte order; and what the agent must publish from it.

    Times are given in nanoseconds since the epoch; each packet's is
    written in its interface's units, and the envelope's time is that value
    truncated to microseconds, as the agent reads it."""

    def __init__(self, name, big_endian=False):
        self.name, self.order = name, ">" if big_endian else "<"
        self.interfaces, self.blocks, self.messages = [], [], []

    def block(self, kind, body):
        body += b"\0" * (-len(body) % 4)
        length = 12 + len(body)
        self.blocks.append(struct.pack(self.order + "II", kind, length) + body + struct.pack(self.order + "I", length))

    def option(self, code, value):
        return struct.pack(self.order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)

    def interface(self, linktype, snaplen, resolution=6, offset=0, name=None):
        """Add an IDB; returns its interface id."""
        options = b""
        if name:
            options += self.option(2, name.encode())
        if resolution != 6:
            options += self.option(9, bytes([resolution]))
        if offset:
            options += self.option(14, struct.pack(self.order + "q", offset))
        if options:
            options += self.option(0, b"")
        self.block(1, struct.pack(self.order + "HHI", linktype, 0, snaplen) + options)
        self.interfaces.append((resolution, offset))
        return len(self.interfaces) - 1

    def add(self, interface, frame, at_ns, comment=None):
        """An EPB on `interface` captured at `at_ns`; returns the time the
        agent reads, in microseconds since the epoch."""
        resolution, offset = self.interfaces[interface]
        per_second = units(resolution)
        ts = (at_ns - offset * 10**9) * per_second // 10**9
        options = self.option(2, struct.pack(self.order + "I", 1))  # epb_flags: inbound
        if comment:
            options += self.option(1, comment.encode())
        options += self.option(0, b"")
        padded = frame + b"\0" * (-len(frame) % 4)
        self.block(6, struct.pack(self.order + "IIIII", interface, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame))
                   + padded + options)
        return (ts // per_second + offset) * 1_000_000 + ts % per_second * 1_000_000 // per_second

    def statistics(self, interface):
        """An Interface Statistics Block: not a packet, skipped."""
        self.block(5, struct.pack(self.order + "III", interface, 0, 0) + self.option(0, b""))

    def expect(self, msg, at, src, dst, transport="udp"):
        self.messages.append({"time": rfc3339(at), "transport": transport, "src": src, "dst": dst, "sip": msg})

    def write(self, counters=None, args=None, exit_status=None, cut=0):
        """Write X.pcapng; `cut` bytes are left off its end."""
        shb = struct.pack(self.order + "IHHq", 0x1A2B3C4D, 1, 0, -1) + self.option(4, b"make_captures.py") + self.option(0, b"")
        body = shb + b"\0" * (-len(shb) % 4)
        head = struct.pack(self.order + "II", 0x0A0D0D0A, 12 + len(body)) + body + struct.pack(self.order + "I", 12 + len(body))
        data = head + b"".join(self.blocks)
        with open(os.path.join(OUT, self.name + ".pcapng"), "wb") as f:
            f.write(data[:len(data) - cut])
        write_expected(self.name, self.messages, counters, args, exit_status)


def sll(ip_packet, ether_type=0x0800):
    """Linux cooked capture v1 (link type 113): an incoming packet."""
    return struct.pack("!HHH8sH", 0, 1, 6, MAC_A + b"\0\0", ether_type) + ip_packet


# 2071-03-02T12:00:00Z, past 2038 (signed 32-bit) and below 2106 (unsigned).
T2071 = 3_192_523_200


def merged(name, args=None, counters=None, port_filter=None):
    """What mergecap makes of captures from different hosts: Ethernet with
    nanosecond times, Linux cooked with microseconds, raw IPv4 with 2^-20 s
    units and an if_tsoffset, raw IPv6 with milliseconds, and an interface
    of a link type sip-capture does not decode; packets interleaved by time."""
    p = PcapNg(name)
    eth = p.interface(1, 262144, resolution=9, name="eth0")
    cooked = p.interface(113, 65535, name="any")
    raw = p.interface(101, 1500, resolution=0x80 | 20, offset=T0, name="tun0")
    raw6 = p.interface(229, 9000, resolution=3)
    other = p.interface(147, 128)
    t = T0 * 10**9 + 123_456_789
    sends = [
        (eth, lambda m, sp, dp: ether(ipv4("192.0.2.1", "192.0.2.2", 17, udp(sp, dp, m))), "192.0.2.1", "192.0.2.2"),
        (cooked, lambda m, sp, dp: sll(ipv4("198.51.100.1", "198.51.100.2", 17, udp(sp, dp, m))), "198.51.100.1", "198.51.100.2"),
        (raw, lambda m, sp, dp: ipv4("203.0.113.1", "203.0.113.2", 17, udp(sp, dp, m)), "203.0.113.1", "203.0.113.2"),
        (raw6, lambda m, sp, dp: ipv6("2001:db8::1", "2001:db8::2", 17, udp(sp, dp, m)), "[2001:db8::1]", "[2001:db8::2]"),
    ]
    n = 40
    for round_ in range(2):
        for interface, frame, src, dst in sends:
            n += 1
            dport = 5060 if round_ == 0 else 5062
            msg = sip("OPTIONS", n)
            at = p.add(interface, frame(msg.encode(), 5060, dport), t, comment="merged" if n == 41 else None)
            if port_filter is None or dport == port_filter:
                p.expect(msg, at, f"{src}:5060", f"{dst}:{dport}")
            t += 1_234_567
        p.add(other, b"\x01\x02\x03\x04", t)
        t += 1_000
    p.statistics(eth)
    p.write(counters=counters, args=args)


def pcapng_merged():
    merged("pcapng-merged", counters={"packets": 10, "link_unsupported": 2, "sip_messages": 8, "bpf_filtered": 0})


def pcapng_merged_bpf():
    """BPF_FILTER still applies, compiled for each link type: the 5062
    messages and the undecodable frames are filtered out and counted."""
    merged("pcapng-merged-bpf", args=["--bpf-filter", "udp dst port 5060"], port_filter=5060,
           counters={"packets": 4, "link_unsupported": 0, "sip_messages": 4, "bpf_filtered": 6})


def classic(name, order, magic, records, linktype=1):
    """A classic pcap file of `records` (seconds, fraction, frame) in byte
    order `order` ("<" or ">"), microsecond or nanosecond `magic`."""
    with open(os.path.join(OUT, name + ".pcap"), "wb") as f:
        f.write(struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype))
        for secs, fraction, frame in records:
            f.write(struct.pack(order + "IIII", secs, fraction, len(frame), len(frame)) + frame)


def after_2038():
    """The pcap seconds field is unsigned: 2071 is 2071, not 1970, in
    microsecond and nanosecond files of both byte orders; and a pcapng in
    big-endian byte order with nanosecond times of 2071."""
    for name, order, magic, per_second in [("pcap-2071", "<", 0xA1B2C3D4, 10**6),
                                           ("pcap-2071-nanoseconds-big-endian", ">", 0xA1B23C4D, 10**9)]:
        records, messages = [], []
        for n, fraction in [(71, 0), (72, per_second - 1)]:
            msg = sip("INVITE", n)
            records.append((T2071 + n, fraction, ether(ipv4("192.0.2.1", "192.0.2.2", 17, udp(5060, 5060, msg.encode())))))
            at = (T2071 + n) * 1_000_000 + fraction * 1_000_000 // per_second
            messages.append({"time": rfc3339(at), "transport": "udp", "src": "192.0.2.1:5060",
                             "dst": "192.0.2.2:5060", "sip": msg})
        classic(name, order, magic, records)
        write_expected(name, messages)
    p = PcapNg("pcapng-2071-big-endian", big_endian=True)
    eth = p.interface(1, 65535, resolution=9)
    msg = sip("BYE", 73)
    at = p.add(eth, ether(ipv4("192.0.2.1", "192.0.2.2", 17, udp(5060, 5060, msg.encode()))), T2071 * 10**9 + 999_999_999)
    p.expect(msg, at, "192.0.2.1:5060", "192.0.2.2:5060")
    p.write()


def cut_short():
    """A capture killed while writing its last record: every whole record
    is published, the summary counts file_cut_short, exit status 3."""
    msgs = [sip("REGISTER", n) for n in range(3)]
    frames = [ether(ipv4("192.0.2.1", "192.0.2.2", 17, udp(5060, 5060, m.encode()))) for m in msgs]
    p = Pcap("pcap-cut-short")
    for m, frame in zip(msgs, frames):
        at = p.add(frame)
        if m != msgs[-1]:
            p.expect(m, at, "192.0.2.1:5060", "192.0.2.2:5060", "udp")
    p.write(counters={"packets": 2, "file_cut_short": 1})
    path = os.path.join(OUT, p.name + ".pcap")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:-40])  # inside the last frame's SIP bytes
    with open(os.path.join(OUT, p.name + ".expected")) as f:
        expected = json.load(f)
    write_expected(p.name, expected["messages"], expected["counters"], exit_status=3)
    q = PcapNg("pcapng-cut-short")
    eth = q.interface(1, 65535, resolution=9)
    t = T0 * 10**9
    for m, frame in zip(msgs, frames):
        at = q.add(eth, frame, t)
        if m != msgs[-1]:
            q.expect(m, at, "192.0.2.1:5060", "192.0.2.2:5060")
        t += 10**6
    q.write(counters={"packets": 2, "file_cut_short": 1}, exit_status=3, cut=30)  # inside the options


def padded_invite(n, tenant, size):
    """An INVITE of exactly `size` bytes whose body names `tenant`."""
    head = sip("INVITE", n, "")
    body = f"v=0\r\no={tenant} 1 1 IN IP4 10.0.0.1\r\na=x-pad:"
    body += "t" * (size - len(head) - len(str(size)) + 1 - len(body) - 2) + "\r\n"
    msg = sip("INVITE", n, body)
    assert len(msg) == size, (len(msg), size)
    return msg


def tenants_fragments(name, tenants, wrap=lambda packet, tags: ether(packet, tags=tags), encap=vlan_encap):
    """Tenants behind one mirror port, each on its own VLAN tag stack, send
    an INVITE from the same addresses with the same IP ID, in three
    fragments of the same sizes. Fragments arrive interleaved so that, keyed
    on addresses and ID alone, the first datagram to complete takes one
    fragment from each of the first three senders (two tenants: the first's
    head, the second's body) and the second is spliced too."""
    p = Pcap(name)
    msgs = [padded_invite(40 + i, f"tenant-{chr(ord('a') + i)}", 560) for i in range(len(tenants))]
    datagrams = [udp(5060, 5060, m.encode()) for m in msgs]
    cuts = [0, 200, 400, len(datagrams[0])]
    n = len(tenants)
    # Tenant i's fragment (i + k) % 3, for k = 0, 1, 2, tenant by tenant for
    # each k: every tenant starts with a different fragment.
    order = [(i, (i + k) % 3) for k in range(3) for i in range(n)]
    first_seen, completed = {}, []
    for i, f in order:
        a, b = cuts[f], cuts[f + 1]
        frame = ipv4("192.0.2.1", "192.0.2.2", 17, datagrams[i][a:b], ident=0x4242, offset=a,
                     more=b < len(datagrams[i]))
        at = p.add(wrap(frame, tenants[i]))
        first_seen.setdefault(i, at)
        if sum(1 for j, _ in order[:order.index((i, f)) + 1] if j == i) == 3:
            completed.append(i)
    for i in completed:
        p.expect(msgs[i], first_seen[i], "192.0.2.1:5060", "192.0.2.2:5060", "udp", encap(tenants[i]))
    p.write(counters={"frag_reassembled": n, "frag_overlaps": 0, "frag_expired": 0, "frag_invalid": 0})


def fragments_on_two_vlans():
    tenants_fragments("ip-fragments-two-vlans", [[(0x8100, 10)], [(0x8100, 20)]])


def fragments_qinq():
    """QinQ: the same customer tag under two service tags (802.1ad and the
    older 0x9100), and the same datagram untagged."""
    tenants_fragments("ip-fragments-qinq", [[(0x88A8, 100), (0x8100, 10)], [(0x9100, 200), (0x8100, 10)], []])


def tcp_streams_on_vlans():
    """Three TCP connections with the same addresses, ports and initial
    sequence number on VLAN 10, VLAN 20 and QinQ 100/10, interleaved
    segment by segment."""
    p = Pcap("tcp-same-4-tuple-on-vlans")
    tags = [[(0x8100, 10)], [(0x8100, 20)], [(0x88A8, 100), (0x8100, 10)]]
    streams = [Stream(p, tags=t) for t in tags]
    msgs = [[sip("INVITE", 50 + i, f"v=0\r\no=vlan-{i}\r\n"), sip("BYE", 50 + i)] for i in range(3)]
    data = ["".join(m).encode() for m in msgs]
    for at in range(0, max(map(len, data)), 120):
        for s, d in zip(streams, data):
            if at < len(d):
                s.send(d[at:at + 120])
    for s, m in zip(streams, msgs):
        s.expect(m)
    p.messages.sort(key=lambda m: m["time"])
    p.write(counters={"tcp_flows": 3, "tcp_retransmissions": 0, "tcp_out_of_order": 0, "tcp_gaps": 0})


def ipv4_total_length_zero_tcp():
    """Captured on the sending host: segmentation offload hands the capture
    a super-segment whose IPv4 total length is 0 (a driver's TSO; Linux BIG
    TCP above 64 KiB). The frame is longer than an IP length can say."""
    p = Pcap("ipv4-total-length-zero-tcp", snaplen=262144)
    s = Stream(p)
    tso = [sip("NOTIFY", 60 + n, "e" * 300) for n in range(10)]
    big = [sip("MESSAGE", 70, "b" * 40000), sip("MESSAGE", 71, "c" * 30000)]
    after = [sip("BYE", 72)]
    s.send("".join(tso).encode(), total_length=0)
    s.send("".join(big).encode(), total_length=0)
    s.send(after[0].encode())
    s.expect(tso + big + after)
    p.write(counters={"decode_errors": 0})


def ipv4_total_length_zero_udp():
    p = Pcap("ipv4-total-length-zero-udp")
    msgs = [sip("INVITE", 80, "v=0\r\n" + "a=x:" + "u" * 1200 + "\r\n"), sip("ACK", 80)]
    for m, total in zip(msgs, [0, None]):
        at = p.add(ether(ipv4("192.0.2.1", "192.0.2.2", 17, udp(5060, 5060, m.encode()), total_length=total)))
        p.expect(m, at, "192.0.2.1:5060", "192.0.2.2:5060", "udp")
    p.write(counters={"decode_errors": 0})


HOP_BY_HOP, ROUTING, FRAGMENT, DESTINATION_OPTIONS, AUTHENTICATION = 0, 43, 44, 60, 51


def ipv6_extension(kind, next_header, length=8):
    """An IPv6 extension header of `length` bytes (a multiple of 8) with
    padding options (Pad1) or, for Routing, type 4 with no segment left."""
    if kind == AUTHENTICATION:  # RFC 4302: length in 4-octet units, minus 2
        return struct.pack("!BBHII", next_header, length // 4 - 2, 0, 0x100, 1) + b"\0" * (length - 12)
    header = struct.pack("!BB", next_header, length // 8 - 1) + b"\0" * (length - 2)
    if kind == ROUTING:
        header = header[:2] + b"\x04\x00" + header[4:]
    return header


def ipv6_chain(kinds, upper, payload):
    """IPv6 extension headers `kinds` (with lengths) then `upper`: returns
    the first Next Header value and the bytes."""
    data = payload
    next_header = upper
    for kind, length in reversed(kinds):
        data = ipv6_extension(kind, next_header, length) + data
        next_header = kind
    return next_header, data


def ipv6_extension_headers():
    """Unfragmented IPv6 with extension headers in orders RFC 8200 allows,
    an atomic fragment (RFC 6946), the longest chain followed and one header
    more, which is counted and not decoded."""
    p = Pcap("ipv6-extension-headers")
    src, dst = "2001:db8::1", "2001:db8::2"
    chains = [
        [(HOP_BY_HOP, 8), (DESTINATION_OPTIONS, 16), (ROUTING, 24), (DESTINATION_OPTIONS, 8)],
        [(DESTINATION_OPTIONS, 8), (ROUTING, 8), (AUTHENTICATION, 16), (DESTINATION_OPTIONS, 8)],
        [(ROUTING, 8), (HOP_BY_HOP, 8)],  # Hop-by-Hop not first: malformed
        [(DESTINATION_OPTIONS, 8)] * 8,
        [(DESTINATION_OPTIONS, 8)] * 9,  # one more than MAX_IPV6_EXTENSION_HEADERS
    ]
    for n, chain in enumerate(chains):
        m = sip("OPTIONS", 90 + n)
        first, data = ipv6_chain(chain, 17, udp(5060, 5062, m.encode()))
        at = p.add(ether(ipv6(src, dst, first, data), 0x86DD))
        if n < 2 or n == 3:
            p.expect(m, at, "[2001:db8::1]:5060", "[2001:db8::2]:5062", "udp")
    m = sip("OPTIONS", 99)
    atomic = struct.pack("!BBHI", DESTINATION_OPTIONS, 0, 0, 0x99) + ipv6_extension(DESTINATION_OPTIONS, 17)
    at = p.add(ether(ipv6(src, dst, FRAGMENT, atomic + udp(5060, 5062, m.encode())), 0x86DD))
    p.expect(m, at, "[2001:db8::1]:5060", "[2001:db8::2]:5062", "udp")
    p.write(counters={"header_chain_too_long": 1, "decode_errors": 1, "frag_fragments": 0})


def ipv6_fragment_destination_options():
    """Fragmented IPv6 whose fragmentable part starts with Destination
    Options (RFC 8200 §4.1 puts them after the Fragment header), behind
    Hop-by-Hop, Destination Options and Routing headers; fragments in order
    and reversed."""
    p = Pcap("ipv6-fragment-destination-options")
    src, dst = "2001:db8::1", "2001:db8::2"
    before = [[(HOP_BY_HOP, 8)], [(DESTINATION_OPTIONS, 8), (ROUTING, 24)]]
    for n, unfragmentable in enumerate(before):
        m = sip("INVITE", 100 + n, "v=0\r\n" + "a=x-pad:" + "d" * 900 + "\r\n")
        first, fragmentable = ipv6_chain([(DESTINATION_OPTIONS, 16)], 17, udp(5060, 5060, m.encode()))
        cuts = [0, 400, 800, len(fragmentable)]
        frames = []
        for a, b in zip(cuts, cuts[1:]):
            fragment = struct.pack("!BBHI", first, 0, a | (1 if b < len(fragmentable) else 0), 0xD0 + n)
            head, chain = ipv6_chain(unfragmentable, FRAGMENT, fragment + fragmentable[a:b])
            frames.append(ether(ipv6(src, dst, head, chain), 0x86DD))
        for frame in frames if n == 0 else reversed(frames):
            at = p.add(frame)
        p.expect(m, p.frames[-3][0], "[2001:db8::1]:5060", "[2001:db8::2]:5060", "udp")
    p.write(counters={"frag_reassembled": 2, "decode_errors": 0})


# TCP holes that never fill (issue 12, item 1). A hole is waited for at most
# TCP_HOLE_WAIT_MS (default 1000) of capture time and TCP_HOLE_MAX_BYTES
# (default 32768) buffered after it; then, or when the stream ends first, it
# is skipped and the stream resynchronises at the next start line. Every
# complete message after it keeps the time of the segment that completed it,
# counted from where the stream resumed.

HOLE_WAIT_US = 1_000_000
HOLE_MAX_BYTES = 32768


def junk_lines(tail):
    """Lines the framer discards before the next start line, when a stream
    resumes at `tail` (the rest of a message whose start was lost): a body
    without a line break at its end is junk glued to the next start line."""
    return sum(1 for line in tail.split(b"\r\n") if line)


def udp_from_elsewhere(p, n, at):
    """A SIP datagram between two other hosts, captured at `at`: it moves
    capture time on without touching the TCP stream."""
    msg = sip("OPTIONS", n)
    at = p.add(ether(ipv4("192.0.2.3", "192.0.2.4", 17, udp(5060, 5060, msg.encode()))), at)
    p.expect(msg, at, "192.0.2.3:5060", "192.0.2.4:5060", "udp")


def hole_counters(gap, partial=b"", junk=0, **more):
    counters = {"tcp_gaps": 1, "tcp_gap_bytes": gap, "tcp_partial_messages": 1 if partial else 0,
                "tcp_partial_bytes": len(partial), "tcp_junk_lines": junk}
    counters.update(more)
    return counters


def hole_time_bound():
    """The segment with the start of a BYE never reaches the capture. The
    next packet, of another flow 1.5 s later, ends the wait: the messages
    after the hole come out then, each with its own time, and the stream
    goes on in order."""
    p = Pcap("tcp-hole-time-bound")
    a, b, c, d, e = (sip("INVITE", 1, "v=0\r\n").encode(), sip("BYE", 1).encode(), sip("OPTIONS", 2).encode(),
                     sip("OPTIONS", 3).encode(), sip("OPTIONS", 4).encode())
    s = Stream(p)
    s.send(a)
    s.expect([a])
    s.lose(b[:50])
    resync = s.seq
    s.send(b[50:] + c)
    s.send(d)
    s.expect([c, d], start=resync + len(b) - 50, since=resync)
    udp_from_elsewhere(p, 90, p.last() + HOLE_WAIT_US + 500_000)
    s.send(e)
    s.expect_one(e, s.seq, since=resync)
    p.write(counters=hole_counters(50, junk=junk_lines(b[50:])))


def hole_data_bound():
    """A hole followed by 180 messages 1 ms apart, 69 KB: once more than
    32 KiB wait after it, the hole is skipped. Every message keeps the time
    of its own segment (the old overflow released them in one burst, all
    stamped with the time of the segment that overflowed the buffer)."""
    p = Pcap("tcp-hole-data-bound")
    x = sip("INVITE", 1, "v=0\r\n" + "a=x-pad:" + "p" * 200 + "\r\n").encode()
    msgs = [sip("MESSAGE", n, f"message {n:03} " + "m" * 180).encode() for n in range(180)]
    assert sum(map(len, msgs)) > 65536
    s = Stream(p)
    s.send(x[:100])  # the partial message before the hole: dropped, counted
    s.lose(x[100:300])
    resync = s.seq
    s.send(x[300:])
    for m in msgs:
        s.send(m)
    s.expect(msgs, start=resync + len(x) - 300, since=resync)
    sizes = [len(x) - 300] + [len(m) for m in msgs]
    waited = next(i for i in range(len(sizes)) if sum(sizes[:i + 1]) > HOLE_MAX_BYTES)
    p.write(counters=hole_counters(200, x[:100], junk_lines(x[300:]), tcp_out_of_order=waited + 1))


def hole_then(name, flags):
    """A hole, two complete messages, half a message, then a segment with
    `flags` (FIN, RST) well within the hole's wait. An RST ends the stream
    at once; a FIN only once no hole is left, as the segment reordered
    behind it may still come: here when the wait ends, on another flow's
    packet 1.5 s later. Either way the stream is flushed: the messages after
    the hole come out with their own times, the half message is counted,
    and a later segment on the same addresses starts a new stream."""
    p = Pcap(name)
    a, b, c, d, e, f = (sip("INVITE", 2, "v=0\r\n").encode(), sip("ACK", 2).encode(), sip("BYE", 2).encode(),
                        sip("MESSAGE", 3, "x").encode(), sip("MESSAGE", 4, "y").encode(), sip("OPTIONS", 5).encode())
    s = Stream(p)
    s.send(a + b[:60])
    s.expect([a])
    s.lose(b[60:120])
    resync = s.seq
    s.send(b[120:] + c)
    s.send(d)
    s.send(e[:70])  # incomplete at the end: counted
    s.segment(b"", flags=flags)
    s.expect([c, d], start=resync + len(b) - 120, since=resync)
    if flags & 0x01:
        udp_from_elsewhere(p, 93, p.last() + HOLE_WAIT_US + 500_000)
    at = s.segment(f, seq=s.seq + 1000)  # a new stream, joined mid-way
    p.expect(f, at, CLIENT, s.dst, "tcp")
    counters = hole_counters(60, b[:60], junk_lines(b[120:]), tcp_flows=2)
    counters["tcp_partial_messages"] += 1
    counters["tcp_partial_bytes"] += 70
    p.write(counters=counters)


def hole_fin():
    hole_then("tcp-hole-fin", 0x11)


def hole_rst():
    hole_then("tcp-hole-rst", 0x14)


def hole_idle_expiry():
    """With the hole's wait longer than TCP_IDLE_TIMEOUT_S, the stream
    expires first (on a packet of another flow): it is flushed."""
    p = Pcap("tcp-hole-idle-expiry")
    a, b, c = sip("INVITE", 5, "v=0\r\n").encode(), sip("CANCEL", 5).encode(), sip("OPTIONS", 6).encode()
    s = Stream(p)
    s.send(a)
    s.expect([a])
    s.lose(b[:90])
    resync = s.seq
    s.send(b[90:] + c)
    s.expect([c], start=resync + len(b) - 90, since=resync)
    udp_from_elsewhere(p, 91, p.last() + 2_500_000)
    p.write(counters=hole_counters(90, junk=junk_lines(b[90:]), tcp_flows_expired=1),
            args=["--tcp-hole-wait-ms", "600000", "--tcp-idle-timeout-s", "1"])


def hole_evicted():
    """With room for one stream, a second connection evicts the first while
    it waits on a hole: the first is flushed."""
    p = Pcap("tcp-hole-evicted")
    a, b, c, f = (sip("INVITE", 7, "v=0\r\n").encode(), sip("PRACK", 7).encode(), sip("UPDATE", 7).encode(),
                  sip("OPTIONS", 8).encode())
    s = Stream(p)
    s.send(a)
    s.expect([a])
    s.lose(b[:40])
    resync = s.seq
    s.send(b[40:] + c)
    s.expect([c], start=resync + len(b) - 40, since=resync)
    other = Stream(p, dport=5090)  # its SYN evicts the first stream
    other.send(f)
    other.expect([f])
    p.write(counters=hole_counters(40, junk=junk_lines(b[40:]), tcp_flows_evicted=1),
            args=["--tcp-max-flows", "1"])


def hole_end_of_file():
    """The file ends while the stream waits on a hole: the stream is
    flushed."""
    p = Pcap("tcp-hole-end-of-file")
    a, b, c, d = (sip("SUBSCRIBE", 9).encode(), sip("NOTIFY", 9, "state").encode(), sip("NOTIFY", 10, "s").encode(),
                  sip("NOTIFY", 11, "t").encode())
    s = Stream(p)
    s.send(a)
    s.expect([a])
    s.lose(b[:100])
    resync = s.seq
    s.send(b[100:])
    s.send(c)
    s.send(d)
    s.expect([c, d], start=resync + len(b) - 100, since=resync)
    p.write(counters=hole_counters(100, junk=junk_lines(b[100:])))


def snaplen_cut():
    """Captured with a snap length of 300 bytes: the segment with a long
    INVITE is cut (caplen < original length) and decode rejects it. It is a
    hole like any other, not a stall."""
    p = Pcap("tcp-snaplen-cut", snaplen=300)
    a, b, c, d = (sip("OPTIONS", 12).encode(), sip("INVITE", 13, "v=0\r\n" + "a=x:" + "z" * 400 + "\r\n").encode(),
                  sip("ACK", 13).encode(), sip("BYE", 13).encode())
    s = Stream(p)
    for m in [a, b, c, d]:
        s.send(m)
    s.expect([a])
    resync = s.base + len(a) + len(b)
    s.expect([c, d], start=resync, since=resync)
    udp_from_elsewhere(p, 92, p.last() + HOLE_WAIT_US + 1)
    p.write(counters=hole_counters(len(b), decode_errors=1))


def sipfrag_resync():
    """Resynchronising after a hole (and on a stream joined mid-way), the
    body of a NOTIFY, message/sipfrag "SIP/2.0 200 OK", looks like a status
    line; it is not one, as no header line follows it, and the INVITE after
    it is published alone."""
    p = Pcap("tcp-sipfrag-resync")
    frag = "SIP/2.0 200 OK\r\n"
    notify = (f"NOTIFY sip:alice@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.2:5080;branch=z9hG4bK-n14\r\n"
              f"From: <sip:bob@192.0.2.2>;tag=b\r\nTo: <sip:alice@192.0.2.1>;tag=14\r\nCall-ID: 14@generated\r\n"
              f"CSeq: 2 NOTIFY\r\nEvent: refer\r\nSubscription-State: terminated\r\n"
              f"Content-Type: message/sipfrag\r\nContent-Length: {len(frag)}\r\n\r\n{frag}").encode()
    invite = sip("INVITE", 15).encode()
    # Joined mid-way: the first bytes seen are the NOTIFY's last header.
    tail = notify[notify.index(b"Content-Length"):]
    s = Stream(p, dport=5070, syn=False)
    s.send(tail + invite)
    s.expect([invite], start=s.base + len(tail))
    # After a hole that took the NOTIFY's headers.
    h = Stream(p, dport=5080)
    h.lose(notify[:-len(frag)])
    resync = h.seq
    h.send(frag.encode() + invite)
    h.expect([invite], start=resync + len(frag), since=resync)
    p.write(counters={"tcp_gaps": 1, "tcp_gap_bytes": len(notify) - len(frag), "tcp_junk_lines": 3,
                      "tcp_partial_messages": 0, "sip_messages": 2})



# --- SIP over SCTP (RFC 4168) --------------------------------------------


def _crc32c_table():
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


CRC32C_TABLE = _crc32c_table()


def crc32c(data):
    """CRC32c (Castagnoli), as RFC 9260 Appendix A computes it."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def pad4(data):
    return data + b"\0" * (-len(data) % 4)


def chunk(kind, flags, value):
    """A chunk (RFC 9260 §3.2): Chunk Length without the padding, which
    the packet adds."""
    return struct.pack("!BBH", kind, flags, 4 + len(value)) + value


def data_chunk(tsn, sid, ssn, payload, b=True, e=True, u=False, ppid=0):
    """DATA (RFC 9260 §3.3.1): flags U, B, E."""
    flags = (4 if u else 0) | (2 if b else 0) | (1 if e else 0)
    return chunk(0, flags, struct.pack("!IHHI", tsn, sid, ssn, ppid) + payload)


def idata_chunk(tsn, sid, mid, fsn, payload, b=True, e=True, u=False, ppid=0):
    """I-DATA (RFC 8260 §2.1): the first fragment carries the PPID where
    the others carry their Fragment Sequence Number."""
    flags = (4 if u else 0) | (2 if b else 0) | (1 if e else 0)
    return chunk(64, flags, struct.pack("!IHHII", tsn, sid, 0, mid, ppid if b else fsn) + payload)


def sack(cumulative_tsn):
    """SACK (RFC 9260 §3.3.4), no gap blocks."""
    return chunk(3, 0, struct.pack("!IIHH", cumulative_tsn, 65536, 0, 0))


def init(kind, tag, tsn, idata=False, cookie=None):
    """INIT (1) or INIT ACK (2): Initiate Tag, a_rwnd, 10 outbound and
    inbound streams, Initial TSN; INIT ACK with its State Cookie (7); the
    Supported Extensions parameter (0x8008) offering I-DATA (RFC 8260 §2.2).
    Each parameter is padded to 4 bytes but the last, whose padding is the
    chunk's (RFC 9260 §3.2)."""
    params = []
    if cookie is not None:
        params.append(struct.pack("!HH", 7, 4 + len(cookie)) + cookie)
    if idata:
        params.append(struct.pack("!HHB", 0x8008, 5, 64))
    padded = b"".join(pad4(x) for x in params[:-1]) + b"".join(params[-1:])
    return chunk(kind, 0, struct.pack("!IIHHI", tag, 65536, 10, 10, tsn) + padded)


def sctp(sport, dport, tag, chunks, bad_crc=False):
    """An SCTP packet (RFC 9260 §3): the common header, the chunks each
    padded to 4 bytes, the CRC32c over it all with the field zero, stored
    least significant byte first (Appendix A)."""
    body = b"".join(pad4(c) for c in chunks)
    crc = crc32c(struct.pack("!HHII", sport, dport, tag, 0) + body)
    if bad_crc:
        crc ^= 0x5A5A5A5A
    return struct.pack("!HHI", sport, dport, tag) + struct.pack("<I", crc) + body


SCTP_CLIENT, SCTP_SERVER = ("192.0.2.1", 5060), ("192.0.2.2", 5060)


class Association:
    """An SCTP association between SCTP_CLIENT and SCTP_SERVER (or their
    IPv6 counterparts), set up with INIT, INIT ACK, COOKIE ECHO and COOKIE
    ACK. Each side numbers its DATA chunks from its Initial TSN; `next_tsn`
    hands them out. The peer's Verification Tag goes in each packet."""

    def __init__(self, pcap, tags=(), v6=False, idata=False, client_tag=0x1A2B3C4D, server_tag=0x5E6F7081,
                 tsn=1000):
        self.pcap, self.tags, self.v6 = pcap, tags, v6
        self.tag = {True: server_tag, False: client_tag}  # by from_client: the receiver's tag
        self.tsn = {True: tsn, False: tsn + 4000}
        self.ssn = {}
        self.mid = {}
        cookie = b"state-cookie-" + struct.pack("!I", client_tag)
        self.packet([init(1, client_tag, self.tsn[True], idata)], tag=0)
        self.packet([init(2, server_tag, self.tsn[False], idata, cookie)], from_client=False)
        self.packet([chunk(10, 0, cookie)])
        self.packet([chunk(11, 0, b"")], from_client=False)

    def address(self, from_client):
        host, port = SCTP_CLIENT if from_client else SCTP_SERVER
        if self.v6:
            host = "2001:db8::1" if from_client else "2001:db8::2"
        return host, port

    def endpoint(self, from_client):
        host, port = self.address(from_client)
        return f"[{host}]:{port}" if self.v6 else f"{host}:{port}"

    def ip(self, from_client, payload):
        (src, _), (dst, _) = self.address(from_client), self.address(not from_client)
        if self.v6:
            return ipv6(src, dst, 132, payload), 0x86DD
        return ipv4(src, dst, 132, payload), 0x0800

    def packet(self, chunks, from_client=True, tag=None, bad_crc=False, at=None):
        """Send `chunks` in one packet; returns its capture time."""
        (_, sport), (_, dport) = self.address(from_client), self.address(not from_client)
        tag = self.tag[from_client] if tag is None else tag
        packet, ether_type = self.ip(from_client, sctp(sport, dport, tag, chunks, bad_crc))
        return self.pcap.add(ether(packet, ether_type, self.tags), at)

    def next_tsn(self, from_client=True):
        self.tsn[from_client] += 1
        return self.tsn[from_client] - 1

    def next_ssn(self, sid, from_client=True):
        key = (from_client, sid)
        self.ssn[key] = self.ssn.get(key, -1) + 1
        return self.ssn[key]

    def next_mid(self, sid, unordered=False, from_client=True):
        key = (from_client, sid, unordered)
        self.mid[key] = self.mid.get(key, -1) + 1
        return self.mid[key]

    def fragments(self, msg, size, sid=0, unordered=False, from_client=True):
        """The DATA chunks of user message `msg` cut into `size` bytes."""
        data = msg.encode() if isinstance(msg, str) else msg
        ssn = 0 if unordered else self.next_ssn(sid, from_client)
        parts = [data[a:a + size] for a in range(0, len(data), size)]
        return [data_chunk(self.next_tsn(from_client), sid, ssn, part, b=i == 0, e=i == len(parts) - 1,
                           u=unordered) for i, part in enumerate(parts)]

    def idata_fragments(self, msg, size, sid=0, unordered=False, from_client=True):
        """The I-DATA chunks of `msg` cut into `size` bytes (TSNs taken when
        sent: see `send_idata`)."""
        data = msg.encode() if isinstance(msg, str) else msg
        mid = self.next_mid(sid, unordered, from_client)
        parts = [data[a:a + size] for a in range(0, len(data), size)]
        return [(sid, mid, i, part, i == 0, i == len(parts) - 1, unordered) for i, part in enumerate(parts)]

    def idata(self, fragment, from_client=True):
        sid, mid, fsn, part, b, e, u = fragment
        return idata_chunk(self.next_tsn(from_client), sid, mid, fsn, part, b=b, e=e, u=u)

    def expect(self, msg, at, from_client=True):
        self.pcap.expect(msg, at, self.endpoint(from_client), self.endpoint(not from_client), "sctp",
                         vlan_encap(self.tags))


def sip_reply(n, method="INVITE", body=""):
    return (f"SIP/2.0 200 OK\r\nVia: SIP/2.0/SCTP 192.0.2.1:5060;branch=z9hG4bK-{method.lower()}-{n}\r\n"
            f"From: <sip:alice@192.0.2.1>;tag={n}\r\nTo: <sip:bob@192.0.2.2>;tag=b{n}\r\n"
            f"Call-ID: {n}@generated\r\nCSeq: {n} {method}\r\nContent-Length: {len(body)}\r\n\r\n{body}")


def sctp_sip(method, n, body=""):
    """A SIP request sent over SCTP (RFC 4168 §4: Via transport SCTP)."""
    return sip(method, n, body).replace("SIP/2.0/TCP", "SIP/2.0/SCTP")


def sctp_single_chunks():
    """An association over IPv4 and one over IPv6: INIT handshake, then
    requests and responses each in one DATA chunk (B and E set), SACKs
    alone and bundled before DATA."""
    p = Pcap("sctp-single-chunks")
    for v6 in (False, True):
        # Tags and TSNs are random in a real stack: two associations differ.
        a = Association(p, v6=v6, client_tag=0x1A2B3C4D + v6, server_tag=0x5E6F7081 + v6, tsn=1000 + 7 * v6)
        invite, ok, ack = sctp_sip("INVITE", 1 + v6, "v=0\r\n"), sip_reply(1 + v6, body="v=0\r\n"), sctp_sip("ACK", 1 + v6)
        a.expect(invite, a.packet([data_chunk(a.next_tsn(), 0, a.next_ssn(0), invite.encode())]))
        a.expect(ok, a.packet([sack(a.tsn[True] - 1), data_chunk(a.next_tsn(False), 0, a.next_ssn(0, False), ok.encode())],
                              from_client=False), from_client=False)
        a.expect(ack, a.packet([sack(a.tsn[False] - 1), data_chunk(a.next_tsn(), 0, a.next_ssn(0), ack.encode())]))
        a.packet([sack(a.tsn[True] - 1)], from_client=False)
    p.write(counters={"sctp_packets": 16, "sctp_data_chunks": 6, "sctp_chunks_joined": 6, "sctp_user_messages": 6,
                      "sctp_associations": 4, "sctp_bad_checksums": 0, "not_udp_tcp": 0})


def sctp_fragmented():
    """A 3 KB INVITE in DATA chunks of 1000 bytes (B, middle, E), one
    packet each; a second one whose middle fragment arrives last (its
    message is complete only then); a third over IPv4 fragments (the
    SCTP packet larger than the path, split by IP)."""
    p = Pcap("sctp-fragmented")
    a = Association(p)
    body = "".join(f"a=x-line:{i:04d}\r\n" for i in range(170))
    first, second = sctp_sip("INVITE", 10, body), sctp_sip("INVITE", 11, body)
    f1 = a.fragments(first, 1000)
    at = [a.packet([c]) for c in f1]
    a.expect(first, at[-1])
    f2 = a.fragments(second, 1000)
    for c in f2[:1] + f2[2:]:
        a.packet([c])
    a.expect(second, a.packet([f2[1]]))
    third = sctp_sip("MESSAGE", 12, "m" * 1800)
    packet = ipv4("192.0.2.1", "192.0.2.2", 132,
                  sctp(5060, 5060, a.tag[True], [data_chunk(a.next_tsn(), 0, a.next_ssn(0), third.encode())]))
    payload = packet[20:]
    ident = 77
    for off in range(0, len(payload), 1200):
        part = payload[off:off + 1200]
        frag = ipv4("192.0.2.1", "192.0.2.2", 132, part, ident=ident, offset=off, more=off + 1200 < len(payload))
        p.add(ether(frag))
    a.expect(third, p.frames[-2][0])  # a reassembled datagram has its first fragment's time
    chunks = len(f1) + len(f2) + 1
    p.write(counters={"sctp_data_chunks": chunks, "sctp_chunks_joined": chunks, "sctp_user_messages": 3,
                      "frag_reassembled": 1})


def sctp_bundled():
    """Several DATA chunks in one packet (bundling, RFC 9260 §6.10), with
    a SACK first and user data of odd lengths (padding); also the
    fragments of a message bundled in one packet with whole messages."""
    p = Pcap("sctp-bundled")
    a = Association(p)
    msgs = [sctp_sip("OPTIONS", 20 + n, "o" * n) for n in range(3)]
    at = a.packet([sack(5000)] + [data_chunk(a.next_tsn(), 0, a.next_ssn(0), m.encode()) for m in msgs])
    for m in msgs:
        a.expect(m, at)
    big, small = sctp_sip("NOTIFY", 23, "n" * 700), sctp_sip("OPTIONS", 24)
    frags = a.fragments(big, 301)
    at = a.packet(frags[:2])
    at = a.packet(frags[2:] + [data_chunk(a.next_tsn(), 0, a.next_ssn(0), small.encode())])
    a.expect(big, at)
    a.expect(small, at)
    p.write(counters={"sctp_packets": 7, "sctp_data_chunks": 3 + len(frags) + 1, "sctp_user_messages": 5})


def sctp_idata():
    """I-DATA (RFC 8260), negotiated in INIT: fragments of two messages on
    streams 1 and 2 interleaved (TSNs alternate, each message's FSNs count
    0, 1, ...), an unordered one, and a whole one."""
    p = Pcap("sctp-idata")
    a = Association(p, idata=True)
    m1, m2 = sctp_sip("INVITE", 30, "v=0\r\n" + "a" * 900), sctp_sip("SUBSCRIBE", 31, "s" * 700)
    f1, f2 = a.idata_fragments(m1, 400, sid=1), a.idata_fragments(m2, 400, sid=2)
    times = {}
    for i in range(max(len(f1), len(f2))):
        for name, f in (("m1", f1), ("m2", f2)):
            if i < len(f):
                times[name] = a.packet([a.idata(f[i])])
    a.expect(m2, times["m2"])
    a.expect(m1, times["m1"])
    u = sctp_sip("MESSAGE", 32, "u" * 500)
    fu = a.idata_fragments(u, 300, sid=1, unordered=True)
    for f in fu[:-1]:
        a.packet([a.idata(f)])
    a.expect(u, a.packet([a.idata(fu[-1])]))
    whole = sctp_sip("BYE", 30)
    a.expect(whole, a.packet([a.idata(a.idata_fragments(whole, 2000, sid=1)[0])]))
    p.messages.sort(key=lambda m: m["time"])
    chunks = len(f1) + len(f2) + len(fu) + 1
    p.write(counters={"sctp_data_chunks": chunks, "sctp_chunks_joined": chunks, "sctp_user_messages": 4,
                      "sctp_duplicates": 0})


def sctp_duplicates():
    """Retransmissions (RFC 9260 §6.3.3): a whole message sent again with
    its TSN, a fragment sent again, and a packet bundling a retransmitted
    chunk with a new one. Each message is published once."""
    p = Pcap("sctp-duplicates")
    a = Association(p)
    m1, m2, m3 = sctp_sip("REGISTER", 40), sctp_sip("REGISTER", 41, "r" * 1500), sctp_sip("OPTIONS", 42)
    c1 = data_chunk(a.next_tsn(), 0, a.next_ssn(0), m1.encode())
    a.expect(m1, a.packet([c1]))
    a.packet([c1], at=p.last() + 1_000_000)  # T3-rtx expiry: 1 s
    f = a.fragments(m2, 600)
    for c in f[:-1]:
        a.packet([c])
    a.packet([f[0]])  # retransmitted fragment
    a.expect(m2, a.packet([f[-1]]))
    c3 = data_chunk(a.next_tsn(), 0, a.next_ssn(0), m3.encode())
    a.expect(m3, a.packet([f[-1], c3]))
    p.write(counters={"sctp_data_chunks": len(f) + 5, "sctp_duplicates": 3, "sctp_chunks_joined": len(f) + 2,
                      "sctp_user_messages": 3})


def sctp_streams():
    """Three streams: fragments of messages on streams 1, 2 and 3
    interleaved chunk by chunk (each message's TSNs consecutive, as a
    DATA sender sends them; the streams' packets reordered by the
    network), and whole messages on stream 0 between them."""
    p = Pcap("sctp-streams")
    a = Association(p)
    msgs = [sctp_sip("INFO", 50 + s, f"stream {s}\r\n" + "i" * 600) for s in range(1, 4)]
    frags = [a.fragments(m, 250, sid=s + 1) for s, m in enumerate(msgs)]
    done = {}
    for i in range(len(frags[0])):
        for s in (2, 0, 1):
            done[s] = a.packet([frags[s][i]])
        w = sctp_sip("OPTIONS", 60 + i)
        a.expect(w, a.packet([data_chunk(a.next_tsn(), 0, a.next_ssn(0), w.encode())]))
    for s in (2, 0, 1):
        a.expect(msgs[s], done[s])
    p.messages.sort(key=lambda m: m["time"])
    chunks = 4 * len(frags[0])
    p.write(counters={"sctp_data_chunks": chunks, "sctp_chunks_joined": chunks,
                      "sctp_user_messages": 3 + len(frags[0])})


def sctp_unordered():
    """Unordered DATA (U flag): a whole message, a fragmented one, and
    ordered messages on the same stream whose SSNs the unordered ones
    leave alone."""
    p = Pcap("sctp-unordered")
    a = Association(p)
    u1, u2, o1 = sctp_sip("MESSAGE", 70), sctp_sip("MESSAGE", 71, "u" * 900), sctp_sip("MESSAGE", 72)
    a.expect(u1, a.packet(a.fragments(u1, 2000, unordered=True)))
    f = a.fragments(u2, 400, unordered=True)
    a.packet([f[0]])
    a.expect(o1, a.packet(a.fragments(o1, 2000)))
    for c in f[1:-1]:
        a.packet([c])
    a.expect(u2, a.packet([f[-1]]))
    chunks = len(f) + 2
    p.write(counters={"sctp_data_chunks": chunks, "sctp_chunks_joined": chunks, "sctp_user_messages": 3})


def sctp_bad_checksum():
    """A packet whose CRC32c is wrong (as a mirror port shows a packet
    whose checksum offload has yet to fill in): counted, used all the
    same."""
    p = Pcap("sctp-bad-checksum")
    a = Association(p)
    m1, m2 = sctp_sip("OPTIONS", 80), sctp_sip("OPTIONS", 81)
    a.expect(m1, a.packet([data_chunk(a.next_tsn(), 0, a.next_ssn(0), m1.encode())], bad_crc=True))
    a.expect(m2, a.packet([data_chunk(a.next_tsn(), 0, a.next_ssn(0), m2.encode())]))
    p.write(counters={"sctp_bad_checksums": 1, "sctp_user_messages": 2})


def sctp_on_vlans():
    """Two associations with the same addresses, ports, Verification Tags
    and TSNs on VLAN 10 and VLAN 20, their fragments interleaved packet by
    packet: neither is spliced into the other, and neither's TSNs are
    taken for the other's duplicates."""
    p = Pcap("sctp-same-association-on-vlans")
    assocs = [Association(p, tags=[(0x8100, vid)]) for vid in (10, 20)]
    msgs = [sctp_sip("INVITE", 90 + i, f"v=0\r\no=vlan-{i}\r\n" + "v" * 700) for i in range(2)]
    frags = [a.fragments(m, 300) for a, m in zip(assocs, msgs)]
    for i in range(len(frags[0])):
        for a, f, m in zip(assocs, frags, msgs):
            at = a.packet([f[i]])
            if i == len(f) - 1:
                a.expect(m, at)
    p.write(counters={"sctp_associations": 2, "sctp_duplicates": 0, "sctp_chunks_joined": 2 * len(frags[0]),
                      "sctp_user_messages": 2})


def sctp_limits():
    """Bounds: with SCTP_BUFFER_BYTES 1024 a fragmented 2 KB message is
    dropped and counted (its three chunks), and with MAX_MESSAGE_BYTES 1024
    so is a 1.2 KB message in one chunk; with SCTP_BUFFERS 1, a message
    whose last fragment never comes holds the buffer until another
    fragmented message needs it (evicted); a fragment whose message never
    completes is counted at the end of the capture; a DATA chunk without
    user data is invalid; and a chunk whose length runs past its packet is
    malformed."""
    p = Pcap("sctp-limits")
    a = Association(p)
    big, whole = sctp_sip("MESSAGE", 100, "b" * 1800), sctp_sip("MESSAGE", 101, "w" * 1100)
    for c in a.fragments(big, 700):
        a.packet([c])
    a.packet([data_chunk(a.next_tsn(), 0, a.next_ssn(0), whole.encode())])
    lost = a.fragments(sctp_sip("NOTIFY", 102, "n" * 500), 300)
    a.packet([lost[0]])
    ok = sctp_sip("NOTIFY", 103, "k" * 500)
    f = a.fragments(ok, 300)
    for c in f[:-1]:
        a.packet([c])
    a.expect(ok, a.packet([f[-1]]))
    a.packet([data_chunk(a.next_tsn(), 0, a.next_ssn(0), b"")])
    tail = a.fragments(sctp_sip("NOTIFY", 104, "t" * 500), 300)
    a.packet([tail[0]])
    cut = data_chunk(a.next_tsn(), 0, a.next_ssn(0), sctp_sip("OPTIONS", 105).encode())
    cut = cut[:2] + struct.pack("!H", len(cut) + 40) + cut[4:]
    a.packet([cut])
    p.write(counters={"sctp_oversize": 4, "sctp_chunks_evicted": 1, "sctp_chunks_expired": 1,
                      "sctp_chunks_invalid": 1, "sctp_malformed_chunks": 1, "sctp_chunks_joined": len(f),
                      "sctp_user_messages": 1},
            args=["--sctp-buffer-bytes", "1024", "--max-message-bytes", "1024", "--sctp-buffers", "1"])



# Tunnels and carrier encapsulations (docs/design.md, "Peeling layers").
# Each builder returns the bytes of one layer around `inner`.

OUTER_A, OUTER_B = "198.51.100.1", "198.51.100.2"
OUTER6_A, OUTER6_B = "2001:db8::a", "2001:db8::b"
SRC, DST = "192.0.2.1:5060", "192.0.2.2:5060"


def sip_udp_ipv4(msg, ident=1):
    return ipv4("192.0.2.1", "192.0.2.2", 17, udp(5060, 5060, msg.encode()), ident=ident)


def mpls(labels, payload):
    """An MPLS label stack, outermost first; the last has Bottom of Stack."""
    return b"".join(struct.pack("!I", (label << 12) | (0x100 if i == len(labels) - 1 else 0) | 64)
                    for i, label in enumerate(labels)) + payload


def pppoe(session, ip_packet, protocol=0x0021):
    ppp = struct.pack("!H", protocol) + ip_packet
    return struct.pack("!BBHH", 0x11, 0, session, len(ppp)) + ppp


def gre(protocol, payload, key=None, seq=None, checksum_field=False):
    flags = (0x8000 if checksum_field else 0) | (0x2000 if key is not None else 0) | (0x1000 if seq is not None else 0)
    header = struct.pack("!HH", flags, protocol)
    if checksum_field:
        header += struct.pack("!HH", 0, 0)
    if key is not None:
        header += struct.pack("!I", key)
    if seq is not None:
        header += struct.pack("!I", seq)
    return header + payload


def erspan2(session, frame):
    """ERSPAN type II header (version 1), then the mirrored frame."""
    return struct.pack("!II", (1 << 28) | session, 7) + frame


def erspan3(session, frame, platform=False):
    """ERSPAN type III header (version 2), with the O bit and an 8-byte
    platform subheader when `platform`."""
    last = struct.pack("!HH", 0, 1 if platform else 0)
    return (struct.pack("!II", (2 << 28) | session, 0x12345678) + last
            + (bytes(8) if platform else b"") + frame)


def vxlan(vni, frame):
    return struct.pack("!II", 0x08000000, vni << 8) + frame


def geneve(vni, frame, options=b""):
    assert len(options) % 4 == 0
    return struct.pack("!BBHI", len(options) // 4, 0, 0x6558, vni << 8) + options + frame


def tzsp(frame, protocol=1):
    """TZSP version 1, type 0 (received), tagged fields: padding, a signal
    tag (10, 1 byte), END."""
    return struct.pack("!BBH", 1, 0, protocol) + bytes([0, 10, 1, 0xC8, 1]) + frame


def gtpu(teid, packet, message_type=255):
    """GTP-U with a sequence number and one PDU session container
    extension header (type 0x85, 4 bytes)."""
    optional = struct.pack("!HBB", 7, 0, 0x85) + bytes([1, 0x10, 9, 0])
    body = optional + packet
    return struct.pack("!BBHI", 0x30 | 0x04 | 0x02, message_type, len(body), teid) + body


def outer_udp(dport, payload, ipv6_outer=False, sport=49152):
    datagram = udp(sport, dport, payload)
    if ipv6_outer:
        return ether(ipv6(OUTER6_A, OUTER6_B, 17, datagram), 0x86DD)
    return ether(ipv4(OUTER_A, OUTER_B, 17, datagram))


def tunnel_vlan_mpls_ipv4():
    """A carrier link: VLAN 100, two MPLS labels, IPv4 (by its nibble)."""
    p = Pcap("tunnel-vlan-mpls-ipv4")
    msg = sip("INVITE", 100)
    at = p.add(ether(mpls([16, 1000], sip_udp_ipv4(msg)), 0x8847, tags=[(0x8100, 100)]))
    p.expect(msg, at, SRC, DST, "udp", "vlan:100/mpls:16/mpls:1000")
    p.write(counters={"peeled_vlan": 1, "peeled_mpls": 2, "decode_errors": 0})


def tunnel_mpls_pseudowire():
    """Ethernet pseudowires over MPLS, with and without the control word
    (the inner frame without it starts with a MAC whose first nibble is
    not 0, 4 or 6), and IPv6 under a label."""
    p = Pcap("tunnel-mpls-pseudowire")
    a, b, c = sip("OPTIONS", 101), sip("OPTIONS", 102), sip("OPTIONS", 103)
    inner = ether(sip_udp_ipv4(a))
    at = p.add(ether(mpls([200], bytes(4) + inner), 0x8847))
    p.expect(a, at, SRC, DST, "udp", "mpls:200")
    no_cw = bytes.fromhex("5a0000000002") + MAC_A + struct.pack("!H", 0x0800) + sip_udp_ipv4(b)
    at = p.add(ether(mpls([300, 301], no_cw), 0x8847))
    p.expect(b, at, SRC, DST, "udp", "mpls:300/mpls:301")
    v6 = ipv6("2001:db8::1", "2001:db8::2", 17, udp(5060, 5060, c.encode()))
    at = p.add(ether(mpls([400], v6), 0x8848))
    p.expect(c, at, "[2001:db8::1]:5060", "[2001:db8::2]:5060", "udp", "mpls:400")
    p.write(counters={"peeled_mpls": 4})


def tunnel_pppoe():
    """PPPoE sessions with IPv4 and IPv6, and an LCP echo (not IP)."""
    p = Pcap("tunnel-pppoe")
    a, b = sip("REGISTER", 110), sip("REGISTER", 111)
    at = p.add(ether(pppoe(0x1234, sip_udp_ipv4(a)), 0x8864))
    p.expect(a, at, SRC, DST, "udp", "pppoe:4660")
    v6 = ipv6("2001:db8::1", "2001:db8::2", 17, udp(5060, 5060, b.encode()))
    at = p.add(ether(pppoe(0x1234, v6, 0x0057), 0x8864))
    p.expect(b, at, "[2001:db8::1]:5060", "[2001:db8::2]:5060", "udp", "pppoe:4660")
    p.add(ether(pppoe(0x1234, bytes([9, 1, 0, 8, 0, 0, 0, 0]), 0xC021), 0x8864))
    p.write(counters={"peeled_pppoe": 2, "tunnel_not_ip": 1})


def tunnel_gre():
    """GRE over IPv4 carrying IPv4, with checksum, key and sequence over
    IPv6 carrying IPv6, and transparent Ethernet bridging with a key."""
    p = Pcap("tunnel-gre")
    a, b, c = sip("INVITE", 120), sip("INVITE", 121), sip("INVITE", 122)
    at = p.add(ether(ipv4(OUTER_A, OUTER_B, 47, gre(0x0800, sip_udp_ipv4(a)))))
    p.expect(a, at, SRC, DST, "udp", "gre")
    v6 = ipv6("2001:db8::1", "2001:db8::2", 17, udp(5060, 5060, b.encode()))
    at = p.add(ether(ipv6(OUTER6_A, OUTER6_B, 47, gre(0x86DD, v6, key=42, seq=1, checksum_field=True)), 0x86DD))
    p.expect(b, at, "[2001:db8::1]:5060", "[2001:db8::2]:5060", "udp", "gre:42")
    at = p.add(ether(ipv4(OUTER_A, OUTER_B, 47, gre(0x6558, ether(sip_udp_ipv4(c), tags=[(0x8100, 7)]), key=7))))
    p.expect(c, at, SRC, DST, "udp", "gre:7/vlan:7")
    p.write(counters={"peeled_gre": 3, "peeled_vlan": 1})


def tunnel_erspan():
    """Remote SPAN: ERSPAN type I (GRE without sequence number), type II,
    type III without and with its platform subheader, over IPv4 and IPv6."""
    p = Pcap("tunnel-erspan")
    msgs = [sip("BYE", 130 + i) for i in range(4)]
    frames = [
        (gre(0x88BE, ether(sip_udp_ipv4(msgs[0]))), "gre/erspan", False),
        (gre(0x88BE, erspan2(12, ether(sip_udp_ipv4(msgs[1]))), seq=1), "gre/erspan:12", False),
        (gre(0x22EB, erspan3(1023, ether(sip_udp_ipv4(msgs[2]))), seq=2), "gre/erspan:1023", True),
        (gre(0x22EB, erspan3(5, ether(sip_udp_ipv4(msgs[3])), platform=True), seq=3), "gre/erspan:5", False),
    ]
    for msg, (payload, encap, over_ipv6) in zip(msgs, frames):
        if over_ipv6:
            at = p.add(ether(ipv6(OUTER6_A, OUTER6_B, 47, payload), 0x86DD))
        else:
            at = p.add(ether(ipv4(OUTER_A, OUTER_B, 47, payload)))
        p.expect(msg, at, SRC, DST, "udp", encap)
    p.write(counters={"peeled_gre": 4, "peeled_erspan": 4})


def tunnel_erspan3_vlan_fragments():
    """ERSPAN III mirroring a VLAN-tagged INVITE fragmented in three: the
    inner fragments are reassembled under the tunnel's identity."""
    p = Pcap("tunnel-erspan3-vlan-fragments")
    msg = padded_invite(140, "erspan", 900)
    datagram = udp(5060, 5060, msg.encode())
    cuts = [0, 400, 800, len(datagram)]
    first = None
    for i in range(3):
        a, b = cuts[i], cuts[i + 1]
        inner = ipv4("192.0.2.1", "192.0.2.2", 17, datagram[a:b], ident=0x99, offset=a, more=b < len(datagram))
        frame = ether(ipv4(OUTER_A, OUTER_B, 47, gre(0x22EB, erspan3(33, ether(inner, tags=[(0x8100, 30)])), seq=i)))
        at = p.add(frame)
        first = first or at
    p.expect(msg, first, SRC, DST, "udp", "gre/erspan:33/vlan:30")
    p.write(counters={"frag_reassembled": 1, "frag_fragments": 3, "peeled_erspan": 3})


def tunnel_ip_in_ip():
    """IPv4 and IPv6 inside IPv4 (protocols 4 and 41) and inside IPv6."""
    p = Pcap("tunnel-ip-in-ip")
    msgs = [sip("OPTIONS", 150 + i) for i in range(4)]
    v6 = lambda m: ipv6("2001:db8::1", "2001:db8::2", 17, udp(5060, 5060, m.encode()))
    six = ("[2001:db8::1]:5060", "[2001:db8::2]:5060")
    cases = [
        (ether(ipv4(OUTER_A, OUTER_B, 4, sip_udp_ipv4(msgs[0]))), (SRC, DST)),
        (ether(ipv4(OUTER_A, OUTER_B, 41, v6(msgs[1]))), six),
        (ether(ipv6(OUTER6_A, OUTER6_B, 4, sip_udp_ipv4(msgs[2])), 0x86DD), (SRC, DST)),
        (ether(ipv6(OUTER6_A, OUTER6_B, 41, v6(msgs[3])), 0x86DD), six),
    ]
    for msg, (frame, (src, dst)) in zip(msgs, cases):
        at = p.add(frame)
        p.expect(msg, at, src, dst, "udp", "ipip")
    p.write(counters={"peeled_ipip": 4})


def tunnel_vxlan_ipv6():
    """VXLAN over IPv6 (a cloud traffic mirror), carrying UDP and a TCP
    stream whose message spans two VXLAN packets; and Linux's port 8472."""
    p = Pcap("tunnel-vxlan-ipv6")
    a = sip("INVITE", 160)
    at = p.add(outer_udp(4789, vxlan(5001, ether(sip_udp_ipv4(a))), ipv6_outer=True))
    p.expect(a, at, SRC, DST, "udp", "vxlan:5001")
    b = sip("MESSAGE", 161, "x" * 300).encode()
    seq = 5000
    for part in (b[:200], b[200:]):
        inner = ipv4("192.0.2.1", "192.0.2.2", 6, tcp(40000, 5080, seq, part))
        at = p.add(outer_udp(4789, vxlan(5001, ether(inner)), ipv6_outer=True))
        seq += len(part)
    p.expect(b, at, CLIENT, "192.0.2.2:5080", "tcp", "vxlan:5001")
    c = sip("OPTIONS", 162)
    at = p.add(outer_udp(8472, vxlan(77, ether(sip_udp_ipv4(c)))))
    p.expect(c, at, SRC, DST, "udp", "vxlan:77")
    p.write(counters={"peeled_vxlan": 4, "tcp_segments": 2, "tcp_gaps": 0})


def tunnel_vxlan_two_tenants():
    """Two tenants with the same addresses and IP ID in VNIs 100 and 200,
    their fragments interleaved: two distinct messages, never spliced."""
    tenants_fragments("tunnel-vxlan-two-tenants", [100, 200],
                      wrap=lambda packet, vni: outer_udp(4789, vxlan(vni, ether(packet))),
                      encap=lambda vni: f"vxlan:{vni}")


def tunnel_vxlan_outer_fragments():
    """A VXLAN packet whose outer IPv4 datagram is fragmented (reassembled
    first, then peeled), and one whose inner datagram is fragmented too,
    each inner fragment in an outer datagram fragmented in two."""
    p = Pcap("tunnel-vxlan-outer-fragments")

    def outer_fragments(payload, ident):
        datagram = udp(49152, 4789, payload)
        half = (len(datagram) // 2) // 8 * 8
        for a, b in ((0, half), (half, len(datagram))):
            yield ether(ipv4(OUTER_A, OUTER_B, 17, datagram[a:b], ident=ident, offset=a, more=b < len(datagram)))

    a = padded_invite(170, "outer", 999)
    first = None
    for frame in outer_fragments(vxlan(9, ether(sip_udp_ipv4(a))), 0x501):
        at = p.add(frame)
        first = first or at
    p.expect(a, first, SRC, DST, "udp", "vxlan:9")
    b = padded_invite(171, "both", 1400)
    inner = udp(5060, 5060, b.encode())
    first = None
    for n, (x, y) in enumerate(((0, 720), (720, len(inner)))):
        fragment = ipv4("192.0.2.1", "192.0.2.2", 17, inner[x:y], ident=0x77, offset=x, more=y < len(inner))
        for frame in outer_fragments(vxlan(9, ether(fragment)), 0x600 + n):
            at = p.add(frame)
            first = first or at
    p.expect(b, first, SRC, DST, "udp", "vxlan:9")
    p.write(counters={"frag_fragments": 8, "frag_reassembled": 4, "frag_joined": 8, "peeled_vxlan": 3})


def tunnel_geneve():
    """Geneve with an 8-byte option, carrying a VLAN-tagged frame."""
    p = Pcap("tunnel-geneve")
    msg = sip("INVITE", 180)
    option = struct.pack("!HBB", 0x0102, 0x80, 1) + bytes(4)
    at = p.add(outer_udp(6081, geneve(0xABCDEF, ether(sip_udp_ipv4(msg), tags=[(0x8100, 12)]), option)))
    p.expect(msg, at, SRC, DST, "udp", "geneve:11259375/vlan:12")
    p.write(counters={"peeled_geneve": 1})


def tunnel_tzsp():
    """TZSP (MikroTik's sniffer stream) with tagged fields carrying an
    Ethernet frame; then one carrying 802.11 (not IP)."""
    p = Pcap("tunnel-tzsp")
    msg = sip("NOTIFY", 190)
    at = p.add(outer_udp(37008, tzsp(ether(sip_udp_ipv4(msg)))))
    p.expect(msg, at, SRC, DST, "udp", "tzsp")
    p.add(outer_udp(37008, tzsp(bytes(24), protocol=18)))
    p.write(counters={"peeled_tzsp": 1, "tunnel_not_ip": 1})


def tunnel_gtpu_ipv6_tcp():
    """VoLTE mirrored as GTP-U: a phone's IPv6 TCP SIP in G-PDUs with a
    sequence number and a PDU session container extension header, two
    messages in three segments; and a GTP echo request (not IP)."""
    p = Pcap("tunnel-gtpu-ipv6-tcp")
    phone, pcscf = "2001:db8:cafe::1", "2001:db8:1::5"
    msgs = [sip("REGISTER", 200), sip("REGISTER", 201)]
    data = "".join(msgs).encode()
    seq, cuts = 7000, [0, 150, len(msgs[0]) + 30, len(data)]
    times = []
    for x, y in zip(cuts, cuts[1:]):
        segment = ipv6(phone, pcscf, 6, tcp(40000, 5060, seq + x, data[x:y]))
        times.append(p.add(outer_udp(2152, gtpu(0x1A2B3C4D, segment), sport=2152)))
    for msg, at in zip(msgs, times[1:]):
        p.expect(msg, at, f"[{phone}]:40000", f"[{pcscf}]:5060", "tcp", "gtpu:439041101")
    p.add(outer_udp(2152, struct.pack("!BBHI", 0x32, 1, 4, 0) + bytes(4), sport=2152))
    p.write(counters={"peeled_gtpu": 3, "tunnel_not_ip": 1, "tcp_messages": 2})


def tunnel_limits():
    """Nine VLAN tags (one more than MAX_ENCAPSULATIONS), a VXLAN header
    without its I flag, a GRE header cut short, and SIP on UDP 4789 with
    the port not configured as a tunnel (TUNNEL_UDP_PORTS): counted, never
    a crash; the last is published."""
    p = Pcap("tunnel-limits")
    p.add(ether(sip_udp_ipv4(sip("OPTIONS", 210)), tags=[(0x8100, v) for v in range(1, 10)]))
    p.add(outer_udp(4789, struct.pack("!II", 0, 5 << 8) + ether(sip_udp_ipv4(sip("OPTIONS", 211)))))
    p.add(ether(ipv4(OUTER_A, OUTER_B, 47, b"\x00\x00")))
    msg = sip("OPTIONS", 212)
    at = p.add(outer_udp(8472, msg.encode()))
    p.expect(msg, at, f"{OUTER_A}:49152", f"{OUTER_B}:8472", "udp")
    p.write(counters={"header_chain_too_long": 1, "tunnel_truncated": 2, "peeled_vxlan": 0},
            args=["--tunnel-udp-ports", "vxlan:4789"])

# SIP over WebSocket (RFC 7118, RFC 6455, RFC 7692).

WS_KEYS = [bytes([0x37, 0xfa, 0x21, 0x3d]), bytes([0x5a, 0x01, 0xc3, 0x9e]), bytes([0x00, 0x00, 0x00, 0x00])]


def wsip(method, n, body=""):
    """A SIP request as a WebSocket client sends it (RFC 7118): Via
    SIP/2.0/WS, and no Content-Length unless it has a body."""
    text = (f"{method} sip:bob@example.invalid SIP/2.0\r\n"
            f"Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK-{method.lower()}-{n}\r\n"
            f"From: <sip:alice@example.invalid>;tag={n}\r\nTo: <sip:bob@example.invalid>\r\n"
            f"Call-ID: {n}@ws.generated\r\nCSeq: {n} {method}\r\nMax-Forwards: 70\r\n")
    if body:
        text += f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n"
    return (text + "\r\n" + body).encode()


def wsresponse(n, status="200 OK"):
    """A response to wsip(..., n), without Content-Length."""
    return (f"SIP/2.0 {status}\r\nVia: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK-{n}\r\n"
            f"From: <sip:alice@example.invalid>;tag={n}\r\nTo: <sip:bob@example.invalid>;tag=b{n}\r\n"
            f"Call-ID: {n}@ws.generated\r\nCSeq: {n} OPTIONS\r\n\r\n").encode()


SDP = "v=0\r\no=- 1 1 IN IP4 203.0.113.7\r\ns=-\r\nc=IN IP4 203.0.113.7\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


def ws_frame(payload, opcode=1, fin=True, key=None, rsv1=False, length_bits=None):
    """One RFC 6455 frame; `key` masks it (client to server); `length_bits`
    7, 16 or 64 picks the length encoding (the smallest by default)."""
    n = len(payload)
    if length_bits is None:
        length_bits = 7 if n < 126 else 16 if n < 65536 else 64
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    mask = 0x80 if key else 0
    if length_bits == 7:
        head += bytes([mask | n])
    elif length_bits == 16:
        head += bytes([mask | 126]) + struct.pack(">H", n)
    else:
        head += bytes([mask | 127]) + struct.pack(">Q", n)
    if key:
        head += key
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + payload


def deflate(compressor, message):
    """`message` compressed as RFC 7692 (7.2.1) says: a sync flush, and its
    final 00 00 ff ff removed. One compressor for every message is context
    takeover; a new one each time is none."""
    data = compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


class Inflater:
    """What the agent does with a sender's compressed messages: inflate
    each against the bytes of its window it knows, which a failure (a
    reference to bytes it never saw) empties."""

    def __init__(self):
        self.known = b""

    def inflate(self, data):
        d = zlib.decompressobj(-15, zdict=self.known) if self.known else zlib.decompressobj(-15)
        try:
            out = d.decompress(data + b"\x00\x00\xff\xff")
        except zlib.error:
            self.known = b""
            return None
        self.known = (self.known + out)[-32768:]
        return out


def ws_handshake(extensions=None, accepted=None):
    """The HTTP/1.1 Upgrade request with the sip subprotocol, and its 101."""
    request = ("GET /ws HTTP/1.1\r\nHost: 192.0.2.2\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Protocol: sip\r\n")
    response = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRnbK+xOo=\r\nSec-WebSocket-Protocol: sip\r\n")
    if extensions:
        request += f"Sec-WebSocket-Extensions: {extensions}\r\n"
    if accepted:
        response += f"Sec-WebSocket-Extensions: {accepted}\r\n"
    return (request + "\r\n").encode(), (response + "\r\n").encode()


class WsStream(Stream):
    """One direction of a WebSocket connection between 192.0.2.1:`sport`
    (the client) and 192.0.2.2:`dport`."""

    def __init__(self, pcap, to_server, dport=80, sport=40000, isn=1000, syn=True):
        self.to_server, self.sport = to_server, sport
        super().__init__(pcap, dport, isn, syn)

    def ends(self):
        client, server = f"192.0.2.1:{self.sport}", f"192.0.2.2:{self.dport}"
        return (client, server) if self.to_server else (server, client)

    def segment(self, payload, seq=None, flags=0x18, at=None, total_length=None):
        seq = self.seq if seq is None else seq
        ports = (self.sport, self.dport) if self.to_server else (self.dport, self.sport)
        ips = ("192.0.2.1", "192.0.2.2") if self.to_server else ("192.0.2.2", "192.0.2.1")
        packet = ipv4(*ips, 6, tcp(*ports, seq, payload, flags), total_length=total_length)
        at = self.pcap.add(ether(packet), at)
        if payload:
            self.carried.append((at, seq, len(payload)))
        return at

    def send_all(self, data, mss=1400):
        for a in range(0, len(data), mss):
            self.send(data[a:a + mss])

    def expect_ws(self, msg, end=None, since=None):
        """Expect `msg`, its last frame ending before sequence `end` (by
        default: everything sent so far)."""
        src, dst = self.ends()
        end = self.seq if end is None else end
        self.pcap.expect(msg, self.completed_at(end, since), src, dst, "ws")


def ws_frames():
    """A handshake, then masked client frames: one message in one frame, one
    over three frames with a ping between them, one byte by byte, two
    binary frames in one segment, one with a 64-bit length; unmasked server
    frames: a 16-bit length, a message too large (64-bit length, skipped),
    a pong, a close."""
    p = Pcap("ws-frames")
    client, server = WsStream(p, True), WsStream(p, False, isn=5000)
    request, response = ws_handshake()
    k = WS_KEYS[0]
    client.send(request)
    server.send(response)
    m1 = wsip("REGISTER", 1)
    client.send(ws_frame(m1, key=k))
    client.expect_ws(m1)
    r1 = wsresponse(1)
    server.send(ws_frame(r1))
    server.expect_ws(r1)
    m2 = wsip("INVITE", 2, SDP)
    client.send(ws_frame(m2[:100], key=k, fin=False))
    client.send(ws_frame(b"ping!", opcode=9, key=k))
    client.send(ws_frame(m2[100:250], opcode=0, key=k, fin=False) + ws_frame(m2[250:], opcode=0, key=k))
    client.expect_ws(m2)
    m3 = wsip("ACK", 2)
    for byte in ws_frame(m3, key=WS_KEYS[1]):
        client.send(bytes([byte]))
    client.expect_ws(m3)
    m4, m5 = wsip("MESSAGE", 4, "hello"), wsip("MESSAGE", 5, "again")
    f4, f5 = ws_frame(m4, opcode=2, key=k), ws_frame(m5, opcode=2, key=WS_KEYS[2])
    client.send(f4 + f5)
    client.expect_ws(m4, client.seq - len(f5))
    client.expect_ws(m5)
    big = wsip("MESSAGE", 6, "x" * 70000)
    server.send_all(ws_frame(big, opcode=2))
    server.send(ws_frame(b"", opcode=10))
    m7 = wsip("OPTIONS", 7)
    client.send(ws_frame(m7, key=k, length_bits=64))
    client.expect_ws(m7)
    r7 = wsresponse(7)
    server.send(ws_frame(r7, length_bits=16))
    server.expect_ws(r7)
    client.send(ws_frame(struct.pack(">H", 1000), opcode=8, key=k))
    server.send(ws_frame(struct.pack(">H", 1000), opcode=8))
    client.segment(b"", flags=0x11)
    server.segment(b"", flags=0x11)
    p.write(counters={"ws_handshakes": 2, "ws_messages": 8, "tcp_messages": 8, "ws_control_frames": 4,
                      "ws_oversize": 1, "ws_bad_frames": 0, "ws_skipped_bytes": 0, "tcp_junk_lines": 0,
                      "ws_not_sip": 0, "tcp_no_content_length": 0})


def ws_mid_stream():
    """Both directions joined mid-way: each begins with the tail of a frame
    (no start line, no line break), then whole frames, masked from the
    client and unmasked from the server."""
    p = Pcap("ws-mid-stream")
    client, server = WsStream(p, True, dport=8080, syn=False), WsStream(p, False, dport=8080, isn=9000, syn=False)
    m1, m2, r1 = wsip("INVITE", 21, SDP), wsip("BYE", 21), wsresponse(21)
    tail = b"tail-of-an-earlier-frame-payload"
    client.send(tail + ws_frame(m1, key=WS_KEYS[1]))
    client.expect_ws(m1)
    server.send(b"earlier-tail" + ws_frame(r1))
    server.expect_ws(r1)
    client.send(ws_frame(m2, key=WS_KEYS[0]))
    client.expect_ws(m2)
    p.write(counters={"ws_handshakes": 0, "ws_messages": 3, "tcp_junk_lines": 2, "ws_skipped_bytes": 0})


def ws_lost_segment():
    """A segment in the middle of a masked frame never reaches the capture:
    the message it cut is dropped (counted), the bytes after the hole up to
    the next frame whose payload is a SIP message are skipped (counted),
    and the messages after it come out once the hole's wait ends, each with
    its own segment's time."""
    p = Pcap("ws-lost-segment")
    client = WsStream(p, True)
    request, _ = ws_handshake()
    client.send(request)
    k = WS_KEYS[0]
    m1, m2, m3, m4 = wsip("INVITE", 31, SDP), wsip("PRACK", 31), wsip("UPDATE", 31), wsip("BYE", 31)
    client.send(ws_frame(m1, key=k))
    client.expect_ws(m1)
    f2 = ws_frame(m2, key=k)
    client.send(f2[:30])
    client.lose(f2[30:80])
    resync = client.seq
    f3 = ws_frame(m3, key=k)
    client.send(f2[80:] + f3)
    client.send(ws_frame(m4, key=k))
    client.expect_ws(m3, resync + len(f2) - 80 + len(f3), since=resync)
    client.expect_ws(m4, since=resync)
    udp_from_elsewhere(p, 94, p.last() + HOLE_WAIT_US + 500_000)
    p.write(counters=hole_counters(50, f2[:30], ws_handshakes=1, ws_messages=3, ws_skipped_bytes=len(f2) - 80,
                                   ws_bad_frames=0))


def ws_deflate():
    """permessage-deflate. One connection negotiates it with the server
    without context takeover: the client's messages (masked, one over two
    frames) refer to its earlier ones, the server's do not; one server
    message is sent uncompressed. A second connection is joined mid-way on
    a sender with context takeover: its first message seen is uncompressed,
    and each compressed one after it comes out only if it inflates from
    what was seen (the rest counted, never published garbled)."""
    p = Pcap("ws-deflate")
    client, server = WsStream(p, True), WsStream(p, False, isn=5000)
    request, response = ws_handshake("permessage-deflate; client_max_window_bits",
                                     "permessage-deflate; server_no_context_takeover")
    client.send(request)
    server.send(response)
    takeover = zlib.compressobj(wbits=-15)
    k = WS_KEYS[1]
    messages = 0
    for n, method in enumerate(["REGISTER", "INVITE", "ACK", "BYE"]):
        m = wsip(method, 40, SDP if method == "INVITE" else "")
        data = deflate(takeover, m)
        if method == "INVITE":
            client.send(ws_frame(data[:20], key=k, rsv1=True, fin=False))
            client.send(ws_frame(data[20:], opcode=0, key=k))
        else:
            client.send(ws_frame(data, key=k, rsv1=True))
        client.expect_ws(m)
        messages += 1
        r = wsresponse(40 + n)
        if n == 2:
            server.send(ws_frame(r))
        else:
            server.send(ws_frame(deflate(zlib.compressobj(wbits=-15), r), rsv1=True))
        server.expect_ws(r)
        messages += 1
    # Joined mid-way: the sender's first message was never captured.
    late = WsStream(p, True, sport=40001, isn=7000, syn=False)
    takeover = zlib.compressobj(wbits=-15)
    deflate(takeover, wsip("REGISTER", 50))
    first = wsip("OPTIONS", 51)
    late.send(ws_frame(first, key=k))
    late.expect_ws(first)
    messages += 1
    seen, failed = Inflater(), 0
    for n, method in enumerate(["REGISTER", "SUBSCRIBE", "NOTIFY", "REGISTER"]):
        m = wsip(method, 50)
        data = deflate(takeover, m)
        late.send(ws_frame(data, key=k, rsv1=True))
        out = seen.inflate(data)
        if out is None:
            failed += 1
        else:
            assert out == m
            late.expect_ws(m)
            messages += 1
    assert failed > 0
    p.write(counters={"ws_handshakes": 2, "ws_messages": messages, "ws_inflate_failed": failed,
                      "ws_inflate_no_context": 0, "ws_bad_frames": 0, "ws_skipped_bytes": 0, "tcp_junk_lines": 0})


def ws_tls():
    """WebSocket over TLS (wss://, port 443): a TLS ClientHello and the
    server's reply start the streams; nothing can be read, nothing is
    published, both streams are counted."""
    p = Pcap("ws-tls")
    client, server = WsStream(p, True, dport=443), WsStream(p, False, dport=443, isn=5000)
    hello = bytes([0x16, 0x03, 0x01, 0x00, 0x40]) + bytes([0x01, 0x00, 0x00, 0x3c, 0x03, 0x03]) + bytes(range(58))
    client.send(hello)
    server.send(bytes([0x16, 0x03, 0x03, 0x00, 0x20]) + bytes(range(32)))
    client.send(bytes([0x17, 0x03, 0x03, 0x00, 0x30]) + b"INVITE sip:x SIP/2.0\r\nl: 0\r\n\r\n" + bytes(18))
    p.write(counters={"tls_streams": 2, "tcp_junk_lines": 0, "sip_messages": 0})


if __name__ == "__main__":
    for make in [out_of_order, retransmissions, byte_by_byte, fifty_in_one_segment, keepalives,
                 cut_mid_message, overlapping_fragments, tiny_fragments, ipv6_fragments, link_types, udp_framing,
                 pcapng_merged, pcapng_merged_bpf, after_2038, cut_short,
                 fragments_on_two_vlans, fragments_qinq, tcp_streams_on_vlans, ipv4_total_length_zero_tcp,
                 ipv4_total_length_zero_udp, ipv6_extension_headers, ipv6_fragment_destination_options,
                 hole_time_bound, hole_data_bound, hole_fin, hole_rst, hole_idle_expiry, hole_evicted,
                 hole_end_of_file, snaplen_cut, sipfrag_resync,
                 sctp_single_chunks, sctp_fragmented, sctp_bundled, sctp_idata, sctp_duplicates, sctp_streams,
                 sctp_unordered, sctp_bad_checksum, sctp_on_vlans, sctp_limits,
                 tunnel_vlan_mpls_ipv4, tunnel_mpls_pseudowire,
                 tunnel_pppoe, tunnel_gre, tunnel_erspan, tunnel_erspan3_vlan_fragments, tunnel_ip_in_ip,
                 tunnel_vxlan_ipv6, tunnel_vxlan_two_tenants, tunnel_vxlan_outer_fragments, tunnel_geneve,
                 tunnel_tzsp, tunnel_gtpu_ipv6_tcp, tunnel_limits,
                 ws_frames, ws_mid_stream, ws_lost_segment, ws_deflate,
                 ws_tls]:
        make()
