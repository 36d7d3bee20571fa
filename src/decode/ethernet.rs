//! Ethernet-family headers: the Ethernet II header, IEEE 802.1Q tags
//! (also 802.1ad and 0x9100 stacks) and the PPPoE session header (RFC
//! 2516) with its PPP protocol field (RFC 1661).
//!
//! Zero-copy views over the captured bytes, smoltcp `wire` style: a
//! `new_checked` constructor validates the length once, every accessor
//! reads a named field range inside what was validated and cannot panic.
//! What it does not do: decide what comes next; the peeling loop in
//! `decode` does, by the EtherType or PPP protocol these return.

use super::DecodeError;
use super::ip::be16;

mod field {
    use core::ops::Range;
    pub const ETHER_TYPE: Range<usize> = 12..14;
    pub const ETHERNET_HEADER: usize = 14;

    pub const TAG_CONTROL: Range<usize> = 0..2;
    pub const TAG_ETHER_TYPE: Range<usize> = 2..4;
    pub const TAG: usize = 4;

    pub const PPPOE_VERSION_TYPE: usize = 0;
    pub const PPPOE_CODE: usize = 1;
    pub const PPPOE_SESSION: Range<usize> = 2..4;
    pub const PPPOE_LENGTH: Range<usize> = 4..6;
    pub const PPP_PROTOCOL: Range<usize> = 6..8;
    /// The PPPoE header and the PPP protocol field.
    pub const PPPOE_PPP_HEADER: usize = 8;
}

/// EtherType values (IEEE 802 numbers) the peeling loop dispatches on.
pub mod ether_type {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86dd;
    pub const VLAN: u16 = 0x8100;
    pub const PROVIDER_BRIDGING: u16 = 0x88a8;
    /// The pre-802.1ad QinQ TPID some switches still send.
    pub const VLAN_DOUBLE_TAGGED: u16 = 0x9100;
    pub const MACSEC: u16 = 0x88e5;
    /// MPLS unicast and multicast (RFC 5332).
    pub const MPLS_UNICAST: u16 = 0x8847;
    pub const MPLS_MULTICAST: u16 = 0x8848;
    /// PPPoE session stage (RFC 2516).
    pub const PPPOE_SESSION: u16 = 0x8864;
    /// Transparent Ethernet Bridging: an Ethernet frame inside GRE or
    /// Geneve.
    pub const TRANSPARENT_ETHERNET: u16 = 0x6558;
    /// ERSPAN type I and II inside GRE.
    pub const ERSPAN_II: u16 = 0x88be;
    /// ERSPAN type III inside GRE.
    pub const ERSPAN_III: u16 = 0x22eb;
}

/// An Ethernet II header: its EtherType and the bytes after it.
pub fn ethernet(frame: &[u8]) -> Result<(u16, &[u8]), DecodeError> {
    link_header(frame, field::ETHERNET_HEADER, field::ETHER_TYPE.start)
}

/// A link header of `header_len` bytes with a 16-bit EtherType at
/// `type_at` (Ethernet, Linux SLL and SLL2): the EtherType and the bytes
/// after the header. `Malformed` when the frame is shorter.
pub fn link_header(frame: &[u8], header_len: usize, type_at: usize) -> Result<(u16, &[u8]), DecodeError> {
    let header = frame.get(..header_len).ok_or(DecodeError::Malformed)?;
    let ether_type = header
        .get(type_at..type_at.wrapping_add(2))
        .ok_or(DecodeError::Malformed)?;
    Ok((be16(ether_type), &frame[header_len..]))
}

/// One IEEE 802.1Q tag (after a TPID of 0x8100, 0x88A8 or 0x9100): its
/// 12-bit VLAN identifier (the priority and DEI bits are left out: they
/// may change within one flow), the EtherType it tags and the bytes after
/// it. `Malformed` when cut short.
pub fn vlan_tag(data: &[u8]) -> Result<(u16, u16, &[u8]), DecodeError> {
    const VLAN_ID_MASK: u16 = 0x0fff;
    let tag = data.get(..field::TAG).ok_or(DecodeError::Malformed)?;
    Ok((
        be16(&tag[field::TAG_CONTROL]) & VLAN_ID_MASK,
        be16(&tag[field::TAG_ETHER_TYPE]),
        &data[field::TAG..],
    ))
}

/// A PPPoE session-stage packet (RFC 2516 §4: version 1, type 1, code 0)
/// carrying PPP: its session id, the PPP protocol (RFC 1661 §2: 0x0021
/// IPv4, 0x0057 IPv6) and the PPP payload, cut to the PPPoE length (which
/// counts the PPP protocol field). `Truncated` when cut short or not a
/// session packet of version 1.
pub fn pppoe_session(data: &[u8]) -> Result<(u16, u16, &[u8]), DecodeError> {
    let header = data
        .get(..field::PPPOE_PPP_HEADER)
        .ok_or(DecodeError::Truncated)?;
    if header[field::PPPOE_VERSION_TYPE] != 0x11 || header[field::PPPOE_CODE] != 0 {
        return Err(DecodeError::Truncated);
    }
    let length = usize::from(be16(&header[field::PPPOE_LENGTH]));
    let end = field::PPP_PROTOCOL
        .start
        .checked_add(length)
        .ok_or(DecodeError::Truncated)?;
    if length < 2 || end > data.len() {
        return Err(DecodeError::Truncated);
    }
    Ok((
        be16(&header[field::PPPOE_SESSION]),
        be16(&header[field::PPP_PROTOCOL]),
        &data[field::PPPOE_PPP_HEADER..end],
    ))
}
