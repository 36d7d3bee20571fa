#!/usr/bin/env python3
"""The Grafana dashboard and the alerting rules in docs/monitoring/ ask
only for metrics the agent exports: the names in their queries are checked
against the real /metrics of the agent (started with METRICS_ADDR on
loopback, reading a bundled capture), and every dashboard query is parsed
by promtool (as a recording rule, Grafana's variables replaced).

    metric_names.py            (after `cargo build`)
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import support  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
AGENT = os.path.join(ROOT, "target", "debug", "sip-capture")
DASHBOARD = os.path.join(ROOT, "docs", "monitoring", "grafana-dashboard.json")
ALERTS = os.path.join(ROOT, "docs", "monitoring", "alerts.yml")
NAME = re.compile(r"\bsip_capture_[a-z0-9_]+")
# Grafana's variables, as it would expand them, so promtool can parse.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$instance": ".*"}


def scrape():
    """The names /metrics lists, scraped from an agent that read a capture
    and waits for a broker that is not there (so it stays up)."""
    metrics, nobody = support.free_port(), support.free_port()
    agent = subprocess.Popen([AGENT, "--config", "/dev/null", "--read",
                              os.path.join(ROOT, "tests", "data", "pcaps", "wireshark.pcap"),
                              "--broker", f"mqtt://127.0.0.1:{nobody}", "--topic", "ops/sip",
                              "--metrics-addr", f"127.0.0.1:{metrics}", "--log-level", "error"])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=2).read().decode()
                if re.search(r"^sip_capture_sip_messages_total [1-9]", text, re.M):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the agent's /metrics never showed the capture's SIP messages")
            time.sleep(0.1)
    finally:
        agent.terminate()
        agent.wait()
    return {re.split(r"[{ ]", line)[0] for line in text.splitlines() if line and not line.startswith("#")}


def main():
    exported = scrape()
    with open(DASHBOARD) as f:
        dashboard = json.load(f)
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries.append(dashboard["templating"]["list"][0]["definition"].split("(")[1].split(",")[0])
    with open(ALERTS) as f:
        alerts = "\n".join(line for line in f if not line.lstrip().startswith("#"))
    failed = False
    for what, text in [("dashboard", "\n".join(queries)), ("alerts.yml", alerts)]:
        used = set(NAME.findall(text))
        unknown = sorted(used - exported)
        if unknown:
            failed = True
            print(f"FAIL {what}: not exported by the agent: {', '.join(unknown)}")
        else:
            print(f"ok   {what}: {len(used)} metric names, all exported by the agent")
    # Each dashboard query through promtool's parser.
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as rules:
        rules.write("groups:\n  - name: dashboard\n    rules:\n")
        for i, query in enumerate(queries):
            for var, value in GRAFANA_VARIABLES.items():
                query = query.replace(var, value)
            rules.write(f"      - record: dashboard:query{i}\n        expr: {json.dumps(query)}\n")
        rules.flush()
        check = subprocess.run(["promtool", "check", "rules", rules.name], capture_output=True, text=True)
        if check.returncode != 0:
            failed = True
            print(f"FAIL dashboard: promtool does not parse its queries:\n{check.stdout}{check.stderr}")
        else:
            print(f"ok   dashboard: {len(queries)} queries parse")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
