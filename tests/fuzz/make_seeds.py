#!/usr/bin/env python3
"""Write seed corpora for the fuzz targets from the test data.

    python3 tests/fuzz/make_seeds.py

decode_frame: frames of the test captures, each prefixed with the index of
its link type in targets.rs LINK_TYPES. tcp_stream: the original agent's
splitter streams and generated messages cut into segments. sip_message: the
RFC 4475 torture messages and the filter test messages. sctp_chunks: the
SCTP packets of the generated sctp-* captures, each as a whole packet.
ws_stream: WebSocket
frames of the generated captures' kinds (masked, fragmented with a ping,
64-bit lengths, compressed with and without context takeover), after a
handshake and joined mid-way.
"""

import glob
import hashlib
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data")
LINK_INDEX = {0: 0, 1: 1, 101: 2, 113: 3, 276: 4, 229: 5, 228: 2}


def save(target, data):
    out = os.path.join(HERE, "corpus", target)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def frames(path):
    raw = open(path, "rb").read()
    magic = raw[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    linktype = struct.unpack(endian + "I", raw[20:24])[0]
    at = 24
    while at + 16 <= len(raw):
        caplen = struct.unpack(endian + "I", raw[at + 8:at + 12])[0]
        yield linktype, raw[at + 16:at + 16 + caplen]
        at += 16 + caplen


def segments(stream, cut, seq=1000, flags=0):
    """Encode a byte stream as tcp_stream segments of `cut` bytes."""
    out = bytes([flags | 1, seq >> 8 & 0xFF, seq & 0xFF, 0])
    seq += 1
    for a in range(0, len(stream), cut):
        chunk = stream[a:a + cut][:255]
        out += bytes([flags, seq >> 8 & 0xFF, seq & 0xFF, len(chunk)]) + chunk
        seq += len(chunk)
    return out


def ws_seeds():
    """ws_stream inputs: [mode, step] and frames (see targets.rs)."""
    import sys
    import zlib
    sys.path.insert(0, DATA)
    import make_captures as mc

    key = mc.WS_KEYS[0]
    m1, m2, r1 = mc.wsip("INVITE", 1, mc.SDP), mc.wsip("BYE", 1), mc.wsresponse(1)
    plain = (mc.ws_frame(m1[:50], key=key, fin=False) + mc.ws_frame(b"ping", opcode=9, key=key)
             + mc.ws_frame(m1[50:], opcode=0, key=key) + mc.ws_frame(r1, length_bits=64)
             + mc.ws_frame(m2, opcode=2, length_bits=16) + mc.ws_frame(b"\x03\xe8", opcode=8))
    takeover = zlib.compressobj(wbits=-15)
    compressed = b"".join(mc.ws_frame(mc.deflate(takeover, m), key=key, rsv1=True) for m in (m1, m2, m1))
    fresh = b"".join(mc.ws_frame(mc.deflate(zlib.compressobj(wbits=-15), m), rsv1=True) for m in (r1, m2))
    for mode, stream in [(1, plain), (0, plain[7:]), (3, compressed), (5, fresh), (0x81, plain), (0, compressed),
                         (0x83, compressed)]:
        for step in (0, 13, 63):
            save("ws_stream", bytes([mode, step]) + stream)


if __name__ == "__main__":
    for path in sorted(glob.glob(os.path.join(DATA, "pcaps", "*.pcap")) + glob.glob(os.path.join(DATA, "pcaps", "generated", "*.pcap"))):
        for i, (linktype, frame) in enumerate(frames(path)):
            if i < 12 and linktype in LINK_INDEX:
                save("decode_frame", bytes([LINK_INDEX[linktype]]) + frame)
    for path in sorted(glob.glob(os.path.join(DATA, "sipsplitter", "*.stream"))):
        stream = open(path, "rb").read()
        for cut in (7, 64, 255):
            save("tcp_stream", segments(stream, cut))
    for path in sorted(glob.glob(os.path.join(DATA, "pcaps", "generated", "sctp-*.pcap"))):
        seed = b""
        for _, frame in frames(path):
            at = 12
            while frame[at:at + 2] == b"\x81\x00":  # VLAN tags
                at += 4
            ether_type = frame[at:at + 2]
            ip = frame[at + 2:]
            if ether_type == b"\x08\x00" and ip[9] == 132 and not (ip[6] & 0x3F or ip[7]):
                packet = ip[(ip[0] & 0xF) * 4:]
            elif ether_type == b"\x86\xdd" and ip[6] == 132:
                packet = ip[40:]
            else:
                continue
            tag_bits = 1 if packet[4:8] == b"\0\0\0\0" else 0  # INIT, or another association
            seed += bytes([tag_bits, len(packet) >> 8, len(packet) & 0xFF]) + packet
        save("sctp_chunks", seed)
    for path in sorted(glob.glob(os.path.join(DATA, "rfc4475", "*.dat")) + glob.glob(os.path.join(DATA, "messages", "*.sip"))):
        message = open(path, "rb").read()
        save("sip_message", message)
        save("tcp_stream", segments(message + b"\r\n" + message, 100, flags=0x80))
    ws_seeds()
