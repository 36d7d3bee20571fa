//! Envelope stage: wrap one raw SIP message in a JSON object.
//!
//! `{"id":…,"time":…,"agent":…,"transport":…,"src":…,"dst":…,"sip":…}`,
//! with `"encap":…` before `sip` for a message found inside VLAN tags or
//! tunnels — see docs/envelope.md. The buffer is allocated once, sized for the largest
//! message the configuration admits; writing an envelope allocates nothing.
//!
//! What it does not do: look inside the message. The `sip` field is the
//! standard base64 of the exact captured bytes and `id` is their SHA-256, so
//! identical messages (a retransmission seen twice, the same packet seen on
//! two taps) get identical ids and consumers can de-duplicate.

use crate::buffers::Region;
use crate::decode::{Context, Transport};
use core::fmt::Write as _;
use core::net::SocketAddr;
use sha2::{Digest, Sha256};

/// `sip-capture/<version>`, the `agent` field.
pub const AGENT: &str = concat!("sip-capture/", env!("CARGO_PKG_VERSION"));

/// Room for every field but `sip`: the longest id, time, agent, two IPv6
/// socket addresses and an `encap` of MAX_ENCAPSULATIONS ten-digit ids
/// with their keys and punctuation (about 430 bytes; a test writes it)
/// fit within it.
const FIELDS_CAPACITY: usize = 512;

/// When and where a message was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub time: Timestamp,
    /// The interface and the encapsulations (tags, tunnels) it was found
    /// in: the envelope's `encap`.
    pub context: Context,
    pub transport: Transport,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// A capture timestamp: seconds and microseconds since the Unix epoch, as
/// libpcap reports it in the packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    pub secs: i64,
    pub micros: u32,
}

/// The message does not fit the envelope buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversize;

/// Writes envelopes into one buffer sized at start-up.
///
/// The JSON is written directly, not through a serializer: every value is
/// escape-free by construction (hex digits, an RFC 3339 time, the agent
/// name, `udp`/`tcp`, socket addresses, `encap`'s kinds, digits, `:` and
/// `/`, base64), and a general serializer
/// escapes character by character, which measured a quarter of the whole
/// per-message cost (docs/performance.md).
pub struct EnvelopeWriter {
    /// Sized for the largest message (base64 of MAX_MESSAGE_BYTES, about
    /// 86 KiB by default); a [`Region`], so only the pages the envelopes
    /// written so far reached are resident, a few KiB for usual SIP
    /// messages.
    buf: Region,
    max_message: usize,
}

impl EnvelopeWriter {
    /// A writer for messages of up to `max_message` bytes.
    pub fn new(max_message: usize) -> EnvelopeWriter {
        EnvelopeWriter {
            buf: Region::new(envelope_capacity(max_message)),
            max_message,
        }
    }

    /// Write the envelope of `raw` and return it.
    pub fn write(&mut self, origin: &Origin, raw: &[u8]) -> Result<&[u8], Oversize> {
        if raw.len() > self.max_message {
            return Err(Oversize);
        }
        let mut out = Cursor {
            buf: &mut self.buf,
            len: 0,
        };
        out.push(b"{\"id\":\"")?;
        let mut id = [0u8; 64];
        out.push(base16ct::lower::encode(&Sha256::digest(raw), &mut id).map_err(|_| Oversize)?)?;
        out.push(b"\",\"time\":\"")?;
        out.push(&rfc3339(origin.time))?;
        out.push(b"\",\"agent\":\"")?;
        out.push(AGENT.as_bytes())?;
        out.push(b"\",\"transport\":\"")?;
        out.push(origin.transport.name().as_bytes())?;
        out.push(b"\",\"src\":\"")?;
        out.push_address(&origin.src)?;
        out.push(b"\",\"dst\":\"")?;
        out.push_address(&origin.dst)?;
        // Only for a message found inside tags or tunnels: a plain frame's
        // envelope is as it always was.
        if let Some((first, rest)) = origin.context.encapsulations().split_first() {
            write!(out, "\",\"encap\":\"{first}").map_err(|_| Oversize)?;
            for encapsulation in rest {
                write!(out, "/{encapsulation}").map_err(|_| Oversize)?;
            }
        }
        out.push(b"\",\"sip\":\"")?;
        // base64-simd panics on a short output, so the field is cut to
        // the exact length first.
        let b64 = base64_simd::STANDARD.encoded_length(raw.len());
        let field = out.buf.get_mut(out.len..out.len + b64).ok_or(Oversize)?;
        out.len += base64_simd::STANDARD
            .encode(raw, base64_simd::Out::from_slice(field))
            .len();
        out.push(b"\"}")?;
        let len = out.len;
        Ok(&self.buf[..len])
    }
}

/// Appends to a fixed buffer; running out of room is [`Oversize`].
struct Cursor<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl Cursor<'_> {
    fn push(&mut self, bytes: &[u8]) -> Result<(), Oversize> {
        let end = self.len + bytes.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(Oversize)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// A socket address as `Display` writes it. IPv4 (most traffic) is
    /// written by hand into one stack buffer, then copied once: through
    /// the formatter, the two addresses cost more instructions than SIP
    /// recognition and framing together (docs/performance.md). IPv6 keeps
    /// `Display`, for RFC 5952's form.
    fn push_address(&mut self, address: &SocketAddr) -> Result<(), Oversize> {
        match address {
            SocketAddr::V4(v4) => {
                // The longest is "255.255.255.255:65535".
                let mut text = [0u8; 21];
                let mut len = 0;
                for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        text[len] = b'.';
                        len += 1;
                    }
                    len += write_decimal(&mut text[len..], octet.into());
                }
                text[len] = b':';
                len += 1;
                len += write_decimal(&mut text[len..], v4.port());
                self.push(&text[..len])
            }
            SocketAddr::V6(_) => write!(self, "{address}").map_err(|_| Oversize),
        }
    }
}

/// `n` in decimal at the start of `out` (which holds at least 5 bytes);
/// returns the digits written.
fn write_decimal(out: &mut [u8], n: u16) -> usize {
    let digits = match n {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        _ => 5,
    };
    let mut rest = n;
    for digit in out[..digits].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    digits
}

impl core::fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.push(s.as_bytes()).map_err(|_| core::fmt::Error)
    }
}

/// Bytes needed for the envelope of a message of `max_message` bytes.
pub fn envelope_capacity(max_message: usize) -> usize {
    FIELDS_CAPACITY + max_message.div_ceil(3) * 4
}

/// RFC 3339 UTC with microseconds: `2024-05-01T12:34:56.789012Z`.
pub fn rfc3339(ts: Timestamp) -> [u8; 27] {
    // Clamp to years 1970..=9999 so the text always has the RFC's shape.
    const MAX_SECS: i64 = 253_402_300_799;
    let secs = ts.secs.clamp(0, MAX_SECS);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let mut digits = |at: usize, width: usize, mut value: u64| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    digits(0, 4, year as u64);
    digits(5, 2, u64::from(month));
    digits(8, 2, u64::from(day));
    digits(11, 2, (rem / 3600) as u64);
    digits(14, 2, (rem % 3600 / 60) as u64);
    digits(17, 2, (rem % 60) as u64);
    digits(20, 6, u64::from(ts.micros.min(999_999)));
    text
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`), for non-negative days.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_display_writes_them() {
        for text in [
            "0.0.0.0:0",
            "10.0.0.1:5060",
            "192.168.100.200:65535",
            "255.255.255.255:1",
            "[::1]:5060",
            "[2001:db8::5:6]:5061",
            "[fe80::1%3]:5060",
        ] {
            let address: SocketAddr = text.parse().unwrap();
            let mut buf = [0u8; 64];
            let mut out = Cursor {
                buf: &mut buf,
                len: 0,
            };
            out.push_address(&address).unwrap();
            let len = out.len;
            assert_eq!(&buf[..len], address.to_string().as_bytes());
        }
        let mut buf = [0u8; 20];
        let mut out = Cursor {
            buf: &mut buf,
            len: 0,
        };
        let widest: SocketAddr = "255.255.255.255:65535".parse().unwrap();
        assert_eq!(out.push_address(&widest), Err(Oversize), "21 bytes do not fit 20");
    }

    #[test]
    fn timestamps() {
        let ts = |secs, micros| String::from_utf8(rfc3339(Timestamp { secs, micros }).to_vec()).unwrap();
        assert_eq!(ts(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(ts(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(ts(1_709_210_096, 123_456), "2024-02-29T12:34:56.123456Z");
        // Past 2038 (a pcap seconds field above i32::MAX) and past 2106.
        assert_eq!(ts(3_215_500_952, 251_758), "2071-11-23T10:42:32.251758Z");
        assert_eq!(ts(4_294_967_296, 0), "2106-02-07T06:28:16.000000Z");
        assert_eq!(ts(-5, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(ts(i64::MAX, 7_000_000), "9999-12-31T23:59:59.999999Z");
    }

    #[test]
    fn envelope_fields() {
        let origin = Origin {
            time: Timestamp { secs: 0, micros: 1 },
            context: Context::default(),
            transport: Transport::Udp,
            src: "[::1]:5060".parse().unwrap(),
            dst: "127.0.0.1:5062".parse().unwrap(),
        };
        let mut writer = EnvelopeWriter::new(16);
        let json = core::str::from_utf8(writer.write(&origin, b"OPTIONS").unwrap()).unwrap();
        let id = base16ct::lower::encode_string(&Sha256::digest(b"OPTIONS"));
        let expected = format!(
            r#"{{"id":"{id}","time":"1970-01-01T00:00:00.000001Z","agent":"{AGENT}","transport":"udp","src":"[::1]:5060","dst":"127.0.0.1:5062","sip":"T1BUSU9OUw=="}}"#
        );
        assert_eq!(json, expected);
    }

    #[test]
    fn oversize_messages_are_refused() {
        let origin = Origin {
            time: Timestamp { secs: 0, micros: 0 },
            context: Context::default(),
            transport: Transport::Tcp,
            src: "[::1]:5060".parse().unwrap(),
            dst: "[::1]:5060".parse().unwrap(),
        };
        let mut writer = EnvelopeWriter::new(4);
        assert_eq!(writer.write(&origin, b"12345"), Err(Oversize));
        assert!(writer.write(&origin, b"1234").is_ok());
    }

    #[test]
    fn the_longest_fields_fit() {
        use crate::decode::{Encapsulation, MAX_ENCAPSULATIONS};
        // The widest encapsulation (a ten-digit id), MAX_ENCAPSULATIONS
        // times; the widest socket addresses.
        let widest = Encapsulation::GtpU(u32::MAX).to_string();
        let encap = [widest.as_str(); MAX_ENCAPSULATIONS].join("/");
        let v6 = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535";
        let fields = format!(
            r#"{{"id":"{}","time":"2024-02-29T12:34:56.123456Z","agent":"{AGENT}","transport":"tcp","src":"{v6}","dst":"{v6}","encap":"{encap}","sip":""}}"#,
            "0".repeat(64)
        );
        assert!(fields.len() <= FIELDS_CAPACITY, "{} bytes", fields.len());
    }
}
