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


def ipv4(src, dst, proto, payload, ident=1, offset=0, more=False):
    flags = (0x2000 if more else 0) | (offset // 8)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, flags, 64, proto, 0,
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


def ether(ip_packet, ether_type=0x0800):
    return MAC_B + MAC_A + struct.pack("!H", ether_type) + ip_packet


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
    optionally "counters" (summary values that must match exactly) and
    "args" (extra command-line arguments for the replay)."""

    def __init__(self, name, linktype=1):
        self.name = name
        self.linktype = linktype
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

    def expect(self, msg, at, src, dst, transport):
        """The agent must publish `msg` (str or bytes) stamped `at`."""
        text = msg if isinstance(msg, str) else msg.decode()
        self.messages.append({"time": rfc3339(at), "transport": transport, "src": src, "dst": dst,
                              "sip": text})

    def write(self, counters=None, args=None):
        os.makedirs(OUT, exist_ok=True)
        with open(os.path.join(OUT, self.name + ".pcap"), "wb") as f:
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, self.linktype))
            for at, frame in self.frames:
                secs, micros = divmod(at, 1_000_000)
                f.write(struct.pack("<IIII", secs, micros, len(frame), len(frame)))
                f.write(frame)
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

    def __init__(self, pcap, dport=5080, isn=1000, syn=True):
        self.pcap, self.dport, self.seq = pcap, dport, isn
        self.base = isn + 1 if syn else isn
        self.carried = []  # (capture time, first sequence number, length)
        if syn:
            self.segment(b"", flags=0x02)
            self.seq += 1

    @property
    def dst(self):
        return f"{SERVER}:{self.dport}"

    def segment(self, payload, seq=None, flags=0x18, at=None):
        seq = self.seq if seq is None else seq
        at = self.pcap.add(ether(ipv4("192.0.2.1", "192.0.2.2", 6, tcp(40000, self.dport, seq, payload, flags))), at)
        if payload:
            self.carried.append((at, seq, len(payload)))
        return at

    def send(self, payload, at=None):
        at = self.segment(payload, at=at)
        self.seq += len(payload)
        return at

    def completed_at(self, end):
        """When the bytes from the stream's start to sequence `end` were
        first all captured."""
        have = self.base
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

    def expect_one(self, msg, end):
        """Expect `msg`, whose last byte is before sequence `end`."""
        self.pcap.expect(msg, self.completed_at(end), CLIENT, self.dst, "tcp")

    def expect(self, msgs, start=None):
        """Expect `msgs`, laid out back to back from sequence `start`
        (default: the stream's first byte), each at its completion time."""
        at = self.base if start is None else start
        for m in msgs:
            at += len(m.encode() if isinstance(m, str) else m)
            self.pcap.expect(m, self.completed_at(at), CLIENT, self.dst, "tcp")


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


if __name__ == "__main__":
    for make in [out_of_order, retransmissions, byte_by_byte, fifty_in_one_segment, keepalives,
                 cut_mid_message, overlapping_fragments, tiny_fragments, ipv6_fragments, link_types, udp_framing]:
        make()
