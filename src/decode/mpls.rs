//! MPLS label stacks (RFC 3032) and what the bottom of the stack carries:
//! IPv4 or IPv6 (told apart by the version nibble, as label switching
//! routers do, RFC 4928), or an Ethernet pseudowire (RFC 4448) with or
//! without its control word (RFC 4385).
//!
//! What it does not do: interpret labels (no label table: which label
//! means what is the carrier's), or carry other pseudowire kinds (ATM,
//! Frame Relay, TDM), which come out as "not IP".

use super::DecodeError;

mod field {
    pub const ENTRY: usize = 4;
    /// Bottom of Stack, bit 8 of the entry.
    pub const BOTTOM: u32 = 0x100;
    pub const LABEL_SHIFT: u32 = 12;
    pub const CONTROL_WORD: usize = 4;
}

/// One label stack entry: its 20-bit label, whether it is the bottom of
/// the stack, and the bytes after it. `Truncated` when cut short.
pub fn entry(data: &[u8]) -> Result<(u32, bool, &[u8]), DecodeError> {
    let entry = data.get(..field::ENTRY).ok_or(DecodeError::Truncated)?;
    let entry = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
    Ok((
        entry >> field::LABEL_SHIFT,
        entry & field::BOTTOM != 0,
        &data[field::ENTRY..],
    ))
}

/// What the bottom of a label stack carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    /// IPv4 or IPv6, by the first nibble (4 or 6).
    Ip(&'a [u8]),
    /// An Ethernet frame (pseudowire), its control word removed.
    Ethernet(&'a [u8]),
}

/// The payload under the bottom label. First nibble 4 or 6: IP. First
/// nibble 0: the pseudowire control word (RFC 4385 §3), then Ethernet.
/// Anything else: an Ethernet pseudowire without control word (its first
/// byte is a MAC address's; a destination MAC starting with nibble 0, 4
/// or 6 is taken for the cases above, the ambiguity RFC 4928 describes
/// and the control word exists to remove). `Truncated` when empty.
pub fn payload(data: &[u8]) -> Result<Payload<'_>, DecodeError> {
    match data.first().ok_or(DecodeError::Truncated)? >> 4 {
        4 | 6 => Ok(Payload::Ip(data)),
        0 => Ok(Payload::Ethernet(
            data.get(field::CONTROL_WORD..).ok_or(DecodeError::Truncated)?,
        )),
        _ => Ok(Payload::Ethernet(data)),
    }
}
