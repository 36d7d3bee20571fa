//! The generated SCTP captures (tests/data/make_captures.py, sctp-*) checked
//! against an independent reader: Wireshark's SCTP dissector with
//! reassembly on. tshark must find the SIP messages each `.expected` file
//! lists (Call-ID, CSeq, Content-Length, and the capture time of the frame
//! that completed it), the checksums right but where the capture means
//! them wrong, and nothing malformed but the chunk the capture cuts on
//! purpose. So the golden test's captures are SCTP as RFC 9260 and RFC
//! 4168 have it, not only as sip-capture reads it.
//!
//! Skipped, with a message, when tshark is not installed (`make bench`
//! and `make deps` install it).
//!
//! Two differences from sip-capture are Wireshark's, and handled here:
//! it keys an association by ports and Verification Tag only (following
//! multi-homing), so the capture of one association on two VLANs is split
//! by VLAN first; and it reports a message carried by IP fragments at the
//! last fragment, where sip-capture stamps a reassembled datagram with its
//! first (as for UDP), so such a message's time is not compared.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn generated() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pcaps/generated")
}

fn tshark(args: &[&str]) -> String {
    let output = Command::new("tshark").args(args).output().expect("tshark runs");
    assert!(
        output.status.success(),
        "tshark {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// One SIP message as compared: capture time in microseconds (`None`
/// when not compared), Call-ID, CSeq, Content-Length.
type Seen = (Option<i64>, String, String, String);

/// What tshark reads in a capture: the SIP messages it reassembles, the
/// frames with a wrong checksum and the malformed ones, the VLAN ids.
#[derive(Default)]
struct Dissected {
    sip: Vec<Seen>,
    bad_checksums: u64,
    malformed: u64,
    vlans: std::collections::BTreeSet<String>,
}

fn dissect(pcap: &Path) -> Dissected {
    let pcap = pcap.to_str().unwrap();
    let fields = tshark(&[
        "-r",
        pcap,
        "-o",
        "sctp.reassembly:TRUE",
        "-o",
        "sctp.checksum:CRC-32C",
        "-T",
        "fields",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=|",
        "-e",
        "frame.time_epoch",
        "-e",
        "ip.fragments",
        "-e",
        "sip.Call-ID",
        "-e",
        "sip.CSeq",
        "-e",
        "sip.Content-Length",
        "-e",
        "sctp.checksum.status",
        "-e",
        "_ws.malformed",
        "-e",
        "vlan.id",
    ]);
    let mut d = Dissected::default();
    for line in fields.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        d.bad_checksums += u64::from(f[5] == "0");
        d.malformed += u64::from(!f[6].is_empty());
        d.vlans
            .extend(f[7].split('|').filter(|v| !v.is_empty()).map(String::from));
        if f[2].is_empty() {
            continue;
        }
        let (secs, nanos) = f[0].split_once('.').unwrap();
        let time = secs.parse::<i64>().unwrap() * 1_000_000 + nanos[..6].parse::<i64>().unwrap();
        let time = f[1].is_empty().then_some(time);
        let (ids, cseqs, lengths) = (f[2].split('|'), f[3].split('|'), f[4].split('|'));
        for ((id, cseq), length) in ids.zip(cseqs).zip(lengths) {
            d.sip.push((time, id.into(), cseq.into(), length.into()));
        }
    }
    d
}

/// Microseconds since the epoch of an RFC 3339 UTC time as the envelope
/// writes it (`2023-11-14T22:13:20.011000Z`).
fn micros(rfc3339: &str) -> i64 {
    let n = |range: std::ops::Range<usize>| rfc3339[range].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from 1970-01-01 (H. Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    ((days * 24 + n(11..13)) * 60 + n(14..16)) * 60_000_000 + n(17..19) * 1_000_000 + n(20..26)
}

fn header<'a>(sip: &'a str, name: &str) -> &'a str {
    sip.split("\r\n")
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no {name} in {sip}"))
}

fn counter(expected: &Value, name: &str) -> u64 {
    expected["counters"][name].as_u64().unwrap_or(0)
}

#[test]
fn wireshark_reads_the_generated_sctp_captures_as_expected() {
    if Command::new("tshark").arg("--version").output().is_err() {
        eprintln!("tshark is not installed: the SCTP captures are not checked against Wireshark");
        return;
    }
    let mut names: Vec<String> = std::fs::read_dir(generated())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().ok()?;
            Some(name.strip_prefix("sctp-")?.strip_suffix(".pcap")?.to_owned())
        })
        .collect();
    names.sort();
    assert!(names.len() >= 10, "{names:?}");
    let mut failures = Vec::new();
    let scratch = std::env::temp_dir().join(format!("sctp-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    for name in &names {
        let pcap = generated().join(format!("sctp-{name}.pcap"));
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(generated().join(format!("sctp-{name}.expected"))).unwrap(),
        )
        .unwrap();
        let whole = dissect(&pcap);
        let mut seen = whole.sip.clone();
        if !whole.vlans.is_empty() {
            seen.clear();
            for vlan in &whole.vlans {
                let part = scratch.join(format!("{name}-{vlan}.pcap"));
                let filter = format!("vlan.id == {vlan}");
                let (input, output) = (pcap.to_str().unwrap(), part.to_str().unwrap());
                tshark(&["-r", input, "-Y", &filter, "-w", output]);
                seen.extend(dissect(&part).sip);
            }
        }
        let mut want: Vec<Seen> = expected["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let sip = m["sip"].as_str().unwrap();
                let time = micros(m["time"].as_str().unwrap());
                // A message tshark found in IP fragments: time not compared.
                let in_fragments = seen
                    .iter()
                    .any(|s| s.0.is_none() && s.1 == header(sip, "Call-ID"));
                let time = if in_fragments { None } else { Some(time) };
                (
                    time,
                    header(sip, "Call-ID").into(),
                    header(sip, "CSeq").into(),
                    header(sip, "Content-Length").into(),
                )
            })
            .collect();
        want.sort();
        seen.sort();
        if expected["args"].is_array() {
            // Limits set for the agent alone: tshark finds more.
            want.retain(|w| !seen.contains(w));
            if !want.is_empty() {
                failures.push(format!("sctp-{name}: tshark does not find {want:?}"));
            }
        } else if seen != want {
            failures.push(format!(
                "sctp-{name}: tshark finds\n{seen:#?}\nexpected\n{want:#?}"
            ));
        }
        if whole.bad_checksums != counter(&expected, "sctp_bad_checksums") {
            failures.push(format!(
                "sctp-{name}: tshark finds {} bad checksums",
                whole.bad_checksums
            ));
        }
        if whole.malformed != counter(&expected, "sctp_malformed_chunks") {
            failures.push(format!(
                "sctp-{name}: tshark finds {} malformed frames",
                whole.malformed
            ));
        }
    }
    std::fs::remove_dir_all(&scratch).unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
