//! SIP over WebSocket (RFC 7118): cut the frames (RFC 6455) of a TCP stream
//! that carries a WebSocket connection into SIP messages, one per
//! WebSocket message (RFC 7118 §5: no Content-Length needed).
//!
//! Frames: text and binary, masked (client to server) and unmasked, 7, 16
//! and 64-bit lengths, a message fragmented over continuation frames with
//! control frames (ping, pong, close) between them, frames split across
//! segments and several per segment. A message is published unmasked and,
//! with permessage-deflate (RFC 7692, RSV1 on its first frame), inflated.
//! Control frames are counted (`ws_control_frames`), never published. A
//! message larger than MAX_MESSAGE_BYTES, before or after inflating, is
//! skipped as its bytes arrive and counted (`ws_oversize`).
//!
//! Like the Content-Length framer it keeps positions, not bytes: the
//! frames of an unfinished message stay in the caller's stream buffer
//! until its final frame arrives; then its payloads are unmasked into one
//! message buffer shared by every stream ([`Shared`], sized at start-up).
//! A single unmasked, uncompressed frame is handed on from the stream as
//! it is.
//!
//! permessage-deflate: with context takeover (RFC 7692 §7.1.1) a message
//! may refer to the sender's earlier messages, up to 32 KiB back; each such
//! sender gets one of [`WS_INFLATE_CONTEXTS`] windows, allocated at
//! start-up, for the life of its stream. A sender without context takeover
//! (`server_no_context_takeover`, or `client_no_context_takeover` in the
//! client's offer, as the stream's own handshake says) needs none. Inflating
//! never guesses: a message is inflated against the bytes the window
//! knows, and a reference to anything before them (a stream joined
//! mid-stream, after a hole, no window free) fails the message, which is
//! counted (`ws_inflate_failed`), never published garbled. The window then
//! starts again from the next message that inflates.
//!
//! Resynchronising (a stream joined mid-way, after a hole, after a frame
//! that breaks RFC 6455): a frame boundary is trusted only where a data
//! frame begins whose payload — unmasked with the frame's key and, if
//! compressed, inflated without history — begins with a SIP start line
//! ([`find_sip_frame`]); the bytes before it are skipped and counted
//! (`ws_skipped_bytes`).
//!
//! What it does not do: recognise the HTTP Upgrade (the SIP framer in
//! [`super`] does, then hands the stream here), check that text frames are
//! UTF-8, read close codes, or decode extensions other than
//! permessage-deflate (a frame with RSV2 or RSV3 set is a bad frame). TLS
//! (`wss://`) cannot be read at all.

use crate::buffers::Region;
use crate::counters::Counters;
use crate::split::is_well_known_start;
use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::inflate_flags::{
    TINFL_FLAG_HAS_MORE_INPUT, TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
};
use miniz_oxide::inflate::core::{DecompressorOxide, decompress_with_limit};

/// Decompression windows for permessage-deflate senders with context
/// takeover, allocated at start-up: 32 KiB each (256 KiB in all), plus one
/// shared decompressor (about 11 KiB) and work buffer (32 KiB and
/// MAX_MESSAGE_BYTES). A stream that finds none free inflates each message
/// without its history (`ws_inflate_no_context`).
pub const WS_INFLATE_CONTEXTS: usize = 8;
/// The largest LZ77 window of RFC 7692 (max_window_bits 15).
const WINDOW: usize = 32 * 1024;
/// Payload bytes looked at for a SIP start line when resynchronising: a
/// status line's version and space, or the longest well-known method and
/// its space.
const PEEK: usize = 16;
/// Compressed payload bytes looked at when resynchronising: a dynamic
/// Huffman block's header and the first bytes of a start line fit easily.
const PEEK_COMPRESSED: usize = 512;
/// What RFC 7692 §7.2.2 has the receiver append to a compressed message.
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];
const NONE: u16 = u16::MAX;

const OP_CONTINUATION: u8 = 0;
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;

/// A frame header (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    /// RSV1: with permessage-deflate, the message is compressed.
    compressed: bool,
    opcode: u8,
    key: Option<[u8; 4]>,
    /// Header bytes (2 to 14).
    size: usize,
    /// Payload bytes (below 2^63).
    len: u64,
}

impl Header {
    fn is_control(&self) -> bool {
        self.opcode & 0x08 != 0
    }
}

enum Parsed {
    Frame(Header),
    /// Not all of the header has arrived.
    More,
    /// Not a frame RFC 6455 allows (RSV2/RSV3 set, an unknown opcode, a
    /// fragmented or long control frame, RSV1 on a control or continuation
    /// frame, a 64-bit length with its top bit set).
    Bad,
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn parse_header(bytes: &[u8]) -> Parsed {
    let [b0, b1, ..] = *bytes else {
        return Parsed::More;
    };
    let (fin, rsv, opcode) = (b0 & 0x80 != 0, b0 & 0x70, b0 & 0x0f);
    let (len, at) = match b1 & 0x7f {
        126 => match array::<2>(bytes, 2) {
            Some(n) => (u64::from(u16::from_be_bytes(n)), 4),
            None => return Parsed::More,
        },
        127 => match array::<8>(bytes, 2) {
            Some(n) => (u64::from_be_bytes(n), 10),
            None => return Parsed::More,
        },
        n => (u64::from(n), 2),
    };
    let control = opcode & 0x08 != 0;
    let bad = rsv & 0x30 != 0
        || !matches!(opcode, 0 | 1 | 2 | 8 | 9 | 10)
        || len >> 63 != 0
        || (control && (!fin || len > 125))
        || (rsv != 0 && !matches!(opcode, OP_TEXT | OP_BINARY));
    if bad {
        return Parsed::Bad;
    }
    let key = if b1 & 0x80 != 0 {
        match array::<4>(bytes, at) {
            Some(key) => Some(key),
            None => return Parsed::More,
        }
    } else {
        None
    };
    Parsed::Frame(Header {
        fin,
        compressed: rsv != 0,
        opcode,
        key,
        size: at + if key.is_some() { 4 } else { 0 },
        len,
    })
}

/// `out[i] = payload[i] ^ key[i % 4]` (RFC 6455 §5.3), or a copy.
fn unmask(key: Option<[u8; 4]>, payload: &[u8], out: &mut [u8]) {
    match key {
        Some(key) => {
            for (i, (o, p)) in out.iter_mut().zip(payload).enumerate() {
                *o = p ^ key[i % 4];
            }
        }
        None => out[..payload.len()].copy_from_slice(payload),
    }
}

/// The buffers every WebSocket stream shares, allocated at start-up. The
/// byte buffers are [`Region`]s: a capture without SIP over WebSocket never
/// makes them resident (with musl, `vec![0; n]` would, about 420 KiB:
/// docs/performance.md "Peak memory").
pub struct Shared {
    /// A message's payloads, unmasked and joined: MAX_MESSAGE_BYTES.
    message: Region,
    inflate: Inflate,
}

struct Inflate {
    decompressor: Box<DecompressorOxide>,
    /// A sender's window, then the inflated message: 32 KiB and
    /// MAX_MESSAGE_BYTES.
    work: Region,
    /// WS_INFLATE_CONTEXTS windows of 32 KiB; each holds its known bytes
    /// at its end.
    windows: Region,
    known: Box<[u16]>,
    free: Vec<u16>,
}

/// Why a compressed message was not inflated.
enum Failed {
    Oversize,
    Corrupt,
}

impl Shared {
    /// Buffers for messages of up to `max_message` bytes (a larger limit
    /// given to the framer is cut to this).
    pub fn new(max_message: usize) -> Shared {
        Shared {
            message: Region::new(max_message),
            inflate: Inflate {
                decompressor: Box::default(),
                work: Region::new(WINDOW + max_message),
                windows: Region::new(WS_INFLATE_CONTEXTS * WINDOW),
                known: vec![0; WS_INFLATE_CONTEXTS].into_boxed_slice(),
                free: (0..WS_INFLATE_CONTEXTS as u16).rev().collect(),
            },
        }
    }
}

impl Inflate {
    /// Inflate one message (RFC 7692 §7.2.2) against the known bytes of
    /// `window`, if any, into at most `max_message` bytes; the window then
    /// holds the sender's last 32 KiB, or nothing known after a failure.
    fn message(&mut self, input: &[u8], window: u16, max_message: usize) -> Result<&[u8], Failed> {
        let known = match self.window(window) {
            Some(w) => usize::from(self.known[w]),
            None => 0,
        };
        if let Some(w) = self.window(window) {
            let slot = &self.windows[w * WINDOW..(w + 1) * WINDOW];
            self.work[WINDOW - known..WINDOW].copy_from_slice(&slot[WINDOW - known..]);
        }
        let max_message = max_message.min(self.work.len() - WINDOW);
        let out = &mut self.work[WINDOW - known..WINDOW + max_message];
        let flags = TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF | TINFL_FLAG_HAS_MORE_INPUT;
        self.decompressor.init();
        let mut at = known;
        let mut result = Ok(());
        for part in [input, &TAIL] {
            let (status, read, written) =
                decompress_with_limit(&mut self.decompressor, part, out, at, usize::MAX, flags);
            at += written;
            match status {
                TINFLStatus::NeedsMoreInput if read == part.len() => {}
                // A final block (BFINAL) may end the message early.
                TINFLStatus::Done => break,
                TINFLStatus::HasMoreOutput => {
                    result = Err(Failed::Oversize);
                    break;
                }
                _ => {
                    result = Err(Failed::Corrupt);
                    break;
                }
            }
        }
        let Some(w) = self.window(window) else {
            return result.map(|()| &self.work[WINDOW..WINDOW + at - known]);
        };
        // The window: the last 32 KiB of what it knew and the message.
        let keep = if result.is_ok() { at.min(WINDOW) } else { 0 };
        let start = WINDOW - known + at - keep;
        self.windows[(w + 1) * WINDOW - keep..(w + 1) * WINDOW]
            .copy_from_slice(&self.work[start..start + keep]);
        self.known[w] = keep as u16;
        result.map(|()| &self.work[WINDOW..WINDOW + at - known])
    }

    fn window(&self, window: u16) -> Option<usize> {
        (window != NONE).then_some(usize::from(window))
    }

    /// Whether the start of a compressed payload, inflated without
    /// history, begins with a SIP start line; `None` when `more` bytes of
    /// it may still come and are needed to tell.
    fn starts_sip(&mut self, start: &[u8], more: bool) -> Option<bool> {
        let out = &mut self.work[..PEEK];
        self.decompressor.init();
        let flags = TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF | TINFL_FLAG_HAS_MORE_INPUT;
        let (status, _, written) = decompress_with_limit(&mut self.decompressor, start, out, 0, PEEK, flags);
        if written < PEEK && more && status == TINFLStatus::NeedsMoreInput {
            return None;
        }
        Some(is_well_known_start(&out[..written]))
    }
}

/// Where [`find_sip_frame`] got to.
pub enum Scan {
    /// A data frame whose payload begins with a SIP start line starts here.
    Found(usize),
    /// A frame may start here: more bytes are needed to tell.
    Wait(usize),
    /// None in the bytes looked at.
    None,
}

/// Look in the first `limit` bytes of `bytes` for a data frame whose
/// payload, unmasked and (when compressed) inflated without history,
/// begins with a SIP start line (a status line or a well-known method).
/// Costs a byte comparison for most positions; a candidate waits for at
/// most its header and 16 payload bytes, or 512 when compressed.
pub fn find_sip_frame(bytes: &[u8], limit: usize, max_message: usize, shared: &mut Shared) -> Scan {
    let max_message = max_message.min(shared.message.len());
    for at in 0..bytes.len().min(limit) {
        // FIN or not, RSV1 or not, text or binary.
        if !matches!(bytes[at] & 0xbf, 0x01 | 0x02 | 0x81 | 0x82) {
            continue;
        }
        let rest = &bytes[at..];
        let h = match parse_header(rest) {
            Parsed::Frame(h) => h,
            Parsed::More => return Scan::Wait(at),
            Parsed::Bad => continue,
        };
        if h.len < PEEK as u64 || h.len > max_message as u64 {
            continue;
        }
        let payload = &rest[h.size..];
        let found = if h.compressed {
            let wanted = PEEK_COMPRESSED.min(h.len as usize);
            let start = &payload[..payload.len().min(wanted)];
            let buffer = &mut shared.message[..start.len()];
            unmask(h.key, start, buffer);
            match shared.inflate.starts_sip(buffer, start.len() < wanted) {
                Some(found) => found,
                None => return Scan::Wait(at),
            }
        } else {
            let Some(payload) = payload.get(..PEEK) else {
                return Scan::Wait(at);
            };
            let mut peek = [0; PEEK];
            unmask(h.key, payload, &mut peek);
            is_well_known_start(&peek)
        };
        if found {
            return Scan::Found(at);
        }
    }
    Scan::None
}

/// Where a WebSocket stream is. Positions are offsets in the caller's
/// unconsumed bytes; the message in progress starts at offset 0.
#[derive(Debug, Clone, Copy)]
pub struct Stream {
    /// The next frame header.
    next: usize,
    /// A data message has begun (its frames are before `next`).
    in_message: bool,
    /// Its first frame had RSV1 set.
    compressed: bool,
    /// Its payload bytes so far.
    payload: u64,
    /// Payload bytes of a dropped frame still to discard.
    skip: u64,
    /// The continuation frames of a dropped message are discarded up to
    /// its final frame.
    discard: bool,
    /// Not at a known frame boundary: looking for a SIP frame.
    resync: bool,
    /// The sender may refer to its earlier messages (RFC 7692 context
    /// takeover; assumed when unknown).
    takeover: bool,
    /// Its window, or NONE.
    window: u16,
}

impl Stream {
    /// A stream after its handshake (`resync` false) or found mid-way;
    /// `takeover` as the handshake said (true when unknown).
    pub fn new(takeover: bool, resync: bool) -> Stream {
        Stream {
            next: 0,
            in_message: false,
            compressed: false,
            payload: 0,
            skip: 0,
            discard: false,
            resync,
            takeover,
            window: NONE,
        }
    }

    /// Bytes were lost (a hole, a lost buffer): the message in progress is
    /// gone (the caller drops its bytes), the window no longer knows what
    /// came before, and the next frame boundary must be found again.
    pub fn lost(&mut self, shared: &mut Shared) {
        if let Some(w) = shared.inflate.window(self.window) {
            shared.inflate.known[w] = 0;
        }
        *self = Stream {
            window: self.window,
            ..Stream::new(self.takeover, true)
        };
    }

    /// The stream has ended: its window goes back to the pool.
    pub fn end(&mut self, shared: &mut Shared) {
        if self.window != NONE {
            shared.inflate.free.push(self.window);
            self.window = NONE;
        }
    }

    /// Frame the unconsumed bytes `stream`: each complete message goes to
    /// `on_message` with the offset just past its last frame; returns how
    /// many bytes were consumed.
    pub fn split(
        &mut self,
        stream: &[u8],
        max_message: usize,
        shared: &mut Shared,
        counters: &Counters,
        on_message: &mut dyn FnMut(&[u8], usize),
    ) -> usize {
        // No message larger than the shared buffer.
        let max_message = max_message.min(shared.message.len());
        let mut consumed = 0;
        loop {
            if self.skip > 0 {
                let n = self.skip.min((stream.len() - self.next) as u64);
                self.skip -= n;
                self.next += n as usize;
                consumed = self.next;
                if self.skip > 0 {
                    break;
                }
            }
            if self.resync {
                let rest = &stream[self.next..];
                let skipped = match find_sip_frame(rest, rest.len(), max_message, shared) {
                    Scan::Found(at) => {
                        self.resync = false;
                        at
                    }
                    Scan::Wait(at) => at,
                    Scan::None => rest.len(),
                };
                Counters::add(&counters.ws_skipped_bytes, skipped as u64);
                self.next += skipped;
                consumed = self.next;
                if self.resync {
                    break;
                }
            }
            let rest = &stream[self.next..];
            let h = match parse_header(rest) {
                Parsed::Frame(h) => h,
                Parsed::More => break,
                Parsed::Bad => {
                    self.bad_frame(counters);
                    consumed = self.next;
                    continue;
                }
            };
            if h.is_control() {
                let total = h.size + h.len as usize;
                if rest.len() < total {
                    break;
                }
                Counters::inc(&counters.ws_control_frames);
                self.next += total;
                if !self.in_message {
                    consumed = self.next;
                }
                continue;
            }
            let continuation = h.opcode == OP_CONTINUATION;
            if continuation != (self.in_message || self.discard) {
                // A continuation with no message begun, or a new message
                // inside one.
                self.bad_frame(counters);
                consumed = self.next;
                continue;
            }
            let payload = self.payload.saturating_add(h.len);
            if self.discard || payload > max_message as u64 {
                if !self.discard {
                    Counters::inc(&counters.ws_oversize);
                }
                // Drop the message's frames so far and this one's payload
                // as it arrives.
                self.next += h.size;
                consumed = self.next;
                self.skip = h.len;
                self.discard = !h.fin;
                self.in_message = false;
                self.payload = 0;
                continue;
            }
            let total = h.size + h.len as usize;
            if rest.len() < total {
                break;
            }
            if !self.in_message {
                self.in_message = true;
                self.compressed = h.compressed;
            }
            self.payload = payload;
            self.next += total;
            if h.fin {
                let end = self.next;
                self.deliver(&stream[consumed..end], max_message, shared, counters, &mut |m| {
                    on_message(m, end)
                });
                consumed = self.next;
                self.in_message = false;
                self.payload = 0;
            }
        }
        self.next -= consumed;
        consumed
    }

    /// A frame RFC 6455 does not allow: the message in progress is dropped
    /// and the next frame boundary searched for after its first byte.
    fn bad_frame(&mut self, counters: &Counters) {
        Counters::inc(&counters.ws_bad_frames);
        self.in_message = false;
        self.payload = 0;
        self.discard = false;
        self.resync = true;
        self.next += 1;
        Counters::inc(&counters.ws_skipped_bytes);
    }

    /// One message's frames (data and interleaved control frames, all
    /// complete): its payload, unmasked and inflated, to `on_message`.
    fn deliver(
        &mut self,
        frames: &[u8],
        max_message: usize,
        shared: &mut Shared,
        counters: &Counters,
        on_message: &mut dyn FnMut(&[u8]),
    ) {
        let Shared { message, inflate } = shared;
        let mut len = 0;
        let mut at = 0;
        let mut single = None;
        while let Parsed::Frame(h) = parse_header(&frames[at..]) {
            let end = at + h.size + h.len as usize;
            if !h.is_control() {
                if at == 0 && end == frames.len() && h.key.is_none() {
                    single = Some(&frames[h.size..]);
                    break;
                }
                unmask(h.key, &frames[at + h.size..end], &mut message[len..]);
                len += h.len as usize;
            }
            at = end;
            if at == frames.len() {
                break;
            }
        }
        let payload = single.unwrap_or(&message[..len]);
        if !self.compressed {
            return on_message(payload);
        }
        if self.takeover && self.window == NONE {
            match inflate.free.pop() {
                Some(w) => {
                    inflate.known[usize::from(w)] = 0;
                    self.window = w;
                }
                None => Counters::inc(&counters.ws_inflate_no_context),
            }
        }
        match inflate.message(payload, self.window, max_message) {
            Ok(sip) => on_message(sip),
            Err(Failed::Oversize) => Counters::inc(&counters.ws_oversize),
            Err(Failed::Corrupt) => Counters::inc(&counters.ws_inflate_failed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame: `b0` (FIN, RSV, opcode), masked with `key` if any.
    fn frame(b0: u8, key: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
        let mask = if key.is_some() { 0x80 } else { 0 };
        let mut f = vec![b0];
        match payload.len() {
            n if n < 126 => f.push(mask | n as u8),
            n if n < 65536 => {
                f.push(mask | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(mask | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mut body = payload.to_vec();
        if let Some(k) = key {
            f.extend_from_slice(&k);
            for (i, b) in body.iter_mut().enumerate() {
                *b ^= k[i % 4];
            }
        }
        f.extend_from_slice(&body);
        f
    }

    fn run(stream: &[u8], chunk: usize, takeover: bool) -> (Vec<Vec<u8>>, Counters) {
        let counters = Counters::default();
        let mut shared = Shared::new(100_000);
        let mut ws = Stream::new(takeover, false);
        let mut pending = Vec::new();
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            pending.extend_from_slice(piece);
            let used = ws.split(&pending, 100_000, &mut shared, &counters, &mut |m, _| {
                out.push(m.to_vec())
            });
            pending.drain(..used);
        }
        (out, counters)
    }

    const A: &[u8] = b"OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/WS x\r\n\r\n";
    const B: &[u8] = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/WS x\r\n\r\n";

    #[test]
    fn masked_fragmented_with_ping_byte_by_byte() {
        let key = Some([1, 2, 3, 4]);
        let mut stream = frame(0x81, key, A);
        stream.extend(frame(0x01, key, &B[..5]));
        stream.extend(frame(0x89, key, b"ping"));
        stream.extend(frame(0x00, key, &B[5..10]));
        stream.extend(frame(0x80, key, &B[10..]));
        let big = [A, &[b'x'; 70_000][..]].concat();
        stream.extend(frame(0x82, None, &big));
        for chunk in [1, 7, stream.len()] {
            let (out, counters) = run(&stream, chunk, true);
            assert_eq!(out, [A.to_vec(), B.to_vec(), big.clone()], "in chunks of {chunk}");
            assert_eq!(Counters::get(&counters.ws_control_frames), 1);
        }
    }

    #[test]
    fn oversize_is_skipped() {
        let mut stream = frame(0x82, None, &[b'x'; 200_000]);
        stream.extend(frame(0x81, None, A));
        let (out, counters) = run(&stream, 1000, true);
        assert_eq!(out, [A.to_vec()]);
        assert_eq!(Counters::get(&counters.ws_oversize), 1);
    }

    /// RFC 7692 §7.2.1: each message a sync flush, its final 00 00 ff ff
    /// removed; one compressor for a sender with context takeover.
    fn deflate(compressor: &mut miniz_oxide::deflate::core::CompressorOxide, message: &[u8]) -> Vec<u8> {
        use miniz_oxide::deflate::core::{TDEFLFlush, compress};
        let mut out = vec![0; message.len() + 64];
        let (_, read, written) = compress(compressor, message, &mut out, TDEFLFlush::Sync);
        assert_eq!(read, message.len());
        assert!(out[..written].ends_with(&TAIL));
        out.truncate(written - TAIL.len());
        out
    }

    /// More senders with context takeover than WS_INFLATE_CONTEXTS: the
    /// one without a window inflates what needs no history and counts what
    /// does, never publishing it garbled; a window freed by a stream's end
    /// serves it from its next compressed message on.
    #[test]
    fn contexts_exhausted() {
        use miniz_oxide::deflate::core::CompressorOxide;
        let counters = Counters::default();
        let mut shared = Shared::new(1000);
        let mut streams: Vec<(Stream, CompressorOxide)> = (0..=WS_INFLATE_CONTEXTS)
            .map(|_| (Stream::new(true, false), CompressorOxide::new(32)))
            .collect();
        let send = |stream: &mut (Stream, CompressorOxide), shared: &mut Shared, m: &[u8]| {
            let f = frame(0xc1, Some([1, 2, 3, 4]), &deflate(&mut stream.1, m));
            let mut out = Vec::new();
            stream
                .0
                .split(&f, 1000, shared, &counters, &mut |m, _| out.push(m.to_vec()));
            out
        };
        for (n, stream) in streams.iter_mut().enumerate() {
            assert_eq!(
                send(stream, &mut shared, A),
                [A.to_vec()],
                "stream {n}: needs no history"
            );
            let expected = if n < WS_INFLATE_CONTEXTS {
                vec![A.to_vec()]
            } else {
                vec![]
            };
            assert_eq!(
                send(stream, &mut shared, A),
                expected,
                "stream {n}: refers to the first"
            );
        }
        assert_eq!(Counters::get(&counters.ws_inflate_no_context), 2);
        assert_eq!(Counters::get(&counters.ws_inflate_failed), 1);
        let (first, last) = streams.split_at_mut(WS_INFLATE_CONTEXTS);
        first[0].0.end(&mut shared);
        // Bytes none of its earlier messages hold need no history; the
        // same again refer to them, through the window it has now.
        let fresh = b"0123456789 abcdefghijklmnopqrstuvwxyz";
        assert_eq!(send(&mut last[0], &mut shared, fresh), [fresh.to_vec()]);
        assert_eq!(
            send(&mut last[0], &mut shared, fresh),
            [fresh.to_vec()],
            "with a window now"
        );
        assert_eq!(Counters::get(&counters.ws_inflate_no_context), 2);
        assert_eq!(Counters::get(&counters.ws_inflate_failed), 1);
    }

    #[test]
    fn resync_finds_masked_frame() {
        let mut stream = b"garbage\x81\x05junk".to_vec();
        stream.extend(frame(0x81, Some([9, 8, 7, 6]), A));
        let counters = Counters::default();
        let mut shared = Shared::new(1000);
        let mut ws = Stream::new(true, true);
        let mut out = Vec::new();
        ws.split(&stream, 1000, &mut shared, &counters, &mut |m, _| {
            out.push(m.to_vec())
        });
        assert_eq!(out, [A.to_vec()]);
    }
}
