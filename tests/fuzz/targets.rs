//! The fuzz targets' bodies, shared by the cargo-fuzz binaries in
//! `fuzz_targets/` and by `tests/fuzz_corpora.rs`, which replays the
//! committed corpora on stable Rust so that every input found once stays
//! fixed.

use sip_capture::capture::Frame;
use sip_capture::config::ReassemblyLimits;
use sip_capture::counters::Counters;
use sip_capture::decode::{
    self, Context, Decoded, LinkType, Sctp, SctpPacket, Segment, TcpHeader, Transport, UdpTunnels,
};
use sip_capture::envelope::{Origin, Timestamp};
use sip_capture::filter::Filter;
use sip_capture::pipeline::Extractor;
use sip_capture::sctp::SctpReassembler;
use sip_capture::sip::Message;
use sip_capture::split::Framer;
use sip_capture::split::websocket::Shared;
use sip_capture::tcp::TcpReassembler;

const LINK_TYPES: [i32; 6] = [0, 1, 101, 113, 276, 229];

/// The packet decoder and the tunnels it peels, through the extractor:
/// the first byte picks the link type, the rest is a frame, taken twice
/// so that a frame can complete its own datagram, outer or inner (a small
/// defragmenter and stream table).
pub fn decode_frame(data: &[u8]) {
    let Some((&pick, frame)) = data.split_first() else {
        return;
    };
    let counters = Counters::default();
    let limits = ReassemblyLimits {
        frag_datagrams: 4,
        frag_buffer_bytes: 8192,
        frag_timeout_ms: 1000,
        tcp_flows: 2,
        tcp_buffers: 2,
        tcp_buffer_bytes: 2048,
        tcp_hole_max_bytes: 1024,
        ..ReassemblyLimits::defaults()
    };
    let mut extractor = Extractor::new(&limits, 2048, &UdpTunnels::default(), &counters);
    let frame = Frame {
        time: Timestamp { secs: 1, micros: 0 },
        interface: 0,
        linktype: LINK_TYPES[usize::from(pick) % LINK_TYPES.len()],
        data: frame,
    };
    let mut ignore = |_: &Origin, _: &Message<'_>| {};
    for _ in 0..2 {
        extractor.extract(&frame, &mut ignore);
    }
    extractor.finish(&mut ignore);
}

/// The TCP reassembler and SIP framer: the input is a sequence of segments,
/// each `[flags, seq_hi, seq_lo, len]` then `len` payload bytes, on two
/// streams; flags bit 0 SYN, 1 FIN, 2 RST, 7 the direction, bits 3-5 how
/// far capture time moves before the segment (0 ms to 60 s: holes' waits
/// and idle expiry), bit 6 an idle tick before it. The end of the input is
/// the end of the capture. Every message that comes out must parse as SIP
/// and carry the capture time of a segment of its own stream.
pub fn tcp_stream(data: &[u8]) {
    const STEP_MS: [i64; 8] = [0, 1, 2, 5, 100, 500, 1000, 60_000];
    let counters = Counters::default();
    let limits = ReassemblyLimits {
        tcp_flows: 2,
        tcp_buffers: 2,
        tcp_buffer_bytes: 2048,
        tcp_idle_s: 10,
        tcp_hole_wait_ms: 1000,
        tcp_hole_max_bytes: 1024,
        ..ReassemblyLimits::defaults()
    };
    let mut tcp = TcpReassembler::new(&limits, 2048);
    let (a, b) = ("10.0.0.1:5060".parse().unwrap(), "10.0.0.2:5060".parse().unwrap());
    // The capture times of each direction's segments with data.
    let mut times: [Vec<Timestamp>; 2] = [Vec::new(), Vec::new()];
    let check = |times: &[Vec<Timestamp>; 2], origin: &Origin, message: &[u8]| {
        assert!(
            Message::parse(message).is_some(),
            "framed bytes are not a SIP message"
        );
        let direction = usize::from(origin.src != a);
        assert_eq!(
            (origin.src, origin.dst),
            if direction == 0 { (a, b) } else { (b, a) }
        );
        assert!(
            times[direction].contains(&origin.time),
            "{:?} is no segment's time",
            origin.time
        );
    };
    let mut ms = 0i64;
    let mut rest = data;
    while let [flags, hi, lo, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        ms += STEP_MS[usize::from(flags >> 3 & 7)];
        let now = Timestamp {
            secs: 1 + ms / 1000,
            micros: (ms % 1000) as u32 * 1000,
        };
        if flags & 0x40 != 0 {
            tcp.advance(now, &counters, &mut |o, m| check(&times, o, m));
        }
        let direction = usize::from(flags & 0x80 != 0);
        let (src, dst) = if direction == 0 { (a, b) } else { (b, a) };
        let header = TcpHeader {
            seq: u32::from(u16::from_be_bytes([*hi, *lo])),
            syn: flags & 1 != 0,
            fin: flags & 2 != 0,
            rst: flags & 4 != 0,
        };
        let segment = Segment {
            context: Context::default(),
            src,
            dst,
            payload,
            tcp: Some(header),
        };
        if !payload.is_empty() {
            times[direction].push(now);
        }
        tcp.add(now, &segment, header, &counters, &mut |o, m| check(&times, o, m));
    }
    tcp.finish(&counters, &mut |o, m| check(&times, o, m));
    // The framer alone, fed the raw input in two pieces.
    let mut framer = Framer::default();
    let mut shared = Shared::new(4096);
    let cut = data.len() / 2;
    let used = framer.split(&data[..cut], 4096, &mut shared, &counters, |_, _, _| {});
    let mut pending = data[used..cut].to_vec();
    pending.extend_from_slice(&data[cut..]);
    let _ = framer.split(&pending, 4096, &mut shared, &counters, |_, _, _| {});
}

/// The WebSocket framer, and the SIP framer's recognition of WebSocket
/// streams: `[mode, step]`, then the stream's bytes. Mode bit 0 puts an
/// HTTP Upgrade for SIP first (bit 1 with permessage-deflate, bit 2 with
/// client_no_context_takeover); without it the stream is joined mid-way.
/// The bytes go in pieces of `step % 64 + 1`, kept as a TCP stream buffer
/// keeps them (at most 2048 unconsumed, then dropped as an oversize line);
/// with mode bit 7, every fifth piece is lost (a hole: the framer is
/// reset). Messages: at most MAX bytes; over plain TCP, SIP.
pub fn ws_stream(data: &[u8]) {
    const MAX: usize = 1024;
    const BUFFER: usize = 2048;
    let [mode, step, stream @ ..] = data else {
        return;
    };
    let counters = Counters::default();
    let mut shared = Shared::new(MAX);
    let mut framer = Framer::default();
    let mut pending = Vec::new();
    if mode & 1 != 0 {
        let extensions: &[u8] = match mode >> 1 & 3 {
            0 => b"",
            1 => b"Sec-WebSocket-Extensions: permessage-deflate\r\n",
            _ => b"Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n",
        };
        pending.extend_from_slice(
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: sip\r\n",
        );
        pending.extend_from_slice(extensions);
        pending.extend_from_slice(b"\r\n");
    } else {
        framer = Framer::resynchronising();
    }
    for (n, piece) in stream.chunks(usize::from(step % 64) + 1).enumerate() {
        if mode & 0x80 != 0 && n % 5 == 4 {
            framer.reset(&mut shared);
            pending.clear();
            continue;
        }
        pending.extend_from_slice(piece);
        let used = framer.split(&pending, MAX, &mut shared, &counters, |transport, m, end| {
            assert!(m.len() <= MAX, "a message over the limit");
            assert!(end <= BUFFER + 64, "past the bytes given");
            if transport == Transport::Tcp {
                assert!(Message::parse(m).is_some(), "framed bytes are not a SIP message");
            }
        });
        pending.drain(..used);
        if pending.len() > BUFFER {
            framer.reset(&mut shared);
            pending.clear();
        }
    }
    framer.end(&mut shared);
}

/// The SCTP chunk reassembler: the input is a sequence of SCTP packets,
/// each `[meta, len_hi, len_lo]` then `len` bytes; meta bits 0-1 pick one
/// of four associations' addresses and places (two share addresses on
/// different VLANs), bit 2 puts a common header with Verification Tag
/// bits 3-4 before the bytes (which are then only chunks), bits 5-7 how far
/// capture time moves. Two associations, two buffers of 1 KiB, messages of
/// 512 bytes at most, so eviction, oversize and duplicates are reached.
/// Every message that comes out is non-empty, at most 512 bytes, from its
/// packet's addresses; at the end every DATA chunk is accounted for.
pub fn sctp_chunks(data: &[u8]) {
    let counters = Counters::default();
    let limits = ReassemblyLimits {
        sctp_associations: 2,
        sctp_buffers: 2,
        sctp_buffer_bytes: 1024,
        ..ReassemblyLimits::defaults()
    };
    let mut sctp = SctpReassembler::new(&limits, 512);
    let (a, b) = ("10.0.0.1:5060".parse().unwrap(), "10.0.0.2:5060".parse().unwrap());
    let vlan = |id: u8| {
        // A frame tagged `id` gives the context decode would.
        let frame = [
            &[2u8; 12][..],
            &[0x81, 0, 0, id, 0x08, 0x00],
            &[0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2],
        ]
        .concat();
        match decode::decode(LinkType::Ethernet, 0, &frame, &UdpTunnels::default()) {
            Ok(Decoded::Segment(s)) => s.context,
            _ => Context::default(),
        }
    };
    let places = [
        (a, b, vlan(10)),
        (b, a, vlan(10)),
        (a, b, vlan(20)),
        (a, b, Context::default()),
    ];
    let mut ms = 0i64;
    let mut rest = data;
    let mut packet = Vec::new();
    while let [meta, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        ms += [0, 1, 10, 100, 1000, 2000, 30_000, 600_000][usize::from(meta >> 5)];
        let now = Timestamp {
            secs: 1 + ms / 1000,
            micros: (ms % 1000) as u32 * 1000,
        };
        packet.clear();
        if meta & 4 != 0 {
            packet.extend_from_slice(&[0x13, 0xc4, 0x13, 0xc4, 0, 0, 0, meta >> 3 & 3, 0, 0, 0, 0]);
        }
        packet.extend_from_slice(bytes);
        let Ok(view) = SctpPacket::new_checked(&packet) else {
            continue;
        };
        let (src, dst, context) = places[usize::from(meta & 3)];
        let p = Sctp {
            context,
            src,
            dst,
            packet: view,
        };
        sctp.add(now, &p, &counters, &mut |origin, message| {
            assert_eq!(origin.transport, Transport::Sctp);
            assert_eq!((origin.src, origin.dst, origin.time), (src, dst, now));
            assert!(
                !message.is_empty() && message.len() <= 512,
                "{} bytes",
                message.len()
            );
        });
    }
    sctp.finish(&counters);
    let c = &counters;
    let fates = [
        &c.sctp_duplicates,
        &c.sctp_chunks_joined,
        &c.sctp_chunks_evicted,
        &c.sctp_chunks_expired,
        &c.sctp_chunks_invalid,
        &c.sctp_oversize,
    ];
    assert_eq!(
        Counters::get(&c.sctp_data_chunks),
        fates.iter().map(|f| Counters::get(f)).sum::<u64>(),
        "a DATA chunk was lost without a counter"
    );
}

/// The SIP parser and every filter function on one message.
pub fn sip_message(data: &[u8]) {
    // A static, never dropped: the filter's DFAs live in memory kept for
    // the whole program (as in the agent), which a leak checker would
    // otherwise report at exit.
    static FILTER: std::sync::OnceLock<Filter> = std::sync::OnceLock::new();
    let filter = FILTER.get_or_init(|| {
        Filter::compile(
            r#"(any request response (status 100-699) (method invite "x") (hasheader "via")
               (header "to" "a.*b") (from "b") (body "\x00") (message "SIP") (not (all request)))"#,
            1 << 20,
        )
        .unwrap()
    });
    if let Some(m) = Message::parse(data) {
        let _ = (m.start_line(), m.first_line(), m.body().len());
        for h in m.headers() {
            let _ = m.header_values(h.name).count();
        }
        filter.matches(&m);
    }
}
