//! Zero-copy views of the IP headers decode reads — the IPv4 header
//! (RFC 791), the IPv6 fixed header and extension headers (RFC 8200; the
//! Authentication Header of RFC 4302) — and the walk along a chain of
//! extension headers.
//!
//! Each view is made by `new_checked`, which validates every length once,
//! so no accessor can panic: every field lies inside the length checked.
//! Where a length field says "not known when the header was written", the
//! captured bytes are used: an IPv4 total length of 0 (a super-packet seen
//! on the sending host before segmentation offload split it, also Linux
//! BIG TCP) and an IPv6 payload length of 0 (jumbograms, BIG TCP).
//!
//! What it does not do: verify checksums, interpret options or follow
//! routing headers; decode needs addresses, lengths and protocols only.

use super::DecodeError;
use core::net::{Ipv4Addr, Ipv6Addr};

/// Extension headers walked in one chain at most. RFC 8200 §4.1's
/// recommended order has room for seven (Destination Options twice), so
/// eight admit every packet that follows it and one repetition more; a
/// longer chain is not decoded (`header_chain_too_long`), which bounds the
/// work one packet can cause. In a fragmented datagram the headers before
/// the Fragment header and those after it (walked once reassembled) are
/// bounded separately.
pub const MAX_IPV6_EXTENSION_HEADERS: usize = 8;

/// Protocol numbers of the extension headers (IANA "Assigned Internet
/// Protocol Numbers"), in RFC 8200's terms.
mod protocol {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const AUTHENTICATION: u8 = 51;
    pub const DESTINATION_OPTIONS: u8 = 60;
}

/// Byte ranges of the fields decode reads.
mod field {
    use core::ops::Range;

    pub const VERSION: usize = 0;
    pub const IPV4_IHL: usize = 0;
    pub const IPV4_TOTAL_LENGTH: Range<usize> = 2..4;
    pub const IPV4_IDENTIFICATION: Range<usize> = 4..6;
    pub const IPV4_FLAGS_FRAGMENT_OFFSET: Range<usize> = 6..8;
    pub const IPV4_PROTOCOL: usize = 9;
    pub const IPV4_SOURCE: Range<usize> = 12..16;
    pub const IPV4_DESTINATION: Range<usize> = 16..20;
    pub const IPV4_MIN_HEADER: usize = 20;

    pub const IPV6_PAYLOAD_LENGTH: Range<usize> = 4..6;
    pub const IPV6_NEXT_HEADER: usize = 6;
    pub const IPV6_SOURCE: Range<usize> = 8..24;
    pub const IPV6_DESTINATION: Range<usize> = 24..40;
    pub const IPV6_HEADER: usize = 40;

    pub const EXT_NEXT_HEADER: usize = 0;
    pub const EXT_LENGTH: usize = 1;
    pub const FRAGMENT_OFFSET_M: Range<usize> = 2..4;
    pub const FRAGMENT_IDENTIFICATION: Range<usize> = 4..8;
    /// The Fragment header's fixed length, and every extension header's
    /// minimum.
    pub const EXT_MIN: usize = 8;
}

/// A big-endian 16-bit field; `bytes` holds at least two bytes.
pub(super) fn be16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

/// An IPv4 header and the payload its total length covers.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<'a> {
    /// Header and payload, exactly: at least `IPV4_MIN_HEADER` bytes and at
    /// least the header length.
    buffer: &'a [u8],
}

impl<'a> Ipv4Packet<'a> {
    /// Validate version, header length and total length against `data`
    /// (bytes after the total length, such as Ethernet padding, are left
    /// out). A total length of 0 takes every captured byte. Malformed when
    /// a length is inconsistent or the packet is cut short (snaplen).
    pub fn new_checked(data: &'a [u8]) -> Result<Self, DecodeError> {
        if data.len() < field::IPV4_MIN_HEADER || data[field::VERSION] >> 4 != 4 {
            return Err(DecodeError::Malformed);
        }
        let header = usize::from(data[field::IPV4_IHL] & 0x0f) * 4;
        let total = match usize::from(be16(&data[field::IPV4_TOTAL_LENGTH])) {
            0 => data.len(),
            total => total,
        };
        if header < field::IPV4_MIN_HEADER || header > total || total > data.len() {
            return Err(DecodeError::Malformed);
        }
        Ok(Ipv4Packet {
            buffer: &data[..total],
        })
    }

    fn header_len(&self) -> usize {
        usize::from(self.buffer[field::IPV4_IHL] & 0x0f) * 4
    }

    pub fn source(&self) -> Ipv4Addr {
        let b = &self.buffer[field::IPV4_SOURCE];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    pub fn destination(&self) -> Ipv4Addr {
        let b = &self.buffer[field::IPV4_DESTINATION];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    pub fn protocol(&self) -> u8 {
        self.buffer[field::IPV4_PROTOCOL]
    }

    pub fn identification(&self) -> u16 {
        be16(&self.buffer[field::IPV4_IDENTIFICATION])
    }

    /// Where this payload goes in the datagram, in bytes.
    pub fn fragment_offset(&self) -> usize {
        usize::from(be16(&self.buffer[field::IPV4_FLAGS_FRAGMENT_OFFSET]) & 0x1fff) * 8
    }

    /// The MF flag: more fragments follow.
    pub fn more_fragments(&self) -> bool {
        be16(&self.buffer[field::IPV4_FLAGS_FRAGMENT_OFFSET]) & 0x2000 != 0
    }

    pub fn is_fragment(&self) -> bool {
        self.more_fragments() || self.fragment_offset() != 0
    }

    pub fn payload(&self) -> &'a [u8] {
        &self.buffer[self.header_len()..]
    }
}

/// An IPv6 fixed header and the payload its payload length covers.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<'a> {
    /// Header and payload, exactly: at least `IPV6_HEADER` bytes.
    buffer: &'a [u8],
}

impl<'a> Ipv6Packet<'a> {
    /// Validate version and payload length against `data`. A payload
    /// length of 0 takes every captured byte. Malformed when the packet is
    /// cut short.
    pub fn new_checked(data: &'a [u8]) -> Result<Self, DecodeError> {
        if data.len() < field::IPV6_HEADER || data[field::VERSION] >> 4 != 6 {
            return Err(DecodeError::Malformed);
        }
        let end = match usize::from(be16(&data[field::IPV6_PAYLOAD_LENGTH])) {
            0 => data.len(),
            payload => field::IPV6_HEADER + payload,
        };
        Ok(Ipv6Packet {
            buffer: data.get(..end).ok_or(DecodeError::Malformed)?,
        })
    }

    pub fn source(&self) -> Ipv6Addr {
        Ipv6Addr::from(octets16(&self.buffer[field::IPV6_SOURCE]))
    }

    pub fn destination(&self) -> Ipv6Addr {
        Ipv6Addr::from(octets16(&self.buffer[field::IPV6_DESTINATION]))
    }

    pub fn next_header(&self) -> u8 {
        self.buffer[field::IPV6_NEXT_HEADER]
    }

    pub fn payload(&self) -> &'a [u8] {
        &self.buffer[field::IPV6_HEADER..]
    }
}

fn octets16(bytes: &[u8]) -> [u8; 16] {
    let mut octets = [0; 16];
    octets.copy_from_slice(bytes);
    octets
}

/// One extension header (RFC 8200 §4.3-4.6; AH: RFC 4302 §2).
#[derive(Debug, Clone, Copy)]
struct ExtensionHeader<'a> {
    /// This header only: at least `EXT_MIN` bytes.
    buffer: &'a [u8],
}

impl<'a> ExtensionHeader<'a> {
    /// The header of type `protocol` at the start of `data`, and the bytes
    /// after it. Malformed when its length runs past `data`.
    fn new_checked(protocol: u8, data: &'a [u8]) -> Result<(Self, &'a [u8]), DecodeError> {
        let units = usize::from(*data.get(field::EXT_LENGTH).ok_or(DecodeError::Malformed)?);
        let len = match protocol {
            protocol::FRAGMENT => field::EXT_MIN,
            // Payload Len: in 4-octet units, minus 2.
            protocol::AUTHENTICATION => (units + 2) * 4,
            // Hdr Ext Len: in 8-octet units, not counting the first 8.
            _ => (units + 1) * 8,
        };
        if data.len() < len {
            return Err(DecodeError::Malformed);
        }
        let (header, rest) = data.split_at(len);
        Ok((ExtensionHeader { buffer: header }, rest))
    }

    fn next_header(&self) -> u8 {
        self.buffer[field::EXT_NEXT_HEADER]
    }

    /// For a Fragment header: offset in bytes, M flag, identification.
    fn fragment(&self) -> (usize, bool, u32) {
        let offset_m = be16(&self.buffer[field::FRAGMENT_OFFSET_M]);
        let id = &self.buffer[field::FRAGMENT_IDENTIFICATION];
        (
            usize::from(offset_m & 0xfff8),
            offset_m & 1 != 0,
            u32::from_be_bytes([id[0], id[1], id[2], id[3]]),
        )
    }
}

/// Where a chain of extension headers starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainStart {
    /// Right after an IPv4 header: only AH is an extension header.
    Ipv4,
    /// Right after the IPv6 fixed header: Hop-by-Hop Options may come first.
    Ipv6,
    /// At the start of a reassembled IPv6 datagram's fragmentable part
    /// (RFC 8200 §4.5): no Hop-by-Hop Options, no further fragmentation.
    Ipv6Reassembled,
}

/// What a chain of extension headers leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain<'a> {
    /// The upper-layer header (`protocol`: 17 UDP, 6 TCP, ...) and the
    /// bytes from it on.
    Upper { protocol: u8, data: &'a [u8] },
    /// A Fragment header that fragments: the fragmentable part it carries
    /// starts with `protocol` and goes at `offset` bytes in the datagram.
    Fragment {
        protocol: u8,
        id: u32,
        offset: usize,
        more: bool,
        data: &'a [u8],
    },
}

/// Walk the extension headers of `data`, whose first header is
/// `protocol`, in any order RFC 8200 §4.1 allows: Hop-by-Hop Options only
/// first after the IPv6 header, any other header in any order and number,
/// an atomic fragment (offset 0, M clear; RFC 6946) passed over. It stops
/// at the first header that is not an extension header (the upper layer,
/// ESP, No Next Header), or at a fragmenting Fragment header, whose
/// following headers belong to the fragmentable part and are walked after
/// reassembly. Errors: `ChainTooLong` past [`MAX_IPV6_EXTENSION_HEADERS`],
/// `Malformed` for a header cut short, Hop-by-Hop Options elsewhere, or a
/// fragmenting Fragment header in a reassembled datagram.
pub fn walk(start: ChainStart, protocol: u8, data: &[u8]) -> Result<Chain<'_>, DecodeError> {
    let (mut protocol, mut data) = (protocol, data);
    for walked in 0..=MAX_IPV6_EXTENSION_HEADERS {
        let extension = match (start, protocol) {
            (ChainStart::Ipv4, p) => p == protocol::AUTHENTICATION,
            (_, protocol::HOP_BY_HOP) if start == ChainStart::Ipv6 && walked == 0 => true,
            (_, protocol::HOP_BY_HOP) => return Err(DecodeError::Malformed),
            (_, p) => matches!(
                p,
                protocol::ROUTING
                    | protocol::FRAGMENT
                    | protocol::AUTHENTICATION
                    | protocol::DESTINATION_OPTIONS
            ),
        };
        if !extension {
            return Ok(Chain::Upper { protocol, data });
        }
        if walked == MAX_IPV6_EXTENSION_HEADERS {
            break;
        }
        let (header, rest) = ExtensionHeader::new_checked(protocol, data)?;
        if protocol == protocol::FRAGMENT {
            let (offset, more, id) = header.fragment();
            if offset != 0 || more {
                if start == ChainStart::Ipv6Reassembled {
                    return Err(DecodeError::Malformed);
                }
                return Ok(Chain::Fragment {
                    protocol: header.next_header(),
                    id,
                    offset,
                    more,
                    data: rest,
                });
            }
        }
        protocol = header.next_header();
        data = rest;
    }
    Err(DecodeError::ChainTooLong)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generic extension header of `len` bytes (a multiple of 8).
    fn ext(next: u8, len: usize) -> Vec<u8> {
        let mut h = vec![0; len];
        h[0] = next;
        h[1] = (len / 8 - 1) as u8;
        h
    }

    fn fragment(next: u8, offset: u16, more: bool, id: u32) -> Vec<u8> {
        let mut h = vec![next, 0];
        h.extend_from_slice(&(offset | u16::from(more)).to_be_bytes());
        h.extend_from_slice(&id.to_be_bytes());
        h
    }

    #[test]
    fn any_order_up_to_the_upper_layer() {
        // Hop-by-Hop, Routing, Destination Options, AH (16 bytes), UDP.
        let mut data = ext(43, 8);
        data.extend(ext(60, 8));
        data.extend(ext(51, 8));
        data.extend([17, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        data.extend(b"udp");
        assert_eq!(
            walk(ChainStart::Ipv6, 0, &data),
            Ok(Chain::Upper {
                protocol: 17,
                data: b"udp"
            })
        );
        // The same headers in another order; AH after IPv4.
        let mut data = ext(51, 16);
        data.extend(ext(43, 8));
        data.extend([60, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        data.extend(ext(17, 8));
        data.extend(b"udp");
        assert!(matches!(
            walk(ChainStart::Ipv6, 60, &data),
            Ok(Chain::Upper {
                protocol: 17,
                data: b"udp"
            })
        ));
        let ah = [[6, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0].as_slice(), b"tcp"].concat();
        assert_eq!(
            walk(ChainStart::Ipv4, 51, &ah),
            Ok(Chain::Upper {
                protocol: 6,
                data: b"tcp"
            })
        );
        assert_eq!(
            walk(ChainStart::Ipv4, 60, &ah),
            Ok(Chain::Upper {
                protocol: 60,
                data: &ah
            })
        );
    }

    #[test]
    fn stops_at_a_fragmenting_fragment_header_and_passes_atomic_ones() {
        let mut data = ext(44, 8);
        data.extend(fragment(60, 0, true, 7));
        data.extend(ext(17, 8));
        let Ok(Chain::Fragment {
            protocol: 60,
            id: 7,
            offset: 0,
            more: true,
            data: rest,
        }) = walk(ChainStart::Ipv6, 60, &data)
        else {
            panic!("{:?}", walk(ChainStart::Ipv6, 60, &data));
        };
        assert_eq!(rest, &ext(17, 8)[..]);
        assert_eq!(
            walk(ChainStart::Ipv6Reassembled, 60, rest),
            Ok(Chain::Upper {
                protocol: 17,
                data: &[]
            })
        );
        let atomic = [fragment(17, 0, false, 9), b"x".to_vec()].concat();
        assert_eq!(
            walk(ChainStart::Ipv6, 44, &atomic),
            Ok(Chain::Upper {
                protocol: 17,
                data: b"x"
            })
        );
        let nested = fragment(17, 8, false, 9);
        assert_eq!(
            walk(ChainStart::Ipv6Reassembled, 44, &nested),
            Err(DecodeError::Malformed)
        );
    }

    #[test]
    fn hop_by_hop_only_first_and_chain_bounded() {
        // Hop-by-Hop, Destination Options, UDP.
        let first = [ext(60, 8), ext(17, 8)].concat();
        assert!(walk(ChainStart::Ipv6, 0, &first).is_ok());
        assert_eq!(
            walk(ChainStart::Ipv6Reassembled, 0, &first),
            Err(DecodeError::Malformed)
        );
        // Destination Options, Hop-by-Hop, UDP.
        let second = [ext(0, 8), ext(17, 8)].concat();
        assert_eq!(walk(ChainStart::Ipv6, 60, &second), Err(DecodeError::Malformed));
        let chain = |n: usize| {
            let mut data: Vec<u8> = (0..n).flat_map(|_| ext(60, 8)).collect();
            data[(n - 1) * 8] = 17;
            data
        };
        let longest = chain(MAX_IPV6_EXTENSION_HEADERS);
        assert!(matches!(
            walk(ChainStart::Ipv6, 60, &longest),
            Ok(Chain::Upper { protocol: 17, .. })
        ));
        let too_long = chain(MAX_IPV6_EXTENSION_HEADERS + 1);
        assert_eq!(
            walk(ChainStart::Ipv6, 60, &too_long),
            Err(DecodeError::ChainTooLong)
        );
    }

    #[test]
    fn cut_headers_are_malformed_not_panics() {
        let data = [ext(0, 16), fragment(60, 8, true, 1), ext(51, 24)].concat();
        for len in 0..data.len() {
            for start in [ChainStart::Ipv4, ChainStart::Ipv6, ChainStart::Ipv6Reassembled] {
                for first in [0, 43, 44, 51, 60, 17] {
                    let _ = walk(start, first, &data[..len]);
                }
            }
            let _ = Ipv4Packet::new_checked(&data[..len]);
            let _ = Ipv6Packet::new_checked(&data[..len]);
        }
    }

    #[test]
    fn ipv4_total_length_zero_takes_the_captured_bytes() {
        let mut packet = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        packet.extend(b"payload");
        let ip = Ipv4Packet::new_checked(&packet).unwrap();
        assert_eq!(ip.payload(), b"payload");
        packet[3] = 24; // total length 24: 4 payload bytes, the rest padding
        assert_eq!(Ipv4Packet::new_checked(&packet).unwrap().payload(), b"payl");
        packet[3] = 19; // shorter than the header
        assert_eq!(
            Ipv4Packet::new_checked(&packet).err(),
            Some(DecodeError::Malformed)
        );
        packet[3] = 28; // longer than captured
        assert_eq!(
            Ipv4Packet::new_checked(&packet).err(),
            Some(DecodeError::Malformed)
        );
    }
}
