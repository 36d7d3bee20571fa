//! Captures replayed through the agent to a real mosquitto: every expected
//! message arrives exactly once, byte-identical, with the right metadata.

mod common;

use base64::Engine;
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
        let sip = base64::engine::general_purpose::STANDARD
            .decode(envelope["sip"].as_str().unwrap())
            .unwrap();
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

#[test]
fn vlan_and_qinq_tags_are_decoded() {
    // Until fragment reassembly lands, the fragmented INVITE is skipped and
    // counted; the 100 Trying arrives through both tag stacks.
    for name in ["sip-i_vlan100.pcap", "sip-i_qinq200-100.pcap"] {
        let broker = Broker::start();
        let sub = broker.subscribe("sip/vlan");
        let output = replay(&broker, "sip/vlan", &pcap(name), &[]);
        let received = sub.collect();
        assert_eq!(received.len(), 1, "{name}");
        assert!(received[0].contains(r#""transport":"udp""#));
        assert_eq!(summary_value(&output.stdout, "ip_fragments_skipped"), 2, "{name}");
        assert_eq!(summary_value(&output.stdout, "decode_errors"), 0, "{name}");
    }
}
