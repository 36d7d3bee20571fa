//! Captures replayed through the agent to a real mosquitto: every expected
//! message arrives exactly once, byte-identical, with the right metadata.

mod common;

use common::{Broker, pcap, replay, summary_value};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::Path;

/// A UDP payload as the capture holds it, read independently of the agent.
struct Datagram {
    time: String,
    src: SocketAddr,
    dst: SocketAddr,
    payload: Vec<u8>,
}

/// Every non-fragmented UDP payload in a capture, read with libpcap and
/// etherparse directly.
fn datagrams(file: &Path) -> Vec<Datagram> {
    let mut capture = pcap::Capture::from_file(file).unwrap();
    let linktype = capture.get_datalink().0;
    let mut out = Vec::new();
    while let Ok(packet) = capture.next_packet() {
        let sliced = match linktype {
            1 => SlicedPacket::from_ethernet(packet.data),
            228 | 229 | 101 => SlicedPacket::from_ip(packet.data),
            113 => SlicedPacket::from_linux_sll(packet.data),
            other => panic!("test reader does not know link type {other}"),
        };
        let Ok(sliced) = sliced else { continue };
        let (Some(net), Some(TransportSlice::Udp(udp))) = (&sliced.net, &sliced.transport) else {
            continue;
        };
        let (src, dst): (std::net::IpAddr, std::net::IpAddr) = match net {
            NetSlice::Ipv4(ip) => (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
            ),
            NetSlice::Ipv6(ip) => (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
            ),
            NetSlice::Arp(_) => continue,
        };
        let time =
            chrono::DateTime::from_timestamp(packet.header.ts.tv_sec, packet.header.ts.tv_usec as u32 * 1000)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string();
        out.push(Datagram {
            time,
            src: SocketAddr::new(src, udp.source_port()),
            dst: SocketAddr::new(dst, udp.destination_port()),
            payload: udp.payload().to_vec(),
        });
    }
    out
}

fn schema() -> jsonschema::Validator {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/envelope.schema.json"))
            .unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
}

/// Replay `name`, check `expected` envelopes arrive, each valid against the
/// schema and identical to a datagram of the capture.
fn check_capture(name: &str, expected: usize) {
    let broker = Broker::start();
    let topic = format!("sip/{name}");
    let sub = broker.subscribe(&topic);
    let output = replay(&broker, &topic, &pcap(name), &[]);
    let received = sub.collect();
    assert_eq!(received.len(), expected, "{name}: envelopes received");
    assert_eq!(summary_value(&output.stdout, "acknowledged"), expected as u64);

    let schema = schema();
    let datagrams = datagrams(&pcap(name));
    let mut matched = vec![false; datagrams.len()];
    for text in &received {
        let envelope: Value = serde_json::from_str(text).unwrap();
        if let Err(e) = schema.validate(&envelope) {
            panic!("{name}: envelope does not match the schema: {e}\n{text}");
        }
        let sip = common::sip_of(&envelope);
        assert_eq!(
            envelope["id"],
            base16ct::lower::encode_string(&Sha256::digest(&sip))
        );
        assert_eq!(
            envelope["agent"],
            format!("sip-capture/{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(envelope["transport"], "udp");
        // Published exactly once: each envelope claims a distinct datagram.
        let found = datagrams.iter().enumerate().position(|(i, d)| {
            !matched[i]
                && d.payload == sip
                && envelope["time"] == d.time
                && envelope["src"] == d.src.to_string()
                && envelope["dst"] == d.dst.to_string()
        });
        match found {
            Some(i) => matched[i] = true,
            None => panic!("{name}: envelope matches no datagram of the capture: {text}"),
        }
    }
}

#[test]
fn wireshark_call_flow_81() {
    check_capture("wireshark.pcap", 81);
}

#[test]
fn junk_before_request_1() {
    check_capture("sip-junk-before-request.pcap", 1);
}

#[test]
fn invalid_content_length_2() {
    check_capture("invalid-content-length.pcap", 2);
}

#[test]
fn long_paths_raw_ipv4_2() {
    check_capture("sip-long-request-response-paths.pcap", 2);
}

#[test]
fn no_to_tag_1() {
    check_capture("no-to-tag.pcap", 1);
}

#[test]
fn smtp_publishes_nothing() {
    check_capture("smtp.pcap", 0);
}

#[test]
fn oversize_messages_are_counted_and_dropped() {
    let broker = Broker::start();
    let sub = broker.subscribe("sip/big");
    let output = replay(
        &broker,
        "sip/big",
        &pcap("sip-long-request-response-paths.pcap"),
        &["--max-message-bytes", "1000"],
    );
    assert_eq!(sub.collect().len(), 0);
    assert_eq!(summary_value(&output.stdout, "sip_messages"), 2);
    assert_eq!(summary_value(&output.stdout, "dropped_oversize"), 2);
}

/// With a SIP_FILTER, exactly the matching messages are published; the
/// expectation is computed from the capture's datagrams independently, and
/// `filter-test` reports the same count.
#[test]
fn filtered_replay_publishes_exactly_the_matching_messages() {
    let name = "wireshark.pcap";
    let payloads: Vec<String> = datagrams(&pcap(name))
        .into_iter()
        .map(|d| String::from_utf8_lossy(&d.payload).into_owned())
        .collect();
    let cseq_method = |p: &str| -> String {
        p.lines()
            .find(|l| l.to_ascii_lowercase().starts_with("cseq:"))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or("")
            .to_string()
    };
    type Selects = Box<dyn Fn(&str) -> bool>;
    let cases: [(&str, Selects); 3] = [
        ("(status 400-499)", Box::new(|p: &str| p.starts_with("SIP/2.0 4"))),
        (
            "(method register)",
            Box::new(move |p: &str| cseq_method(p) == "REGISTER"),
        ),
        (
            r#"(all request (not (method ack)) (to "35104724"))"#,
            Box::new(|p: &str| {
                !p.starts_with("SIP/2.0") && !p.starts_with("ACK ") && {
                    let to = p
                        .lines()
                        .find(|l| l.starts_with("To:") || l.starts_with("t:"))
                        .unwrap_or("");
                    to.contains("35104724")
                }
            }),
        ),
    ];
    for (filter, select) in cases {
        let expected = payloads.iter().filter(|p| select(p)).count();
        assert!(expected > 0 && expected < payloads.len(), "{filter}: {expected}");
        let broker = Broker::start();
        let sub = broker.subscribe("sip/filtered");
        let output = replay(&broker, "sip/filtered", &pcap(name), &["--sip-filter", filter]);
        assert_eq!(sub.collect().len(), expected, "{filter}");
        assert_eq!(
            summary_value(&output.stdout, "filtered_out"),
            (payloads.len() - expected) as u64
        );

        let tested = common::subcommand("filter-test")
            .arg(filter)
            .arg(pcap(name))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&tested.stdout);
        assert!(tested.status.success());
        assert_eq!(
            text.lines().filter(|l| l.ends_with(" MATCH")).count(),
            expected,
            "{filter}"
        );
        assert!(text.ends_with(&format!(
            "{} SIP messages: {expected} match, {} do not\n",
            payloads.len(),
            payloads.len() - expected
        )));
    }
}

/// The image workflow: compile on the host, load with FILTER_FILE.
#[test]
fn precompiled_filter_file_selects_the_same_messages() {
    let dir = tempfile::tempdir().unwrap();
    let blob = dir.path().join("filter.bin");
    let filter = r#"(any (status 400-499) (from "(?i)SIP:35104724"))"#;
    let status = common::subcommand("compile-filter")
        .args([filter, "-o"])
        .arg(&blob)
        .status()
        .unwrap();
    assert!(status.success());

    let broker = Broker::start();
    let from_text = broker.subscribe("sip/text");
    let from_file = broker.subscribe("sip/file");
    replay(
        &broker,
        "sip/text",
        &pcap("wireshark.pcap"),
        &["--sip-filter", filter],
    );
    replay(
        &broker,
        "sip/file",
        &pcap("wireshark.pcap"),
        &["--filter-file", blob.to_str().unwrap()],
    );
    let (text, file) = (from_text.collect(), from_file.collect());
    assert!(!text.is_empty() && text.len() < 81);
    assert_eq!(text, file);
}
