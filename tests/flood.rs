//! Memory stays fixed under a flood: 1,000,000 distinct TCP streams, each
//! leaving a partial message, and 1,000,000 fragment chains that never
//! complete. Peak RSS stays within the configured reassembly budget plus a
//! small constant, and every eviction is counted.

mod common;

use common::{Broker, PcapFile, ethernet_ipv4, replay, summary_value};

const FLOWS: u32 = 1_000_000;
const CHAINS: u32 = 1_000_000;

/// The limits the flood runs with, as flags, and the bytes they allow.
const LIMITS: &[(&str, u64)] = &[
    ("--tcp-max-flows", 4096),
    ("--tcp-buffers", 64),
    ("--tcp-buffer-bytes", 65_536),
    ("--frag-max-datagrams", 32),
    ("--frag-buffer-bytes", 2_097_152),
    ("--queue-bytes", 1_048_576),
];
/// A generous upper bound on one TCP stream's table entry and index slot.
const FLOW_ENTRY_BYTES: u64 = 256;

fn limit(flag: &str) -> u64 {
    LIMITS.iter().find(|(f, _)| *f == flag).unwrap().1
}

/// The flood as a pcap file.
fn write_flood(path: &std::path::Path) {
    let mut out = PcapFile::create(path);
    let partial = b"INVITE sip:bob@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK";
    let mut frame = Vec::new();
    for n in 0..FLOWS.max(CHAINS) {
        let micros = n; // one microsecond apart: nothing times out
        if n < FLOWS {
            frame.clear();
            ethernet_ipv4(&mut frame, n, 6, 0, false, 20 + partial.len());
            // TCP: ports from n, seq, no SYN: a stream first seen mid-way.
            frame.extend_from_slice(&(1024 + (n % 60000) as u16).to_be_bytes());
            frame.extend_from_slice(&5060u16.to_be_bytes());
            frame.extend_from_slice(&n.to_be_bytes());
            frame.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
            frame.extend_from_slice(partial);
            out.record(micros, &frame);
        }
        if n < CHAINS {
            frame.clear();
            // The first 64 bytes of a UDP datagram, more fragments to come.
            ethernet_ipv4(&mut frame, n, 17, 0, true, 64);
            frame.extend_from_slice(&[0x13, 0xc4, 0x13, 0xc4, 0x05, 0xdc, 0, 0]);
            frame.extend_from_slice(&[b'x'; 56]);
            out.record(micros, &frame);
        }
    }
}

fn limit_args() -> Vec<String> {
    LIMITS
        .iter()
        .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
        .collect()
}

#[test]
fn memory_stays_fixed_under_a_flood() {
    let dir = tempfile::tempdir().unwrap();
    let flood = dir.path().join("flood.pcap");
    write_flood(&flood);
    let args = limit_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let broker = Broker::start();

    // The same agent and limits on a capture with nothing to reassemble.
    let baseline = replay(&broker, "sip/flood", &common::pcap("smtp.pcap"), &args);
    let baseline_kib = summary_value(&baseline.stdout, "peak_rss_kib");
    let output = replay(&broker, "sip/flood", &flood, &args);
    let out = &output.stdout;
    let peak_kib = summary_value(out, "peak_rss_kib");

    let budget = limit("--tcp-buffers") * limit("--tcp-buffer-bytes")
        + limit("--frag-buffer-bytes")
        + limit("--tcp-max-flows") * FLOW_ENTRY_BYTES;
    let constant_kib = 2048;
    println!(
        "peak RSS {peak_kib} KiB, baseline {baseline_kib} KiB, reassembly budget {} KiB",
        budget / 1024
    );
    assert!(
        peak_kib <= baseline_kib + budget / 1024 + constant_kib,
        "peak RSS {peak_kib} KiB exceeds baseline {baseline_kib} KiB + budget {} KiB + {constant_kib} KiB",
        budget / 1024
    );

    let max_flows = limit("--tcp-max-flows");
    assert_eq!(summary_value(out, "tcp_flows"), u64::from(FLOWS));
    assert_eq!(
        summary_value(out, "tcp_flows_evicted"),
        u64::from(FLOWS) - max_flows
    );
    assert!(summary_value(out, "tcp_no_buffer") > 0);
    let slots = limit("--frag-max-datagrams");
    assert_eq!(summary_value(out, "frag_fragments"), u64::from(CHAINS));
    assert_eq!(summary_value(out, "frag_evicted"), u64::from(CHAINS) - slots);
    assert_eq!(summary_value(out, "frag_expired"), slots);
    assert_eq!(summary_value(out, "sip_messages"), 0);
}
