//! SIP stage over TCP: split a reassembled byte stream into messages.
//!
//! A message is a start line, headers up to the empty line, then
//! Content-Length bytes of body (compact `l:` too). Between messages, CRLF
//! keep-alives (RFC 5626) are skipped; any other line before a start line is
//! junk, discarded and counted — which is also how a stream first seen in
//! the middle, or resuming after a hole, resynchronises at the next start
//! line. Resynchronising, a start line counts only when a header line
//! follows it: a body may hold a line that looks like one (a
//! message/sipfrag body is a bare status line, RFC 3420), and taking it
//! would glue the next message to it as headers.
//!
//! Over a stream, RFC 3261 (18.3) requires Content-Length. A message
//! without one, or with a value that is not a number, cannot be delimited:
//! its start line and headers are discarded and counted
//! (`tcp_no_content_length`), as the original agent's splitter did, and
//! framing goes on after its empty line, resynchronising (its body, of
//! unknown length, may follow).
//!
//! The framer keeps only positions, never bytes: the caller holds the
//! unconsumed bytes and passes them again with more appended. Scanning
//! resumes where it stopped, so a message arriving byte by byte costs
//! linear, not quadratic, time.
//!
//! Two other kinds of stream are recognised here and handed on:
//!
//! - WebSocket (RFC 7118, [`websocket`]): an HTTP/1.1 Upgrade request with
//!   `Sec-WebSocket-Protocol: sip`, or its `101` response, switches the
//!   stream to WebSocket frames after its empty line; the handshake is not
//!   SIP and is counted (`ws_handshakes`), never published. Joined mid-way
//!   (or resynchronising), a data frame whose payload begins with a SIP
//!   start line does the same. Another HTTP message is junk.
//! - TLS (`wss://`, SIP over TLS): a stream whose first bytes are a TLS
//!   record header cannot be read; it is counted (`tls_streams`) and its
//!   bytes discarded. Only the first bytes seen are looked at: TLS joined
//!   mid-record is junk.

pub mod websocket;

use crate::counters::Counters;
use crate::decode::Transport;
use crate::sip::{Message, WELL_KNOWN_METHODS, is_start_line, is_token_char, starts_with_sip_version};
use websocket::{Scan, Shared};

/// A line longer than this without a start line is junk, even unfinished.
const MAX_JUNK_LINE: usize = 4096;
/// Positions parsed for a start line glued to the end of a junk line.
const MAX_RESYNC_TRIES: usize = 16;
/// A header name longer than this (RFC 3261 sets no limit; real ones are
/// under 40 bytes) does not make the line before it a start line.
const MAX_HEADER_NAME: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Between messages: skipping keep-alives and junk lines.
    #[default]
    Start,
    /// After a start line; no empty line in the first `scanned` bytes.
    Headers { scanned: usize },
    /// Headers done; the message is `len` bytes long in all.
    Body { len: usize },
    /// Discarding the rest of a message too large to keep.
    Skip { left: usize },
    /// After an HTTP start line; no empty line in the first `scanned` bytes.
    Http { scanned: usize },
    /// A TLS stream: every byte is discarded.
    Tls,
}

/// Where a stream is in its current message.
#[derive(Debug, Clone, Copy, Default)]
pub struct Framer {
    state: State,
    /// Not at a known message boundary (a stream joined mid-way, or after a
    /// gap): the bytes may be the tail of a body, so only a status line or
    /// a request with a well-known method counts as a start line, which
    /// keeps body bytes from being taken for an extension method.
    resync: bool,
    /// The stream's first bytes were looked at (for TLS).
    started: bool,
    /// The stream carries WebSocket frames from here on.
    ws: Option<websocket::Stream>,
}

impl Framer {
    /// A framer for a stream joined mid-way.
    pub fn resynchronising() -> Framer {
        Framer {
            resync: true,
            ..Framer::default()
        }
    }

    /// Forget any message in progress (after a gap or a lost buffer): the
    /// next bytes are searched for a start line (or, on a WebSocket
    /// stream, a frame boundary).
    pub fn reset(&mut self, shared: &mut Shared) {
        match &mut self.ws {
            Some(ws) => ws.lost(shared),
            None if self.state == State::Tls => {}
            None => *self = Framer::resynchronising(),
        }
    }

    /// The stream has ended: what it holds in `shared` is freed.
    pub fn end(&mut self, shared: &mut Shared) {
        if let Some(ws) = &mut self.ws {
            ws.end(shared);
        }
    }

    /// Frame the unconsumed bytes `stream`, handing each complete message to
    /// `on_message` with its transport (`Tcp`, or `Ws` for a WebSocket
    /// message) and the offset in `stream` just past it; returns how many
    /// bytes were consumed. Messages longer than `max_message` are dropped
    /// and counted.
    pub fn split(
        &mut self,
        stream: &[u8],
        max_message: usize,
        shared: &mut Shared,
        counters: &Counters,
        mut on_message: impl FnMut(Transport, &[u8], usize),
    ) -> usize {
        let mut pos = 0;
        loop {
            if let Some(ws) = &mut self.ws {
                return pos
                    + ws.split(&stream[pos..], max_message, shared, counters, &mut |m, end| {
                        on_message(Transport::Ws, m, pos + end)
                    });
            }
            let rest = &stream[pos..];
            match self.state {
                State::Start => {
                    let keepalive = rest.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
                    pos += keepalive;
                    let rest = &rest[keepalive..];
                    if rest.is_empty() {
                        return pos;
                    }
                    if !self.started {
                        if rest.len() < 3 {
                            return pos;
                        }
                        self.started = true;
                        if is_tls_record(rest) {
                            Counters::inc(&counters.tls_streams);
                            self.state = State::Tls;
                            continue;
                        }
                    }
                    let line_end = memchr::memchr(b'\n', rest);
                    if self.resync {
                        let limit = line_end.map_or(rest.len(), |lf| lf + 1);
                        match websocket::find_sip_frame(rest, limit, max_message, shared) {
                            Scan::Found(at) => {
                                if at > 0 {
                                    Counters::inc(&counters.tcp_junk_lines);
                                }
                                pos += at;
                                // Joined mid-way: whether the sender takes
                                // over its context is unknown.
                                self.ws = Some(websocket::Stream::new(true, false));
                                continue;
                            }
                            // Undecided within an unfinished line: the
                            // line logic would wait for it anyway. Within a
                            // whole line, the line is judged as a line:
                            // SIP text is never held back by a byte that
                            // might start a frame.
                            Scan::Wait(_) if line_end.is_none() => return pos,
                            Scan::Wait(_) | Scan::None => {}
                        }
                    }
                    let Some(lf) = line_end else {
                        if rest.len() > MAX_JUNK_LINE {
                            Counters::inc(&counters.tcp_junk_lines);
                            pos += rest.len();
                        }
                        return pos;
                    };
                    let line = &rest[..lf];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if is_http_start(line) {
                        self.state = State::Http { scanned: lf };
                        continue;
                    }
                    let start = start_line_within(line, self.resync);
                    // Not at a known boundary, a header line must follow.
                    let start = match start {
                        Some(at) if self.resync || at > 0 => match header_follows(&rest[lf + 1..]) {
                            Some(true) => Some(at),
                            Some(false) => None,
                            None => return pos,
                        },
                        start => start,
                    };
                    match start {
                        Some(at) => {
                            if at > 0 {
                                Counters::inc(&counters.tcp_junk_lines);
                            }
                            pos += at;
                            self.resync = false;
                            self.state = State::Headers { scanned: lf - at };
                        }
                        None => {
                            Counters::inc(&counters.tcp_junk_lines);
                            pos += lf + 1;
                        }
                    }
                }
                State::Headers { scanned } => match header_block_len(rest, scanned) {
                    Ok(headers_len) => {
                        let length = content_length(&rest[..headers_len]);
                        match length {
                            None => {
                                Counters::inc(&counters.tcp_no_content_length);
                                pos += headers_len;
                                *self = Framer::resynchronising();
                            }
                            Some(body) => {
                                let len = headers_len.saturating_add(body);
                                self.state = if len > max_message {
                                    Counters::inc(&counters.tcp_oversize);
                                    State::Skip { left: len }
                                } else {
                                    State::Body { len }
                                };
                            }
                        }
                    }
                    Err(scanned) => {
                        if rest.len() > max_message {
                            // No end of headers within the limit: drop what
                            // there is and look for the next start line.
                            Counters::inc(&counters.tcp_oversize);
                            self.state = State::Start;
                            return pos + rest.len();
                        }
                        self.state = State::Headers { scanned };
                        return pos;
                    }
                },
                State::Body { len } => {
                    if rest.len() < len {
                        return pos;
                    }
                    pos += len;
                    on_message(Transport::Tcp, &stream[pos - len..pos], pos);
                    self.state = State::Start;
                }
                State::Http { scanned } => match header_block_len(rest, scanned) {
                    Ok(len) => {
                        self.state = State::Start;
                        pos += len;
                        match sip_upgrade(&rest[..len]) {
                            Some(takeover) => {
                                Counters::inc(&counters.ws_handshakes);
                                self.resync = false;
                                self.ws = Some(websocket::Stream::new(takeover, false));
                            }
                            None => Counters::inc(&counters.tcp_junk_lines),
                        }
                    }
                    Err(scanned) if rest.len() <= max_message => {
                        self.state = State::Http { scanned };
                        return pos;
                    }
                    Err(_) => {
                        Counters::inc(&counters.tcp_junk_lines);
                        self.state = State::Start;
                        return pos + rest.len();
                    }
                },
                State::Tls => return stream.len(),
                State::Skip { left } => {
                    let n = left.min(rest.len());
                    pos += n;
                    if n < left {
                        self.state = State::Skip { left: left - n };
                        return pos;
                    }
                    self.state = State::Start;
                }
            }
        }
    }
}

/// Where a start line begins in `line`: at 0, or after junk glued to it —
/// the end of a body seen mid-stream that did not end in a line break
/// (`...</xml>INVITE sip:x SIP/2.0`, `helloSIP/2.0 200 OK`). Glued, and at 0
/// when resynchronising, only a status line or a well-known method counts.
/// At most [`MAX_RESYNC_TRIES`] positions are parsed, so a hostile line
/// costs bounded work.
fn start_line_within(line: &[u8], resync: bool) -> Option<usize> {
    if is_start_line(line) && (!resync || is_well_known_start(line)) {
        return Some(0);
    }
    (1..line.len())
        .filter(|&at| line[at].is_ascii_uppercase() && is_well_known_start(&line[at..]))
        .take(MAX_RESYNC_TRIES)
        .find(|&at| is_start_line(&line[at..]))
}

/// Whether `next`, the bytes after a start line, begin with a header line:
/// a name (an RFC 3261 token), optional blanks, a colon (§7.3.1). `None`
/// until enough bytes have arrived to tell.
fn header_follows(next: &[u8]) -> Option<bool> {
    let name = next.iter().take_while(|&&b| is_token_char(b)).count();
    let blanks = next[name..]
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    match next.get(name + blanks) {
        Some(b':') => Some(name > 0),
        Some(_) => Some(false),
        None if name + blanks > MAX_HEADER_NAME => Some(false),
        None => None,
    }
}

/// Whether `bytes` begin with a TLS record header (RFC 8446 §5.1): a
/// content type from change_cipher_spec (20) to application_data (23) and
/// a version 3.0 to 3.4. No SIP or HTTP text begins with those bytes.
fn is_tls_record(bytes: &[u8]) -> bool {
    matches!(bytes, [20..=23, 3, 0..=4, ..])
}

/// Whether `line` is an HTTP/1.1 request line of a GET (RFC 6455 §4.1) or
/// an HTTP/1.1 status line.
fn is_http_start(line: &[u8]) -> bool {
    (line.starts_with(b"GET ") && line.ends_with(b" HTTP/1.1")) || line.starts_with(b"HTTP/1.1 ")
}

/// The handshake of SIP over WebSocket (RFC 7118 §4, RFC 6455 §4): a
/// request with `Upgrade: websocket` and `sip` among its
/// `Sec-WebSocket-Protocol` values, or a `101` response that picks `sip`.
/// `Some(takeover)`: the stream carries WebSocket frames after it, and
/// whether their sender may use context takeover (RFC 7692 §7.1.1: a client
/// offering `client_no_context_takeover` promises not to, a server
/// answering `server_no_context_takeover` agrees not to). What the other
/// direction's handshake says about this sender (a server's
/// `client_no_context_takeover`) is not seen here; a window is then kept
/// that was not needed.
fn sip_upgrade(block: &[u8]) -> Option<bool> {
    let mut lines = block
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next()?;
    let request = first.starts_with(b"GET ");
    if !request && !first.starts_with(b"HTTP/1.1 101") {
        return None;
    }
    let (mut upgrade, mut sip, mut takeover) = (false, false, true);
    let no_takeover: &[u8] = if request {
        b"client_no_context_takeover"
    } else {
        b"server_no_context_takeover"
    };
    for line in lines {
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let (name, value) = (line[..colon].trim_ascii(), &line[colon + 1..]);
        let tokens = || value.split(|&b| b == b',' || b == b';').map(<[u8]>::trim_ascii);
        if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade |= tokens().any(|t| t.eq_ignore_ascii_case(b"websocket"));
        } else if name.eq_ignore_ascii_case(b"sec-websocket-protocol") {
            sip |= tokens().any(|t| t.eq_ignore_ascii_case(b"sip"));
        } else if name.eq_ignore_ascii_case(b"sec-websocket-extensions") {
            takeover &= !tokens().any(|t| t.eq_ignore_ascii_case(no_takeover));
        }
    }
    (upgrade && sip).then_some(takeover)
}

/// Whether `line` begins like a status line or a request with a method of
/// [`WELL_KNOWN_METHODS`].
pub(crate) fn is_well_known_start(line: &[u8]) -> bool {
    (starts_with_sip_version(line) && line.get(7) == Some(&b' '))
        || WELL_KNOWN_METHODS
            .iter()
            .any(|m| line.starts_with(m) && line.get(m.len()) == Some(&b' '))
}

/// The length of the start line and headers including the empty line, or
/// `Err(where to resume scanning)` when the empty line has not arrived.
fn header_block_len(bytes: &[u8], scanned: usize) -> Result<usize, usize> {
    let mut at = scanned.min(bytes.len());
    while let Some(lf) = memchr::memchr(b'\n', &bytes[at..]) {
        let lf = at + lf;
        match &bytes[lf + 1..] {
            [b'\n', ..] => return Ok(lf + 2),
            [b'\r', b'\n', ..] => return Ok(lf + 3),
            [] | [b'\r'] => return Err(lf),
            _ => at = lf + 1,
        }
    }
    Err(bytes.len())
}

/// The Content-Length of a header block that starts with a start line.
fn content_length(block: &[u8]) -> Option<usize> {
    Message::parse(block)?.content_length()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let counters = Counters::default();
        let mut shared = Shared::new(65_535);
        let mut framer = Framer::default();
        let mut pending = Vec::new();
        let mut out = Vec::new();
        for chunk in chunks {
            pending.extend_from_slice(chunk);
            let used = framer.split(&pending, 65_535, &mut shared, &counters, |_, m, _| {
                out.push(m.to_vec())
            });
            pending.drain(..used);
        }
        out
    }

    const A: &[u8] = b"OPTIONS sip:a SIP/2.0\r\nl: 2\r\n\r\nhi";
    const B: &[u8] = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn byte_by_byte() {
        let stream = [A, b"\r\n\r\n", B].concat();
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(split_all(&chunks), [A.to_vec(), B.to_vec()]);
    }

    #[test]
    fn junk_and_mid_stream_start() {
        let stream = [&b"ength: 5\r\n\r\nhello"[..], B, b"garbage\r\n", A, b"</x>", A].concat();
        assert_eq!(split_all(&[&stream]), [B.to_vec(), A.to_vec(), A.to_vec()]);
    }

    /// Resynchronising, a bare status line (a message/sipfrag body) is not a
    /// start line: the request after it comes out alone.
    #[test]
    fn sipfrag_body_is_not_a_start_line() {
        let invite = b"INVITE sip:b SIP/2.0\r\nl: 0\r\n\r\n";
        let stream = [&b"SIP/2.0 200 OK\r\n"[..], invite].concat();
        let counters = Counters::default();
        for chunk in [stream.len(), 1] {
            let mut framer = Framer::resynchronising();
            let mut pending = Vec::new();
            let mut out = Vec::new();
            for piece in stream.chunks(chunk) {
                pending.extend_from_slice(piece);
                let used = framer.split(&pending, 65_535, &mut Shared::new(100), &counters, |_, m, end| {
                    out.push((m.to_vec(), end))
                });
                pending.drain(..used);
            }
            assert_eq!(out.len(), 1, "in chunks of {chunk}");
            assert_eq!(out[0].0, invite);
        }
        // At a known boundary, a start line needs nothing after it yet.
        assert_eq!(split_all(&[B]), [B.to_vec()]);
    }

    #[test]
    fn oversize_is_skipped() {
        let counters = Counters::default();
        let mut framer = Framer::default();
        let big = b"INVITE sip:x SIP/2.0\r\nContent-Length: 100\r\n\r\n";
        let mut stream = big.to_vec();
        stream.extend_from_slice(&[b'x'; 100]);
        stream.extend_from_slice(B);
        let mut out = Vec::new();
        let used = framer.split(&stream, 64, &mut Shared::new(64), &counters, |_, m, _| {
            out.push(m.to_vec())
        });
        assert_eq!(used, stream.len());
        assert_eq!(out, [B.to_vec()]);
    }
}
