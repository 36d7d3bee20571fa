//! Live capture on `lo`: SIP datagrams sent to a loopback port all arrive at
//! the broker, except those the filter leaves out; SIGTERM stops the agent
//! cleanly with a summary line.
//! Needs CAP_NET_RAW (CI runs as root); without it the test says so and
//! skips.

mod common;

use base64::Engine;
use common::{Broker, Lines, agent, summary_value};
use std::collections::HashSet;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

const MESSAGES: usize = 500;
/// INVITEs sent among the OPTIONS, which the filter leaves out.
const FILTERED: usize = 100;

fn can_capture_on_lo() -> bool {
    match pcap::Capture::from_device("lo").and_then(|c| c.open()) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIPPED live capture test: cannot capture on lo ({e}); it needs CAP_NET_RAW");
            false
        }
    }
}

fn options(n: usize) -> String {
    format!(
        "OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK{n}\r\n\
From: <sip:live@test>;tag={n}\r\nTo: <sip:probe@127.0.0.1>\r\nCall-ID: live-{n}@test\r\n\
CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn live_capture_on_loopback() {
    if !can_capture_on_lo() {
        return;
    }
    let broker = Broker::start();
    let sub = broker.subscribe("sip/live");
    let target = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = target.local_addr().unwrap().port();
    let mut child = agent()
        .args([
            "--interface",
            "lo",
            "--broker",
            &broker.url(),
            "--topic",
            "sip/live",
        ])
        .args(["--bpf-filter", &format!("udp and dst port {port}")])
        .args(["--sip-filter", "(method options)"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Lines::of(&mut child);
    lines.wait_for("connected to broker", Duration::from_secs(10));

    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
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
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    let stdout = lines.rest();
    assert!(exit.success(), "agent exit {exit:?}\n{stdout}");
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
