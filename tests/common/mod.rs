//! Test helpers: a real mosquitto per test, a real subscriber, the agent
//! binary run as a user would run it.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const AGENT: &str = env!("CARGO_BIN_EXE_sip-capture");
/// The last message of every collection, published after the agent is done.
const SENTINEL: &str = "--end-of-test--";

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn pcap(name: &str) -> PathBuf {
    data(&format!("pcaps/{name}"))
}

/// A port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private mosquitto on a free loopback port, stopped on drop.
pub struct Broker {
    pub port: u16,
    // Declared before `dir`: the broker is stopped before its directory goes.
    _child: KillOnDrop,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with("")
    }

    /// [`Broker::start`] with `conf` (mosquitto.conf lines) added.
    pub fn start_with(conf_lines: &str) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        // Another process may take the free port first: then try another.
        for _ in 0..5 {
            let port = free_port();
            std::fs::write(
                &conf,
                format!(
                    "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\npersistence false\n{conf_lines}"
                ),
            )
            .unwrap();
            if let Some(child) = mosquitto(&conf, port) {
                return Broker {
                    port,
                    _child: child,
                    _dir: dir,
                };
            }
        }
        panic!("mosquitto did not start on any of five free ports");
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// A persistent QoS 1 subscription on `topic`: everything published
    /// from now on is kept for it until [`Subscription::collect`].
    pub fn subscribe(&self, topic: &str) -> Subscription {
        Subscription::new(self.port, topic)
    }
}

pub struct Subscription {
    port: u16,
    topic: String,
    client_id: String,
    /// The network namespace the broker listens in; `None` for this one.
    netns: Option<String>,
}

/// `program` run in network namespace `netns` (`ip netns exec`), or here.
pub fn in_netns(netns: Option<&str>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

impl Subscription {
    /// A persistent QoS 1 subscription on `topic` at the mosquitto on
    /// `port` (a broker of the test's own, or a listener of one): it
    /// outlives broker restarts where the broker persists sessions.
    pub fn new(port: u16, topic: &str) -> Subscription {
        Subscription::in_netns(None, port, topic)
    }

    /// [`Subscription::new`] at a mosquitto listening in network namespace
    /// `netns`; the first attempts also wait for it to start.
    pub fn in_netns(netns: Option<&str>, port: u16, topic: &str) -> Subscription {
        let client_id = format!("test-sub-{}", free_port());
        // A loaded machine can make a first attempt fail: try a few times.
        let mut last_error = String::new();
        let subscribed = (0..5).any(|attempt| {
            std::thread::sleep(Duration::from_millis(200 * attempt));
            let out = in_netns(netns, "mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(["-t", topic, "-q", "1", "-c", "-i", &client_id, "-E"])
                .output()
                .unwrap();
            last_error = String::from_utf8_lossy(&out.stderr).into_owned();
            out.status.success()
        });
        assert!(subscribed, "mosquitto_sub could not subscribe: {last_error}");
        Subscription {
            port,
            topic: topic.to_string(),
            client_id,
            netns: netns.map(str::to_string),
        }
    }

    /// Every message published to the topic since the subscription, in
    /// order. Publishes a sentinel and reads up to it, so it returns as soon
    /// as everything has arrived.
    pub fn collect(&self) -> Vec<String> {
        let port = self.port.to_string();
        let status = in_netns(self.netns.as_deref(), "mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-t",
                &self.topic,
                "-q",
                "1",
                "-m",
                SENTINEL,
            ])
            .status()
            .unwrap();
        assert!(status.success());
        let mut sub = spawn(
            in_netns(self.netns.as_deref(), "mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &port])
                .args([
                    "-t",
                    &self.topic,
                    "-q",
                    "1",
                    "-c",
                    "-i",
                    &self.client_id,
                    "-W",
                    "60",
                ])
                .stdout(Stdio::piped()),
        );
        let mut messages = Vec::new();
        for line in BufReader::new(sub.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if line == SENTINEL {
                break;
            }
            messages.push(line);
        }
        messages
    }
}

/// The agent with an empty config file and a clean environment, so the
/// machine's /etc/sip-capture.conf or variables cannot leak in.
pub fn agent() -> Command {
    let mut cmd = subcommand("--config");
    cmd.arg("/dev/null");
    cmd
}

/// The agent's subcommand `name` (compile-filter, filter-test), in a clean
/// environment.
pub fn subcommand(name: &str) -> Command {
    let mut cmd = Command::new(AGENT);
    clean_environment(&mut cmd).arg(name);
    cmd
}

/// Only PATH, and the mark by which `make test` finds what a test left
/// running.
pub fn clean_environment(cmd: &mut Command) -> &mut Command {
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    if let Some(run) = std::env::var_os(TEST_RUN) {
        cmd.env(TEST_RUN, run);
    }
    cmd
}

/// The environment variable `make test` sets to one value per run; every
/// process a test starts inherits it, and tests/leftovers.sh looks for
/// processes that still carry it after the run.
const TEST_RUN: &str = "SIP_CAPTURE_TEST_RUN";

/// Start `cmd`, killed when the returned guard is dropped.
pub fn spawn(cmd: &mut Command) -> KillOnDrop {
    KillOnDrop(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program())),
    )
}

/// The agent capturing live on `lo` through `bpf`, publishing `topic` to
/// `broker_url`, with `extra` arguments; returned once it is connected.
pub fn live_agent(broker_url: &str, topic: &str, bpf: &str, extra: &[&str]) -> (KillOnDrop, Lines) {
    let mut child = spawn(
        agent()
            .args([
                "--interface",
                "lo",
                "--bpf-filter",
                bpf,
                "--broker",
                broker_url,
                "--topic",
                topic,
            ])
            .args(extra)
            .stdout(Stdio::piped()),
    );
    let mut lines = Lines::of(&mut child);
    lines.wait_for("connected to broker", Duration::from_secs(10));
    (child, lines)
}

/// [`live_agent`] capturing the datagrams sent to a fresh UDP port on `lo`:
/// also returns the socket bound to that port (kept open so nothing else
/// takes the port while the test runs).
pub fn live_agent_on_udp(broker_url: &str, topic: &str, extra: &[&str]) -> (KillOnDrop, Lines, UdpSocket) {
    let target = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = target.local_addr().unwrap().port();
    let (child, lines) = live_agent(broker_url, topic, &format!("udp and dst port {port}"), extra);
    (child, lines, target)
}

/// Run the agent on a capture file against `broker` and return its output,
/// whatever its exit status.
pub fn replay_any(broker: &Broker, topic: &str, file: &Path, extra: &[&str]) -> Output {
    agent()
        .args(["--broker", &broker.url(), "--topic", topic, "--read"])
        .arg(file)
        .args(extra)
        .output()
        .unwrap()
}

/// Run the agent on a capture file against `broker` and return its output;
/// it must succeed.
pub fn replay(broker: &Broker, topic: &str, file: &Path, extra: &[&str]) -> Output {
    let output = replay_any(broker, topic, file, extra);
    assert!(
        output.status.success(),
        "agent failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// An OPTIONS request whose Call-ID is `{call_id}-{n}`: numbered, so a test
/// can tell which arrived and how often.
pub fn options(call_id: &str, n: usize) -> Vec<u8> {
    format!(
        "OPTIONS sip:probe@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK{n}\r\n\
From: <sip:{call_id}@test>;tag={n}\r\nTo: <sip:probe@192.0.2.2>\r\nCall-ID: {call_id}-{n}\r\n\
CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// `count` OPTIONS requests ([`options`] with `call_id`) to the port
/// `target` is bound to, 200 µs apart, so that a slow machine's capture
/// buffer keeps up.
pub fn send_options(target: &UdpSocket, call_id: &str, count: usize) {
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    for n in 0..count {
        sender
            .send_to(&options(call_id, n), target.local_addr().unwrap())
            .unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The Call-ID of an envelope's message.
pub fn call_id(envelope: &serde_json::Value) -> String {
    let sip = String::from_utf8(sip_of(envelope)).unwrap();
    let line = sip
        .lines()
        .find(|l| l.starts_with("Call-ID: "))
        .expect("a Call-ID");
    line["Call-ID: ".len()..].to_string()
}

/// Send SIGTERM, as systemd and init stop a service.
pub fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM {}", child.id());
}

/// Stop the agent with SIGTERM and require a clean exit: the rest of its
/// output.
pub fn stop_agent(child: &mut Child, lines: &mut Lines) -> String {
    terminate(child);
    let exit = child.wait().unwrap();
    let stdout = lines.rest();
    assert!(exit.success(), "agent exit {exit:?}\n{stdout}");
    stdout
}

/// Replay `file` through the agent to a fresh broker: the envelopes that
/// arrived, parsed, and the agent's stdout.
pub fn envelopes_of(file: &Path, extra: &[&str]) -> (Vec<serde_json::Value>, Vec<u8>) {
    let broker = Broker::start();
    let sub = broker.subscribe("sip/replay");
    let output = replay(&broker, "sip/replay", file, extra);
    let envelopes = sub
        .collect()
        .iter()
        .map(|text| serde_json::from_str(text).unwrap())
        .collect();
    (envelopes, output.stdout)
}

/// The raw SIP message of an envelope.
pub fn sip_of(envelope: &serde_json::Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(envelope["sip"].as_str().unwrap())
        .unwrap()
}

/// The value of `name=` in the agent's summary line.
pub fn summary_value(stdout: &[u8], name: &str) -> u64 {
    let text = String::from_utf8_lossy(stdout);
    let summary = text
        .lines()
        .find(|l| l.contains("summary:"))
        .unwrap_or_else(|| panic!("no summary line in:\n{text}"));
    summary
        .split_whitespace()
        .find_map(|field| field.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {summary}"))
        .parse()
        .unwrap()
}

/// Every counter of the agent's summary line, by name.
pub fn summary(stdout: &[u8]) -> std::collections::BTreeMap<String, u64> {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .find(|l| l.contains("summary:"))
        .unwrap_or_else(|| panic!("no summary line in:\n{text}"));
    line.split_whitespace()
        .filter_map(|field| field.split_once('='))
        .map(|(name, value)| (name.to_string(), value.parse().unwrap()))
        .collect()
}

/// The accounting of docs/design.md: at each stage, what went in equals
/// what came out plus what was dropped, each drop under one reason. Returns
/// the equations the summary breaks (none: nothing was lost silently).
pub fn accounting_errors(stdout: &[u8]) -> Vec<String> {
    let counters = summary(stdout);
    let sum = |names: &[&str]| -> u64 {
        names
            .iter()
            .map(|n| {
                *counters
                    .get(*n)
                    .unwrap_or_else(|| panic!("no {n} in the summary"))
            })
            .sum()
    };
    let equations: &[(&[&str], &[&str])] = &[
        // Every frame, and every datagram reassembled from fragments, is
        // classified once.
        (
            &["packets", "frag_reassembled"],
            &[
                "link_unsupported",
                "decode_errors",
                "header_chain_too_long",
                "tunnel_truncated",
                "tunnel_not_ip",
                "not_udp_tcp",
                "frag_fragments",
                "udp_datagrams",
                "tcp_segments",
                "sctp_packets",
            ],
        ),
        // Every fragment joins a datagram or is dropped with it.
        (
            &["frag_fragments"],
            &[
                "frag_joined",
                "frag_expired",
                "frag_evicted",
                "frag_invalid",
                "frag_too_large",
            ],
        ),
        // Every DATA or I-DATA chunk joins a user message or is dropped
        // for one reason.
        (
            &["sctp_data_chunks"],
            &[
                "sctp_duplicates",
                "sctp_chunks_joined",
                "sctp_chunks_evicted",
                "sctp_chunks_expired",
                "sctp_chunks_invalid",
                "sctp_oversize",
            ],
        ),
        // Every UDP datagram and SCTP user message holds a SIP message or
        // is not SIP.
        (
            &["udp_datagrams", "sctp_user_messages", "tcp_messages"],
            &["sip_messages", "not_sip"],
        ),
        // Every SIP message is queued or dropped for one reason.
        (
            &["sip_messages"],
            &["filtered_out", "dropped_oversize", "dropped_queue_full", "queued"],
        ),
        // Every queued envelope was acknowledged, refused, or still held at exit.
        (&["queued"], &["acknowledged", "rejected", "undelivered_at_exit"]),
    ];
    equations
        .iter()
        .filter(|(left, right)| sum(left) != sum(right))
        .map(|(left, right)| {
            format!(
                "{} = {} but {} = {}",
                left.join(" + "),
                sum(left),
                right.join(" + "),
                sum(right)
            )
        })
        .collect()
}

/// Start mosquitto with config file `conf` and wait until `port` accepts
/// connections; `None` if mosquitto exited first (its port was taken).
/// The broker is killed when the returned guard is dropped.
pub fn mosquitto(conf: &Path, port: u16) -> Option<KillOnDrop> {
    let mut child = KillOnDrop(
        Command::new("mosquitto")
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (make test installs it)"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if child.try_wait().ok().flatten().is_some() {
            return None;
        }
        assert!(
            Instant::now() < deadline,
            "mosquitto did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child)
}

/// Whether this process may capture on `lo` (CAP_NET_RAW). When it may
/// not, the test says it skipped.
pub fn can_capture_on_lo() -> bool {
    match pcap::Capture::from_device("lo").and_then(|c| c.open()) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIPPED: cannot capture on lo ({e}); this test needs CAP_NET_RAW");
            false
        }
    }
}

/// A child process killed when the test ends, also when it fails, so no
/// agent or broker outlives its test. Every process a test starts and does
/// not wait for at once is held in one.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// Lines of a child's stdout, read on a thread so tests can wait for one.
pub struct Lines {
    rx: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Lines {
    pub fn of(child: &mut Child) -> Lines {
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { rx, seen: Vec::new() }
    }

    /// Wait for a line containing `text`.
    pub fn wait_for(&mut self, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.seen.iter().any(|l| l.contains(text)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "no line with {text:?} within {within:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Every line printed until `during` has passed (the child runs on).
    pub fn gather(&mut self, during: Duration) -> &[String] {
        let deadline = Instant::now() + during;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(left);
                    break;
                }
            }
        }
        &self.seen
    }

    /// Everything printed until the child closed its stdout.
    pub fn rest(&mut self) -> String {
        while let Ok(line) = self.rx.recv_timeout(Duration::from_secs(30)) {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }
}

/// A classic pcap file of Ethernet frames (microsecond timestamps from
/// 1,700,000,000 s), written by hand for speed.
pub struct PcapFile(std::io::BufWriter<std::fs::File>);

impl PcapFile {
    pub fn create(path: &Path) -> PcapFile {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        out.write_all(&[
            0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0,
        ])
        .unwrap();
        PcapFile(out)
    }

    pub fn record(&mut self, micros: u32, frame: &[u8]) {
        use std::io::Write;
        let out = &mut self.0;
        out.write_all(&(1_700_000_000 + micros / 1_000_000).to_le_bytes())
            .unwrap();
        out.write_all(&(micros % 1_000_000).to_le_bytes()).unwrap();
        out.write_all(&(frame.len() as u32).to_le_bytes()).unwrap();
        out.write_all(&(frame.len() as u32).to_le_bytes()).unwrap();
        out.write_all(frame).unwrap();
    }

    /// A UDP datagram from 10.x.y.z (from `n`) to 192.0.2.2, port 5060.
    pub fn udp(&mut self, micros: u32, n: u32, payload: &[u8]) {
        let mut frame = Vec::with_capacity(42 + payload.len());
        ethernet_ipv4(&mut frame, n, 17, 0, false, 8 + payload.len());
        frame.extend_from_slice(&[0x13, 0xc4, 0x13, 0xc4]);
        frame.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(payload);
        self.record(micros, &frame);
    }
}

/// Ethernet and IPv4 headers; the source address and IP id come from `n`.
pub fn ethernet_ipv4(frame: &mut Vec<u8>, n: u32, protocol: u8, offset: u16, more: bool, payload_len: usize) {
    frame.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let total = (20 + payload_len) as u16;
    let flags = if more { 0x2000 } else { 0 } | (offset / 8);
    frame.extend_from_slice(&[0x45, 0]);
    frame.extend_from_slice(&total.to_be_bytes());
    frame.extend_from_slice(&(n as u16).to_be_bytes());
    frame.extend_from_slice(&flags.to_be_bytes());
    frame.extend_from_slice(&[64, protocol, 0, 0]);
    frame.extend_from_slice(&[10, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
    frame.extend_from_slice(&[192, 0, 2, 2]);
}

/// openssl with `args` in `dir`, which must succeed.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A P-256 key in `name`.key; returns the file name.
pub fn private_key(dir: &Path, name: &str) -> String {
    let key = format!("{name}.key");
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &key,
        ],
    );
    key
}

/// An EC key and a certificate for `name`, signed by `ca` (self-signed when
/// `ca` is None), with `san` as subjectAltName.
pub fn certificate(dir: &Path, name: &str, ca: Option<&str>, san: &str) {
    let key = private_key(dir, name);
    let subject = format!("/CN={name}");
    match ca {
        None => openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                &key,
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-subj",
                &subject,
            ],
        ),
        Some(ca) => {
            let csr = format!("{name}.csr");
            openssl(
                dir,
                &["req", "-new", "-key", &key, "-out", &csr, "-subj", &subject],
            );
            std::fs::write(dir.join(format!("{name}.ext")), format!("subjectAltName={san}\n")).unwrap();
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &format!("{ca}.crt"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-CAcreateserial",
                    "-out",
                    &format!("{name}.crt"),
                    "-days",
                    "2",
                    "-extfile",
                    &format!("{name}.ext"),
                ],
            );
        }
    }
}

/// Read one MQTT control packet (fixed header, Remaining Length
/// as a variable byte integer, body); `None` when the peer closed first.
pub fn read_packet(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).ok()?;
    let mut packet = vec![byte[0]];
    let (mut length, mut shift) = (0usize, 0);
    loop {
        stream.read_exact(&mut byte).ok()?;
        packet.push(byte[0]);
        length |= usize::from(byte[0] & 0x7f) << shift;
        shift += 7;
        if byte[0] & 0x80 == 0 || shift > 21 {
            break;
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).ok()?;
    packet.extend(body);
    Some(packet)
}
