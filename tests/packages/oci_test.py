#!/usr/bin/env python3
"""The x86_64 container image (board/scripts/oci-image.sh) run by a real OCI
runtime, runc, as root on the host, the way `docker run --network host
--cap-add NET_RAW` runs it: the host's network namespace, the image's
non-root user, NET_RAW only in the bounding set (Kubernetes' `drop: [ALL],
add: [NET_RAW]`), a read-only root.

1. `--read` of a bundled capture to the test's own mosquitto on loopback:
   the envelopes must equal, byte for byte, the host build's.
2. A live capture on lo, as the image's uid: the binary's file capability
   must give it NET_RAW; a SIP message sent to lo must arrive.

    oci_test.py         (after `cargo build` and `make oci`)
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import support  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LAYOUT = os.path.join(ROOT, "target", "packages", "oci")
HOST = os.path.join(ROOT, "target", "debug", "sip-capture")
PCAPS = os.path.join(ROOT, "tests", "data", "pcaps")
CAPTURE = "wireshark.pcap"
IMAGE_UID = 10001
OPTIONS = ("OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-oci\r\n"
           "From: <sip:test@127.0.0.1>;tag=1\r\nTo: <sip:probe@127.0.0.1>\r\nCall-ID: oci-{n}@127.0.0.1\r\n"
           "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")


def bundle(tmp, name, args, env):
    """An OCI runtime bundle of the image, its process and mounts set as
    docker run would for these arguments."""
    path = os.path.join(tmp, name)
    subprocess.run(["umoci", "unpack", "--image", f"{LAYOUT}:amd64", path], check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    process = config["process"]
    if process["user"]["uid"] != IMAGE_UID:
        raise RuntimeError(f"the image runs as uid {process['user']['uid']}, not {IMAGE_UID}")
    process["args"] += args
    process["env"] += env
    process["terminal"] = False
    process["noNewPrivileges"] = False  # file capabilities work (as in docker's default)
    process["capabilities"] = {"bounding": ["CAP_NET_RAW"], "effective": [], "permitted": [], "inheritable": [],
                               "ambient": []}
    config["root"]["readonly"] = True
    # The host's network namespace (--network host).
    config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"] if n["type"] != "network"]
    config["mounts"].append({"destination": "/data", "type": "bind", "source": PCAPS, "options": ["rbind", "ro"]})
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    return path


def runc(tmp, name, args, env):
    """Start the container; returns the runc process (foreground)."""
    path = bundle(tmp, name, args, env)
    return subprocess.Popen(["runc", "--root", os.path.join(tmp, "runc"), "run", "--bundle", path, name],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop(tmp, name, proc):
    subprocess.run(["runc", "--root", os.path.join(tmp, "runc"), "kill", name, "TERM"], stderr=subprocess.DEVNULL)
    try:
        out = proc.communicate(timeout=10)[0]
    except subprocess.TimeoutExpired:
        subprocess.run(["runc", "--root", os.path.join(tmp, "runc"), "kill", name, "KILL"])
        out = proc.communicate()[0]
    subprocess.run(["runc", "--root", os.path.join(tmp, "runc"), "delete", "--force", name], stderr=subprocess.DEVNULL)
    return out


def replay(tmp, port):
    sub = support.Subscriber(port, "oci/sip")
    proc = runc(tmp, "sip-capture-read", ["--read", f"/data/{CAPTURE}", "--log-level", "warn"],
                [f"BROKER=mqtt://127.0.0.1:{port}", "TOPIC=oci/sip"])
    out = proc.communicate(timeout=60)[0]
    subprocess.run(["runc", "--root", os.path.join(tmp, "runc"), "delete", "--force", "sip-capture-read"],
                   stderr=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"the container exited {proc.returncode}:\n{out}")
    return sub.collect()


def host_replay(port):
    sub = support.Subscriber(port, "oci/sip")
    subprocess.run([HOST, "--config", "/dev/null", "--read", os.path.join(PCAPS, CAPTURE), "--broker",
                    f"mqtt://127.0.0.1:{port}", "--topic", "oci/sip", "--log-level", "warn"],
                   check=True, stdout=subprocess.DEVNULL)
    return sub.collect()


def live(tmp, port):
    """Whether a message sent to lo, captured in the container, arrives."""
    sip_port = support.free_port()
    sub = support.Subscriber(port, "oci/live")
    sub.start()
    proc = runc(tmp, "sip-capture-live", ["--interface", "lo", "--bpf-filter", f"udp dst port {sip_port}"],
                [f"BROKER=mqtt://127.0.0.1:{port}", "TOPIC=oci/live", "TELEMETRY_INTERVAL_S=0"])
    arrived = 0
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            deadline = time.monotonic() + 20
            n = 0
            while arrived == 0 and time.monotonic() < deadline and proc.poll() is None:
                n += 1
                s.sendto(OPTIONS.format(n=n).encode(), ("127.0.0.1", sip_port))
                arrived = sub.wait_for(1, 0.5)
    finally:
        out = stop(tmp, "sip-capture-live", proc)
        sub.proc.kill()
        sub.proc.wait()
    return arrived, out


def main():
    if not shutil.which("runc"):
        print("FAIL runc is not installed")
        return 1
    checks = []
    with tempfile.TemporaryDirectory() as tmp, support.mosquitto() as port:
        got, expected = replay(tmp, port), host_replay(port)
        checks.append((f"--read {CAPTURE} in the container: {len(got)} envelopes, identical to the host build's",
                       len(got) > 0 and got == expected))
        arrived, out = live(tmp, port)
        checks.append((f"live capture on lo as uid {IMAGE_UID} with NET_RAW: {arrived} envelope arrived", arrived > 0))
        if not arrived:
            print(out)
    return support.report(checks)


if __name__ == "__main__":
    sys.exit(main())
