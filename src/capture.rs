//! Capture stage: frames from libpcap, live or from a file.
//!
//! Live capture is promiscuous, non-blocking, and waits for packets with
//! `poll(2)` on libpcap's descriptor, so an idle link costs no CPU and a
//! stop request is seen within [`STOP_CHECK_MS`]. When it waits, it tells
//! the caller how far capture time has got (the idle tick), so time-bound
//! work (a TCP hole's wait) ends without a packet. A file (pcap or pcapng)
//! is read as fast as the pipeline takes it.
//!
//! What it does not do: decode. Each frame goes to the caller with its
//! timestamp and the capture's link type, untouched.

use crate::config::Source;
use crate::counters::Counters;
use crate::envelope::Timestamp;
use pcap::{Active, Capture, Linktype, Offline};
use rustix::event::{PollFd, PollFlags, poll};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How long a live capture sleeps in `poll(2)` before it looks at the stop
/// flag again.
pub const STOP_CHECK_MS: i32 = 250;

/// libpcap's packet buffer timeout: how long the kernel may hold packets
/// to deliver them in a batch. Batching keeps up under bursts (immediate
/// mode dropped packets in bursts on this design's test machine, see
/// docs/design.md); 50 ms bounds the added latency.
const BUFFER_TIMEOUT_MS: i32 = 50;

/// An open packet source.
pub enum PacketSource {
    Live(Capture<Active>),
    File(Capture<Offline>),
}

/// How often a live capture copies libpcap's statistics into the counters.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// Open the configured source and apply the BPF program, if any.
pub fn open(
    source: &Source,
    bpf: Option<&str>,
    snaplen: u32,
    buffer_bytes: u32,
) -> Result<PacketSource, String> {
    let mut opened = match source {
        Source::Interface(name) => {
            let capture = Capture::from_device(name.as_str())
                .and_then(|c| {
                    c.promisc(true)
                        .snaplen(snaplen as i32)
                        .buffer_size(buffer_bytes as i32)
                        .timeout(BUFFER_TIMEOUT_MS)
                        .open()
                })
                .and_then(|c| c.setnonblock())
                .map_err(|e| format!("cannot capture on interface {name}: {e}"))?;
            PacketSource::Live(capture)
        }
        Source::File(path) => PacketSource::File(
            Capture::from_file(path)
                .map_err(|e| format!("cannot read capture file {}: {e}", path.display()))?,
        ),
    };
    if let Some(program) = bpf {
        let result = match &mut opened {
            PacketSource::Live(c) => c.filter(program, true),
            PacketSource::File(c) => c.filter(program, true),
        };
        result.map_err(|e| format!("BPF_FILTER {program:?}: {e}"))?;
    }
    Ok(opened)
}

/// Compile a BPF program without opening anything, to validate it.
pub fn check_bpf(program: &str) -> Result<(), String> {
    Capture::dead(Linktype::ETHERNET)
        .and_then(|c| c.compile(program, true))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether a live interface by this name exists (or is libpcap's `any`).
pub fn interface_exists(name: &str) -> bool {
    name == "any"
        || pcap::Device::list()
            .map(|devices| devices.iter().any(|d| d.name == name))
            .unwrap_or(true)
}

impl PacketSource {
    /// The libpcap link-layer type number of this source.
    pub fn linktype(&self) -> i32 {
        match self {
            PacketSource::Live(c) => c.get_datalink().0,
            PacketSource::File(c) => c.get_datalink().0,
        }
    }

    /// Hand every frame to `on_frame` until the file ends or `stop` is set.
    /// On a stop, a live capture still delivers what the kernel already
    /// holds, so the last packets before a SIGTERM are not lost. Each time
    /// a live capture finds nothing to read, `on_idle` gets the capture time
    /// every frame still to come is later than (see [`idle_time`]).
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        counters: &Counters,
        mut on_frame: impl FnMut(Timestamp, &[u8]),
        mut on_idle: impl FnMut(Timestamp),
    ) -> Result<(), String> {
        let mut stats_due = Instant::now();
        let mut frames_since_stats = 0u32;
        // Once stopping: deliver until the kernel has nothing more or this
        // deadline passes (a flood must not keep the agent from stopping).
        let mut drain_until: Option<Instant> = None;
        loop {
            if drain_until.is_none() && stop.load(Ordering::Relaxed) {
                if matches!(self, PacketSource::File(_)) {
                    return Ok(());
                }
                drain_until = Some(Instant::now() + Duration::from_millis(4 * BUFFER_TIMEOUT_MS as u64));
                // Let the kernel retire the block it is filling.
                self.wait_readable(2 * BUFFER_TIMEOUT_MS)?;
            }
            let stopping = drain_until.is_some();
            if drain_until.is_some_and(|until| Instant::now() >= until) {
                self.copy_stats(counters);
                return Ok(());
            }
            let next = match self {
                PacketSource::Live(c) => c.next_packet(),
                PacketSource::File(c) => c.next_packet(),
            };
            match next {
                Ok(packet) => {
                    // time_t and suseconds_t differ in width between targets.
                    #[allow(clippy::useless_conversion)]
                    let ts = Timestamp {
                        secs: i64::from(packet.header.ts.tv_sec),
                        micros: u32::try_from(packet.header.ts.tv_usec).unwrap_or(0),
                    };
                    on_frame(ts, packet.data);
                    // Under steady traffic reads never time out: look at the
                    // clock every few thousand packets instead.
                    frames_since_stats += 1;
                    if frames_since_stats == 4096 {
                        frames_since_stats = 0;
                        if Instant::now() >= stats_due {
                            self.copy_stats(counters);
                            stats_due = Instant::now() + STATS_EVERY;
                        }
                    }
                }
                Err(pcap::Error::TimeoutExpired) if stopping => {
                    self.copy_stats(counters);
                    return Ok(());
                }
                Err(pcap::Error::TimeoutExpired) => {
                    on_idle(idle_time());
                    if Instant::now() >= stats_due {
                        self.copy_stats(counters);
                        stats_due = Instant::now() + STATS_EVERY;
                    }
                    self.wait_readable(STOP_CHECK_MS)?
                }
                Err(pcap::Error::NoMorePackets) => return Ok(()),
                Err(e) => return Err(format!("capture failed: {e}")),
            }
        }
    }

    /// Sleep until the live capture has packets or `ms` milliseconds pass.
    fn wait_readable(&self, ms: i32) -> Result<(), String> {
        if let PacketSource::Live(c) = self {
            let mut fds = [PollFd::new(c, PollFlags::IN)];
            // From i32: the field types differ between 32- and 64-bit targets.
            let timeout = rustix::event::Timespec {
                tv_sec: (ms / 1000).into(),
                tv_nsec: (ms % 1000 * 1_000_000).into(),
            };
            match poll(&mut fds, Some(&timeout)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(format!("poll on capture failed: {e}")),
            }
        }
        Ok(())
    }

    /// Copy libpcap's statistics into the counters (live captures only).
    fn copy_stats(&mut self, counters: &Counters) {
        if let PacketSource::Live(c) = self
            && let Ok(stats) = c.stats()
        {
            Counters::set(&counters.pcap_received, u64::from(stats.received));
            Counters::set(&counters.pcap_dropped, u64::from(stats.dropped));
            Counters::set(&counters.pcap_if_dropped, u64::from(stats.if_dropped));
        }
    }
}

/// The capture time of an idle tick: the wall clock, which stamps live
/// packets, less twice libpcap's buffer timeout, for the packets the kernel
/// may still hold in a block it has not handed over.
fn idle_time() -> Timestamp {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(Duration::from_millis(2 * BUFFER_TIMEOUT_MS as u64));
    Timestamp {
        secs: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
        micros: since_epoch.subsec_micros(),
    }
}
