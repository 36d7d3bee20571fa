//! The filter language: every form, the original agent's tests and
//! documented examples, precompiled blobs, and the torture messages.

mod common;

use sip_capture::filter::blob::{self, Endian};
use sip_capture::filter::{Filter, compile_blob};
use sip_capture::sip::Message;

const LIMIT: usize = 1 << 20;

fn file(name: &str) -> Vec<u8> {
    std::fs::read(common::data(name)).unwrap()
}

fn matches(filter: &str, message: &[u8]) -> bool {
    let filter = Filter::compile(filter, LIMIT).unwrap_or_else(|e| panic!("{filter}: {e}"));
    filter.matches(&Message::parse(message).expect("a SIP message"))
}

fn msg(start: &str, headers: &[&str], body: &str) -> Vec<u8> {
    let mut m = format!("{start}\r\n");
    for h in headers {
        m.push_str(h);
        m.push_str("\r\n");
    }
    m.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    m.into_bytes()
}

/// The original agent's filter tests (filters/compile_test.go), case for case.
#[test]
fn the_originals_cases() {
    let request = file("messages/invite-request.sip");
    let response = file("messages/invite-response.sip");
    let complex = r#"(all request
                      (methods invite publish)
                      (not (body "don't capture"))
                      (any (to "alice@.*provider.com")
                           (hasheader "magic")
                           (message "secrets")))"#;
    for (filter, message, expected) in [
        ("", &request, true),
        ("response", &response, true),
        ("response", &request, false),
        ("request", &response, false),
        ("request", &request, true),
        ("(status 200)", &response, true),
        ("(status 403)", &response, false),
        ("(status 100 180 200)", &response, true),
        ("(status 200)", &request, false),
        (r#"(body "(?i:world)")"#, &request, true),
        ("(methods invite)", &request, true),
        ("(methods options)", &request, false),
        ("(methods options invite)", &request, true),
        (r#"(methods options "invite")"#, &request, true),
        (r#"(hasheader "Via")"#, &request, true),
        (r#"(hasheader "Not-There")"#, &request, false),
        (r#"(to "alice")"#, &request, true),
        (r#"(to "luigi")"#, &request, false),
        (r#"(from "bob")"#, &request, true),
        (r#"(from "luigi")"#, &request, false),
        (r#"(header "Contact" "bob")"#, &request, true),
        (r#"(header "Contact" "alice")"#, &request, false),
        (r#"(message "@172.*6{2,3}")"#, &request, true),
        (r#"(message "shazam")"#, &request, false),
        ("(not request)", &response, true),
        ("(not response)", &response, false),
        (r#"(any request (hasheader "magic"))"#, &request, true),
        ("(any request (status 200))", &response, true),
        (r#"(any request (hasheader "magic"))"#, &response, false),
        ("(all response (status 200))", &request, false),
        (r#"(all request (hasheader "magic"))"#, &request, false),
        ("(all response (status 200))", &response, true),
        (complex, &request, true),
    ] {
        assert_eq!(matches(filter, message), expected, "{filter}");
    }
}

/// The examples of the original's documentation, with their stated meaning.
#[test]
fn documented_examples() {
    let to_alice = "To: <sip:alice@provider.com>";
    let invite = msg(
        "INVITE sip:alice@provider.com SIP/2.0",
        &[to_alice, "CSeq: 1 INVITE"],
        "",
    );
    let bye = msg(
        "BYE sip:alice@provider.com SIP/2.0",
        &[to_alice, "CSeq: 2 BYE"],
        "",
    );
    let invite_to_bob = msg(
        "INVITE sip:bob@provider.com SIP/2.0",
        &["To: <sip:bob@provider.com>", "CSeq: 1 INVITE"],
        "",
    );
    let ok_invite = msg("SIP/2.0 200 OK", &[to_alice, "CSeq: 1 INVITE"], "");
    let ok_bye = msg("SIP/2.0 200 OK", &[to_alice, "CSeq: 2 BYE"], "");
    let ok_register = msg("SIP/2.0 200 OK", &[to_alice, "CSeq: 3 REGISTER"], "");
    let ringing = msg("SIP/2.0 180 Ringing", &[to_alice, "CSeq: 1 INVITE"], "");
    let busy = msg("SIP/2.0 486 Busy Here", &[to_alice, "CSeq: 1 INVITE"], "");
    let diverted = msg(
        "INVITE sip:x@y SIP/2.0",
        &["Diversion: <sip:a@b>;reason=busy"],
        "",
    );

    // The non-error responses to INVITEs.
    let f = "(status 100 180 183 200)";
    assert!(matches(f, &ringing) && matches(f, &ok_invite));
    assert!(!matches(f, &busy) && !matches(f, &invite));
    // Any message with a Diversion header.
    assert!(matches(r#"(hasheader "diversion")"#, &diverted));
    assert!(!matches(r#"(hasheader "diversion")"#, &invite));
    // Every request and every non-200 response.
    let f = "(not (status 200))";
    assert!(matches(f, &invite) && matches(f, &busy) && !matches(f, &ok_invite));
    // Accepted INVITEs only.
    let f = "(all (method invite) (status 200))";
    assert!(matches(f, &ok_invite));
    assert!(!matches(f, &ok_bye) && !matches(f, &invite) && !matches(f, &ringing));
    // Requests and accepted responses of INVITEs and BYEs to alice.
    let f = r#"(all (to "alice@provider.com") (method invite bye) (any request (status 200)))"#;
    for yes in [&invite, &bye, &ok_invite, &ok_bye] {
        assert!(matches(f, yes));
    }
    for no in [&invite_to_bob, &ok_register, &ringing, &busy] {
        assert!(!matches(f, no));
    }
    // INVITE/PUBLISH requests without "don't capture" in the body, with a
    // matching contact, a Magic header or "secrets" anywhere.
    let f = r#"(all request (method invite publish) (not (body "don't capture"))
                (any (header "contact" "alice@.*provider.com") (hasheader "magic") (message "secrets")))"#;
    let contact = "Contact: <sip:alice@pbx.provider.com>";
    assert!(matches(f, &msg("INVITE sip:x SIP/2.0", &[contact], "")));
    assert!(matches(f, &msg("PUBLISH sip:x SIP/2.0", &["Magic: 1"], "")));
    assert!(matches(f, &msg("INVITE sip:x SIP/2.0", &[], "the secrets")));
    assert!(!matches(
        f,
        &msg("INVITE sip:x SIP/2.0", &[contact], "don't capture")
    ));
    assert!(!matches(f, &msg("BYE sip:x SIP/2.0", &[contact], "")));
    assert!(!matches(f, &msg("INVITE sip:x SIP/2.0", &[], "")));
}

#[test]
fn compact_and_long_header_forms_are_one_header() {
    let compact = msg(
        "INVITE sip:x SIP/2.0",
        &[
            "t: <sip:alice@a>",
            "f: <sip:bob@b>",
            "i: abc@host",
            "m: <sip:c@c>",
            "v: SIP/2.0/UDP h",
        ],
        "",
    );
    assert!(matches(r#"(to "alice")"#, &compact));
    assert!(matches(r#"(from "bob")"#, &compact));
    assert!(matches(r#"(hasheader "Call-ID")"#, &compact));
    assert!(matches(r#"(header "CONTACT" "sip:c")"#, &compact));
    assert!(matches(r#"(header "via" "UDP")"#, &compact));
    let long = msg("INVITE sip:x SIP/2.0", &["Call-ID: abc@host", "Subject: hi"], "");
    assert!(matches(r#"(hasheader "i")"#, &long));
    assert!(matches(r#"(header "s" "^hi$")"#, &long));
    assert!(!matches(r#"(hasheader "t")"#, &long));
}

#[test]
fn every_instance_of_a_repeated_header_is_tried() {
    let m = msg(
        "INVITE sip:x SIP/2.0",
        &[
            "Via: SIP/2.0/UDP first",
            "Via: SIP/2.0/TCP second",
            "v: SIP/2.0/UDP third",
        ],
        "",
    );
    assert!(matches(r#"(header "via" "second")"#, &m));
    assert!(matches(r#"(header "Via" "third")"#, &m));
    assert!(!matches(r#"(header "via" "fourth")"#, &m));
}

#[test]
fn names_and_methods_are_case_insensitive() {
    let m = msg("INVITE sip:x SIP/2.0", &["x-custom: Yes"], "");
    assert!(matches("(method InViTe)", &m));
    assert!(matches(r#"(method "invite")"#, &m));
    assert!(matches(r#"(hasheader "X-CUSTOM")"#, &m));
    assert!(matches("(ALL REQUEST (Method invite))", &m));
    let ext = msg("FOOBAR sip:x SIP/2.0", &[], "");
    assert!(
        matches("(method foobar)", &ext),
        "extension methods are tokens too"
    );
}

#[test]
fn folded_header_values() {
    let m = b"INVITE sip:x SIP/2.0\r\nSubject: first part\r\n  second part\r\nContent-Length: 0\r\n\r\n";
    assert!(matches(r#"(header "subject" "first part\r\n\s+second")"#, m));
    assert!(matches(r#"(header "s" "second part")"#, m));
}

#[test]
fn non_utf8_bodies() {
    let mut m = msg(
        "MESSAGE sip:x SIP/2.0",
        &["Content-Type: application/octet-stream"],
        "",
    );
    m.extend_from_slice(&[0xff, 0xfe, b'k', b'e', b'y', 0x00, 0x80]);
    assert!(matches(r#"(body "key\x00")"#, &m));
    assert!(matches(r#"(body "\xff\xfe")"#, &m));
    assert!(matches(r#"(message "key")"#, &m));
}

#[test]
fn status_ranges_and_requests() {
    let busy = msg("SIP/2.0 486 Busy Here", &[], "");
    let invite = msg("INVITE sip:x SIP/2.0", &[], "");
    assert!(matches("(status 400-499)", &busy));
    assert!(matches("(status 200 480-486)", &busy));
    assert!(!matches("(status 500-599)", &busy));
    assert!(
        !matches("(status 100-699)", &invite),
        "a request never matches status"
    );
}

#[test]
fn dfa_size_limit_names_the_regex() {
    let err = Filter::compile(r#"(all (to "a") (body "[a-z]{50}x[a-z]{40}"))"#, 64 * 1024).unwrap_err();
    assert!(err.contains(r#"regex "[a-z]{50}x[a-z]{40}""#), "{err}");
    assert!(err.contains("FILTER_MAX_DFA_BYTES"), "{err}");
}

#[test]
fn bad_regexes_carry_the_regex_error() {
    let err = Filter::compile(r#"(body "[")"#, LIMIT).unwrap_err();
    assert!(err.starts_with(r#"regex "[": "#), "{err}");
    assert!(err.contains("unclosed character class"), "{err}");
}

/// Messages of every kind: the captures' datagrams and the torture tests.
fn corpus() -> Vec<Vec<u8>> {
    let mut messages = vec![
        file("messages/invite-request.sip"),
        file("messages/invite-response.sip"),
    ];
    for entry in std::fs::read_dir(common::data("rfc4475")).unwrap() {
        messages.push(std::fs::read(entry.unwrap().path()).unwrap());
    }
    messages
}

const CORPUS_FILTERS: &[&str] = &[
    r#"(all request (methods invite publish) (not (body "don't capture")) (any (to "alice@.*provider.com") (hasheader "magic") (message "secrets")))"#,
    r#"(any (status 100-199) (from "(?i)BOB") (header "via" "branch=z9hG4bK[0-9a-f]+"))"#,
    r#"(not (any (message "example\.(com|net)") (body "v=0")))"#,
    r#"(all (hasheader "i") (header "CSeq" "^[0-9]+ [A-Z]+$"))"#,
];

#[test]
fn blob_round_trip_gives_identical_results() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus();
    for (n, text) in CORPUS_FILTERS.iter().enumerate() {
        let direct = Filter::compile(text, LIMIT).unwrap();
        let path = dir.path().join(format!("{n}.bin"));
        std::fs::write(&path, compile_blob(text, LIMIT, Endian::NATIVE).unwrap()).unwrap();
        let loaded = Filter::load_file(&path).unwrap();
        assert_eq!(loaded.expression(), *text);
        let mut hits = 0;
        for raw in &corpus {
            let Some(m) = Message::parse(raw) else { continue };
            assert_eq!(direct.matches(&m), loaded.matches(&m), "{text}");
            hits += usize::from(direct.matches(&m));
        }
        assert!(hits > 0 || n == 0, "filter {n} should select part of the corpus");
    }
}

fn blob_error(bytes: &[u8]) -> String {
    Filter::from_blob(blob::aligned(bytes)).unwrap_err()
}

#[test]
fn wrong_endianness_is_refused() {
    let other = if Endian::NATIVE == Endian::Little {
        Endian::Big
    } else {
        Endian::Little
    };
    let bytes = compile_blob(r#"(to "alice")"#, LIMIT, other).unwrap();
    assert_eq!(
        blob_error(&bytes),
        format!(
            "filter file built for {}, this is {}; compile it with --endian {}",
            other.name(),
            Endian::NATIVE.name(),
            if Endian::NATIVE == Endian::Little {
                "little"
            } else {
                "big"
            }
        )
    );
}

#[test]
fn wrong_version_is_refused() {
    let mut bytes = compile_blob(r#"(to "alice")"#, LIMIT, Endian::NATIVE).unwrap();
    bytes[12..16].copy_from_slice(&(blob::FORMAT_VERSION + 1).to_ne_bytes());
    assert!(blob_error(&bytes).starts_with(&format!(
        "filter file format version {}",
        blob::FORMAT_VERSION + 1
    )));
}

#[test]
fn edited_expression_is_refused() {
    let mut bytes = compile_blob(r#"(to "alice")"#, LIMIT, Endian::NATIVE).unwrap();
    let at = bytes.windows(5).position(|w| w == b"alice").unwrap();
    bytes[at] = b'A';
    assert_eq!(
        blob_error(&bytes),
        "filter file was edited or damaged: its checksum does not match"
    );
}

#[test]
fn truncated_or_foreign_files_are_refused() {
    let bytes = compile_blob(r#"(to "alice")"#, LIMIT, Endian::NATIVE).unwrap();
    for len in [0, 10, 47, 60, bytes.len() - 1] {
        assert!(Filter::from_blob(blob::aligned(&bytes[..len])).is_err(), "{len}");
    }
    assert!(
        blob_error(b"GIF89a not a filter at all, but long enough to have a header")
            .contains("not a sip-capture filter")
    );
}

/// All 50 RFC 4475 torture messages through every function: no panic.
#[test]
fn torture_messages_through_every_function() {
    let every = r#"(any request response (status 100-699) (method invite "x") (hasheader "via")
        (header "to" ".") (to "a") (from "b") (body ".") (message "SIP")
        (all (not request) (any (status 200))))"#;
    let filter = Filter::compile(every, LIMIT).unwrap();
    let mut parsed = 0;
    for raw in corpus() {
        if let Some(m) = Message::parse(&raw) {
            parsed += 1;
            let _ = filter.matches(&m);
            for h in m.headers() {
                let _ = (h.name, h.value);
            }
        }
    }
    assert!(
        parsed >= 45,
        "most torture messages have a SIP start line: {parsed}"
    );
}
