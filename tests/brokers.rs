//! Brokers that misbehave. Where a real mosquitto can be made to (two
//! agents with one CLIENT_ID), it is used; where it cannot, a small
//! scripted server on a free loopback port plays the broker: one that
//! closes right after CONNACK. Each test counts connections over a fixed
//! time and checks the log lines and counters.

mod common;

use common::{KillOnDrop, Lines, read_packet, summary_value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// MQTT 5 CONNACK: no session present, Success, no properties.
const CONNACK_V5: &[u8] = &[0x20, 0x03, 0x00, 0x00, 0x00];

/// A scripted broker on a free loopback port: each connection is counted
/// and handed to `script` on its own thread.
struct Scripted {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl Scripted {
    fn start(script: fn(TcpStream)) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                counted.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || script(stream));
            }
        });
        Scripted { port, connections }
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// The agent reading a capture (so it has something to deliver) and
/// publishing to `url`, with `extra` flags.
fn agent_against(url: &str, extra: &[&str]) -> (KillOnDrop, Lines) {
    let mut child = common::spawn(
        common::agent()
            .args(["--read"])
            .arg(common::pcap("no-to-tag.pcap"))
            .args(["--broker", url, "--topic", "sip/brokers"])
            .args(extra)
            .stdout(Stdio::piped()),
    );
    let lines = Lines::of(&mut child);
    (child, lines)
}

/// The most connections an agent may open in `window` when every one is
/// short-lived: the first at once, then after each backoff delay at its
/// shortest (half of 0.5 s, 1 s, 2 s, ... 30 s).
fn most_connections(window: Duration) -> usize {
    let (mut at, mut next, mut count) = (Duration::ZERO, Duration::from_millis(500), 1);
    loop {
        at += next / 2;
        if at > window {
            return count;
        }
        count += 1;
        next = (next * 2).min(Duration::from_secs(30));
    }
}

/// A broker that accepts and closes the connection right after CONNACK:
/// the agent backs off as if the connection had failed, and says so once.
#[test]
fn a_broker_that_closes_after_connack_is_retried_with_backoff() {
    let server = Scripted::start(|mut stream| {
        if read_packet(&mut stream).is_some() {
            let _ = stream.write_all(CONNACK_V5);
        }
    });
    const WINDOW: Duration = Duration::from_secs(8);
    let (child, mut lines) = agent_against(&server.url(), &[]);
    let seen = lines.gather(WINDOW).to_vec();
    let connections = server.connections();
    drop(child);
    let log = seen.join("\n");
    println!("{connections} connections in {WINDOW:?}\n{log}");
    assert!(
        (3..=most_connections(WINDOW)).contains(&connections),
        "{connections} connections in {WINDOW:?}, at most {} allowed\n{log}",
        most_connections(WINDOW)
    );
    // One line per cause a minute: the first close, then the second in a
    // row, which names the likely cause.
    let lost: Vec<&String> = seen.iter().filter(|l| l.contains("lost broker")).collect();
    assert_eq!(lost.len(), 2, "one line per cause a minute\n{log}");
    assert!(
        lost[0].contains("closed the connection soon after accepting it; retrying"),
        "{log}"
    );
    assert!(
        lost[1].contains("another client is probably using CLIENT_ID"),
        "{log}"
    );
}

/// GET /metrics from the agent's endpoint at `addr`: the body.
fn metrics(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// A broker that says the session was taken over (MQTT 5 DISCONNECT with
/// reason 0x8E) right after CONNACK: the log names the cause, and the
/// metrics count it.
#[test]
fn session_taken_over_is_named_and_counted() {
    let server = Scripted::start(|mut stream| {
        if read_packet(&mut stream).is_some() {
            let _ = stream.write_all(CONNACK_V5);
            let _ = stream.write_all(&[0xe0, 0x02, 0x8e, 0x00]);
        }
    });
    let addr = format!("127.0.0.1:{}", common::free_port());
    let (child, mut lines) = agent_against(&server.url(), &["--client-id", "tap-7", "--metrics-addr", &addr]);
    let seen = lines.gather(Duration::from_secs(3)).join("\n");
    let before = server.connections();
    let body = metrics(&addr);
    let after = server.connections();
    drop(child);
    assert!(
        seen.contains(r#"another client is using CLIENT_ID "tap-7""#) && seen.contains("0x8E"),
        "{seen}"
    );
    let counted: usize = body
        .lines()
        .find_map(|l| l.strip_prefix("sip_capture_client_id_conflicts_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no conflict counter in\n{body}"));
    // Each connection was taken over (one may be under way at the query).
    assert!(
        (before.saturating_sub(1)..=after).contains(&counted) && counted >= 2,
        "{counted} counted, {before}..{after} connections"
    );
}

/// mosquitto with everything logged to `dir/mosquitto.log`.
fn logging_broker(dir: &std::path::Path) -> (KillOnDrop, u16) {
    let conf = dir.join("mosquitto.conf");
    for _ in 0..5 {
        let port = common::free_port();
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n\
log_dest file {}/mosquitto.log\nlog_type all\n",
                dir.display()
            ),
        )
        .unwrap();
        if let Some(child) = common::mosquitto(&conf, port) {
            return (child, port);
        }
    }
    panic!("mosquitto did not start");
}

/// Two agents with one CLIENT_ID take the session from each other: each
/// backs off, so the connections over a fixed time stay few, and the
/// retained `online` status is published once per agent, not per attempt.
#[test]
fn two_agents_with_one_client_id_back_off() {
    if !common::can_capture_on_lo() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = logging_broker(dir.path());
    let url = format!("mqtt://127.0.0.1:{port}");
    const WINDOW: Duration = Duration::from_secs(10);
    let started = Instant::now();
    let same = ["--client-id", "twin"];
    let (mut first, mut first_lines) = common::live_agent(&url, "sip/twins", "udp port 9", &same);
    let (mut second, mut second_lines) = common::live_agent(&url, "sip/twins", "udp port 9", &same);
    std::thread::sleep(WINDOW.saturating_sub(started.elapsed()));
    let first_log = common::stop_agent(&mut first, &mut first_lines);
    let second_log = common::stop_agent(&mut second, &mut second_lines);

    let log = std::fs::read_to_string(dir.path().join("mosquitto.log")).unwrap();
    let connections = log
        .lines()
        .filter(|l| l.contains("New client connected") && l.contains(" as twin "))
        .count();
    let online = log
        .lines()
        .filter(|l| l.contains("Received PUBLISH from twin") && l.contains("'sip/twins/status/twin'"))
        .filter(|l| l.contains("(6 bytes)"))
        .count();
    println!("{connections} connections, {online} online statuses in {WINDOW:?}");
    // The stop at the end connects neither; each agent's own bound.
    assert!(
        connections <= 2 * most_connections(WINDOW),
        "{connections} connections in {WINDOW:?}\n{first_log}\n{second_log}"
    );
    assert!(connections >= 3, "the agents took the session from each other");
    assert!((1..=2).contains(&online), "{online} online statuses");
    let reconnects = summary_value(first_log.as_bytes(), "reconnects")
        + summary_value(second_log.as_bytes(), "reconnects");
    assert_eq!(reconnects as usize, connections - 2, "{first_log}\n{second_log}");
    // Every connection but each agent's first taken over, and its last
    // (which may still be up), is counted.
    let conflicts = summary_value(first_log.as_bytes(), "client_id_conflicts")
        + summary_value(second_log.as_bytes(), "client_id_conflicts");
    assert!(
        conflicts as usize >= connections.saturating_sub(4) && conflicts > 0,
        "{conflicts} conflicts counted for {connections} connections"
    );
    let said = format!("{first_log}\n{second_log}");
    assert!(
        said.contains(r#"another client is probably using CLIENT_ID "twin""#),
        "{said}"
    );
}

/// An idle agent keeps its connection: with nothing to publish after its
/// `online` status, it sends a PINGREQ before its keepalive (30 s) runs out
/// (MQTT 5 §3.1.2.10), and the broker never drops it. Takes about 35 s.
#[test]
fn an_idle_connection_is_kept_alive() {
    if !common::can_capture_on_lo() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = logging_broker(dir.path());
    let url = format!("mqtt://127.0.0.1:{port}");
    let quiet = ["--client-id", "idle", "--telemetry-interval-s", "0"];
    let (mut agent, mut lines) = common::live_agent(&url, "sip/idle", "udp port 9", &quiet);
    let broker_log = || std::fs::read_to_string(dir.path().join("mosquitto.log")).unwrap_or_default();
    // mosquitto drops a client silent for 1.5 keepalives (45 s).
    let deadline = Instant::now() + Duration::from_secs(44);
    while !broker_log().contains("Received PINGREQ from idle") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_millis(500));
    let agent_log = common::stop_agent(&mut agent, &mut lines);
    let log = broker_log();
    assert!(
        log.contains("Received PINGREQ from idle"),
        "no PINGREQ in 44 s\n{log}"
    );
    assert!(log.contains("Sending PINGRESP to idle"), "{log}");
    let connections = log
        .lines()
        .filter(|l| l.contains("New client connected") && l.contains(" as idle "))
        .count();
    assert_eq!(connections, 1, "{log}");
    assert!(!log.contains("exceeded timeout"), "{log}");
    assert_eq!(
        summary_value(agent_log.as_bytes(), "reconnects"),
        0,
        "{agent_log}"
    );
}

/// MQTT control packet type of PUBACK (MQTT 5 §2.1.2).
const PUBACK: u8 = 4;

/// The length of the whole MQTT packet at the start of `bytes`, when all
/// of it is there: fixed header byte, Remaining Length (a variable byte
/// integer, MQTT 5 §1.5.5), and that many bytes.
fn mqtt_packet_len(bytes: &[u8]) -> Option<usize> {
    let mut remaining = 0usize;
    for (i, &byte) in bytes.iter().enumerate().skip(1).take(4) {
        remaining |= usize::from(byte & 0x7f) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            let len = i + 1 + remaining;
            return (bytes.len() >= len).then_some(len);
        }
    }
    None
}

/// A TCP proxy on a free loopback port to `target` that can withhold the
/// broker's PUBACKs (`hold`) and cut every connection (`cut`).
struct Proxy {
    port: u16,
    hold: Arc<std::sync::atomic::AtomicBool>,
    clients: Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (held, kept) = (hold.clone(), clients.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let server = TcpStream::connect(("127.0.0.1", target)).unwrap();
                kept.lock().unwrap().push(client.try_clone().unwrap());
                let (mut from_client, mut to_server) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || std::io::copy(&mut from_client, &mut to_server));
                let (mut from_server, mut to_client, held) = (server, client, held.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let mut pending = Vec::new();
                    while let Ok(n @ 1..) = from_server.read(&mut buf) {
                        pending.extend_from_slice(&buf[..n]);
                        let mut passed = Vec::new();
                        while let Some(len) = mqtt_packet_len(&pending) {
                            let packet: Vec<u8> = pending.drain(..len).collect();
                            if !(held.load(Ordering::SeqCst) && packet[0] >> 4 == PUBACK) {
                                passed.extend(packet);
                            }
                        }
                        if to_client.write_all(&passed).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Proxy { port, hold, clients }
    }

    fn cut(&self) {
        for client in self.clients.lock().unwrap().drain(..) {
            let _ = client.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Cut the connections, pass everything from now on, and wait until
    /// the agent says it resumed its session.
    fn reconnect(&self, lines: &mut Lines) {
        self.cut();
        self.hold.store(false, Ordering::SeqCst);
        lines.wait_for("resumed the session", Duration::from_secs(5));
    }

    /// Cut the connections and wait until the agent says it resumed its
    /// session, still withholding the broker's PUBACKs.
    fn reconnect_withheld(&self, lines: &mut Lines) {
        self.cut();
        lines.wait_for("resumed the session", Duration::from_secs(5));
    }
}

/// The agent capturing UDP on `lo` and publishing `topic` to `broker`
/// through a [`Proxy`] that withholds the broker's PUBACKs from the moment
/// the agent's online status has been acknowledged.
fn agent_with_pubacks_withheld(
    broker: &common::Broker,
    topic: &str,
    extra: &[&str],
) -> (Proxy, KillOnDrop, Lines, std::net::UdpSocket) {
    let proxy = Proxy::start(broker.port);
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    let (child, lines, target) = common::live_agent_on_udp(&url, topic, extra);
    std::thread::sleep(Duration::from_millis(300));
    proxy.hold.store(true, Ordering::SeqCst);
    (proxy, child, lines, target)
}

/// The connection breaks while five publishes wait for their PUBACK; the
/// reconnect resumes the session and minimq sends them again: they are
/// counted as `resent_on_resume`, and the subscriber sees exactly those
/// twice.
#[test]
fn envelopes_resent_on_a_resumed_session_are_counted() {
    if !common::can_capture_on_lo() {
        return;
    }
    let broker = common::Broker::start();
    let sub = broker.subscribe("sip/resumed");
    let (proxy, mut child, mut lines, target) = agent_with_pubacks_withheld(&broker, "sip/resumed", &[]);
    common::send_options(&target, "resumed", 5);
    std::thread::sleep(Duration::from_millis(500));
    proxy.reconnect(&mut lines);
    std::thread::sleep(Duration::from_millis(300));
    let stdout = common::stop_agent(&mut child, &mut lines);
    let arrived = sub.collect();
    assert_eq!(arrived.len(), 10, "each of five twice\n{stdout}");
    assert_eq!(
        summary_value(stdout.as_bytes(), "resent_on_resume"),
        5,
        "{stdout}"
    );
    assert_eq!(summary_value(stdout.as_bytes(), "acknowledged"), 5, "{stdout}");
    assert_eq!(summary_value(stdout.as_bytes(), "republished"), 0, "{stdout}");
}

/// The in-flight window: while the broker's PUBACKs are withheld, exactly
/// MAX_INFLIGHT_MESSAGES publishes reach the broker (64 by default, far
/// above minimq 0.13.5's fixed 8), or the broker's Receive Maximum when
/// lower (mosquitto's max_inflight_messages, 20 by default).
#[test]
fn the_in_flight_window_is_max_inflight_messages_or_the_brokers_receive_maximum() {
    if !common::can_capture_on_lo() {
        return;
    }
    let cases: [(&str, &[&str], usize); 4] = [
        (
            "max_inflight_messages 0\n",
            &["--max-inflight-messages", "100"],
            100,
        ),
        ("max_inflight_messages 0\n", &[], 64),
        ("", &[], 20),
        (
            "max_inflight_messages 5\n",
            &["--max-inflight-messages", "100"],
            5,
        ),
    ];
    for (conf, extra, window) in cases {
        let broker = common::Broker::start_with(conf);
        let sub = broker.subscribe("sip/window");
        let (_proxy, _child, _lines, target) = agent_with_pubacks_withheld(&broker, "sip/window", extra);
        common::send_options(&target, "window", 150);
        std::thread::sleep(Duration::from_millis(1000));
        let arrived = sub.collect();
        assert_eq!(
            arrived.len(),
            window,
            "{conf:?} {extra:?}: publishes that reached the broker without a PUBACK back"
        );
        let calls: Vec<String> = arrived
            .iter()
            .map(|m| common::call_id(&serde_json::from_str(m).unwrap()))
            .collect();
        assert_eq!(
            calls,
            (0..window).map(|n| format!("window-{n}")).collect::<Vec<_>>()
        );
    }
}

/// A resumed session whose whole window was in flight: minimq sends those
/// publishes again, and the agent sends nothing new on top of them until
/// PUBACKs come (MQTT 5 §4.9; mosquitto acknowledges a QoS 1 publish at
/// once and so never sees the excess, but a broker that acknowledges once
/// a message is stored may drop the connection for it). Everything
/// arrives, after one reconnect.
#[test]
fn a_resumed_full_window_keeps_to_the_receive_maximum() {
    if !common::can_capture_on_lo() {
        return;
    }
    let broker = common::Broker::start();
    let sub = broker.subscribe("sip/full");
    let (proxy, mut child, mut lines, target) = agent_with_pubacks_withheld(&broker, "sip/full", &[]);
    common::send_options(&target, "full", 60);
    std::thread::sleep(Duration::from_millis(500));
    proxy.reconnect(&mut lines);
    std::thread::sleep(Duration::from_millis(1500));
    let stdout = common::stop_agent(&mut child, &mut lines);
    let arrived = sub.collect();
    let calls: std::collections::BTreeSet<String> = arrived
        .iter()
        .map(|m| common::call_id(&serde_json::from_str(m).unwrap()))
        .collect();
    assert_eq!(calls.len(), 60, "every message arrived\n{stdout}");
    assert_eq!(
        arrived.len(),
        80,
        "the 20 in flight twice, the rest once\n{stdout}"
    );
    assert_eq!(
        summary_value(stdout.as_bytes(), "resent_on_resume"),
        20,
        "{stdout}"
    );
    assert_eq!(summary_value(stdout.as_bytes(), "reconnects"), 1, "{stdout}");
}

/// The publishes sent again on a resumed session take their place in the
/// broker's Receive Maximum (MQTT 5 §4.9) before anything new: with the
/// whole window of 20 (a stock mosquitto's Receive Maximum) sent again and
/// still unacknowledged, no telemetry report goes on top of it, however
/// often one falls due. Once the PUBACKs come, everything arrives and the
/// reports resume.
#[test]
fn resent_publishes_count_against_the_receive_maximum() {
    if !common::can_capture_on_lo() {
        return;
    }
    let broker = common::Broker::start();
    let sub = broker.subscribe("sip/quota");
    let reports = broker.subscribe("sip/quota-telemetry");
    let extra = [
        "--telemetry-interval-s",
        "1",
        "--telemetry-topic",
        "sip/quota-telemetry",
    ];
    let (proxy, mut child, mut lines, target) = agent_with_pubacks_withheld(&broker, "sip/quota", &extra);
    common::send_options(&target, "quota", 60);
    std::thread::sleep(Duration::from_millis(500));
    proxy.reconnect_withheld(&mut lines);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        reports.collect().len(),
        0,
        "telemetry reports sent beyond the Receive Maximum"
    );
    let mut arrived = sub.collect();
    assert_eq!(arrived.len(), 40, "the window of 20, twice");
    proxy.reconnect(&mut lines);
    std::thread::sleep(Duration::from_millis(2500));
    let stdout = common::stop_agent(&mut child, &mut lines);
    arrived.extend(sub.collect());
    let calls: std::collections::BTreeSet<String> = arrived
        .iter()
        .map(|m| common::call_id(&serde_json::from_str(m).unwrap()))
        .collect();
    assert_eq!(calls.len(), 60, "every message arrived\n{stdout}");
    assert!(!reports.collect().is_empty(), "the reports resumed\n{stdout}");
    assert_eq!(summary_value(stdout.as_bytes(), "reconnects"), 2, "{stdout}");
}

/// Whether this process may make a mount namespace of its own (root, and
/// `unshare` allowed); when not, the test says it skipped.
fn can_unshare_mounts() -> bool {
    let ok = std::process::Command::new("unshare")
        .args(["-m", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: cannot make a mount namespace (unshare -m needs root)");
    }
    ok
}

/// Debian's stock /etc/hosts lists `::1 localhost` before `127.0.0.1`: with
/// a broker listening on 127.0.0.1 only, `mqtt://localhost:PORT` must still
/// connect, on the second address. The agent runs in a mount namespace of
/// the test's own, with its own /etc/hosts bound over the real one.
#[test]
fn every_address_of_the_broker_name_is_tried() {
    if !can_unshare_mounts() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "::1 localhost\n127.0.0.1 localhost\n").unwrap();
    let broker = common::Broker::start();
    let sub = broker.subscribe("sip/localhost");
    let url = format!("mqtt://localhost:{}", broker.port);
    let mut unshare = std::process::Command::new("unshare");
    let mut child = common::spawn(
        common::clean_environment(&mut unshare)
            .args(["-m", "sh", "-c", r#"mount --bind "$0" /etc/hosts && exec "$@""#])
            .arg(&hosts)
            .arg(common::AGENT)
            .args(["--config", "/dev/null", "--read"])
            .arg(common::pcap("no-to-tag.pcap"))
            .args(["--broker", &url, "--topic", "sip/localhost"])
            .stdout(Stdio::piped()),
    );
    let mut lines = Lines::of(&mut child);
    lines.wait_for("summary:", Duration::from_secs(10));
    let log = lines.seen.join("\n");
    let expected = format!(
        "connected to broker localhost:{port} at 127.0.0.1:{port}",
        port = broker.port
    );
    assert!(log.contains(&expected), "{expected:?} not in\n{log}");
    assert_eq!(summary_value(log.as_bytes(), "acknowledged"), 1, "{log}");
    assert_eq!(sub.collect().len(), 1);
}

/// A broker that accepts and never answers: SIGTERM while the agent waits
/// for it (in the TLS handshake with `mqtts://`, for CONNACK with
/// `mqtt://`) exits within DRAIN_GRACE (5 s), counting what it could not
/// deliver.
fn stop_gives_way_to_a_silent_broker(scheme: &str) {
    let server = Scripted::start(|stream| {
        std::thread::sleep(Duration::from_secs(30));
        drop(stream);
    });
    let url = format!("{scheme}://127.0.0.1:{}", server.port);
    let (mut child, mut lines) = agent_against(&url, &[]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.connections() == 0 {
        assert!(Instant::now() < deadline, "the agent never connected");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let stopped = Instant::now();
    let stdout = common::stop_agent(&mut child, &mut lines);
    let took = stopped.elapsed();
    println!("{scheme}: exit {took:?} after SIGTERM");
    assert!(
        took <= Duration::from_secs(6),
        "{scheme}: exit {took:?} after SIGTERM\n{stdout}"
    );
    assert_eq!(
        summary_value(stdout.as_bytes(), "undelivered_at_exit"),
        1,
        "{stdout}"
    );
}

#[test]
fn stop_gives_way_to_a_hanging_connect() {
    stop_gives_way_to_a_silent_broker("mqtt");
}

#[cfg(feature = "tls")]
#[test]
fn stop_gives_way_to_a_hanging_tls_handshake() {
    stop_gives_way_to_a_silent_broker("mqtts");
}

/// An IPv6 broker address is logged in brackets, as in the URL.
#[test]
fn ipv6_addresses_are_logged_in_brackets() {
    let port = common::free_port();
    let (child, mut lines) = agent_against(&format!("mqtt://[::1]:{port}"), &[]);
    let expected = format!("broker [::1]:{port}: TCP connect: [::1]:{port}: ");
    lines.wait_for(&expected, Duration::from_secs(5));
    drop(child);
}

/// A broker that refuses the retained status (an ACL without the status
/// topic) but takes the envelopes: the log says it was the status, and
/// the envelope counts as acknowledged, not rejected.
#[test]
fn a_rejected_status_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic readwrite sip/acl\n").unwrap();
    let conf = dir.path().join("mosquitto.conf");
    let port = common::free_port();
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\nacl_file {}\n",
            acl.display()
        ),
    )
    .unwrap();
    let _broker = common::mosquitto(&conf, port).expect("mosquitto started");
    let output = common::agent()
        .args(["--read"])
        .arg(common::pcap("no-to-tag.pcap"))
        .args([
            "--broker",
            &format!("mqtt://127.0.0.1:{port}"),
            "--topic",
            "sip/acl",
        ])
        .args(["--client-id", "acl-1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(
            r#"broker rejected the retained status "online" on STATUS_TOPIC "sip/acl/status/acl-1": NotAuthorized"#
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("envelopes: NotAuthorized"), "{stdout}");
    assert_eq!(summary_value(&output.stdout, "acknowledged"), 1, "{stdout}");
    assert_eq!(summary_value(&output.stdout, "rejected"), 0, "{stdout}");
}

/// A broker that speaks only MQTT 3.1.1, as `script` plays it: named as
/// such, once a minute, with backoff.
fn an_mqtt_3_broker_is_named(script: fn(TcpStream), expected: &str) {
    let server = Scripted::start(script);
    const WINDOW: Duration = Duration::from_secs(4);
    let (child, mut lines) = agent_against(&server.url(), &[]);
    let seen = lines.gather(WINDOW).to_vec();
    let connections = server.connections();
    drop(child);
    let log = seen.join("\n");
    let named: Vec<&String> = seen
        .iter()
        .filter(|l| l.contains("the broker appears not to support MQTT 5"))
        .collect();
    assert_eq!(named.len(), 1, "one line a minute\n{log}");
    assert!(named[0].contains(expected), "{expected:?} not in\n{log}");
    assert!(
        (2..=most_connections(WINDOW)).contains(&connections),
        "{connections} connections in {WINDOW:?}\n{log}"
    );
}

/// aedes answers an MQTT 5 CONNECT with a 3.1.1 CONNACK, return code 1.
#[test]
fn a_3_1_1_connack_is_named() {
    an_mqtt_3_broker_is_named(
        |mut stream| {
            if read_packet(&mut stream).is_some() {
                let _ = stream.write_all(&[0x20, 0x02, 0x00, 0x01]);
            }
        },
        "MQTT 3.1.1 CONNACK (return code 1, unacceptable protocol version)",
    );
}

/// RabbitMQ before 3.13 closes the socket on an MQTT 5 CONNECT.
#[test]
fn a_close_on_connect_is_named() {
    an_mqtt_3_broker_is_named(
        |mut stream| {
            let _ = read_packet(&mut stream);
        },
        "closed the connection without answering CONNECT",
    );
}
