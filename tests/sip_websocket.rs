//! SIP over WebSocket, live on `lo`: a real WebSocket server and client
//! (Python's websockets, Debian's python3-websockets; tests/sip_websocket.py)
//! exchange SIP requests and responses, some over continuation frames, with
//! pings between them, without and with permessage-deflate (context
//! takeover both ways, and none). The agent captures `lo` and publishes
//! every message either side sent, exactly (unmasked, inflated), once, as
//! `ws`; the handshake and the control frames are counted, not published.
//! Needs CAP_NET_RAW (CI runs as root); without it the test says so and
//! skips.

mod common;

use common::{Broker, summary_value};
use std::process::Command;
use std::time::Duration;

/// Requests the client sends; each gets a response.
const REQUESTS: usize = 30;

fn exchange(mode: &str) {
    if !common::can_capture_on_lo() {
        return;
    }
    let broker = Broker::start();
    let topic = format!("sip/ws-{mode}");
    let sub = broker.subscribe(&topic);
    let port = common::free_port();
    let (mut child, mut lines) = common::live_agent(&broker.url(), &topic, &format!("tcp port {port}"), &[]);
    let output = Command::new("/usr/bin/python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sip_websocket.py"))
        .args([&port.to_string(), mode, &REQUESTS.to_string()])
        .output()
        .expect("python3 with websockets (Debian package python3-websockets)");
    assert!(
        output.status.success(),
        "tests/sip_websocket.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sent: Vec<String> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(sent.len(), 2 * REQUESTS);
    // Let the kernel hand the last packets to libpcap before stopping.
    std::thread::sleep(Duration::from_millis(500));
    let stdout = common::stop_agent(&mut child, &mut lines);

    let envelopes: Vec<serde_json::Value> = sub
        .collect()
        .iter()
        .map(|text| serde_json::from_str(text).unwrap())
        .collect();
    for envelope in &envelopes {
        assert_eq!(envelope["transport"], "ws", "{envelope}");
    }
    let mut published: Vec<String> = envelopes
        .iter()
        .map(|e| String::from_utf8(common::sip_of(e)).unwrap())
        .collect();
    let mut sent = sent;
    sent.sort();
    published.sort();
    assert_eq!(published.len(), sent.len(), "{stdout}");
    assert!(
        published == sent,
        "published messages differ from what was sent\n{stdout}"
    );
    let count = |name| summary_value(stdout.as_bytes(), name);
    assert_eq!(count("ws_handshakes"), 2, "{stdout}");
    assert_eq!(count("ws_messages"), 2 * REQUESTS as u64, "{stdout}");
    // A ping and its pong every fourth request, and the closing handshake.
    let pings = REQUESTS.div_ceil(4) as u64;
    assert_eq!(count("ws_control_frames"), 2 * pings + 2, "{stdout}");
    for name in [
        "ws_bad_frames",
        "ws_inflate_failed",
        "ws_not_sip",
        "tcp_junk_lines",
        "tcp_gaps",
    ] {
        assert_eq!(count(name), 0, "{name}\n{stdout}");
    }
    assert!(
        common::accounting_errors(stdout.as_bytes()).is_empty(),
        "{stdout}"
    );
}

#[test]
fn websocket_plain() {
    exchange("plain");
}

#[test]
fn websocket_permessage_deflate() {
    exchange("deflate");
}

#[test]
fn websocket_permessage_deflate_no_context_takeover() {
    exchange("no-takeover");
}
