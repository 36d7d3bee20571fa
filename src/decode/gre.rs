//! GRE (RFC 2784 with the key and sequence number fields of RFC 2890) and
//! the ERSPAN headers switches put inside it to mirror a port remotely
//! (draft-foschiano-erspan: type I and II under protocol 0x88BE, type III
//! under 0x22EB, with or without its platform-specific subheader).
//!
//! What it does not do: check the GRE checksum (a capture reports what
//! was sent), follow RFC 1701 source routes, or decode enhanced GRE
//! (version 1, PPTP): those are `Truncated`, counted.

use super::DecodeError;
use super::ethernet::ether_type;
use super::ip::be16;

mod field {
    use core::ops::Range;
    pub const FLAGS_VERSION: Range<usize> = 0..2;
    pub const PROTOCOL: Range<usize> = 2..4;
    pub const BASE: usize = 4;
    /// Each optional field (checksum and reserved1, key, sequence number).
    pub const OPTIONAL: usize = 4;

    pub const ERSPAN_II: usize = 8;
    pub const ERSPAN_III: usize = 12;
    pub const ERSPAN_PLATFORM: usize = 8;
    pub const ERSPAN_VERSION_SESSION: Range<usize> = 0..4;
    /// ERSPAN III: the byte holding the O bit (platform subheader follows).
    pub const ERSPAN_III_FLAGS: usize = 11;
}

const CHECKSUM_PRESENT: u16 = 0x8000;
/// RFC 1701's routing bit: a source route follows (not decoded).
const ROUTING_PRESENT: u16 = 0x4000;
const KEY_PRESENT: u16 = 0x2000;
const SEQUENCE_PRESENT: u16 = 0x1000;
const VERSION_MASK: u16 = 0x0007;

/// A GRE header at the start of `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gre<'a> {
    /// RFC 2890 key, when present: tells tunnels between the same
    /// endpoints apart.
    pub key: Option<u32>,
    /// The S bit: a sequence number is present (for ERSPAN, the S bit
    /// tells type II from type I).
    pub sequenced: bool,
    /// The EtherType of the payload.
    pub protocol: u16,
    pub payload: &'a [u8],
}

/// The GRE header at the start of `data`. `Truncated` when cut short, a
/// version other than 0, or a routing field.
pub fn gre(data: &[u8]) -> Result<Gre<'_>, DecodeError> {
    let base = data.get(..field::BASE).ok_or(DecodeError::Truncated)?;
    let flags = be16(&base[field::FLAGS_VERSION]);
    if flags & VERSION_MASK != 0 || flags & ROUTING_PRESENT != 0 {
        return Err(DecodeError::Truncated);
    }
    let mut at = field::BASE;
    let mut optional = |present: bool| -> Result<Option<u32>, DecodeError> {
        if !present {
            return Ok(None);
        }
        let value = data.get(at..at + field::OPTIONAL).ok_or(DecodeError::Truncated)?;
        at += field::OPTIONAL;
        Ok(Some(u32::from_be_bytes([value[0], value[1], value[2], value[3]])))
    };
    optional(flags & CHECKSUM_PRESENT != 0)?;
    let key = optional(flags & KEY_PRESENT != 0)?;
    let sequenced = optional(flags & SEQUENCE_PRESENT != 0)?.is_some();
    Ok(Gre {
        key,
        sequenced,
        protocol: be16(&base[field::PROTOCOL]),
        payload: &data[at..],
    })
}

/// The ERSPAN header (if any) of a GRE payload of `protocol` 0x88BE or
/// 0x22EB: the 10-bit session id (`None` for type I, which has no
/// header) and the mirrored Ethernet frame. `Truncated` when cut short or
/// the header's version does not match its protocol (type II: 1, type
/// III: 2).
pub fn erspan<'a>(gre: &Gre<'a>) -> Result<(Option<u16>, &'a [u8]), DecodeError> {
    const SESSION_MASK: u32 = 0x03ff;
    let (version, header) = match gre.protocol {
        // Type I: GRE without sequence number, no ERSPAN header.
        ether_type::ERSPAN_II if !gre.sequenced => return Ok((None, gre.payload)),
        ether_type::ERSPAN_II => (1, field::ERSPAN_II),
        _ => (2, field::ERSPAN_III),
    };
    let data = gre.payload;
    let fixed = data.get(..header).ok_or(DecodeError::Truncated)?;
    let word = &fixed[field::ERSPAN_VERSION_SESSION];
    let word = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
    if word >> 28 != version {
        return Err(DecodeError::Truncated);
    }
    let platform = version == 2 && fixed[field::ERSPAN_III_FLAGS] & 1 != 0;
    let len = header + if platform { field::ERSPAN_PLATFORM } else { 0 };
    let frame = data.get(len..).ok_or(DecodeError::Truncated)?;
    Ok((Some((word & SESSION_MASK) as u16), frame))
}
