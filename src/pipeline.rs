//! The pipeline: wires the stages together and runs them.
//!
//! One capture thread runs capture → decode → SIP → filter → envelope and
//! pushes envelopes into the [`Queue`]; one publish thread drains it to the
//! broker. Data flows one way. [`Pipeline::handle_frame`] is the whole
//! per-packet path; it allocates nothing.

use crate::buffers::Region;
use crate::capture::{self, Frame};
use crate::config::{Config, ReassemblyLimits, Source};
use crate::counters::Counters;
use crate::decode::{
    self, Context, DecodeError, Decoded, Fragment, LinkType, Segment, Transport, UdpTunnels,
};
use crate::defrag::Defrag;
use crate::envelope::{EnvelopeWriter, Origin, Timestamp, envelope_capacity};
use crate::filter::Filter;
use crate::publish::{self, Settings};
use crate::queue::Queue;
use crate::sctp::SctpReassembler;
use crate::sip::Message;
use crate::tcp::TcpReassembler;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The stages from a captured frame to SIP messages: decode, reassemble
/// (IP fragments, outer and inner, TCP streams, SCTP user messages),
/// recognise SIP. Shared by the agent and `filter-test`.
pub struct Extractor<'c> {
    defrag: Defrag,
    tcp: TcpReassembler,
    sctp: SctpReassembler,
    tunnels: UdpTunnels,
    /// A fragment found inside a reassembled datagram, copied out of the
    /// reassembly slot it came from before it goes back into reassembly;
    /// one slot's size; a [`Region`], resident only once a tunnel carries
    /// fragments.
    inner_fragment: Region,
    counters: &'c Counters,
}

/// MAX_MESSAGE_BYTES's default (src/config.rs).
const DEFAULT_MAX_MESSAGE: usize = 65_535;

impl<'c> Extractor<'c> {
    /// The extractor with the default limits, MAX_MESSAGE_BYTES and no
    /// tunnel ports, as `filter-test` reads a capture without a config.
    pub fn with_defaults(counters: &'c Counters) -> Extractor<'c> {
        Extractor::new(
            &ReassemblyLimits::defaults(),
            DEFAULT_MAX_MESSAGE,
            &UdpTunnels::default(),
            counters,
        )
    }

    /// `tunnels`: the UDP ports peeled as tunnels (TUNNEL_UDP_PORTS).
    pub fn new(
        limits: &ReassemblyLimits,
        max_message: usize,
        tunnels: &UdpTunnels,
        counters: &'c Counters,
    ) -> Extractor<'c> {
        let defrag = Defrag::new(
            limits.frag_datagrams,
            limits.frag_buffer_bytes,
            limits.frag_timeout_ms,
        );
        Extractor {
            inner_fragment: Region::new(defrag.datagram_capacity()),
            defrag,
            tcp: TcpReassembler::new(limits, max_message),
            sctp: SctpReassembler::new(limits, max_message),
            tunnels: tunnels.clone(),
            counters,
        }
    }

    /// Decode one frame with its own link type and hand each SIP message
    /// it completes to `on_message`, with where and when it was captured.
    pub fn extract(&mut self, frame: &Frame, on_message: &mut dyn FnMut(&Origin, &Message<'_>)) {
        let c = self.counters;
        let time = frame.time;
        Counters::inc(&c.packets);
        let sip = &mut recognise(c, on_message);
        // Capture time moves on with every frame, whatever it holds or
        // fails to: a TCP stream waiting on a hole may be due.
        self.tcp.advance(time, c, sip);
        let Some(link) = LinkType::from_pcap(frame.linktype) else {
            return Counters::inc(&c.link_unsupported);
        };
        match decode::decode(link, frame.interface, frame.data, &self.tunnels) {
            Ok(Decoded::Fragment(fragment)) => {
                count_peeled(c, &fragment.context, 0);
                self.reassemble(time, &fragment, sip);
            }
            decoded => settle(&mut self.tcp, &mut self.sctp, c, time, decoded, 0, sip),
        }
    }

    /// Reassemble `fragment`; a datagram it completes is decoded on, and
    /// a fragment found inside (a tunnel fragmented inside and out) goes
    /// back into reassembly. Each pass peels at least one more
    /// encapsulation (a reassembled datagram is fragmented again only
    /// inside a tunnel), so this ends within MAX_ENCAPSULATIONS passes.
    fn reassemble(&mut self, time: Timestamp, fragment: &Fragment<'_>, sip: &mut dyn FnMut(&Origin, &[u8])) {
        let Extractor {
            defrag,
            tcp,
            sctp,
            tunnels,
            inner_fragment,
            counters: c,
        } = self;
        let mut datagram = defrag.add(time, fragment, c);
        while let Some(d) = datagram {
            let peeled = d.context.encapsulations().len();
            let first_seen = d.first_seen;
            match decode::decode_transport(d.context, d.src, d.dst, d.protocol, d.payload, tunnels) {
                Ok(Decoded::Fragment(inner)) => {
                    count_peeled(c, &inner.context, peeled);
                    let len = inner.payload.len();
                    inner_fragment[..len].copy_from_slice(inner.payload);
                    let inner = Fragment {
                        payload: &inner_fragment[..len],
                        ..inner
                    };
                    datagram = defrag.add(first_seen, &inner, c);
                }
                decoded => return settle(tcp, sctp, c, first_seen, decoded, peeled, sip),
            }
        }
    }

    /// Capture time has reached `now` without a frame (a live capture's
    /// idle tick): messages after TCP holes whose wait is over go to
    /// `on_message`.
    pub fn advance(&mut self, now: Timestamp, on_message: &mut dyn FnMut(&Origin, &Message<'_>)) {
        let c = self.counters;
        self.tcp.advance(now, c, &mut recognise(c, on_message));
    }

    /// End of the capture: unfinished datagrams and SCTP user messages
    /// will never complete, and every TCP stream ends; its complete
    /// messages go to `on_message`.
    pub fn finish(&mut self, on_message: &mut dyn FnMut(&Origin, &Message<'_>)) {
        let c = self.counters;
        self.defrag.expire_all(c);
        self.sctp.finish(c);
        self.tcp.finish(c, &mut recognise(c, on_message));
    }
}

/// What a frame or reassembled datagram decoded to, other than a
/// fragment: a segment goes on, anything else is counted. `peeled`: how
/// many of the context's encapsulations were counted before (those of a
/// reassembled datagram's fragments).
fn settle(
    tcp: &mut TcpReassembler,
    sctp: &mut SctpReassembler,
    c: &Counters,
    time: Timestamp,
    decoded: Result<Decoded<'_>, DecodeError>,
    peeled: usize,
    sip: &mut dyn FnMut(&Origin, &[u8]),
) {
    match decoded {
        Ok(Decoded::Segment(segment)) => {
            count_peeled(c, &segment.context, peeled);
            deliver(tcp, c, time, &segment, sip)
        }
        Ok(Decoded::Sctp(packet)) => {
            count_peeled(c, &packet.context, peeled);
            sctp.add(time, &packet, c, sip)
        }
        // A fragment inside a reassembled datagram is taken by
        // `reassemble`; none reaches here from a frame.
        Ok(Decoded::Fragment(_)) | Ok(Decoded::Other) => Counters::inc(&c.not_udp_tcp),
        Ok(Decoded::NotIp) => Counters::inc(&c.tunnel_not_ip),
        Err(DecodeError::Malformed) => Counters::inc(&c.decode_errors),
        Err(DecodeError::ChainTooLong) => Counters::inc(&c.header_chain_too_long),
        Err(DecodeError::Truncated) => Counters::inc(&c.tunnel_truncated),
    }
}

/// Count the encapsulations of `context` after the first `skip`, each
/// under its kind.
fn count_peeled(c: &Counters, context: &Context, skip: usize) {
    for encapsulation in context.encapsulations().iter().skip(skip) {
        Counters::inc(c.peeled(*encapsulation));
    }
}

/// The bytes of one message to a SIP message, counted either way. A UDP
/// payload holds one message, which ends at its Content-Length (RFC 3261
/// 18.3; the bytes after it are counted, not published); a message framed
/// from a TCP stream, or a WebSocket message, is whole, and so is an SCTP
/// user message (RFC 4168 §5: one SIP message each).
fn recognise<'a>(
    c: &'a Counters,
    on_message: &'a mut dyn FnMut(&Origin, &Message<'_>),
) -> impl FnMut(&Origin, &[u8]) + 'a {
    move |origin, raw| {
        let parsed = match origin.transport {
            Transport::Udp => {
                Counters::inc(&c.udp_datagrams);
                Message::parse_datagram(raw)
            }
            Transport::Tcp | Transport::Ws => Message::parse(raw).map(|message| {
                Counters::inc(&c.tcp_messages);
                (message, 0)
            }),
            Transport::Sctp => {
                Counters::inc(&c.sctp_user_messages);
                Message::parse(raw).map(|message| (message, 0))
            }
        };
        let ws = origin.transport == Transport::Ws;
        match parsed {
            Some((message, trailing)) => {
                Counters::inc(&c.sip_messages);
                if ws {
                    Counters::inc(&c.ws_messages);
                }
                Counters::add(&c.udp_trailing_bytes, trailing as u64);
                on_message(origin, &message);
            }
            None => Counters::inc(if ws { &c.ws_not_sip } else { &c.not_sip }),
        }
    }
}

/// A UDP payload goes to the SIP stage as it is; TCP bytes go through the
/// stream reassembler and framer first.
fn deliver(
    tcp: &mut TcpReassembler,
    c: &Counters,
    time: Timestamp,
    segment: &Segment<'_>,
    sip: &mut dyn FnMut(&Origin, &[u8]),
) {
    match segment.tcp {
        None => sip(
            &Origin {
                time,
                context: segment.context,
                transport: segment.transport(),
                src: segment.src,
                dst: segment.dst,
            },
            segment.payload,
        ),
        Some(header) => tcp.add(time, segment, header, c, sip),
    }
}

/// What to do with an envelope when the queue to the broker is full.
#[derive(Debug, Clone, Copy)]
pub enum WhenFull<'a> {
    /// Drop it and count it: a live capture must not fall behind the
    /// kernel, which would drop packets instead.
    Drop,
    /// Wait for room until the flag is set: reading a file loses nothing
    /// by waiting.
    Wait(&'a AtomicBool),
}

/// The per-packet path of the agent, from a captured frame to a queued
/// envelope.
pub struct Pipeline<'q> {
    extractor: Extractor<'q>,
    output: Output<'q>,
}

/// The stages after SIP: filter, envelope, queue.
struct Output<'q> {
    filter: Filter,
    envelopes: EnvelopeWriter,
    queue: &'q Queue,
    when_full: WhenFull<'q>,
    counters: &'q Counters,
}

impl<'q> Pipeline<'q> {
    pub fn new(
        filter: Filter,
        limits: &ReassemblyLimits,
        max_message: usize,
        tunnels: &UdpTunnels,
        queue: &'q Queue,
        when_full: WhenFull<'q>,
        counters: &'q Counters,
    ) -> Pipeline<'q> {
        Pipeline {
            extractor: Extractor::new(limits, max_message, tunnels, counters),
            output: Output {
                filter,
                envelopes: EnvelopeWriter::new(max_message),
                queue,
                when_full,
                counters,
            },
        }
    }

    /// End of the capture: unfinished reassembly will never complete; the
    /// complete messages still held are queued.
    pub fn finish(&mut self) {
        let Pipeline { extractor, output } = self;
        extractor.finish(&mut |origin, message| output.take(origin, message));
    }

    /// Take one captured frame through every stage.
    pub fn handle_frame(&mut self, frame: &Frame) {
        let Pipeline { extractor, output } = self;
        extractor.extract(frame, &mut |origin, message| output.take(origin, message));
    }

    /// Capture time has reached `now` though no frame came (a live
    /// capture's idle tick): see [`Extractor::advance`].
    pub fn advance(&mut self, now: Timestamp) {
        let Pipeline { extractor, output } = self;
        extractor.advance(now, &mut |origin, message| output.take(origin, message));
    }
}

impl Output<'_> {
    /// Filter one message, wrap it in its envelope and queue it.
    fn take(&mut self, origin: &Origin, message: &Message<'_>) {
        let c = self.counters;
        if !self.filter.matches(message) {
            return Counters::inc(&c.filtered_out);
        }
        let raw = message.raw();
        match self.envelopes.write(origin, raw) {
            Ok(envelope) => {
                let queued = match self.when_full {
                    WhenFull::Drop => self.queue.push(envelope),
                    WhenFull::Wait(stop) => self.queue.push_waiting(envelope, stop),
                };
                Counters::inc(if queued { &c.queued } else { &c.dropped_queue_full });
            }
            Err(_) => {
                Counters::inc(&c.dropped_oversize);
                log::debug!(
                    "dropped a {} byte message from {} (MAX_MESSAGE_BYTES)",
                    raw.len(),
                    origin.src
                );
            }
        }
    }
}

/// `filter-test`: for each SIP message of a capture, one line with its
/// time, endpoints, first line and whether `filter` selects it; then counts.
/// `Ok(false)`: the file was cut short or damaged (a warning is logged);
/// the lines cover everything before that point. When `out`'s reader goes
/// away (`| head`) reading stops and the result is `Ok(true)`: what it did
/// not read, it did not want.
pub fn filter_test(
    filter: &Filter,
    file: &std::path::Path,
    out: &mut impl std::io::Write,
) -> Result<bool, RunError> {
    let mut source =
        capture::open(&crate::config::Source::File(file.to_path_buf()), None, 0, 0).map_err(RunError)?;
    let counters = Counters::default();
    let mut extractor = Extractor::with_defaults(&counters);
    let (mut matched, mut total) = (0u64, 0u64);
    let mut written = Ok(());
    let unwritable = AtomicBool::new(false);
    let mut print = |origin: &Origin, message: &Message<'_>| {
        let hit = filter.matches(message);
        total += 1;
        matched += u64::from(hit);
        if written.is_ok() {
            written = writeln!(
                out,
                "{} {} -> {} {} {}",
                String::from_utf8_lossy(&crate::envelope::rfc3339(origin.time)),
                origin.src,
                origin.dst,
                String::from_utf8_lossy(message.first_line()),
                if hit { "MATCH" } else { "no" }
            );
            unwritable.store(written.is_err(), Ordering::Relaxed);
        }
    };
    source
        .run(
            &unwritable,
            &counters,
            |frame| extractor.extract(frame, &mut print),
            |_| {},
        )
        .map_err(RunError)?;
    extractor.finish(&mut print);
    let written = written.and_then(|()| {
        writeln!(
            out,
            "{total} SIP messages: {matched} match, {} do not",
            total - matched
        )
    });
    match written {
        Ok(()) => Ok(Counters::get(&counters.file_cut_short) == 0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(true),
        Err(e) => Err(RunError(format!("cannot write: {e}"))),
    }
}

/// Why the agent stopped with an error.
#[derive(Debug)]
pub struct RunError(pub String);

/// Run the agent until the file ends or `stop` is set; returns the final
/// counters and libpcap's statistics.
pub fn run(config: Config, stop: Arc<AtomicBool>) -> Result<Arc<Counters>, RunError> {
    let mut source = capture::open(
        &config.source,
        config.bpf_filter.as_deref(),
        config.snaplen,
        config.capture_buffer_bytes,
    )
    .map_err(RunError)?;
    let counters = Arc::new(Counters::default());
    let queue = Arc::new(Queue::new(config.queue_bytes));
    let settings = Settings {
        mqtt: config.mqtt,
        max_envelope: envelope_capacity(config.max_message_bytes),
    };
    log::info!(
        "{} starting: source {:?}, topic {:?}",
        crate::envelope::AGENT,
        config.source,
        settings.mqtt.topic
    );

    // Bound here, before any thread starts, so a port in use is a clear
    // start-up error.
    let metrics = config
        .metrics_addr
        .map(|addr| {
            std::net::TcpListener::bind(addr)
                .map_err(|e| RunError(format!("cannot serve metrics on METRICS_ADDR {addr}: {e}")))
        })
        .transpose()?;
    // Everything privileged is open; no other thread exists yet.
    if let Some(run_as) = &config.run_as {
        crate::privileges::drop_to(run_as).map_err(RunError)?;
        log::info!(
            "running as user {} (uid {}, gid {})",
            run_as.user,
            run_as.uid,
            run_as.gid
        );
    }
    let publisher = {
        let (queue, counters, stop) = (queue.clone(), counters.clone(), stop.clone());
        std::thread::Builder::new()
            .name("publish".into())
            .spawn(move || publish::run(&settings, &queue, &counters, &stop, metrics))
            .map_err(|e| RunError(format!("cannot start the publish thread: {e}")))?
    };

    let pipeline = Pipeline::new(
        config.sip_filter,
        &config.reassembly,
        config.max_message_bytes,
        &config.tunnels,
        &queue,
        match config.source {
            Source::File(_) => WhenFull::Wait(&stop),
            Source::Interface(_) => WhenFull::Drop,
        },
        &counters,
    );
    // Both callbacks drive the one pipeline, never at the same time.
    let pipeline = std::cell::RefCell::new(pipeline);
    let captured = source.run(
        &stop,
        &counters,
        |frame| pipeline.borrow_mut().handle_frame(frame),
        |now| pipeline.borrow_mut().advance(now),
    );
    let mut pipeline = pipeline.into_inner();
    pipeline.finish();
    queue.close();
    let published = publisher
        .join()
        .map_err(|_| RunError("the publish thread panicked".into()))?;
    Counters::add(&counters.undelivered_at_exit, queue.depth().0 as u64);
    captured.and(published).map_err(RunError)?;
    Ok(counters)
}
