//! The device's identity: the default CLIENT_ID, from the hostname or,
//! where the hostname is one every appliance of an image shares, from the
//! hardware.
//!
//! The hardware id is defined here and, for the images' hostname, in the
//! shell script board/common/overlay/usr/sbin/sip-capture-hardware-id; the
//! two must agree (tests/config.rs runs both on the same machine). The
//! rule, which docs/configuration.md ("The default CLIENT_ID") states for
//! users:
//!
//! 1. the MAC address of INTERFACE, as 12 lowercase hex digits, if it is a
//!    physical interface (its sysfs device is not under `virtual/`: no
//!    bridge, tunnel, `lo`) with an address that is not all zeros;
//! 2. else that of the first physical interface by name (byte order);
//! 3. else the board's serial number from the device tree, keeping only
//!    ASCII letters, digits and `-`;
//!
//! at most [`MAX_HARDWARE_ID_LEN`] characters. Nothing is written, so the
//! id survives a read-only root and is the same at every boot.
//!
//! Not done here: setting the hostname (the images do that at boot), or
//! `/etc/machine-id`, which a read-only image bakes once for every device.

use std::path::Path;

/// The longest hardware id: a MAC address is 12, device-tree serials are
/// usually 16. `sip-capture-tap-` and this fit MQTT's 23 bytes of old
/// brokers only for a MAC; every MQTT 5 broker takes longer ids.
pub const MAX_HARDWARE_ID_LEN: usize = 32;

/// Hostnames that do not tell one device from another: the defaults of
/// the kernel, Buildroot and OpenWrt, and those this project's images bake
/// in (BR2_TARGET_GENERIC_HOSTNAME in buildroot/configs), shared by every
/// appliance flashed from one image until it sets its own at boot.
const GENERIC_HOSTNAMES: &[&str] = &[
    "(none)",
    "localhost",
    "buildroot",
    "OpenWrt",
    "tap-nanopi-r2s",
    "tap-qemu-aarch64-virt",
    "tap-qemu-armv7-virt",
    "tap-qemu-mipsel-malta",
];

/// The default CLIENT_ID, at most `max_len` bytes: `sip-capture-<hostname>`;
/// but when the hostname is one of `GENERIC_HOSTNAMES` (or empty),
/// `sip-capture-<hardware id>` from [`hardware_id`] of `interface` (the
/// capture interface, `None` when reading a file), so that appliances
/// flashed from one image do not take each other's MQTT session. Only
/// ASCII letters, digits and `-` are kept.
pub fn default_client_id(interface: Option<&str>, max_len: usize) -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let raw = raw.trim();
    let generic = raw.is_empty() || GENERIC_HOSTNAMES.iter().any(|g| g.eq_ignore_ascii_case(raw));
    let id = match generic {
        true => hardware_id(interface).unwrap_or_else(|| raw.to_string()),
        false => raw.to_string(),
    };
    let id = sanitized(&id, max_len.saturating_sub("sip-capture-".len()));
    if id.is_empty() {
        "sip-capture".to_string()
    } else {
        format!("sip-capture-{id}")
    }
}

/// This device's hardware id, by the rule in the module's doc; `None` when
/// it has neither a physical interface with an address nor a device-tree
/// serial number.
pub fn hardware_id(interface: Option<&str>) -> Option<String> {
    let net = Path::new("/sys/class/net");
    let mac = |name: &str| -> Option<String> {
        let device = std::fs::canonicalize(net.join(name)).ok()?;
        if device.components().any(|c| c.as_os_str() == "virtual") {
            return None;
        }
        let address = std::fs::read_to_string(net.join(name).join("address")).ok()?;
        let hex: String = address.trim().split(':').collect::<String>().to_ascii_lowercase();
        let valid = hex.len() == 12 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        (valid && hex.bytes().any(|b| b != b'0')).then_some(hex)
    };
    let mut names: Vec<String> = std::fs::read_dir(net)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    let serial = || {
        [
            "/proc/device-tree/serial-number",
            "/sys/firmware/devicetree/base/serial-number",
        ]
        .iter()
        .find_map(|file| {
            let serial = sanitized(&std::fs::read_to_string(file).ok()?, MAX_HARDWARE_ID_LEN);
            (!serial.is_empty()).then_some(serial)
        })
    };
    interface
        .and_then(mac)
        .or_else(|| names.iter().find_map(|name| mac(name)))
        .or_else(serial)
}

/// `text`'s ASCII letters, digits and `-`, at most `max_len` of them: what
/// an MQTT client id and a hostname both take everywhere.
fn sanitized(text: &str, max_len: usize) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(max_len)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitized_keeps_letters_digits_and_dashes() {
        assert_eq!(sanitized("RK3328:c3d9 b8\0\n", 32), "RK3328c3d9b8");
        assert_eq!(sanitized("tap-1", 3), "tap");
    }
}
