################################################################################
#
# sip-capture
#
################################################################################

# A tagged release, vendored by Buildroot's download step (cargo-post-process),
# so that `make source` is all a build without network needs. To build a
# checkout instead: SIP_CAPTURE_OVERRIDE_SRCDIR in local.mk (docs/firmware.md).
SIP_CAPTURE_VERSION = 0.1.0
SIP_CAPTURE_SITE = $(call github,sip-capture,sip-capture,v$(SIP_CAPTURE_VERSION))
SIP_CAPTURE_LICENSE = MIT
SIP_CAPTURE_LICENSE_FILES = LICENSE
SIP_CAPTURE_DEPENDENCIES = libpcap

SIP_CAPTURE_FEATURES = filter-compiler
ifeq ($(BR2_PACKAGE_SIP_CAPTURE_TLS),y)
SIP_CAPTURE_FEATURES += tls
endif
SIP_CAPTURE_CARGO_BUILD_OPTS = \
	--no-default-features --features "$(SIP_CAPTURE_FEATURES)"
SIP_CAPTURE_CARGO_INSTALL_OPTS = $(SIP_CAPTURE_CARGO_BUILD_OPTS)

# The pcap crate links the libpcap of the staging directory.
SIP_CAPTURE_CARGO_ENV = \
	LIBPCAP_LIBDIR=$(STAGING_DIR)/usr/lib \
	LIBPCAP_VER=$(LIBPCAP_VERSION)

# pkg-cargo.mk sets the release profile from BR2_OPTIMIZE_* and
# BR2_ENABLE_LTO (by default opt-level 3, no LTO, 16 codegen units), which
# overrides Cargo.toml's; these come after it and restore the size-tuned
# profile the documented sizes are measured with. Stripping follows
# BR2_STRIP_strip, as for every other package.
SIP_CAPTURE_CARGO_ENV += \
	CARGO_PROFILE_RELEASE_OPT_LEVEL="s" \
	CARGO_PROFILE_RELEASE_LTO="true" \
	CARGO_PROFILE_RELEASE_CODEGEN_UNITS="1" \
	CARGO_PROFILE_RELEASE_PANIC="abort" \
	CARGO_PROFILE_RELEASE_STRIP="$(if $(BR2_STRIP_strip),true,false)"

# musl 1.2 has a 64-bit time_t on 32-bit targets; the libc crate assumes
# 32-bit unless told, and would misread every pcap packet header. The
# first flag repeats the one pkg-cargo.mk sets for ARM, which this
# variable replaces.
ifeq ($(BR2_TOOLCHAIN_USES_MUSL):$(BR2_ARCH_IS_64),y:)
SIP_CAPTURE_CARGO_ENV += \
	CARGO_TARGET_$(call UPPERCASE,$(RUSTC_TARGET_NAME))_RUSTFLAGS="-Clink-arg=-Wl,--allow-multiple-definition --cfg libc_unstable_musl_v1_2"
endif

# With SIP_CAPTURE_OVERRIDE_SRCDIR, the checkout's build output is not
# part of the source.
SIP_CAPTURE_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = --exclude /target

$(eval $(cargo-package))
