//! SIP stage: recognise a SIP message by its content and view its parts.
//!
//! [`Message`] is a zero-copy view over the captured bytes: the start line
//! (request method and URI, or response status), the headers in order, and
//! the body. Nothing here copies or alters the bytes; the envelope publishes
//! exactly the slice that was parsed.
//!
//! What it does not do: validate the grammar of RFC 3261 beyond the start
//! line. A sensor must publish what it saw, including malformed messages
//! (RFC 4475 torture messages are published as they are); consumers judge
//! validity. Lines may end in CRLF or a bare LF, as real stacks emit both.

/// The first line of a SIP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine<'a> {
    /// `METHOD SP Request-URI SP SIP/2.0`; the method is any RFC 3261 token.
    Request { method: &'a [u8], uri: &'a [u8] },
    /// `SIP/2.0 SP 3DIGIT SP reason`.
    Response { code: u16, reason: &'a [u8] },
}

/// A SIP message: its raw bytes and the positions of its parts.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    raw: &'a [u8],
    start: StartLine<'a>,
    /// Everything after the start line. Where the headers end is found
    /// only when asked: publishing a message needs just its start line.
    rest: &'a [u8],
}

/// One header field as it appears in the message. `value` is the raw value
/// with surrounding whitespace trimmed; a folded value keeps its CRLF and
/// leading whitespace, since the bytes are never rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
}

const SIP_VERSION: &[u8] = b"SIP/2.0";

/// The methods of RFC 3261 and its common extensions (PRACK, SUBSCRIBE,
/// NOTIFY, PUBLISH, INFO, REFER, MESSAGE, UPDATE). Any token is a method;
/// these are the ones trusted when resynchronising a TCP stream.
pub const WELL_KNOWN_METHODS: &[&[u8]] = &[
    b"INVITE",
    b"ACK",
    b"BYE",
    b"CANCEL",
    b"OPTIONS",
    b"REGISTER",
    b"PRACK",
    b"SUBSCRIBE",
    b"NOTIFY",
    b"PUBLISH",
    b"INFO",
    b"REFER",
    b"MESSAGE",
    b"UPDATE",
];

/// RFC 3261 compact header forms (section 7.3.3 and the extensions that
/// registered one), as (compact letter, long name).
const COMPACT_FORMS: &[(u8, &[u8])] = &[
    (b'a', b"Accept-Contact"),
    (b'b', b"Referred-By"),
    (b'c', b"Content-Type"),
    (b'd', b"Request-Disposition"),
    (b'e', b"Content-Encoding"),
    (b'f', b"From"),
    (b'i', b"Call-ID"),
    (b'j', b"Reject-Contact"),
    (b'k', b"Supported"),
    (b'l', b"Content-Length"),
    (b'm', b"Contact"),
    (b'n', b"Identity-Info"),
    (b'o', b"Event"),
    (b'r', b"Refer-To"),
    (b's', b"Subject"),
    (b't', b"To"),
    (b'u', b"Allow-Events"),
    (b'v', b"Via"),
    (b'x', b"Session-Expires"),
    (b'y', b"Identity"),
];

/// The long form of a header name: a compact letter maps to its long name,
/// any other name is returned as it is.
pub fn long_header_name(name: &[u8]) -> &[u8] {
    if let [letter] = name {
        let letter = letter.to_ascii_lowercase();
        if let Some((_, long)) = COMPACT_FORMS.iter().find(|(c, _)| *c == letter) {
            return long;
        }
    }
    name
}

/// Whether two header names denote the same header: case-insensitive, and a
/// compact form equals its long name (`t` is `To`, `i` is `Call-ID`).
pub fn same_header(a: &[u8], b: &[u8]) -> bool {
    long_header_name(a).eq_ignore_ascii_case(long_header_name(b))
}

impl<'a> Message<'a> {
    /// Recognise `raw` as one SIP message by its start line. Returns `None`
    /// when the first line is neither a request line nor a status line.
    pub fn parse(raw: &'a [u8]) -> Option<Message<'a>> {
        let (first, rest) = split_line(raw);
        let start = parse_start_line(first)?;
        Some(Message { raw, start, rest })
    }

    /// Recognise one SIP message at the start of a UDP datagram (or any
    /// message-oriented transport's payload), and where it ends.
    ///
    /// RFC 3261 §18.3: when the message has a Content-Length, its body is
    /// that many bytes and any bytes after it in the datagram are not part
    /// of the message (NUL or CRLF padding, junk, a second message a device
    /// packed in). Returns the message and how many bytes followed it. The
    /// whole payload is the message when there is no Content-Length, when
    /// its value is not a number, or when it claims more than the datagram
    /// holds (a malformed message is published as it was seen).
    pub fn parse_datagram(payload: &'a [u8]) -> Option<(Message<'a>, usize)> {
        let whole = Message::parse(payload)?;
        let (Some(length), Some(body_at)) = scan_headers(whole.rest) else {
            return Some((whole, 0));
        };
        let Some(trailing) = (whole.rest.len() - body_at).checked_sub(length) else {
            return Some((whole, 0));
        };
        let message = Message {
            raw: &payload[..payload.len() - trailing],
            start: whole.start,
            rest: &whole.rest[..whole.rest.len() - trailing],
        };
        Some((message, trailing))
    }

    /// The value of the first Content-Length header (or its compact form
    /// `l`), when it is a decimal number of at most 9 digits (RFC 3261
    /// §20.14; longer values could not be a message this agent keeps).
    pub fn content_length(&self) -> Option<usize> {
        scan_headers(self.rest).0
    }

    /// The bytes the message was parsed from, unaltered.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    pub fn start_line(&self) -> StartLine<'a> {
        self.start
    }

    /// The first line of the message, without its line ending.
    pub fn first_line(&self) -> &'a [u8] {
        split_line(self.raw).0
    }

    /// The body: everything after the empty line that ends the headers
    /// (empty when there is no such line, as in a message cut short).
    pub fn body(&self) -> &'a [u8] {
        split_header_block(self.rest).1
    }

    /// The headers in the order they appear.
    pub fn headers(&self) -> Headers<'a> {
        Headers { rest: self.rest }
    }

    /// The values of every instance of header `name` (long or compact form,
    /// any case), in order.
    pub fn header_values<'n>(&self, name: &'n [u8]) -> impl Iterator<Item = &'a [u8]> + 'n
    where
        'a: 'n,
    {
        self.headers()
            .filter(move |h| same_header(h.name, name))
            .map(|h| h.value)
    }
}

/// Iterator over the header fields of a message. Continuation lines (those
/// starting with a space or tab) belong to the header above them.
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Headers<'a> {
    type Item = Header<'a>;

    fn next(&mut self) -> Option<Header<'a>> {
        loop {
            // The empty line (or the end) ends the headers.
            if matches!(self.rest, [] | [b'\n', ..] | [b'\r', b'\n', ..] | [b'\r']) {
                self.rest = &[];
                return None;
            }
            let field_len = field_length(self.rest);
            let field = &self.rest[..field_len];
            self.rest = &self.rest[field_len..];
            // A line without a colon is not a header; skip it rather than
            // stop, so one bad line does not hide the headers after it.
            if let Some(colon) = memchr::memchr(b':', field) {
                return Some(Header {
                    name: trim(&field[..colon]),
                    value: trim(&field[colon + 1..]),
                });
            }
        }
    }
}

/// Length of the header field at the start of `block`, including its line
/// ending and any continuation lines.
fn field_length(block: &[u8]) -> usize {
    let mut end = 0;
    loop {
        end += line_length(&block[end..]);
        match block.get(end) {
            Some(b' ' | b'\t') => continue,
            _ => return end,
        }
    }
}

/// Length of the line at the start of `bytes`, including its LF (or the
/// whole slice when there is no LF).
fn line_length(bytes: &[u8]) -> usize {
    memchr::memchr(b'\n', bytes).map_or(bytes.len(), |lf| lf + 1)
}

/// One pass over the header lines in `rest` (what follows the start line),
/// as UDP framing needs on every datagram: the value of the first
/// Content-Length or `l` header if it is a number of at most 9 digits, and
/// where the body starts (`None` when no empty line ends the headers).
/// A folded Content-Length value is not a number.
///
/// Lines end at LF (a CR before it is part of the line ending); only a line
/// starting with `C`, `c`, `L` or `l` is looked at further, so the scan
/// costs one vectorised search per line (the in-process cost of every UDP
/// message, docs/performance.md).
fn scan_headers(rest: &[u8]) -> (Option<usize>, Option<usize>) {
    let mut length = None;
    let mut seen_length = false;
    let mut at = 0;
    // Where each line ends: after each LF, and at the end of `rest` for a
    // last line without one.
    let mut ends = memchr::memchr_iter(b'\n', rest)
        .map(|lf| lf + 1)
        .chain(core::iter::once(rest.len()));
    while at < rest.len() {
        let Some(end) = ends.next() else { break };
        let line = &rest[at..end];
        at = end;
        match line {
            [b'\n'] | [b'\r'] | [b'\r', b'\n'] => return (length, Some(at)),
            [b'C' | b'c' | b'L' | b'l', ..] if !seen_length => {
                if let Some(value) = content_length_value(strip_line_ending(line)) {
                    seen_length = true;
                    length = (!value.is_empty() && value.len() <= 9 && value.iter().all(u8::is_ascii_digit))
                        .then(|| value.iter().fold(0, |n, d| n * 10 + usize::from(d - b'0')));
                }
            }
            _ => {}
        }
    }
    (length, None)
}

/// The trimmed value of `line` when it is a Content-Length header, long or
/// compact form (`l`), any case, with optional whitespace before the colon.
fn content_length_value(line: &[u8]) -> Option<&[u8]> {
    const LONG: &[u8] = b"Content-Length";
    let name_len = match line {
        [b'l' | b'L', ..] => 1,
        _ if line.len() > LONG.len() && line[..LONG.len()].eq_ignore_ascii_case(LONG) => LONG.len(),
        _ => return None,
    };
    let after_name = &line[name_len..];
    let colon = after_name.iter().position(|b| !b.is_ascii_whitespace())?;
    (after_name[colon] == b':').then(|| after_name[colon + 1..].trim_ascii())
}

/// Split off the first line: (line without CR/LF, rest after the LF).
fn split_line(bytes: &[u8]) -> (&[u8], &[u8]) {
    let len = line_length(bytes);
    let (line, rest) = bytes.split_at(len);
    (strip_line_ending(line), rest)
}

fn strip_line_ending(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Split what follows the start line into (header block, body) at the first
/// empty line. Without an empty line everything is headers and the body is
/// empty (a message cut short).
fn split_header_block(rest: &[u8]) -> (&[u8], &[u8]) {
    let mut pos = 0;
    while pos < rest.len() {
        let len = line_length(&rest[pos..]);
        if strip_line_ending(&rest[pos..pos + len]).is_empty() {
            return (&rest[..pos], &rest[pos + len..]);
        }
        pos += len;
    }
    (rest, &[])
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Whether `line` (without line ending) is a SIP request or status line.
pub fn is_start_line(line: &[u8]) -> bool {
    parse_start_line(line).is_some()
}

/// The SIP-Version at the start of a status line, in any case (RFC 3261
/// §7.1: `sip/2.0 200 OK` is a status line too).
pub fn starts_with_sip_version(line: &[u8]) -> bool {
    line.get(..SIP_VERSION.len())
        .is_some_and(|v| v.eq_ignore_ascii_case(SIP_VERSION))
}

fn parse_start_line(line: &[u8]) -> Option<StartLine<'_>> {
    if starts_with_sip_version(line) {
        return parse_status(&line[SIP_VERSION.len()..]);
    }
    let sp = line.iter().position(|&b| b == b' ')?;
    let (method, rest) = (&line[..sp], &line[sp + 1..]);
    if method.is_empty() || !method.iter().all(|&b| is_token_char(b)) {
        return None;
    }
    // Lenient about the URI (the original published `INVITE foo@bar
    // SIP/2.0`): anything up to the last space, as long as the line ends in
    // the SIP version.
    let last_sp = rest.iter().rposition(|&b| b == b' ')?;
    let (uri, version) = (&rest[..last_sp], &rest[last_sp + 1..]);
    if uri.is_empty() || !version.eq_ignore_ascii_case(SIP_VERSION) {
        return None;
    }
    Some(StartLine::Request { method, uri })
}

/// Parse `SP 3DIGIT [SP reason]` after the version of a status line.
fn parse_status(after_version: &[u8]) -> Option<StartLine<'_>> {
    let rest = after_version.strip_prefix(b" ")?;
    let digits = rest.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = digits.iter().fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    let reason = match &rest[3..] {
        [] => &[][..],
        [b' ', reason @ ..] => reason,
        _ => return None,
    };
    Some(StartLine::Response { code, reason })
}

/// RFC 3261 `token` characters: alphanumerics and `-.!%*_+`'~`.
pub fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n\
v: SIP/2.0/UDP b.example.com;branch=z9hG4bK2\r\n\
t: <sip:bob@example.com>\r\n\
Subject: a folded\r\n  subject line\r\n\
Content-Length: 4\r\n\
\r\n\
body";

    #[test]
    fn request_parts() {
        let m = Message::parse(INVITE).unwrap();
        assert_eq!(
            m.start_line(),
            StartLine::Request {
                method: b"INVITE",
                uri: b"sip:bob@example.com"
            }
        );
        assert_eq!(m.body(), b"body");
        assert_eq!(m.raw(), INVITE);
        assert_eq!(m.first_line(), b"INVITE sip:bob@example.com SIP/2.0");
        assert_eq!(m.headers().count(), 5);
    }

    #[test]
    fn compact_and_long_forms_are_one_header() {
        let m = Message::parse(INVITE).unwrap();
        let vias: Vec<_> = m.header_values(b"VIA").collect();
        assert_eq!(vias.len(), 2);
        assert_eq!(m.header_values(b"to").count(), 1);
        assert_eq!(m.header_values(b"T").count(), 1);
        assert!(same_header(b"i", b"call-id"));
        assert!(!same_header(b"i", b"to"));
    }

    #[test]
    fn folded_value_is_one_header() {
        let m = Message::parse(INVITE).unwrap();
        let subject: Vec<_> = m.header_values(b"s").collect();
        assert_eq!(subject, [&b"a folded\r\n  subject line"[..]]);
    }

    #[test]
    fn status_lines() {
        let m = Message::parse(b"SIP/2.0 180 Ringing\r\n\r\n").unwrap();
        assert_eq!(
            m.start_line(),
            StartLine::Response {
                code: 180,
                reason: b"Ringing"
            }
        );
        assert!(is_start_line(b"SIP/2.0 100 "));
        assert!(is_start_line(b"SIP/2.0 100"));
        assert!(!is_start_line(b"SIP/2.0 1000 Trying"));
        assert!(!is_start_line(b"SIP/2.0 abc Trying"));
        assert!(is_start_line(b"sip/2.0 200 OK"));
        assert!(is_start_line(b"Sip/2.0 486 Busy Here"));
    }

    #[test]
    fn the_first_content_length_counts() {
        let length = |headers: &str| {
            let raw = format!("OPTIONS sip:x SIP/2.0\r\n{headers}\r\n");
            Message::parse(raw.as_bytes()).unwrap().content_length()
        };
        assert_eq!(length("Content-Length: 12\r\n"), Some(12));
        assert_eq!(length("l:3\r\nContent-Length: 4\r\n"), Some(3));
        assert_eq!(length("CONTENT-LENGTH : 5\r\n"), Some(5));
        assert_eq!(length("Content-Length: x\r\nContent-Length: 4\r\n"), None);
        assert_eq!(length("Content-Length: -1\r\n"), None);
        assert_eq!(length("Content-Length: 1234567890\r\n"), None);
        assert_eq!(length("Content-Length:\r\n 5\r\n"), None);
        assert_eq!(length("Call-ID: l: 3\r\n"), None);
        assert_eq!(length(""), None);
    }

    #[test]
    fn a_datagram_ends_at_its_content_length() {
        let padded = [INVITE, b"\0\0\0\r\n"].concat();
        let (m, trailing) = Message::parse_datagram(&padded).unwrap();
        assert_eq!((m.raw(), trailing), (INVITE, 5));
        assert_eq!(m.body(), b"body");
        // More claimed than there is, or no length: the whole datagram.
        let short = &INVITE[..INVITE.len() - 1];
        assert_eq!(Message::parse_datagram(short).unwrap().0.raw(), short);
        let none = b"OPTIONS sip:x SIP/2.0\r\n\r\nxyz";
        let (m, trailing) = Message::parse_datagram(none).unwrap();
        assert_eq!((m.raw(), trailing), (&none[..], 0));
    }

    #[test]
    fn lenient_request_lines() {
        assert!(is_start_line(b"INVITE foo@bar SIP/2.0"));
        assert!(is_start_line(b"NEWMETHOD sip:x SIP/2.0"));
        assert!(!is_start_line(b"INVITE sip:x SIP/3.0"));
        assert!(!is_start_line(b"INVITE SIP/2.0"));
        assert!(!is_start_line(b"IN VITE sip:x HTTP/1.1"));
        assert!(!is_start_line(b"GET / HTTP/1.1"));
        assert!(!is_start_line(b""));
    }

    #[test]
    fn message_without_blank_line_has_no_body() {
        let m = Message::parse(b"OPTIONS sip:x SIP/2.0\nVia: a\n").unwrap();
        assert_eq!(m.headers().count(), 1);
        assert_eq!(m.body(), b"");
    }
}
