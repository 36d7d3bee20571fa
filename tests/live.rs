//! Live capture on `lo`: SIP datagrams sent to a loopback port all arrive at
//! the broker, except those the filter leaves out; SIGTERM stops the agent
//! cleanly with a summary line.
//! Needs CAP_NET_RAW (CI runs as root); without it the test says so and
//! skips.

mod common;

use common::{Broker, summary_value};
use std::collections::HashSet;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

const MESSAGES: usize = 500;
/// INVITEs sent among the OPTIONS, which the filter leaves out.
const FILTERED: usize = 100;

#[test]
fn live_capture_on_loopback() {
    if !common::can_capture_on_lo() {
        return;
    }
    let broker = Broker::start();
    let sub = broker.subscribe("sip/live");
    let (mut child, mut lines, target) =
        common::live_agent_on_udp(&broker.url(), "sip/live", &["--sip-filter", "(method options)"]);
    let port = target.local_addr().unwrap().port();

    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let options = |n| String::from_utf8(common::options("live", n)).unwrap();
    let sent: HashSet<String> = (0..MESSAGES).map(options).collect();
    for n in 0..MESSAGES {
        sender
            .send_to(options(n).as_bytes(), ("127.0.0.1", port))
            .unwrap();
        if n < FILTERED {
            let invite = options(n).replace("OPTIONS", "INVITE");
            sender.send_to(invite.as_bytes(), ("127.0.0.1", port)).unwrap();
        }
    }
    // Let the kernel hand the last batch to libpcap before stopping.
    std::thread::sleep(Duration::from_millis(500));
    let stdout = common::stop_agent(&mut child, &mut lines);
    assert_eq!(
        summary_value(stdout.as_bytes(), "acknowledged"),
        MESSAGES as u64,
        "{stdout}"
    );
    assert_eq!(
        summary_value(stdout.as_bytes(), "filtered_out"),
        FILTERED as u64,
        "{stdout}"
    );

    let received = sub.collect();
    assert_eq!(received.len(), MESSAGES);
    let mut seen = HashSet::new();
    for text in &received {
        let envelope: serde_json::Value = serde_json::from_str(text).unwrap();
        let sip = common::sip_of(&envelope);
        let sip = String::from_utf8(sip).unwrap();
        assert!(sent.contains(&sip), "unexpected message {sip:?}");
        assert!(seen.insert(sip), "published twice");
        assert_eq!(envelope["dst"], format!("127.0.0.1:{port}"));
        assert_eq!(envelope["src"], sender.local_addr().unwrap().to_string());
    }
}

/// The messages sipp logged as sent (`-trace_msg`): each
/// "TCP message sent (N bytes):" line, a blank line, then N bytes.
fn sipp_sent(log: &std::path::Path) -> Vec<Vec<u8>> {
    let text = std::fs::read(log).unwrap();
    let marker = b"message sent (";
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(found) = text[at..].windows(marker.len()).position(|w| w == marker) {
        let start = at + found + marker.len();
        let digits: Vec<u8> = text[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .copied()
            .collect();
        let len: usize = String::from_utf8(digits.clone()).unwrap().parse().unwrap();
        let body = start + digits.len() + " bytes):\n\n".len();
        out.push(text[body..body + len].to_vec());
        at = body + len;
    }
    out
}

/// Real traffic: sipp uac and uas over TCP on loopback, captured live;
/// every message sipp sent is published once.
#[test]
fn sipp_calls_over_tcp() {
    if !common::can_capture_on_lo() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    let sub = broker.subscribe("sip/sipp");
    let uas_port = common::free_port();
    let (mut child, mut lines) =
        common::live_agent(&broker.url(), "sip/sipp", &format!("tcp port {uas_port}"), &[]);

    let (uas_log, uac_log) = (dir.path().join("uas.log"), dir.path().join("uac.log"));
    let mut uas = common::spawn(
        Command::new("sipp")
            .args([
                "-sn",
                "uas",
                "-t",
                "t1",
                "-i",
                "127.0.0.1",
                "-p",
                &uas_port.to_string(),
            ])
            .args(["-trace_msg", "-message_file"])
            .arg(&uas_log)
            .args(["-nostdin"])
            .stdout(Stdio::null()),
    );
    std::thread::sleep(Duration::from_millis(300));
    let uac = Command::new("sipp")
        .args(["-sn", "uac", "-t", "t1", "-i", "127.0.0.1"])
        .arg(format!("127.0.0.1:{uas_port}"))
        .args(["-m", "40", "-r", "40", "-trace_msg", "-message_file"])
        .arg(&uac_log)
        .args(["-nostdin", "-timeout", "30s"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(uac.success(), "sipp uac failed");
    std::thread::sleep(Duration::from_millis(500));
    let _ = uas.kill();
    let _ = uas.wait();
    std::thread::sleep(Duration::from_millis(300));
    let stdout = common::stop_agent(&mut child, &mut lines);

    let mut sent = sipp_sent(&uac_log);
    sent.extend(sipp_sent(&uas_log));
    assert_eq!(sent.len(), 240, "40 calls of 6 messages");
    let mut published: Vec<Vec<u8>> = sub
        .collect()
        .iter()
        .map(|text| common::sip_of(&serde_json::from_str(text).unwrap()))
        .collect();
    sent.sort();
    published.sort();
    assert_eq!(published.len(), sent.len(), "{stdout}");
    assert!(published == sent, "published messages differ from what sipp sent");
}

/// A TCP stream with a segment that never reaches the capture, then
/// silence: the message after the hole is published while the agent keeps
/// running, once the hole's wait (TCP_HOLE_WAIT_MS of capture time) has
/// passed on the capture's idle tick — no later packet is needed — stamped
/// with the time its own segment was captured. The segments are injected on
/// `lo` with libpcap; nothing listens on the port, so the kernel answers
/// with RSTs the capture filter leaves out.
#[test]
fn hole_wait_ends_on_an_idle_link() {
    use etherparse::PacketBuilder;
    if !common::can_capture_on_lo() {
        return;
    }
    let broker = Broker::start();
    let sub = broker.subscribe("sip/hole");
    let port = common::free_port();
    let (mut child, mut lines) = common::live_agent(
        &broker.url(),
        "sip/hole",
        &format!("tcp and dst port {port}"),
        &["--tcp-hole-wait-ms", "300"],
    );
    let mut inject = pcap::Capture::from_device("lo").unwrap().open().unwrap();
    let mut send = |seq: u32, syn: bool, payload: &[u8]| {
        let builder = PacketBuilder::ethernet2([0; 6], [0; 6])
            .ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
            .tcp(40_123, port, seq, 65535);
        let builder = if syn { builder.syn() } else { builder.ack(1).psh() };
        let mut frame = Vec::new();
        builder.write(&mut frame, payload).unwrap();
        inject.sendpacket(frame).unwrap();
    };
    let (a, b, c) = (
        common::options("hole", 1),
        common::options("hole", 2),
        common::options("hole", 3),
    );
    send(1000, true, &[]);
    send(1001, false, &a);
    // b[..50] is never sent.
    let now = || chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now());
    let before = now();
    send(1001 + (a.len() + 50) as u32, false, &[&b[50..], &c[..]].concat());
    let after = now();
    std::thread::sleep(Duration::from_millis(2000));
    let published = sub.collect();
    let stdout = common::stop_agent(&mut child, &mut lines);
    assert_eq!(published.len(), 2, "published before the agent stopped\n{stdout}");
    let envelope: serde_json::Value = serde_json::from_str(&published[1]).unwrap();
    assert_eq!(common::sip_of(&envelope), c);
    let time = chrono::DateTime::parse_from_rfc3339(envelope["time"].as_str().unwrap()).unwrap();
    assert!(
        before <= time && time <= after,
        "{time} not within {before}..{after}"
    );
    assert_eq!(summary_value(stdout.as_bytes(), "tcp_gaps"), 1, "{stdout}");
    assert_eq!(summary_value(stdout.as_bytes(), "tcp_gap_bytes"), 50, "{stdout}");
}
