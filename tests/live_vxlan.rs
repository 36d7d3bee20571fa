//! Live capture of a real Linux VXLAN underlay: two network namespaces the
//! test creates, joined by a veth pair, each with a VXLAN device (VNI
//! 4242, UDP 4789) over it. SIP sent between the VXLAN addresses, small
//! datagrams and ones the sender fragments inside the tunnel, crosses the
//! veth as VXLAN; the agent, started in the second namespace with the
//! default live BPF, captures the veth and publishes every message
//! exactly once, with the inner addresses and `"encap":"vxlan:4242"`. The
//! broker runs in that namespace too, so nothing touches the host's
//! network. Needs root (namespaces, CAP_NET_RAW) and the vxlan and veth
//! modules; without them the test says so and skips.

mod common;

use common::{KillOnDrop, Lines, Subscription, clean_environment, in_netns, summary_value};
use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

const VNI: u32 = 4242;
/// Small messages, and larger ones (2400 bytes) that the sender's IP
/// fragments to fit the VXLAN device's MTU: inner fragments, reassembled.
const SMALL: usize = 40;
const LARGE: usize = 10;

/// Two namespaces, deleted (with their devices) on drop.
struct Namespaces([String; 2]);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &str) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .map_err(|e| e.to_string())?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "ip {args}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// Namespaces a and b: veth va (10.200.0.1) to vb (10.200.0.2), and on
/// each a VXLAN device vx (192.168.77.1 and .2) to the other's underlay
/// address.
fn topology() -> Result<Namespaces, String> {
    let id = std::process::id();
    let (a, b) = (format!("sct-vxa-{id}"), format!("sct-vxb-{id}"));
    ip(&format!("netns add {a}"))?;
    let namespaces = Namespaces([a.clone(), b.clone()]);
    ip(&format!("netns add {b}"))?;
    ip(&format!("-n {a} link add va type veth peer name vb netns {b}"))?;
    for (ns, dev, me, peer, overlay) in [
        (&a, "va", "10.200.0.1", "10.200.0.2", "192.168.77.1"),
        (&b, "vb", "10.200.0.2", "10.200.0.1", "192.168.77.2"),
    ] {
        ip(&format!("-n {ns} link set lo up"))?;
        ip(&format!("-n {ns} addr add {me}/24 dev {dev}"))?;
        ip(&format!("-n {ns} link set {dev} up"))?;
        ip(&format!(
            "-n {ns} link add vx type vxlan id {VNI} local {me} remote {peer} dstport 4789 dev {dev}"
        ))?;
        ip(&format!("-n {ns} addr add {overlay}/24 dev vx"))?;
        ip(&format!("-n {ns} link set vx up"))?;
    }
    Ok(namespaces)
}

fn message(n: usize) -> String {
    let body = if n >= SMALL {
        "a=x:".to_string() + &"p".repeat(2200) + "\r\n"
    } else {
        String::new()
    };
    format!(
        "MESSAGE sip:bob@192.168.77.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.77.1:5062;branch=z9hG4bK{n}\r\n\
From: <sip:alice@vxlan>;tag={n}\r\nTo: <sip:bob@192.168.77.2>\r\nCall-ID: vxlan-{n}\r\n\
CSeq: 1 MESSAGE\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn sip_through_a_real_vxlan_is_captured_on_the_underlay() {
    if !common::can_capture_on_lo() {
        return;
    }
    let namespaces = match topology() {
        Ok(namespaces) => namespaces,
        Err(e) => return eprintln!("SKIPPED: cannot build the VXLAN namespaces ({e})"),
    };
    let [a, b] = &namespaces.0;

    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("mosquitto.conf");
    let port = 18830;
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\npersistence false\n"
        ),
    )
    .unwrap();
    let _broker = common::spawn(
        in_netns(Some(b), "mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let sub = Subscription::in_netns(Some(b), port, "sip/vxlan");

    let mut agent = in_netns(Some(b), common::AGENT);
    clean_environment(&mut agent)
        .args([
            "--config",
            "/dev/null",
            "--interface",
            "vb",
            "--topic",
            "sip/vxlan",
        ])
        .args(["--broker", &format!("mqtt://127.0.0.1:{port}")])
        .stdout(Stdio::piped());
    let mut agent: KillOnDrop = common::spawn(&mut agent);
    let mut lines = Lines::of(&mut agent);
    lines.wait_for("connected to broker", Duration::from_secs(10));

    let sent: Vec<String> = (0..SMALL + LARGE).map(message).collect();
    let script = "import socket, sys\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
s.bind(('192.168.77.1', 5062))\n\
for m in sys.stdin.read().split('\\0'):\n    s.sendto(m.encode(), ('192.168.77.2', 5060))\n";
    let mut sender = in_netns(Some(a), "python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    sender
        .stdin
        .take()
        .unwrap()
        .write_all(sent.join("\0").as_bytes())
        .unwrap();
    assert!(sender.wait().unwrap().success(), "the sender failed");
    std::thread::sleep(Duration::from_millis(500));
    let stdout = common::stop_agent(&mut agent, &mut lines);

    let received = sub.collect();
    let sent: HashSet<&String> = sent.iter().collect();
    let mut seen = HashSet::new();
    for text in &received {
        let envelope: serde_json::Value = serde_json::from_str(text).unwrap();
        let sip = common::sip_of(&envelope);
        let sip = String::from_utf8(sip).unwrap();
        assert!(sent.contains(&sip), "unexpected message {sip:?}");
        assert!(seen.insert(sip), "published twice");
        assert_eq!(envelope["src"], "192.168.77.1:5062");
        assert_eq!(envelope["dst"], "192.168.77.2:5060");
        assert_eq!(envelope["encap"], format!("vxlan:{VNI}"));
    }
    assert_eq!(seen.len(), SMALL + LARGE, "{stdout}");
    assert_eq!(
        summary_value(stdout.as_bytes(), "frag_reassembled"),
        LARGE as u64,
        "{stdout}"
    );
    assert!(
        summary_value(stdout.as_bytes(), "peeled_vxlan") >= (SMALL + 2 * LARGE) as u64,
        "{stdout}"
    );
}
