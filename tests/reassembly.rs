//! Reassembly: IP fragments and SIP over TCP, from real and generated
//! captures, and the original agent's splitter vectors.

mod common;

use common::{envelopes_of, pcap, sip_of, summary_value};
use core::net::SocketAddr;
use serde_json::Value;
use sip_capture::config::ReassemblyLimits;
use sip_capture::counters::Counters;
use sip_capture::decode::{Context, Segment, TcpHeader};
use sip_capture::envelope::{Origin, Timestamp};
use sip_capture::split::Framer;
use sip_capture::split::websocket::Shared;
use sip_capture::tcp::{OnMessage, TcpReassembler};

/// A reassembled datagram carries the capture time of its first fragment.
#[test]
fn sip_i_fragmented_invite() {
    let (envelopes, out) = envelopes_of(&pcap("sip-i.pcap"), &[]);
    assert_eq!(envelopes.len(), 2);
    assert_eq!(summary_value(&out, "frag_reassembled"), 1);
    let invite: Vec<&Value> = envelopes
        .iter()
        .filter(|e| sip_of(e).starts_with(b"INVITE"))
        .collect();
    assert_eq!(invite.len(), 1);
    let first_fragment_time = {
        let mut capture = pcap::Capture::from_file(pcap("sip-i.pcap")).unwrap();
        let first = capture.next_packet().unwrap();
        chrono::DateTime::from_timestamp(first.header.ts.tv_sec, first.header.ts.tv_usec as u32 * 1000)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string()
    };
    assert_eq!(invite[0]["time"], first_fragment_time);
    let sip = sip_of(invite[0]);
    assert!(
        sip.len() > 1500,
        "reassembled from two fragments: {} bytes",
        sip.len()
    );
}

#[test]
fn lone_trailing_fragment_expires() {
    let (envelopes, out) = envelopes_of(&pcap("sip-frag.pcap"), &[]);
    assert_eq!(envelopes.len(), 0);
    assert_eq!(summary_value(&out, "frag_expired"), 1);
}

#[test]
fn vlan_and_qinq_fragments() {
    for name in ["sip-i_vlan100.pcap", "sip-i_qinq200-100.pcap"] {
        let (envelopes, out) = envelopes_of(&pcap(name), &[]);
        assert_eq!(envelopes.len(), 2, "{name}");
        assert_eq!(summary_value(&out, "decode_errors"), 0, "{name}");
    }
}

#[test]
fn sip_tcp_cooked_mid_stream_30() {
    let (envelopes, _) = envelopes_of(&pcap("sip-tcp.pcap"), &[]);
    assert_eq!(envelopes.len(), 30);
    let mut ids: Vec<&str> = envelopes.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30, "each message once");
    assert!(envelopes.iter().all(|e| e["transport"] == "tcp"));
}

/// The documented port filter keeps every fragment of a datagram.
#[test]
fn port_filter_that_keeps_fragments() {
    let bpf = "udp port 5060 or tcp port 5060 or (ip[6:2] & 0x1fff != 0) or (ip6 and ip6[6] == 44)";
    for (name, expected) in [
        ("sip-i.pcap", 2),
        ("generated/ipv6-fragments.pcap", 1),
        ("sip-tcp.pcap", 30),
    ] {
        let (envelopes, _) = envelopes_of(&pcap(name), &["--bpf-filter", bpf]);
        assert_eq!(envelopes.len(), expected, "{name}");
    }
    // Without the fragment terms the non-first fragment is lost.
    let (envelopes, _) = envelopes_of(&pcap("sip-i.pcap"), &["--bpf-filter", "udp port 5060"]);
    assert_eq!(envelopes.len(), 1);
}

/// The live default BPF keeps fragments too, and SCTP over IPv4 and IPv6
/// (also in IP fragments).
#[test]
fn default_live_bpf_keeps_fragments_and_sctp() {
    let bpf = sip_capture::config::DEFAULT_LIVE_BPF;
    for (name, expected) in [
        ("sip-i.pcap", 2),
        ("generated/ipv6-fragments.pcap", 1),
        ("sip-i_vlan100.pcap", 2),
        ("generated/sctp-single-chunks.pcap", 6),
        ("generated/sctp-fragmented.pcap", 3),
    ] {
        let (envelopes, _) = envelopes_of(&pcap(name), &["--bpf-filter", bpf]);
        assert_eq!(envelopes.len(), expected, "{name}");
    }
}

/// The original agent's splitter vectors: the same messages come out, fed
/// whole and byte by byte. (Its discard bookkeeping differs: sip-capture
/// discards a junk line as soon as it is complete; see docs/reassembly.md.)
#[test]
fn the_originals_splitter_vectors() {
    let dir = common::data("sipsplitter");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "expected") {
            continue;
        }
        let expected: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let stream = std::fs::read(path.with_extension("stream")).unwrap_or_default();
        let want: Vec<&str> = expected["Messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        for chunk in [stream.len().max(1), 1] {
            let counters = Counters::default();
            let mut shared = Shared::new(65_535);
            let mut framer = Framer::default();
            let mut pending = Vec::new();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                pending.extend_from_slice(piece);
                let used = framer.split(&pending, 65_535, &mut shared, &counters, |_, m, _| {
                    got.push(String::from_utf8(m.to_vec()).unwrap())
                });
                pending.drain(..used);
            }
            assert_eq!(got, want, "{} in chunks of {chunk}", path.display());
        }
        checked += 1;
    }
    assert_eq!(checked, 18);
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Random(u64);

impl Random {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// How a stream ends in [`feed`].
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// The capture ends (Extractor::finish).
    EndOfCapture,
    /// A FIN, then capture time passes the holes' wait.
    Fin,
    Rst,
    /// Capture time passes the idle timeout.
    Idle,
    /// Capture time passes the holes' wait only.
    HoleWait,
    /// Nothing: what is still held stays held.
    Nothing,
}

const ENDINGS: [Ending; 5] = [
    Ending::EndOfCapture,
    Ending::Fin,
    Ending::Rst,
    Ending::Idle,
    Ending::HoleWait,
];

/// Cut `len` bytes of stream into segments of 1 to 300 bytes.
fn cut(random: &mut Random, len: usize) -> Vec<(usize, usize)> {
    let mut segments = Vec::new();
    let mut at = 0;
    while at < len {
        let n = (1 + random.below(300)).min(len - at);
        segments.push((at, n));
        at += n;
    }
    segments
}

/// Segments as captured: one in `duplicate_one_in` repeated, one in
/// `lose_one_in` never captured.
fn lose_and_duplicate(
    random: &mut Random,
    segments: &[(usize, usize)],
    duplicate_one_in: usize,
    lose_one_in: usize,
) -> Vec<(usize, usize)> {
    let mut sent = Vec::new();
    for s in segments {
        if random.below(lose_one_in) != 0 {
            sent.push(*s);
        }
        if random.below(duplicate_one_in) == 0 {
            sent.push(*s);
        }
    }
    sent
}

const T0: Timestamp = Timestamp {
    secs: 1_700_000_000,
    micros: 0,
};

/// The capture time of the `n`th segment: 1 ms apart.
fn at_ms(n: usize) -> Timestamp {
    Timestamp {
        secs: T0.secs + (n / 1000) as i64,
        micros: (n % 1000) as u32 * 1000,
    }
}

/// Feed one stream's segments (offset and length into `stream`), after a
/// SYN, the `n`th captured at `at_ms(n + 1)`, then end it as `ending` says;
/// what came out, with its capture time.
fn feed(
    limits: &ReassemblyLimits,
    stream: &[u8],
    isn: u32,
    sent: &[(usize, usize)],
    ending: Ending,
) -> Vec<(String, Timestamp)> {
    let counters = Counters::default();
    let mut tcp = TcpReassembler::new(limits, limits.tcp_buffer_bytes);
    let src: SocketAddr = "192.0.2.1:40000".parse().unwrap();
    let dst: SocketAddr = "192.0.2.2:5060".parse().unwrap();
    let mut got = Vec::new();
    let mut on_message = |origin: &Origin, m: &[u8]| {
        assert_eq!((origin.src, origin.dst), (src, dst));
        got.push((String::from_utf8(m.to_vec()).unwrap(), origin.time));
    };
    let add = |tcp: &mut TcpReassembler,
               n: usize,
               header: TcpHeader,
               payload: &[u8],
               on_message: &mut OnMessage<'_>| {
        let segment = Segment {
            context: Context::default(),
            src,
            dst,
            payload,
            tcp: Some(header),
        };
        tcp.add(at_ms(n), &segment, header, &counters, on_message);
    };
    let header = |seq: u32| TcpHeader {
        seq,
        syn: false,
        fin: false,
        rst: false,
    };
    add(
        &mut tcp,
        0,
        TcpHeader {
            syn: true,
            ..header(isn)
        },
        &[],
        &mut on_message,
    );
    for (n, &(offset, len)) in sent.iter().enumerate() {
        let seq = isn.wrapping_add(1).wrapping_add(offset as u32);
        add(
            &mut tcp,
            n + 1,
            header(seq),
            &stream[offset..offset + len],
            &mut on_message,
        );
    }
    let end = isn.wrapping_add(1).wrapping_add(stream.len() as u32);
    let last = sent.len() + 1;
    let later = |ms: u64| at_ms(last + ms as usize);
    match ending {
        Ending::EndOfCapture => tcp.finish(&counters, &mut on_message),
        Ending::Fin => {
            add(
                &mut tcp,
                last,
                TcpHeader {
                    fin: true,
                    ..header(end)
                },
                &[],
                &mut on_message,
            );
            tcp.advance(later(limits.tcp_hole_wait_ms + 1), &counters, &mut on_message);
        }
        Ending::Rst => add(
            &mut tcp,
            last,
            TcpHeader {
                rst: true,
                ..header(end)
            },
            &[],
            &mut on_message,
        ),
        Ending::Idle => tcp.advance(later(limits.tcp_idle_s * 1000 + 1), &counters, &mut on_message),
        Ending::HoleWait => tcp.advance(later(limits.tcp_hole_wait_ms + 1), &counters, &mut on_message),
        Ending::Nothing => {}
    }
    got
}

fn limits(buffer: usize, hole_wait_ms: u64, hole_max_bytes: usize) -> ReassemblyLimits {
    ReassemblyLimits {
        tcp_flows: 4,
        tcp_buffers: 4,
        tcp_buffer_bytes: buffer,
        tcp_idle_s: 60,
        tcp_hole_wait_ms: hole_wait_ms,
        tcp_hole_max_bytes: hole_max_bytes,
        ..ReassemblyLimits::defaults()
    }
}

/// Send `messages` as one TCP stream cut at random, reordered within
/// `window`, one segment in `duplicate_one_in` repeated and one in
/// `lose_one_in` lost; return what the reassembler delivered.
fn random_stream(
    random: &mut Random,
    messages: &[String],
    window: usize,
    duplicate_one_in: usize,
    lose_one_in: usize,
    buffer: usize,
) -> Vec<String> {
    let stream: Vec<u8> = messages.concat().into_bytes();
    let isn = random.below(u32::MAX as usize) as u32;
    let mut segments = cut(random, stream.len());
    for i in 0..segments.len() {
        let j = (i + random.below(window)).min(segments.len() - 1);
        segments.swap(i, j);
    }
    let sent = lose_and_duplicate(random, &segments, duplicate_one_in, lose_one_in);
    let limits = limits(buffer, 1000, buffer);
    feed(&limits, &stream, isn, &sent, Ending::Nothing)
        .into_iter()
        .map(|(m, _)| m)
        .collect()
}

fn random_messages(random: &mut Random, round: usize, max_body: usize) -> Vec<String> {
    (0..1 + random.below(12))
        .map(|n| {
            let body = "b".repeat(random.below(max_body));
            format!(
                "MESSAGE sip:x SIP/2.0\r\nCall-ID: {round}-{n}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        })
        .collect()
}

/// Streams cut at random, reordered and duplicated: every message comes
/// out once, in order.
#[test]
fn tcp_random_segmentation_reordering_and_duplicates() {
    let mut random = Random(0x2545_f491_4f6c_dd1d);
    for round in 0..1000 {
        let messages = random_messages(&mut random, round, 400);
        let got = random_stream(&mut random, &messages, 6, 5, usize::MAX, 8192);
        assert_eq!(got, messages, "round {round}");
    }
}

/// With segments lost before the tap and a small buffer, messages are
/// dropped, but every one that comes out is exactly one that was sent.
#[test]
fn tcp_losses_never_alter_messages() {
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let mut delivered = 0;
    for round in 0..1000 {
        let messages = random_messages(&mut random, round, 1500);
        for got in random_stream(&mut random, &messages, 4, 7, 9, 1024) {
            assert!(messages.contains(&got), "round {round}: altered message {got:?}");
            delivered += 1;
        }
    }
    assert!(delivered > 1000, "most messages still arrive: {delivered}");
}

/// Holes that never fill, among reordered and duplicated segments: after
/// the holes' wait, their data bound, or the end of the stream (FIN, RST,
/// idle expiry, end of capture), every complete message that does not
/// touch a lost byte comes out once, in order, stamped with the time its
/// bytes had all been captured (counted from where the stream resumed after
/// the last hole before it), and nothing else does.
#[test]
fn tcp_holes_that_never_fill() {
    let mut random = Random(0x5851_f42d_4c95_7f2d);
    let (mut published, mut lost) = (0, 0);
    for round in 0..2000 {
        let messages = random_messages(&mut random, round, 600);
        let stream: Vec<u8> = messages.concat().into_bytes();
        let isn = random.below(u32::MAX as usize) as u32;
        // Reordered within blocks of 3: a segment is at most 2 ms late, far
        // less than the holes' wait, and at most 600 bytes wait behind it,
        // less than the data bound. So only lost segments are skipped.
        let mut segments = cut(&mut random, stream.len());
        for block in segments.chunks_mut(3) {
            for i in (1..block.len()).rev() {
                block.swap(i, random.below(i + 1));
            }
        }
        let sent = lose_and_duplicate(&mut random, &segments, 6, 12);
        let ending = ENDINGS[random.below(ENDINGS.len())];
        let limits = limits(65_536, 20, 4096);
        let got = feed(&limits, &stream, isn, &sent, ending);

        // First capture time of every byte (None: never captured).
        let mut first: Vec<Option<Timestamp>> = vec![None; stream.len()];
        for (n, &(offset, len)) in sent.iter().enumerate() {
            for byte in &mut first[offset..offset + len] {
                byte.get_or_insert(at_ms(n + 1));
            }
        }
        let mut expected = Vec::new();
        let (mut at, mut resumed) = (0, 0);
        for m in &messages {
            let end = at + m.len();
            if let Some(hole) = first[..end].iter().rposition(Option::is_none) {
                resumed = resumed.max(hole + 1);
            }
            if resumed <= at {
                let time = first[resumed..end].iter().map(|t| t.unwrap()).max().unwrap();
                expected.push((m.clone(), time));
            } else {
                lost += 1;
            }
            at = end;
        }
        published += expected.len();
        assert_eq!(got, expected, "round {round}, ending {ending:?}, sent {sent:?}");
    }
    assert!(
        lost > 100 && published > 5000,
        "published {published}, lost {lost}"
    );
    eprintln!("published {published}, lost {lost}");
}

/// The capture interface is part of the reassembly keys: the same frames
/// read on two interfaces (a multi-interface pcapng) are two TCP streams
/// and two fragmented datagrams, each published once per interface, none
/// taken for a retransmission or an overlap of the other.
#[test]
fn the_same_frames_on_two_interfaces_are_never_joined() {
    use sip_capture::capture::Frame;
    use sip_capture::envelope::Timestamp;
    use sip_capture::pipeline::Extractor;
    use std::sync::atomic::Ordering::Relaxed;

    for (name, messages) in [
        ("generated/tcp-byte-by-byte.pcap", 1),
        ("generated/ipv6-fragments.pcap", 1),
    ] {
        let mut capture = pcap::Capture::from_file(pcap(name)).unwrap();
        let linktype = capture.get_datalink().0;
        let counters = Counters::default();
        let mut extractor = Extractor::with_defaults(&counters);
        let mut published = Vec::new();
        while let Ok(packet) = capture.next_packet() {
            let time = Timestamp {
                secs: packet.header.ts.tv_sec,
                micros: packet.header.ts.tv_usec as u32,
            };
            for interface in [1, 2] {
                let frame = Frame {
                    time,
                    interface,
                    linktype,
                    data: packet.data,
                };
                extractor.extract(&frame, &mut |_, m| published.push(m.raw().to_vec()));
            }
        }
        extractor.finish(&mut |_, m| published.push(m.raw().to_vec()));
        assert_eq!(published.len(), 2 * messages, "{name}");
        assert_eq!(published[0], published[1], "{name}");
        assert_eq!(counters.tcp_retransmissions.load(Relaxed), 0, "{name}");
        assert_eq!(counters.frag_overlaps.load(Relaxed), 0, "{name}");
        assert_eq!(counters.frag_expired.load(Relaxed), 0, "{name}");
    }
}
