//! Replays the committed fuzz corpora through the fuzz targets' bodies on
//! stable Rust: every input a fuzzer found interesting (and every crash
//! once found) stays covered by `make test`.

#[path = "fuzz/targets.rs"]
mod targets;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        run(&std::fs::read(entry.unwrap().path()).unwrap());
        inputs += 1;
    }
    assert!(inputs > 0, "no corpus for {target}");
    println!("{target}: {inputs} inputs");
}

#[test]
fn decode_frame_corpus() {
    replay("decode_frame", targets::decode_frame);
}

#[test]
fn tcp_stream_corpus() {
    replay("tcp_stream", targets::tcp_stream);
}

#[test]
fn sctp_chunks_corpus() {
    replay("sctp_chunks", targets::sctp_chunks);
}

#[test]
fn sip_message_corpus() {
    replay("sip_message", targets::sip_message);
}

#[test]
fn ws_stream_corpus() {
    replay("ws_stream", targets::ws_stream);
}
