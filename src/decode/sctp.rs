//! Zero-copy views of an SCTP packet (RFC 9260 §3): the common header, the
//! chunks it bundles, and the DATA (RFC 9260 §3.3.1) and I-DATA (RFC 8260
//! §2.1) chunks that carry user messages.
//!
//! Each view is made by `new_checked`, which validates every length once,
//! so no accessor can panic. Chunks are walked by their Chunk Length and
//! padded to a multiple of 4 bytes; the last chunk's padding may be absent.
//! The CRC32c checksum (RFC 9260 Appendix A) is computed but not required:
//! a mirror port often carries packets whose checksum the sender's NIC
//! would have filled in (offload), so a wrong one is counted, not dropped.
//!
//! What it does not do: reassemble user messages (`crate::sctp` does),
//! follow the association's state (INIT, SACK, ...: every chunk other than
//! DATA and I-DATA is skipped), or check the Verification Tag.

use super::DecodeError;

/// Byte ranges of the fields read, in RFC 9260's and RFC 8260's terms.
mod field {
    use core::ops::Range;

    pub const SOURCE_PORT: Range<usize> = 0..2;
    pub const DESTINATION_PORT: Range<usize> = 2..4;
    pub const VERIFICATION_TAG: Range<usize> = 4..8;
    pub const CHECKSUM: Range<usize> = 8..12;
    pub const COMMON_HEADER: usize = 12;

    pub const CHUNK_TYPE: usize = 0;
    pub const CHUNK_FLAGS: usize = 1;
    pub const CHUNK_LENGTH: Range<usize> = 2..4;
    pub const CHUNK_HEADER: usize = 4;

    pub const TSN: Range<usize> = 4..8;
    pub const STREAM_ID: Range<usize> = 8..10;
    /// DATA: Stream Sequence Number.
    pub const SSN: Range<usize> = 10..12;
    // DATA: the Payload Protocol Identifier (12..16), not read.
    pub const DATA_HEADER: usize = 16;
    /// I-DATA: Message Identifier.
    pub const MID: Range<usize> = 12..16;
    /// I-DATA: the Payload Protocol Identifier on the first fragment (B
    /// set), the Fragment Sequence Number on the others.
    pub const PPID_OR_FSN: Range<usize> = 16..20;
    pub const IDATA_HEADER: usize = 20;
}

/// Chunk Type values (IANA "Chunk Types").
pub mod chunk_type {
    pub const DATA: u8 = 0;
    pub const I_DATA: u8 = 64;
}

/// DATA and I-DATA chunk flags (RFC 9260 §3.3.1, RFC 8260 §2.1).
mod flag {
    pub const ENDING: u8 = 0x01;
    pub const BEGINNING: u8 = 0x02;
    pub const UNORDERED: u8 = 0x04;
}

fn be16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// An SCTP packet: the common header and the chunks after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SctpPacket<'a> {
    /// At least `COMMON_HEADER` bytes.
    buffer: &'a [u8],
}

impl<'a> SctpPacket<'a> {
    /// The packet that is all of `data` (the IP payload). Malformed when
    /// shorter than the 12-byte common header; the chunks are checked as
    /// they are walked.
    pub fn new_checked(data: &'a [u8]) -> Result<Self, DecodeError> {
        if data.len() < field::COMMON_HEADER {
            return Err(DecodeError::Malformed);
        }
        Ok(SctpPacket { buffer: data })
    }

    pub fn source_port(&self) -> u16 {
        be16(&self.buffer[field::SOURCE_PORT])
    }

    pub fn destination_port(&self) -> u16 {
        be16(&self.buffer[field::DESTINATION_PORT])
    }

    pub fn verification_tag(&self) -> u32 {
        be32(&self.buffer[field::VERIFICATION_TAG])
    }

    /// Whether the Checksum field holds the CRC32c of the packet (computed
    /// with the field zeroed, stored least significant byte first: RFC 9260
    /// Appendix A).
    pub fn checksum_ok(&self) -> bool {
        let field = &self.buffer[field::CHECKSUM];
        let stored = u32::from_le_bytes([field[0], field[1], field[2], field[3]]);
        let crc = crc32c::update(crc32c::INIT, &self.buffer[..field::CHECKSUM.start]);
        let crc = crc32c::update(crc, &[0; 4]);
        let crc = crc32c::update(crc, &self.buffer[field::CHECKSUM.end..]);
        crc32c::finish(crc) == stored
    }

    /// The chunks, in order.
    pub fn chunks(&self) -> Chunks<'a> {
        Chunks {
            rest: &self.buffer[field::COMMON_HEADER..],
        }
    }
}

/// The chunks of a packet: each `Ok`, until the bytes end or a chunk's
/// length is wrong (shorter than its header or past the packet), which
/// yields one `Err` and ends the walk.
#[derive(Debug, Clone)]
pub struct Chunks<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Chunks<'a> {
    type Item = Result<Chunk<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let chunk = Chunk::new_checked(self.rest);
        self.rest = match chunk {
            // Padding to 4 bytes; the last chunk's may be missing.
            Ok(c) => self.rest.get(c.buffer.len().next_multiple_of(4)..).unwrap_or(&[]),
            Err(_) => &[],
        };
        Some(chunk)
    }
}

/// One chunk: type, flags, and the value its Chunk Length covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// Exactly Chunk Length bytes: at least `CHUNK_HEADER`.
    buffer: &'a [u8],
}

impl<'a> Chunk<'a> {
    fn new_checked(data: &'a [u8]) -> Result<Self, DecodeError> {
        let length = data
            .get(field::CHUNK_LENGTH)
            .map(|l| usize::from(be16(l)))
            .ok_or(DecodeError::Malformed)?;
        if length < field::CHUNK_HEADER {
            return Err(DecodeError::Malformed);
        }
        Ok(Chunk {
            buffer: data.get(..length).ok_or(DecodeError::Malformed)?,
        })
    }

    pub fn chunk_type(&self) -> u8 {
        self.buffer[field::CHUNK_TYPE]
    }

    pub fn flags(&self) -> u8 {
        self.buffer[field::CHUNK_FLAGS]
    }
}

/// Which data chunk, and what identifies the user message it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageId {
    /// DATA, ordered: the Stream Sequence Number (its fragments share it
    /// and have consecutive TSNs).
    Ssn(u16),
    /// DATA, unordered: no number; its fragments have consecutive TSNs.
    Unordered,
    /// I-DATA: the Message Identifier (its fragments are numbered by FSN).
    Mid(u32),
}

/// A DATA or I-DATA chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataChunk<'a> {
    /// The chunk, at least as long as its type's header.
    buffer: &'a [u8],
    idata: bool,
}

impl<'a> DataChunk<'a> {
    /// `chunk` as a DATA or I-DATA chunk: `None` for other types,
    /// Malformed when shorter than its header (16 or 20 bytes).
    pub fn new_checked(chunk: Chunk<'a>) -> Option<Result<Self, DecodeError>> {
        let (idata, header) = match chunk.chunk_type() {
            chunk_type::DATA => (false, field::DATA_HEADER),
            chunk_type::I_DATA => (true, field::IDATA_HEADER),
            _ => return None,
        };
        Some(if chunk.buffer.len() < header {
            Err(DecodeError::Malformed)
        } else {
            Ok(DataChunk {
                buffer: chunk.buffer,
                idata,
            })
        })
    }

    /// Transmission Sequence Number: serial-number arithmetic (RFC 1982)
    /// orders it, as RFC 9260 §1.6 says.
    pub fn tsn(&self) -> u32 {
        be32(&self.buffer[field::TSN])
    }

    pub fn stream_id(&self) -> u16 {
        be16(&self.buffer[field::STREAM_ID])
    }

    pub fn is_idata(&self) -> bool {
        self.idata
    }

    /// B: the first fragment of a user message.
    pub fn beginning(&self) -> bool {
        self.buffer[field::CHUNK_FLAGS] & flag::BEGINNING != 0
    }

    /// E: the last fragment of a user message.
    pub fn ending(&self) -> bool {
        self.buffer[field::CHUNK_FLAGS] & flag::ENDING != 0
    }

    /// U: delivered without regard to its stream's order.
    pub fn unordered(&self) -> bool {
        self.buffer[field::CHUNK_FLAGS] & flag::UNORDERED != 0
    }

    /// The user message this chunk is part of, within its stream.
    pub fn message_id(&self) -> MessageId {
        match (self.idata, self.unordered()) {
            (true, _) => MessageId::Mid(be32(&self.buffer[field::MID])),
            (false, true) => MessageId::Unordered,
            (false, false) => MessageId::Ssn(be16(&self.buffer[field::SSN])),
        }
    }

    /// Where this fragment goes in its user message, counting up by one
    /// per fragment (wrapping): the TSN for DATA, the Fragment Sequence
    /// Number for I-DATA (0 on the first fragment, whose field holds the
    /// PPID instead).
    pub fn position(&self) -> u32 {
        match (self.idata, self.beginning()) {
            (false, _) => self.tsn(),
            (true, true) => 0,
            (true, false) => be32(&self.buffer[field::PPID_OR_FSN]),
        }
    }

    pub fn user_data(&self) -> &'a [u8] {
        let header = if self.idata {
            field::IDATA_HEADER
        } else {
            field::DATA_HEADER
        };
        &self.buffer[header..]
    }
}

/// CRC32c (Castagnoli, reflected polynomial 0x82F63B78), eight bytes at
/// a time ("slicing-by-8": eight 1 KiB tables built at compile time, 8 KiB
/// of read-only data): no dependency, the same code on every target, and
/// its eight lookups per eight bytes are independent, where byte at a
/// time each waits for the one before. Every SCTP packet passes through
/// it.
mod crc32c {
    pub const INIT: u32 = !0;
    const POLYNOMIAL: u32 = 0x82f6_3b78;

    /// `TABLES[0]` is the byte-at-a-time table; `TABLES[k][i]` is the CRC
    /// of byte `i` followed by `k` zero bytes.
    const TABLES: [[u32; 256]; 8] = {
        let mut tables = [[0u32; 256]; 8];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ POLYNOMIAL
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            tables[0][i] = crc;
            i += 1;
        }
        let mut k = 1;
        while k < 8 {
            let mut i = 0;
            while i < 256 {
                let previous = tables[k - 1][i];
                tables[k][i] = (previous >> 8) ^ tables[0][(previous & 0xff) as usize];
                i += 1;
            }
            k += 1;
        }
        tables
    };

    pub fn update(mut crc: u32, bytes: &[u8]) -> u32 {
        let t = &TABLES;
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let low = crc ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            crc = t[7][usize::from(low as u8)]
                ^ t[6][usize::from((low >> 8) as u8)]
                ^ t[5][usize::from((low >> 16) as u8)]
                ^ t[4][usize::from((low >> 24) as u8)]
                ^ t[3][usize::from(w[4])]
                ^ t[2][usize::from(w[5])]
                ^ t[1][usize::from(w[6])]
                ^ t[0][usize::from(w[7])];
        }
        for &b in words.remainder() {
            crc = t[0][usize::from((crc as u8) ^ b)] ^ (crc >> 8);
        }
        crc
    }

    pub fn finish(crc: u32) -> u32 {
        !crc
    }

    #[test]
    fn check_value() {
        // The CRC-32C check value (the CRC catalogue's, for "123456789").
        assert_eq!(finish(update(INIT, b"123456789")), 0xe306_9283);
        // Eight bytes at a time agrees with one at a time, at any split.
        let data: Vec<u8> = (0..100u32).map(|i| (i * 37 + 11) as u8).collect();
        let bytewise = data.iter().fold(INIT, |crc, &b| update(crc, &[b]));
        for cut in 0..data.len() {
            assert_eq!(update(update(INIT, &data[..cut]), &data[cut..]), bytewise);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DATA chunk: flags, TSN, stream, SSN, PPID, user data.
    fn data(flags: u8, tsn: u32, sid: u16, ssn: u16, payload: &[u8]) -> Vec<u8> {
        let mut c = vec![0, flags];
        c.extend((16 + payload.len() as u16).to_be_bytes());
        c.extend(tsn.to_be_bytes());
        c.extend(sid.to_be_bytes());
        c.extend(ssn.to_be_bytes());
        c.extend(0u32.to_be_bytes());
        c.extend(payload);
        while c.len() % 4 != 0 {
            c.push(0);
        }
        c
    }

    fn packet(chunks: &[Vec<u8>]) -> Vec<u8> {
        let mut p = vec![0x13, 0xc4, 0x13, 0xc4, 0, 0, 0, 7, 0, 0, 0, 0];
        for c in chunks {
            p.extend(c);
        }
        let crc = crc32c::finish(crc32c::update(crc32c::INIT, &p));
        p[8..12].copy_from_slice(&crc.to_le_bytes());
        p
    }

    #[test]
    fn bundled_chunks_and_checksum() {
        let sack = vec![3, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        let p = packet(&[sack, data(3, 9, 1, 2, b"hello"), data(0x06, 10, 2, 0, b"abc")]);
        let pkt = SctpPacket::new_checked(&p).unwrap();
        assert!(pkt.checksum_ok());
        assert_eq!((pkt.source_port(), pkt.verification_tag()), (5060, 7));
        let chunks: Vec<_> = pkt.chunks().map(Result::unwrap).collect();
        assert_eq!(chunks.len(), 3);
        assert!(DataChunk::new_checked(chunks[0]).is_none());
        let d = DataChunk::new_checked(chunks[1]).unwrap().unwrap();
        assert_eq!(
            (d.tsn(), d.stream_id(), d.message_id()),
            (9, 1, MessageId::Ssn(2))
        );
        assert!(d.beginning() && d.ending() && !d.unordered());
        assert_eq!(d.user_data(), b"hello");
        let u = DataChunk::new_checked(chunks[2]).unwrap().unwrap();
        assert_eq!((u.message_id(), u.position()), (MessageId::Unordered, 10));
        assert!(u.beginning() && !u.ending());
        let mut bad = p.clone();
        bad[20] ^= 1;
        assert!(!SctpPacket::new_checked(&bad).unwrap().checksum_ok());
    }

    #[test]
    fn idata_positions() {
        let mut c = vec![64, 0x02, 0, 24, 0, 0, 0, 5, 0, 3, 0, 0, 0, 0, 0, 9, 0, 0, 0, 46];
        c.extend(b"SIP/");
        let chunk = Chunk::new_checked(&c).unwrap();
        let d = DataChunk::new_checked(chunk).unwrap().unwrap();
        assert_eq!((d.message_id(), d.position()), (MessageId::Mid(9), 0));
        c[1] = 0x01;
        c[19] = 4;
        let d = DataChunk::new_checked(Chunk::new_checked(&c).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!((d.position(), d.user_data()), (4, &b"SIP/"[..]));
    }

    #[test]
    fn cut_or_lying_lengths_are_malformed_not_panics() {
        let p = packet(&[data(3, 1, 0, 0, b"x"), data(3, 2, 0, 1, b"yz")]);
        for len in 0..p.len() {
            if let Ok(pkt) = SctpPacket::new_checked(&p[..len]) {
                let _ = pkt.checksum_ok();
                for chunk in pkt.chunks() {
                    if let Ok(c) = chunk
                        && let Some(Ok(d)) = DataChunk::new_checked(c)
                    {
                        let _ = (d.user_data(), d.position(), d.message_id());
                    }
                }
            }
        }
        let mut short = p.clone();
        short[14..16].copy_from_slice(&3u16.to_be_bytes()); // shorter than a chunk header
        let walked: Vec<_> = SctpPacket::new_checked(&short).unwrap().chunks().collect();
        assert_eq!(walked, [Err(DecodeError::Malformed)]);
        let mut data_short = p.clone();
        data_short[14..16].copy_from_slice(&8u16.to_be_bytes()); // a DATA chunk of 8 bytes
        let first = SctpPacket::new_checked(&data_short)
            .unwrap()
            .chunks()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(DataChunk::new_checked(first), Some(Err(DecodeError::Malformed)));
        let mut long = p;
        long[14..16].copy_from_slice(&400u16.to_be_bytes()); // past the packet
        assert_eq!(
            SctpPacket::new_checked(&long).unwrap().chunks().next(),
            Some(Err(DecodeError::Malformed))
        );
    }
}
