//! Configuration: the same keys from a file, the environment and flags.
//!
//! Every key is declared once in [`KEYS`]. A `KEY=value` file (systemd
//! EnvironmentFile syntax), environment variables named like the keys, and
//! flags named `--key-name` all set the same keys; flags beat the
//! environment, which beats the file, which beats the defaults. The key
//! names are the original Go agent's, so its deployments carry over.
//!
//! Validation happens here, once, before anything starts: a bad value is a
//! [`ConfigError`] naming the key, the value and the reason, and the agent
//! never starts half-configured. Nothing here touches the network.

use crate::envelope::envelope_capacity;
use crate::filter::Filter;
use crate::filter::blob::Endian;
use core::fmt;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The config file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/sip-capture.conf";

/// The live capture filter when BPF_FILTER is not set: UDP and TCP, IPv4
/// fragments after the first (which carry no UDP header), IPv6 fragments,
/// and VLAN-tagged frames (whose offsets the other terms would misread).
pub const DEFAULT_LIVE_BPF: &str = "udp or tcp or (ip[6:2] & 0x1fff != 0) or (ip6 and ip6[6] == 44) or vlan";

/// A configuration key: its name, default and one-line help.
pub struct Key {
    pub name: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

/// Every key sip-capture reads.
#[rustfmt::skip]
pub const KEYS: &[Key] = &[
    Key { name: "INTERFACE", default: "", help: "capture live on this libpcap device (e.g. eth1, any)" },
    Key { name: "READ_FILE", default: "", help: "read this pcap or pcapng file instead of a device, then exit" },
    Key { name: "BPF_FILTER", default: "", help: "libpcap filter; live default keeps UDP, TCP, IP fragments and VLAN frames, files use none" },
    Key { name: "SIP_FILTER", default: "", help: "which SIP messages to publish (docs/filters.md); empty publishes all" },
    Key { name: "FILTER_FILE", default: "", help: "load a filter precompiled by `sip-capture compile-filter` instead of SIP_FILTER" },
    Key { name: "FILTER_MAX_DFA_BYTES", default: "1048576", help: "limit on the DFAs of all SIP_FILTER regexes together" },
    Key { name: "BROKER", default: "mqtt://localhost:1883", help: "MQTT broker, mqtt://host:port (tcp:// accepted), or mqtts://host:port for TLS (ssl:// accepted)" },
    Key { name: "CA_FILE", default: "", help: "TLS: PEM CA certificates to verify the broker; default the system's roots" },
    Key { name: "CERT_FILE", default: "", help: "TLS: PEM client certificate (chain), with KEY_FILE" },
    Key { name: "KEY_FILE", default: "", help: "TLS: PEM private key of CERT_FILE" },
    Key { name: "USERNAME", default: "", help: "MQTT user name, with PASSWORD_FILE" },
    Key { name: "PASSWORD_FILE", default: "", help: "file holding the MQTT password (one line)" },
    Key { name: "TOPIC", default: "", help: "MQTT topic for SIP envelopes (required)" },
    Key { name: "CLIENT_ID", default: "", help: "MQTT client id; default sip-capture-<hostname>" },
    Key { name: "STATUS_TOPIC", default: "", help: "retained online/offline status (offline is the Last Will); default TOPIC/status/CLIENT_ID" },
    Key { name: "TELEMETRY_TOPIC", default: "", help: "where the agent's counters are published as JSON; default TOPIC/telemetry/CLIENT_ID" },
    Key { name: "TELEMETRY_INTERVAL_S", default: "60", help: "seconds between telemetry reports; 0 turns them off" },
    Key { name: "BATCH_MAX_MESSAGES", default: "1", help: "envelopes per MQTT message, sent as a JSON array; 1 sends each alone (no array)" },
    Key { name: "BATCH_MAX_BYTES", default: "65536", help: "largest batch payload; an envelope larger than this goes alone, in an array of one" },
    Key { name: "BATCH_MAX_DELAY_MS", default: "100", help: "how long a batch that is not full may wait for more envelopes" },
    Key { name: "METRICS_ADDR", default: "", help: "serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9560); off when empty" },
    Key { name: "LOG_LEVEL", default: "info", help: "error, warn, info or debug" },
    Key { name: "RUN_AS_USER", default: "", help: "after opening the capture, run as this user (name or uid)" },
    Key { name: "RUN_AS_GROUP", default: "", help: "and this group (default: the user's primary group)" },
    Key { name: "SNAPLEN", default: "65535", help: "bytes captured per frame" },
    Key { name: "CAPTURE_BUFFER_BYTES", default: "8388608", help: "kernel capture buffer" },
    Key { name: "QUEUE_BYTES", default: "4194304", help: "queue between capture and broker; full means drop and count" },
    Key { name: "MAX_MESSAGE_BYTES", default: "65535", help: "largest SIP message published; larger ones are dropped and counted" },
    Key { name: "FRAG_MAX_DATAGRAMS", default: "32", help: "IP datagrams in reassembly at once; the oldest is evicted beyond" },
    Key { name: "FRAG_BUFFER_BYTES", default: "2097152", help: "memory for IP reassembly, shared equally by the datagrams" },
    Key { name: "FRAG_TIMEOUT_MS", default: "10000", help: "an unfinished datagram is dropped this long after its first fragment" },
    Key { name: "TCP_MAX_FLOWS", default: "4096", help: "TCP streams (one per direction) followed at once; the least recent is evicted beyond" },
    Key { name: "TCP_BUFFERS", default: "64", help: "stream buffers for messages split across segments or waiting for a hole" },
    Key { name: "TCP_BUFFER_BYTES", default: "65536", help: "size of each stream buffer; bounds a SIP message over TCP" },
    Key { name: "TCP_IDLE_TIMEOUT_S", default: "300", help: "a TCP stream without traffic this long is dropped" },
    Key { name: "TCP_HOLE_WAIT_MS", default: "1000", help: "how long, in capture time, a TCP stream waits for a missing segment before skipping it" },
    Key { name: "TCP_HOLE_MAX_BYTES", default: "32768", help: "how many bytes after a missing segment a TCP stream keeps before skipping it (at most TCP_BUFFER_BYTES)" },
];

/// Memory and time bounds of reassembly, from the FRAG_ and TCP_ keys.
#[derive(Debug, Clone, Copy)]
pub struct ReassemblyLimits {
    pub frag_datagrams: usize,
    pub frag_buffer_bytes: usize,
    pub frag_timeout_ms: u64,
    pub tcp_flows: usize,
    pub tcp_buffers: usize,
    pub tcp_buffer_bytes: usize,
    pub tcp_idle_s: u64,
    pub tcp_hole_wait_ms: u64,
    pub tcp_hole_max_bytes: usize,
}

impl ReassemblyLimits {
    fn from(get: impl Fn(&'static str) -> String) -> Result<ReassemblyLimits, ConfigError> {
        let n = |key: &'static str, min: u32, max: u32| number(&get(key), key, min, max);
        let limits = ReassemblyLimits {
            frag_datagrams: n("FRAG_MAX_DATAGRAMS", 1, 65_536)? as usize,
            frag_buffer_bytes: n("FRAG_BUFFER_BYTES", 1024, 1 << 30)? as usize,
            frag_timeout_ms: u64::from(n("FRAG_TIMEOUT_MS", 1, 3_600_000)?),
            tcp_flows: n("TCP_MAX_FLOWS", 1, 1 << 24)? as usize,
            tcp_buffers: n("TCP_BUFFERS", 0, 1 << 20)? as usize,
            tcp_buffer_bytes: n("TCP_BUFFER_BYTES", 1024, 1 << 24)? as usize,
            tcp_idle_s: u64::from(n("TCP_IDLE_TIMEOUT_S", 1, 86_400)?),
            tcp_hole_wait_ms: u64::from(n("TCP_HOLE_WAIT_MS", 1, 3_600_000)?),
            tcp_hole_max_bytes: n("TCP_HOLE_MAX_BYTES", 1, 1 << 24)? as usize,
        };
        if limits.tcp_hole_max_bytes > limits.tcp_buffer_bytes {
            return Err(ConfigError::new(
                "TCP_HOLE_MAX_BYTES",
                &get("TCP_HOLE_MAX_BYTES"),
                "is more than TCP_BUFFER_BYTES, the buffer that holds those bytes",
            ));
        }
        if limits.frag_buffer_bytes / limits.frag_datagrams < 1500 {
            let text = get("FRAG_BUFFER_BYTES");
            return Err(ConfigError::new(
                "FRAG_BUFFER_BYTES",
                &text,
                "gives each of FRAG_MAX_DATAGRAMS less than 1500 bytes, smaller than one Ethernet fragment",
            ));
        }
        Ok(limits)
    }

    /// The limits of the default configuration.
    pub fn defaults() -> ReassemblyLimits {
        // The defaults are valid by construction; a test checks it.
        ReassemblyLimits::from(|key| default_of(key).to_string()).unwrap_or_else(|e| panic!("default {e}"))
    }
}

/// The default value of key `name`.
fn default_of(name: &str) -> &'static str {
    KEYS.iter().find(|k| k.name == name).map_or("", |k| k.default)
}

/// Where packets come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Interface(String),
    File(PathBuf),
}

/// The MQTT broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: TLS to the broker.
    pub tls: bool,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    pub source: Source,
    /// `None`: no BPF program at all.
    pub bpf_filter: Option<String>,
    pub sip_filter: Filter,
    pub mqtt: Mqtt,
    /// `None`: no metrics endpoint, no listening socket.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `None`: keep the identity the agent was started with.
    pub run_as: Option<crate::privileges::RunAs>,
    pub log_level: log::LevelFilter,
    pub snaplen: u32,
    pub capture_buffer_bytes: u32,
    pub queue_bytes: usize,
    pub max_message_bytes: usize,
    pub reassembly: ReassemblyLimits,
    /// Every key's effective value, for `--check`.
    pub effective: Vec<(&'static str, String)>,
}

/// Everything the publisher needs to reach the broker and what it sends.
#[derive(Debug)]
pub struct Mqtt {
    pub broker: Broker,
    /// Set for `mqtts://`.
    pub tls: Option<crate::tls::Client>,
    /// USERNAME and the password from PASSWORD_FILE.
    pub credentials: Option<(String, Vec<u8>)>,
    /// The one topic for SIP envelopes.
    pub topic: String,
    pub client_id: String,
    /// Retained `online` after each connect; `offline` at a clean stop and,
    /// as the Last Will, when the agent dies or loses the broker.
    pub status_topic: String,
    /// Where telemetry reports go, and how often (`None`: never).
    pub telemetry_topic: String,
    pub telemetry_interval: Option<std::time::Duration>,
    /// `None`: one envelope per MQTT message, as the original agent.
    pub batch: Option<Batch>,
}

/// Several envelopes in one MQTT message, as a JSON array: over a long
/// round trip, QoS 1 throughput is the in-flight window times the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// At least 2.
    pub max_messages: usize,
    pub max_bytes: usize,
    pub max_delay: std::time::Duration,
}

/// A configuration problem: the key, the offending value and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}: {}", self.key, self.value, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Run(Config),
    /// `--check`: validate, print the effective configuration, exit 0.
    Check(Config),
    /// `compile-filter EXPR -o FILE [--endian little|big]`.
    CompileFilter {
        expression: String,
        output: PathBuf,
        endian: Endian,
        max_dfa_bytes: usize,
    },
    /// `filter-test EXPR FILE`: show which messages of a capture match.
    FilterTest {
        filter: Filter,
        file: PathBuf,
    },
    Help,
    Version,
}

/// Build the command from the arguments (without the program name), the
/// environment lookup and the default config file path.
pub fn from_sources(
    args: &[String],
    env: impl Fn(&str) -> Option<String>,
    default_file: &Path,
) -> Result<Command, ConfigError> {
    match args.first().map(String::as_str) {
        Some("compile-filter") => return compile_filter_command(&args[1..]),
        Some("filter-test") => return filter_test_command(&args[1..]),
        _ => {}
    }
    let mut flags = BTreeMap::new();
    let mut config_file = None;
    let mut check = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (flag, inline_value) = match arg.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_string())),
            None => (arg.as_str(), None),
        };
        match flag {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--check" => {
                check = true;
                continue;
            }
            _ => {}
        }
        let Some(name) = flag.strip_prefix("--") else {
            return Err(ConfigError::new(
                "argument",
                arg,
                "expected --key value (see --help)",
            ));
        };
        let value = match inline_value.or_else(|| args.next().cloned()) {
            Some(value) => value,
            None => return Err(ConfigError::new(flag, "", "missing value")),
        };
        if name == "config" {
            config_file = Some(PathBuf::from(value));
            continue;
        }
        let key =
            key_for_flag(name).ok_or_else(|| ConfigError::new(flag, &value, "unknown flag (see --help)"))?;
        flags.insert(key, value);
    }

    let mut values: BTreeMap<&'static str, String> = BTreeMap::new();
    let file = config_file.or_else(|| default_file.exists().then(|| default_file.to_path_buf()));
    if let Some(path) = file {
        values.extend(read_config_file(&path)?);
    }
    for key in KEYS {
        if let Some(value) = env(key.name) {
            values.insert(key.name, value);
        }
    }
    values.extend(flags);

    let config = validate(&values)?;
    Ok(if check {
        Command::Check(config)
    } else {
        Command::Run(config)
    })
}

/// The key a flag sets: `--bpf-filter` sets BPF_FILTER; `--read` is short
/// for `--read-file`.
fn key_for_flag(flag: &str) -> Option<&'static str> {
    let flag = if flag == "read" { "read-file" } else { flag };
    KEYS.iter()
        .map(|k| k.name)
        .find(|name| name.replace('_', "-").eq_ignore_ascii_case(flag))
}

/// Parse a `KEY=value` file: `#` comments, blank lines, optional `export`,
/// values optionally in matching single or double quotes, no expansion.
fn read_config_file(path: &Path) -> Result<BTreeMap<&'static str, String>, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("--config", &shown, format!("cannot read: {e}")))?;
    let mut values = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |key: &str| format!("{shown}:{}: {key}", number + 1);
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            return Err(ConfigError::new(&at("line"), line, "expected KEY=value"));
        };
        let name = name.trim();
        let value = unquote(value.trim());
        let key = KEYS
            .iter()
            .find(|k| k.name == name)
            .ok_or_else(|| ConfigError::new(&at(name), value, "unknown key"))?;
        values.insert(key.name, value.to_string());
    }
    Ok(values)
}

fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(quote).and_then(|v| v.strip_suffix(quote)) {
            return inner;
        }
    }
    value
}

fn validate(values: &BTreeMap<&'static str, String>) -> Result<Config, ConfigError> {
    let get = |name: &'static str| -> String {
        values
            .get(name)
            .cloned()
            .unwrap_or_else(|| default_of(name).to_string())
    };

    let interface = get("INTERFACE");
    let read_file = get("READ_FILE");
    let source = match (interface.is_empty(), read_file.is_empty()) {
        (false, false) => {
            return Err(ConfigError::new(
                "READ_FILE",
                &read_file,
                "INTERFACE is set too; choose one source",
            ));
        }
        (true, true) => {
            return Err(ConfigError::new(
                "INTERFACE",
                "",
                "no packet source: set INTERFACE or READ_FILE",
            ));
        }
        (false, true) => {
            if !crate::capture::interface_exists(&interface) {
                return Err(ConfigError::new("INTERFACE", &interface, "no such interface"));
            }
            Source::Interface(interface)
        }
        (true, false) => {
            std::fs::File::open(&read_file)
                .map_err(|e| ConfigError::new("READ_FILE", &read_file, format!("cannot read: {e}")))?;
            Source::File(PathBuf::from(&read_file))
        }
    };

    let bpf = get("BPF_FILTER");
    let bpf_filter = match (&source, bpf.is_empty()) {
        (_, false) => Some(bpf),
        (Source::Interface(_), true) => Some(DEFAULT_LIVE_BPF.to_string()),
        (Source::File(_), true) => None,
    };
    if let Some(program) = &bpf_filter {
        crate::capture::check_bpf(program)
            .map_err(|reason| ConfigError::new("BPF_FILTER", program, reason))?;
    }

    let max_dfa_bytes = number(
        &get("FILTER_MAX_DFA_BYTES"),
        "FILTER_MAX_DFA_BYTES",
        4096,
        1 << 28,
    )? as usize;
    let sip_filter_text = get("SIP_FILTER");
    let filter_file = get("FILTER_FILE");
    let sip_filter = if filter_file.is_empty() {
        Filter::compile(&sip_filter_text, max_dfa_bytes)
            .map_err(|reason| ConfigError::new("SIP_FILTER", &sip_filter_text, reason))?
    } else if !sip_filter_text.trim().is_empty() {
        return Err(ConfigError::new(
            "FILTER_FILE",
            &filter_file,
            "SIP_FILTER is set too; a filter file carries its own expression",
        ));
    } else {
        Filter::load_file(Path::new(&filter_file))
            .map_err(|reason| ConfigError::new("FILTER_FILE", &filter_file, reason))?
    };

    let broker_text = get("BROKER");
    let broker =
        parse_broker(&broker_text).map_err(|reason| ConfigError::new("BROKER", &broker_text, reason))?;

    let tls = if broker.tls {
        Some(
            crate::tls::client(&broker.host, &get("CA_FILE"), &get("CERT_FILE"), &get("KEY_FILE"))
                .map_err(|(key, reason)| ConfigError::new(key, &get(key), reason))?,
        )
    } else {
        if let Some(key) = ["CA_FILE", "CERT_FILE", "KEY_FILE"]
            .into_iter()
            .find(|k| !get(k).is_empty())
        {
            return Err(ConfigError::new(
                key,
                &get(key),
                "set, but BROKER is not mqtts://",
            ));
        }
        None
    };
    let credentials = credentials(&get("USERNAME"), &get("PASSWORD_FILE"))?;

    let topic = get("TOPIC");
    check_topic(&topic).map_err(|reason| ConfigError::new("TOPIC", &topic, reason))?;

    let mut client_id = get("CLIENT_ID");
    if client_id.is_empty() {
        client_id = default_client_id();
    }
    if client_id.len() > MAX_CLIENT_ID_LEN {
        return Err(ConfigError::new(
            "CLIENT_ID",
            &client_id,
            format!("longer than {MAX_CLIENT_ID_LEN} bytes"),
        ));
    }

    let status_topic = side_topic(&get, "STATUS_TOPIC", "status", &topic, &client_id)?;
    if status_topic.len() > MAX_STATUS_TOPIC_LEN {
        return Err(ConfigError::new(
            "STATUS_TOPIC",
            &status_topic,
            "longer than 128 bytes (minimq's Last Will topic capacity)",
        ));
    }
    let telemetry_topic = side_topic(&get, "TELEMETRY_TOPIC", "telemetry", &topic, &client_id)?;
    let interval = number(&get("TELEMETRY_INTERVAL_S"), "TELEMETRY_INTERVAL_S", 0, 86_400)?;
    let telemetry_interval = (interval > 0).then(|| std::time::Duration::from_secs(u64::from(interval)));

    let batch_messages = number(&get("BATCH_MAX_MESSAGES"), "BATCH_MAX_MESSAGES", 1, 10_000)? as usize;
    let batch = Batch {
        max_messages: batch_messages,
        max_bytes: number(&get("BATCH_MAX_BYTES"), "BATCH_MAX_BYTES", 1024, 1 << 24)? as usize,
        max_delay: std::time::Duration::from_millis(u64::from(number(
            &get("BATCH_MAX_DELAY_MS"),
            "BATCH_MAX_DELAY_MS",
            0,
            60_000,
        )?)),
    };
    let batch = (batch_messages > 1).then_some(batch);

    let metrics_text = get("METRICS_ADDR");
    let metrics_addr = match metrics_text.as_str() {
        "" => None,
        text => Some(text.parse().map_err(|_| {
            ConfigError::new(
                "METRICS_ADDR",
                text,
                "expected IP:port, such as 127.0.0.1:9560 or [::1]:9560",
            )
        })?),
    };

    let (user, group) = (get("RUN_AS_USER"), get("RUN_AS_GROUP"));
    let run_as = crate::privileges::resolve(&user, &group).map_err(|(key, reason)| {
        ConfigError::new(key, if key == "RUN_AS_USER" { &user } else { &group }, reason)
    })?;

    let level_text = get("LOG_LEVEL");
    let log_level = parse_log_level(&level_text)
        .ok_or_else(|| ConfigError::new("LOG_LEVEL", &level_text, "expected error, warn, info or debug"))?;

    let snaplen = number(&get("SNAPLEN"), "SNAPLEN", 256, 262_144)?;
    let capture_buffer_bytes = number(
        &get("CAPTURE_BUFFER_BYTES"),
        "CAPTURE_BUFFER_BYTES",
        65_536,
        1 << 30,
    )?;
    let max_message_bytes = number(&get("MAX_MESSAGE_BYTES"), "MAX_MESSAGE_BYTES", 256, 1 << 20)? as usize;
    let queue_text = get("QUEUE_BYTES");
    let queue_bytes = number(&queue_text, "QUEUE_BYTES", 4096, 1 << 30)? as usize;
    let largest_record = envelope_capacity(max_message_bytes) + 4;
    if queue_bytes < largest_record {
        return Err(ConfigError::new(
            "QUEUE_BYTES",
            &queue_text,
            format!("cannot hold one envelope of MAX_MESSAGE_BYTES; need at least {largest_record}"),
        ));
    }

    let reassembly = ReassemblyLimits::from(get)?;

    let effective = KEYS
        .iter()
        .map(|k| {
            let value = match k.name {
                "CLIENT_ID" => client_id.clone(),
                "STATUS_TOPIC" => status_topic.clone(),
                "TELEMETRY_TOPIC" => telemetry_topic.clone(),
                "BPF_FILTER" => bpf_filter.clone().unwrap_or_default(),
                _ => get(k.name),
            };
            (k.name, value)
        })
        .collect();

    Ok(Config {
        source,
        bpf_filter,
        sip_filter,
        mqtt: Mqtt {
            broker,
            tls,
            credentials,
            topic,
            client_id,
            status_topic,
            telemetry_topic,
            telemetry_interval,
            batch,
        },
        metrics_addr,
        run_as,
        log_level,
        snaplen,
        capture_buffer_bytes,
        queue_bytes,
        max_message_bytes,
        reassembly,
        effective,
    })
}

/// `compile-filter EXPR -o FILE [--endian little|big] [--filter-max-dfa-bytes N]`
fn compile_filter_command(args: &[String]) -> Result<Command, ConfigError> {
    let mut expression = None;
    let mut output = None;
    let mut endian = Endian::NATIVE;
    let mut max_dfa_bytes = default_of("FILTER_MAX_DFA_BYTES").to_string();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| ConfigError::new(flag, "", "missing value"))
        };
        match arg.as_str() {
            "-o" | "--output" => output = Some(PathBuf::from(value(arg)?)),
            "--endian" => {
                let text = value(arg)?;
                endian = match text.as_str() {
                    "little" => Endian::Little,
                    "big" => Endian::Big,
                    _ => return Err(ConfigError::new("--endian", &text, "expected little or big")),
                };
            }
            "--filter-max-dfa-bytes" => max_dfa_bytes = value(arg)?,
            _ if expression.is_none() && !arg.starts_with("--") => expression = Some(arg.clone()),
            _ => {
                return Err(ConfigError::new(
                    "compile-filter",
                    arg,
                    "usage: sip-capture compile-filter EXPR -o FILE [--endian little|big]",
                ));
            }
        }
    }
    let usage = "usage: sip-capture compile-filter EXPR -o FILE [--endian little|big]";
    let expression = expression.ok_or_else(|| ConfigError::new("compile-filter", "", usage))?;
    let output = output.ok_or_else(|| {
        ConfigError::new("compile-filter", &expression, format!("missing -o FILE; {usage}"))
    })?;
    let max_dfa_bytes = number(&max_dfa_bytes, "FILTER_MAX_DFA_BYTES", 4096, 1 << 28)? as usize;
    Ok(Command::CompileFilter {
        expression,
        output,
        endian,
        max_dfa_bytes,
    })
}

/// `filter-test EXPR FILE`
fn filter_test_command(args: &[String]) -> Result<Command, ConfigError> {
    let [expression, file] = args else {
        return Err(ConfigError::new(
            "filter-test",
            &args.join(" "),
            "usage: sip-capture filter-test EXPR CAPTURE.pcap",
        ));
    };
    let max_dfa_bytes = number(
        default_of("FILTER_MAX_DFA_BYTES"),
        "FILTER_MAX_DFA_BYTES",
        4096,
        1 << 28,
    )? as usize;
    let filter = Filter::compile(expression, max_dfa_bytes)
        .map_err(|reason| ConfigError::new("SIP_FILTER", expression, reason))?;
    std::fs::File::open(file)
        .map_err(|e| ConfigError::new("filter-test", file, format!("cannot read: {e}")))?;
    Ok(Command::FilterTest {
        filter,
        file: PathBuf::from(file),
    })
}

/// A topic beside TOPIC for the agent's own reports: the key's value, or
/// `TOPIC/<kind>/CLIENT_ID`; never TOPIC itself, which carries only SIP.
fn side_topic(
    get: &impl Fn(&'static str) -> String,
    key: &'static str,
    kind: &str,
    topic: &str,
    client_id: &str,
) -> Result<String, ConfigError> {
    let mut value = get(key);
    if value.is_empty() {
        value = format!("{topic}/{kind}/{client_id}");
    }
    check_topic(&value)
        .and_then(|()| {
            if value == topic {
                Err("must differ from TOPIC, which carries only SIP envelopes")
            } else {
                Ok(())
            }
        })
        .map_err(|reason| ConfigError::new(key, &value, reason))?;
    Ok(value)
}

/// USERNAME and PASSWORD_FILE: both or neither. The password is the file's
/// first line.
fn credentials(user: &str, password_file: &str) -> Result<Option<(String, Vec<u8>)>, ConfigError> {
    match (user.is_empty(), password_file.is_empty()) {
        (true, true) => Ok(None),
        (false, true) => Err(ConfigError::new(
            "PASSWORD_FILE",
            "",
            "missing: USERNAME needs a password",
        )),
        (true, false) => Err(ConfigError::new(
            "USERNAME",
            "",
            "missing: PASSWORD_FILE needs a user name",
        )),
        (false, false) => {
            let text = std::fs::read(password_file)
                .map_err(|e| ConfigError::new("PASSWORD_FILE", password_file, format!("cannot read: {e}")))?;
            let password = text.split(|&b| b == b'\n').next().unwrap_or(&[]);
            let password = password.strip_suffix(b"\r").unwrap_or(password).to_vec();
            Ok(Some((user.to_string(), password)))
        }
    }
}

/// minimq's fixed Last Will topic capacity.
const MAX_STATUS_TOPIC_LEN: usize = 128;

/// minimq's fixed client id capacity.
const MAX_CLIENT_ID_LEN: usize = 64;

fn parse_broker(text: &str) -> Result<Broker, String> {
    let (scheme, rest) = text.split_once("://").ok_or("expected mqtt://host:port")?;
    let tls = match scheme {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        other => {
            return Err(format!(
                "unsupported scheme '{other}'; use mqtt://host:port or mqtts://host:port"
            ));
        }
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.contains('@') {
        return Err("expected mqtt://host:port with no path or user".into());
    }
    let (host, port) = match rest.rsplit_once(':') {
        // A bare IPv6 address without brackets has colons but no port.
        Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("port '{port}' is not a number from 1 to 65535"))?;
            (host, port)
        }
        _ => (rest, if tls { 8883 } else { 1883 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("missing host".into());
    }
    Ok(Broker {
        host: host.to_string(),
        port,
        tls,
    })
}

fn check_topic(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() {
        return Err("missing: set the MQTT topic for SIP data");
    }
    if topic.contains(['+', '#']) {
        return Err("wildcards + and # cannot be published to");
    }
    if topic.contains('\0') || topic.len() > 65_535 {
        return Err("not a valid MQTT topic name");
    }
    Ok(())
}

fn parse_log_level(text: &str) -> Option<log::LevelFilter> {
    Some(match text.to_ascii_lowercase().as_str() {
        "error" => log::LevelFilter::Error,
        "warn" | "warning" => log::LevelFilter::Warn,
        "info" => log::LevelFilter::Info,
        "debug" => log::LevelFilter::Debug,
        "trace" => log::LevelFilter::Trace,
        _ => return None,
    })
}

fn number(text: &str, key: &str, min: u32, max: u32) -> Result<u32, ConfigError> {
    text.parse::<u32>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| ConfigError::new(key, text, format!("expected a whole number from {min} to {max}")))
}

fn default_client_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(MAX_CLIENT_ID_LEN - "sip-capture-".len())
        .collect();
    if host.is_empty() {
        "sip-capture".to_string()
    } else {
        format!("sip-capture-{host}")
    }
}

/// `--help` text, generated from [`KEYS`].
pub fn help() -> String {
    let mut text = String::from(
        "sip-capture: passive SIP sensor; publishes each captured SIP message to one MQTT topic\n\n\
Usage: sip-capture [--config FILE] [--check] [--KEY-NAME VALUE ...]\n\n\
Every key can be set in the config file (KEY=value, default /etc/sip-capture.conf),\n\
as an environment variable KEY, or as a flag --key-name; flags win over the\n\
environment, which wins over the file.\n\n\
  --config FILE   read keys from FILE\n\
  --check         validate the configuration, print it and exit\n\
  --read FILE     same as --read-file\n\
  -h, --help      this help\n\
  -V, --version   print the version\n\nKeys:\n",
    );
    for key in KEYS {
        let default = if key.default.is_empty() {
            String::new()
        } else {
            format!(" [default: {}]", key.default)
        };
        text.push_str(&format!(
            "  {:<22} --{:<22} {}{}\n",
            key.name,
            key.name.to_ascii_lowercase().replace('_', "-"),
            key.help,
            default
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers() {
        let ok = |t| parse_broker(t).unwrap();
        let broker = |host: &str, port, tls| Broker {
            host: host.into(),
            port,
            tls,
        };
        assert_eq!(ok("mqtt://h:1"), broker("h", 1, false));
        assert_eq!(ok("tcp://h"), broker("h", 1883, false));
        assert_eq!(ok("mqtt://[::1]:8883"), broker("::1", 8883, false));
        assert_eq!(ok("mqtts://h"), broker("h", 8883, true));
        assert_eq!(ok("ssl://h:8884"), broker("h", 8884, true));
        assert!(parse_broker("h:1883").is_err());
        assert!(parse_broker("http://h").is_err());
        assert!(parse_broker("mqtt://h:0").is_err());
        assert!(parse_broker("mqtt://h:x").is_err());
        assert!(parse_broker("mqtt://").is_err());
    }

    #[test]
    fn default_limits_are_valid() {
        let limits = ReassemblyLimits::defaults();
        assert!(limits.frag_buffer_bytes / limits.frag_datagrams >= 65_535);
    }

    #[test]
    fn flags_map_to_keys() {
        assert_eq!(key_for_flag("bpf-filter"), Some("BPF_FILTER"));
        assert_eq!(key_for_flag("read"), Some("READ_FILE"));
        assert_eq!(key_for_flag("nope"), None);
    }
}
