//! Telemetry: the agent's state as one JSON object, for TELEMETRY_TOPIC.
//!
//! `{"agent":"sip-capture/0.1.0","uptime_s":3600,"packets":…,…}`: the agent
//! version, the seconds since start, and every counter of [`Counters`]
//! (docs/configuration.md lists them), including libpcap's own statistics
//! for a live capture. Written with serde-json-core into a fixed buffer.
//!
//! What it does not do: carry anything from a SIP message.

use crate::counters::Counters;
use crate::envelope::AGENT;
use serde::ser::{Serialize, SerializeMap, Serializer};

/// Large enough for every counter name and a 20-digit value.
pub const REPORT_CAPACITY: usize = 4096;

pub struct Report<'a> {
    pub counters: &'a Counters,
    pub uptime_s: u64,
}

impl Serialize for Report<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("agent", AGENT)?;
        map.serialize_entry("uptime_s", &self.uptime_s)?;
        for reading in self.counters.snapshot() {
            map.serialize_entry(reading.name, &reading.value)?;
        }
        map.end()
    }
}

impl Report<'_> {
    /// The report as JSON in `buf`.
    pub fn write<'b>(&self, buf: &'b mut [u8]) -> Result<&'b [u8], serde_json_core::ser::Error> {
        let len = serde_json_core::to_slice(self, buf)?;
        Ok(&buf[..len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_reported() {
        let counters = Counters::default();
        Counters::add(&counters.sip_messages, 42);
        let mut buf = [0u8; REPORT_CAPACITY];
        let json = Report {
            counters: &counters,
            uptime_s: 7,
        }
        .write(&mut buf)
        .unwrap();
        let json = core::str::from_utf8(json).unwrap();
        assert!(json.starts_with(&format!(r#"{{"agent":"{AGENT}","uptime_s":7,"packets":0,"#)));
        assert!(json.contains(r#""sip_messages":42"#));
        assert_eq!(json.matches(':').count(), 2 + counters.snapshot().count());
    }
}
