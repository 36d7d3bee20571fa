//! In-process cost of the pipeline, without the broker: decode → reassemble
//! → filter → envelope over every frame of a capture held in memory, and
//! the floor — the work every published message must have done anyway
//! (SHA-256 and base64 of its bytes, copied into an envelope buffer) — over
//! the same messages; and the cost of reading the file itself, with
//! sip-capture's reader (pcap-parser) and with libpcap for comparison.
//! Prints one JSON object. Run by `make bench`:
//!
//!     cargo bench --bench pipeline -- TRACE.pcap [FILTER]

use sha2::{Digest, Sha256};
use sip_capture::capture::{self, Frame};
use sip_capture::config::{ReassemblyLimits, Source};
use sip_capture::counters::Counters;
use sip_capture::decode::UdpTunnels;
use sip_capture::envelope::{EnvelopeWriter, Timestamp, envelope_capacity};
use sip_capture::filter::Filter;
use sip_capture::pipeline::Extractor;
use std::hint::black_box;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

const MAX_MESSAGE: usize = 65_535;
/// Best of this many passes, to see past a noisy machine.
const PASSES: usize = 5;

/// A frame held in memory.
type Owned = (Timestamp, u32, i32, Vec<u8>);

fn frame((time, interface, linktype, data): &Owned) -> Frame<'_> {
    Frame {
        time: *time,
        interface: *interface,
        linktype: *linktype,
        data,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let trace = args.first().expect("usage: pipeline TRACE.pcap [FILTER]");
    let filter_text = args.get(1).map(String::as_str).unwrap_or("");
    let filter = Filter::compile(filter_text, 1 << 20).expect("filter");

    // The frames, read once by the agent's own file reader.
    let counters = Counters::default();
    let never = AtomicBool::new(false);
    let read = |on_frame: &mut dyn FnMut(&Frame)| {
        capture::open(&Source::File(trace.into()), None, 0, 0)
            .expect("trace")
            .run(&never, &counters, on_frame, |_| {})
            .expect("read");
    };
    let mut frames: Vec<Owned> = Vec::new();
    read(&mut |f| frames.push((f.time, f.interface, f.linktype, f.data.to_vec())));

    // Reading the file: the agent's reader, and libpcap's.
    let (mut read_best, mut libpcap_best) = (Duration::MAX, Duration::MAX);
    for _ in 0..PASSES {
        let start = Instant::now();
        let mut bytes = 0;
        read(&mut |f| bytes += black_box(f.data.len()));
        read_best = read_best.min(start.elapsed());
        let start = Instant::now();
        let mut capture = pcap::Capture::from_file(trace).expect("trace");
        while let Ok(packet) = capture.next_packet() {
            bytes -= black_box(packet.data.len());
        }
        libpcap_best = libpcap_best.min(start.elapsed());
        assert_eq!(bytes, 0, "both readers see the same bytes");
    }

    // The messages, collected once, for the floor.
    let limits = ReassemblyLimits::defaults();
    let mut messages = Vec::new();
    let mut extractor = Extractor::new(&limits, MAX_MESSAGE, &UdpTunnels::default(), &counters);
    let mut collect = |_: &_, m: &sip_capture::sip::Message<'_>| messages.push(m.raw().to_vec());
    for f in &frames {
        extractor.extract(&frame(f), &mut collect);
    }
    extractor.finish(&mut collect);

    let mut best = Duration::MAX;
    let mut published = 0;
    for _ in 0..PASSES {
        let counters = Counters::default();
        let mut extractor = Extractor::new(&limits, MAX_MESSAGE, &UdpTunnels::default(), &counters);
        let mut writer = EnvelopeWriter::new(MAX_MESSAGE);
        published = 0;
        let start = Instant::now();
        for f in &frames {
            extractor.extract(&frame(f), &mut |origin, message| {
                if filter.matches(message) {
                    published += 1;
                    black_box(writer.write(origin, message.raw()).map(<[u8]>::len).unwrap_or(0));
                }
            });
        }
        best = best.min(start.elapsed());
    }

    let mut floor = Duration::MAX;
    let mut envelope = vec![0u8; envelope_capacity(MAX_MESSAGE)];
    for _ in 0..PASSES {
        let start = Instant::now();
        for raw in &messages {
            let digest = Sha256::digest(raw);
            let mut hex = [0u8; 64];
            black_box(
                base16ct::lower::encode(&digest, &mut hex)
                    .map(<[u8]>::len)
                    .unwrap_or(0),
            );
            let field = &mut envelope[..base64_simd::STANDARD.encoded_length(raw.len())];
            black_box(base64_simd::STANDARD.encode(raw, base64_simd::Out::from_slice(field)));
        }
        floor = floor.min(start.elapsed());
    }

    let n = messages.len().max(1) as f64;
    let ns_per_msg = best.as_nanos() as f64 / n;
    let floor_ns = floor.as_nanos() as f64 / n;
    println!(
        "{{\"trace\":{trace:?},\"filter\":{filter_text:?},\"frames\":{},\"messages\":{},\"published\":{published},\
\"inproc_ns_per_msg\":{ns_per_msg:.1},\"inproc_msgs_per_s\":{:.0},\"floor_ns_per_msg\":{floor_ns:.1},\"ratio_to_floor\":{:.2},\
\"read_ns_per_frame\":{:.1},\"libpcap_read_ns_per_frame\":{:.1}}}",
        frames.len(),
        messages.len(),
        1e9 / ns_per_msg,
        ns_per_msg / floor_ns,
        read_best.as_nanos() as f64 / frames.len().max(1) as f64,
        libpcap_best.as_nanos() as f64 / frames.len().max(1) as f64,
    );
}
