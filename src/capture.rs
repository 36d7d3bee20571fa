//! Capture stage: frames from libpcap live, or from a pcap or pcapng file.
//!
//! Live capture is promiscuous, non-blocking, and waits for packets with
//! `poll(2)` on libpcap's descriptor, so an idle link costs no CPU and a
//! stop request is seen within [`STOP_CHECK_MS`]. When it waits, it tells
//! the caller how far capture time has got (the idle tick), so time-bound
//! work (a TCP hole's wait) ends without a packet. A file is read by
//! [`pcapfile`](crate::pcapfile) (every packet with its own interface's
//! link type and time) as fast as the pipeline takes it; BPF_FILTER is
//! compiled by libpcap for each link type the file holds and run on each
//! frame, with the semantics a live capture has.
//!
//! What it does not do: decode. Each [`Frame`] goes to the caller with its
//! timestamp, interface and link type, untouched.

use crate::config::Source;
use crate::counters::Counters;
use crate::envelope::Timestamp;
use crate::pcapfile::{CaptureFile, Ending};
use pcap::{Active, BpfProgram, Capture, Linktype};
use rustix::event::{PollFd, PollFlags, poll};
use std::path::PathBuf;
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

/// One captured frame, as the link layer delivered it.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Capture time.
    pub time: Timestamp,
    /// The pcapng interface id within its section; 0 for a classic pcap
    /// file and a live capture.
    pub interface: u32,
    /// The link-layer type number (LINKTYPE_ in files, libpcap's DLT_ live)
    /// that `data` starts with.
    pub linktype: i32,
    /// The captured bytes (at most the snap length).
    pub data: &'a [u8],
}

/// An open packet source.
pub enum PacketSource {
    Live(Capture<Active>),
    File(FileSource),
}

/// A capture file and the BPF_FILTER it is read through.
pub struct FileSource {
    path: PathBuf,
    file: CaptureFile,
    bpf: Option<FileBpf>,
}

/// Compiled BPF programs a file keeps, one per link type: more than any
/// real file has; a damaged file with more link types recompiles instead
/// of growing the table.
const BPF_PROGRAMS: usize = 16;

/// BPF_FILTER for a file: libpcap compiles the expression for each link
/// type met, once, and runs it on each frame of that type
/// (`pcap_offline_filter`).
struct FileBpf {
    expression: String,
    /// A program per link type; `None` where the expression does not
    /// compile for that type (no frame of it can match).
    programs: Vec<(i32, Option<BpfProgram>)>,
}

impl FileBpf {
    /// Whether the filter accepts `frame`. Compiles on the first frame of a
    /// link type (the only allocation), then reuses the program.
    fn accepts(&mut self, frame: &Frame) -> bool {
        let at = match self.programs.iter().position(|(l, _)| *l == frame.linktype) {
            Some(at) => at,
            None => {
                let program = Capture::dead(Linktype(dlt_of(frame.linktype)))
                    .and_then(|c| c.compile(&self.expression, true));
                let full = self.programs.len() == BPF_PROGRAMS;
                let program = program
                    .inspect_err(|e| {
                        // Once per link type (the table full: no log flood).
                        if !full {
                            log::warn!(
                                "BPF_FILTER {:?} does not compile for link type {}: {e}; its frames are filtered out",
                                self.expression,
                                frame.linktype
                            )
                        }
                    })
                    .ok();
                if full {
                    self.programs.pop();
                }
                self.programs.push((frame.linktype, program));
                self.programs.len() - 1
            }
        };
        self.programs[at].1.as_ref().is_some_and(|p| p.filter(frame.data))
    }
}

/// The DLT_ number libpcap compiles filters for, of a file's LINKTYPE_
/// number: they are equal but for LINKTYPE_RAW (101), which is DLT_RAW (12
/// on Linux); pcap_open_dead does not map it.
fn dlt_of(linktype: i32) -> i32 {
    match linktype {
        101 => 12,
        other => other,
    }
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
            let linktype = capture.get_datalink().0;
            if crate::decode::LinkType::from_pcap(linktype).is_none() {
                log::warn!("link type {linktype} is not supported; its frames will be counted and skipped");
            }
            PacketSource::Live(capture)
        }
        Source::File(path) => {
            let file = std::fs::File::open(path)
                .map_err(|e| e.to_string())
                .and_then(CaptureFile::new)
                .map_err(|e| format!("cannot read capture file {}: {e}", path.display()))?;
            PacketSource::File(FileSource {
                path: path.clone(),
                file,
                bpf: bpf.map(|expression| FileBpf {
                    expression: expression.to_string(),
                    programs: Vec::new(),
                }),
            })
        }
    };
    if let (Some(program), PacketSource::Live(c)) = (bpf, &mut opened) {
        c.filter(program, true)
            .map_err(|e| format!("BPF_FILTER {program:?}: {e}"))?;
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
    /// Hand every frame to `on_frame` until the file ends or `stop` is set.
    /// On a stop, a live capture still delivers what the kernel already
    /// holds, so the last packets before a SIGTERM are not lost. Each time
    /// a live capture finds nothing to read, `on_idle` gets the capture time
    /// every frame still to come is later than (see `idle_time`).
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        counters: &Counters,
        mut on_frame: impl FnMut(&Frame),
        mut on_idle: impl FnMut(Timestamp),
    ) -> Result<(), String> {
        let capture = match self {
            PacketSource::File(file) => return file.run(stop, counters, on_frame),
            PacketSource::Live(capture) => capture,
        };
        let linktype = capture.get_datalink().0;
        let mut stats_due = Instant::now();
        let mut frames_since_stats = 0u32;
        // Once stopping: deliver until the kernel has nothing more or this
        // deadline passes (a flood must not keep the agent from stopping).
        let mut drain_until: Option<Instant> = None;
        loop {
            if drain_until.is_none() && stop.load(Ordering::Relaxed) {
                drain_until = Some(Instant::now() + Duration::from_millis(4 * BUFFER_TIMEOUT_MS as u64));
                // Let the kernel retire the block it is filling.
                wait_readable(capture, 2 * BUFFER_TIMEOUT_MS)?;
            }
            let stopping = drain_until.is_some();
            if drain_until.is_some_and(|until| Instant::now() >= until) {
                copy_stats(capture, counters);
                return Ok(());
            }
            match capture.next_packet() {
                Ok(packet) => {
                    // time_t and suseconds_t differ in width between targets.
                    #[allow(clippy::useless_conversion)]
                    let time = Timestamp {
                        secs: i64::from(packet.header.ts.tv_sec),
                        micros: u32::try_from(packet.header.ts.tv_usec).unwrap_or(0),
                    };
                    on_frame(&Frame {
                        time,
                        interface: 0,
                        linktype,
                        data: packet.data,
                    });
                    // Under steady traffic reads never time out: look at the
                    // clock every few thousand packets instead.
                    frames_since_stats += 1;
                    if frames_since_stats == 4096 {
                        frames_since_stats = 0;
                        if Instant::now() >= stats_due {
                            copy_stats(capture, counters);
                            stats_due = Instant::now() + STATS_EVERY;
                        }
                    }
                }
                Err(pcap::Error::TimeoutExpired) if stopping => {
                    copy_stats(capture, counters);
                    return Ok(());
                }
                Err(pcap::Error::TimeoutExpired) => {
                    on_idle(idle_time());
                    if Instant::now() >= stats_due {
                        copy_stats(capture, counters);
                        stats_due = Instant::now() + STATS_EVERY;
                    }
                    wait_readable(capture, STOP_CHECK_MS)?
                }
                Err(pcap::Error::NoMorePackets) => return Ok(()),
                Err(e) => return Err(format!("capture failed: {e}")),
            }
        }
    }
}

impl FileSource {
    /// Read the whole file through BPF_FILTER. A file cut short or damaged
    /// is a warning with the byte offset, counted in `file_cut_short`;
    /// everything before that point was delivered.
    fn run(
        &mut self,
        stop: &AtomicBool,
        counters: &Counters,
        mut on_frame: impl FnMut(&Frame),
    ) -> Result<(), String> {
        let FileSource { path, file, bpf } = self;
        let ending = file
            .read(stop, |frame| {
                if bpf.as_mut().is_none_or(|bpf| bpf.accepts(frame)) {
                    on_frame(frame)
                } else {
                    Counters::inc(&counters.bpf_filtered)
                }
            })
            .map_err(|e| format!("cannot read capture file {}: {e}", path.display()))?;
        if let Ending::Incomplete { offset, why } = ending {
            log::warn!(
                "capture file {}: stopped at byte offset {offset}: {why}; every whole record before it was used",
                path.display()
            );
            Counters::inc(&counters.file_cut_short);
        }
        Ok(())
    }
}

/// Sleep until the live capture has packets or `ms` milliseconds pass.
fn wait_readable(capture: &Capture<Active>, ms: i32) -> Result<(), String> {
    let mut fds = [PollFd::new(capture, PollFlags::IN)];
    // From i32: the field types differ between 32- and 64-bit targets.
    let timeout = rustix::event::Timespec {
        tv_sec: (ms / 1000).into(),
        tv_nsec: (ms % 1000 * 1_000_000).into(),
    };
    match poll(&mut fds, Some(&timeout)) {
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(e) => Err(format!("poll on capture failed: {e}")),
    }
}

/// Copy libpcap's statistics of a live capture into the counters.
fn copy_stats(capture: &mut Capture<Active>, counters: &Counters) {
    if let Ok(stats) = capture.stats() {
        Counters::set(&counters.pcap_received, u64::from(stats.received));
        Counters::set(&counters.pcap_dropped, u64::from(stats.dropped));
        Counters::set(&counters.pcap_if_dropped, u64::from(stats.if_dropped));
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
