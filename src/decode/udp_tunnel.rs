//! Tunnels carried in UDP, recognised by destination port: VXLAN (RFC
//! 7348), Geneve (RFC 8926), TZSP (MikroTik's TaZmen Sniffer Protocol)
//! and GTP-U (3GPP TS 29.281, G-PDUs: how mobile operators mirror VoLTE).
//! Also the table of ports ([`UdpTunnels`], the TUNNEL_UDP_PORTS key).
//!
//! What it does not do: recognise a tunnel by content (a port not in the
//! table is plain UDP, so SIP on any other port is never mistaken for a
//! tunnel), VXLAN-GPE, Geneve options' meaning (they are skipped), or GTP
//! signalling (echo, error indication: "not IP").

use super::DecodeError;
use super::ethernet::ether_type;
use super::ip::be16;

mod field {
    use core::ops::Range;
    pub const VXLAN_FLAGS: usize = 0;
    pub const VXLAN_VNI: Range<usize> = 4..7;
    pub const VXLAN: usize = 8;

    pub const GENEVE_VERSION_OPTIONS: usize = 0;
    pub const GENEVE_PROTOCOL: Range<usize> = 2..4;
    pub const GENEVE_VNI: Range<usize> = 4..7;
    pub const GENEVE: usize = 8;

    pub const TZSP_VERSION: usize = 0;
    pub const TZSP_PROTOCOL: Range<usize> = 2..4;
    pub const TZSP: usize = 4;

    pub const GTP_FLAGS: usize = 0;
    pub const GTP_MESSAGE_TYPE: usize = 1;
    pub const GTP_LENGTH: Range<usize> = 2..4;
    pub const GTP_TEID: Range<usize> = 4..8;
    pub const GTP: usize = 8;
    /// Sequence number, N-PDU number and next extension header type,
    /// present when any of the E, S and PN flags is set.
    pub const GTP_OPTIONAL: usize = 4;
}

/// Kinds of UDP tunnel sip-capture peels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpTunnel {
    Vxlan,
    Geneve,
    Tzsp,
    GtpU,
}

impl UdpTunnel {
    const ALL: [UdpTunnel; 4] = [
        UdpTunnel::Vxlan,
        UdpTunnel::Geneve,
        UdpTunnel::Tzsp,
        UdpTunnel::GtpU,
    ];

    /// The kind's name in TUNNEL_UDP_PORTS and the envelope's `encap`.
    pub fn name(self) -> &'static str {
        match self {
            UdpTunnel::Vxlan => "vxlan",
            UdpTunnel::Geneve => "geneve",
            UdpTunnel::Tzsp => "tzsp",
            UdpTunnel::GtpU => "gtpu",
        }
    }
}

/// UDP destination ports that carry a tunnel, at most this many.
pub const MAX_UDP_TUNNEL_PORTS: usize = 16;

/// TUNNEL_UDP_PORTS' default: the IANA ports, and 8472, Linux's VXLAN
/// default before IANA assigned 4789.
pub const DEFAULT_UDP_TUNNEL_PORTS: &str = "vxlan:4789,vxlan:8472,geneve:6081,tzsp:37008,gtpu:2152";

/// Which UDP destination ports carry which tunnel; fixed size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpTunnels {
    ports: heapless::Vec<(u16, UdpTunnel), MAX_UDP_TUNNEL_PORTS>,
}

impl Default for UdpTunnels {
    /// [`DEFAULT_UDP_TUNNEL_PORTS`].
    fn default() -> UdpTunnels {
        UdpTunnels::parse(DEFAULT_UDP_TUNNEL_PORTS).unwrap_or_else(|e| panic!("default: {e}"))
    }
}

impl UdpTunnels {
    /// No UDP tunnels: every UDP datagram is plain.
    pub const fn none() -> UdpTunnels {
        UdpTunnels {
            ports: heapless::Vec::new(),
        }
    }

    /// `kind:port` pairs separated by commas (`vxlan:4789,gtpu:2152`),
    /// kinds `vxlan`, `geneve`, `tzsp`, `gtpu`; empty for none. Errors: an
    /// unknown kind, a port not in 1-65535, a port given twice, more than
    /// [`MAX_UDP_TUNNEL_PORTS`].
    pub fn parse(text: &str) -> Result<UdpTunnels, String> {
        let mut tunnels = UdpTunnels::none();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (kind, port) = item
                .split_once(':')
                .ok_or_else(|| format!("{item:?} is not kind:port"))?;
            let kind = UdpTunnel::ALL
                .into_iter()
                .find(|k| k.name() == kind.trim())
                .ok_or_else(|| {
                    format!("unknown tunnel kind {kind:?}; expected vxlan, geneve, tzsp or gtpu")
                })?;
            let port = port
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("{port:?} is not a UDP port (1-65535)"))?;
            if tunnels.lookup(port).is_some() {
                return Err(format!("port {port} is given twice"));
            }
            tunnels
                .ports
                .push((port, kind))
                .map_err(|_| format!("more than {MAX_UDP_TUNNEL_PORTS} ports"))?;
        }
        Ok(tunnels)
    }

    /// The tunnel a datagram to `port` carries, if any.
    pub fn lookup(&self, port: u16) -> Option<UdpTunnel> {
        self.ports.iter().find(|(p, _)| *p == port).map(|(_, kind)| *kind)
    }
}

/// What a UDP tunnel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inner<'a> {
    /// A frame or packet of this EtherType (0x6558: an Ethernet frame).
    EtherType(u16, &'a [u8]),
    /// IPv4 or IPv6, by the version nibble.
    Ip(&'a [u8]),
    /// Not IP and not Ethernet (TZSP's 802.11, a GTP echo).
    NotIp,
}

/// A VXLAN header (RFC 7348 §5; the I flag must be set): the 24-bit VNI
/// and the Ethernet frame. `Truncated` when cut short or without I flag.
pub fn vxlan(data: &[u8]) -> Result<(u32, Inner<'_>), DecodeError> {
    const I_FLAG: u8 = 0x08;
    let header = data.get(..field::VXLAN).ok_or(DecodeError::Truncated)?;
    if header[field::VXLAN_FLAGS] & I_FLAG == 0 {
        return Err(DecodeError::Truncated);
    }
    Ok((
        be24(&header[field::VXLAN_VNI]),
        Inner::EtherType(ether_type::TRANSPARENT_ETHERNET, &data[field::VXLAN..]),
    ))
}

/// A Geneve header (RFC 8926 §3.4, version 0) and its options: the VNI
/// and the payload by its protocol type (an EtherType). `Truncated` when
/// cut short or another version.
pub fn geneve(data: &[u8]) -> Result<(u32, Inner<'_>), DecodeError> {
    let header = data.get(..field::GENEVE).ok_or(DecodeError::Truncated)?;
    let first = header[field::GENEVE_VERSION_OPTIONS];
    if first >> 6 != 0 {
        return Err(DecodeError::Truncated);
    }
    // Opt Len: the options' length in 4-byte multiples.
    let len = field::GENEVE + usize::from(first & 0x3f) * 4;
    let payload = data.get(len..).ok_or(DecodeError::Truncated)?;
    Ok((
        be24(&header[field::GENEVE_VNI]),
        Inner::EtherType(be16(&header[field::GENEVE_PROTOCOL]), payload),
    ))
}

/// A TZSP header (version 1) and its tagged fields up to the END tag:
/// the encapsulated frame when its protocol is Ethernet (1), else
/// `NotIp`. `Truncated` when cut short, another version, or no END tag.
pub fn tzsp(data: &[u8]) -> Result<Inner<'_>, DecodeError> {
    const ETHERNET: u16 = 1;
    const TAG_PADDING: u8 = 0;
    const TAG_END: u8 = 1;
    let header = data.get(..field::TZSP).ok_or(DecodeError::Truncated)?;
    if header[field::TZSP_VERSION] != 1 {
        return Err(DecodeError::Truncated);
    }
    let protocol = be16(&header[field::TZSP_PROTOCOL]);
    let mut at = field::TZSP;
    // Every step moves `at` forward by at least one byte: bounded by the
    // datagram's length.
    loop {
        match *data.get(at).ok_or(DecodeError::Truncated)? {
            TAG_END => break,
            TAG_PADDING => at += 1,
            _ => {
                let len = *data.get(at + 1).ok_or(DecodeError::Truncated)?;
                at += 2 + usize::from(len);
            }
        }
    }
    let frame = &data[at + 1..];
    Ok(match protocol {
        ETHERNET => Inner::EtherType(ether_type::TRANSPARENT_ETHERNET, frame),
        _ => Inner::NotIp,
    })
}

/// A GTP-U header (TS 29.281 §5: version 1, protocol type GTP) with its
/// optional fields and extension headers: the TEID and, for a G-PDU
/// (message type 255), the user's IP packet; other messages are `NotIp`.
/// The packet is cut to the header's length. `Truncated` when cut short,
/// another version, or an extension header of length 0.
pub fn gtp_u(data: &[u8]) -> Result<(u32, Inner<'_>), DecodeError> {
    const VERSION_1_GTP: u8 = 0x30;
    const EXTENSION: u8 = 0x04;
    const ANY_OPTIONAL: u8 = 0x07;
    const G_PDU: u8 = 255;
    let header = data.get(..field::GTP).ok_or(DecodeError::Truncated)?;
    let flags = header[field::GTP_FLAGS];
    if flags & 0xf0 != VERSION_1_GTP {
        return Err(DecodeError::Truncated);
    }
    let teid = be32(&header[field::GTP_TEID]);
    // Length: the bytes after the mandatory 8.
    let end = field::GTP + usize::from(be16(&header[field::GTP_LENGTH]));
    let data = data.get(..end).ok_or(DecodeError::Truncated)?;
    let mut at = field::GTP;
    if flags & ANY_OPTIONAL != 0 {
        at += field::GTP_OPTIONAL;
        let mut next = *data.get(at - 1).ok_or(DecodeError::Truncated)?;
        if flags & EXTENSION == 0 {
            next = 0;
        }
        // Each extension header: length in 4-byte units (at least 1), its
        // content, and the next type in its last byte. Each step moves
        // `at` by at least 4: bounded by the length.
        while next != 0 {
            let units = usize::from(*data.get(at).ok_or(DecodeError::Truncated)?);
            if units == 0 {
                return Err(DecodeError::Truncated);
            }
            at += units * 4;
            next = *data.get(at - 1).ok_or(DecodeError::Truncated)?;
        }
    }
    let payload = data.get(at..).ok_or(DecodeError::Truncated)?;
    Ok((
        teid,
        match header[field::GTP_MESSAGE_TYPE] {
            G_PDU => Inner::Ip(payload),
            _ => Inner::NotIp,
        },
    ))
}

fn be24(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]])
}

fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}
