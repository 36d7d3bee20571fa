#!/usr/bin/env python3
"""make bench: cost per message, throughput, memory and size, side by side.

Traces are made once and cached under target/bench/traces/ (delete them to
make new ones):
  sipp-udp.pcap   sipp uac/uas calls over UDP on loopback, captured by tcpdump
  sipp-tcp.pcap   the same over TCP
  frag.pcap       large INVITEs fragmented over IPv4 and IPv6 (synthetic)
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

    python3 tests/bench/run.py --inproc-only [TRACE ...]

measures only the in-process pipeline cost (no broker, no tshark) of the
named traces (default: sipp-tcp, ws, ws-deflate), making those missing,
and writes target/bench/inproc.json.
"""

import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
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


def traces(names=None):
    """The traces called `names` (default: all), made when missing."""
    os.makedirs(TRACES, exist_ok=True)
    made = {
        "sipp-udp": lambda p: sipp_trace(p, "u1", SIPP_UDP_CALLS),
        "sipp-tcp": lambda p: sipp_trace(p, "t1", SIPP_TCP_CALLS),
        "frag": frag_trace,
        "ws": lambda p: ws_trace(p, "plain", WS_REQUESTS),
        "ws-deflate": lambda p: ws_trace(p, "deflate", WS_REQUESTS),
    }
    paths = {}
    for name, make in made.items():
        if names is not None and name not in names:
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
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    print_table(results)


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
