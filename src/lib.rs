//! sip-capture: a passive SIP sensor.
//!
//! It captures SIP signalling with libpcap, keeps the messages the user's
//! filter selects, wraps each raw message, unaltered, in a small JSON
//! envelope and publishes it to one MQTT topic at QoS 1. It is built to run
//! as firmware on small tap appliances: memory is sized once at start-up,
//! and the per-packet path allocates nothing.
//!
//! # The pipeline
//!
//! Data flows one way, one module per stage:
//!
//! ```text
//!  capture ──▶ decode ──▶ reassemble ──▶ sip ──▶ filter ──▶ envelope ──▶ queue ──▶ publish
//!  libpcap     tags,       defrag (IP)     start    SIP_FILTER  JSON + id    fixed     minimq
//!  pcap-parser tunnels,    tcp + split     line,               base64       byte ring QoS 1
//!              IP, UDP/TCP (streams,       headers
//!              SCTP        WebSocket),
//!                 ▲        sctp (chunks)
//!                 │            │
//!                 └────────────┘ a reassembled datagram is peeled on
//! ```
//!
//! - [`capture`]: frames from a live interface (libpcap, non-blocking,
//!   `poll(2)`) or a pcap/pcapng file ([`pcapfile`], pure Rust: each frame
//!   with its own interface's link type and timestamp resolution).
//! - [`decode`]: a frame to a UDP datagram, TCP segment or SCTP packet
//!   (SCTP chunks, RFC 9260), one loop peeling layers nested in any order
//!   up to a fixed depth (Ethernet with VLAN tags, Linux SLL/SLL2, raw IP,
//!   BSD loopback; MPLS and Ethernet pseudowires, PPPoE, GRE and ERSPAN,
//!   IP in IP, VXLAN, Geneve, TZSP, GTP-U; IPv4 and IPv6 with extension
//!   headers), and where it was observed (interface, VLAN ids, labels,
//!   tunnel ids), which the reassembly keys include and the envelope
//!   reports. Zero-copy.
//! - [`defrag`]: IPv4/IPv6 fragments back into datagrams, in fixed slots.
//! - [`tcp`]: TCP byte streams in order and once, in a fixed flow table and
//!   buffer pool; [`split`] cuts a stream into SIP messages by
//!   Content-Length, skipping keep-alives and junk, or, once it recognises
//!   SIP over WebSocket (an HTTP Upgrade, or a frame carrying a SIP start
//!   line), [`split::websocket`] cuts RFC 6455 frames into one SIP message
//!   per WebSocket message, unmasked and inflated (permessage-deflate, in
//!   decompression windows fixed at start-up); TLS streams are counted.
//! - [`sctp`]: SCTP user messages from DATA and I-DATA chunks (RFC 9260,
//!   RFC 8260), fragments joined per association and stream, duplicate
//!   TSNs dropped, in fixed buffers; each user message is one SIP message
//!   (RFC 4168).
//! - [`sip`]: recognises SIP by its start line, on any port, and gives a
//!   zero-copy view of start line, headers (compact forms equal to long
//!   ones) and body.
//! - [`filter`]: SIP_FILTER, which messages to publish.
//! - [`envelope`]: the JSON envelope (`id` = SHA-256 of the message, capture
//!   `time`, `agent`, `transport`, `src`, `dst`, `encap` for a message
//!   found inside tags or tunnels, base64 `sip`), written into
//!   a buffer sized at start-up.
//! - [`queue`]: the store, a byte ring of QUEUE_BYTES between the capture
//!   thread and the publish thread, holding each envelope until the broker
//!   acknowledges it; when full, a live capture drops and counts new
//!   envelopes, so capture never waits on the broker.
//! - [`publish`]: MQTT v5 QoS 1 with minimq on a single-threaded tokio
//!   runtime, up to MAX_INFLIGHT_MESSAGES publishes in flight (through the
//!   patched minimq in vendor/), optionally several envelopes per publish
//!   (a JSON array), replay after a lost session, reconnect with backoff and
//!   jitter (`retry`), retained status with a Last Will. Inside it:
//!   [`publish::tls`] for `mqtts://`, [`publish::websocket`] for `ws://`
//!   and `wss://` (MQTT over WebSocket, not to be confused with
//!   [`split::websocket`], SIP over WebSocket in captured traffic), and
//!   `heard`, which reads from the broker's packets what minimq does not
//!   tell (Maximum Packet Size, Receive Maximum, DISCONNECT reasons, MQTT
//!   3.1.1), `link`, the socket under minimq with writes coalesced, and
//!   `window`, the payloads in flight and when the next may go.
//!
//! [`pipeline`] wires the stages and runs the two threads, after
//! [`privileges`] optionally drops to an unprivileged user; [`buffers`]
//! maps the large buffers so that only what traffic touches is resident,
//! and carves reassembly buffers from one mapping; [`config`] reads
//! and validates every setting before anything starts ([`identity`]: the
//! default CLIENT_ID); [`counters`] counts
//! every packet that does not end up published, by reason, and
//! [`telemetry`] reports them to TELEMETRY_TOPIC and [`metrics`] on an
//! optional Prometheus endpoint.
//!
//! # What it never does
//!
//! Alter a message, persist data, publish anywhere but the configured
//! topics (TOPIC for SIP; the status and telemetry topics for the agent's
//! own state), or take configuration or commands over MQTT: it subscribes
//! to nothing.
//!
//! Firmware (static ARM/MIPS builds, images, OpenWrt) is built outside the
//! crate, by `board/` and `buildroot/`: docs/firmware.md.
#![deny(unsafe_code)]

pub mod buffers;
pub mod capture;
pub mod config;
pub mod counters;
pub mod decode;
pub mod defrag;
pub mod envelope;
pub mod filter;
pub mod identity;
pub mod metrics;
pub mod pcapfile;
pub mod pipeline;
pub mod privileges;
pub mod publish;
pub mod queue;
pub mod sctp;
pub mod sip;
pub mod split;
pub mod tcp;
pub mod telemetry;
