"""Helpers shared by the Python test drivers (bench, firmware): a private
mosquitto on a free loopback port, and a QoS 1 subscriber that reads up to
an end marker. Standard library only."""

import contextlib
import json
import os
import select
import socket
import subprocess
import tempfile
import time

END_MARKER = "--end--"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mosquitto(extra_conf=""):
    """A private mosquitto on 127.0.0.1; yields its port."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n{extra_conf}")
        broker = subprocess.Popen(["mosquitto", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            else:
                raise RuntimeError(f"mosquitto did not start on port {port}")
            yield port
        finally:
            broker.terminate()
            broker.wait()


class Subscriber:
    """A persistent QoS 1 subscription on `topic`, made before anything is
    published; `collect()` publishes the end marker and returns every
    message before it, in order."""

    def __init__(self, port, topic):
        self.port, self.topic = port, topic
        self.args = ["mosquitto_sub", "-p", str(port), "-t", topic, "-q", "1", "-c", "-i", f"sub-{free_port()}"]
        subprocess.run(self.args + ["-E"], check=True)

    def start(self):
        """Connect now and keep receiving (for long runs)."""
        self.proc = subprocess.Popen(self.args + ["-W", "600"], stdout=subprocess.PIPE)
        self.messages, self.pending = [], b""

    def _receive(self, timeout):
        """The lines mosquitto_sub printed within `timeout` s, appended to
        `messages` and returned; None at its end. Unbuffered, so select()
        sees every byte not yet taken."""
        fd = self.proc.stdout.fileno()
        if not select.select([fd], [], [], max(timeout, 0))[0]:
            return []
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return None
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        new = [line.decode() for line in lines]
        self.messages.extend(new)
        return new

    def wait_for(self, count, timeout):
        """Receive until `count` envelopes have arrived or `timeout` seconds
        have passed; returns how many have."""
        deadline = time.monotonic() + timeout
        arrived = len(envelopes(self.messages))
        while arrived < count and time.monotonic() < deadline:
            new = self._receive(deadline - time.monotonic())
            if new is None:
                break
            arrived += len(envelopes(new))
        return arrived

    def collect(self):
        """Everything received, up to an end marker published now."""
        if not hasattr(self, "proc"):
            self.start()
        subprocess.run(["mosquitto_pub", "-p", str(self.port), "-t", self.topic, "-q", "1", "-m", END_MARKER],
                       check=True)
        deadline, seen = time.monotonic() + 60, END_MARKER in self.messages
        while not seen and time.monotonic() < deadline:
            new = self._receive(deadline - time.monotonic())
            if new is None:
                break
            seen = END_MARKER in new
        self.proc.kill()
        self.proc.wait()
        if not seen:
            raise RuntimeError(f"the end marker never arrived on {self.topic}")
        return self.messages[:self.messages.index(END_MARKER)]


def envelopes(messages):
    """The envelopes in MQTT messages: an object each, or arrays of them."""
    out = []
    for text in messages:
        value = json.loads(text)
        out.extend(value if isinstance(value, list) else [value])
    return out


def report(checks):
    """Print each (what, ok) check as one line, then the count; the exit
    status: 1 when any failed."""
    for what, ok in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
    failed = sum(not ok for _, ok in checks)
    print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0
