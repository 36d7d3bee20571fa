//! MQTT over WebSocket (`ws://`, `wss://`) to a real mosquitto behind a
//! real WebSocket-to-TCP proxy, Debian's websockify (tests/websockify_mqtt.py;
//! Debian's mosquitto 2.0.11 cannot open a websockets listener): every
//! envelope arrives as it does over plain TCP, with and without TLS, one per
//! message or batched, across the proxy's pings, and across a restart of
//! the proxy.

mod common;

use common::{Broker, free_port, options, pcap, replay, stop_agent};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// websockify in front of `broker` on `port`, pinging its clients every
/// second; with `tls`, the certificate and key it serves (`wss://` only).
fn proxy(broker: &Broker, port: u16, tls: Option<(&Path, &Path)>) -> Proxy {
    let mut command = Command::new("/usr/bin/python3");
    command.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/websockify_mqtt.py"));
    if let Some((cert, key)) = tls {
        command
            .arg("--ssl-only")
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key);
    }
    let child = command
        .args(["--heartbeat", "1"])
        .arg(format!("127.0.0.1:{port}"))
        .arg(format!("127.0.0.1:{}", broker.port))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("websockify (Debian package websockify)");
    let proxy = Proxy(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "websockify did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    proxy
}

/// websockify and the process it forks for each connection, killed
/// together when the test ends or drops it, so its connections go too.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

/// The ids of the envelopes of `pcap` replayed to `broker` with `extra`.
fn replayed_ids(broker: &Broker, topic: &str, extra: &[&str]) -> Vec<String> {
    let sub = broker.subscribe(topic);
    replay(broker, topic, &pcap("wireshark.pcap"), extra);
    sub.collect()
        .iter()
        .map(|text| serde_json::from_str::<serde_json::Value>(text).unwrap()["id"].to_string())
        .collect()
}

#[test]
fn ws_delivers_what_tcp_delivers() {
    let broker = Broker::start();
    let port = free_port();
    let _proxy = proxy(&broker, port, None);
    let over_tcp = replayed_ids(&broker, "sip/tcp", &[]);
    let url = format!("ws://127.0.0.1:{port}/mqtt");
    let over_ws = replayed_ids(&broker, "sip/ws", &["--broker", &url]);
    assert_eq!(over_tcp.len(), 81);
    assert_eq!(over_ws, over_tcp);
    // Batched: the same envelopes, in JSON arrays.
    let sub = broker.subscribe("sip/ws-batched");
    replay(
        &broker,
        "sip/ws-batched",
        &pcap("wireshark.pcap"),
        &["--broker", &url, "--batch-max-messages", "10"],
    );
    let batched: Vec<String> = sub
        .collect()
        .iter()
        .flat_map(|text| serde_json::from_str::<Vec<serde_json::Value>>(text).unwrap())
        .map(|envelope| envelope["id"].to_string())
        .collect();
    assert_eq!(batched, over_tcp);
}

#[test]
#[cfg(feature = "tls")]
fn wss_verifies_the_proxys_certificate() {
    let dir = tempfile::tempdir().unwrap();
    common::certificate(dir.path(), "ca", None, "");
    common::certificate(dir.path(), "server", Some("ca"), "IP:127.0.0.1");
    let broker = Broker::start();
    let port = free_port();
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    let _proxy = proxy(&broker, port, Some((&cert, &key)));
    let url = format!("wss://127.0.0.1:{port}/mqtt");
    let ca = dir.path().join("ca.crt");
    let ids = replayed_ids(
        &broker,
        "sip/wss",
        &["--broker", &url, "--ca-file", ca.to_str().unwrap()],
    );
    assert_eq!(ids.len(), 81);
}

/// The proxy (and with it the WebSocket) goes away mid-run and comes back:
/// the agent reconnects and every message arrives (at least once).
#[test]
fn ws_survives_a_proxy_restart() {
    if !common::can_capture_on_lo() {
        return;
    }
    let broker = Broker::start();
    let port = free_port();
    let mut proxy_before = Some(proxy(&broker, port, None));
    let sub = broker.subscribe("sip/ws-live");
    let url = format!("ws://127.0.0.1:{port}/mqtt");
    let (mut agent, mut lines, target) = common::live_agent_on_udp(&url, "sip/ws-live", &[]);
    let to = target.local_addr().unwrap();
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    const COUNT: usize = 200;
    for n in 0..COUNT {
        if n == COUNT / 2 {
            drop(proxy_before.take());
            std::thread::sleep(Duration::from_millis(300));
        }
        sender.send_to(&options("ws-restart", n), to).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let _proxy_after = proxy(&broker, port, None);
    lines.wait_for("reconnected to broker", Duration::from_secs(40));
    let out = stop_agent(&mut agent, &mut lines);
    let mut got: Vec<String> = sub
        .collect()
        .iter()
        .map(|text| common::call_id(&serde_json::from_str(text).unwrap()))
        .collect();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), COUNT, "every message arrives at least once\n{out}");
}
