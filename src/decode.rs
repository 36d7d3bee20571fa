//! Decode stage: one captured frame to the transport payload it carries.
//!
//! Peels the link layer (Ethernet with 802.1Q/QinQ tags, Linux cooked SLL
//! and SLL2, raw IP, BSD loopback), then IPv4 or IPv6 with its extension
//! headers, then UDP or TCP, with etherparse. The result borrows the frame:
//! nothing is copied.
//!
//! What it does not do: reassemble. IP fragments come out as
//! [`Decoded::Fragment`] and TCP payloads as segments; the pipeline decides
//! what to do with them. It does not look at the payload either: SIP is
//! recognised by content in the SIP stage, on any port.

use core::net::{IpAddr, SocketAddr};
use etherparse::{EtherType, NetSlice, SlicedPacket, TransportSlice};

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

/// A UDP datagram or TCP segment: its endpoints and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    pub transport: Transport,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: &'a [u8],
}

/// What a frame turned out to carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    Segment(Segment<'a>),
    /// One fragment of a fragmented IPv4 or IPv6 datagram.
    Fragment,
    /// Valid, but nothing sip-capture looks at (ARP, ICMP, SCTP, ...).
    Other,
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Headers are cut short or inconsistent (also a snaplen-truncated frame).
    Malformed,
}

const LINUX_SLL2_HEADER_LEN: usize = 20;
const LOOPBACK_HEADER_LEN: usize = 4;

/// Decode one frame of link type `link`.
pub fn decode(link: LinkType, frame: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let sliced = match link {
        LinkType::Ethernet => SlicedPacket::from_ethernet(frame),
        LinkType::LinuxSll => SlicedPacket::from_linux_sll(frame),
        LinkType::LinuxSll2 => {
            // etherparse does not parse SLL2; its protocol type is the
            // EtherType in the first two bytes.
            let header = frame.get(..LINUX_SLL2_HEADER_LEN).ok_or(DecodeError::Malformed)?;
            let ether_type = EtherType(u16::from_be_bytes([header[0], header[1]]));
            SlicedPacket::from_ether_type(ether_type, &frame[LINUX_SLL2_HEADER_LEN..])
        }
        // The address family's byte order depends on the capturing host, so
        // trust the IP version nibble that follows instead.
        LinkType::Loopback => {
            SlicedPacket::from_ip(frame.get(LOOPBACK_HEADER_LEN..).ok_or(DecodeError::Malformed)?)
        }
        LinkType::RawIp => SlicedPacket::from_ip(frame),
    }
    .map_err(|_| DecodeError::Malformed)?;

    let (src_ip, dst_ip): (IpAddr, IpAddr) = match &sliced.net {
        Some(NetSlice::Ipv4(ip)) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        Some(NetSlice::Ipv6(ip)) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        Some(NetSlice::Arp(_)) | None => return Ok(Decoded::Other),
    };
    if sliced.is_ip_payload_fragmented() {
        return Ok(Decoded::Fragment);
    }
    let (transport, src_port, dst_port, payload) = match &sliced.transport {
        Some(TransportSlice::Udp(udp)) => (
            Transport::Udp,
            udp.source_port(),
            udp.destination_port(),
            udp.payload(),
        ),
        Some(TransportSlice::Tcp(tcp)) => (
            Transport::Tcp,
            tcp.source_port(),
            tcp.destination_port(),
            tcp.payload(),
        ),
        _ => return Ok(Decoded::Other),
    };
    Ok(Decoded::Segment(Segment {
        transport,
        src: SocketAddr::new(src_ip, src_port),
        dst: SocketAddr::new(dst_ip, dst_port),
        payload,
    }))
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
        assert_eq!(seg.transport, Transport::Udp);
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
