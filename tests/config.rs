//! Configuration from file, environment and flags: precedence, `--check`,
//! and every error path (exit code 2, one line naming key, value, reason).

mod common;

use common::{agent, pcap};
use std::process::Output;

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Run the agent with `args` and assert it refused the configuration with
/// one stderr line holding every piece of `expected`.
fn refused(args: &[&str], expected: &[&str]) {
    let output = agent().args(args).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "exit code for {args:?}: {}",
        stderr(&output)
    );
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "one line for {args:?}: {err}");
    for piece in expected {
        assert!(err.contains(piece), "{piece:?} missing from {err:?}");
    }
}

fn file_args() -> Vec<String> {
    vec![
        "--read".into(),
        pcap("no-to-tag.pcap").display().to_string(),
        "--topic".into(),
        "t".into(),
    ]
}

/// [`refused`] for a valid file configuration plus `extra` arguments.
fn refused_with(extra: &[&str], expected: &[&str]) {
    let mut args = file_args();
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(&args, expected);
}

#[test]
fn missing_topic() {
    let file = pcap("no-to-tag.pcap").display().to_string();
    refused(&["--read", &file], &["TOPIC", "missing"]);
}

#[test]
fn bad_broker_urls() {
    refused_with(
        &["--broker", "http://example.com"],
        &["BROKER", "http://example.com", "unsupported scheme"],
    );

    refused_with(
        &["--broker", "mqtt://host:99999"],
        &["BROKER", "mqtt://host:99999", "port"],
    );
}

#[test]
fn both_sources() {
    let file = pcap("no-to-tag.pcap").display().to_string();
    refused(
        &["--read", &file, "--interface", "lo", "--topic", "t"],
        &["READ_FILE", "INTERFACE is set too"],
    );
}

#[test]
fn no_source() {
    refused(&["--topic", "t"], &["INTERFACE", "no packet source"]);
}

#[test]
fn unreadable_capture_file() {
    refused(
        &["--read", "/nonexistent/x.pcap", "--topic", "t"],
        &["READ_FILE", "/nonexistent/x.pcap", "cannot read"],
    );
}

#[test]
fn unknown_flag() {
    refused(&["--bogus", "1"], &["--bogus", "unknown flag"]);
}

#[test]
fn flag_without_value() {
    refused(&["--topic"], &["--topic", "missing value"]);
}

#[test]
fn unknown_key_in_file() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("x.conf");
    std::fs::write(&conf, "# comment\nTOPIC=t\nTOPICS=oops\n").unwrap();
    let output = common::agent()
        .args(["--config", conf.to_str().unwrap(), "--check"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains("x.conf:3: TOPICS") && err.contains("oops") && err.contains("unknown key"),
        "{err}"
    );
}

#[test]
fn unreadable_config_file() {
    refused(
        &["--config", "/nonexistent/sip-capture.conf"],
        &["--config", "/nonexistent/sip-capture.conf", "cannot read"],
    );
}

#[test]
fn bad_log_level() {
    refused_with(
        &["--log-level", "loud"],
        &["LOG_LEVEL", "loud", "expected error, warn, info or debug"],
    );
}

#[test]
fn bad_numbers() {
    for (flag, key, value) in [
        ("--queue-bytes", "QUEUE_BYTES", "lots"),
        ("--snaplen", "SNAPLEN", "10"),
        ("--max-message-bytes", "MAX_MESSAGE_BYTES", "-1"),
        ("--batch-max-messages", "BATCH_MAX_MESSAGES", "0"),
        ("--batch-max-bytes", "BATCH_MAX_BYTES", "100"),
        ("--batch-max-delay-ms", "BATCH_MAX_DELAY_MS", "soon"),
        ("--max-inflight-messages", "MAX_INFLIGHT_MESSAGES", "129"),
        ("--max-inflight-messages", "MAX_INFLIGHT_MESSAGES", "0"),
    ] {
        refused_with(&[flag, value], &[key, value, "whole number"]);
    }
}

#[test]
fn queue_smaller_than_one_message() {
    refused_with(
        &["--queue-bytes", "10000"],
        &["QUEUE_BYTES", "10000", "cannot hold one envelope"],
    );
}

#[test]
fn tcp_hole_bounds() {
    refused_with(
        &["--tcp-hole-wait-ms", "0"],
        &["TCP_HOLE_WAIT_MS", "0", "whole number"],
    );
    refused_with(
        &["--tcp-hole-max-bytes", "70000"],
        &["TCP_HOLE_MAX_BYTES", "70000", "more than TCP_BUFFER_BYTES"],
    );
}

#[test]
fn sctp_bounds() {
    refused_with(
        &["--sctp-max-associations", "0"],
        &["SCTP_MAX_ASSOCIATIONS", "0", "whole number"],
    );
    refused_with(
        &["--sctp-buffer-bytes", "512"],
        &["SCTP_BUFFER_BYTES", "512", "whole number"],
    );
    refused_with(
        &["--sctp-buffers", "lots"],
        &["SCTP_BUFFERS", "lots", "whole number"],
    );
}

#[test]
fn bad_tunnel_udp_ports() {
    refused_with(
        &["--tunnel-udp-ports", "vxlan:4789,l2tp:1701"],
        &["TUNNEL_UDP_PORTS", "vxlan:4789,l2tp:1701", "unknown tunnel kind"],
    );
    refused_with(
        &["--tunnel-udp-ports", "vxlan:4789,geneve:4789"],
        &["TUNNEL_UDP_PORTS", "given twice"],
    );
}

#[test]
fn bad_bpf_filter() {
    refused_with(
        &["--bpf-filter", "udp and and"],
        &["BPF_FILTER", "udp and and", "syntax error"],
    );
}

#[test]
fn wildcard_topic() {
    let file = pcap("no-to-tag.pcap").display().to_string();
    refused(
        &["--read", &file, "--topic", "sip/#"],
        &["TOPIC", "sip/#", "wildcards"],
    );
}

#[test]
fn missing_interface() {
    refused(
        &["--interface", "nosuchif0", "--topic", "t"],
        &["INTERFACE", "nosuchif0", "no such interface"],
    );
}

#[test]
fn check_prints_effective_config_and_exits_zero() {
    let mut args = file_args();
    args.push("--check".into());
    let output = agent().args(&args).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(out.contains("TOPIC=t\n"), "{out}");
    assert!(out.contains("BROKER=mqtt://localhost:1883\n"), "{out}");
    assert!(
        out.contains("BPF_FILTER=\n"),
        "files get no BPF by default: {out}"
    );
}

#[test]
fn flags_beat_environment_beat_file() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("sip-capture.conf");
    std::fs::write(
        &conf,
        format!(
            "READ_FILE={}\nTOPIC=from-file\nCLIENT_ID=from-file\nLOG_LEVEL='debug'\nBROKER=\"tcp://file:1\"\n",
            pcap("no-to-tag.pcap").display()
        ),
    )
    .unwrap();
    let output = agent()
        .args([
            "--config",
            conf.to_str().unwrap(),
            "--check",
            "--topic",
            "from-flag",
        ])
        .env("TOPIC", "from-env")
        .env("CLIENT_ID", "from-env")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(out.contains("TOPIC=from-flag\n"), "{out}");
    assert!(out.contains("CLIENT_ID=from-env\n"), "{out}");
    assert!(out.contains("LOG_LEVEL=debug\n"), "{out}");
    assert!(out.contains("BROKER=tcp://file:1\n"), "{out}");
}

#[test]
fn help_and_version() {
    let output = agent().arg("--help").output().unwrap();
    assert!(output.status.success());
    assert!(stdout(&output).contains("BPF_FILTER"));
    let output = agent().arg("--version").output().unwrap();
    assert_eq!(
        stdout(&output).trim(),
        format!("sip-capture/{}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn filter_errors_name_the_column() {
    let file = pcap("no-to-tag.pcap").display().to_string();
    refused(
        &[
            "--read",
            &file,
            "--topic",
            "t",
            "--sip-filter",
            "(all request (metod invite))",
        ],
        &[
            "SIP_FILTER",
            "column 15: unknown function 'metod' (did you mean 'method'?)",
        ],
    );
    refused(
        &["--read", &file, "--topic", "t", "--sip-filter", "(body \"[\")"],
        &["SIP_FILTER", "regex \"[\": unclosed character class"],
    );
}

#[test]
fn filter_file_and_sip_filter_together() {
    let file = pcap("no-to-tag.pcap").display().to_string();
    refused(
        &[
            "--read",
            &file,
            "--topic",
            "t",
            "--sip-filter",
            "request",
            "--filter-file",
            "/x",
        ],
        &["FILTER_FILE", "SIP_FILTER is set too"],
    );
}

#[test]
fn foreign_endian_filter_file() {
    let dir = tempfile::tempdir().unwrap();
    let blob = dir.path().join("f.bin");
    let other = if cfg!(target_endian = "little") {
        "big"
    } else {
        "little"
    };
    let status = common::subcommand("compile-filter")
        .args(["(to \"x\")", "--endian", other, "-o"])
        .arg(&blob)
        .status()
        .unwrap();
    assert!(status.success());
    let file = pcap("no-to-tag.pcap").display().to_string();
    refused(
        &[
            "--read",
            &file,
            "--topic",
            "t",
            "--filter-file",
            blob.to_str().unwrap(),
        ],
        &["FILTER_FILE", &format!("filter file built for {other}-endian")],
    );
}

#[test]
fn status_topic_is_derived_and_checked() {
    let mut args = file_args();
    args.extend(["--client-id".into(), "tap-3".into(), "--check".into()]);
    let output = agent().args(&args).output().unwrap();
    assert!(
        stdout(&output).contains("STATUS_TOPIC=t/status/tap-3\n"),
        "{}",
        stdout(&output)
    );
    refused_with(
        &["--status-topic", "sip/+/status"],
        &["STATUS_TOPIC", "sip/+/status", "wildcards"],
    );
    refused_with(
        &["--status-topic", "t"],
        &["STATUS_TOPIC", "must differ from TOPIC"],
    );
}

#[test]
fn unknown_user_or_group() {
    refused_with(
        &["--run-as-user", "no-such-user-x"],
        &["RUN_AS_USER", "no-such-user-x", "no such user"],
    );
    refused_with(
        &["--run-as-user", "nobody", "--run-as-group", "no-such-group-x"],
        &["RUN_AS_GROUP", "no-such-group-x", "no such group"],
    );
    refused_with(
        &["--run-as-group", "nogroup"],
        &["RUN_AS_GROUP", "set RUN_AS_USER too"],
    );
}

/// `USER`, which every login shell and init exports, is not a key: the
/// environment beats the config file, so a key named USER would silently
/// replace the file's choice with whoever started the agent.
#[test]
fn the_shell_user_variable_is_not_read() {
    let output = agent()
        .args(file_args())
        .arg("--check")
        .env("USER", "no-such-user-x")
        .env("GROUP", "no-such-group-x")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("RUN_AS_USER=\n"), "{}", stdout(&output));
}

/// Topics a broker refuses (MQTT 5 §1.5.4, §4.7) are refused here, in any
/// of the three topic keys, with one line naming key, value and why.
#[test]
fn topics_the_broker_would_refuse() {
    let file = pcap("no-to-tag.pcap").display().to_string();
    let topic = |value: &str, expected: &[&str]| {
        refused(&["--read", &file, "--topic", value], expected);
    };
    topic(
        "sip/\u{1}x",
        &["TOPIC", r#""sip/\u{1}x""#, "control character U+0001"],
    );
    topic("sip\u{7f}", &["TOPIC", "control character U+007F"]);
    topic("sip\u{85}", &["TOPIC", "control character U+0085"]);
    topic("sip/\u{fdd0}", &["TOPIC", "noncharacter U+FDD0"]);
    topic("sip/\u{1fffe}", &["TOPIC", "noncharacter U+1FFFE"]);
    topic("$SYS/sip", &["TOPIC", "$SYS/sip", "reserved"]);
    topic("sip/+", &["TOPIC", "wildcards"]);
    let long = "x".repeat(65_536);
    topic(&long, &["TOPIC", "65536 bytes, longer than MQTT's 65535"]);
    refused_with(
        &["--status-topic", "$status"],
        &["STATUS_TOPIC", "$status", "reserved"],
    );
    refused_with(
        &["--telemetry-topic", "tele\tmetry"],
        &["TELEMETRY_TOPIC", "control character U+0009"],
    );
    // Fine: other Unicode, empty levels, a $ not at the start.
    let output = agent()
        .args(["--read", &file, "--topic", "sensör/€//a$b", "--check"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
}

/// A default status or telemetry topic derived from a long TOPIC says it
/// is the derived default that is too long.
#[test]
fn a_derived_topic_that_is_too_long_says_so() {
    let file = pcap("no-to-tag.pcap").display().to_string();
    let long = "t".repeat(120);
    refused(
        &["--read", &file, "--topic", &long, "--client-id", "c"],
        &[
            "STATUS_TOPIC",
            "the default TOPIC/status/CLIENT_ID",
            "longer than 128",
        ],
    );
    let longest = "t".repeat(65_530);
    refused(
        &[
            "--read",
            &file,
            "--topic",
            &longest,
            "--client-id",
            "c",
            "--status-topic",
            "s",
        ],
        &[
            "TELEMETRY_TOPIC",
            "the default TOPIC/telemetry/CLIENT_ID",
            "longer than MQTT's 65535",
        ],
    );
}

/// The first physical network interface by name and its MAC address as
/// the agent reads it (12 hex digits), or `None` when there is none.
fn first_physical_mac() -> Option<(String, String)> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names.iter().find_map(|name| {
        let path = std::path::Path::new("/sys/class/net").join(name);
        let device = std::fs::canonicalize(&path).ok()?;
        if device.to_string_lossy().contains("/virtual/") {
            return None;
        }
        let hex: String = std::fs::read_to_string(path.join("address"))
            .ok()?
            .trim()
            .split(':')
            .collect();
        (hex.len() == 12 && hex != "000000000000").then(|| (name.clone(), hex))
    })
}

/// What sets the hostname in [`ids_in_namespace`]: a UTS namespace of the
/// test's own (`unshare -u`, root only), and with `Alone` also its own
/// network namespace (only `lo`: no MAC to take) and mount namespace, where
/// a fresh sysfs shows that and a tmpfs gives the device tree a serial
/// number with the NUL and punctuation a real one may carry.
#[derive(Clone, Copy, PartialEq)]
enum Namespace {
    Host,
    Alone,
}

/// In `namespace`, under hostname `host`: what the images' hardware-id
/// script (board/common/overlay/usr/sbin/sip-capture-hardware-id) prints
/// for `interface`, and the agent's effective default CLIENT_ID capturing
/// on `interface` (reading a file when `None`).
fn ids_in_namespace(namespace: Namespace, host: &str, interface: Option<&str>) -> (String, String) {
    let script = format!(
        "{}/board/common/overlay/usr/sbin/sip-capture-hardware-id",
        env!("CARGO_MANIFEST_DIR")
    );
    let file = pcap("no-to-tag.pcap");
    let source = match interface {
        Some(name) => format!("--interface {name}"),
        None => format!("--read {}", file.display()),
    };
    let alone = "mount -t sysfs sysfs /sys && mount -t tmpfs tmpfs /sys/firmware \
        && mkdir -p /sys/firmware/devicetree/base \
        && printf 'RK3328:c3d9 b867\\0' > /sys/firmware/devicetree/base/serial-number && ";
    let mut unshare = std::process::Command::new("unshare");
    common::clean_environment(&mut unshare).arg("-u");
    if namespace == Namespace::Alone {
        unshare.args(["-n", "-m"]);
    }
    let output = unshare
        .args([
            "sh",
            "-c",
            &format!(
                r#"{}hostname "$0" && echo "hardware-id=$(sh {script} {})" && exec {} --config /dev/null {source} --topic t --check"#,
                if namespace == Namespace::Alone { alone } else { "" },
                interface.unwrap_or(""),
                common::AGENT,
            ),
            host,
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let line = |prefix: &str| {
        stdout(&output)
            .lines()
            .find_map(|l| l.strip_prefix(prefix).map(str::to_string))
            .unwrap()
    };
    (line("hardware-id="), line("CLIENT_ID="))
}

/// The agent's effective CLIENT_ID under hostname `host`, reading a file.
fn client_id_under_hostname(host: &str) -> String {
    ids_in_namespace(Namespace::Host, host, None).1
}

/// Whether this test may set a hostname of its own (root), and the
/// physical interface and MAC address it should then find; `None` (the
/// test is skipped) otherwise.
fn may_set_hostname() -> Option<(String, String)> {
    let may = std::process::Command::new("unshare")
        .args(["-u", "true"])
        .status()
        .is_ok_and(|s| s.success());
    let mac = first_physical_mac().filter(|_| may);
    if mac.is_none() {
        eprintln!("SKIPPED: needs root (unshare -u) and a physical network interface");
    }
    mac
}

/// Appliances flashed from one image share its hostname: under such a
/// hostname the default CLIENT_ID comes from the hardware (a MAC address),
/// so they do not take each other's session; any other hostname is used
/// as before.
#[test]
fn a_generic_hostname_gives_a_hardware_client_id() {
    let Some((_, mac)) = may_set_hostname() else {
        return;
    };
    assert_eq!(
        client_id_under_hostname("tap-nanopi-r2s"),
        format!("sip-capture-{mac}")
    );
    assert_eq!(client_id_under_hostname("OpenWrt"), format!("sip-capture-{mac}"));
    assert_eq!(client_id_under_hostname("sensor-12"), "sip-capture-sensor-12");
    // The images' own name, tap-<hardware id>, is not generic: it is used.
    assert_eq!(
        client_id_under_hostname(&format!("tap-{mac}")),
        format!("sip-capture-tap-{mac}")
    );
}

/// The images name themselves `tap-<hardware id>` at boot with a shell
/// script, and the agent makes its default CLIENT_ID of the same id in
/// Rust (src/identity.rs): both must give the same id on the same device —
/// capturing on a physical interface, on a virtual one (`lo`: the first
/// physical interface's MAC), reading a file, and on a device with no
/// physical interface (the device tree's serial number, letters and digits
/// only).
#[test]
fn the_images_hardware_id_script_agrees_with_the_agent() {
    let Some((physical, mac)) = may_set_hostname() else {
        return;
    };
    for interface in [Some(physical.as_str()), Some("lo"), None] {
        let (script, client_id) = ids_in_namespace(Namespace::Host, "localhost", interface);
        assert_eq!(script, mac, "{interface:?}");
        assert_eq!(client_id, format!("sip-capture-{script}"), "{interface:?}");
    }
    let (script, client_id) = ids_in_namespace(Namespace::Alone, "localhost", Some("lo"));
    assert_eq!(script, "RK3328c3d9b867");
    assert_eq!(client_id, "sip-capture-RK3328c3d9b867");
}

/// `--check` of `args` and `env` (over an empty config file): every
/// effective `KEY=value` line, and the warnings on stderr.
fn effective(args: &[&str], env: &[(&str, &str)]) -> (Vec<String>, String) {
    let output = agent()
        .args(args)
        .arg("-check")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?} {env:?}: exit {:?}: {}",
        output.status.code(),
        stderr(&output)
    );
    (
        stdout(&output).lines().map(str::to_string).collect(),
        stderr(&output),
    )
}

/// Every command line, environment and value that
/// ../shared/docs/original-agent.md shows the Go agent's users running,
/// unchanged (the interface `lo` for their `eth0`, which a test machine may
/// lack): each is accepted and means what it meant there.
#[test]
fn the_originals_command_lines_and_environments_work_unchanged() {
    let same = |lines: &[String], wanted: &[&str]| {
        for line in wanted {
            assert!(lines.iter().any(|l| l == line), "{line} missing from {lines:#?}");
        }
    };
    // Go's flag syntax: one or two dashes, the value apart or after '='.
    let command_line = ["INTERFACE=lo", "TOPIC=/sip/x", "BROKER=tcp://localhost:1883"];
    for args in [
        &[
            "-interface",
            "lo",
            "-topic",
            "/sip/x",
            "-broker",
            "tcp://localhost:1883",
        ][..],
        &[
            "--interface",
            "lo",
            "--topic",
            "/sip/x",
            "--broker",
            "tcp://localhost:1883",
        ],
        &["-interface=lo", "-topic=/sip/x", "-broker=tcp://localhost:1883"],
        &[
            "--interface=lo",
            "--topic=/sip/x",
            "--broker=tcp://localhost:1883",
        ],
    ] {
        same(&effective(args, &[]).0, &command_line);
    }
    // Its docker-compose environment, as one set, with its optional
    // certificate files (which it never applied).
    let compose = [
        ("INTERFACE", "lo"),
        ("BPF_FILTER", "port 5060"),
        ("SIP_FILTER", "(all (methods invite) request)"),
        ("LOG_LEVEL", "debug"),
        ("METRICS_ADDR", "0.0.0.0:9900"),
        ("BROKER", "tcp://localhost:1883"),
        ("CLIENT_ID", "docker-test-agent"),
        ("TOPIC", "/test/sip"),
        ("KEY_FILE", "/certs/agent.key"),
        ("CERT_FILE", "/certs/agent.crt"),
    ];
    let (lines, warnings) = effective(&[], &compose);
    let wanted: Vec<String> = compose.iter().map(|(k, v)| format!("{k}={v}")).collect();
    same(&lines, &wanted.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(warnings.contains("KEY_FILE is set but not used"), "{warnings}");
    // A runit `run` script: no arguments, everything from the environment.
    let base = [
        ("INTERFACE", "lo"),
        ("TOPIC", "/my-company/nyc/pbx-2/sip-capture"),
    ];
    same(
        &effective(&[], &base).0,
        &["TOPIC=/my-company/nyc/pbx-2/sip-capture"],
    );
    // Values from its documentation and deployment files, each alone.
    for (key, value) in [
        ("METRICS_ADDR", ":9090"),
        ("METRICS_ADDR", "0.0.0.0:8080"),
        ("BROKER", "tcp://localhost"),
        ("BROKER", "tcp://broker.local.domain:1883"),
        ("BROKER", "ssl://someaccount.iot.mycloudprovider.com:8883"),
        ("BROKER", "ws://broker.local.domain:8080"),
        ("TOPIC", "/sip/debug/customer/alice"),
        ("TOPIC", "/test/sip"),
        ("LOG_LEVEL", "DEBUG"),
        ("LOG_LEVEL", "INFO"),
        ("LOG_LEVEL", "WARNING"),
        ("LOG_LEVEL", "ERROR"),
        ("LOG_LEVEL", "warning"),
        ("BPF_FILTER", "(udp and port 5060) or (ip[6:2] & 0x1fff) != 0"),
        ("BPF_FILTER", "udp and port 5060"),
        (
            "SIP_FILTER",
            "(all (to \"alice@provider.com\") (method invite bye) (any request (status 200)))",
        ),
        ("TELEMETRY_TOPIC", "/sip/telemetry"),
    ] {
        let mut env = base.to_vec();
        env.push((key, value));
        same(&effective(&[], &env).0, &[&format!("{key}={value}")]);
    }
    // Its flag names, including the misspelt -metric-filter.
    let (lines, _) = effective(
        &[
            "-interface",
            "lo",
            "-topic",
            "/t",
            "-metric-filter",
            ":9090",
            "-telemetry-topic",
            "/t/telemetry",
            "-log-level",
            "warning",
            "-client-id",
            "c1",
            "-sip-filter",
            "request",
            "-bpf-filter",
            "port 5060",
            "-key-file",
            "k.pem",
            "-cert-file",
            "c.pem",
        ],
        &[],
    );
    same(
        &lines,
        &[
            "METRICS_ADDR=:9090",
            "TELEMETRY_TOPIC=/t/telemetry",
            "LOG_LEVEL=warning",
            "CLIENT_ID=c1",
            "SIP_FILTER=request",
            "BPF_FILTER=port 5060",
            "KEY_FILE=k.pem",
            "CERT_FILE=c.pem",
        ],
    );
}

#[test]
fn go_style_booleans_and_unknown_flags() {
    let mut args = file_args();
    args.push("-check=false".into());
    // -check=false runs instead of checking: with no broker it would run, so
    // only the parse is checked here, through an unknown flag after it.
    args.extend(["-nope".into(), "x".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(&args, &["-nope", "unknown flag"]);
    refused_with(&["-check=maybe"], &["-check", "maybe", "expected true or false"]);
    refused_with(&["--nope=1"], &["--nope", "unknown flag"]);
    refused_with(&["stray"], &["stray", "expected -flag value"]);
    let output = agent().arg("-help").output().unwrap();
    assert!(output.status.success());
    assert!(stdout(&output).contains("--metrics-addr"));
    let output = agent().arg("-version").output().unwrap();
    assert!(stdout(&output).starts_with("sip-capture/"));
}
