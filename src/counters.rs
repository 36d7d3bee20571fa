//! Counters shared by the capture and publish threads.
//!
//! Every packet or message that does not end up published is counted under
//! the reason it stopped, so bad traffic shows up here instead of in a panic
//! or a log flood. The summary line at exit prints them all.

use core::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Monotonic event counts; relaxed atomics, read for reporting only.
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        impl Counters {
            /// Each counter's name and current value, in declaration order.
            pub fn snapshot(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
                [$((stringify!($name), &self.$name)),*]
                    .into_iter()
                    .map(|(name, value)| (name, value.load(Ordering::Relaxed)))
            }
        }
    };
}

counters! {
    /// Frames read from libpcap.
    packets,
    /// Frames of a link type sip-capture does not decode.
    link_unsupported,
    /// Frames whose headers are cut short or inconsistent.
    decode_errors,
    /// Valid frames carrying neither UDP nor TCP (ARP, ICMP, SCTP, ...).
    not_udp_tcp,
    /// IP fragments, skipped: fragment reassembly is not implemented yet.
    ip_fragments_skipped,
    /// TCP segments with payload, skipped: TCP reassembly is not implemented yet.
    tcp_segments_skipped,
    /// UDP payloads that do not start with a SIP request or status line.
    not_sip,
    /// SIP messages recognised.
    sip_messages,
    /// SIP messages the filter did not select.
    filtered_out,
    /// SIP messages larger than MAX_MESSAGE_BYTES, dropped.
    dropped_oversize,
    /// Envelopes dropped because the queue to the broker was full.
    dropped_queue_full,
    /// Envelopes handed to the MQTT client (sent or being sent).
    published,
    /// Envelopes the broker acknowledged (PUBACK).
    acknowledged,
    /// Envelopes the broker or the client refused (too large, rejected).
    rejected,
    /// Envelopes whose MQTT session was lost before their PUBACK.
    lost_unacknowledged,
    /// Envelopes still queued when the agent stopped, never sent.
    unsent_at_exit,
    /// Successful connections to the broker after the first.
    reconnects,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(counter: &AtomicU64) {
        Counters::add(counter, 1);
    }
}

/// `name=value` pairs on one line, for the summary log.
impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, value)) in self.snapshot().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name}={value}")?;
        }
        Ok(())
    }
}
