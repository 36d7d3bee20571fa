//! Envelope stage: wrap one raw SIP message in a JSON object.
//!
//! `{"id":…,"time":…,"agent":…,"transport":…,"src":…,"dst":…,"sip":…}` —
//! see docs/envelope.md. The buffer is allocated once, sized for the largest
//! message the configuration admits; writing an envelope allocates nothing.
//!
//! What it does not do: look inside the message. The `sip` field is the
//! standard base64 of the exact captured bytes and `id` is their SHA-256, so
//! identical messages (a retransmission seen twice, the same packet seen on
//! two taps) get identical ids and consumers can de-duplicate.

use crate::decode::Transport;
use base64::Engine;
use core::fmt::Write as _;
use core::net::SocketAddr;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// `sip-capture/<version>`, the `agent` field.
pub const AGENT: &str = concat!("sip-capture/", env!("CARGO_PKG_VERSION"));

/// Room for every field but `sip`: the longest id, time, agent and two
/// IPv6 socket addresses with their keys and punctuation fit well within it.
const FIELDS_CAPACITY: usize = 512;

/// When and where a message was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub time: Timestamp,
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

#[derive(Serialize)]
struct Fields<'a> {
    id: &'a str,
    time: &'a str,
    agent: &'a str,
    transport: &'a str,
    src: &'a str,
    dst: &'a str,
}

/// The message does not fit the envelope buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversize;

/// Writes envelopes into one buffer sized at start-up.
pub struct EnvelopeWriter {
    buf: Box<[u8]>,
    max_message: usize,
}

impl EnvelopeWriter {
    /// A writer for messages of up to `max_message` bytes.
    pub fn new(max_message: usize) -> EnvelopeWriter {
        EnvelopeWriter {
            buf: vec![0; envelope_capacity(max_message)].into_boxed_slice(),
            max_message,
        }
    }

    /// Write the envelope of `raw` and return it.
    pub fn write(&mut self, origin: &Origin, raw: &[u8]) -> Result<&[u8], Oversize> {
        if raw.len() > self.max_message {
            return Err(Oversize);
        }
        let mut id = [0u8; 64];
        let id = base16ct::lower::encode_str(&Sha256::digest(raw), &mut id).map_err(|_| Oversize)?;
        let time = rfc3339(origin.time);
        let src = socket_text(origin.src);
        let dst = socket_text(origin.dst);
        let fields = Fields {
            id,
            time: &time,
            agent: AGENT,
            transport: origin.transport.name(),
            src: &src,
            dst: &dst,
        };
        let fields_len = serde_json_core::to_slice(&fields, &mut self.buf).map_err(|_| Oversize)?;
        // serde-json-core escapes strings character by character; base64
        // text never needs escaping, so `sip` is appended directly in place
        // of the closing brace.
        let mut len = fields_len - 1;
        len = self.append(len, b",\"sip\":\"")?;
        let b64 = base64::engine::general_purpose::STANDARD
            .encode_slice(raw, &mut self.buf[len..])
            .map_err(|_| Oversize)?;
        len = self.append(len + b64, b"\"}")?;
        Ok(&self.buf[..len])
    }

    fn append(&mut self, at: usize, bytes: &[u8]) -> Result<usize, Oversize> {
        let end = at + bytes.len();
        self.buf.get_mut(at..end).ok_or(Oversize)?.copy_from_slice(bytes);
        Ok(end)
    }
}

/// Bytes needed for the envelope of a message of `max_message` bytes.
pub fn envelope_capacity(max_message: usize) -> usize {
    FIELDS_CAPACITY + max_message.div_ceil(3) * 4
}

/// `addr:port`, IPv6 as `[addr]:port`.
pub fn socket_text(addr: SocketAddr) -> heapless::String<64> {
    let mut text = heapless::String::new();
    // 64 bytes hold the longest IPv6 socket address with a scope id.
    let _ = write!(text, "{addr}");
    text
}

/// RFC 3339 UTC with microseconds: `2024-05-01T12:34:56.789012Z`.
pub fn rfc3339(ts: Timestamp) -> heapless::String<32> {
    // Clamp to years 1970..=9999 so the text always has the RFC's shape.
    const MAX_SECS: i64 = 253_402_300_799;
    let secs = ts.secs.clamp(0, MAX_SECS);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let mut text = heapless::String::new();
    let _ = write!(
        text,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ts.micros.min(999_999)
    );
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
    fn timestamps() {
        let ts = |secs, micros| rfc3339(Timestamp { secs, micros });
        assert_eq!(ts(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(ts(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(ts(1_709_210_096, 123_456), "2024-02-29T12:34:56.123456Z");
        assert_eq!(ts(-5, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(ts(i64::MAX, 7_000_000), "9999-12-31T23:59:59.999999Z");
    }

    #[test]
    fn envelope_fields() {
        let origin = Origin {
            time: Timestamp { secs: 0, micros: 1 },
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
            transport: Transport::Tcp,
            src: "[::1]:5060".parse().unwrap(),
            dst: "[::1]:5060".parse().unwrap(),
        };
        let mut writer = EnvelopeWriter::new(4);
        assert_eq!(writer.write(&origin, b"12345"), Err(Oversize));
        assert!(writer.write(&origin, b"1234").is_ok());
    }
}
