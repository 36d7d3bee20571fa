//! Golden files: every generated capture in tests/data/pcaps/generated/,
//! replayed through the agent to a real broker, publishes exactly the
//! messages its `.expected` file lists — the bytes, the capture time, the
//! addresses, the transport and where it was seen (`encap`), in order,
//! nothing more, each valid against docs/envelope.schema.json — and its summary
//! has the counter values the file names, accounts for every frame
//! (docs/design.md, "Accounting"), and the agent exits with the file's
//! `exit` status (0 when absent). `tests/data/make_captures.py` writes
//! both (X.pcap or X.pcapng); a new capture there is checked here without
//! a new test.

mod common;

use common::{Broker, accounting_errors, data, replay, replay_any, sip_of, summary_value};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// What an envelope says about its message, as `.expected` lists it: every
/// field but the ones derived from the message (`id`) or the agent
/// (`agent`), with `sip` decoded to text.
fn as_expected(envelope: &Value) -> Value {
    let mut fields: Map<String, Value> = envelope.as_object().unwrap().clone();
    let sip = sip_of(envelope);
    assert_eq!(
        fields.remove("id").unwrap(),
        base16ct::lower::encode_string(&Sha256::digest(&sip)),
        "id is the SHA-256 of the message"
    );
    fields.remove("agent");
    fields.insert("sip".into(), String::from_utf8_lossy(&sip).into());
    Value::Object(fields)
}

#[test]
fn generated_captures_publish_exactly_what_was_on_the_wire() {
    let broker = Broker::start();
    let mut names: Vec<String> = std::fs::read_dir(data("pcaps/generated"))
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name()?.to_str()?.strip_suffix(".expected")?.to_owned();
            Some(name)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 12, "generated captures: {names:?}");
    let schema = jsonschema::validator_for(
        &serde_json::from_str(&std::fs::read_to_string(data("../../docs/envelope.schema.json")).unwrap())
            .unwrap(),
    )
    .unwrap();
    let mut failures = Vec::new();
    for name in &names {
        let dir = data("pcaps/generated");
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.expected"))).unwrap())
                .unwrap();
        let args: Vec<&str> = expected["args"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap()).collect())
            .unwrap_or_default();
        let topic = format!("golden/{name}");
        let subscription = broker.subscribe(&topic);
        let capture = [".pcap", ".pcapng"]
            .map(|ext| dir.join(format!("{name}{ext}")))
            .into_iter()
            .find(|path| path.exists())
            .unwrap_or_else(|| panic!("{name}: no .pcap or .pcapng beside its .expected"));
        let output = replay_any(&broker, &topic, &capture, &args);
        let exit = expected["exit"].as_i64().unwrap_or(0);
        if output.status.code() != Some(exit as i32) {
            failures.push(format!(
                "{name}: exit {:?}, expected {exit}\n{}{}",
                output.status.code(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
            continue;
        }
        let envelopes: Vec<Value> = subscription
            .collect()
            .iter()
            .map(|text| serde_json::from_str(text).unwrap())
            .collect();
        for envelope in &envelopes {
            if let Err(e) = schema.validate(envelope) {
                failures.push(format!("{name}: not valid against the schema: {e}\n{envelope}"));
            }
        }
        let got: Vec<Value> = envelopes.iter().map(as_expected).collect();
        if got != expected["messages"].as_array().unwrap()[..] {
            failures.push(format!(
                "{name}: published\n{}\nexpected\n{}",
                serde_json::to_string_pretty(&got).unwrap(),
                serde_json::to_string_pretty(&expected["messages"]).unwrap()
            ));
        }
        for broken in accounting_errors(&output.stdout) {
            failures.push(format!("{name}: accounting: {broken}"));
        }
        for (counter, want) in expected["counters"].as_object().into_iter().flatten() {
            let value = summary_value(&output.stdout, counter);
            if Some(value) != want.as_u64() {
                failures.push(format!("{name}: {counter}={value}, expected {want}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The bundled real captures, whose messages other tests check: nothing in
/// them is lost without a counter saying why.
#[test]
fn real_captures_account_for_every_frame() {
    let broker = Broker::start();
    let mut files: Vec<_> = std::fs::read_dir(data("pcaps"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    let mut failures = Vec::new();
    for file in &files {
        let output = replay(&broker, "accounting", file, &[]);
        for broken in accounting_errors(&output.stdout) {
            failures.push(format!("{}: {broken}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
