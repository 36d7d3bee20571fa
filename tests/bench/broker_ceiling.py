#!/usr/bin/env python3
"""What the broker side of the live stage can carry on this machine, without
the agent: a minimal MQTT 3.1.1 publisher (pre-encoded QoS 1 PUBLISH
packets of about 900 bytes, TCP_NODELAY, one send per window refill) keeps
WINDOW publishes in flight to a private mosquitto (`max_inflight_messages
0`, as the bench's) with the bench's QoS 1 subscriber (mosquitto_sub)
attached, as fast as PUBACKs come back. Prints msg/s and the broker's and
the publisher's CPU per message for each window.

    python3 tests/bench/broker_ceiling.py [MESSAGES] [WINDOW ...]

Used in docs/performance.md ("The in-flight window") to tell the broker's
limits from the agent's.
"""
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
import support  # noqa: E402
from run import children_named, cpu_s, read_in_background  # noqa: E402

TOPIC = b"bench/sip"


def remaining_length(n):
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def packet(kind, body):
    return bytes([kind]) + remaining_length(len(body)) + body


def ceiling(window, messages):
    with support.mosquitto("max_inflight_messages 0\n") as port:
        broker = children_named("mosquitto")[0]
        sub = support.Subscriber(port, "bench/sip")
        stop_reading = read_in_background(sub)
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connect = struct.pack(">H", 4) + b"MQTT" + bytes([4, 2]) + struct.pack(">H", 60) + struct.pack(">H", 4) + b"ceil"
        s.sendall(packet(0x10, connect))
        assert s.recv(4)[:1] == b"\x20", "no CONNACK"
        payload = b'{"x":"' + b"x" * 900 + b'"}'
        publishes = [packet(0x32, struct.pack(">H", len(TOPIC)) + TOPIC + struct.pack(">H", i + 1) + payload)
                     for i in range(min(messages, 65535))]
        broker_cpu, mine, start = cpu_s(broker), os.times(), time.monotonic()
        sent = acked = 0
        pending = b""
        while acked < messages:
            room = min(window - (sent - acked), messages - sent)
            if room > 0:
                s.sendall(b"".join(publishes[(sent + k) % len(publishes)] for k in range(room)))
                sent += room
            pending += s.recv(65536)
            acks = len(pending) // 4  # every PUBACK of MQTT 3.1.1 is 4 bytes
            acked, pending = acked + acks, pending[acks * 4:]
        wall = time.monotonic() - start
        broker_cpu = cpu_s(broker) - broker_cpu
        mine = sum(os.times()[:2]) - sum(mine[:2])
        deadline = time.monotonic() + 30
        while len(sub.messages) < messages and time.monotonic() < deadline:
            time.sleep(0.1)
        stop_reading()
        s.close()
        print(f"window {window:5d}: {messages / wall:8.0f} msg/s, broker {broker_cpu * 1e6 / messages:5.1f} µs/msg,"
              f" publisher {mine * 1e6 / messages:5.1f} µs/msg, subscriber got {len(sub.messages)}/{messages}", flush=True)


def main():
    messages = int(sys.argv[1]) if len(sys.argv) > 1 else 60000
    for window in [int(w) for w in sys.argv[2:]] or [8, 32, 64, 128, 1024]:
        ceiling(window, messages)


if __name__ == "__main__":
    main()
