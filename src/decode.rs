//! Decode stage: one captured frame to the transport payload it carries.
//!
//! Peels the link layer (Ethernet with 802.1Q/QinQ tags, Linux cooked SLL
//! and SLL2, raw IP, BSD loopback), then IPv4 or IPv6 with its extension
//! headers, then UDP or TCP, with etherparse. The result borrows the frame:
//! nothing is copied.
//!
//! What it does not do: reassemble. IP fragments come out as
//! [`Decoded::Fragment`] and TCP payloads as segments, for `defrag` and
//! `tcp`. It does not look at the payload either: SIP is
//! recognised by content in the SIP stage, on any port.

use core::net::{IpAddr, SocketAddr};
use etherparse::{
    EtherType, IpNumber, Ipv6ExtensionSlice, NetSlice, SlicedPacket, TcpSlice, TransportSlice, UdpSlice,
};

/// The link-layer header types sip-capture understands, by their libpcap
/// LINKTYPE_ value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// BSD loopback: a 4-byte address family in the capturing host's byte
    /// order (DLT_NULL), or in network order (DLT_LOOP).
    Loopback,
    Ethernet,
    /// Raw IPv4 or IPv6, no link header (DLT_RAW, LINKTYPE_IPV4/IPV6).
    RawIp,
    LinuxSll,
    LinuxSll2,
}

impl LinkType {
    /// Map a libpcap link-layer type number; `None` for types not handled.
    pub fn from_pcap(linktype: i32) -> Option<LinkType> {
        match linktype {
            0 | 108 => Some(LinkType::Loopback),
            1 => Some(LinkType::Ethernet),
            // DLT_RAW is 12 or 14 on some BSDs, LINKTYPE_RAW 101 in files.
            12 | 14 | 101 | 228 | 229 => Some(LinkType::RawIp),
            113 => Some(LinkType::LinuxSll),
            276 => Some(LinkType::LinuxSll2),
            _ => None,
        }
    }
}

/// Which transport a payload came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// What the TCP reassembler needs from a TCP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpHeader {
    pub seq: u32,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
}

/// A UDP datagram or TCP segment: its endpoints and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: &'a [u8],
    /// `Some` for TCP, `None` for UDP.
    pub tcp: Option<TcpHeader>,
}

impl Segment<'_> {
    pub fn transport(&self) -> Transport {
        if self.tcp.is_some() {
            Transport::Tcp
        } else {
            Transport::Udp
        }
    }
}

/// One fragment of a fragmented IPv4 or IPv6 datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The IPv4 identification or IPv6 fragment header identification.
    pub id: u32,
    /// The protocol the reassembled datagram carries (17 UDP, 6 TCP, ...).
    pub protocol: u8,
    /// Where this fragment's payload goes in the datagram, in bytes.
    pub offset: usize,
    /// More fragments follow (false on the last one).
    pub more: bool,
    pub payload: &'a [u8],
}

/// What a frame turned out to carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    Segment(Segment<'a>),
    Fragment(Fragment<'a>),
    /// Valid, but nothing sip-capture looks at (ARP, ICMP, SCTP, ...).
    Other,
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Headers are cut short or inconsistent (also a snaplen-truncated frame).
    Malformed,
}

const LINUX_SLL_HEADER_LEN: usize = 16;
const LINUX_SLL2_HEADER_LEN: usize = 20;
const LOOPBACK_HEADER_LEN: usize = 4;

/// Decode one frame of link type `link`.
pub fn decode(link: LinkType, frame: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let malformed = |_| DecodeError::Malformed;
    let sliced = match link {
        LinkType::Ethernet => SlicedPacket::from_ethernet(frame).map_err(malformed)?,
        // Linux cooked captures carry the EtherType at a fixed offset.
        // etherparse parses SLL but refuses the loopback device's hardware
        // type, and does not parse SLL2, so both are peeled here.
        LinkType::LinuxSll => cooked(frame, LINUX_SLL_HEADER_LEN, 14)?,
        LinkType::LinuxSll2 => cooked(frame, LINUX_SLL2_HEADER_LEN, 0)?,
        // The address family's byte order depends on the capturing host, so
        // trust the IP version nibble that follows instead.
        LinkType::Loopback => {
            SlicedPacket::from_ip(frame.get(LOOPBACK_HEADER_LEN..).ok_or(DecodeError::Malformed)?)
                .map_err(malformed)?
        }
        LinkType::RawIp => SlicedPacket::from_ip(frame).map_err(malformed)?,
    };

    let (src, dst, fragment): (IpAddr, IpAddr, Option<(u32, usize, bool)>) = match &sliced.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            let fragment = ip.is_payload_fragmented().then(|| {
                (
                    u32::from(h.identification()),
                    usize::from(h.fragments_offset().byte_offset()),
                    h.more_fragments(),
                )
            });
            (h.source_addr().into(), h.destination_addr().into(), fragment)
        }
        Some(NetSlice::Ipv6(ip)) => {
            let fragment = ip.extensions().clone().into_iter().find_map(|ext| match ext {
                Ipv6ExtensionSlice::Fragment(f) if f.is_fragmenting_payload() => Some((
                    f.identification(),
                    usize::from(f.fragment_offset().byte_offset()),
                    f.more_fragments(),
                )),
                _ => None,
            });
            (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
                fragment,
            )
        }
        Some(NetSlice::Arp(_)) | None => return Ok(Decoded::Other),
    };
    if let Some((id, offset, more)) = fragment {
        let payload = sliced.ip_payload().ok_or(DecodeError::Malformed)?;
        return Ok(Decoded::Fragment(Fragment {
            src,
            dst,
            id,
            protocol: payload.ip_number.0,
            offset,
            more,
            payload: payload.payload,
        }));
    }
    Ok(match &sliced.transport {
        Some(TransportSlice::Udp(udp)) => udp_segment(src, dst, udp),
        Some(TransportSlice::Tcp(tcp)) => tcp_segment(src, dst, tcp),
        _ => Decoded::Other,
    })
}

/// Slice what follows a Linux cooked header of `header_len` bytes whose
/// protocol type (an EtherType) is at `type_at`.
fn cooked(frame: &[u8], header_len: usize, type_at: usize) -> Result<SlicedPacket<'_>, DecodeError> {
    let header = frame.get(..header_len).ok_or(DecodeError::Malformed)?;
    let ether_type = EtherType(u16::from_be_bytes([header[type_at], header[type_at + 1]]));
    SlicedPacket::from_ether_type(ether_type, &frame[header_len..]).map_err(|_| DecodeError::Malformed)
}

/// Decode the transport header of a reassembled IP datagram.
pub fn decode_transport(
    protocol: u8,
    src: IpAddr,
    dst: IpAddr,
    datagram: &[u8],
) -> Result<Decoded<'_>, DecodeError> {
    Ok(match IpNumber(protocol) {
        IpNumber::UDP => udp_segment(
            src,
            dst,
            &UdpSlice::from_slice(datagram).map_err(|_| DecodeError::Malformed)?,
        ),
        IpNumber::TCP => tcp_segment(
            src,
            dst,
            &TcpSlice::from_slice(datagram).map_err(|_| DecodeError::Malformed)?,
        ),
        _ => Decoded::Other,
    })
}

fn udp_segment<'a>(src: IpAddr, dst: IpAddr, udp: &UdpSlice<'a>) -> Decoded<'a> {
    Decoded::Segment(Segment {
        src: SocketAddr::new(src, udp.source_port()),
        dst: SocketAddr::new(dst, udp.destination_port()),
        payload: udp.payload(),
        tcp: None,
    })
}

fn tcp_segment<'a>(src: IpAddr, dst: IpAddr, tcp: &TcpSlice<'a>) -> Decoded<'a> {
    Decoded::Segment(Segment {
        src: SocketAddr::new(src, tcp.source_port()),
        dst: SocketAddr::new(dst, tcp.destination_port()),
        payload: tcp.payload(),
        tcp: Some(TcpHeader {
            seq: tcp.sequence_number(),
            syn: tcp.syn(),
            fin: tcp.fin(),
            rst: tcp.rst(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn udp_ipv4_ethernet(payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(5062, 5060);
        let mut frame = Vec::new();
        builder.write(&mut frame, payload).unwrap();
        frame
    }

    #[test]
    fn ethernet_ipv4_udp() {
        let frame = udp_ipv4_ethernet(b"hello");
        let Decoded::Segment(seg) = decode(LinkType::Ethernet, &frame).unwrap() else {
            panic!("not a segment");
        };
        assert_eq!(seg.transport(), Transport::Udp);
        assert_eq!(seg.src.to_string(), "10.0.0.1:5062");
        assert_eq!(seg.dst.to_string(), "10.0.0.2:5060");
        assert_eq!(seg.payload, b"hello");
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let builder = PacketBuilder::ipv6([0xfe; 16], [0x20; 16], 64).udp(5060, 5060);
        let mut frame = Vec::new();
        builder.write(&mut frame, b"x").unwrap();
        let Decoded::Segment(seg) = decode(LinkType::RawIp, &frame).unwrap() else {
            panic!("not a segment");
        };
        assert_eq!(
            seg.src.to_string(),
            "[fefe:fefe:fefe:fefe:fefe:fefe:fefe:fefe]:5060"
        );
    }

    #[test]
    fn truncated_frames_are_malformed_not_panics() {
        let frame = udp_ipv4_ethernet(b"hello world");
        for len in 0..frame.len() {
            let _ = decode(LinkType::Ethernet, &frame[..len]);
            let _ = decode(LinkType::LinuxSll2, &frame[..len]);
            let _ = decode(LinkType::Loopback, &frame[..len]);
        }
        assert_eq!(
            decode(LinkType::Ethernet, &frame[..30]),
            Err(DecodeError::Malformed)
        );
    }

    #[test]
    fn unknown_link_types_are_not_mapped() {
        assert_eq!(LinkType::from_pcap(1), Some(LinkType::Ethernet));
        assert_eq!(LinkType::from_pcap(127), None);
    }
}
