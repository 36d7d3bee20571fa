//! Counters shared by the capture and publish threads.
//!
//! Every packet or message that does not end up published is counted under
//! the reason it stopped, so bad traffic shows up here instead of in a panic
//! or a log flood. The summary line at exit prints them all.

use crate::decode::Encapsulation;
use core::fmt;
use portable_atomic::{AtomicU64, Ordering};

/// A counter's name, value and one-line help (its doc comment).
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    pub name: &'static str,
    pub value: u64,
    pub help: &'static str,
    /// A level that goes up and down (Prometheus `gauge`), not a total.
    pub gauge: bool,
}

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident),* $(,)?) => {
        /// Event counts and a few levels; relaxed atomics, read for
        /// reporting only.
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
        }

        impl Counters {
            /// Every counter, in declaration order.
            pub fn snapshot(&self) -> impl Iterator<Item = Reading> + '_ {
                [$((stringify!($name), &self.$name, concat!($($doc),*))),*]
                    .into_iter()
                    .map(|(name, value, help)| Reading {
                        name,
                        value: value.load(Ordering::Relaxed),
                        help: help.trim(),
                        gauge: GAUGES.contains(&name),
                    })
            }
        }
    };
}

/// The counters that are levels, not totals.
const GAUGES: &[&str] = &["store_envelopes", "store_bytes", "in_flight"];

counters! {
    /// Frames taken into the pipeline: every frame of a live capture, and
    /// every frame of a file that BPF_FILTER kept.
    packets,
    /// Frames of a capture file that BPF_FILTER rejected (not in `packets`;
    /// a live capture's are dropped in the kernel, uncounted).
    bpf_filtered,
    /// 1 when the capture file ends inside a record (the capture was killed
    /// while writing it) or a record is damaged: reading stopped there,
    /// every whole record before it was used, and the exit status is 3.
    file_cut_short,
    /// Frames of a link type sip-capture does not decode.
    link_unsupported,
    /// Frames whose link, VLAN, IP, UDP or TCP headers are cut short or
    /// inconsistent.
    decode_errors,
    /// Frames not decoded because their headers nest deeper than decode
    /// follows: more than MAX_ENCAPSULATIONS (8) VLAN tags, MPLS labels and
    /// tunnels together, or more than MAX_IPV6_EXTENSION_HEADERS IPv6
    /// extension headers in one chain.
    header_chain_too_long,
    /// Frames whose tunnel, MPLS or PPPoE header is cut short or
    /// inconsistent (a version or flag it must have is missing).
    tunnel_truncated,
    /// Frames whose tunnel or label stack carries neither IP nor Ethernet
    /// with IP (ARP inside VXLAN, 802.11 inside TZSP, PPP control traffic,
    /// GTP signalling).
    tunnel_not_ip,
    /// 802.1Q, 802.1ad and 0x9100 VLAN tags peeled (these `peeled_`
    /// counters count each encapsulation of the frames and reassembled
    /// datagrams decoded to a segment or fragment, events outside the
    /// accounting).
    peeled_vlan,
    /// Unencrypted MACsec headers peeled.
    peeled_macsec,
    /// MPLS label stack entries peeled.
    peeled_mpls,
    /// PPPoE session headers peeled.
    peeled_pppoe,
    /// GRE headers peeled.
    peeled_gre,
    /// ERSPAN headers (type I, II, III) peeled.
    peeled_erspan,
    /// IP-in-IP headers (IPv4 or IPv6 inside IPv4 or IPv6) peeled.
    peeled_ipip,
    /// VXLAN headers peeled.
    peeled_vxlan,
    /// Geneve headers peeled.
    peeled_geneve,
    /// TZSP headers peeled.
    peeled_tzsp,
    /// GTP-U headers peeled.
    peeled_gtpu,
    /// Valid frames carrying none of UDP, TCP and SCTP (ARP, ICMP, ESP, ...).
    not_udp_tcp,
    /// IP fragments received.
    frag_fragments,
    /// Fragments that became part of a reassembled datagram.
    frag_joined,
    /// Datagrams reassembled from fragments.
    frag_reassembled,
    /// Fragments of unfinished datagrams dropped after FRAG_TIMEOUT_MS or
    /// at end of file.
    frag_expired,
    /// Fragments of unfinished datagrams evicted because every slot was busy.
    frag_evicted,
    /// Fragments that overlapped data already received (first copy kept).
    frag_overlaps,
    /// Fragments dropped with a datagram whose fragments are inconsistent
    /// (conflicting ends, misaligned offsets).
    frag_invalid,
    /// Fragments dropped with a datagram larger than a reassembly slot.
    frag_too_large,
    /// UDP datagrams (whole frames and reassembled datagrams) handed to the
    /// SIP stage.
    udp_datagrams,
    /// Bytes after the end of a UDP message set by its Content-Length
    /// (padding, junk, a second message packed in), discarded (RFC 3261
    /// 18.3).
    udp_trailing_bytes,
    /// UDP payloads and SCTP user messages that do not start with a SIP
    /// request or status line.
    not_sip,
    /// TCP segments received.
    tcp_segments,
    /// TCP streams (one per direction) opened.
    tcp_flows,
    /// Streams evicted because the table was full.
    tcp_flows_evicted,
    /// Streams dropped after TCP_IDLE_TIMEOUT_S without traffic.
    tcp_flows_expired,
    /// Segments holding only bytes already delivered.
    tcp_retransmissions,
    /// Segments kept while waiting for a hole to fill.
    tcp_out_of_order,
    /// Holes in TCP streams skipped: never filled within TCP_HOLE_WAIT_MS
    /// and TCP_HOLE_MAX_BYTES, or when the stream ended first.
    tcp_gaps,
    /// Bytes of TCP streams never captured: the holes skipped (tcp_gaps).
    tcp_gap_bytes,
    /// Messages (or lines before a start line) cut short by a hole or by
    /// the end of their stream (FIN, RST, idle expiry, eviction, end of
    /// capture), dropped.
    tcp_partial_messages,
    /// The bytes of tcp_partial_messages.
    tcp_partial_bytes,
    /// Partial messages dropped because no stream buffer was free.
    tcp_no_buffer,
    /// Lines discarded before a start line (junk, mid-stream starts).
    tcp_junk_lines,
    /// Messages discarded for a missing or non-numeric Content-Length.
    tcp_no_content_length,
    /// Messages cut from a TCP stream that were larger than
    /// MAX_MESSAGE_BYTES or a stream buffer, dropped before the SIP stage.
    tcp_oversize,
    /// SIP messages cut from TCP streams (part of sip_messages), over
    /// WebSocket too.
    tcp_messages,
    /// TCP streams whose first bytes are a TLS record (SIP over TLS,
    /// WebSocket over TLS): unreadable, their bytes discarded.
    tls_streams,
    /// HTTP/1.1 Upgrades to WebSocket for SIP (requests and 101 responses,
    /// RFC 7118): not SIP, never published.
    ws_handshakes,
    /// SIP messages from WebSocket messages (part of tcp_messages).
    ws_messages,
    /// WebSocket control frames (ping, pong, close): not SIP.
    ws_control_frames,
    /// WebSocket frames RFC 6455 does not allow (unknown opcode, RSV2 or
    /// RSV3, a continuation with no message begun, a fragmented control
    /// frame); the message in progress is dropped.
    ws_bad_frames,
    /// Bytes of WebSocket streams skipped while looking for a frame
    /// boundary (after a hole or a bad frame).
    ws_skipped_bytes,
    /// WebSocket messages larger than MAX_MESSAGE_BYTES (as sent or
    /// inflated), skipped.
    ws_oversize,
    /// Compressed WebSocket messages (permessage-deflate) not inflated:
    /// corrupt, or referring to earlier messages not seen or not kept
    /// (joined mid-stream, after a hole, no context free).
    ws_inflate_failed,
    /// Compressed messages of a sender with context takeover for which no
    /// decompression context was free (WS_INFLATE_CONTEXTS): inflated
    /// without earlier messages (ws_inflate_failed if they refer to them).
    ws_inflate_no_context,
    /// WebSocket messages whose payload is not a SIP message.
    ws_not_sip,
    /// SCTP packets received (whole frames and reassembled datagrams).
    sctp_packets,
    /// SCTP packets whose CRC32c checksum is wrong, used all the same (a
    /// mirror port shows packets whose checksum offload had yet to fill in).
    sctp_bad_checksums,
    /// Chunks whose length is shorter than their header or runs past the
    /// packet: the packet's chunks from there on are not read.
    sctp_malformed_chunks,
    /// SCTP associations (one per direction) whose TSNs are followed.
    sctp_associations,
    /// Associations evicted because SCTP_MAX_ASSOCIATIONS were followed.
    sctp_associations_evicted,
    /// DATA and I-DATA chunks received.
    sctp_data_chunks,
    /// Chunks with a TSN seen before on their association (retransmissions),
    /// dropped: each user message is published once.
    sctp_duplicates,
    /// Chunks that became part of a user message (sctp_user_messages).
    sctp_chunks_joined,
    /// Chunks of unfinished user messages evicted: every SCTP buffer was
    /// busy, or their association was evicted.
    sctp_chunks_evicted,
    /// Chunks of user messages never finished when the capture ended.
    sctp_chunks_expired,
    /// Chunks carrying no user data, or left over from a user message whose
    /// fragments do not line up.
    sctp_chunks_invalid,
    /// Chunks dropped with a user message larger than MAX_MESSAGE_BYTES or
    /// an SCTP buffer (or of more than MAX_FRAGMENTS fragments).
    sctp_oversize,
    /// SCTP user messages handed to the SIP stage, each one message.
    sctp_user_messages,
    /// SIP messages recognised.
    sip_messages,
    /// SIP messages the filter did not select.
    filtered_out,
    /// SIP messages larger than MAX_MESSAGE_BYTES, dropped (over TCP, see
    /// tcp_oversize).
    dropped_oversize,
    /// Envelopes dropped because the queue to the broker was full.
    dropped_queue_full,
    /// Envelopes put into the store for the broker.
    queued,
    /// Envelopes handed to the MQTT client, counting each send again.
    published,
    /// Envelopes the broker acknowledged (PUBACK), each once.
    acknowledged,
    /// Envelopes the broker or the client refused for good (too large, a
    /// PUBACK with a failure reason): counted and logged, not retried.
    rejected,
    /// Envelopes sent again because the broker lost the session before
    /// acknowledging them (at-least-once: the subscriber may see them twice).
    republished,
    /// Envelopes sent again, with DUP, on a resumed session because their
    /// PUBACK had not arrived when the connection broke (the subscriber may
    /// see them twice).
    resent_on_resume,
    /// Envelopes still in the store, unacknowledged, when the agent stopped.
    undelivered_at_exit,
    /// Successful connections to the broker after the first.
    reconnects,
    /// Connections ended because another client took the session over: a
    /// DISCONNECT 0x8E, or the broker closing a connection before it was
    /// up 10 s, the second time or more in a row (what mosquitto does when
    /// a second client uses CLIENT_ID).
    client_id_conflicts,
    /// Envelopes in the store now, sent or not (a level).
    store_envelopes,
    /// Bytes the store holds now (a level).
    store_bytes,
    /// Publishes awaiting their PUBACK now (a level).
    in_flight,
    /// libpcap: packets the kernel received for a live capture (refreshed
    /// about once a second).
    pcap_received,
    /// libpcap: packets dropped for lack of buffer space (CAPTURE_BUFFER_BYTES).
    pcap_dropped,
    /// libpcap: packets dropped by the network interface.
    pcap_if_dropped,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(counter: &AtomicU64) {
        Counters::add(counter, 1);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// The `peeled_` counter of `encapsulation`'s kind.
    pub fn peeled(&self, encapsulation: Encapsulation) -> &AtomicU64 {
        match encapsulation {
            Encapsulation::Vlan(_) => &self.peeled_vlan,
            Encapsulation::Macsec => &self.peeled_macsec,
            Encapsulation::Mpls(_) => &self.peeled_mpls,
            Encapsulation::Pppoe(_) => &self.peeled_pppoe,
            Encapsulation::Gre(_) => &self.peeled_gre,
            Encapsulation::Erspan(_) => &self.peeled_erspan,
            Encapsulation::IpInIp => &self.peeled_ipip,
            Encapsulation::Vxlan(_) => &self.peeled_vxlan,
            Encapsulation::Geneve(_) => &self.peeled_geneve,
            Encapsulation::Tzsp => &self.peeled_tzsp,
            Encapsulation::GtpU(_) => &self.peeled_gtpu,
        }
    }

    /// Set a counter that mirrors a total kept elsewhere (libpcap's).
    pub fn set(counter: &AtomicU64, value: u64) {
        counter.store(value, Ordering::Relaxed);
    }
}

/// `name=value` pairs on one line, for the summary log.
impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.snapshot().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}={}", r.name, r.value)?;
        }
        Ok(())
    }
}
