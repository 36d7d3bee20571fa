#!/usr/bin/env python3
"""make bench: cost per message, throughput, memory and size, side by side.

Traces are made once and cached under target/bench/traces/ (delete them to
make new ones):
  sipp-udp.pcap   sipp uac/uas calls over UDP on loopback, captured by tcpdump
  sipp-tcp.pcap   the same over TCP
  frag.pcap       large INVITEs fragmented over IPv4 and IPv6 (synthetic)
  sctp.pcap       the sipp-udp trace's messages sent over SCTP instead: one
                  association per direction, each message a DATA chunk with a
                  SACK for the other direction bundled before it, every
                  tenth split over two chunks (synthetic; the kernel here
                  has no SCTP, so sipp -t s1 cannot run)
  sipp-udp-vxlan.pcap  sipp-udp.pcap with every frame wrapped in VXLAN (VNI
                  5001) over IPv4 and UDP 4789: the cost of peeling a tunnel
  ws.pcap         SIP over WebSocket on loopback (tests/sip_websocket.py:
                  Python's websockets, some messages over continuation
                  frames, pings), captured by tcpdump
  ws-deflate.pcap the same with permessage-deflate (context takeover)

For each trace: the in-process pipeline cost (cargo bench --bench pipeline)
with the empty filter and the original's example filter, the floor, the
cost of reading the file (the agent's reader and libpcap's), the
end-to-end run of `sip-capture --read` to a private mosquitto with a QoS 1
subscriber counting, and `tshark -r TRACE -Y sip` CPU time. Prints one table
and writes target/bench/results.json. Standard library only.

The live stage (also alone: `run.py --live-only`, `make bench-live`) runs in
a network namespace of its own (`unshare --net`, so nothing outside it is
touched and it vanishes with the process): a veth pair, tcpreplay sending the
sipp traces into one end at fixed rates and at top speed, the agent capturing
the other end live and publishing to a private mosquitto on the namespace's
loopback, a QoS 1 subscriber counting. Per run: delivered/sent, agent CPU per
delivered message (and its system part), broker CPU per message, the agent's
peak RSS and its drop counters; per trace and mode the highest rate reached
that lost nothing. For reference, tcpdump captures the same replays into
/dev/null: what libpcap and the kernel's capture path cost with nothing
done to the frames. Needs root (namespaces, tcpreplay).

    python3 tests/bench/run.py --inproc-only [TRACE ...]

measures only the in-process pipeline cost (no broker, no tshark) of the
named traces (default: sipp-tcp, ws, ws-deflate), making those missing,
and writes target/bench/inproc.json.
"""

import json
import os
import platform
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import support  # noqa: E402  (tests/support.py)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "target", "bench")
TRACES = os.path.join(OUT, "traces")
AGENT = os.path.join(ROOT, "target", "release", "sip-capture")
EXAMPLE_FILTER = '(all (to "alice@provider.com") (method invite bye) (any request (status 200)))'
SIPP_UDP_CALLS = 34_000  # 6 messages a call: 204,000 messages
SIPP_TCP_CALLS = 10_000
SIPP_RATE = 1500  # calls per second
FRAG_INVITES = 20_000
WS_REQUESTS = 10_000  # and as many responses


# The batching configuration measured beside the default one.
BATCHED = ("--batch-max-messages", "100", "--batch-max-delay-ms", "50")


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def sipp_trace(path, transport, calls):
    """uac -> uas on loopback, captured with tcpdump."""
    port = support.free_port()
    proto = "udp" if transport == "u1" else "tcp"
    tmp = path + ".part"
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "-s", "0", "-B", "65536", "-U", "-w", tmp,
                             f"{proto} port {port}"], stderr=subprocess.PIPE)
    time.sleep(1.0)
    uas = subprocess.Popen(["sipp", "-sn", "uas", "-t", transport, "-i", "127.0.0.1", "-p", str(port),
                            "-nostdin", "-bg"], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    run(["sipp", "-sn", "uac", "-t", transport, "-i", "127.0.0.1", f"127.0.0.1:{port}",
         "-m", str(calls), "-r", str(SIPP_RATE), "-l", "2000", "-nostdin", "-timeout", "600s"],
        stdout=subprocess.DEVNULL)
    time.sleep(1.0)
    subprocess.run(["pkill", "-f", f"sipp -sn uas -t {transport} -i 127.0.0.1 -p {port}"])
    uas.wait()
    dump.terminate()
    _, err = dump.communicate()
    print(f"  tcpdump: {err.decode().strip().splitlines()[-1]}", file=sys.stderr)
    os.replace(tmp, path)


def ws_trace(path, mode, requests):
    """tests/sip_websocket.py (a websockets server and client) on loopback,
    captured with tcpdump."""
    port = support.free_port()
    tmp = path + ".part"
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "-s", "0", "-B", "65536", "-U", "-w", tmp,
                             f"tcp port {port}"], stderr=subprocess.PIPE)
    time.sleep(1.0)
    run(["/usr/bin/python3", os.path.join(ROOT, "tests", "sip_websocket.py"), str(port), mode, str(requests)],
        stdout=subprocess.DEVNULL)
    time.sleep(1.0)
    dump.terminate()
    _, err = dump.communicate()
    print(f"  tcpdump: {err.decode().strip().splitlines()[-1]}", file=sys.stderr)
    os.replace(tmp, path)


def frag_trace(path):
    """Large INVITEs as IPv4 and IPv6 fragments (Ethernet, 1500 MTU)."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "data"))
    import make_captures as mc

    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        frame_no = 0
        for n in range(FRAG_INVITES):
            body = "v=0\r\n" + "".join(f"a=x-line-{i}:{'s' * 60}\r\n" for i in range(40))
            datagram = mc.udp(5060, 5060, mc.sip("INVITE", n, body).encode())
            frames = []
            if n % 2 == 0:
                for a in range(0, len(datagram), 1480):
                    b = min(a + 1480, len(datagram))
                    frames.append(mc.ether(mc.ipv4("192.0.2.1", "192.0.2.2", 17, datagram[a:b],
                                                   ident=n & 0xFFFF, offset=a, more=b < len(datagram))))
            else:
                for a in range(0, len(datagram), 1448):
                    b = min(a + 1448, len(datagram))
                    frames.append(mc.ether(mc.ipv6_fragment("2001:db8::1", "2001:db8::2", 17, datagram[a:b],
                                                            a, b < len(datagram), n), 0x86DD))
            for frame in frames:
                f.write(struct.pack("<IIII", 1_700_000_000 + frame_no // 100_000, (frame_no % 100_000) * 10,
                                    len(frame), len(frame)))
                f.write(frame)
                frame_no += 1


def udp_messages(path):
    """(time, src, sport, dst, dport, payload) of each IPv4 UDP frame of an
    Ethernet pcap (what tcpdump writes on lo)."""
    with open(path, "rb") as f:
        raw = f.read()
    at = 24
    while at + 16 <= len(raw):
        secs, micros, caplen, _ = struct.unpack("<IIII", raw[at:at + 16])
        frame = raw[at + 16:at + 16 + caplen]
        at += 16 + caplen
        if frame[12:14] != b"\x08\x00" or frame[23] != 17:
            continue
        ip = frame[14:]
        header = (ip[0] & 0xF) * 4
        sport, dport, length = struct.unpack("!HHH", ip[header:header + 6])
        yield (secs, micros, ip[12:16], sport, ip[16:20], dport, ip[header + 8:header + length])


def sctp_trace(path):
    """The sipp-udp trace's messages over SCTP (RFC 4168): see the module
    doc. Checksums are left zero, as a loopback capture has them (the
    agent computes and counts them all the same)."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "data"))
    import make_captures as mc

    udp = os.path.join(TRACES, "sipp-udp.pcap")
    tsn, ssn = {}, {}
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for n, (secs, micros, src, sport, dst, dport, payload) in enumerate(udp_messages(udp)):
            way, back = (src, sport, dst, dport), (dst, dport, src, sport)
            first = tsn.setdefault(way, 1000)
            seq = ssn[way] = (ssn.get(way, -1) + 1) & 0xFFFF
            if n % 10 == 9:
                half = len(payload) // 2
                data = [mc.data_chunk(first, 0, seq, payload[:half], e=False),
                        mc.data_chunk(first + 1, 0, seq, payload[half:], b=False)]
            else:
                data = [mc.data_chunk(first, 0, seq, payload)]
            tsn[way] = first + len(data)
            chunks = [mc.sack(tsn.get(back, 1000) - 1)] + data
            body = b"".join(mc.pad4(c) for c in chunks)
            packet = struct.pack("!HHII", sport, dport, 0x1000 + sport, 0) + body
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(packet), 0, 0x4000, 64, 132, 0, src, dst)
            frame = mc.ether(ip + packet)
            f.write(struct.pack("<IIII", secs, micros, len(frame), len(frame)))
            f.write(frame)



def vxlan_trace(path):
    """sipp-udp.pcap (Ethernet), each frame wrapped in VXLAN VNI 5001 over
    IPv4 and UDP 4789 in an outer Ethernet frame; timestamps kept."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "data"))
    import make_captures as mc

    raw = open(os.path.join(TRACES, "sipp-udp.pcap"), "rb").read()
    magic, = struct.unpack("<I", raw[:4])
    assert magic in (0xA1B2C3D4, 0xA1B23C4D), "sipp-udp.pcap: a little-endian classic pcap"
    linktype, = struct.unpack("<I", raw[20:24])
    assert linktype == 1, "sipp-udp.pcap: Ethernet"
    with open(path, "wb") as f:
        f.write(raw[:16] + struct.pack("<II", 262144, 1))
        at = 24
        while at + 16 <= len(raw):
            secs, frac, caplen, _ = struct.unpack("<IIII", raw[at:at + 16])
            frame = raw[at + 16:at + 16 + caplen]
            outer = mc.ether(mc.ipv4("198.51.100.1", "198.51.100.2", 17,
                                     mc.udp(49152, 4789, struct.pack("!II", 0x08000000, 5001 << 8) + frame)))
            f.write(struct.pack("<IIII", secs, frac, len(outer), len(outer)) + outer)
            at += 16 + caplen


def traces(names=None):
    """The traces (all, or those named), made first where missing."""
    os.makedirs(TRACES, exist_ok=True)
    made = {
        "sipp-udp": lambda p: sipp_trace(p, "u1", SIPP_UDP_CALLS),
        "sipp-tcp": lambda p: sipp_trace(p, "t1", SIPP_TCP_CALLS),
        "frag": frag_trace,
        "sipp-udp-vxlan": vxlan_trace,  # after sipp-udp, which it is made from
        "sctp": sctp_trace,  # the same
        "ws": lambda p: ws_trace(p, "plain", WS_REQUESTS),
        "ws-deflate": lambda p: ws_trace(p, "deflate", WS_REQUESTS),
    }
    paths = {}
    for name, make in made.items():
        if names is not None and name not in names and not (name == "sipp-udp" and {"sctp", "sipp-udp-vxlan"} & set(names)):
            continue
        path = os.path.join(TRACES, name + ".pcap")
        if not os.path.exists(path):
            print(f"making trace {name} ...", file=sys.stderr)
            make(path)
        paths[name] = path
    return paths


def inproc(trace, filter_text):
    # Its own target dir: a bench build unifies dev-dependency features and
    # would overwrite target/release/sip-capture, which is measured below.
    cmd = ["cargo", "bench", "--quiet", "--bench", "pipeline", "--target-dir", os.path.join(OUT, "build"), "--", trace]
    if filter_text:
        cmd.append(filter_text)
    out = run(cmd, cwd=ROOT, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def child_cpu(cmd, **kw):
    """Run cmd; return (exit status, user+sys CPU seconds). Its peak RSS is
    not taken from here: a child's ru_maxrss includes the forked Python
    image before exec; the agent reports its own (VmHWM)."""
    proc = subprocess.Popen(cmd, **kw)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def end_to_end(trace, messages, extra=()):
    """sip-capture --read TRACE (with EXTRA flags) to a private mosquitto, a QoS 1
    subscriber counting envelopes (a batch is a JSON array of them) up to an end marker."""
    with support.mosquitto("max_inflight_messages 0\n") as port, tempfile.TemporaryDirectory() as tmp:
        sub = support.Subscriber(port, "bench/sip")
        sub.start()
        time.sleep(0.3)
        start = time.monotonic()
        log = os.path.join(tmp, "agent.log")
        with open(log, "w") as agent_out:
            status, cpu = child_cpu(
                [AGENT, "--config", "/dev/null", "--read", trace, "--broker", f"mqtt://127.0.0.1:{port}",
                 "--topic", "bench/sip", "--log-level", "info", *extra], stdout=agent_out)
        received = len(support.envelopes(sub.collect()))
        wall = time.monotonic() - start
        summary = [line for line in open(log) if "summary:" in line][-1]
    fields = dict(f.split("=", 1) for f in summary.split("summary:")[1].split())
    return {
        "status": status,
        "published": int(fields["published"]),
        "acknowledged": int(fields["acknowledged"]),
        "received": received,
        "all_arrived": received == messages == int(fields["acknowledged"]),
        "e2e_msgs_per_s": round(received / wall),
        "agent_cpu_s": round(cpu, 3),
        "e2e_cpu_us_per_msg": round(cpu * 1e6 / max(received, 1), 2),
        "agent_cpu_s_per_100k": round(cpu * 100_000 / max(received, 1), 3),
        "peak_rss_kib": int(fields["peak_rss_kib"]),
    }


# Offered rates of the live stage, SIP messages a second; None is top speed.
LIVE_RATES = (10_000, 20_000, 30_000, 40_000, 80_000, None)
LIVE_TRACES = ("sipp-udp", "sipp-tcp")
# The two ends of the live stage's veth pair, inside its own namespace.
REPLAY_END, CAPTURE_END = "replay0", "capture0"


def live_namespace():
    """Inside `unshare --net`: loopback up, and the veth pair."""
    run(["ip", "link", "set", "lo", "up"])
    run(["ip", "link", "add", REPLAY_END, "type", "veth", "peer", "name", CAPTURE_END])
    for end in (REPLAY_END, CAPTURE_END):
        # The traces hold frames of up to 64 KiB (sipp over TCP on lo).
        run(["ip", "link", "set", end, "mtu", "65535", "up"])


def children_named(name):
    """Processes of this one's children with command `name`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if comm == name and int(rest[1]) == os.getpid():
            found.append(int(pid))
    return found


def cpu_s(pid):
    """user+system CPU seconds of a running process, from /proc."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_in_background(sub):
    """Start subscriber `sub` and a thread that keeps reading what it prints,
    so that it never waits on us; returns the function that stops the thread."""
    sub.start()
    done = threading.Event()
    reader = threading.Thread(target=lambda: [sub._receive(0.2) for _ in iter(done.is_set, True)])
    reader.start()

    def stop():
        done.set()
        reader.join()
    return stop


def replay_speed(rate, frames, messages):
    """tcpreplay's speed flag for `rate` messages a second (None: top
    speed) of a trace with `frames` frames carrying `messages` messages."""
    return ["--topspeed"] if rate is None else [f"--pps={max(1, round(rate * frames / messages))}"]


def live_run(trace, messages, frames, rate, extra=(), agent=AGENT, watch=None):
    """One live run: the agent on CAPTURE_END, tcpreplay of TRACE into
    REPLAY_END at `rate` messages a second (None: top speed). `watch`, when
    given, is called with the agent's pid once it has connected and returns
    what stops the watching once the agent has exited (profile_live.py)."""
    with support.mosquitto("max_inflight_messages 0\n") as port, tempfile.TemporaryDirectory() as tmp:
        broker = children_named("mosquitto")[0]
        sub = support.Subscriber(port, "bench/sip")
        stop_reading = read_in_background(sub)
        log = os.path.join(tmp, "agent.log")
        agent_out = open(log, "w")
        agent = subprocess.Popen([agent, "--config", "/dev/null", "--interface", CAPTURE_END,
                                  "--broker", f"mqtt://127.0.0.1:{port}", "--topic", "bench/sip",
                                  "--log-level", "info", *extra], stdout=agent_out, stderr=agent_out)
        for _ in range(100):
            if "connected to broker" in open(log).read():
                break
            time.sleep(0.05)
        stop_watching = watch(agent.pid) if watch else None
        broker_cpu, sub_cpu = cpu_s(broker), cpu_s(sub.proc.pid)
        speed = replay_speed(rate, frames, messages)
        replay_cpu = os.times()
        replay = run(["tcpreplay", "-q", "-i", REPLAY_END, *speed, trace], capture_output=True, text=True).stdout
        replay_cpu = sum(os.times()[2:4]) - sum(replay_cpu[2:4])
        # Until the subscriber has everything or nothing arrives for 2 s.
        arrived, last_change = -1, time.monotonic()
        while time.monotonic() - last_change < 2:
            time.sleep(0.25)
            now = len(sub.messages)
            if now != arrived:
                arrived, last_change = now, time.monotonic()
        agent.terminate()
        _, status, usage = os.wait4(agent.pid, 0)
        if stop_watching:
            stop_watching()
        agent_out.close()
        broker_cpu = cpu_s(broker) - broker_cpu
        sub_cpu = cpu_s(sub.proc.pid) - sub_cpu
        stop_reading()
        delivered = len(support.envelopes(sub.collect()))
        summary = [line for line in open(log) if "summary:" in line][-1]
    fields = dict(f.split("=", 1) for f in summary.split("summary:")[1].split())
    rated = next((line for line in replay.splitlines() if "Rated:" in line), "").split()
    failed = next((line for line in replay.splitlines() if "Failed packets:" in line), "0").split()[-1]
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "offered_msgs_per_s": rate or "top",
        "replayed_frames_per_s": round(float(rated[-2])) if len(rated) >= 2 else None,
        # What tcpreplay reached, in messages: a loaded machine falls short.
        "replayed_msgs_per_s": round(float(rated[-2]) * messages / frames) if len(rated) >= 2 else None,
        "replay_failed_frames": int(failed),
        "sent": messages,
        "delivered": delivered,
        "delivered_ratio": round(delivered / messages, 4),
        "agent_cpu_us_per_msg": round(cpu * 1e6 / max(delivered, 1), 2),
        # The system part is mostly the kernel's TCP path to the broker; on
        # loopback it includes the broker's side of each segment.
        "agent_sys_us_per_msg": round(usage.ru_stime * 1e6 / max(delivered, 1), 2),
        "broker_cpu_us_per_msg": round(broker_cpu * 1e6 / max(delivered, 1), 2),
        # The rest of the machine's budget: the QoS 1 subscriber
        # (mosquitto_sub) and tcpreplay, whose CPU the agent's competes with.
        "subscriber_cpu_us_per_msg": round(sub_cpu * 1e6 / max(delivered, 1), 2),
        "replay_cpu_s": round(replay_cpu, 2),
        "peak_rss_kib": int(fields["peak_rss_kib"]),
        "pcap_dropped": int(fields["pcap_dropped"]),
        "dropped_queue_full": int(fields["dropped_queue_full"]),
        "agent_status": os.waitstatus_to_exitcode(status),
    }


def reference_capture(trace, messages, frames, rate):
    """tcpdump capturing the replay of TRACE at `rate` messages a second
    (None: top speed) into /dev/null, as the agent does in live_run (same
    veth end, snap length and kernel buffer): what libpcap and the kernel's
    capture path cost alone. Returns its CPU µs per message and the frames
    the kernel dropped."""
    proc = subprocess.Popen(["tcpdump", "-Z", "root", "-i", CAPTURE_END, "-s", "65535", "-B", "8192", "-w", "/dev/null"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # tcpdump says "listening on" once its capture is open.
    proc.stderr.readline()
    speed = replay_speed(rate, frames, messages)
    run(["tcpreplay", "-q", "-i", REPLAY_END, *speed, trace], capture_output=True)
    # What the kernel holds in a block not yet handed over (libpcap's
    # default buffer timeout is 1 s).
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    _, _, usage = os.wait4(proc.pid, 0)
    dropped = next((int(line.split()[0]) for line in proc.stderr if "dropped by kernel" in line), None)
    return {"offered_msgs_per_s": rate or "top",
            "cpu_us_per_msg": round((usage.ru_utime + usage.ru_stime) * 1e6 / messages, 2),
            "kernel_dropped": dropped}


def references(paths, counts):
    """What libpcap and the kernel's capture path cost alone, in the live
    stage's conditions: tcpdump capturing each trace's replay at 20,000
    msg/s and at top speed (reference_capture)."""
    out = {}
    for name in LIVE_TRACES:
        frames = frame_count(paths[name])
        print(f"reference {name} ...", file=sys.stderr)
        out[name] = [reference_capture(paths[name], counts[name], frames, rate) for rate in (20_000, None)]
        print(f"  {out[name]}", file=sys.stderr)
    return out


def live(paths):
    """The live stage, in this process's own network namespace."""
    live_namespace()
    out = {}
    # What the agent finds in each trace, read from the file.
    counts = {name: end_to_end(paths[name], None, BATCHED)["received"] for name in LIVE_TRACES}
    out["references"] = references(paths, counts)
    for name in LIVE_TRACES:
        frames = frame_count(paths[name])
        for mode, extra in (("unbatched", ()), ("batched", BATCHED)):
            runs = []
            for rate in LIVE_RATES:
                print(f"live {name} {mode} {rate or 'top speed'} ...", file=sys.stderr)
                runs.append(live_run(paths[name], counts[name], frames, rate, extra))
                print(f"  {runs[-1]}", file=sys.stderr)
            # The rate tcpreplay reached, not the one asked for; 0 when
            # every run lost something.
            lossless = [r["replayed_msgs_per_s"] or 0 for r in runs if r["delivered"] == r["sent"]]
            out.setdefault(name, {})[mode] = {"runs": runs, "lossfree_msgs_per_s": max(lossless, default=0)}
    return out


def frame_count(path):
    """Frames in a classic pcap file."""
    frames, at = 0, 24
    with open(path, "rb") as f:
        magic = f.read(4)
        endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        size = os.path.getsize(path)
        while at + 16 <= size:
            f.seek(at + 8)
            (caplen,) = struct.unpack(endian + "I", f.read(4))
            at += 16 + caplen
            frames += 1
    return frames


def live_headline(results, stage):
    """The live stage's headline keys, from sipp-udp."""
    udp = stage["sipp-udp"]
    results["live"] = stage
    results["live_lossfree_msgs_per_s"] = udp["unbatched"]["lossfree_msgs_per_s"]
    results["live_lossfree_msgs_per_s_batched"] = udp["batched"]["lossfree_msgs_per_s"]
    # Agent CPU per delivered message at the highest loss-free rate, or,
    # when every run lost some, at the lowest offered rate.
    for key, mode in (("live_cpu_us_per_msg", "unbatched"), ("live_cpu_us_per_msg_batched", "batched")):
        m = udp[mode]
        at = [r for r in m["runs"] if r["replayed_msgs_per_s"] == m["lossfree_msgs_per_s"]] or m["runs"]
        results[key] = at[0]["agent_cpu_us_per_msg"]


def print_live(stage):
    print("\nlive capture (veth, tcpreplay): delivered/sent, agent, broker and subscriber CPU µs per delivered message,"
          " peak RSS KiB, kernel drops, store-full drops")
    for name, runs in stage.get("references", {}).items():
        print(f"  {name}, tcpdump -w /dev/null on the same replay (libpcap's cost alone): "
              + ", ".join(f"{r['cpu_us_per_msg']} µs a message at {r['offered_msgs_per_s']} msg/s"
                          f" (kernel drops {r['kernel_dropped']})" for r in runs))
    for name in LIVE_TRACES:
        for mode, m in stage[name].items():
            print(f"  {name} {mode}: highest loss-free rate reached {m['lossfree_msgs_per_s']} msg/s")
            for r in m["runs"]:
                print(f"    {str(r['offered_msgs_per_s']):>6} msg/s (replayed {r['replayed_msgs_per_s']} msg/s):"
                      f" {r['delivered']}/{r['sent']} = {r['delivered_ratio']:.4f}, agent {r['agent_cpu_us_per_msg']} µs"
                      f" (system {r.get('agent_sys_us_per_msg')}),"
                      f" broker {r['broker_cpu_us_per_msg']} µs, subscriber {r.get('subscriber_cpu_us_per_msg')} µs,"
                      f" tcpreplay {r.get('replay_cpu_s')} s, RSS {r['peak_rss_kib']},"
                      f" pcap_dropped {r['pcap_dropped']}, queue_full {r['dropped_queue_full']}")


def tshark_cpu(trace):
    status, cpu = child_cpu(["tshark", "-r", trace, "-Y", "sip", "-d", "udp.port==5060,sip"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return round(cpu, 3) if status == 0 else None


def sizes():
    out = {"x86_64 (host, glibc)": os.path.getsize(AGENT)}
    for triple in sorted(os.listdir(os.path.join(ROOT, "target"))):
        binary = os.path.join(ROOT, "target", triple, "release", "sip-capture")
        if "-" in triple and os.path.exists(binary):
            out[triple] = os.path.getsize(binary)
    return out


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} cores, {cpu}"


INPROC_ROWS = [
    ("frames", "frames"), ("SIP messages", "messages"),
    ("in-process msg/s (empty filter)", "inproc_msgs_per_s"),
    ("in-process ns/msg (empty filter)", "inproc_ns_per_msg"),
    ("floor ns/msg (sha256+base64+copy)", "floor_ns_per_msg"),
    ("pipeline / floor", "ratio_to_floor"),
    ("file read ns/frame (pcap-parser)", "read_ns_per_frame"),
]


def inproc_only(names):
    """The in-process pipeline cost alone, of the traces `names`."""
    paths = traces(names)
    results = {"machine": machine(), "command": "tests/bench/run.py --inproc-only " + " ".join(names),
               "date": time.strftime("%Y-%m-%d"), "traces": {}}
    for name in names:
        print(f"measuring {name} ...", file=sys.stderr)
        empty = inproc(paths[name], "")
        results["traces"][name] = {key: empty[key] for _, key in INPROC_ROWS}
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "inproc.json"), "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    print(f"\nin-process cost — {results['machine']} — {results['date']}\n")
    print(f"| {'':36} | " + " | ".join(f"{n:>12}" for n in names) + " |")
    print(f"|{'-' * 38}|" + "|".join("-" * 14 for _ in names) + "|")
    for label, key in INPROC_ROWS:
        print(f"| {label:36} | " + " | ".join(f"{str(results['traces'][n][key]):>12}" for n in names) + " |")


def main():
    if "--live-only" in sys.argv or "--live-inside" in sys.argv:
        return main_live_only()
    if sys.argv[1:2] == ["--inproc-only"]:
        return inproc_only(sys.argv[2:] or ["sipp-tcp", "ws", "ws-deflate"])
    paths = traces()
    results = {"machine": machine(), "command": "make bench", "date": time.strftime("%Y-%m-%d"), "traces": {}}
    for name, path in paths.items():
        print(f"measuring {name} ...", file=sys.stderr)
        empty = inproc(path, "")
        example = inproc(path, EXAMPLE_FILTER)
        e2e = end_to_end(path, empty["published"])
        batched = end_to_end(path, empty["published"], BATCHED)
        tshark = tshark_cpu(path)
        results["traces"][name] = {
            "frames": empty["frames"],
            "messages": empty["messages"],
            "inproc_msgs_per_s": empty["inproc_msgs_per_s"],
            "inproc_ns_per_msg": empty["inproc_ns_per_msg"],
            "inproc_example_filter_ns_per_msg": example["inproc_ns_per_msg"],
            "floor_ns_per_msg": empty["floor_ns_per_msg"],
            "ratio_to_floor": empty["ratio_to_floor"],
            "read_ns_per_frame": empty["read_ns_per_frame"],
            "libpcap_read_ns_per_frame": empty["libpcap_read_ns_per_frame"],
            **e2e,
            "batched_all_arrived": batched["all_arrived"],
            "batched_e2e_msgs_per_s": batched["e2e_msgs_per_s"],
            "batched_e2e_cpu_us_per_msg": batched["e2e_cpu_us_per_msg"],
            "tshark_cpu_s": tshark,
            "agent_over_tshark_cpu": round(e2e["agent_cpu_s"] / tshark, 3) if tshark else None,
        }
    results["binary_bytes"] = sizes()
    udp = results["traces"]["sipp-udp"]
    # The headline keys, from the realistic UDP trace.
    for key in ["inproc_msgs_per_s", "inproc_ns_per_msg", "floor_ns_per_msg", "e2e_msgs_per_s",
                "e2e_cpu_us_per_msg", "peak_rss_kib", "agent_cpu_s", "tshark_cpu_s"]:
        results[key] = udp[key]
    live_headline(results, in_namespace())
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    print_table(results)
    print_live(results["live"])


def in_namespace():
    """The live stage, run by this script again in a new network namespace."""
    run(["unshare", "--net", sys.executable, __file__, "--live-inside"], cwd=ROOT)
    with open(os.path.join(OUT, "live.json")) as f:
        return json.load(f)


def main_live_only():
    """`--live-only`: the live stage alone, merged into an existing
    results.json (or a new one). `--live-inside`: the stage itself, already
    in its namespace."""
    if "--live-inside" in sys.argv:
        stage = live(traces())
        with open(os.path.join(OUT, "live.json"), "w") as f:
            json.dump(stage, f, indent=1)
        return
    traces()
    path = os.path.join(OUT, "results.json")
    results = json.load(open(path)) if os.path.exists(path) else {"machine": machine()}
    results["live_date"] = time.strftime("%Y-%m-%d %H:%M")
    live_headline(results, in_namespace())
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    print_live(results["live"])


def print_table(r):
    rows = [
        ("frames", "frames"), ("SIP messages", "messages"),
        ("in-process msg/s (empty filter)", "inproc_msgs_per_s"),
        ("in-process ns/msg (empty filter)", "inproc_ns_per_msg"),
        ("in-process ns/msg (example filter)", "inproc_example_filter_ns_per_msg"),
        ("floor ns/msg (sha256+base64+copy)", "floor_ns_per_msg"),
        ("pipeline / floor", "ratio_to_floor"),
        ("file read ns/frame (pcap-parser)", "read_ns_per_frame"),
        ("file read ns/frame (libpcap)", "libpcap_read_ns_per_frame"),
        ("end-to-end QoS 1 msg/s", "e2e_msgs_per_s"),
        ("all messages arrived", "all_arrived"),
        ("agent CPU us/msg", "e2e_cpu_us_per_msg"),
        ("batched (100): all arrived", "batched_all_arrived"),
        ("batched (100): end-to-end msg/s", "batched_e2e_msgs_per_s"),
        ("batched (100): agent CPU us/msg", "batched_e2e_cpu_us_per_msg"),
        ("agent CPU s per 100k msgs", "agent_cpu_s_per_100k"),
        ("agent CPU s", "agent_cpu_s"),
        ("agent peak RSS KiB", "peak_rss_kib"),
        ("tshark -Y sip CPU s", "tshark_cpu_s"),
        ("agent CPU / tshark CPU", "agent_over_tshark_cpu"),
    ]
    names = list(r["traces"])
    print(f"\nsip-capture benchmark — {r['machine']} — {r['date']}\n")
    print(f"| {'':36} | " + " | ".join(f"{n:>12}" for n in names) + " |")
    print(f"|{'-' * 38}|" + "|".join("-" * 14 for _ in names) + "|")
    for label, key in rows:
        print(f"| {label:36} | " + " | ".join(f"{str(r['traces'][n].get(key)):>12}" for n in names) + " |")
    print("\nstripped release binaries (bytes):")
    for target, size in r["binary_bytes"].items():
        print(f"  {target:40} {size:>10}")
    print(f"\nresults: {os.path.relpath(os.path.join(OUT, 'results.json'), ROOT)}")


if __name__ == "__main__":
    main()
