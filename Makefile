# sip-capture — every target installs what it needs (apt packages with sudo
# when not root, Rust through rustup), so a fresh Debian/Ubuntu machine needs
# only `make demo` or `make test`.

SHELL := /bin/bash
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := build-essential pkg-config curl python3 procps libpcap-dev mosquitto mosquitto-clients sip-tester prometheus websockify python3-websockets
# Cross builds (zig from PyPI in a venv, libpcap from Debian's source),
# images from Debian's packages, qemu for both kinds of tests.
FIRMWARE_PACKAGES := python3-venv flex bison make squashfs-tools cpio qemu-user-static qemu-system-arm qemu-system-mips shellcheck \
	genimage mtools dosfstools
CARGO := $(shell command -v cargo 2>/dev/null || echo $$HOME/.cargo/bin/cargo)

# make cross TARGET=...; make image / qemu-test BOARD=...
TARGET ?= aarch64-unknown-linux-musl
BOARD ?= qemu-aarch64-virt
FIRMWARE_TARGETS := aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf mipsel-unknown-linux-musl
# What cross-test builds and replays: the boards' and the static x86_64
# binary the packages and the container image ship.
CROSS_TEST_TARGETS := $(FIRMWARE_TARGETS) x86_64-unknown-linux-musl
# The boards CI boots (the third, armv7, boots the same way).
CI_BOARDS := qemu-aarch64-virt qemu-mipsel-malta
board_target = $(shell sed -n 's/^RUST_TARGET=//p' board/$(1)/board.env)

.PHONY: all build debug-build deps firmware-deps rust test test-overflow demo bench bench-live clean cross cross-test image qemu-test openwrt-test r2s-image-test firmware-lint firmware-test buildroot-check \
	monitoring-test package-deps packages deb rpm oci package-test deb-test rpm-test oci-test oci-amd64 oci-arm64

all: build

# Install the Debian packages named in $(1) that are missing.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi
endef

## deps: the system packages the build and the tests use.
deps:
	$(call apt_install,$(APT_PACKAGES))

firmware-deps: deps
	$(call apt_install,$(FIRMWARE_PACKAGES))

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

## test: formatting, lints and every test (unit, captures, config, live, and
## the unit tests of the patched minimq in vendor/);
## then no process a test started may still be running (tests/leftovers.sh).
test: rust
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --no-default-features -- -D warnings
	@run=make-test-$$(date +%s)-$$$$; \
	echo "SIP_CAPTURE_TEST_RUN=$$run $(CARGO) test"; \
	SIP_CAPTURE_TEST_RUN=$$run $(CARGO) test; status=$$?; \
	sh tests/leftovers.sh $$run || status=1; \
	$(CARGO) test --manifest-path vendor/minimq/Cargo.toml --lib --target-dir target/minimq || status=1; \
	exit $$status

## test-overflow: every test, the fuzz corpora replay (tests/fuzz_corpora.rs)
## among them, in a release build with overflow checks and debug assertions
## on. OpenWrt builds with overflow checks (rust-values.mk), where an integer
## overflow on input would be a panic and a respawn loop. LTO off and 16
## codegen units only to build faster: checks do not depend on them. Its own
## target directory, so the release build stays as it is.
test-overflow: rust
	CARGO_TARGET_DIR=target/overflow CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true \
	CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true CARGO_PROFILE_RELEASE_LTO=false \
	CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 $(CARGO) test --release

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
## Making the sipp traces runs tcpdump on lo, and the live stage replays them
## with tcpreplay into a veth pair in a network namespace of its own: run as
## root.
bench: rust
	$(call apt_install,tshark tcpdump tcpreplay)
	$(CARGO) build --release
	python3 tests/bench/run.py

## bench-live: only the live stage of bench (veth, tcpreplay at fixed rates,
## unbatched and batched), merged into target/bench/results.json.
bench-live: rust
	$(call apt_install,tcpdump tcpreplay)
	$(CARGO) build --release
	python3 tests/bench/run.py --live-only

## cross: a static binary for an ARM or MIPS board, or x86_64, libpcap
## linked in: target/$(TARGET)/release/sip-capture. FEATURES=filter-compiler
## by default for the boards (add tls for mqtts://, about 1 MB more),
## filter-compiler tls for x86_64.
cross: rust firmware-deps
	board/scripts/cross-build.sh $(TARGET)

## cross-test: every cross binary replays captures under qemu-user (x86_64
## natively); the envelopes must equal the host build's. The builds run
## side by side: much of each is single-threaded (zig building musl for the
## target on a fresh machine, configure, the LTO link).
cross-test: debug-build firmware-deps
	board/scripts/cross-build.sh --prepare
	$(MAKE) --no-print-directory -j3 $(addprefix cross-,$(CROSS_TEST_TARGETS))
	python3 tests/firmware/cross_replay.py $(CROSS_TEST_TARGETS)

cross-%: rust firmware-deps
	board/scripts/cross-build.sh $* > target/cross/$*.log 2>&1 || { tail -n 40 target/cross/$*.log; exit 1; }
	@tail -n 1 target/cross/$*.log

# The host build the firmware tests compare with.
debug-build: rust
	$(CARGO) build

## image: the board's firmware from Debian's kernel and busybox, the cross
## binary and the board overlays: target/firmware/$(BOARD)/.
image: firmware-deps
	$(MAKE) --no-print-directory cross TARGET=$(call board_target,$(BOARD))
	python3 board/scripts/make_image.py $(BOARD)

## qemu-test: boot the image, replay captures into its mirror port, check
## what reaches the host's broker.
qemu-test: image debug-build
	python3 tests/firmware/qemu_test.py $(BOARD)

## openwrt-test: the OpenWrt init script's UCI-to-arguments mapping.
openwrt-test: debug-build
	sh tests/firmware/openwrt_init_test.sh

## r2s-image-test: the NanoPi R2S SD card layout, made by genimage.
r2s-image-test: firmware-deps
	python3 tests/firmware/r2s_image_test.py

## buildroot-check: Buildroot's own checks of buildroot/ (every defconfig
## loads with nothing dropped and is minimal, check-package, show-info),
## offline, with the Buildroot tarball of $(SHARED)/tools (see its
## README.md; a copy beside the checkout in CI). Skipped when it is absent.
SHARED ?= $(CURDIR)/../shared
BUILDROOT_TARBALL ?= $(SHARED)/tools/buildroot-e991fa07.tar.xz
ifeq ($(wildcard $(BUILDROOT_TARBALL)),)
buildroot-check:
	@echo "buildroot-check: skipped: no $(BUILDROOT_TARBALL) (set SHARED=/path/to/shared)"
else
buildroot-check:
	$(call apt_install,build-essential python3-venv rsync bc cpio unzip file wget shellcheck)
	python3 board/scripts/buildroot_check.py $(BUILDROOT_TARBALL)
endif

# The shell scripts that run on the boards, in Buildroot, in the packages
# and in tests.
FIRMWARE_SCRIPTS := board/common/overlay/etc/init.d/rcS board/common/overlay/etc/udhcpc.script \
	board/common/overlay/usr/sbin/start-sip-capture board/common/overlay/usr/sbin/sip-capture-hardware-id \
	board/common/initramfs/init board/common/*.sh board/nanopi-r2s/*.sh board/scripts/*.sh \
	board/openwrt/sip-capture/files/sip-capture.init tests/firmware/*.sh tests/leftovers.sh \
	board/packages/*.sh tests/packages/*.sh

## firmware-lint: shellcheck over them.
firmware-lint: firmware-deps
	shellcheck $(FIRMWARE_SCRIPTS)

## firmware-test: what CI runs for the firmware.
firmware-test: firmware-lint cross-test openwrt-test r2s-image-test
	@for b in $(CI_BOARDS); do $(MAKE) --no-print-directory qemu-test BOARD=$$b || exit 1; done

# Packaging: Debian's tools, and cargo-deb and cargo-generate-rpm (not in
# Debian) at pinned versions under target/tools.
PACKAGE_PACKAGES := lintian rpm rpmlint debootstrap umoci skopeo runc libcap2-bin ca-certificates man-db
CARGO_DEB_VERSION := 3.8.0
CARGO_GENERATE_RPM_VERSION := 0.21.1
TOOLS := target/tools/bin
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

package-deps: firmware-deps
	$(call apt_install,$(PACKAGE_PACKAGES))

$(TOOLS)/.cargo-deb-$(CARGO_DEB_VERSION): | rust
	$(CARGO) install --locked --root target/tools cargo-deb@$(CARGO_DEB_VERSION)
	touch $@

$(TOOLS)/.cargo-generate-rpm-$(CARGO_GENERATE_RPM_VERSION): | rust
	$(CARGO) install --locked --root target/tools cargo-generate-rpm@$(CARGO_GENERATE_RPM_VERSION)
	touch $@

## packages: in target/packages/, the .deb (the glibc build, against
## Debian's libpcap0.8), the .rpm (the static x86_64 build) and the
## container images for x86_64 and aarch64 (an OCI layout, and
## docker-archive tarballs); docs/deployment.md says why which binary.
packages: deb rpm oci

deb: package-deps $(TOOLS)/.cargo-deb-$(CARGO_DEB_VERSION)
	PATH=$(CURDIR)/$(TOOLS):$$PATH $(CARGO) deb --output target/packages/

rpm: package-deps $(TOOLS)/.cargo-generate-rpm-$(CARGO_GENERATE_RPM_VERSION)
	$(MAKE) --no-print-directory cross TARGET=x86_64-unknown-linux-musl
	mkdir -p target/packages && gzip -9n < docs/sip-capture.8 > target/packages/sip-capture.8.gz
	PATH=$(CURDIR)/$(TOOLS):$$PATH $(CARGO) generate-rpm --output target/packages/

oci: oci-amd64 oci-arm64

oci-amd64: package-deps
	$(MAKE) --no-print-directory cross TARGET=x86_64-unknown-linux-musl
	board/scripts/oci-image.sh amd64 target/x86_64-unknown-linux-musl/release/sip-capture

# The aarch64 binary with TLS, which the boards' default leaves out.
oci-arm64: package-deps
	$(MAKE) --no-print-directory cross TARGET=aarch64-unknown-linux-musl FEATURES="filter-compiler tls"
	board/scripts/oci-image.sh arm64 target/aarch64-unknown-linux-musl/release/sip-capture

## package-test: lintian and rpmlint at their default severity, the unit
## through systemd-analyze verify, the .deb installed, upgraded and purged
## in a throwaway Debian root (debootstrap, cached in target/package-test),
## and the x86_64 image run by runc against a private mosquitto.
package-test: deb-test rpm-test oci-test

deb-test: deb debug-build
	tests/packages/man_page_test.sh target/debug/sip-capture
	lintian --fail-on error,warning target/packages/sip-capture_$(VERSION)-1_amd64.deb
	tests/packages/deb_install_test.sh target/packages/sip-capture_$(VERSION)-1_amd64.deb

rpm-test: rpm
	rpmlint -c board/packages/rpmlint.toml -r board/packages/rpmlintrc target/packages/sip-capture-$(VERSION)-1.x86_64.rpm

# The image CI runs is the x86_64 one; the aarch64 one is made the same way.
oci-test: oci-amd64 debug-build
	python3 tests/packages/oci_test.py

## monitoring-test: the alerting rules (promtool check and unit tests), the
## metric names of the rules and the Grafana dashboard against the agent's
## real /metrics, and the scale-out with a shared subscription
## (docs/deployment.md). promtool comes with Debian's prometheus (deps).
monitoring-test: debug-build
	promtool check rules docs/monitoring/alerts.yml
	promtool test rules docs/monitoring/alerts.test.yml
	python3 tests/ops/metric_names.py
	python3 tests/ops/shared_subscription.py

clean:
	$(CARGO) clean
