//! Capture files as users have them, through the agent binary: a file cut
//! short names itself and the byte offset, prints the summary and exits 3;
//! a file that is not a capture is a clear error, exit 1; `filter-test`
//! reads files as the agent does. (What each generated capture publishes
//! is checked by tests/golden.rs.)

mod common;

use common::{Broker, agent, data, replay_any, subcommand, summary_value};

/// Where the last record of a classic pcap file starts: the offset of the
/// first record that does not fit in the file.
fn cut_record_offset(bytes: &[u8]) -> usize {
    let mut at = 24;
    loop {
        let len = 16 + u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        if at + len > bytes.len() {
            return at;
        }
        at += len;
    }
}

#[test]
fn a_file_cut_short_is_used_up_to_its_last_whole_record() {
    let broker = Broker::start();
    let file = data("pcaps/generated/pcap-cut-short.pcap");
    let offset = cut_record_offset(&std::fs::read(&file).unwrap());
    let output = replay_any(&broker, "files/cut", &file, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    let warning = stdout
        .lines()
        .find(|l| l.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning in {stdout}"));
    assert!(
        warning.contains(&format!(
            "capture file {}: stopped at byte offset {offset}:",
            file.display()
        )) && warning.contains("the file ends inside this record"),
        "{warning}"
    );
    assert_eq!(summary_value(&output.stdout, "file_cut_short"), 1);
    assert_eq!(summary_value(&output.stdout, "published"), 2);
    assert_eq!(summary_value(&output.stdout, "acknowledged"), 2);
}

#[test]
fn a_file_that_is_not_a_capture_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes, why) in [
        (
            "garbage.pcap",
            &b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"[..],
            "not a pcap or pcapng file",
        ),
        ("empty.pcap", &b""[..], "the file is empty"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let output = agent()
            .args([
                "--broker",
                "mqtt://127.0.0.1:1",
                "--topic",
                "files/garbage",
                "--read",
            ])
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{stdout}");
        assert!(
            stdout.contains(&format!("cannot read capture file {}: {why}", path.display())),
            "{stdout}"
        );
    }
}

#[test]
fn filter_test_stops_quietly_when_its_reader_goes() {
    // `filter-test ... | head`: the reader has gone before the first line.
    let mut child = subcommand("filter-test")
        .arg("(method options)")
        .arg(data("pcaps/wireshark.pcap"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert_eq!(stderr, "");
}

#[test]
fn filter_test_reads_files_as_the_agent_does() {
    let run = |name: &str| {
        subcommand("filter-test")
            .arg("(method options)")
            .arg(data(&format!("pcaps/generated/{name}")))
            .output()
            .unwrap()
    };
    let merged = run("pcapng-merged.pcapng");
    let stdout = String::from_utf8_lossy(&merged.stdout);
    assert!(merged.status.success(), "{stdout}");
    assert!(stdout.contains("8 SIP messages: 8 match, 0 do not"), "{stdout}");
    assert!(
        stdout.contains("2023-11-14T22:13:20.125925Z 203.0.113.1:5060 -> 203.0.113.2:5060"),
        "raw IPv4 at 2^-20 s units and its if_tsoffset: {stdout}"
    );

    let cut = run("pcapng-cut-short.pcapng");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&cut.stdout),
        String::from_utf8_lossy(&cut.stderr),
    );
    assert_eq!(cut.status.code(), Some(3), "{stdout}{stderr}");
    assert!(stdout.contains("2 SIP messages: 0 match, 2 do not"), "{stdout}");
    assert!(
        stderr.contains("pcapng-cut-short.pcapng: stopped at byte offset"),
        "{stderr}"
    );
}
