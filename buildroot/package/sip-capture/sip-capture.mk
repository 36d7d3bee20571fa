################################################################################
#
# sip-capture
#
################################################################################

# The source is the checkout this external tree lives in.
SIP_CAPTURE_VERSION = 0.1.0
SIP_CAPTURE_SITE = $(BR2_EXTERNAL_SIP_CAPTURE_PATH)/..
SIP_CAPTURE_SITE_METHOD = local
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

# musl 1.2 has a 64-bit time_t on 32-bit targets; the libc crate assumes
# 32-bit unless told, and would misread every pcap packet header. The
# first flag repeats the one pkg-cargo.mk sets for ARM, which this
# variable replaces.
ifeq ($(BR2_TOOLCHAIN_USES_MUSL):$(BR2_ARCH_IS_64),y:)
SIP_CAPTURE_CARGO_ENV += \
	CARGO_TARGET_$(call UPPERCASE,$(RUSTC_TARGET_NAME))_RUSTFLAGS="-Clink-arg=-Wl,--allow-multiple-definition --cfg libc_unstable_musl_v1_2"
endif

# The checkout's own build output is not part of the source.
SIP_CAPTURE_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = --exclude /target

# Cargo vendors dependencies at download time only for tarball and git
# sites, not local ones: vendor them before configuring (this step needs
# the network). Not after the rsync: host-rustc is only guaranteed to be
# built (and, with per-package directories, in this package's HOST_DIR)
# once the configure step starts.
define SIP_CAPTURE_VENDOR_CRATES
	cd $(@D) && $(PKG_COMMON_CARGO_ENV) \
		$(HOST_DIR)/bin/cargo vendor --locked VENDOR > .cargo-config.toml
	mkdir -p $(@D)/.cargo
	mv $(@D)/.cargo-config.toml $(@D)/.cargo/config.toml
endef
SIP_CAPTURE_PRE_CONFIGURE_HOOKS += SIP_CAPTURE_VENDOR_CRATES

$(eval $(cargo-package))
