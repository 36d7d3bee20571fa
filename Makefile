# sip-capture — every target installs what it needs (apt packages with sudo
# when not root, Rust through rustup), so a fresh Debian/Ubuntu machine needs
# only `make demo` or `make test`.

SHELL := /bin/bash
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := build-essential pkg-config curl python3 procps libpcap-dev mosquitto mosquitto-clients sip-tester prometheus
CARGO := $(shell command -v cargo 2>/dev/null || echo $$HOME/.cargo/bin/cargo)

.PHONY: all build deps rust test demo bench clean

all: build

## deps: the system packages the build and the tests use.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

## rust: a Rust toolchain with clippy and rustfmt (rustup when none is there).
rust: deps
	@if ! command -v cargo >/dev/null && [ ! -x $$HOME/.cargo/bin/cargo ]; then \
	  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal; \
	fi
	@if command -v rustup >/dev/null || [ -x $$HOME/.cargo/bin/rustup ]; then \
	  PATH=$$HOME/.cargo/bin:$$PATH rustup component add clippy rustfmt >/dev/null; \
	fi

build: rust
	$(CARGO) build --release

## test: formatting, lints and every test (unit, captures, config, live).
test: rust
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --no-default-features -- -D warnings
	$(CARGO) test

## demo: a private mosquitto on a free loopback port, sip-capture replaying a
## bundled capture into it, and the envelopes that arrive.
demo: build
	@set -euo pipefail; \
	dir=$$(mktemp -d); \
	port=$$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'); \
	printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n' $$port > $$dir/mosquitto.conf; \
	mosquitto -c $$dir/mosquitto.conf > $$dir/mosquitto.log 2>&1 & broker=$$!; \
	trap 'kill $$broker 2>/dev/null; rm -rf $$dir' EXIT; \
	for i in $$(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$$port) 2>/dev/null && break; sleep 0.1; done; \
	echo "== private mosquitto on 127.0.0.1:$$port"; \
	mosquitto_sub -p $$port -t demo/sip -q 1 -c -i demo-subscriber -E; \
	echo "== sip-capture --read tests/data/pcaps/wireshark.pcap --topic demo/sip"; \
	target/release/sip-capture --config /dev/null --read tests/data/pcaps/wireshark.pcap \
	  --broker mqtt://127.0.0.1:$$port --topic demo/sip | tee $$dir/agent.log; \
	count=$$(grep -o ' acknowledged=[0-9]*' $$dir/agent.log | cut -d= -f2); \
	mosquitto_sub -p $$port -t demo/sip -q 1 -c -i demo-subscriber -C $$count -W 10 > $$dir/envelopes.jsonl; \
	echo "== $$count envelopes arrived; the first one:"; \
	head -n 1 $$dir/envelopes.jsonl | cut -c 1-400; echo "..."; \
	echo "== time, src -> dst, first line of each message:"; \
	while read -r env; do \
	  t=$$(sed 's/.*"time":"\([^"]*\)".*/\1/' <<<"$$env"); \
	  s=$$(sed 's/.*"src":"\([^"]*\)".*/\1/' <<<"$$env"); \
	  d=$$(sed 's/.*"dst":"\([^"]*\)".*/\1/' <<<"$$env"); \
	  l=$$(sed 's/.*"sip":"\([^"]*\)".*/\1/' <<<"$$env" | base64 -d | head -n 1 | tr -d '\r'); \
	  echo "$$t  $$s -> $$d  $$l"; \
	done < $$dir/envelopes.jsonl

## bench: traces (cached in target/bench/traces), in-process and end-to-end
## figures, tshark for comparison; a table and target/bench/results.json.
## Making the sipp traces runs tcpdump on lo: run as root or with CAP_NET_RAW.
bench: rust
	@missing=""; for p in tshark tcpdump; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi
	$(CARGO) build --release
	python3 tests/bench/run.py

clean:
	$(CARGO) clean
