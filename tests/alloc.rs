//! Memory discipline: after warm-up, the capture-to-envelope path makes no
//! heap allocation. A counting global allocator counts the allocations of
//! the capture thread while 100,000 packets of mixed UDP, TCP, WebSocket
//! (permessage-deflate) and fragmented SIP go through the whole pipeline to
//! a real broker.

mod common;

use etherparse::PacketBuilder;
use sip_capture::capture::Frame;
use sip_capture::config::ReassemblyLimits;
use sip_capture::counters::Counters;
use sip_capture::decode::UdpTunnels;
use sip_capture::envelope::{Timestamp, envelope_capacity};
use sip_capture::filter::Filter;
use sip_capture::pipeline::{Pipeline, WhenFull};
use sip_capture::publish::{self, Settings};
use sip_capture::queue::Queue;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    /// The largest zeroed block asked for while counting, in bytes.
    static LARGEST_ZEROED: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation() {
    // try_with: the thread-locals may be gone while a thread exits.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        let _ = COUNTING.try_with(|on| {
            if on.get() {
                let _ = LARGEST_ZEROED.try_with(|n| n.set(n.get().max(layout.size())));
            }
        });
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const WARM_UP: usize = 20_000;
const MEASURED: usize = 100_000;

fn message(kind: &str, n: usize, body_len: usize) -> Vec<u8> {
    let body = "v".repeat(body_len);
    format!(
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/{kind} 192.0.2.1;branch=z9hG4bK{n}\r\n\
To: <sip:bob@example.com>\r\nFrom: <sip:alice@example.com>;tag={n}\r\nCall-ID: {n}@alloc\r\n\
CSeq: 1 INVITE\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A masked WebSocket frame (RFC 6455) with `b0` (FIN, RSV1, opcode).
fn ws_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x12, 0x34, 0x56, 0x78];
    let mut f = vec![b0];
    if payload.len() < 126 {
        f.push(0x80 | payload.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// permessage-deflate (RFC 7692): a sync flush, its 00 00 ff ff removed.
fn deflate(message: &[u8]) -> Vec<u8> {
    use miniz_oxide::deflate::core::{CompressorOxide, TDEFLFlush, compress};
    let mut out = vec![0; message.len() + 64];
    let (_, _, written) = compress(&mut CompressorOxide::new(32), message, &mut out, TDEFLFlush::Sync);
    out.truncate(written - 4);
    out
}

/// Ethernet frames of mixed traffic: UDP messages, TCP streams of messages
/// split over segments, fragmented IPv4 and IPv6 datagrams, SCTP
/// associations sending a message in one DATA chunk and one in two and,
/// with `websocket`, WebSocket streams (a handshake, a compressed message
/// split over segments, a ping, a message over two frames).
fn mixed_frames(count: usize, websocket: bool) -> Vec<Vec<u8>> {
    let mut frames = Vec::with_capacity(count);
    let mut n = 0;
    let kinds = if websocket { 6 } else { 5 };
    while frames.len() < count {
        n += 1;
        match n % kinds {
            0 => {
                let b = PacketBuilder::ethernet2([1; 6], [2; 6])
                    .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                    .udp(5060, 5060);
                let payload = message("UDP", n, 100);
                let mut f = Vec::new();
                b.write(&mut f, &payload).unwrap();
                frames.push(f);
            }
            1 => {
                // One TCP stream per port, a message split over three segments.
                let port = 20_000 + (n % 30_000) as u16;
                let payload = message("TCP", n, 700);
                let seq = (n as u32).wrapping_mul(7919);
                let thirds = [0, payload.len() / 3, 2 * payload.len() / 3, payload.len()];
                let syn = PacketBuilder::ethernet2([1; 6], [2; 6])
                    .ipv4([10, 0, 1, 1], [10, 0, 1, 2], 64)
                    .tcp(port, 5060, seq, 65535)
                    .syn();
                let mut f = Vec::new();
                syn.write(&mut f, &[]).unwrap();
                frames.push(f);
                for w in thirds.windows(2) {
                    let b = PacketBuilder::ethernet2([1; 6], [2; 6])
                        .ipv4([10, 0, 1, 1], [10, 0, 1, 2], 64)
                        .tcp(port, 5060, seq.wrapping_add(1 + w[0] as u32), 65535)
                        .psh();
                    let mut f = Vec::new();
                    b.write(&mut f, &payload[w[0]..w[1]]).unwrap();
                    frames.push(f);
                }
                let fin = PacketBuilder::ethernet2([1; 6], [2; 6])
                    .ipv4([10, 0, 1, 1], [10, 0, 1, 2], 64)
                    .tcp(port, 5060, seq.wrapping_add(1 + payload.len() as u32), 65535)
                    .fin();
                let mut f = Vec::new();
                fin.write(&mut f, &[]).unwrap();
                frames.push(f);
            }
            2 => frames.extend(fragmented_ipv4(n, &message("UDP", n, 2500))),
            3 => frames.extend(fragmented_ipv6(n, &message("UDP", n, 2500))),
            4 => {
                // One association per port: more than SCTP_MAX_ASSOCIATIONS.
                let port = 10_000 + (n % 20_000) as u16;
                let (whole, split) = (message("SCTP", n, 100), message("SCTP", n + 1, 900));
                let tsn = (n as u32).wrapping_mul(7919);
                let half = split.len() / 2;
                frames.push(sctp_frame(port, &data_chunk(3, tsn, &whole)));
                frames.push(sctp_frame(port, &data_chunk(2, tsn + 1, &split[..half])));
                frames.push(sctp_frame(port, &data_chunk(1, tsn + 2, &split[half..])));
            }
            _ => {
                let port = 20_000 + (n % 30_000) as u16;
                let seq = (n as u32).wrapping_mul(7919);
                let compressed = ws_frame(0xc1, &deflate(&message("WS", n, 300)));
                let plain = message("WS", n + 1, 100);
                let segments: [&[u8]; 4] = [
                    b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Protocol: sip\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
                    &compressed[..20],
                    &[
                        &compressed[20..],
                        &ws_frame(0x89, b"ping"),
                        &ws_frame(0x01, &plain[..50]),
                    ]
                    .concat(),
                    &ws_frame(0x80, &plain[50..]),
                ];
                let mut at = seq.wrapping_add(1);
                let syn = PacketBuilder::ethernet2([1; 6], [2; 6])
                    .ipv4([10, 0, 3, 1], [10, 0, 3, 2], 64)
                    .tcp(port, 80, seq, 65535)
                    .syn();
                let mut f = Vec::new();
                syn.write(&mut f, &[]).unwrap();
                frames.push(f);
                for payload in segments {
                    let b = PacketBuilder::ethernet2([1; 6], [2; 6])
                        .ipv4([10, 0, 3, 1], [10, 0, 3, 2], 64)
                        .tcp(port, 80, at, 65535)
                        .psh();
                    let mut f = Vec::new();
                    b.write(&mut f, payload).unwrap();
                    frames.push(f);
                    at = at.wrapping_add(payload.len() as u32);
                }
                let fin = PacketBuilder::ethernet2([1; 6], [2; 6])
                    .ipv4([10, 0, 3, 1], [10, 0, 3, 2], 64)
                    .tcp(port, 80, at, 65535)
                    .fin();
                let mut f = Vec::new();
                fin.write(&mut f, &[]).unwrap();
                frames.push(f);
            }
        }
    }
    frames.truncate(count);
    frames
}

/// A DATA chunk (RFC 9260 §3.3.1) with `flags` (B 2, E 1), padded.
fn data_chunk(flags: u8, tsn: u32, payload: &[u8]) -> Vec<u8> {
    let mut c = vec![0, flags];
    c.extend_from_slice(&((16 + payload.len()) as u16).to_be_bytes());
    c.extend_from_slice(&tsn.to_be_bytes());
    c.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // stream 0, SSN 0, PPID 0
    c.extend_from_slice(payload);
    c.resize(c.len().next_multiple_of(4), 0);
    c
}

/// An SCTP packet over IPv4 from `port` to 5060; its checksum is left
/// zero, as offload leaves it on the sending host (counted, not dropped).
fn sctp_frame(port: u16, chunks: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00, 0x45, 0];
    f.extend_from_slice(&((20 + 12 + chunks.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 64, 132, 0, 0, 10, 0, 3, 1, 10, 0, 3, 2]);
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&5060u16.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 0]);
    f.extend_from_slice(chunks);
    f
}

fn udp_datagram(payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend_from_slice(&5060u16.to_be_bytes());
    d.extend_from_slice(&5060u16.to_be_bytes());
    d.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    d
}

fn fragmented_ipv4(n: usize, payload: &[u8]) -> Vec<Vec<u8>> {
    let datagram = udp_datagram(payload);
    datagram
        .chunks(1480)
        .enumerate()
        .map(|(i, chunk)| {
            let offset = i * 1480;
            let more = offset + chunk.len() < datagram.len();
            let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00, 0x45, 0];
            f.extend_from_slice(&((20 + chunk.len()) as u16).to_be_bytes());
            f.extend_from_slice(&(n as u16).to_be_bytes());
            f.extend_from_slice(&((if more { 0x2000 } else { 0 }) | (offset / 8) as u16).to_be_bytes());
            f.extend_from_slice(&[64, 17, 0, 0, 10, 0, 2, 1, 10, 0, 2, 2]);
            f.extend_from_slice(chunk);
            f
        })
        .collect()
}

fn fragmented_ipv6(n: usize, payload: &[u8]) -> Vec<Vec<u8>> {
    let datagram = udp_datagram(payload);
    datagram
        .chunks(1448)
        .enumerate()
        .map(|(i, chunk)| {
            let offset = i * 1448;
            let more = offset + chunk.len() < datagram.len();
            let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd, 0x60, 0, 0, 0];
            f.extend_from_slice(&((8 + chunk.len()) as u16).to_be_bytes());
            f.extend_from_slice(&[44, 64]);
            f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            f.extend_from_slice(&[17, 0]);
            f.extend_from_slice(&((offset as u16) | u16::from(more)).to_be_bytes());
            f.extend_from_slice(&(n as u32).to_be_bytes());
            f.extend_from_slice(chunk);
            f
        })
        .collect()
}

/// The counter itself works: one allocation counts one.
#[test]
fn the_allocator_counts() {
    COUNTING.with(|on| on.set(true));
    let v: Vec<u8> = Vec::with_capacity(std::hint::black_box(10));
    COUNTING.with(|on| on.set(false));
    drop(v);
    assert_eq!(ALLOCATIONS.with(Cell::get), 1);
}

/// The start-up buffers traffic may never touch (WebSocket inflate
/// contexts, the envelope's room for the largest message, SCTP and tunnel
/// reassembly scratch) are anonymous mappings, not zeroed heap blocks: musl's
/// allocator (the static builds) writes zeros over a zeroed block, making
/// it resident from start-up (docs/performance.md "Peak memory").
#[test]
fn start_up_zeroes_no_large_heap_block() {
    let counters = Counters::default();
    let queue = Queue::new(1 << 20);
    let filter = Filter::compile("", 1 << 20).unwrap();
    LARGEST_ZEROED.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    let pipeline = Pipeline::new(
        filter,
        &ReassemblyLimits::defaults(),
        65_535,
        &UdpTunnels::default(),
        &queue,
        WhenFull::Drop,
        &counters,
    );
    COUNTING.with(|on| on.set(false));
    drop(pipeline);
    let largest = LARGEST_ZEROED.with(Cell::get);
    assert!(
        largest <= 4096,
        "a zeroed heap block of {largest} bytes at start-up"
    );
}

#[test]
fn no_allocation_per_packet_after_warm_up() {
    let frames = mixed_frames(WARM_UP + MEASURED, true);
    let broker = common::Broker::start();
    let sub = broker.subscribe("sip/alloc");

    let max_message = 65_535;
    let queue = Arc::new(Queue::new(8 << 20));
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let settings = Settings {
        mqtt: sip_capture::config::Mqtt {
            broker: sip_capture::config::Broker {
                host: "127.0.0.1".into(),
                port: broker.port,
                tls: false,
                websocket: None,
            },
            tls: None,
            credentials: None,
            topic: "sip/alloc".into(),
            client_id: "alloc-test".into(),
            status_topic: "sip/alloc/status".into(),
            telemetry_topic: "sip/alloc/telemetry".into(),
            telemetry_interval: None,
            batch: None,
            // The widest window: the most publishes in flight.
            max_in_flight: sip_capture::publish::MAX_IN_FLIGHT,
        },
        max_envelope: envelope_capacity(max_message),
    };
    let publisher = {
        let (queue, counters, stop) = (queue.clone(), counters.clone(), stop.clone());
        std::thread::spawn(move || publish::run(&settings, &queue, &counters, &stop, None))
    };

    let filter = Filter::compile(r#"(any request (status 100-699) (to "bob@.*\.com"))"#, 1 << 20).unwrap();
    let mut pipeline = Pipeline::new(
        filter,
        &ReassemblyLimits::defaults(),
        max_message,
        &UdpTunnels::default(),
        &queue,
        WhenFull::Wait(&stop),
        &counters,
    );
    for (i, frame) in frames.iter().enumerate() {
        if i == WARM_UP {
            COUNTING.with(|on| on.set(true));
        }
        let time = Timestamp {
            secs: 1_700_000_000 + (i / 100_000) as i64,
            micros: (i % 100_000) as u32 * 10,
        };
        pipeline.handle_frame(&Frame {
            time,
            interface: 0,
            linktype: 1,
            data: frame,
        });
    }
    COUNTING.with(|on| on.set(false));
    let allocations = ALLOCATIONS.with(Cell::get);

    queue.close();
    publisher.join().unwrap().unwrap();
    let received = sub.collect().len() as u64;
    let c = |counter: &portable_atomic::AtomicU64| counter.load(Ordering::Relaxed);
    println!(
        "{} packets, {} SIP messages, {} published, {} acknowledged, {} received, {} reassembled, {} dropped (queue full)",
        c(&counters.packets),
        c(&counters.sip_messages),
        c(&counters.published),
        c(&counters.acknowledged),
        received,
        c(&counters.frag_reassembled),
        c(&counters.dropped_queue_full),
    );
    assert_eq!(
        allocations, 0,
        "heap allocations on the capture thread after warm-up"
    );
    assert!(c(&counters.frag_reassembled) > 1000 && c(&counters.tcp_flows) > 1000);
    assert!(c(&counters.sctp_user_messages) > 1000 && c(&counters.sctp_associations_evicted) > 0);
    assert_eq!(c(&counters.sctp_chunks_evicted) + c(&counters.sctp_duplicates), 0);
    assert!(c(&counters.ws_messages) > 1000, "WebSocket messages");
    assert_eq!(c(&counters.ws_inflate_failed), 0);
    assert_eq!(c(&counters.published), c(&counters.acknowledged));
    assert_eq!(received, c(&counters.acknowledged));
    assert_eq!(
        c(&counters.dropped_queue_full),
        0,
        "a file waits for room in the queue"
    );
    assert_eq!(c(&counters.sip_messages), c(&counters.published));
}

/// A pcapng file of `frames` on two Ethernet interfaces (nanosecond and
/// microsecond times), every packet with an `epb_flags` option, as
/// dumpcap and mergecap write them.
fn write_pcapng(path: &std::path::Path, frames: &[Vec<u8>]) {
    fn block(out: &mut Vec<u8>, kind: u32, body: &[u8]) {
        let len = 12 + body.len().next_multiple_of(4);
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(body);
        out.resize(out.len() + body.len().next_multiple_of(4) - body.len(), 0);
        out.extend_from_slice(&(len as u32).to_le_bytes());
    }
    let mut out = Vec::new();
    block(
        &mut out,
        0x0A0D_0D0A,
        &[
            0x4D, 0x3C, 0x2B, 0x1A, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ],
    );
    for tsresol in [9u8, 6] {
        // link type 1, snaplen 0, if_tsresol, end of options
        block(
            &mut out,
            1,
            &[1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 1, 0, tsresol, 0, 0, 0, 0, 0, 0, 0],
        );
    }
    for (i, frame) in frames.iter().enumerate() {
        let interface = (i % 2) as u32;
        let micros = 1_700_000_000_000_000u64 + i as u64 * 10;
        let ts = if interface == 0 { micros * 1000 } else { micros };
        let mut body = Vec::new();
        body.extend_from_slice(&interface.to_le_bytes());
        body.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(ts as u32).to_le_bytes());
        body.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        body.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        body.extend_from_slice(frame);
        body.resize(body.len().next_multiple_of(4), 0);
        // epb_flags: inbound; end of options
        body.extend_from_slice(&[2, 0, 4, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        block(&mut out, 6, &body);
    }
    std::fs::write(path, out).unwrap();
}

/// Reading a file allocates nothing per packet either: pcap and pcapng
/// (with packet options) through the reader and a BPF_FILTER compiled by
/// libpcap, into the extractor.
#[test]
fn no_allocation_per_packet_reading_files() {
    use sip_capture::capture;
    use sip_capture::config::Source;
    use sip_capture::pipeline::Extractor;

    let frames = mixed_frames(WARM_UP + MEASURED, false);
    let dir = tempfile::tempdir().unwrap();
    let pcapng = dir.path().join("mixed.pcapng");
    write_pcapng(&pcapng, &frames);
    let pcap = dir.path().join("mixed.pcap");
    let mut classic = common::PcapFile::create(&pcap);
    for (i, frame) in frames.iter().enumerate() {
        classic.record(i as u32 * 10, frame);
    }
    drop(classic);

    for path in [pcap, pcapng] {
        let counters = Counters::default();
        let mut source = capture::open(
            &Source::File(path.clone()),
            Some("udp or tcp or sctp or ip[6:2] & 0x1fff != 0 or ip6"),
            0,
            0,
        )
        .unwrap();
        let mut extractor = Extractor::with_defaults(&counters);
        let (mut seen, mut messages) = (0, 0u64);
        ALLOCATIONS.with(|n| n.set(0));
        source
            .run(
                &AtomicBool::new(false),
                &counters,
                |frame| {
                    seen += 1;
                    if seen == WARM_UP {
                        COUNTING.with(|on| on.set(true));
                    }
                    extractor.extract(frame, &mut |_, _| messages += 1);
                },
                |_| {},
            )
            .unwrap();
        COUNTING.with(|on| on.set(false));
        assert_eq!(seen, WARM_UP + MEASURED, "{path:?}");
        assert!(messages > 10_000, "{path:?}: {messages} messages");
        assert_eq!(
            ALLOCATIONS.with(Cell::get),
            0,
            "{path:?}: heap allocations per packet after warm-up"
        );
    }
}
