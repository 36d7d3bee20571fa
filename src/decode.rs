//! Decode stage: one captured frame to the transport payload it carries,
//! and where it was observed.
//!
//! One loop (`peel`) peels layers, nested in any order, zero-copy over
//! the captured bytes: the link header (Ethernet, Linux cooked SLL and
//! SLL2, raw IP, BSD loopback), 802.1Q, 802.1ad and 0x9100 VLAN tags,
//! unencrypted MACsec, MPLS label stacks and Ethernet pseudowires
//! (`mpls`), PPPoE sessions (`ethernet`), IPv4 and IPv6 with their
//! extension headers (`ip`), IP in IP, GRE with ERSPAN (`gre`), and the
//! UDP tunnels VXLAN, Geneve, TZSP and GTP-U on the ports of
//! [`UdpTunnels`] (`udp_tunnel`), down to UDP, TCP or SCTP (`sctp`: the
//! common header and chunks). Each result carries its [`Context`]: the
//! capture interface and the encapsulations peeled
//! (VLAN ids, MPLS labels, VNIs, GRE keys, ERSPAN sessions, TEIDs), which
//! the reassembly keys include so that equal addresses seen in different
//! places are never joined, and which the envelope reports.
//!
//! Limits: at most [`MAX_ENCAPSULATIONS`] encapsulations (deeper is
//! `ChainTooLong`); every pass from an inner header back to an outer kind
//! of layer records one, so the loop runs a bounded number of times.
//!
//! What it does not do: reassemble. IP fragments, outer or inner, come out
//! as [`Decoded::Fragment`]; once reassembled, [`decode_transport`] goes
//! on peeling from the upper-layer header. TCP payloads come out as
//! segments for `tcp`, SCTP packets whole for `sctp`. It does not look at
//! the payload either: SIP is recognised by content in the SIP stage, on
//! any port.

mod ethernet;
mod gre;
mod ip;
mod mpls;
mod sctp;
mod udp_tunnel;

use core::fmt;
use core::net::{IpAddr, SocketAddr};
use ethernet::ether_type;
use etherparse::{MacsecSlice, TcpSlice, UdpSlice};
pub use ip::MAX_IPV6_EXTENSION_HEADERS;
use ip::{Chain, ChainStart, Ipv4Packet, Ipv6Packet};
pub use sctp::{Chunk, Chunks, DataChunk, MessageId, SctpPacket};
pub use udp_tunnel::{DEFAULT_UDP_TUNNEL_PORTS, MAX_UDP_TUNNEL_PORTS, UdpTunnel, UdpTunnels};

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

/// Encapsulations a [`Context`] records, outermost first, and so the depth
/// of nesting decode follows: each VLAN tag, MPLS label and tunnel header
/// is one. Eight hold the deepest stacks met in practice (QinQ, two MPLS
/// labels, a GRE tunnel with ERSPAN and the mirrored frame's own tag) with
/// room to spare; a frame nested deeper is not decoded
/// (`header_chain_too_long`), which bounds the work one frame can cause.
pub const MAX_ENCAPSULATIONS: usize = 8;

/// One encapsulation a packet was peeled from, by what identifies the
/// place it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encapsulation {
    /// An IEEE 802.1Q tag (TPID 0x8100, 0x88A8 or 0x9100): its VLAN
    /// identifier, 12 bits. The priority bits are left out: they may
    /// change within one flow.
    Vlan(u16),
    /// IEEE 802.1AE MACsec without encryption (integrity only).
    Macsec,
    /// An MPLS label stack entry (RFC 3032): its 20-bit label.
    Mpls(u32),
    /// A PPPoE session (RFC 2516): its session id.
    Pppoe(u16),
    /// GRE (RFC 2784): its key (RFC 2890) when present.
    Gre(Option<u32>),
    /// ERSPAN inside GRE: its 10-bit session id (type II and III; type I
    /// has none).
    Erspan(Option<u16>),
    /// IPv4 or IPv6 inside IPv4 or IPv6 (protocols 4 and 41).
    IpInIp,
    /// VXLAN (RFC 7348): its 24-bit VNI.
    Vxlan(u32),
    /// Geneve (RFC 8926): its 24-bit VNI.
    Geneve(u32),
    /// TZSP.
    Tzsp,
    /// GTP-U (3GPP TS 29.281): its tunnel endpoint identifier.
    GtpU(u32),
}

impl Encapsulation {
    /// Its kind, as the envelope's `encap` and the `peeled_` counters
    /// name it.
    pub fn kind(self) -> &'static str {
        match self {
            Encapsulation::Vlan(_) => "vlan",
            Encapsulation::Macsec => "macsec",
            Encapsulation::Mpls(_) => "mpls",
            Encapsulation::Pppoe(_) => "pppoe",
            Encapsulation::Gre(_) => "gre",
            Encapsulation::Erspan(_) => "erspan",
            Encapsulation::IpInIp => "ipip",
            Encapsulation::Vxlan(_) => UdpTunnel::Vxlan.name(),
            Encapsulation::Geneve(_) => UdpTunnel::Geneve.name(),
            Encapsulation::Tzsp => UdpTunnel::Tzsp.name(),
            Encapsulation::GtpU(_) => UdpTunnel::GtpU.name(),
        }
    }

    /// The identifier it carries, if any.
    pub fn id(self) -> Option<u32> {
        match self {
            Encapsulation::Vlan(id) | Encapsulation::Pppoe(id) => Some(u32::from(id)),
            Encapsulation::Erspan(id) => id.map(u32::from),
            Encapsulation::Gre(id) => id,
            Encapsulation::Mpls(id)
            | Encapsulation::Vxlan(id)
            | Encapsulation::Geneve(id)
            | Encapsulation::GtpU(id) => Some(id),
            Encapsulation::Macsec | Encapsulation::IpInIp | Encapsulation::Tzsp => None,
        }
    }

    /// A tunnel or label, not a tag on the frame itself.
    fn is_tunnel(self) -> bool {
        !matches!(self, Encapsulation::Vlan(_) | Encapsulation::Macsec)
    }
}

/// `kind` or `kind:id`, the id in decimal (`vlan:100`, `gre`,
/// `vxlan:5001`): docs/envelope.md, `encap`.
impl fmt::Display for Encapsulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id() {
            Some(id) => write!(f, "{}:{id}", self.kind()),
            None => f.write_str(self.kind()),
        }
    }
}

/// Where a packet was observed: the capture interface and the
/// encapsulations peeled to reach its innermost IP header, outermost
/// first.
///
/// Reassembly joins IP fragments and TCP segments only when their contexts
/// are equal: two tenants behind one mirror port may use the same
/// addresses on different VLANs or VNIs. Fixed size (no allocation),
/// `Copy` and hashable, so it goes into the reassembly keys as it is.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    interface: u32,
    /// The first `depth` are the stack; the rest are unused (equality and
    /// hashing look at the stack only).
    encapsulations: [Encapsulation; MAX_ENCAPSULATIONS],
    depth: u8,
}

impl Context {
    /// A packet captured on `interface` (the pcapng interface index; 0 for
    /// a classic pcap file or a live capture), before any decoding.
    pub const fn on_interface(interface: u32) -> Context {
        Context {
            interface,
            encapsulations: [Encapsulation::Macsec; MAX_ENCAPSULATIONS],
            depth: 0,
        }
    }

    pub fn interface(&self) -> u32 {
        self.interface
    }

    /// The encapsulations, outermost first.
    pub fn encapsulations(&self) -> &[Encapsulation] {
        &self.encapsulations[..usize::from(self.depth)]
    }

    /// Record one more encapsulation; `ChainTooLong` past
    /// [`MAX_ENCAPSULATIONS`].
    fn push(&mut self, encapsulation: Encapsulation) -> Result<(), DecodeError> {
        let free = self
            .encapsulations
            .get_mut(usize::from(self.depth))
            .ok_or(DecodeError::ChainTooLong)?;
        *free = encapsulation;
        self.depth += 1;
        Ok(())
    }

    /// Inside a tunnel or label stack (not only VLAN tags or MACsec).
    fn tunnelled(&self) -> bool {
        self.encapsulations().iter().any(|e| e.is_tunnel())
    }
}

impl PartialEq for Context {
    fn eq(&self, other: &Context) -> bool {
        self.interface == other.interface && self.encapsulations() == other.encapsulations()
    }
}

impl Eq for Context {}

impl core::hash::Hash for Context {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.interface.hash(state);
        self.encapsulations().hash(state);
    }
}

impl Default for Context {
    fn default() -> Context {
        Context::on_interface(0)
    }
}

/// Which transport a payload came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Sctp,
    /// WebSocket (RFC 7118) over a TCP stream.
    Ws,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Sctp => "sctp",
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

/// An SCTP packet (RFC 9260): where it was observed, its endpoints and
/// its chunks, for the SCTP reassembler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sctp<'a> {
    pub context: Context,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub packet: SctpPacket<'a>,
}

/// What a frame turned out to carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    Segment(Segment<'a>),
    Sctp(Sctp<'a>),
    Fragment(Fragment<'a>),
    /// Valid, but nothing sip-capture looks at (ARP, ICMP, ESP, ...).
    Other,
    /// A tunnel or label stack carrying neither IP nor Ethernet with IP
    /// (ARP inside VXLAN, 802.11 inside TZSP, PPP control traffic, a GTP
    /// echo).
    NotIp,
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Link, VLAN or IP headers are cut short or inconsistent (also a
    /// snaplen-truncated frame).
    Malformed,
    /// More encapsulations than [`MAX_ENCAPSULATIONS`] or more IPv6
    /// extension headers than [`MAX_IPV6_EXTENSION_HEADERS`].
    ChainTooLong,
    /// A tunnel, label or PPPoE header is cut short or inconsistent (a
    /// version or flag it must have is missing).
    Truncated,
}

const LINUX_SLL_HEADER_LEN: usize = 16;
const LINUX_SLL_TYPE_AT: usize = 14;
const LINUX_SLL2_HEADER_LEN: usize = 20;
const LINUX_SLL2_TYPE_AT: usize = 0;
const LOOPBACK_HEADER_LEN: usize = 4;

/// IANA protocol numbers the upper-layer dispatch knows.
mod protocol {
    pub const IPV4: u8 = 4;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const IPV6: u8 = 41;
    pub const GRE: u8 = 47;
    pub const SCTP: u8 = 132;
}

/// PPP protocol numbers (RFC 1332, RFC 5072).
mod ppp {
    pub const IPV4: u16 = 0x0021;
    pub const IPV6: u16 = 0x0057;
}

/// A layer still to peel.
#[derive(Debug, Clone, Copy)]
enum Layer<'a> {
    /// An Ethernet II frame, from its destination MAC address.
    Ethernet(&'a [u8]),
    /// What a header named by EtherType.
    EtherType(u16, &'a [u8]),
    /// An IP packet inside a tunnel, by its version nibble.
    Ip(&'a [u8]),
    /// A tunnel's payload that is neither IP nor Ethernet.
    NotIp,
    /// The headers after an IP header: extension headers, then the upper
    /// layer.
    Upper {
        src: IpAddr,
        dst: IpAddr,
        start: ChainStart,
        protocol: u8,
        data: &'a [u8],
    },
}

/// Decode one frame of link type `link`, captured on `interface` (see
/// [`Context::on_interface`]); UDP datagrams to a port of `tunnels` are
/// peeled as that tunnel.
pub fn decode<'a>(
    link: LinkType,
    interface: u32,
    frame: &'a [u8],
    tunnels: &UdpTunnels,
) -> Result<Decoded<'a>, DecodeError> {
    let first = match link {
        LinkType::Ethernet => Layer::Ethernet(frame),
        // Linux cooked captures carry the EtherType at a fixed offset.
        LinkType::LinuxSll => {
            let (ether_type, payload) =
                ethernet::link_header(frame, LINUX_SLL_HEADER_LEN, LINUX_SLL_TYPE_AT)?;
            Layer::EtherType(ether_type, payload)
        }
        LinkType::LinuxSll2 => {
            let (ether_type, payload) =
                ethernet::link_header(frame, LINUX_SLL2_HEADER_LEN, LINUX_SLL2_TYPE_AT)?;
            Layer::EtherType(ether_type, payload)
        }
        // The address family's byte order depends on the capturing host, so
        // trust the IP version nibble that follows instead.
        LinkType::Loopback => by_version(frame.get(LOOPBACK_HEADER_LEN..).ok_or(DecodeError::Malformed)?)?,
        LinkType::RawIp => by_version(frame)?,
    };
    peel(tunnels, Context::on_interface(interface), first)
}

/// An IP packet without link header, by its version nibble.
fn by_version(packet: &[u8]) -> Result<Layer<'_>, DecodeError> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => Ok(Layer::EtherType(ether_type::IPV4, packet)),
        Some(6) => Ok(Layer::EtherType(ether_type::IPV6, packet)),
        _ => Err(DecodeError::Malformed),
    }
}

/// Decode a datagram reassembled from fragments whose first header is
/// `protocol`: for IPv6, the headers of the fragmentable part
/// (Destination Options, Routing, AH), then the transport header, or the
/// tunnel it carries, peeled on.
pub fn decode_transport<'a>(
    context: Context,
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    datagram: &'a [u8],
    tunnels: &UdpTunnels,
) -> Result<Decoded<'a>, DecodeError> {
    let start = if src.is_ipv6() {
        ChainStart::Ipv6Reassembled
    } else {
        ChainStart::Ipv4
    };
    let upper = Layer::Upper {
        src,
        dst,
        start,
        protocol,
        data: datagram,
    };
    peel(tunnels, context, upper)
}

/// The peeling loop: one layer per pass, outermost first, recording each
/// encapsulation in `context`, until a transport segment, a fragment, or
/// something not looked at. Every way back from an IP payload to an outer
/// kind of layer (a tunnel, a label) pushes onto `context`, which holds
/// [`MAX_ENCAPSULATIONS`]: the loop is bounded.
fn peel<'a>(
    tunnels: &UdpTunnels,
    mut context: Context,
    mut layer: Layer<'a>,
) -> Result<Decoded<'a>, DecodeError> {
    loop {
        layer = match layer {
            Layer::Ethernet(frame) => {
                let (ether_type, payload) = ethernet::ethernet(frame)?;
                Layer::EtherType(ether_type, payload)
            }
            Layer::NotIp => return Ok(Decoded::NotIp),
            Layer::Ip(packet) => match packet.first().ok_or(DecodeError::Truncated)? >> 4 {
                4 => Layer::EtherType(ether_type::IPV4, packet),
                6 => Layer::EtherType(ether_type::IPV6, packet),
                _ => Layer::NotIp,
            },
            Layer::EtherType(ether_type, payload) => match ether_type {
                ether_type::IPV4 => {
                    let ip = Ipv4Packet::new_checked(payload)?;
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
                    Layer::Upper {
                        src,
                        dst,
                        start: ChainStart::Ipv4,
                        protocol: ip.protocol(),
                        data: ip.payload(),
                    }
                }
                ether_type::IPV6 => {
                    let ip = Ipv6Packet::new_checked(payload)?;
                    Layer::Upper {
                        src: IpAddr::V6(ip.source()),
                        dst: IpAddr::V6(ip.destination()),
                        start: ChainStart::Ipv6,
                        protocol: ip.next_header(),
                        data: ip.payload(),
                    }
                }
                ether_type::VLAN | ether_type::PROVIDER_BRIDGING | ether_type::VLAN_DOUBLE_TAGGED => {
                    let (vlan, ether_type, payload) = ethernet::vlan_tag(payload)?;
                    context.push(Encapsulation::Vlan(vlan))?;
                    Layer::EtherType(ether_type, payload)
                }
                ether_type::MACSEC => {
                    context.push(Encapsulation::Macsec)?;
                    let macsec = MacsecSlice::from_slice(payload).map_err(|_| DecodeError::Malformed)?;
                    // Encrypted: nothing to look into.
                    let Some(inner) = macsec.ether_payload() else {
                        return Ok(Decoded::Other);
                    };
                    Layer::EtherType(inner.ether_type.0, inner.payload)
                }
                ether_type::MPLS_UNICAST | ether_type::MPLS_MULTICAST => label_stack(&mut context, payload)?,
                ether_type::PPPOE_SESSION => {
                    let (session, protocol, payload) = ethernet::pppoe_session(payload)?;
                    context.push(Encapsulation::Pppoe(session))?;
                    match protocol {
                        ppp::IPV4 => Layer::EtherType(ether_type::IPV4, payload),
                        ppp::IPV6 => Layer::EtherType(ether_type::IPV6, payload),
                        _ => Layer::NotIp,
                    }
                }
                ether_type::TRANSPARENT_ETHERNET if context.tunnelled() => Layer::Ethernet(payload),
                _ if context.tunnelled() => Layer::NotIp,
                _ => return Ok(Decoded::Other),
            },
            Layer::Upper {
                src,
                dst,
                start,
                protocol,
                data,
            } => match ip::walk(start, protocol, data)? {
                Chain::Fragment {
                    protocol,
                    id,
                    offset,
                    more,
                    data,
                } => {
                    return Ok(Decoded::Fragment(Fragment {
                        context,
                        src,
                        dst,
                        id,
                        protocol,
                        offset,
                        more,
                        payload: data,
                    }));
                }
                Chain::Upper { protocol, data } => match tunnel(tunnels, &mut context, protocol, data)? {
                    Some(inner) => inner,
                    None => return transport(context, src, dst, protocol, data),
                },
            },
        }
    }
}

/// An MPLS label stack, each label recorded, and what its bottom carries.
fn label_stack<'a>(context: &mut Context, mut data: &'a [u8]) -> Result<Layer<'a>, DecodeError> {
    // Each entry is pushed: at most MAX_ENCAPSULATIONS passes.
    loop {
        let (label, bottom, rest) = mpls::entry(data)?;
        context.push(Encapsulation::Mpls(label))?;
        data = rest;
        if bottom {
            break;
        }
    }
    Ok(match mpls::payload(data)? {
        mpls::Payload::Ip(packet) => Layer::Ip(packet),
        mpls::Payload::Ethernet(frame) => Layer::Ethernet(frame),
    })
}

/// The tunnel an upper-layer `protocol` carries, recorded in `context`,
/// and what is inside it: IP in IP, GRE, or UDP to a port of `tunnels`.
/// `None` for anything else, which is a transport header.
fn tunnel<'a>(
    tunnels: &UdpTunnels,
    context: &mut Context,
    protocol: u8,
    data: &'a [u8],
) -> Result<Option<Layer<'a>>, DecodeError> {
    const UDP_DESTINATION_PORT: core::ops::Range<usize> = 2..4;
    Ok(Some(match protocol {
        protocol::IPV4 => {
            context.push(Encapsulation::IpInIp)?;
            Layer::EtherType(ether_type::IPV4, data)
        }
        protocol::IPV6 => {
            context.push(Encapsulation::IpInIp)?;
            Layer::EtherType(ether_type::IPV6, data)
        }
        protocol::GRE => {
            let gre = gre::gre(data)?;
            context.push(Encapsulation::Gre(gre.key))?;
            match gre.protocol {
                ether_type::ERSPAN_II | ether_type::ERSPAN_III => {
                    let (session, frame) = gre::erspan(&gre)?;
                    context.push(Encapsulation::Erspan(session))?;
                    Layer::Ethernet(frame)
                }
                protocol => Layer::EtherType(protocol, gre.payload),
            }
        }
        protocol::UDP => {
            let Some(kind) = data
                .get(UDP_DESTINATION_PORT)
                .and_then(|port| tunnels.lookup(ip::be16(port)))
            else {
                return Ok(None);
            };
            let payload = UdpSlice::from_slice(data)
                .map_err(|_| DecodeError::Malformed)?
                .payload();
            let (encapsulation, inner) = match kind {
                UdpTunnel::Vxlan => {
                    let (vni, inner) = udp_tunnel::vxlan(payload)?;
                    (Encapsulation::Vxlan(vni), inner)
                }
                UdpTunnel::Geneve => {
                    let (vni, inner) = udp_tunnel::geneve(payload)?;
                    (Encapsulation::Geneve(vni), inner)
                }
                UdpTunnel::Tzsp => (Encapsulation::Tzsp, udp_tunnel::tzsp(payload)?),
                UdpTunnel::GtpU => {
                    let (teid, inner) = udp_tunnel::gtp_u(payload)?;
                    (Encapsulation::GtpU(teid), inner)
                }
            };
            context.push(encapsulation)?;
            match inner {
                udp_tunnel::Inner::EtherType(ether_type, payload) => Layer::EtherType(ether_type, payload),
                udp_tunnel::Inner::Ip(packet) => Layer::Ip(packet),
                udp_tunnel::Inner::NotIp => Layer::NotIp,
            }
        }
        _ => return Ok(None),
    }))
}

/// The UDP, TCP or SCTP header (IANA protocol numbers 17, 6 and 132) at
/// the start of `data`.
fn transport(
    context: Context,
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    data: &[u8],
) -> Result<Decoded<'_>, DecodeError> {
    Ok(match protocol {
        protocol::UDP => {
            let udp = UdpSlice::from_slice(data).map_err(|_| DecodeError::Malformed)?;
            Decoded::Segment(Segment {
                context,
                src: SocketAddr::new(src, udp.source_port()),
                dst: SocketAddr::new(dst, udp.destination_port()),
                payload: udp.payload(),
                tcp: None,
            })
        }
        protocol::TCP => {
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
        protocol::SCTP => {
            let packet = SctpPacket::new_checked(data)?;
            Decoded::Sctp(Sctp {
                context,
                src: SocketAddr::new(src, packet.source_port()),
                dst: SocketAddr::new(dst, packet.destination_port()),
                packet,
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
        let Decoded::Segment(seg) = decode(LinkType::Ethernet, 0, &frame, &UdpTunnels::default()).unwrap()
        else {
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
        let Decoded::Segment(seg) = decode(LinkType::RawIp, 0, &frame, &UdpTunnels::default()).unwrap()
        else {
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
            let _ = decode(LinkType::Ethernet, 0, &frame[..len], &UdpTunnels::default());
            let _ = decode(LinkType::LinuxSll2, 0, &frame[..len], &UdpTunnels::default());
            let _ = decode(LinkType::Loopback, 0, &frame[..len], &UdpTunnels::default());
        }
        assert_eq!(
            decode(LinkType::Ethernet, 0, &frame[..30], &UdpTunnels::default()),
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
        match decode(LinkType::Ethernet, 3, frame, &UdpTunnels::default())? {
            Decoded::Segment(s) => Ok(s.context),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_vlan_stack_and_interface_are_the_context() {
        let frame = udp_ipv4_ethernet(b"hello");
        let plain = context_of(&frame).unwrap();
        assert_eq!(plain.interface(), 3);
        assert_eq!(plain.encapsulations().len(), 0);
        let qinq = context_of(&tagged(&frame, &[(0x88a8, 100), (0x8100, 10)])).unwrap();
        assert_eq!(
            qinq.encapsulations(),
            [Encapsulation::Vlan(100), Encapsulation::Vlan(10)]
        );
        let other = context_of(&tagged(&frame, &[(0x9100, 100), (0x8100, 20)])).unwrap();
        assert_ne!(qinq, other);
        assert_eq!(
            other,
            context_of(&tagged(&frame, &[(0x88a8, 100), (0x8100, 20)])).unwrap()
        );
        assert_ne!(plain, Context::on_interface(0));
        let stack = |n: u16| {
            let tags: Vec<(u16, u16)> = (1..=n).map(|vid| (0x8100, vid)).collect();
            tagged(&frame, &tags)
        };
        let deepest = stack(MAX_ENCAPSULATIONS as u16);
        assert_eq!(
            context_of(&deepest).unwrap().encapsulations().len(),
            MAX_ENCAPSULATIONS
        );
        let too_deep = stack(MAX_ENCAPSULATIONS as u16 + 1);
        assert_eq!(
            decode(LinkType::Ethernet, 0, &too_deep, &UdpTunnels::default()),
            Err(DecodeError::ChainTooLong)
        );
    }

    #[test]
    fn ipv4_total_length_zero_is_the_captured_length() {
        let mut frame = udp_ipv4_ethernet(b"hello");
        frame[16..18].copy_from_slice(&[0, 0]);
        let Decoded::Segment(seg) = decode(LinkType::Ethernet, 0, &frame, &UdpTunnels::default()).unwrap()
        else {
            panic!("not a segment");
        };
        assert_eq!(seg.payload, b"hello");
    }

    #[test]
    fn unknown_link_types_are_not_mapped() {
        assert_eq!(LinkType::from_pcap(1), Some(LinkType::Ethernet));
        assert_eq!(LinkType::from_pcap(127), None);
    }

    /// The frames of a classic little-endian pcap file.
    fn pcap_frames(file: &[u8]) -> Vec<&[u8]> {
        let (mut at, mut frames) = (24, Vec::new());
        while at + 16 <= file.len() {
            let caplen = u32::from_le_bytes(file[at + 8..at + 12].try_into().unwrap()) as usize;
            frames.push(&file[at + 16..at + 16 + caplen]);
            at += 16 + caplen;
        }
        frames
    }

    const TUNNEL_CAPTURES: [&[u8]; 6] = [
        include_bytes!("../tests/data/pcaps/generated/tunnel-erspan.pcap"),
        include_bytes!("../tests/data/pcaps/generated/tunnel-gtpu-ipv6-tcp.pcap"),
        include_bytes!("../tests/data/pcaps/generated/tunnel-mpls-pseudowire.pcap"),
        include_bytes!("../tests/data/pcaps/generated/tunnel-pppoe.pcap"),
        include_bytes!("../tests/data/pcaps/generated/tunnel-tzsp.pcap"),
        include_bytes!("../tests/data/pcaps/generated/tunnel-geneve.pcap"),
    ];

    #[test]
    fn tunnel_frames_cut_anywhere_are_errors_not_panics() {
        let tunnels = UdpTunnels::default();
        for file in TUNNEL_CAPTURES {
            for frame in pcap_frames(file) {
                assert!(decode(LinkType::Ethernet, 0, frame, &tunnels).is_ok());
                for len in 0..frame.len() {
                    let _ = decode(LinkType::Ethernet, 0, &frame[..len], &tunnels);
                }
            }
        }
    }

    #[test]
    fn udp_tunnels_only_on_their_ports() {
        let frames = pcap_frames(include_bytes!("../tests/data/pcaps/generated/tunnel-geneve.pcap"));
        let Ok(Decoded::Segment(inner)) = decode(LinkType::Ethernet, 0, frames[0], &UdpTunnels::default())
        else {
            panic!("not peeled");
        };
        assert_eq!(
            inner.context.encapsulations(),
            [Encapsulation::Geneve(0xabcdef), Encapsulation::Vlan(12)]
        );
        assert_eq!(inner.dst.port(), 5060);
        let Ok(Decoded::Segment(outer)) = decode(LinkType::Ethernet, 0, frames[0], &UdpTunnels::none())
        else {
            panic!("not a segment");
        };
        assert_eq!(outer.dst.port(), 6081);
        assert!(outer.context.encapsulations().is_empty());
    }

    #[test]
    fn tunnel_ports_parse() {
        let tunnels = UdpTunnels::parse(" vxlan:4789 , gtpu:2152").unwrap();
        assert_eq!(tunnels.lookup(4789), Some(UdpTunnel::Vxlan));
        assert_eq!(tunnels.lookup(2152), Some(UdpTunnel::GtpU));
        assert_eq!(tunnels.lookup(6081), None);
        assert_eq!(UdpTunnels::parse(""), Ok(UdpTunnels::none()));
        for bad in ["vxlan", "l2tp:1701", "vxlan:0", "vxlan:65536", "vxlan:1,geneve:1"] {
            assert!(UdpTunnels::parse(bad).is_err(), "{bad}");
        }
        let many: Vec<String> = (1..=MAX_UDP_TUNNEL_PORTS + 1)
            .map(|p| format!("tzsp:{p}"))
            .collect();
        assert!(UdpTunnels::parse(&many.join(",")).is_err());
    }

    #[test]
    fn encapsulations_display_as_the_envelope_writes_them() {
        let shown: Vec<String> = [
            Encapsulation::Vlan(100),
            Encapsulation::Gre(None),
            Encapsulation::Gre(Some(7)),
            Encapsulation::Erspan(None),
            Encapsulation::GtpU(u32::MAX),
            Encapsulation::IpInIp,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            shown,
            ["vlan:100", "gre", "gre:7", "erspan", "gtpu:4294967295", "ipip"]
        );
    }
}
