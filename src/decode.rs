//! Decode stage: one captured frame to the transport payload it carries,
//! and where it was observed.
//!
//! Peels the link layer (Ethernet with 802.1Q, 802.1ad and 0x9100 VLAN
//! tags and unencrypted MACsec, Linux cooked SLL and SLL2, raw IP, BSD
//! loopback), then IPv4 or IPv6 with its extension headers in any order
//! RFC 8200 allows (`ip`, by hand: etherparse cannot stop at a Fragment
//! header or take the captured length for an IPv4 total length of 0), then
//! UDP or TCP with etherparse. The result borrows the frame: nothing is
//! copied. Each result carries its [`Context`]: the capture interface and
//! the encapsulations peeled (the VLAN tag stack), which the reassembly
//! keys include so that equal addresses seen in different places are
//! never joined.
//!
//! What it does not do: reassemble. IP fragments come out as
//! [`Decoded::Fragment`] and TCP payloads as segments, for `defrag` and
//! `tcp`. It does not look at the payload either: SIP is
//! recognised by content in the SIP stage, on any port.

mod ip;

use core::net::{IpAddr, SocketAddr};
use etherparse::{MacsecSlice, TcpSlice, UdpSlice};
pub use ip::MAX_IPV6_EXTENSION_HEADERS;
use ip::{Chain, ChainStart, Ipv4Packet, Ipv6Packet};

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

/// Encapsulations a [`Context`] records, outermost first. Three, as many
/// link extensions as etherparse followed before (two VLAN tags and
/// MACsec, or three tags); a frame with more is not decoded
/// (`header_chain_too_long`). Tunnels will need more.
pub const MAX_ENCAPSULATIONS: usize = 3;

/// One encapsulation a frame was peeled from, by what identifies the
/// place it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encapsulation {
    /// An IEEE 802.1Q tag (TPID 0x8100, 0x88A8 or 0x9100): its VLAN
    /// identifier, 12 bits. The priority bits are left out: they may
    /// change within one flow.
    Vlan(u16),
    /// IEEE 802.1AE MACsec without encryption (integrity only).
    Macsec,
}

/// Where a packet was observed: the capture interface and the
/// encapsulations peeled to reach its IP header, outermost first.
///
/// Reassembly joins IP fragments and TCP segments only when their contexts
/// are equal: two tenants behind one mirror port may use the same
/// addresses on different VLANs. Fixed size (no allocation), `Copy` and
/// hashable, so it goes into the reassembly keys as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Context {
    interface: u32,
    /// Filled from the front; `None` past the last. Equality and hashing
    /// rely on that: two equal stacks have equal arrays.
    encapsulations: [Option<Encapsulation>; MAX_ENCAPSULATIONS],
}

impl Context {
    /// A packet captured on `interface` (the pcapng interface index; 0 for
    /// a classic pcap file or a live capture), before any decoding.
    pub const fn on_interface(interface: u32) -> Context {
        Context {
            interface,
            encapsulations: [None; MAX_ENCAPSULATIONS],
        }
    }

    pub fn interface(&self) -> u32 {
        self.interface
    }

    /// The encapsulations, outermost first.
    pub fn encapsulations(&self) -> impl Iterator<Item = Encapsulation> + '_ {
        self.encapsulations.iter().map_while(|e| *e)
    }

    /// Record one more encapsulation; `ChainTooLong` past
    /// [`MAX_ENCAPSULATIONS`].
    fn push(&mut self, encapsulation: Encapsulation) -> Result<(), DecodeError> {
        let free = self
            .encapsulations
            .iter_mut()
            .find(|e| e.is_none())
            .ok_or(DecodeError::ChainTooLong)?;
        *free = Some(encapsulation);
        Ok(())
    }
}

/// Which transport a payload came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    /// WebSocket (RFC 7118) over a TCP stream.
    Ws,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Ws => "ws",
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

/// A UDP datagram or TCP segment: where it was observed, its endpoints and
/// payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    pub context: Context,
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
    pub context: Context,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The IPv4 identification or IPv6 fragment header identification.
    pub id: u32,
    /// The IPv4 protocol, or the IPv6 Fragment header's Next Header: the
    /// first header of the reassembled datagram (17 UDP, 6 TCP, 60
    /// Destination Options, ...).
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
    /// Valid, but nothing sip-capture looks at (ARP, ICMP, SCTP, ESP, ...).
    Other,
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Headers are cut short or inconsistent (also a snaplen-truncated frame).
    Malformed,
    /// More encapsulations than [`MAX_ENCAPSULATIONS`] or more IPv6
    /// extension headers than [`MAX_IPV6_EXTENSION_HEADERS`].
    ChainTooLong,
}

const ETHERNET_HEADER_LEN: usize = 14;
const ETHERNET_TYPE_AT: usize = 12;
const LINUX_SLL_HEADER_LEN: usize = 16;
const LINUX_SLL_TYPE_AT: usize = 14;
const LINUX_SLL2_HEADER_LEN: usize = 20;
const LINUX_SLL2_TYPE_AT: usize = 0;
const LOOPBACK_HEADER_LEN: usize = 4;
const VLAN_TAG_LEN: usize = 4;
const VLAN_ID_MASK: u16 = 0x0fff;

/// EtherType values (IEEE 802 numbers).
mod ether_type {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86dd;
    pub const VLAN: u16 = 0x8100;
    pub const PROVIDER_BRIDGING: u16 = 0x88a8;
    /// The pre-802.1ad QinQ TPID some switches still send.
    pub const VLAN_DOUBLE_TAGGED: u16 = 0x9100;
    pub const MACSEC: u16 = 0x88e5;
}

/// Decode one frame of link type `link`, captured on `interface` (see
/// [`Context::on_interface`]).
pub fn decode(link: LinkType, interface: u32, frame: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let mut context = Context::on_interface(interface);
    let (ether_type, packet) = match link {
        LinkType::Ethernet => ether_typed(frame, ETHERNET_HEADER_LEN, ETHERNET_TYPE_AT)?,
        // Linux cooked captures carry the EtherType at a fixed offset.
        LinkType::LinuxSll => ether_typed(frame, LINUX_SLL_HEADER_LEN, LINUX_SLL_TYPE_AT)?,
        LinkType::LinuxSll2 => ether_typed(frame, LINUX_SLL2_HEADER_LEN, LINUX_SLL2_TYPE_AT)?,
        // The address family's byte order depends on the capturing host, so
        // trust the IP version nibble that follows instead.
        LinkType::Loopback => by_version(frame.get(LOOPBACK_HEADER_LEN..).ok_or(DecodeError::Malformed)?)?,
        LinkType::RawIp => by_version(frame)?,
    };
    let (ether_type, packet) = link_extensions(ether_type, packet, &mut context)?;
    match ether_type {
        ether_type::IPV4 => ipv4(context, packet),
        ether_type::IPV6 => ipv6(context, packet),
        _ => Ok(Decoded::Other),
    }
}

/// The EtherType at `type_at` of a link header of `header_len` bytes, and
/// what follows the header.
fn ether_typed(frame: &[u8], header_len: usize, type_at: usize) -> Result<(u16, &[u8]), DecodeError> {
    let header = frame.get(..header_len).ok_or(DecodeError::Malformed)?;
    let ether_type = u16::from_be_bytes([header[type_at], header[type_at + 1]]);
    Ok((ether_type, &frame[header_len..]))
}

/// An IP packet without link header, as an EtherType by its version nibble.
fn by_version(packet: &[u8]) -> Result<(u16, &[u8]), DecodeError> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => Ok((ether_type::IPV4, packet)),
        Some(6) => Ok((ether_type::IPV6, packet)),
        _ => Err(DecodeError::Malformed),
    }
}

/// Peel VLAN tags and unencrypted MACsec, recording each in `context`;
/// returns the EtherType and payload under them.
fn link_extensions<'a>(
    mut ether_type: u16,
    mut payload: &'a [u8],
    context: &mut Context,
) -> Result<(u16, &'a [u8]), DecodeError> {
    loop {
        match ether_type {
            ether_type::VLAN | ether_type::PROVIDER_BRIDGING | ether_type::VLAN_DOUBLE_TAGGED => {
                let tag = payload.get(..VLAN_TAG_LEN).ok_or(DecodeError::Malformed)?;
                context.push(Encapsulation::Vlan(
                    u16::from_be_bytes([tag[0], tag[1]]) & VLAN_ID_MASK,
                ))?;
                ether_type = u16::from_be_bytes([tag[2], tag[3]]);
                payload = &payload[VLAN_TAG_LEN..];
            }
            ether_type::MACSEC => {
                context.push(Encapsulation::Macsec)?;
                let macsec = MacsecSlice::from_slice(payload).map_err(|_| DecodeError::Malformed)?;
                // Encrypted: the EtherType stays MACsec's, which decode
                // takes as a frame it does not look into.
                let Some(inner) = macsec.ether_payload() else {
                    return Ok((ether_type, &[]));
                };
                ether_type = inner.ether_type.0;
                payload = inner.payload;
            }
            _ => return Ok((ether_type, payload)),
        }
    }
}

fn ipv4(context: Context, packet: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let ip = Ipv4Packet::new_checked(packet)?;
    let (src, dst) = (IpAddr::V4(ip.source()), IpAddr::V4(ip.destination()));
    if ip.is_fragment() {
        return Ok(Decoded::Fragment(Fragment {
            context,
            src,
            dst,
            id: u32::from(ip.identification()),
            protocol: ip.protocol(),
            offset: ip.fragment_offset(),
            more: ip.more_fragments(),
            payload: ip.payload(),
        }));
    }
    upper_layer(context, src, dst, ChainStart::Ipv4, ip.protocol(), ip.payload())
}

fn ipv6(context: Context, packet: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let ip = Ipv6Packet::new_checked(packet)?;
    let (src, dst) = (IpAddr::V6(ip.source()), IpAddr::V6(ip.destination()));
    upper_layer(
        context,
        src,
        dst,
        ChainStart::Ipv6,
        ip.next_header(),
        ip.payload(),
    )
}

/// Walk the extension headers from `start` to the transport header, or to
/// the Fragment header that makes this packet a fragment.
fn upper_layer(
    context: Context,
    src: IpAddr,
    dst: IpAddr,
    start: ChainStart,
    protocol: u8,
    data: &[u8],
) -> Result<Decoded<'_>, DecodeError> {
    match ip::walk(start, protocol, data)? {
        Chain::Upper { protocol, data } => transport(context, src, dst, protocol, data),
        Chain::Fragment {
            protocol,
            id,
            offset,
            more,
            data,
        } => Ok(Decoded::Fragment(Fragment {
            context,
            src,
            dst,
            id,
            protocol,
            offset,
            more,
            payload: data,
        })),
    }
}

/// Decode a datagram reassembled from fragments whose first header is
/// `protocol`: for IPv6, the headers of the fragmentable part
/// (Destination Options, Routing, AH), then the transport header.
pub fn decode_transport(
    context: Context,
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    datagram: &[u8],
) -> Result<Decoded<'_>, DecodeError> {
    let start = if src.is_ipv6() {
        ChainStart::Ipv6Reassembled
    } else {
        ChainStart::Ipv4
    };
    upper_layer(context, src, dst, start, protocol, datagram)
}

/// The UDP or TCP header (IANA protocol numbers 17 and 6) at the start of
/// `data`.
fn transport(
    context: Context,
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    data: &[u8],
) -> Result<Decoded<'_>, DecodeError> {
    const TCP: u8 = 6;
    const UDP: u8 = 17;
    Ok(match protocol {
        UDP => {
            let udp = UdpSlice::from_slice(data).map_err(|_| DecodeError::Malformed)?;
            Decoded::Segment(Segment {
                context,
                src: SocketAddr::new(src, udp.source_port()),
                dst: SocketAddr::new(dst, udp.destination_port()),
                payload: udp.payload(),
                tcp: None,
            })
        }
        TCP => {
            let tcp = TcpSlice::from_slice(data).map_err(|_| DecodeError::Malformed)?;
            Decoded::Segment(Segment {
                context,
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
        _ => Decoded::Other,
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
        let Decoded::Segment(seg) = decode(LinkType::Ethernet, 0, &frame).unwrap() else {
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
        let Decoded::Segment(seg) = decode(LinkType::RawIp, 0, &frame).unwrap() else {
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
            let _ = decode(LinkType::Ethernet, 0, &frame[..len]);
            let _ = decode(LinkType::LinuxSll2, 0, &frame[..len]);
            let _ = decode(LinkType::Loopback, 0, &frame[..len]);
        }
        assert_eq!(
            decode(LinkType::Ethernet, 0, &frame[..30]),
            Err(DecodeError::Malformed)
        );
    }

    /// `frame` (an Ethernet frame) with VLAN tags inserted after the MAC
    /// addresses: (TPID, VLAN id), outermost first.
    fn tagged(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
        let mut out = frame[..12].to_vec();
        for (tpid, vid) in tags {
            out.extend(tpid.to_be_bytes());
            out.extend((0xe000 | vid).to_be_bytes()); // priority 7: not identity
        }
        out.extend(&frame[12..]);
        out
    }

    fn context_of(frame: &[u8]) -> Result<Context, DecodeError> {
        match decode(LinkType::Ethernet, 3, frame)? {
            Decoded::Segment(s) => Ok(s.context),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_vlan_stack_and_interface_are_the_context() {
        let frame = udp_ipv4_ethernet(b"hello");
        let plain = context_of(&frame).unwrap();
        assert_eq!(plain.interface(), 3);
        assert_eq!(plain.encapsulations().count(), 0);
        let qinq = context_of(&tagged(&frame, &[(0x88a8, 100), (0x8100, 10)])).unwrap();
        assert_eq!(
            qinq.encapsulations().collect::<Vec<_>>(),
            [Encapsulation::Vlan(100), Encapsulation::Vlan(10)]
        );
        let other = context_of(&tagged(&frame, &[(0x9100, 100), (0x8100, 20)])).unwrap();
        assert_ne!(qinq, other);
        assert_eq!(
            other,
            context_of(&tagged(&frame, &[(0x88a8, 100), (0x8100, 20)])).unwrap()
        );
        assert_ne!(plain, Context::on_interface(0));
        let three = tagged(&frame, &[(0x88a8, 1), (0x8100, 2), (0x8100, 3)]);
        assert_eq!(context_of(&three).unwrap().encapsulations().count(), 3);
        let four = tagged(&frame, &[(0x88a8, 1), (0x8100, 2), (0x8100, 3), (0x8100, 4)]);
        assert_eq!(
            decode(LinkType::Ethernet, 0, &four),
            Err(DecodeError::ChainTooLong)
        );
    }

    #[test]
    fn ipv4_total_length_zero_is_the_captured_length() {
        let mut frame = udp_ipv4_ethernet(b"hello");
        frame[16..18].copy_from_slice(&[0, 0]);
        let Decoded::Segment(seg) = decode(LinkType::Ethernet, 0, &frame).unwrap() else {
            panic!("not a segment");
        };
        assert_eq!(seg.payload, b"hello");
    }

    #[test]
    fn unknown_link_types_are_not_mapped() {
        assert_eq!(LinkType::from_pcap(1), Some(LinkType::Ethernet));
        assert_eq!(LinkType::from_pcap(127), None);
    }
}
