//! What the broker said that minimq keeps to itself.
//!
//! minimq 0.13 reads the Maximum Packet Size and Receive Maximum of the
//! CONNACK but does not expose them, drops the reason code of a broker's DISCONNECT, and takes an
//! MQTT 3.1.1 CONNACK for a malformed packet. The publisher's transport
//! hands every byte it receives to a [`Listener`] as well, which follows
//! the packet framing (MQTT 5 §2.1: a fixed header byte, the Remaining
//! Length as a Variable Byte Integer, the rest) and keeps those few facts
//! in [`Heard`].
//!
//! What it does not do: validate packets (minimq does), or look into any
//! packet but CONNACK and DISCONNECT. It keeps a fixed number of bytes.

/// Bytes of a CONNACK or DISCONNECT kept for reading; a property beyond
/// them is not seen (mosquitto's CONNACK is under 30 bytes).
const BODY_BYTES: usize = 256;

const CONNACK: u8 = 2;
const DISCONNECT: u8 = 14;
/// MQTT 5 §3.2.2.3.6, Maximum Packet Size (Four Byte Integer).
const MAXIMUM_PACKET_SIZE: u8 = 0x27;
/// MQTT 5 §3.2.2.3.3, Receive Maximum (Two Byte Integer).
const RECEIVE_MAXIMUM: u8 = 0x21;

/// What the broker said on one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Heard {
    /// Packets received, complete.
    pub packets: u32,
    pub connack: Option<Connack>,
    /// The reason code of the broker's DISCONNECT (MQTT 5 §3.14.2.1;
    /// 0x8E Session taken over).
    pub disconnect: Option<u8>,
}

/// The broker's answer to CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connack {
    /// MQTT 5 (§3.2): its reason code, and its Maximum Packet Size and
    /// Receive Maximum if given.
    V5 {
        reason: u8,
        max_packet_size: Option<u32>,
        receive_maximum: Option<u16>,
    },
    /// An MQTT 3.1.1 CONNACK (§3.2 of that standard: always two bytes),
    /// with its return code; 1 is "unacceptable protocol version".
    V3 { return_code: u8 },
}

/// Follows the packets of one connection; see the module doc.
pub struct Listener {
    state: State,
    kind: u8,
    remaining: usize,
    shift: u32,
    body: [u8; BODY_BYTES],
    kept: usize,
    pub heard: Heard,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Length,
    Body,
}

impl Default for Listener {
    fn default() -> Self {
        Listener {
            state: State::Header,
            kind: 0,
            remaining: 0,
            shift: 0,
            body: [0; BODY_BYTES],
            kept: 0,
            heard: Heard::default(),
        }
    }
}

impl Listener {
    /// Take the next bytes received, in order.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while let Some((&byte, rest)) = bytes.split_first() {
            match self.state {
                State::Header => {
                    self.kind = byte >> 4;
                    (self.remaining, self.shift, self.kept) = (0, 0, 0);
                    self.state = State::Length;
                    bytes = rest;
                }
                State::Length => {
                    // At most four bytes (§1.5.5); a longer one is not MQTT
                    // and minimq will say so.
                    self.remaining |= usize::from(byte & 0x7f) << self.shift;
                    self.shift += 7;
                    bytes = rest;
                    if byte & 0x80 == 0 || self.shift >= 28 {
                        self.state = State::Body;
                        if self.remaining == 0 {
                            self.finish();
                        }
                    }
                }
                State::Body => {
                    let n = self.remaining.min(bytes.len());
                    let keep = n.min(BODY_BYTES - self.kept);
                    if matches!(self.kind, CONNACK | DISCONNECT) {
                        self.body[self.kept..self.kept + keep].copy_from_slice(&bytes[..keep]);
                        self.kept += keep;
                    }
                    self.remaining -= n;
                    bytes = &bytes[n..];
                    if self.remaining == 0 {
                        self.finish();
                    }
                }
            }
        }
    }

    fn finish(&mut self) {
        self.state = State::Header;
        self.heard.packets = self.heard.packets.saturating_add(1);
        let body = &self.body[..self.kept];
        match self.kind {
            CONNACK if self.heard.connack.is_none() => {
                self.heard.connack = Some(match *body {
                    [_, return_code] => Connack::V3 { return_code },
                    [_, reason, ref properties @ ..] => Connack::V5 {
                        reason,
                        max_packet_size: property(properties, MAXIMUM_PACKET_SIZE),
                        receive_maximum: property(properties, RECEIVE_MAXIMUM)
                            .and_then(|v| u16::try_from(v).ok()),
                    },
                    _ => return,
                });
            }
            DISCONNECT => self.heard.disconnect = Some(body.first().copied().unwrap_or(0)),
            _ => {}
        }
    }
}

/// The value of integer property `wanted` among CONNACK properties (MQTT 5
/// §2.2.2: their length as a Variable Byte Integer, then identifier and
/// value each).
fn property(properties: &[u8], wanted: u8) -> Option<u32> {
    let (length, mut at) = variable_byte_integer(properties)?;
    let end = properties.len().min(at.checked_add(length)?);
    while at < end {
        let id = properties[at];
        at += 1;
        let size = match id {
            // Byte
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            // Two Byte Integer
            0x13 | 0x21 | 0x22 | 0x23 => 2,
            // Four Byte Integer
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            // UTF-8 string or binary data: a two-byte length first
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => {
                2 + usize::from(u16::from_be_bytes([
                    *properties.get(at)?,
                    *properties.get(at + 1)?,
                ]))
            }
            // String pair
            0x26 => {
                let first = 2 + usize::from(u16::from_be_bytes([
                    *properties.get(at)?,
                    *properties.get(at + 1)?,
                ]));
                let second = at + first;
                first
                    + 2
                    + usize::from(u16::from_be_bytes([
                        *properties.get(second)?,
                        *properties.get(second + 1)?,
                    ]))
            }
            // Variable Byte Integer
            0x0B => variable_byte_integer(properties.get(at..)?)?.1,
            _ => return None,
        };
        let value = properties.get(at..at + size)?;
        if id == wanted {
            return match *value {
                [a, b] => Some(u32::from(u16::from_be_bytes([a, b]))),
                [a, b, c, d] => Some(u32::from_be_bytes([a, b, c, d])),
                _ => None,
            };
        }
        at += size;
    }
    None
}

/// A Variable Byte Integer (MQTT 5 §1.5.5): its value and its length.
fn variable_byte_integer(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, &byte) in bytes.iter().take(4).enumerate() {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heard(bytes: &[u8], chunk: usize) -> Heard {
        let mut listener = Listener::default();
        for piece in bytes.chunks(chunk) {
            listener.feed(piece);
        }
        listener.heard
    }

    #[test]
    fn connack_v5_with_maximum_packet_size_in_any_chunking() {
        // mosquitto 2.0 with max_packet_size 2048: Receive Maximum,
        // Maximum Packet Size, Topic Alias Maximum; then two PUBACKs.
        let mut bytes = vec![
            0x20, 0x0e, 0x00, 0x00, 0x0b, 0x21, 0x00, 0x14, 0x27, 0x00, 0x00, 0x08, 0x00, 0x22, 0x00, 0x0a,
        ];
        bytes.extend([0x40, 0x02, 0x00, 0x01, 0x40, 0x02, 0x00, 0x02]);
        for chunk in 1..bytes.len() {
            let heard = heard(&bytes, chunk);
            assert_eq!(
                heard.connack,
                Some(Connack::V5 {
                    reason: 0,
                    max_packet_size: Some(2048),
                    receive_maximum: Some(20)
                })
            );
            assert_eq!(heard.packets, 3);
        }
    }

    #[test]
    fn connack_v3_and_disconnect() {
        assert_eq!(
            heard(&[0x20, 0x02, 0x00, 0x01], 4).connack,
            Some(Connack::V3 { return_code: 1 })
        );
        let taken_over = heard(&[0x20, 0x03, 0, 0, 0, 0xe0, 0x02, 0x8e, 0x00], 2);
        assert_eq!(taken_over.disconnect, Some(0x8e));
        assert_eq!(
            taken_over.connack,
            Some(Connack::V5 {
                reason: 0,
                max_packet_size: None,
                receive_maximum: None
            })
        );
        assert_eq!(heard(&[0xe0, 0x00], 1).disconnect, Some(0));
    }

    fn max_packet_size(properties: &[u8]) -> Option<u32> {
        property(properties, MAXIMUM_PACKET_SIZE)
    }

    #[test]
    fn truncated_or_strange_properties_give_none() {
        assert_eq!(max_packet_size(&[0x05, 0x27, 0x00]), None);
        assert_eq!(max_packet_size(&[0x03, 0x7f, 0x00, 0x00]), None);
        assert_eq!(max_packet_size(&[0x80, 0x80, 0x80, 0x80, 0x01]), None);
        // A reason string before the size.
        assert_eq!(
            max_packet_size(&[0x0a, 0x1f, 0x00, 0x02, b'o', b'k', 0x27, 0, 0, 1, 0]),
            Some(256)
        );
    }
}
