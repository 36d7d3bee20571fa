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
