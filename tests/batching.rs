//! Batching: several envelopes per MQTT message, as a JSON array, so that
//! QoS 1 throughput over a long round trip is no longer the in-flight
//! window per round trip. The agent publishes to a real mosquitto through
//! a proxy that delays every byte by 10 ms each way (the kernels here have
//! no netem); the rates with and without batching are printed. Batches
//! keep to the broker's Maximum Packet Size (mosquitto with
//! `max_packet_size`), and a batch minimq refuses as too large is split
//! (a scripted broker whose CONNACK the agent cannot read to the end).

mod common;

use common::{Broker, PcapFile, call_id, options, read_packet, summary_value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ONE_WAY: Duration = Duration::from_millis(10);
const MESSAGES: u32 = 2000;

/// A TCP proxy on a free loopback port to `target`, holding every chunk
/// back by `delay` in each direction without limiting throughput.
fn delaying_proxy(target: u16, delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let (Ok(client), Ok(server)) = (client, TcpStream::connect(("127.0.0.1", target))) else {
                continue;
            };
            for s in [&client, &server] {
                s.set_nodelay(true).unwrap();
            }
            pump(client.try_clone().unwrap(), server.try_clone().unwrap(), delay);
            pump(server, client, delay);
        }
    });
    port
}

/// Copy `from` to `to`, each chunk `delay` after it was read.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (chunks, delayed) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0; 65536];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            if chunks.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for (due, bytes) in delayed {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// What arrived: each MQTT message parsed.
fn parsed(messages: &[String]) -> Vec<serde_json::Value> {
    messages
        .iter()
        .map(|m| serde_json::from_str(m).unwrap())
        .collect()
}

/// Replay `capture` through the proxy with `extra` flags: the MQTT messages
/// that arrived and the rate, envelopes per second of the whole run.
fn run(
    broker: &Broker,
    proxy: u16,
    capture: &std::path::Path,
    topic: &str,
    extra: &[&str],
) -> (Vec<String>, f64) {
    let sub = broker.subscribe(topic);
    let started = Instant::now();
    let output = common::agent()
        .args([
            "--broker",
            &format!("mqtt://127.0.0.1:{proxy}"),
            "--topic",
            topic,
            "--read",
        ])
        .arg(capture)
        .args(extra)
        .output()
        .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        summary_value(stdout.as_bytes(), "acknowledged"),
        u64::from(MESSAGES),
        "{stdout}"
    );
    (sub.collect(), f64::from(MESSAGES) / elapsed)
}

/// Every message arrived exactly once, and the same envelopes either way.
fn assert_all_once(envelopes: &[serde_json::Value]) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for envelope in envelopes {
        *seen.entry(call_id(envelope)).or_default() += 1;
    }
    for n in 0..MESSAGES {
        assert_eq!(seen.get(&format!("batch-{n}")), Some(&1), "batch-{n}");
    }
    assert_eq!(envelopes.len(), MESSAGES as usize);
}

#[test]
fn batching_over_a_20_ms_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("options.pcap");
    let mut file = PcapFile::create(&capture);
    for n in 0..MESSAGES {
        file.udp(n * 100, n, &options("batch", n as usize));
    }
    drop(file);
    let broker = Broker::start();
    let proxy = delaying_proxy(broker.port, ONE_WAY);

    let (single, single_rate) = run(&broker, proxy, &capture, "sip/single", &[]);
    let single = parsed(&single);
    assert!(
        single.iter().all(|m| m.is_object()),
        "without batching, one envelope per message"
    );
    assert_all_once(&single);

    // Limited by BATCH_MAX_MESSAGES.
    let args = ["--batch-max-messages", "100", "--batch-max-delay-ms", "50"];
    let (by_count, count_rate) = run(&broker, proxy, &capture, "sip/by-count", &args);
    let by_count = parsed(&by_count);
    let arrays: Vec<&Vec<serde_json::Value>> = by_count.iter().map(|m| m.as_array().unwrap()).collect();
    assert!(arrays.iter().all(|a| (1..=100).contains(&a.len())));
    assert!(arrays.iter().any(|a| a.len() > 1), "some messages were batched");
    let flat: Vec<serde_json::Value> = arrays.iter().flat_map(|a| a.iter().cloned()).collect();
    assert_all_once(&flat);
    assert_eq!(flat, single, "the same envelopes, in the same order");

    // Limited by BATCH_MAX_BYTES.
    let args = ["--batch-max-messages", "1000", "--batch-max-bytes", "8192"];
    let (by_bytes, bytes_rate) = run(&broker, proxy, &capture, "sip/by-bytes", &args);
    assert!(
        by_bytes.iter().all(|m| m.len() <= 8192),
        "no payload above BATCH_MAX_BYTES"
    );
    let by_bytes = parsed(&by_bytes);
    assert!(by_bytes.iter().any(|m| m.as_array().unwrap().len() > 1));
    let flat: Vec<serde_json::Value> = by_bytes
        .iter()
        .flat_map(|m| m.as_array().unwrap().iter().cloned())
        .collect();
    assert_eq!(flat, single);

    println!(
        "{MESSAGES} envelopes over a 20 ms round trip: one per message {single_rate:.0} msg/s; \
batches of up to 100 {count_rate:.0} msg/s ({} MQTT messages); batches of up to 8 KiB {bytes_rate:.0} msg/s ({} MQTT messages)",
        by_count.len(),
        by_bytes.len()
    );
}

/// A batch that does not fill goes out after BATCH_MAX_DELAY_MS, while the
/// agent runs live: three messages arrive together, as one array.
#[test]
fn a_partial_batch_goes_out_after_the_delay() {
    if !common::can_capture_on_lo() {
        return;
    }
    let broker = Broker::start();
    let sub = broker.subscribe("sip/partial");
    let flags = ["--batch-max-messages", "100", "--batch-max-delay-ms", "300"];
    let (mut child, _lines, target) = common::live_agent_on_udp(&broker.url(), "sip/partial", &flags);
    let port = target.local_addr().unwrap().port();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    for n in 0..3 {
        sender.send_to(&options("batch", n), ("127.0.0.1", port)).unwrap();
    }
    // Well past the delay; the agent is still running, its queue open.
    std::thread::sleep(Duration::from_secs(2));
    let arrived = parsed(&sub.collect());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(arrived.len(), 1, "one MQTT message: {arrived:?}");
    let ids: Vec<String> = arrived[0].as_array().unwrap().iter().map(call_id).collect();
    assert_eq!(ids, ["batch-0", "batch-1", "batch-2"]);
}

/// A broker with `max_packet_size 2048` and batches of up to 10 envelopes
/// of about 600 bytes: no MQTT message exceeds what the broker announced,
/// every envelope arrives once, in order, and only the one envelope too
/// large to fit alone is rejected.
#[test]
fn batches_keep_to_the_brokers_maximum_packet_size() {
    const COUNT: u32 = 40;
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("options.pcap");
    let mut file = PcapFile::create(&capture);
    for n in 0..COUNT {
        file.udp(n * 100, n, &options("limit", n as usize));
    }
    // One message whose envelope alone is over 2048 bytes.
    let mut big = options("limit-big", 0);
    let at = big.len() - 2;
    big.splice(at..at, std::iter::repeat_n(b'x', 1600));
    let text = String::from_utf8(big)
        .unwrap()
        .replace("Content-Length: 0", "Content-Length: 1600");
    file.udp(COUNT * 100, COUNT, text.as_bytes());
    drop(file);

    let conf = dir.path().join("mosquitto.conf");
    let port = common::free_port();
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_packet_size 2048\n"),
    )
    .unwrap();
    let _broker = common::mosquitto(&conf, port).expect("mosquitto started");
    let sub = common::Subscription::new(port, "sip/limit");
    let output = common::agent()
        .args([
            "--broker",
            &format!("mqtt://127.0.0.1:{port}"),
            "--topic",
            "sip/limit",
        ])
        .args(["--batch-max-messages", "10", "--read"])
        .arg(&capture)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let messages = sub.collect();
    assert!(
        messages.iter().all(|m| m.len() + "sip/limit".len() + 10 <= 2048),
        "a message over the broker's maximum: {:?}",
        messages.iter().map(String::len).max()
    );
    let flat: Vec<serde_json::Value> = parsed(&messages)
        .iter()
        .flat_map(|m| m.as_array().unwrap().clone())
        .collect();
    let ids: Vec<String> = flat.iter().map(call_id).collect();
    let expected: Vec<String> = (0..COUNT).map(|n| format!("limit-{n}")).collect();
    assert_eq!(ids, expected, "{stdout}");
    assert!(messages.len() < COUNT as usize, "envelopes were batched");
    assert_eq!(
        summary_value(&output.stdout, "acknowledged"),
        u64::from(COUNT),
        "{stdout}"
    );
    assert_eq!(summary_value(&output.stdout, "rejected"), 1, "{stdout}");
}

/// A minimal MQTT 5 broker on a free loopback port for one client: its
/// CONNACK announces Maximum Packet Size 2048 after a Reason String of
/// 300 bytes (beyond what the agent reads of a CONNACK, not beyond what
/// minimq reads), and it acknowledges every QoS 1 PUBLISH. Returns the
/// port and the sizes of the PUBLISH packets it received.
fn broker_with_a_long_connack() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<usize>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sizes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = sizes.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut properties = vec![0x1f, 0x01, 0x2c];
            properties.extend(std::iter::repeat_n(b'r', 300));
            properties.extend([0x27, 0x00, 0x00, 0x08, 0x00]);
            let mut connack = vec![0x20];
            let remaining = 2 + 2 + properties.len();
            connack.extend([
                (remaining & 0x7f) as u8 | 0x80,
                (remaining >> 7) as u8,
                0x00,
                0x00,
            ]);
            connack.extend([
                (properties.len() & 0x7f) as u8 | 0x80,
                (properties.len() >> 7) as u8,
            ]);
            connack.extend(properties);
            let mut first = true;
            while let Some(packet) = read_packet(&mut stream) {
                if first {
                    stream.write_all(&connack).unwrap();
                    first = false;
                    continue;
                }
                if packet[0] >> 4 == 3 {
                    seen.lock().unwrap().push(packet.len());
                    // Fixed header, topic (2 + length), then the packet id.
                    let header = 1 + packet[1..].iter().position(|b| b & 0x80 == 0).unwrap() + 1;
                    let topic = usize::from(u16::from_be_bytes([packet[header], packet[header + 1]]));
                    let id = &packet[header + 2 + topic..header + 4 + topic];
                    let _ = stream.write_all(&[0x40, 0x02, id[0], id[1]]);
                }
            }
        }
    });
    (port, sizes)
}

/// When the agent could not read the broker's limit but minimq refuses a
/// batch as too large, the same envelopes go again in smaller batches:
/// none is rejected, and no PUBLISH exceeds the limit.
#[test]
fn a_batch_refused_as_too_large_is_split() {
    const COUNT: u32 = 40;
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("options.pcap");
    let mut file = PcapFile::create(&capture);
    for n in 0..COUNT {
        file.udp(n * 100, n, &options("split", n as usize));
    }
    drop(file);
    let (port, sizes) = broker_with_a_long_connack();
    let output = common::agent()
        .args([
            "--broker",
            &format!("mqtt://127.0.0.1:{port}"),
            "--topic",
            "sip/split",
        ])
        .args([
            "--batch-max-messages",
            "10",
            "--telemetry-interval-s",
            "0",
            "--read",
        ])
        .arg(&capture)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert_eq!(
        summary_value(&output.stdout, "acknowledged"),
        u64::from(COUNT),
        "{stdout}"
    );
    assert_eq!(summary_value(&output.stdout, "rejected"), 0, "{stdout}");
    let sizes = sizes.lock().unwrap();
    assert!(sizes.iter().all(|&s| s <= 2048), "{sizes:?}");
    // The status and the offline status, and the envelopes in batches.
    assert!(sizes.len() - 2 < COUNT as usize, "batched: {sizes:?}");
}
