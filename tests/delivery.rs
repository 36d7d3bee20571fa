//! At-least-once delivery across broker restarts, and exact accounting when
//! the broker is away longer than the store holds. Live SIP on `lo`, a
//! real mosquitto restarted under the agent, a persistent QoS 1 subscriber.

mod common;

use common::KillOnDrop;
use common::summary_value;
use std::collections::HashMap;
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// mosquitto on a fixed port with persistence in `dir`, so that a clean
/// restart keeps the subscriber's session and queued messages. Each start
/// logs everything to its own file, `mosquitto-<n>.log` from 0.
fn start_broker(dir: &Path, port: u16) -> KillOnDrop {
    let conf = dir.join("mosquitto.conf");
    let starts = (0..).find(|n| !broker_log(dir, *n).exists()).unwrap();
    std::fs::write(
        &conf,
        format!(
            // `user root`: started as root, mosquitto would otherwise run as
            // its own user, which cannot write the test's directory.
            "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n\
persistence true\npersistence_location {}/\nautosave_interval 0\nuser root\n\
log_dest file {}\nlog_type all\n",
            dir.display(),
            broker_log(dir, starts).display()
        ),
    )
    .unwrap();
    common::mosquitto(&conf, port).expect("mosquitto started")
}

fn broker_log(dir: &Path, start: usize) -> std::path::PathBuf {
    dir.join(format!("mosquitto-{start}.log"))
}

/// Lines of a broker's log that contain `text`.
fn log_count(dir: &Path, start: usize, text: &str) -> usize {
    let log = std::fs::read_to_string(broker_log(dir, start)).unwrap();
    log.lines().filter(|l| l.contains(text)).count()
}

fn stop_broker(mut broker: KillOnDrop) {
    common::terminate(&broker);
    broker.wait().unwrap();
}

/// The Call-ID number of each envelope, with how often it arrived.
fn arrivals(envelopes: &[String]) -> HashMap<usize, usize> {
    let mut seen = HashMap::new();
    for text in envelopes {
        let call_id = common::call_id(&serde_json::from_str(text).unwrap());
        let n: usize = call_id
            .strip_prefix("delivery-")
            .and_then(|n| n.parse().ok())
            .expect("a numbered Call-ID");
        *seen.entry(n).or_insert(0) += 1;
    }
    seen
}

/// Send `count` messages at `per_second` to a port the agent captures,
/// calling `during(i)` before message `i`.
fn send_stream(port: u16, count: usize, per_second: usize, mut during: impl FnMut(usize)) {
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let start = Instant::now();
    for n in 0..count {
        during(n);
        let due = start + Duration::from_secs_f64(n as f64 / per_second as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        sender
            .send_to(&common::options("delivery", n), ("127.0.0.1", port))
            .unwrap();
    }
}

struct Run {
    stdout: String,
    envelopes: Vec<String>,
}

/// Run the agent on `lo` while `count` messages are sent; `during` may
/// restart the broker. The subscriber collects at the end.
fn run(
    dir: &Path,
    broker_port: u16,
    count: usize,
    extra: &[&str],
    during: impl FnMut(usize, &mut Option<KillOnDrop>),
) -> Run {
    let mut broker = Some(start_broker(dir, broker_port));
    let url = format!("mqtt://127.0.0.1:{broker_port}");
    // A persistent subscriber session, offline while the stream runs.
    let subscription = common::Subscription::new(broker_port, "sip/delivery");

    let (mut child, mut lines, target) = common::live_agent_on_udp(&url, "sip/delivery", extra);
    let port = target.local_addr().unwrap().port();
    let mut during = during;
    send_stream(port, count, 1000, |n| during(n, &mut broker));
    if broker.is_none() {
        broker = Some(start_broker(dir, broker_port));
    }
    // Let the agent deliver what it holds, then stop it cleanly.
    std::thread::sleep(Duration::from_secs(3));
    let stdout = common::stop_agent(&mut child, &mut lines);

    let envelopes = subscription.collect();
    stop_broker(broker.unwrap());
    Run { stdout, envelopes }
}

/// The broker is stopped and restarted three times during the stream: every
/// message arrives at least once; duplicates are counted and reported.
#[test]
fn broker_restarts_lose_nothing() {
    if !common::can_capture_on_lo() {
        return;
    }
    const COUNT: usize = 12_000;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let run = run(dir.path(), port, COUNT, &[], |n, broker| {
        if n > 0 && n % 3000 == 0 {
            // Down for half a second, then back on the same port.
            stop_broker(broker.take().unwrap());
            std::thread::sleep(Duration::from_millis(500));
            *broker = Some(start_broker(dir.path(), port));
        }
    });
    let seen = arrivals(&run.envelopes);
    let missing: Vec<usize> = (0..COUNT).filter(|n| !seen.contains_key(n)).collect();
    let duplicates: usize = seen.values().map(|c| c - 1).sum();
    println!(
        "{} envelopes, {} distinct, {duplicates} duplicates, reconnects {}, republished {}",
        run.envelopes.len(),
        seen.len(),
        summary_value(run.stdout.as_bytes(), "reconnects"),
        summary_value(run.stdout.as_bytes(), "republished")
    );
    assert!(
        missing.is_empty(),
        "{} never arrived, first {:?}\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        run.stdout
    );
    assert_eq!(summary_value(run.stdout.as_bytes(), "reconnects"), 3);
    assert_eq!(summary_value(run.stdout.as_bytes(), "dropped_queue_full"), 0);
    assert_eq!(summary_value(run.stdout.as_bytes(), "undelivered_at_exit"), 0);
}

/// The broker hangs for 200 ms (SIGSTOP), so publishes are in flight, and
/// is then killed (SIGKILL: it saves nothing), three times during the
/// stream, while a subscriber stays connected (it reconnects and subscribes
/// again by itself). The broker loses its sessions, so the agent sends
/// everything it had no PUBACK for again; what may still be missing is only
/// what a killed broker had acknowledged and not yet delivered: its
/// PUBACKs to the agent minus the subscriber's PUBACKs to it, from its log.
#[test]
fn broker_killed_loses_only_what_it_had_acknowledged() {
    if !common::can_capture_on_lo() {
        return;
    }
    const COUNT: usize = 12_000;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut broker = Some(start_broker(dir.path(), port));
    let received = dir.path().join("received.jsonl");
    let _subscriber = common::spawn(
        Command::new("mosquitto_sub")
            .args([
                "-p",
                &port.to_string(),
                "-t",
                "sip/killed",
                "-q",
                "1",
                "-i",
                "killed-sub",
            ])
            .stdout(std::fs::File::create(&received).unwrap()),
    );
    let (mut child, mut lines, target) = common::live_agent_on_udp(
        &format!("mqtt://127.0.0.1:{port}"),
        "sip/killed",
        &["--client-id", "killed-agent"],
    );
    let capture_port = target.local_addr().unwrap().port();
    send_stream(capture_port, COUNT, 1000, |n| {
        if n > 0 && n % 3000 == 0 {
            let mut killed = broker.take().unwrap();
            Command::new("kill")
                .args(["-STOP", &killed.id().to_string()])
                .status()
                .unwrap();
            std::thread::sleep(Duration::from_millis(200));
            killed.kill().unwrap();
            killed.wait().unwrap();
            std::thread::sleep(Duration::from_millis(500));
            broker = Some(start_broker(dir.path(), port));
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    let stdout = common::stop_agent(&mut child, &mut lines);
    let status = Command::new("mosquitto_pub")
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "sip/killed",
            "-q",
            "1",
            "-m",
            "--end--",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let envelopes: Vec<String> = loop {
        let text = std::fs::read_to_string(&received).unwrap();
        if text.lines().any(|l| l == "--end--") {
            break text
                .lines()
                .filter(|l| *l != "--end--")
                .map(String::from)
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "the subscriber never got the end marker"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(broker);

    let seen = arrivals(&envelopes);
    let missing = (0..COUNT).filter(|n| !seen.contains_key(n)).count();
    let duplicates: usize = seen.values().map(|c| c - 1).sum();
    // Per killed broker: PUBACKs to the agent (one was its `online` status)
    // minus PUBACKs from the subscriber.
    let lost_by_brokers: usize = (0..3)
        .map(|start| {
            let acknowledged = log_count(dir.path(), start, "Sending PUBACK to killed-agent");
            let delivered = log_count(dir.path(), start, "Received PUBACK from killed-sub");
            acknowledged.saturating_sub(1 + delivered)
        })
        .sum();
    let value = |name| summary_value(stdout.as_bytes(), name);
    println!(
        "SIGKILL x3: {} distinct of {COUNT}, {missing} missing, {duplicates} duplicates; \
acknowledged by a killed broker and never delivered: {lost_by_brokers}; agent: reconnects {}, republished {}",
        seen.len(),
        value("reconnects"),
        value("republished")
    );
    for line in stdout.lines().filter(|l| l.contains("lost the session")) {
        println!("agent: {line}");
    }
    assert!(
        missing <= lost_by_brokers,
        "{missing} missing, only {lost_by_brokers} lost by brokers\n{stdout}"
    );
    assert_eq!(value("reconnects"), 3);
    assert!(value("republished") >= 3, "each kill left publishes in flight");
    assert_eq!(value("dropped_queue_full"), 0);
    assert_eq!(value("undelivered_at_exit"), 0);
}

/// The broker is away longer than the store holds: the agent's drop counter
/// equals exactly the number of messages that never arrive.
#[test]
fn broker_away_longer_than_the_store_holds() {
    if !common::can_capture_on_lo() {
        return;
    }
    const COUNT: usize = 4000;
    let dir = tempfile::tempdir().unwrap();
    // About 60 envelopes of ~700 bytes fit.
    let small_store = ["--queue-bytes", "140000", "--max-message-bytes", "1024"];
    let port = common::free_port();
    let run = run(dir.path(), port, COUNT, &small_store, |n, broker| {
        if n == 1000 {
            stop_broker(broker.take().unwrap());
        }
        if n == 3000 {
            *broker = Some(start_broker(dir.path(), port));
        }
    });
    let seen = arrivals(&run.envelopes);
    let missing = (0..COUNT).filter(|n| !seen.contains_key(n)).count() as u64;
    let dropped = summary_value(run.stdout.as_bytes(), "dropped_queue_full");
    println!("{missing} missing, {dropped} dropped");
    assert!(dropped > 1000, "the store overflowed: {dropped}");
    assert_eq!(missing, dropped, "{}", run.stdout);
}

/// The retained status: `online` while the agent runs, `offline` after it
/// is killed (the Last Will) and after a clean stop.
#[test]
fn status_online_then_offline() {
    if !common::can_capture_on_lo() {
        return;
    }
    let broker = common::Broker::start();
    let port = broker.port.to_string();
    let status = |topic: &str| -> String {
        let out = Command::new("mosquitto_sub")
            .args(["-p", &port, "-t", topic, "-C", "1", "-W", "5"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for (stop, how) in [("-KILL", "killed"), ("-TERM", "stopped")] {
        let (mut child, _lines) = common::live_agent(
            &broker.url(),
            "sip/status-test",
            "udp port 9",
            &["--client-id", "sensor-7"],
        );
        let topic = "sip/status-test/status/sensor-7";
        let deadline = Instant::now() + Duration::from_secs(5);
        while status(topic) != "online" {
            assert!(Instant::now() < deadline, "no retained online status");
        }
        Command::new("kill")
            .args([stop, &child.id().to_string()])
            .status()
            .unwrap();
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while status(topic) != "offline" {
            assert!(
                Instant::now() < deadline,
                "no retained offline status after the agent was {how}"
            );
        }
    }
}

/// Telemetry arrives on its topic, with counters that match what was sent.
#[test]
fn telemetry_reports_the_counters() {
    if !common::can_capture_on_lo() {
        return;
    }
    let broker = common::Broker::start();
    let telemetry = broker.subscribe("sip/telemetry-test/telemetry/sensor-9");
    let (mut child, mut lines, target) = common::live_agent_on_udp(
        &broker.url(),
        "sip/telemetry-test",
        &["--client-id", "sensor-9", "--telemetry-interval-s", "1"],
    );
    let port = target.local_addr().unwrap().port();
    send_stream(port, 50, 1000, |_| {});
    std::thread::sleep(Duration::from_millis(2500));
    common::stop_agent(&mut child, &mut lines);

    let reports: Vec<serde_json::Value> = telemetry
        .collect()
        .iter()
        .map(|text| serde_json::from_str(text).unwrap())
        .collect();
    assert!(reports.len() >= 2, "one report a second: {reports:?}");
    let last = reports.last().unwrap();
    assert_eq!(
        last["agent"],
        format!("sip-capture/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(last["sip_messages"], 50);
    assert_eq!(last["acknowledged"], 50);
    assert_eq!(
        last["pcap_received"].as_u64().map(|n| n >= 50),
        Some(true),
        "{last}"
    );
    assert!(last["uptime_s"].as_u64().unwrap() >= 2);
}

/// Inodes of the TCP sockets in LISTEN state that process `pid` holds.
fn listening_sockets(pid: u32) -> Vec<String> {
    let mut listening = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) == Some(&"0A") {
                listening.push(fields[9].to_string());
            }
        }
    }
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            let inode = link.strip_prefix("socket:[")?.strip_suffix(']')?.to_string();
            listening.contains(&inode).then_some(inode)
        })
        .collect()
}

/// METRICS_ADDR serves counters that promtool accepts; without it the agent
/// listens on nothing.
#[test]
fn metrics_endpoint_passes_promtool_and_is_off_by_default() {
    if !common::can_capture_on_lo() {
        return;
    }
    let broker = common::Broker::start();
    let metrics_port = common::free_port();
    let start = |extra: &[&str]| {
        let (child, lines) = common::live_agent(&broker.url(), "sip/metrics-test", "udp port 9", extra);
        (child, lines)
    };

    let (mut quiet, _lines) = start(&[]);
    assert_eq!(listening_sockets(quiet.id()), Vec::<String>::new());
    let _ = quiet.kill();
    let _ = quiet.wait();

    let addr = format!("127.0.0.1:{metrics_port}");
    let (mut child, _lines) = start(&["--metrics-addr", &addr]);
    assert_eq!(listening_sockets(child.id()).len(), 1);
    let mut stream = TcpStream::connect(&addr).unwrap();
    use std::io::{Read, Write};
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(body.contains("sip_capture_packets_total "), "{body}");
    assert!(body.contains("# TYPE sip_capture_store_bytes gauge"), "{body}");

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (make test installs prometheus)");
    promtool.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The real and effective uid and gid of process `pid`.
fn ids(pid: u32) -> (String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    (field("Uid:"), field("Gid:"))
}

/// With RUN_AS_USER, the agent runs as that user after start-up and still captures.
#[test]
fn drops_privileges_and_still_captures() {
    if !common::can_capture_on_lo() || ids(std::process::id()).0 != "0 0" {
        eprintln!("SKIPPED privilege test: it needs root to drop from");
        return;
    }
    let broker = common::Broker::start();
    let sub = broker.subscribe("sip/privileges");
    let (mut child, mut lines, target) =
        common::live_agent_on_udp(&broker.url(), "sip/privileges", &["--run-as-user", "nobody"]);
    let port = target.local_addr().unwrap().port();
    assert_eq!(ids(child.id()).0, "65534 65534", "running as nobody");
    send_stream(port, 100, 1000, |_| {});
    std::thread::sleep(Duration::from_millis(500));
    let stdout = common::stop_agent(&mut child, &mut lines);
    assert!(stdout.contains("running as user nobody"), "{stdout}");
    assert_eq!(sub.collect().len(), 100);
}
