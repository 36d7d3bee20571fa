#!/usr/bin/env python3
"""One run of the live stage with perf watching the agent: where its time
goes, per thread and function, at a given rate.

    python3 tests/bench/profile_live.py TRACE RATE MODE [--stat] [--agent PATH] [--out FILE]

TRACE is sipp-udp or sipp-tcp (made by run.py, cached under
target/bench/traces/), RATE messages a second or `top`, MODE unbatched or
batched (run.py's batches of 100). By default `perf record -F 4999 -g` of
the agent into target/bench/perf.data, read with `perf report -i FILE
--sort comm,sym`; with --stat, `perf stat` of its system calls, context
switches and task clock instead. Prints the run's figures as the live stage
records them; perf costs the agent time, so compare delivery only between
runs made the same way. For a readable profile build the agent with
symbols and pass it with --agent:

    CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=1 \\
        cargo build --release --target-dir target/prof

Re-runs itself under `unshare --net` as the live stage does (root,
tcpreplay, perf). Used in docs/performance.md ("Where the live agent's time
goes now").
"""
import argparse
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
import run  # noqa: E402

STAT_EVENTS = ",".join([
    *(f"syscalls:sys_enter_{call}" for call in ("sendto", "recvfrom", "epoll_wait", "write", "futex", "ppoll", "poll")),
    "task-clock", "context-switches",
])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace", choices=run.LIVE_TRACES)
    parser.add_argument("rate", help="messages a second, or top")
    parser.add_argument("mode", choices=("unbatched", "batched"))
    parser.add_argument("--stat", action="store_true", help="count system calls instead of sampling")
    parser.add_argument("--agent", default=run.AGENT)
    parser.add_argument("--out", help="target/bench/perf.data, or perf.stat with --stat")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out = args.out or os.path.join(run.OUT, "perf.stat" if args.stat else "perf.data")
    if not args.inside:
        run.traces(list(run.LIVE_TRACES))
        os.execvp("unshare", ["unshare", "--net", sys.executable, *sys.argv, "--inside"])
    run.live_namespace()
    path = run.traces([args.trace])[args.trace]
    extra = run.BATCHED if args.mode == "batched" else ()
    messages = run.end_to_end(path, None, run.BATCHED)["received"]

    def watch(pid):
        perf = ["perf", "stat", "-e", STAT_EVENTS] if args.stat else ["perf", "record", "-F", "4999", "-g"]
        proc = subprocess.Popen([*perf, "-o", args.out, "-p", str(pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def stop():
            proc.send_signal(signal.SIGINT)
            proc.wait()
        return stop

    rate = None if args.rate == "top" else int(args.rate)
    result = run.live_run(path, messages, run.frame_count(path), rate, extra, agent=args.agent, watch=watch)
    print(result)
    print(f"perf output: {args.out}")


if __name__ == "__main__":
    main()
