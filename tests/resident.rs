//! Start-up memory that traffic has not used stays out of resident memory:
//! the reassembly tables' per-buffer state is made on a buffer's first use,
//! and a file of ordinary frames is read through a buffer of
//! FILE_BUFFER_START_BYTES, not the largest one (docs/performance.md "Peak
//! memory"). Measured as the growth of this process's anonymous resident
//! memory (`/proc/self/smaps_rollup`), alone in its test binary so that no
//! other test's memory counts.

mod common;

use sip_capture::capture;
use sip_capture::config::Source;
use sip_capture::counters::Counters;
use sip_capture::pipeline::Extractor;
use std::sync::atomic::AtomicBool;

/// This process's anonymous resident memory, in KiB.
fn anonymous_kib() -> u64 {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap();
    let line = rollup.lines().find(|l| l.starts_with("Anonymous:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn idle_start_up_buffers_are_not_resident() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("udp.pcap");
    let mut file = common::PcapFile::create(&path);
    let message = b"OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKr\r\n\
Call-ID: r@resident\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    for i in 0..1000u32 {
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
            .udp(5060, 5060)
            .write(&mut frame, message)
            .unwrap();
        file.record(i * 1000, &frame);
    }
    drop(file);

    let before = anonymous_kib();
    let counters = Counters::default();
    let mut extractor = Extractor::with_defaults(&counters);
    let mut source = capture::open(&Source::File(path), None, 0, 0).unwrap();
    let mut messages = 0;
    source
        .run(
            &AtomicBool::new(false),
            &counters,
            |frame| extractor.extract(frame, &mut |_, _| messages += 1),
            |_| {},
        )
        .unwrap();
    let grown = anonymous_kib() - before;
    assert_eq!(messages, 1000);
    // 168 KiB here (glibc, debug build): the file buffer (68 KiB), the
    // reassembly tables' indexes. With every TCP and SCTP buffer's state
    // and the largest file buffer made at start-up, 788 KiB.
    assert!(grown < 320, "{grown} KiB of anonymous memory made resident");
    drop(extractor);
}
