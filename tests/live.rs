//! Live capture on `lo`: SIP datagrams sent to a loopback port all arrive at
//! the broker, except those the filter leaves out; SIGTERM stops the agent
//! cleanly with a summary line.
//! Needs CAP_NET_RAW (CI runs as root); without it the test says so and
//! skips.

mod common;

use base64::Engine;
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
        let sip = base64::engine::general_purpose::STANDARD
            .decode(envelope["sip"].as_str().unwrap())
            .unwrap();
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
