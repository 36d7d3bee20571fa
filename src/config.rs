//! Configuration: the same keys from a file, the environment and flags.
//!
//! Every key is declared once in [`KEYS`]: its name, flag aliases, default,
//! kind (text or a bounded number) and help. A `KEY=value` file (systemd
//! EnvironmentFile syntax), environment variables named like the keys, and
//! flags named `-key-name` all set the same keys; flags beat the
//! environment, which beats the file, which beats the defaults. The key
//! names and the flag syntax are the original Go agent's (Go's flag
//! package: one or two dashes, value apart or after `=`), so its
//! deployments carry over unchanged.
//!
//! Validation happens here, once, before anything starts, one short
//! function per concern (source, BPF, SIP filter, MQTT, metrics, sizes,
//! reassembly): a bad value is a [`ConfigError`] naming the key, the value
//! and the reason, and the agent never starts half-configured. Nothing here
//! touches the network.

use crate::envelope::envelope_capacity;
use crate::filter::Filter;
use crate::filter::blob::Endian;
use core::fmt;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The config file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/sip-capture.conf";

/// The live capture filter when BPF_FILTER is not set: UDP, TCP and SCTP
/// (libpcap's `sctp`: IPv4 protocol or IPv6 Next Header 132; `udp` covers
/// the UDP tunnels: VXLAN, Geneve, TZSP, GTP-U), IPv4 fragments after the
/// first (which carry no UDP header), IPv6 packets whose first header is
/// an extension header (Hop-by-Hop 0, Routing 43, Fragment 44, AH 51,
/// Destination Options 60: libpcap's `udp`, `tcp` and `sctp` look at the
/// IPv6 header's Next Header only), IP in IP (4, 41) and GRE (47) over
/// IPv4 and IPv6, MPLS (0x8847, 0x8848) and PPPoE session (0x8864) frames,
/// and VLAN-tagged frames (whose offsets the other terms would misread).
/// `vlan` comes last: libpcap moves the offsets of every term after it;
/// the EtherTypes are numbers, not `mpls` and `pppoes`, which do the same.
pub const DEFAULT_LIVE_BPF: &str = "udp or tcp or sctp or (ip[6:2] & 0x1fff != 0) or \
     (ip6 and (ip6[6] == 0 or ip6[6] == 43 or ip6[6] == 44 or ip6[6] == 51 or ip6[6] == 60)) or \
     ip proto 4 or ip proto 41 or ip proto 47 or ip6 proto 4 or ip6 proto 41 or ip6 proto 47 or \
     ether proto 0x8847 or ether proto 0x8848 or ether proto 0x8864 or vlan";

/// A configuration key: everything about it is declared here, once.
pub struct Key {
    /// Its name in the config file and the environment. The flag is the
    /// name in lower case with `-` for `_` (`--bpf-filter`).
    pub name: &'static str,
    /// More flag names that set it: the original agent's where they differ
    /// (its misspelt `-metric-filter`), and short forms (`--read`).
    pub aliases: &'static [&'static str],
    pub default: &'static str,
    /// How its value is read.
    pub kind: Kind,
    pub help: &'static str,
}

/// How a key's value is read, before the concern that uses it checks more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text, checked where it is used (a path, a URL, a filter, ...).
    Text,
    /// A whole number from `min` to `max`.
    Number { min: u32, max: u32 },
}

use Kind::{Number, Text};

/// Every key sip-capture reads.
#[rustfmt::skip]
pub const KEYS: &[Key] = &[
    Key { name: "INTERFACE", aliases: &[], default: "", kind: Text, help: "capture live on this libpcap device (e.g. eth1, any)" },
    Key { name: "READ_FILE", aliases: &["read"], default: "", kind: Text, help: "read this pcap or pcapng file instead of a device, then exit" },
    Key { name: "BPF_FILTER", aliases: &[], default: "", kind: Text, help: "libpcap filter; live default keeps UDP, TCP, SCTP, IP fragments, GRE, IP in IP, MPLS, PPPoE and VLAN frames, files use none" },
    Key { name: "TUNNEL_UDP_PORTS", aliases: &[], default: crate::decode::DEFAULT_UDP_TUNNEL_PORTS, kind: Text, help: "UDP destination ports peeled as tunnels, kind:port[,kind:port...] with kinds vxlan, geneve, tzsp, gtpu; empty for none" },
    Key { name: "SIP_FILTER", aliases: &[], default: "", kind: Text, help: "which SIP messages to publish (docs/filters.md); empty publishes all" },
    Key { name: "FILTER_FILE", aliases: &[], default: "", kind: Text, help: "load a filter precompiled by `sip-capture compile-filter` instead of SIP_FILTER" },
    Key { name: "FILTER_MAX_DFA_BYTES", aliases: &[], default: "1048576", kind: Number { min: 4096, max: 1 << 28 }, help: "limit on the DFAs of all SIP_FILTER regexes together" },
    Key { name: "BROKER", aliases: &[], default: "mqtt://localhost:1883", kind: Text, help: "MQTT broker, mqtt://host:port (tcp:// accepted), mqtts://host:port for TLS (ssl:// accepted), ws://host:port/path or wss://host:port/path over WebSocket" },
    Key { name: "CA_FILE", aliases: &[], default: "", kind: Text, help: "TLS: PEM CA certificates to verify the broker; default the system's roots" },
    Key { name: "CERT_FILE", aliases: &[], default: "", kind: Text, help: "TLS: PEM client certificate (chain), with KEY_FILE" },
    Key { name: "KEY_FILE", aliases: &[], default: "", kind: Text, help: "TLS: PEM private key of CERT_FILE" },
    Key { name: "USERNAME", aliases: &[], default: "", kind: Text, help: "MQTT user name, with PASSWORD_FILE" },
    Key { name: "PASSWORD_FILE", aliases: &[], default: "", kind: Text, help: "file holding the MQTT password (one line)" },
    Key { name: "TOPIC", aliases: &[], default: "", kind: Text, help: "MQTT topic for SIP envelopes (required)" },
    Key { name: "CLIENT_ID", aliases: &[], default: "", kind: Text, help: "MQTT client id; default sip-capture-<hostname>" },
    Key { name: "STATUS_TOPIC", aliases: &[], default: "", kind: Text, help: "retained online/offline status (offline is the Last Will); default TOPIC/status/CLIENT_ID" },
    Key { name: "TELEMETRY_TOPIC", aliases: &[], default: "", kind: Text, help: "where the agent's counters are published as JSON; default TOPIC/telemetry/CLIENT_ID" },
    Key { name: "TELEMETRY_INTERVAL_S", aliases: &[], default: "60", kind: Number { min: 0, max: 86_400 }, help: "seconds between telemetry reports; 0 turns them off" },
    Key { name: "BATCH_MAX_MESSAGES", aliases: &[], default: "1", kind: Number { min: 1, max: 10_000 }, help: "envelopes per MQTT message, sent as a JSON array; 1 sends each alone (no array)" },
    Key { name: "BATCH_MAX_BYTES", aliases: &[], default: "65536", kind: Number { min: 1024, max: 1 << 24 }, help: "largest batch payload; an envelope larger than this goes alone, in an array of one" },
    Key { name: "BATCH_MAX_DELAY_MS", aliases: &[], default: "100", kind: Number { min: 0, max: 60_000 }, help: "how long a batch that is not full may wait for more envelopes" },
    Key { name: "MAX_INFLIGHT_MESSAGES", aliases: &[], default: "64", kind: Number { min: 1, max: crate::publish::MAX_IN_FLIGHT as u32 }, help: "QoS 1 publishes awaiting their PUBACK at once; the broker's Receive Maximum lowers it (mosquitto's max_inflight_messages, 20 by default)" },
    Key { name: "METRICS_ADDR", aliases: &["metric-filter"], default: "", kind: Text, help: "serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9560, :9560 for every address); off when empty" },
    Key { name: "LOG_LEVEL", aliases: &[], default: "info", kind: Text, help: "error, warn (or warning), info or debug, in any case" },
    Key { name: "RUN_AS_USER", aliases: &[], default: "", kind: Text, help: "after opening the capture, run as this user (name or uid)" },
    Key { name: "RUN_AS_GROUP", aliases: &[], default: "", kind: Text, help: "and this group (default: the user's primary group)" },
    Key { name: "SNAPLEN", aliases: &[], default: "65535", kind: Number { min: 256, max: 262_144 }, help: "bytes captured per frame" },
    Key { name: "CAPTURE_BUFFER_BYTES", aliases: &[], default: "8388608", kind: Number { min: 65_536, max: 1 << 30 }, help: "kernel capture buffer" },
    Key { name: "QUEUE_BYTES", aliases: &[], default: "4194304", kind: Number { min: 4096, max: 1 << 30 }, help: "queue between capture and broker; full means drop and count" },
    Key { name: "MAX_MESSAGE_BYTES", aliases: &[], default: "65535", kind: Number { min: 256, max: 1 << 20 }, help: "largest SIP message published; larger ones are dropped and counted" },
    Key { name: "FRAG_MAX_DATAGRAMS", aliases: &[], default: "32", kind: Number { min: 1, max: 65_536 }, help: "IP datagrams in reassembly at once; the oldest is evicted beyond" },
    Key { name: "FRAG_BUFFER_BYTES", aliases: &[], default: "2097152", kind: Number { min: 1024, max: 1 << 30 }, help: "memory for IP reassembly, shared equally by the datagrams" },
    Key { name: "FRAG_TIMEOUT_MS", aliases: &[], default: "10000", kind: Number { min: 1, max: 3_600_000 }, help: "an unfinished datagram is dropped this long after its first fragment" },
    Key { name: "TCP_MAX_FLOWS", aliases: &[], default: "4096", kind: Number { min: 1, max: 1 << 24 }, help: "TCP streams (one per direction) followed at once; the least recent is evicted beyond" },
    Key { name: "TCP_BUFFERS", aliases: &[], default: "64", kind: Number { min: 0, max: 1 << 20 }, help: "stream buffers for messages split across segments or waiting for a hole" },
    Key { name: "TCP_BUFFER_BYTES", aliases: &[], default: "65536", kind: Number { min: 1024, max: 1 << 24 }, help: "size of each stream buffer; bounds a SIP message over TCP" },
    Key { name: "TCP_IDLE_TIMEOUT_S", aliases: &[], default: "300", kind: Number { min: 1, max: 86_400 }, help: "a TCP stream without traffic this long is dropped" },
    Key { name: "TCP_HOLE_WAIT_MS", aliases: &[], default: "1000", kind: Number { min: 1, max: 3_600_000 }, help: "how long, in capture time, a TCP stream waits for a missing segment before skipping it" },
    Key { name: "TCP_HOLE_MAX_BYTES", aliases: &[], default: "32768", kind: Number { min: 1, max: 1 << 24 }, help: "how many bytes after a missing segment a TCP stream keeps before skipping it (at most TCP_BUFFER_BYTES)" },
    Key { name: "SCTP_MAX_ASSOCIATIONS", aliases: &[], default: "1024", kind: Number { min: 1, max: 1 << 20 }, help: "SCTP associations (one per direction) whose duplicate TSNs are told apart at once; the least recent is evicted beyond" },
    Key { name: "SCTP_BUFFERS", aliases: &[], default: "32", kind: Number { min: 0, max: 1 << 16 }, help: "buffers for SCTP user messages fragmented over several chunks" },
    Key { name: "SCTP_BUFFER_BYTES", aliases: &[], default: "65536", kind: Number { min: 1024, max: 1 << 24 }, help: "size of each SCTP buffer; bounds a fragmented SIP message over SCTP" },
];

/// Memory and time bounds of reassembly, from the FRAG_, TCP_ and SCTP_
/// keys.
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
    pub sctp_associations: usize,
    pub sctp_buffers: usize,
    pub sctp_buffer_bytes: usize,
}

impl ReassemblyLimits {
    fn from(values: &Values) -> Result<ReassemblyLimits, ConfigError> {
        let n = |key| values.number(key);
        let limits = ReassemblyLimits {
            frag_datagrams: n("FRAG_MAX_DATAGRAMS")? as usize,
            frag_buffer_bytes: n("FRAG_BUFFER_BYTES")? as usize,
            frag_timeout_ms: u64::from(n("FRAG_TIMEOUT_MS")?),
            tcp_flows: n("TCP_MAX_FLOWS")? as usize,
            tcp_buffers: n("TCP_BUFFERS")? as usize,
            tcp_buffer_bytes: n("TCP_BUFFER_BYTES")? as usize,
            tcp_idle_s: u64::from(n("TCP_IDLE_TIMEOUT_S")?),
            tcp_hole_wait_ms: u64::from(n("TCP_HOLE_WAIT_MS")?),
            tcp_hole_max_bytes: n("TCP_HOLE_MAX_BYTES")? as usize,
            sctp_associations: n("SCTP_MAX_ASSOCIATIONS")? as usize,
            sctp_buffers: n("SCTP_BUFFERS")? as usize,
            sctp_buffer_bytes: n("SCTP_BUFFER_BYTES")? as usize,
        };
        if limits.tcp_hole_max_bytes > limits.tcp_buffer_bytes {
            return Err(values.error(
                "TCP_HOLE_MAX_BYTES",
                "is more than TCP_BUFFER_BYTES, the buffer that holds those bytes",
            ));
        }
        if limits.frag_buffer_bytes / limits.frag_datagrams < 1500 {
            return Err(values.error(
                "FRAG_BUFFER_BYTES",
                "gives each of FRAG_MAX_DATAGRAMS less than 1500 bytes, smaller than one Ethernet fragment",
            ));
        }
        Ok(limits)
    }

    /// The limits of the default configuration.
    pub fn defaults() -> ReassemblyLimits {
        // The defaults are valid by construction; a test checks it.
        ReassemblyLimits::from(&Values::default()).unwrap_or_else(|e| panic!("default {e}"))
    }
}

/// The key named `name`; every name the code asks for is in [`KEYS`].
fn key(name: &str) -> &'static Key {
    KEYS.iter()
        .find(|k| k.name == name)
        .unwrap_or_else(|| panic!("{name} is not in KEYS"))
}

/// The keys' values from the file, the environment and the flags, in that
/// order of precedence; a key not set has its default.
#[derive(Debug, Default)]
struct Values(BTreeMap<&'static str, String>);

impl Values {
    fn text(&self, name: &'static str) -> &str {
        self.0.get(name).map_or(key(name).default, String::as_str)
    }

    /// The value of a [`Kind::Number`] key, checked against its bounds.
    fn number(&self, name: &'static str) -> Result<u32, ConfigError> {
        parse_number(key(name), self.text(name))
    }

    /// An error about key `name` and its value.
    fn error(&self, name: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError::new(name, self.text(name), reason)
    }
}

/// `text` as the value of the [`Kind::Number`] key `key`.
fn parse_number(key: &Key, text: &str) -> Result<u32, ConfigError> {
    let Number { min, max } = key.kind else {
        unreachable!("{} is not a number", key.name)
    };
    text.parse::<u32>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            ConfigError::new(
                key.name,
                text,
                format!("expected a whole number from {min} to {max}"),
            )
        })
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
    /// `mqtts://`, `ssl://` or `wss://`: TLS to the broker.
    pub tls: bool,
    /// `ws://` or `wss://`: MQTT over WebSocket, at this path.
    pub websocket: Option<String>,
}

/// `host:port`, an IPv6 address in brackets (RFC 3986 §3.2.2).
impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host.contains(':') {
            true => write!(f, "[{}]:{}", self.host, self.port),
            false => write!(f, "{}:{}", self.host, self.port),
        }
    }
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
    /// TUNNEL_UDP_PORTS.
    pub tunnels: crate::decode::UdpTunnels,
    /// Every key's effective value, for `--check`.
    pub effective: Vec<(&'static str, String)>,
    /// Settings accepted for compatibility but without effect, to be
    /// logged at start-up.
    pub warnings: Vec<String>,
}

/// Everything the publisher needs to reach the broker and what it sends.
#[derive(Debug)]
pub struct Mqtt {
    pub broker: Broker,
    /// Set for `mqtts://`.
    pub tls: Option<crate::publish::tls::Client>,
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
    /// MAX_INFLIGHT_MESSAGES: publishes awaiting their PUBACK at once, 1 to
    /// [`crate::publish::MAX_IN_FLIGHT`], before the broker's Receive
    /// Maximum (MQTT 5 §3.2.2.3.3) lowers it.
    pub max_in_flight: usize,
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
    let flags = match read_flags(args)? {
        Flags::Help => return Ok(Command::Help),
        Flags::Version => return Ok(Command::Version),
        Flags::Run(flags) => flags,
    };
    let mut values = Values::default();
    let file = flags
        .config_file
        .or_else(|| default_file.exists().then(|| default_file.to_path_buf()));
    if let Some(path) = file {
        values.0.extend(read_config_file(&path)?);
    }
    for key in KEYS {
        if let Some(value) = env(key.name) {
            values.0.insert(key.name, value);
        }
    }
    values.0.extend(flags.values);

    let config = validate(&values)?;
    Ok(if flags.check {
        Command::Check(config)
    } else {
        Command::Run(config)
    })
}

/// What the flags ask for.
enum Flags {
    Help,
    Version,
    Run(RunFlags),
}

struct RunFlags {
    values: BTreeMap<&'static str, String>,
    config_file: Option<PathBuf>,
    check: bool,
}

/// Read flags as Go's flag package does, so the original agent's command
/// lines work unchanged: one or two dashes, the value after `=` or as the
/// next argument (`-interface eth1`, `--interface=eth1`), and the boolean
/// flags `-check`, `-help` (`-h`) and `-version` (`-V`) without a value or
/// with `=true`/`=false`.
fn read_flags(args: &[String]) -> Result<Flags, ConfigError> {
    let mut flags = RunFlags {
        values: BTreeMap::new(),
        config_file: None,
        check: false,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let Some(body) = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .filter(|b| !b.is_empty() && !b.starts_with('-'))
        else {
            return Err(ConfigError::new(
                "argument",
                arg,
                "expected -flag value or -flag=value (see --help)",
            ));
        };
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        let flag = &arg[..arg.len() - body.len() + name.len()];
        let boolean = || match inline {
            None | Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(ConfigError::new(flag, other, "expected true or false")),
        };
        match name {
            "h" | "help" if boolean()? => return Ok(Flags::Help),
            "V" | "version" if boolean()? => return Ok(Flags::Version),
            "h" | "help" | "V" | "version" => continue,
            "check" => {
                flags.check = boolean()?;
                continue;
            }
            _ => {}
        }
        let value = match inline {
            Some(value) => value.to_string(),
            None => args
                .next()
                .cloned()
                .ok_or_else(|| ConfigError::new(flag, "", "missing value"))?,
        };
        if name == "config" {
            flags.config_file = Some(PathBuf::from(value));
            continue;
        }
        let key =
            key_for_flag(name).ok_or_else(|| ConfigError::new(flag, &value, "unknown flag (see --help)"))?;
        flags.values.insert(key.name, value);
    }
    Ok(Flags::Run(flags))
}

/// The flag of a key: its name in lower case with `-` for `_`.
fn flag_of(key: &Key) -> String {
    key.name.to_ascii_lowercase().replace('_', "-")
}

/// The key a flag sets (`bpf-filter` sets BPF_FILTER), by its name or an
/// alias (`read`, the original's `metric-filter`).
fn key_for_flag(flag: &str) -> Option<&'static Key> {
    KEYS.iter()
        .find(|k| flag_of(k).eq_ignore_ascii_case(flag) || k.aliases.contains(&flag))
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

/// Validate every key, one concern at a time; the first problem found is
/// the error.
fn validate(values: &Values) -> Result<Config, ConfigError> {
    let mut warnings = Vec::new();
    let source = source(values)?;
    let bpf_filter = bpf_filter(values, &source)?;
    let sip_filter = sip_filter(values)?;
    let mqtt = mqtt(values, &source, &mut warnings)?;
    let metrics_addr = metrics_addr(values)?;
    let (user, group) = (values.text("RUN_AS_USER"), values.text("RUN_AS_GROUP"));
    let run_as =
        crate::privileges::resolve(user, group).map_err(|(key, reason)| values.error(key, reason))?;
    let log_level = parse_log_level(values.text("LOG_LEVEL"))
        .ok_or_else(|| values.error("LOG_LEVEL", "expected error, warn, info or debug"))?;
    let max_message_bytes = values.number("MAX_MESSAGE_BYTES")? as usize;
    let largest_record = envelope_capacity(max_message_bytes) + 4;
    let queue_bytes = values.number("QUEUE_BYTES")? as usize;
    if queue_bytes < largest_record {
        return Err(values.error(
            "QUEUE_BYTES",
            format!("cannot hold one envelope of MAX_MESSAGE_BYTES; need at least {largest_record}"),
        ));
    }

    let effective = KEYS
        .iter()
        .map(|k| {
            let value = match k.name {
                "CLIENT_ID" => mqtt.client_id.clone(),
                "STATUS_TOPIC" => mqtt.status_topic.clone(),
                "TELEMETRY_TOPIC" => mqtt.telemetry_topic.clone(),
                "BPF_FILTER" => bpf_filter.clone().unwrap_or_default(),
                _ => values.text(k.name).to_string(),
            };
            (k.name, value)
        })
        .collect();
    Ok(Config {
        source,
        bpf_filter,
        sip_filter,
        mqtt,
        metrics_addr,
        run_as,
        log_level,
        snaplen: values.number("SNAPLEN")?,
        capture_buffer_bytes: values.number("CAPTURE_BUFFER_BYTES")?,
        queue_bytes,
        max_message_bytes,
        reassembly: ReassemblyLimits::from(values)?,
        tunnels: crate::decode::UdpTunnels::parse(values.text("TUNNEL_UDP_PORTS"))
            .map_err(|reason| values.error("TUNNEL_UDP_PORTS", reason))?,
        effective,
        warnings,
    })
}

/// INTERFACE or READ_FILE, exactly one, and that it can be opened.
fn source(values: &Values) -> Result<Source, ConfigError> {
    let (interface, read_file) = (values.text("INTERFACE"), values.text("READ_FILE"));
    match (interface.is_empty(), read_file.is_empty()) {
        (false, false) => Err(values.error("READ_FILE", "INTERFACE is set too; choose one source")),
        (true, true) => Err(values.error("INTERFACE", "no packet source: set INTERFACE or READ_FILE")),
        (false, true) if !crate::capture::interface_exists(interface) => {
            Err(values.error("INTERFACE", "no such interface"))
        }
        (false, true) => Ok(Source::Interface(interface.to_string())),
        (true, false) => match std::fs::File::open(read_file) {
            Ok(_) => Ok(Source::File(PathBuf::from(read_file))),
            Err(e) => Err(values.error("READ_FILE", format!("cannot read: {e}"))),
        },
    }
}

/// BPF_FILTER, or the live default; compiled once here to validate it.
fn bpf_filter(values: &Values, source: &Source) -> Result<Option<String>, ConfigError> {
    let program = match (source, values.text("BPF_FILTER")) {
        (Source::Interface(_), "") => DEFAULT_LIVE_BPF,
        (Source::File(_), "") => return Ok(None),
        (_, program) => program,
    };
    crate::capture::check_bpf(program).map_err(|reason| ConfigError::new("BPF_FILTER", program, reason))?;
    Ok(Some(program.to_string()))
}

/// SIP_FILTER compiled, or FILTER_FILE loaded; not both.
fn sip_filter(values: &Values) -> Result<Filter, ConfigError> {
    let max_dfa_bytes = values.number("FILTER_MAX_DFA_BYTES")? as usize;
    let (text, file) = (values.text("SIP_FILTER"), values.text("FILTER_FILE"));
    if file.is_empty() {
        Filter::compile(text, max_dfa_bytes).map_err(|reason| values.error("SIP_FILTER", reason))
    } else if !text.trim().is_empty() {
        Err(values.error(
            "FILTER_FILE",
            "SIP_FILTER is set too; a filter file carries its own expression",
        ))
    } else {
        Filter::load_file(Path::new(file)).map_err(|reason| values.error("FILTER_FILE", reason))
    }
}

/// The broker, how to reach it, and what is sent there.
fn mqtt(values: &Values, source: &Source, warnings: &mut Vec<String>) -> Result<Mqtt, ConfigError> {
    let broker = parse_broker(values.text("BROKER")).map_err(|reason| values.error("BROKER", reason))?;
    let tls_files = ["CA_FILE", "CERT_FILE", "KEY_FILE"];
    let tls = if broker.tls {
        let [ca, cert, key] = tls_files.map(|k| values.text(k));
        Some(
            crate::publish::tls::client(&broker.host, ca, cert, key)
                .map_err(|(key, reason)| values.error(key, reason))?,
        )
    } else {
        // The original agent took certificate files with a tcp:// broker
        // and never used them; its deployments must still start.
        for key in tls_files.into_iter().filter(|k| !values.text(k).is_empty()) {
            warnings.push(format!(
                "{key} is set but not used: BROKER is not mqtts://, ssl:// or wss://"
            ));
        }
        None
    };
    let topic = values.text("TOPIC").to_string();
    check_topic(&topic).map_err(|reason| values.error("TOPIC", reason))?;
    let client_id = match values.text("CLIENT_ID") {
        "" => crate::identity::default_client_id(
            match source {
                Source::Interface(name) => Some(name.as_str()),
                Source::File(_) => None,
            },
            MAX_CLIENT_ID_LEN,
        ),
        id if id.len() > MAX_CLIENT_ID_LEN => {
            return Err(values.error("CLIENT_ID", format!("longer than {MAX_CLIENT_ID_LEN} bytes")));
        }
        id => id.to_string(),
    };
    // The status topic is also the Last Will's, which minimq holds in a
    // fixed buffer.
    let status_topic = side_topic(
        values,
        ("STATUS_TOPIC", MAX_STATUS_TOPIC_LEN),
        "status",
        &topic,
        &client_id,
    )?;
    let telemetry_topic = side_topic(
        values,
        ("TELEMETRY_TOPIC", MAX_TOPIC_LEN),
        "telemetry",
        &topic,
        &client_id,
    )?;
    let interval = values.number("TELEMETRY_INTERVAL_S")?;
    Ok(Mqtt {
        broker,
        tls,
        credentials: credentials(values.text("USERNAME"), values.text("PASSWORD_FILE"))?,
        topic,
        client_id,
        status_topic,
        telemetry_topic,
        telemetry_interval: (interval > 0).then(|| std::time::Duration::from_secs(u64::from(interval))),
        batch: batch(values)?,
        max_in_flight: values.number("MAX_INFLIGHT_MESSAGES")? as usize,
    })
}

/// BATCH_MAX_*: `None` (one envelope per message) unless more than one.
fn batch(values: &Values) -> Result<Option<Batch>, ConfigError> {
    let max_messages = values.number("BATCH_MAX_MESSAGES")? as usize;
    let batch = Batch {
        max_messages,
        max_bytes: values.number("BATCH_MAX_BYTES")? as usize,
        max_delay: std::time::Duration::from_millis(u64::from(values.number("BATCH_MAX_DELAY_MS")?)),
    };
    Ok((max_messages > 1).then_some(batch))
}

/// METRICS_ADDR: `IP:port`, or the original agent's `:port` for every
/// IPv4 address.
fn metrics_addr(values: &Values) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    let text = values.text("METRICS_ADDR");
    let full;
    let addr = match text {
        "" => return Ok(None),
        _ if text.starts_with(':') => {
            full = format!("0.0.0.0{text}");
            &full
        }
        _ => text,
    };
    addr.parse().map(Some).map_err(|_| {
        values.error(
            "METRICS_ADDR",
            "expected IP:port or :port, such as 127.0.0.1:9560, [::1]:9560 or :9560",
        )
    })
}

/// `compile-filter EXPR -o FILE [--endian little|big] [--filter-max-dfa-bytes N]`
fn compile_filter_command(args: &[String]) -> Result<Command, ConfigError> {
    let mut expression = None;
    let mut output = None;
    let mut endian = Endian::NATIVE;
    let mut max_dfa_bytes = key("FILTER_MAX_DFA_BYTES").default.to_string();
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
    let max_dfa_bytes = parse_number(key("FILTER_MAX_DFA_BYTES"), &max_dfa_bytes)? as usize;
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
    let max_dfa_bytes = Values::default().number("FILTER_MAX_DFA_BYTES")? as usize;
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
/// At most `max_len` bytes. A derived default that fails says so.
fn side_topic(
    values: &Values,
    (key, max_len): (&'static str, usize),
    kind: &str,
    topic: &str,
    client_id: &str,
) -> Result<String, ConfigError> {
    let set = values.text(key).to_string();
    let derived = set.is_empty();
    let value = if derived {
        format!("{topic}/{kind}/{client_id}")
    } else {
        set
    };
    let checked = check_topic(&value).and_then(|()| {
        if value == topic {
            Err("must differ from TOPIC, which carries only SIP envelopes".into())
        } else if value.len() > max_len {
            Err(format!("{} bytes, longer than {max_len}", value.len()))
        } else {
            Ok(())
        }
    });
    checked.map_err(|reason| {
        let reason = if derived {
            format!("the default TOPIC/{kind}/CLIENT_ID: {reason}; set {key} or change TOPIC or CLIENT_ID")
        } else {
            reason
        };
        ConfigError::new(key, &value, reason)
    })?;
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

/// minimq's fixed Last Will topic capacity, bytes.
const MAX_STATUS_TOPIC_LEN: usize = 128;

/// The longest MQTT string, bytes (MQTT 5 §1.5.4).
const MAX_TOPIC_LEN: usize = 65_535;

/// minimq's fixed client id capacity.
const MAX_CLIENT_ID_LEN: usize = 64;

/// `scheme://host[:port]`, and for WebSocket `[/path]`: mqtt and tcp
/// (1883), mqtts and ssl (TLS, 8883), ws (80) and wss (TLS, 443).
fn parse_broker(text: &str) -> Result<Broker, String> {
    let (scheme, rest) = text.split_once("://").ok_or("expected mqtt://host:port")?;
    let (tls, websocket, default_port) = match scheme {
        "mqtt" | "tcp" => (false, false, 1883),
        "mqtts" | "ssl" => (true, false, 8883),
        "ws" => (false, true, 80),
        "wss" => (true, true, 443),
        other => {
            return Err(format!(
                "unsupported scheme '{other}'; use mqtt://, mqtts://, ws:// or wss://host:port"
            ));
        }
    };
    let (rest, path) = match rest.find('/') {
        Some(slash) if websocket => (&rest[..slash], &rest[slash..]),
        Some(slash) if rest[slash..].trim_end_matches('/').is_empty() => (&rest[..slash], ""),
        Some(_) => return Err("expected host:port with no path (only ws:// and wss:// take one)".into()),
        None => (rest, ""),
    };
    if rest.contains('@') || path.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err("expected host:port with no user, and a path without spaces".into());
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
        _ => (rest, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("missing host".into());
    }
    let path = if path.is_empty() {
        crate::publish::websocket::DEFAULT_PATH
    } else {
        path
    };
    Ok(Broker {
        host: host.to_string(),
        port,
        tls,
        websocket: websocket.then(|| path.to_string()),
    })
}

/// A Topic Name the agent publishes to, checked as a broker will check it
/// (MQTT 5 §4.7 and §1.5.4), so that a topic the broker would refuse — by
/// closing the connection, again and again — is a configuration error
/// instead: not empty, at most 65,535 bytes, no wildcards (§4.7.1), not
/// starting with `$` (reserved for the broker, §4.7.2), no U+0000, no
/// control characters (U+0001..U+001F, U+007F..U+009F) and no Unicode
/// noncharacters (§1.5.4: brokers may close the connection for them).
fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("missing: set the MQTT topic for SIP data".into());
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(format!(
            "{} bytes, longer than MQTT's {MAX_TOPIC_LEN}",
            topic.len()
        ));
    }
    if topic.contains(['+', '#']) {
        return Err("wildcards + and # cannot be published to (MQTT 5 §4.7.1)".into());
    }
    if topic.starts_with('$') {
        return Err("topics starting with $ are reserved for the broker (MQTT 5 §4.7.2)".into());
    }
    let noncharacter = |c: char| matches!(c as u32, 0xFDD0..=0xFDEF) || c as u32 & 0xFFFE == 0xFFFE;
    if let Some((at, c)) = topic
        .char_indices()
        .find(|&(_, c)| c.is_control() || noncharacter(c))
    {
        let what = if c.is_control() {
            "control character"
        } else {
            "Unicode noncharacter"
        };
        return Err(format!(
            "{what} U+{:04X} at byte {at}: brokers refuse it (MQTT 5 §1.5.4)",
            c as u32
        ));
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

/// `--help` text, generated from [`KEYS`].
pub fn help() -> String {
    // `\x20` keeps the usage lines' indent: a `\` line continuation drops
    // the whitespace that starts the next line.
    let mut text = String::from(
        "sip-capture: passive SIP sensor; publishes each captured SIP message to one MQTT topic\n\n\
Usage: sip-capture [--config FILE] [--check] [--KEY-NAME VALUE ...]\n\
\x20      sip-capture filter-test EXPR CAPTURE.pcap       which SIP messages of a capture EXPR selects\n\
\x20      sip-capture compile-filter EXPR -o FILE [--endian little|big]   EXPR precompiled, for FILTER_FILE\n\n\
Every key can be set in the config file (KEY=value, default /etc/sip-capture.conf),\n\
as an environment variable KEY, or as a flag --key-name; flags win over the\n\
environment, which wins over the file. Flags take one or two dashes and the\n\
value as the next argument or after '=' (-interface eth1, --interface=eth1).\n\n\
  --config FILE   read keys from FILE\n\
  --check         validate the configuration, print it and exit\n\
  -h, --help      this help\n\
  -V, --version   print the version\n\nKeys:\n",
    );
    for key in KEYS {
        let default = if key.default.is_empty() {
            String::new()
        } else {
            format!(" [default: {}]", key.default)
        };
        let aliases: String = key.aliases.iter().map(|a| format!(" (also --{a})")).collect();
        text.push_str(&format!(
            "  {:<22} --{:<22} {}{}{}\n",
            key.name,
            flag_of(key),
            key.help,
            aliases,
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
            websocket: None,
        };
        let websocket = |host: &str, port, tls, path: &str| Broker {
            websocket: Some(path.into()),
            ..broker(host, port, tls)
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
        assert_eq!(ok("tcp://h/"), broker("h", 1883, false));
        assert!(parse_broker("mqtt://h:1/mqtt").is_err());
        assert_eq!(ok("ws://h"), websocket("h", 80, false, "/mqtt"));
        assert_eq!(ok("ws://h:9001/"), websocket("h", 9001, false, "/"));
        assert_eq!(
            ok("wss://[::1]:8443/mqtt/v1"),
            websocket("::1", 8443, true, "/mqtt/v1")
        );
        assert!(parse_broker("ws://h/a b").is_err());
    }

    #[test]
    fn default_limits_are_valid() {
        let limits = ReassemblyLimits::defaults();
        assert!(limits.frag_buffer_bytes / limits.frag_datagrams >= 65_535);
    }

    #[test]
    fn flags_map_to_keys() {
        let name = |flag| key_for_flag(flag).map(|k| k.name);
        assert_eq!(name("bpf-filter"), Some("BPF_FILTER"));
        assert_eq!(name("read"), Some("READ_FILE"));
        assert_eq!(name("metric-filter"), Some("METRICS_ADDR"));
        assert_eq!(name("nope"), None);
    }

    #[test]
    fn every_number_key_has_a_valid_default() {
        for key in KEYS.iter().filter(|k| matches!(k.kind, Kind::Number { .. })) {
            assert!(parse_number(key, key.default).is_ok(), "{}", key.name);
        }
    }
}
