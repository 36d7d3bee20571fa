#!/bin/sh
# After a test run: is any process it started still running?
#
# `make test` gives `cargo test` the environment variable
# SIP_CAPTURE_TEST_RUN=<run id>, which every process a test starts inherits
# (tests/common passes it to the agent too). A process that still carries
# this run's id after `cargo test` returned was left behind by a test: it is
# named, stopped, and the run fails. Processes of other runs, or not started
# by the tests, are never touched.
#
# Usage: tests/leftovers.sh RUN_ID
set -u
run=${1:?usage: leftovers.sh RUN_ID}
left=""
for environ in /proc/[0-9]*/environ; do
	pid=${environ#/proc/}
	pid=${pid%/environ}
	[ "$pid" = "$$" ] && continue
	if { tr "\0" "\n" <"$environ"; } 2>/dev/null | grep -qxF "SIP_CAPTURE_TEST_RUN=$run"; then
		left="$left $pid"
	fi
done
[ -z "$left" ] && exit 0
for pid in $left; do
	echo "left running by the tests: pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" >&2
	kill -KILL "$pid" 2>/dev/null
done
exit 1
