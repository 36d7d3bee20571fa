#!/usr/bin/env python3
"""Scaling out (docs/deployment.md): two agents with distinct CLIENT_IDs,
each on its own topic sip/<site>, publish to one real mosquitto; two
consumers share the load with one MQTT 5 shared subscription
($share/workers/sip/+). Every envelope must reach exactly one consumer of
the group, and both consumers must get some. A plain subscriber per site
topic records what was published, to compare with.

    shared_subscription.py     (after `cargo build`)
"""

import collections
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import support  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
AGENT = os.path.join(ROOT, "target", "debug", "sip-capture")
# One capture per sensor: UDP on one site, TCP with fragments on the other.
SENSORS = {"site-1": "pcaps/sip-i.pcap", "site-2": "pcaps/sip-tcp.pcap"}
GROUP_FILTER = "$share/workers/sip/+"


class Consumer:
    """mosquitto_sub in the share group (MQTT 5), QoS 1; `messages` holds
    (topic, payload) pairs as they arrive."""

    def __init__(self, port, name):
        self.messages, self.subscribed = [], threading.Event()
        self.proc = subprocess.Popen(["stdbuf", "-oL", "mosquitto_sub", "-V", "5", "-p", str(port), "-i", name, "-q", "1",
                                      "-t", GROUP_FILTER, "-v", "-d"], stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        if not self.subscribed.wait(10):
            raise RuntimeError(f"{name} got no SUBACK")

    def _read(self):
        # stdbuf -oL: a line at a time through the pipe. -d interleaves the client's own log ("Client c1 ...", "Subscribed
        # ...") with the messages ("topic payload").
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if line.startswith("Subscribed "):
                self.subscribed.set()
            elif not line.startswith("Client "):
                topic, payload = line.split(" ", 1)
                self.messages.append((topic, payload))

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def main():
    with support.mosquitto() as port:
        plain = [support.Subscriber(port, f"sip/{site}") for site in SENSORS]
        consumers = [Consumer(port, f"consumer-{i}") for i in (1, 2)]
        agents = [subprocess.Popen([AGENT, "--config", "/dev/null", "--read", os.path.join(ROOT, "tests", "data", capture),
                                    "--broker", f"mqtt://127.0.0.1:{port}", "--topic", f"sip/{site}",
                                    "--client-id", f"sensor-{site}", "--log-level", "warn"], stdout=subprocess.DEVNULL)
                  for site, capture in SENSORS.items()]
        for agent in agents:
            if agent.wait(60) != 0:
                raise RuntimeError(f"an agent exited {agent.returncode}")
        published = collections.Counter(m for s in plain for m in s.collect())
        total = sum(published.values())
        # Each site's end marker matches sip/+ too, and reaches a consumer.
        deadline = time.monotonic() + 20
        while sum(len(c.messages) for c in consumers) < total + len(plain) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)  # room for a duplicate to show up
        for c in consumers:
            c.stop()
    got = [collections.Counter(payload for topic, payload in c.messages if payload != support.END_MARKER)
           for c in consumers]
    topics = {topic for c in consumers for topic, _ in c.messages}
    checks = [
        (f"{total} envelopes published by {len(SENSORS)} sensors", total > 0 and set(SENSORS) <= {t.split("/")[1] for t in topics}),
        ("the group received every envelope exactly once", got[0] + got[1] == published),
        ("no envelope reached both consumers", not (set(got[0]) & set(got[1]))),
        (f"both consumers shared the load ({sum(got[0].values())} and {sum(got[1].values())})",
         all(sum(g.values()) > 0 for g in got)),
    ]
    return support.report(checks)


if __name__ == "__main__":
    sys.exit(main())
