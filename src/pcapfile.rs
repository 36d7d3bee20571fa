//! Capture files: classic pcap and pcapng, read with pcap-parser through a
//! buffer of [`FILE_BUFFER_START_BYTES`], made [`FILE_BUFFER_BYTES`] once
//! if a record needs it, every packet with its own interface's link type
//! and timestamp resolution.
//!
//! A pcapng file may describe interfaces of different link types, snap
//! lengths and timestamp resolutions (mergecap's output from captures of
//! several hosts); libpcap refuses such files, this reader takes each
//! packet as its interface describes it. Timestamps are read as the formats
//! define them: the classic pcap seconds field is unsigned (good to 2106),
//! pcapng times are 64-bit counts of `if_tsresol` units (10^-n or 2^-n
//! seconds) plus `if_tsoffset` seconds.
//!
//! A file that ends inside a record (the capture was killed while writing
//! it) or whose records stop making sense is not an error for what came
//! before: every whole record before it is delivered, and the reader says
//! where it stopped ([`Ending::Incomplete`]).
//!
//! What it does not do: decode frames, or filter them (capture applies
//! BPF_FILTER); live capture stays with libpcap.

use crate::capture::Frame;
use crate::envelope::Timestamp;
use pcap_parser::traits::{PcapNGPacketBlock, PcapReaderIterator};
use pcap_parser::{Block, InterfaceDescriptionBlock, PcapBlockOwned, PcapError};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};

/// The reader's largest buffer: 393,248 bytes, the largest record it can
/// hold, as pcap-parser needs a whole block in its buffer (it sets no
/// bound of its own). It is the largest packet block libpcap reads
/// (`MAX_BLOCKSIZE_FOR_SNAPLEN(MAXIMUM_SNAPLEN)`, libpcap 1.10 sf-pcapng.c):
/// an Enhanced Packet Block's framing and fixed fields (`EPB_OVERHEAD`),
/// the largest packet (`MAX_SNAPLEN`) and `MAX_OPTIONS` of options. A
/// classic pcap record (16 bytes and the packet) is smaller. Every byte of
/// it is resident once made (pcap-parser's buffer writes zeros over all of
/// it, and each refill writes the whole free space), so it is not larger
/// than that, and made only for a file with a record that needs it.
pub const FILE_BUFFER_BYTES: usize = EPB_OVERHEAD + MAX_SNAPLEN + MAX_OPTIONS;

/// The reader's buffer as a file starts, in bytes: one record of the
/// largest frame of a 64 KiB-MTU link (65,535 bytes: loopback, the sipp
/// traces) with its framing and up to 4 KiB of pcapng options, so that such
/// files never need [`FILE_BUFFER_BYTES`], whose extra 316 KiB would be
/// resident for the whole read (docs/performance.md "Peak memory"). A
/// record that does not fit makes the buffer FILE_BUFFER_BYTES, once per
/// file.
pub const FILE_BUFFER_START_BYTES: usize = 65_536 + 4096;

/// The largest packet libpcap writes or reads, in bytes (`MAXIMUM_SNAPLEN`,
/// libpcap's pcap-int.h); it refuses a record with more.
const MAX_SNAPLEN: usize = 262_144;
/// The options libpcap allows next to the largest packet in one block
/// (128 KiB, sf-pcapng.c).
const MAX_OPTIONS: usize = 131_072;
/// An Enhanced Packet Block without packet or options: block type and
/// length (8), interface, timestamp and lengths (20), trailing length (4)
/// (pcapng §4.3).
const EPB_OVERHEAD: usize = 8 + 20 + 4;

/// Interfaces one pcapng section may describe. Bounds the interface table
/// (a damaged file cannot grow it without end); mergecap of many hosts
/// stays far below.
pub const MAX_INTERFACES: usize = 1024;

/// pcapng Enhanced Packet Block type (pcapng §4.3).
const EPB: u32 = 6;
/// pcapng IDB option codes (pcapng §4.2).
const IF_TSRESOL: u16 = 9;
const IF_TSOFFSET: u16 = 14;
/// Microseconds per second, for [`Timestamp`].
const MICROS: u64 = 1_000_000;

/// How a file's reading ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Every record was read.
    Complete,
    /// The stop flag was set.
    Stopped,
    /// The file ends inside the record at byte `offset`, or that record
    /// cannot be read (`why`); every record before it was delivered.
    Incomplete { offset: u64, why: String },
}

/// One pcapng interface (IDB) as its packets need it.
#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: i32,
    /// Timestamp units per second (`if_tsresol`), at least 1.
    units_per_second: u64,
    /// Seconds added to every timestamp (`if_tsoffset`).
    offset_secs: i64,
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Pcap { linktype: i32, nanoseconds: bool },
    PcapNg { big_endian: bool },
}

/// An open capture file.
pub struct CaptureFile {
    reader: Box<dyn PcapReaderIterator + Send>,
    /// The buffer's size now, and the most it may become.
    buffer: usize,
    max_buffer: usize,
    format: Format,
    /// The current pcapng section's interfaces, by interface id.
    interfaces: Vec<Interface>,
}

impl CaptureFile {
    /// Recognise the file's format from its first bytes. Errors: the input
    /// is empty, cannot be read, or is neither pcap nor pcapng.
    pub fn new(input: impl Read + Send + 'static) -> Result<CaptureFile, String> {
        CaptureFile::with_buffer(input, FILE_BUFFER_BYTES)
    }

    /// A reader whose buffer starts at FILE_BUFFER_START_BYTES (or
    /// `max_buffer`, if less) and may become `max_buffer`.
    fn with_buffer(input: impl Read + Send + 'static, max_buffer: usize) -> Result<CaptureFile, String> {
        let buffer = FILE_BUFFER_START_BYTES.min(max_buffer);
        let reader = pcap_parser::create_reader(buffer, input).map_err(|e| match e {
            PcapError::Eof => "the file is empty".to_string(),
            PcapError::ReadError => "cannot read it".to_string(),
            PcapError::Incomplete(_) => "it is too short for a pcap or pcapng header".to_string(),
            _ => "not a pcap or pcapng file (unknown header)".to_string(),
        })?;
        // pcap-parser has recognised the format: its header is still in
        // the buffer.
        let format = match pcap_parser::parse_pcap_header(reader.data()) {
            Ok((_, header)) => Format::Pcap {
                linktype: header.network.0,
                nanoseconds: header.is_nanosecond_precision(),
            },
            // A pcapng section header, which sets the byte order.
            Err(_) => Format::PcapNg { big_endian: false },
        };
        Ok(CaptureFile {
            reader,
            buffer,
            max_buffer,
            format,
            interfaces: Vec::new(),
        })
    }

    /// Hand every packet to `on_frame`, in file order, until the file ends,
    /// cannot be read further, or `stop` is set. Errors: reading the file
    /// failed (I/O).
    pub fn read(&mut self, stop: &AtomicBool, mut on_frame: impl FnMut(&Frame)) -> Result<Ending, String> {
        // Reading made no progress since the last refill: the record does
        // not fit the buffer.
        let mut starved = false;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(Ending::Stopped);
            }
            // Enhanced Packet Blocks without pcap-parser's option list,
            // which allocates when a packet carries options.
            if let Format::PcapNg { big_endian } = self.format
                && let Some((size, epb)) = enhanced_packet(self.reader.data(), big_endian)
            {
                match frame_of(&self.interfaces, &epb) {
                    Ok(frame) => on_frame(&frame),
                    Err(why) => return Ok(self.incomplete(why)),
                }
                self.reader.consume(size);
                starved = false;
                continue;
            }
            let (size, block) = match self.reader.next() {
                Ok(next) => next,
                Err(PcapError::Eof) => return Ok(Ending::Complete),
                Err(PcapError::Incomplete(_)) => {
                    if starved {
                        if self.grow() {
                            starved = false;
                            continue;
                        }
                        return Ok(self.too_large());
                    }
                    let (before, offset) = (self.reader.data().len(), self.reader.consumed());
                    if let Err(e) = self.reader.refill() {
                        return Err(format!("cannot read after byte {offset}: {e}"));
                    }
                    starved = self.reader.data().len() == before && !self.reader.reader_exhausted();
                    continue;
                }
                Err(e) => {
                    // pcap-parser's error borrows the reader: the message first.
                    let why = match e {
                        PcapError::BufferTooSmall => None,
                        PcapError::UnexpectedEof => Some("the file ends inside this record".to_string()),
                        e => Some(format!("a damaged record ({e})")),
                    };
                    match why {
                        Some(why) => return Ok(self.incomplete(why)),
                        None if self.grow() => continue,
                        None => return Ok(self.too_large()),
                    }
                }
            };
            starved = false;
            let handled = match (block, self.format) {
                (PcapBlockOwned::LegacyHeader(_), _) => Ok(()),
                (
                    PcapBlockOwned::Legacy(record),
                    Format::Pcap {
                        linktype,
                        nanoseconds,
                    },
                ) => {
                    // The seconds field is unsigned: 2038 and later are
                    // positive.
                    let fraction = if nanoseconds {
                        record.ts_usec / 1000
                    } else {
                        record.ts_usec
                    };
                    let time = Timestamp {
                        secs: i64::from(record.ts_sec) + i64::from(fraction / MICROS as u32),
                        micros: fraction % MICROS as u32,
                    };
                    on_frame(&Frame {
                        time,
                        interface: 0,
                        linktype,
                        data: record.data,
                    });
                    Ok(())
                }
                (PcapBlockOwned::NG(Block::SectionHeader(shb)), _) => {
                    self.format = Format::PcapNg {
                        big_endian: shb.big_endian(),
                    };
                    self.interfaces.clear();
                    Ok(())
                }
                (PcapBlockOwned::NG(Block::InterfaceDescription(idb)), _) => {
                    interface(&idb).and_then(|i| add_interface(&mut self.interfaces, i))
                }
                // Only a block the fast path left to pcap-parser (it cannot
                // be whole and well-formed there), should it parse here.
                (PcapBlockOwned::NG(Block::EnhancedPacket(epb)), _) => {
                    let epb = EnhancedPacket {
                        interface: epb.if_id,
                        ts: u64::from(epb.ts_high) << 32 | u64::from(epb.ts_low),
                        data: epb.packet_data(),
                    };
                    frame_of(&self.interfaces, &epb).map(|frame| on_frame(&frame))
                }
                (PcapBlockOwned::NG(Block::SimplePacket(spb)), _) => match self.interfaces.first() {
                    // A Simple Packet Block has no time; libpcap gives it 0.
                    Some(i) => {
                        on_frame(&Frame {
                            time: Timestamp { secs: 0, micros: 0 },
                            interface: 0,
                            linktype: i.linktype,
                            data: spb.packet_data(),
                        });
                        Ok(())
                    }
                    None => Err("a simple packet block before any interface description".into()),
                },
                // Statistics, name resolution, secrets, comments: not packets.
                (PcapBlockOwned::NG(_), _) => Ok(()),
                (PcapBlockOwned::Legacy(_), Format::PcapNg { .. }) => {
                    Err("a classic pcap record in a pcapng file".into())
                }
            };
            if let Err(why) = handled {
                return Ok(self.incomplete(why));
            }
            self.reader.consume(size);
        }
    }

    /// Make the buffer its largest, for a record that does not fit; false
    /// if it already is.
    fn grow(&mut self) -> bool {
        if self.buffer == self.max_buffer {
            return false;
        }
        self.buffer = self.max_buffer;
        self.reader.grow(self.max_buffer)
    }

    /// Stopped at the record that starts `consumed` bytes into the file.
    fn incomplete(&self, why: String) -> Ending {
        Ending::Incomplete {
            offset: self.reader.consumed() as u64,
            why,
        }
    }

    fn too_large(&self) -> Ending {
        self.incomplete(format!(
            "the record does not fit in {FILE_BUFFER_BYTES} bytes (a damaged length?)"
        ))
    }
}

/// Add an interface to a section's table.
fn add_interface(interfaces: &mut Vec<Interface>, interface: Interface) -> Result<(), String> {
    if interfaces.len() == MAX_INTERFACES {
        return Err(format!("more than {MAX_INTERFACES} interfaces in one section"));
    }
    if crate::decode::LinkType::from_pcap(interface.linktype).is_none() {
        log::warn!(
            "interface {}: link type {} is not supported; its frames will be counted and skipped",
            interfaces.len(),
            interface.linktype
        );
    }
    interfaces.push(interface);
    Ok(())
}

/// The frame of an Enhanced Packet Block, with its interface's link type
/// and time.
fn frame_of<'a>(interfaces: &[Interface], epb: &EnhancedPacket<'a>) -> Result<Frame<'a>, String> {
    let Some(interface) = interfaces.get(epb.interface as usize) else {
        return Err(format!(
            "a packet on interface {}, which no interface description block describes",
            epb.interface
        ));
    };
    Ok(Frame {
        time: pcapng_time(epb.ts, interface),
        interface: epb.interface,
        linktype: interface.linktype,
        data: epb.data,
    })
}
/// The fields of an Enhanced Packet Block that a frame needs.
struct EnhancedPacket<'a> {
    interface: u32,
    /// Time in the interface's units since the epoch (before `if_tsoffset`).
    ts: u64,
    data: &'a [u8],
}

/// The Enhanced Packet Block at the start of `data`, if the whole of a
/// well-formed one is there; pcap-parser frames it (type, lengths),
/// its fixed fields are read here (pcapng §4.3). `None` otherwise: the
/// caller lets pcap-parser read, report or wait for the block.
fn enhanced_packet(data: &[u8], big_endian: bool) -> Option<(usize, EnhancedPacket<'_>)> {
    let (rest, block) = if big_endian {
        pcap_parser::parse_unknownblock_be(data)
    } else {
        pcap_parser::parse_unknownblock_le(data)
    }
    .ok()?;
    let block_type = if big_endian {
        block.block_type.swap_bytes()
    } else {
        block.block_type
    };
    if block_type != EPB || block.block_len1 != block.block_len2 {
        return None;
    }
    let word = |at: usize| -> Option<u32> {
        let bytes: [u8; 4] = block.data.get(at..at + 4)?.try_into().ok()?;
        Some(if big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        })
    };
    let captured = usize::try_from(word(12)?).ok()?;
    let packet = block.data.get(20..)?.get(..captured)?;
    let epb = EnhancedPacket {
        interface: word(0)?,
        ts: u64::from(word(4)?) << 32 | u64::from(word(8)?),
        data: packet,
    };
    Some((data.len() - rest.len(), epb))
}

/// An IDB's link type, resolution and offset. `if_tsresol` and
/// `if_tsoffset` are read here, in the section's byte order (pcap-parser's
/// helpers read the offset as little-endian and reject 2^-n resolutions).
fn interface(idb: &InterfaceDescriptionBlock<'_>) -> Result<Interface, String> {
    let big_endian = idb.block_type != pcap_parser::IDB_MAGIC;
    let option = |code: u16| idb.options.iter().find(|o| o.code.0 == code).map(|o| o.value());
    let units_per_second = match option(IF_TSRESOL) {
        None => Some(MICROS),
        Some(value) => value.first().and_then(|&r| units_per_second(r)),
    }
    .ok_or_else(|| "an interface with an unusable if_tsresol".to_string())?;
    let offset_secs = match option(IF_TSOFFSET) {
        None => 0,
        Some(value) => {
            let bytes: [u8; 8] = value
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| "an interface with a short if_tsoffset".to_string())?;
            if big_endian {
                i64::from_be_bytes(bytes)
            } else {
                i64::from_le_bytes(bytes)
            }
        }
    };
    Ok(Interface {
        linktype: idb.linktype.0,
        units_per_second,
        offset_secs,
    })
}

/// Units per second of an `if_tsresol` byte: 10^n, or 2^n when the high
/// bit is set (pcapng §4.2); `None` when it does not fit 64 bits.
fn units_per_second(tsresol: u8) -> Option<u64> {
    let n = u32::from(tsresol & 0x7f);
    if tsresol & 0x80 == 0 {
        10u64.checked_pow(n)
    } else {
        1u64.checked_shl(n).filter(|_| n < 64)
    }
}

/// A pcapng timestamp (`ts` units of the interface's resolution since the
/// epoch, plus its offset) to seconds and microseconds, truncating.
fn pcapng_time(ts: u64, interface: &Interface) -> Timestamp {
    let units = interface.units_per_second;
    let secs = i64::try_from(ts / units).unwrap_or(i64::MAX);
    let micros = u128::from(ts % units) * u128::from(MICROS) / u128::from(units);
    Timestamp {
        secs: secs.saturating_add(interface.offset_secs),
        // Less than a million: the fraction is below one second.
        micros: micros as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic pcap file: `records` of (seconds, fraction, data).
    fn pcap(big_endian: bool, nanoseconds: bool, linktype: u32, records: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let w32 = |out: &mut Vec<u8>, v: u32| {
            out.extend_from_slice(&if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            })
        };
        let mut out = Vec::new();
        w32(&mut out, if nanoseconds { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
        w32(&mut out, if big_endian { 0x0002_0004 } else { 0x0004_0002 });
        w32(&mut out, 0);
        w32(&mut out, 0);
        w32(&mut out, 65_535);
        w32(&mut out, linktype);
        for &(secs, fraction, data) in records {
            for v in [secs, fraction, data.len() as u32, data.len() as u32] {
                w32(&mut out, v);
            }
            out.extend_from_slice(data);
        }
        out
    }

    /// A pcapng block in either byte order.
    fn block(out: &mut Vec<u8>, big_endian: bool, kind: u32, body: &[u8]) {
        let w32 = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let len = 12 + body.len().next_multiple_of(4) as u32;
        out.extend_from_slice(&w32(kind));
        out.extend_from_slice(&w32(len));
        out.extend_from_slice(body);
        out.resize(out.len() + body.len().next_multiple_of(4) - body.len(), 0);
        out.extend_from_slice(&w32(len));
    }

    /// A pcapng section: interfaces of (link type, if_tsresol, if_tsoffset)
    /// and packets of (interface, timestamp, data).
    fn pcapng(big_endian: bool, interfaces: &[(u16, u8, i64)], packets: &[(u32, u64, &[u8])]) -> Vec<u8> {
        let w16 = |v: u16| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let w32 = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut out = Vec::new();
        let mut shb = w32(0x1A2B_3C4D).to_vec();
        shb.extend_from_slice(&w16(1));
        shb.extend_from_slice(&w16(0));
        shb.extend_from_slice(&[0xff; 8]);
        block(&mut out, big_endian, 0x0A0D_0D0A, &shb);
        for &(linktype, tsresol, offset) in interfaces {
            let mut idb = w16(linktype).to_vec();
            idb.extend_from_slice(&[0, 0]);
            idb.extend_from_slice(&w32(0));
            idb.extend_from_slice(&w16(IF_TSRESOL));
            idb.extend_from_slice(&w16(1));
            idb.extend_from_slice(&[tsresol, 0, 0, 0]);
            idb.extend_from_slice(&w16(IF_TSOFFSET));
            idb.extend_from_slice(&w16(8));
            idb.extend_from_slice(&if big_endian {
                offset.to_be_bytes()
            } else {
                offset.to_le_bytes()
            });
            idb.extend_from_slice(&[0; 4]);
            block(&mut out, big_endian, 1, &idb);
        }
        for &(interface, ts, data) in packets {
            let mut epb = Vec::new();
            for v in [
                interface,
                (ts >> 32) as u32,
                ts as u32,
                data.len() as u32,
                data.len() as u32,
            ] {
                epb.extend_from_slice(&w32(v));
            }
            epb.extend_from_slice(data);
            epb.resize(epb.len().next_multiple_of(4), 0);
            // epb_flags, then the end of options
            epb.extend_from_slice(&w16(2));
            epb.extend_from_slice(&w16(4));
            epb.extend_from_slice(&w32(1));
            epb.extend_from_slice(&[0; 4]);
            block(&mut out, big_endian, EPB, &epb);
        }
        out
    }

    /// A frame as (time, interface, link type, data).
    type Owned = (Timestamp, u32, i32, Vec<u8>);

    /// Every frame of `bytes`, and
    /// how reading ended; read through a buffer of `buffer` bytes.
    fn read_all(bytes: Vec<u8>, buffer: usize) -> Result<(Vec<Owned>, Ending), String> {
        let mut file = CaptureFile::with_buffer(std::io::Cursor::new(bytes), buffer)?;
        let mut frames = Vec::new();
        let ending = file.read(&AtomicBool::new(false), |f| {
            frames.push((f.time, f.interface, f.linktype, f.data.to_vec()))
        })?;
        Ok((frames, ending))
    }

    /// 2071-03-02T12:00:00Z: past 2038, below 2^32 seconds.
    const Y2071: u32 = 3_192_523_200;

    #[test]
    fn classic_pcap_in_every_byte_order_and_resolution() {
        for big_endian in [false, true] {
            for nanoseconds in [false, true] {
                let fraction = if nanoseconds { 123_456_789 } else { 123_456 };
                let bytes = pcap(
                    big_endian,
                    nanoseconds,
                    113,
                    &[(Y2071, fraction, b"abc"), (7, 0, b"de")],
                );
                let (frames, ending) = read_all(bytes, FILE_BUFFER_BYTES).unwrap();
                assert_eq!(ending, Ending::Complete);
                let at = |secs, micros| Timestamp { secs, micros };
                assert_eq!(
                    frames,
                    [
                        (at(i64::from(Y2071), 123_456), 0, 113, b"abc".to_vec()),
                        (at(7, 0), 0, 113, b"de".to_vec())
                    ],
                    "big-endian {big_endian}, nanoseconds {nanoseconds}"
                );
            }
        }
    }

    #[test]
    fn pcapng_interfaces_keep_their_link_type_and_resolution() {
        let secs = u64::from(Y2071);
        for big_endian in [false, true] {
            let bytes = pcapng(
                big_endian,
                &[(1, 9, 0), (113, 6, 0), (101, 0x80 | 20, 1_000)],
                &[
                    (0, secs * 1_000_000_000 + 5_000, b"ether"),
                    (1, secs * 1_000_000 + 7, b"sll"),
                    (2, (secs - 1_000) << 20 | 1 << 19, b"raw"),
                ],
            );
            let (frames, ending) = read_all(bytes, FILE_BUFFER_BYTES).unwrap();
            assert_eq!(ending, Ending::Complete);
            let at = |micros| Timestamp {
                secs: secs as i64,
                micros,
            };
            assert_eq!(
                frames,
                [
                    (at(5), 0, 1, b"ether".to_vec()),
                    (at(7), 1, 113, b"sll".to_vec()),
                    (at(500_000), 2, 101, b"raw".to_vec())
                ],
                "big-endian {big_endian}"
            );
        }
    }

    /// Sections (`cat a.pcapng b.pcapng`) restart the interface table and
    /// may change the byte order.
    #[test]
    fn pcapng_sections_each_have_their_interfaces() {
        let mut bytes = pcapng(false, &[(1, 6, 0), (113, 6, 0)], &[(1, 5, b"sll")]);
        bytes.extend(pcapng(true, &[(229, 9, 0)], &[(0, 7_000, b"raw6")]));
        let (frames, ending) = read_all(bytes, FILE_BUFFER_BYTES).unwrap();
        assert_eq!(ending, Ending::Complete);
        let at = |micros| Timestamp { secs: 0, micros };
        assert_eq!(
            frames,
            [
                (at(5), 1, 113, b"sll".to_vec()),
                (at(7), 0, 229, b"raw6".to_vec())
            ]
        );
    }

    /// Cut anywhere: every whole record is delivered; a cut inside a record
    /// names that record's offset; a cut between records is a whole file.
    #[test]
    fn files_cut_at_every_byte() {
        let packets: [(u32, u64, &[u8]); 3] = [(0, 1, b"first"), (1, 2, b"second"), (0, 3, b"third!")];
        let classic = pcap(
            false,
            false,
            1,
            &[(1, 0, b"first"), (2, 0, b"second"), (3, 0, b"third!")],
        );
        let next_gen = pcapng(false, &[(1, 6, 0), (1, 9, 0)], &packets);
        for (bytes, header) in [(classic, 24), (next_gen, 28 + 2 * 44)] {
            // Where each record starts, and the end.
            let (mut starts, mut at) = (vec![header], header);
            while at < bytes.len() {
                let len = if header == 24 {
                    16 + u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize
                } else {
                    u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize
                };
                at += len;
                starts.push(at);
            }
            for cut in header..=bytes.len() {
                for buffer in [64, FILE_BUFFER_BYTES] {
                    let (frames, ending) = read_all(bytes[..cut].to_vec(), buffer).unwrap();
                    let whole = starts.iter().filter(|&&s| s <= cut).count() - 1;
                    assert_eq!(frames.len(), whole, "cut at {cut}, buffer {buffer}");
                    if starts.contains(&cut) {
                        assert_eq!(ending, Ending::Complete, "cut at {cut}");
                    } else {
                        let Ending::Incomplete { offset, .. } = ending else {
                            panic!("cut at {cut}: {ending:?}")
                        };
                        assert_eq!(offset, starts[whole] as u64, "cut at {cut}, buffer {buffer}");
                    }
                }
            }
        }
    }

    /// Damaged files, byte by byte: reading ends (never panics or loops),
    /// and every frame it delivers lies within the file.
    #[test]
    fn mutated_files_end_cleanly() {
        let packets: [(u32, u64, &[u8]); 3] = [(0, 1, b"first"), (1, 2, b"second"), (0, 3, b"third!")];
        let files = [
            pcap(
                false,
                false,
                1,
                &[(1, 0, b"first"), (2, 0, b"second"), (3, 0, b"third!")],
            ),
            pcap(true, true, 1, &[(1, 0, b"first"), (2, 0, b"second")]),
            pcapng(false, &[(1, 6, 0), (113, 0x80 | 20, -3)], &packets),
            pcapng(true, &[(1, 9, 7), (101, 3, 0)], &packets),
        ];
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for original in &files {
            for _ in 0..2_000 {
                let mut bytes = original.clone();
                for _ in 0..1 + random() % 4 {
                    let at = (random() % bytes.len() as u64) as usize;
                    bytes[at] = random() as u8;
                }
                let len = bytes.len();
                // Small buffers: many refills, and records that do not fit.
                let buffer = [64, 256, 4096][(random() % 3) as usize];
                if let Ok((frames, _)) = read_all(bytes, buffer) {
                    assert!(frames.iter().map(|f| f.3.len()).sum::<usize>() <= len);
                }
            }
        }
    }

    #[test]
    fn not_a_capture_file() {
        let garbage = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n".to_vec();
        let err = read_all(garbage, FILE_BUFFER_BYTES).unwrap_err();
        assert_eq!(err, "not a pcap or pcapng file (unknown header)");
        assert_eq!(
            read_all(Vec::new(), FILE_BUFFER_BYTES).unwrap_err(),
            "the file is empty"
        );
        let short = pcap(false, false, 1, &[])[..10].to_vec();
        assert!(read_all(short, FILE_BUFFER_BYTES).is_err());
    }

    #[test]
    fn damaged_records_stop_reading_where_they_are() {
        // A packet on an interface no IDB describes.
        let bytes = pcapng(false, &[(1, 6, 0)], &[(0, 1, b"ok"), (3, 2, b"lost")]);
        let (frames, ending) = read_all(bytes, FILE_BUFFER_BYTES).unwrap();
        assert_eq!(frames.len(), 1);
        assert!(
            matches!(ending, Ending::Incomplete { offset: 120, ref why } if why.contains("interface 3")),
            "{ending:?}"
        );
        // A record length past any buffer.
        let mut bytes = pcap(false, false, 1, &[(1, 0, b"ok"), (2, 0, b"lost")]);
        bytes[24 + 18 + 8..24 + 18 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let (frames, ending) = read_all(bytes, 4096).unwrap();
        assert_eq!(frames.len(), 1);
        assert!(
            matches!(ending, Ending::Incomplete { offset: 42, .. }),
            "{ending:?}"
        );
    }

    /// The largest records libpcap reads fit the buffer: a classic record
    /// of MAX_SNAPLEN bytes, and a pcapng block of MAX_SNAPLEN bytes of
    /// packet and MAX_OPTIONS of options (comments); a block 4 bytes
    /// larger does not, and reading stops there.
    #[test]
    fn frames_of_a_64_kib_link_keep_the_starting_buffer() {
        // The largest loopback frame, in a classic record and in an EPB
        // whose options fill it to exactly FILE_BUFFER_START_BYTES: read
        // without making the buffer its largest. A larger record makes it
        // so, and is read.
        let frame = vec![0x5a; 65_535];
        let mut bytes = pcapng(false, &[(1, 6, 0)], &[]);
        let mut epb = Vec::new();
        for v in [0u32, 0, 1, 65_535, 65_535] {
            epb.extend_from_slice(&v.to_le_bytes());
        }
        epb.extend_from_slice(&frame);
        epb.push(0);
        epb.extend_from_slice(&1u16.to_le_bytes());
        epb.extend_from_slice(&4056u16.to_le_bytes());
        epb.resize(epb.len() + 4056, b'c');
        epb.extend_from_slice(&[0; 4]);
        let start = bytes.len();
        block(&mut bytes, false, EPB, &epb);
        assert_eq!(bytes.len() - start, FILE_BUFFER_START_BYTES);
        let classic = pcap(false, false, 1, &[(1, 0, &frame), (2, 0, &frame)]);
        for bytes in [classic, bytes] {
            let mut file = CaptureFile::with_buffer(std::io::Cursor::new(bytes), FILE_BUFFER_BYTES).unwrap();
            let mut frames = 0;
            let ending = file.read(&AtomicBool::new(false), |f| {
                assert_eq!(f.data, &frame[..]);
                frames += 1;
            });
            assert_eq!(ending, Ok(Ending::Complete));
            assert!(frames > 0);
            assert_eq!(file.buffer, FILE_BUFFER_START_BYTES);
        }
        let larger = vec![0x5a; 100_000];
        let bytes = pcap(false, false, 1, &[(1, 0, &larger)]);
        let mut file = CaptureFile::with_buffer(std::io::Cursor::new(bytes), FILE_BUFFER_BYTES).unwrap();
        let mut frames = 0;
        let ending = file.read(&AtomicBool::new(false), |f| {
            assert_eq!(f.data.len(), 100_000);
            frames += 1;
        });
        assert_eq!((ending, frames), (Ok(Ending::Complete), 1));
        assert_eq!(file.buffer, FILE_BUFFER_BYTES);
    }

    #[test]
    fn the_largest_records_fit_the_buffer() {
        let packet = vec![0x5a; MAX_SNAPLEN];
        let bytes = pcap(false, false, 1, &[(1, 0, &packet), (2, 0, b"next")]);
        let (frames, ending) = read_all(bytes, FILE_BUFFER_BYTES).unwrap();
        assert_eq!(ending, Ending::Complete);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].3, packet);

        for (extra, fits) in [(0, true), (4, false)] {
            let mut bytes = pcapng(false, &[(1, 6, 0)], &[]);
            let start = bytes.len();
            let mut epb = Vec::new();
            for v in [0, 0, 1, MAX_SNAPLEN as u32, MAX_SNAPLEN as u32] {
                epb.extend_from_slice(&v.to_le_bytes());
            }
            epb.extend_from_slice(&packet);
            // Two opt_comments filling the options (an option is at most
            // 65,535 bytes), then the end of options.
            for comment in [65_532, MAX_OPTIONS - 12 - 65_532 + extra] {
                epb.extend_from_slice(&1u16.to_le_bytes());
                epb.extend_from_slice(&(comment as u16).to_le_bytes());
                epb.resize(epb.len() + comment, b'c');
            }
            epb.extend_from_slice(&[0; 4]);
            block(&mut bytes, false, EPB, &epb);
            assert_eq!(bytes.len() - start, FILE_BUFFER_BYTES + extra);
            let (frames, ending) = read_all(bytes, FILE_BUFFER_BYTES).unwrap();
            if fits {
                assert_eq!(ending, Ending::Complete);
                assert_eq!(frames.len(), 1);
                assert_eq!(frames[0].3, packet);
            } else {
                assert!(frames.is_empty());
                assert!(
                    matches!(ending, Ending::Incomplete { offset, ref why }
                        if offset == start as u64 && why.contains("does not fit")),
                    "{ending:?}"
                );
            }
        }
    }

    fn interface(tsresol: u8, offset_secs: i64) -> Interface {
        Interface {
            linktype: 1,
            units_per_second: units_per_second(tsresol).unwrap(),
            offset_secs,
        }
    }

    #[test]
    fn resolutions() {
        assert_eq!(units_per_second(6), Some(1_000_000));
        assert_eq!(units_per_second(9), Some(1_000_000_000));
        assert_eq!(units_per_second(19), Some(10_000_000_000_000_000_000));
        assert_eq!(units_per_second(20), None);
        assert_eq!(units_per_second(0x80 | 20), Some(1 << 20));
        assert_eq!(units_per_second(0x80 | 63), Some(1 << 63));
        assert_eq!(units_per_second(0x80 | 64), None);
        assert_eq!(units_per_second(0xff), None);
    }

    #[test]
    fn pcapng_times_past_2038() {
        // 2071-03-02T12:00:00.123456789Z
        let secs: u64 = 3_192_523_200;
        let t = |ts, i: &Interface| pcapng_time(ts, i);
        let want = Timestamp {
            secs: secs as i64,
            micros: 123_456,
        };
        assert_eq!(t(secs * 1_000_000_000 + 123_456_789, &interface(9, 0)), want);
        assert_eq!(t(secs * 1_000_000 + 123_456, &interface(6, 0)), want);
        // 2^-20 s units: 0.123456789 s is 129_453.9 units, truncated.
        let ts = (secs << 20) + 129_454;
        assert_eq!(t(ts, &interface(0x80 | 20, 0)), want);
        // if_tsoffset moves whole seconds, also backwards.
        assert_eq!(
            t(123_456, &interface(6, secs as i64)),
            want,
            "offset added to a small count"
        );
        assert_eq!(t(0, &interface(6, -5)).secs, -5);
        // Extremes saturate instead of overflowing.
        assert_eq!(t(u64::MAX, &interface(0, i64::MAX)).secs, i64::MAX);
        assert_eq!(t(u64::MAX, &interface(0x80 | 63, 0)).secs, 1);
    }
}
