//! TLS to a real mosquitto with a CA, server and client certificates made
//! by openssl in the test: publishes arrive; a wrong CA, a name mismatch, a
//! missing client certificate and an expired server certificate each fail
//! with their own clear error.
#![cfg(feature = "tls")]

mod common;

use common::{KillOnDrop, Lines, agent, certificate, free_port, openssl, pcap, private_key};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

struct TlsBroker {
    _child: KillOnDrop,
    plain: u16,
    tls: u16,
    dir: PathBuf,
}

/// mosquitto with a plain listener (for the test's subscriber) and a TLS
/// listener that requires a client certificate from the test CA.
fn tls_broker(dir: &Path) -> TlsBroker {
    certificate(dir, "ca", None, "");
    certificate(dir, "server", Some("ca"), "IP:127.0.0.1");
    certificate(dir, "client", Some("ca"), "DNS:sensor");
    certificate(dir, "other-ca", None, "");
    start_broker(dir, "server")
}

/// mosquitto presenting certificate `name` on its TLS listener.
fn start_broker(dir: &Path, name: &str) -> TlsBroker {
    let (plain, tls) = (free_port(), free_port());
    let conf = dir.join(format!("mosquitto-{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            "allow_anonymous true\nuser root\nlistener {plain} 127.0.0.1\nlistener {tls} 127.0.0.1\n\
cafile {d}/ca.crt\ncertfile {d}/{name}.crt\nkeyfile {d}/{name}.key\nrequire_certificate true\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let child = common::mosquitto(&conf, tls).expect("mosquitto with TLS started");
    TlsBroker {
        _child: child,
        plain,
        tls,
        dir: dir.to_path_buf(),
    }
}

/// A server certificate from the test CA that expired in 2020, made with
/// `openssl ca`, which takes explicit validity dates.
fn expired_certificate(dir: &Path) {
    private_key(dir, "expired");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "expired.key",
            "-out",
            "expired.csr",
            "-subj",
            "/CN=expired",
        ],
    );
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "1000\n").unwrap();
    std::fs::write(dir.join("expired.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n\
default_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "ca",
            "-batch",
            "-notext",
            "-config",
            "ca.cnf",
            "-cert",
            "ca.crt",
            "-keyfile",
            "ca.key",
            "-in",
            "expired.csr",
            "-out",
            "expired.crt",
            "-extfile",
            "expired.ext",
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200102000000Z",
        ],
    );
}

/// Run the agent on a capture against the broker at `url` with `extra`;
/// wait for `expect` in its log, then stop it.
fn agent_log(url: &str, extra: &[String], expect: &str) -> String {
    let mut child = common::spawn(
        agent()
            .args(["--read"])
            .arg(pcap("no-to-tag.pcap"))
            .args(["--broker", url, "--topic", "sip/tls"])
            .args(extra)
            .stdout(Stdio::piped()),
    );
    let mut lines = Lines::of(&mut child);
    lines.wait_for(expect, Duration::from_secs(15));
    drop(child);
    lines.seen.join("\n")
}

fn file(broker: &TlsBroker, name: &str) -> String {
    broker.dir.join(name).display().to_string()
}

#[test]
fn tls_with_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let broker = tls_broker(dir.path());
    let url = format!("mqtts://127.0.0.1:{}", broker.tls);
    let ca = |name: &str| vec!["--ca-file".to_string(), file(&broker, name)];
    let client_cert = vec![
        "--cert-file".to_string(),
        file(&broker, "client.crt"),
        "--key-file".to_string(),
        file(&broker, "client.key"),
    ];

    // Everything right: the envelope arrives.
    let subscription = common::Subscription::new(broker.plain, "sip/tls");
    let output = agent()
        .args(["--read"])
        .arg(pcap("no-to-tag.pcap"))
        .args(["--broker", &url, "--topic", "sip/tls"])
        .args(ca("ca.crt"))
        .args(&client_cert)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert_eq!(
        common::summary_value(&output.stdout, "acknowledged"),
        1,
        "{stdout}"
    );
    let got = subscription.collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains(r#""transport":"udp""#), "{got:?}");

    // A CA that did not sign the broker's certificate.
    let args = [ca("other-ca.crt"), client_cert.clone()].concat();
    agent_log(&url, &args, "unknown CA");

    // The certificate is for 127.0.0.1, the agent asks for localhost.
    let localhost = format!("mqtts://localhost:{}", broker.tls);
    let args = [ca("ca.crt"), client_cert.clone()].concat();
    agent_log(&localhost, &args, "name mismatch");

    // No client certificate, which the broker requires.
    agent_log(&url, &ca("ca.crt"), "client certificate rejected");

    // A broker whose certificate expired.
    expired_certificate(dir.path());
    let expired = start_broker(dir.path(), "expired");
    let url = format!("mqtts://127.0.0.1:{}", expired.tls);
    let args = [ca("ca.crt"), client_cert].concat();
    agent_log(&url, &args, "the broker's certificate has expired");
}

#[test]
fn tls_files_are_checked_at_start_up() {
    let file_args = [
        "--read",
        &pcap("no-to-tag.pcap").display().to_string(),
        "--topic",
        "t",
    ]
    .map(String::from);
    let refused = |extra: &[&str], expect: &[&str]| {
        let out = agent()
            .args(&file_args)
            .args(extra)
            .arg("--check")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        for piece in expect {
            assert!(err.contains(piece), "{piece:?} not in {err}");
        }
    };
    refused(
        &["--broker", "mqtts://h", "--ca-file", "/nonexistent.pem"],
        &["CA_FILE", "/nonexistent.pem", "cannot read"],
    );
    refused(
        &["--broker", "mqtts://h", "--ca-file", "/etc/hostname"],
        &["CA_FILE", "no PEM certificate"],
    );
    // Without TLS the files are not used, and the agent says so; the
    // original agent's deployments set them with a tcp:// broker.
    let out = agent()
        .args(&file_args)
        .args(["--broker", "mqtt://h", "--ca-file", "/etc/hostname", "--check"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("CA_FILE is set but not used: BROKER is not mqtts://"),
        "{err}"
    );
    refused(
        &["--broker", "mqtts://h", "--cert-file", "/etc/hostname"],
        &["KEY_FILE", "missing"],
    );
    refused(&["--username", "u"], &["PASSWORD_FILE", "missing"]);
}

/// USERNAME and PASSWORD_FILE against a broker that requires them.
#[test]
fn username_and_password() {
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwords");
    let made = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwords)
        .args(["sensor", "s3cret"])
        .status()
        .unwrap();
    assert!(made.success());
    let port = free_port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "user root\nlistener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
            passwords.display()
        ),
    )
    .unwrap();
    let broker = common::mosquitto(&conf, port).expect("mosquitto started");
    let run = |password: &str, expect: &str| {
        let file = dir.path().join("password");
        std::fs::write(&file, format!("{password}\n")).unwrap();
        let extra = [
            "--username".to_string(),
            "sensor".into(),
            "--password-file".into(),
        ];
        let extra = [&extra[..], &[file.display().to_string()]].concat();
        agent_log(&format!("mqtt://127.0.0.1:{port}"), &extra, expect);
    };
    run("s3cret", "acknowledged=1");
    run("wrong", "broker refused the connection: NotAuthorized");
    drop(broker);
}
