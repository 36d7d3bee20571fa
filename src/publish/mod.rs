//! Publish stage: envelopes from the queue to the broker, MQTT v5 QoS 1.
//!
//! Runs on its own thread with a single-threaded tokio runtime driving
//! minimq (0.13, async; docs/design.md says why this version). Up to
//! MAX_INFLIGHT_MESSAGES publishes are outstanding at once (at most
//! [`MAX_IN_FLIGHT`], fewer when the broker's Receive Maximum says so), in a
//! transmit buffer of [`TX_BUFFER_BYTES`] or more; an envelope stays
//! in the queue until the PUBACK of the publish that carried it arrives,
//! and is then counted `acknowledged`. A publish carries one envelope, or
//! with BATCH_MAX_MESSAGES > 1 a JSON array of several (one PUBACK settles
//! them all), within the broker's Maximum Packet Size. When the broker is
//! unreachable it reconnects with exponential backoff and jitter while
//! capture goes on filling the queue; a connection resets the backoff only
//! once it has stayed up [`HEALTHY_AFTER`], so no broker behaviour makes it
//! reconnect more than a few times a minute. Each address of the broker's
//! name is tried in turn. Failures are logged in words that name the cause
//! (another client with the same CLIENT_ID, a broker without MQTT 5, ...),
//! at most one line a minute per cause.
//!
//! What it does not do: subscribe, or accept anything from the broker. It
//! publishes to TOPIC, and its own status and telemetry topics.

mod heard;
mod link;
mod retry;
pub mod tls;
pub mod websocket;
mod window;

use crate::config::{Broker, Mqtt};
use crate::counters::Counters;
use crate::queue::{PayloadSize, Queue};
use crate::telemetry::{REPORT_CAPACITY, Report};
use core::cell::Cell;
use heard::{Connack, Heard};
use link::{Coalescing, Link};
use minimq::{
    Buffers, ConfigBuilder, ConnectEvent, Connection, Op, PeerError, Publication, QoS, ResourceError,
    Session, Will,
};
use retry::{Backoff, Throttle};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use window::{Sent, Window};

/// The most publishes awaiting their PUBACK at once that MAX_INFLIGHT_MESSAGES
/// may ask for: minimq's `MAX_RETAINED` (8 in minimq 0.13.5; 128 in the
/// copy in vendor/minimq, which says why). minimq also takes the broker's
/// Receive Maximum when lower (MQTT 5 §3.2.2.3.3).
pub const MAX_IN_FLIGHT: usize = 128;
/// minimq's transmit buffer, which holds every publish until its PUBACK:
/// at least this, and at least `TX_PAYLOADS` (3) of the largest payload. It
/// bounds the bytes in flight as MAX_INFLIGHT_MESSAGES bounds the count; a
/// publish that does not fit waits for acknowledgements. Pages become
/// resident only as publishes reach them (minimq's copy keeps packets in a
/// ring, vendor/README.md, so in a busy run all of it).
pub const TX_BUFFER_BYTES: usize = 512 * 1024;
/// How many of the largest payloads (with their PUBLISH header) the transmit
/// buffer holds at least: minimq's ring offers a packet at least half the
/// free space while it has not wrapped (vendor/README.md), so with one of
/// them in flight the next still fits.
const TX_PAYLOADS: usize = 3;
/// Receive buffer: the broker only sends small control packets.
const RX_BYTES: usize = 1024;
/// MQTT keepalive, seconds.
const KEEPALIVE_S: u16 = 30;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TCP connect to one of several addresses of the broker may
/// take before the next address is tried.
const ADDRESS_TIMEOUT: Duration = Duration::from_secs(3);
/// A connection counts as healthy once it has stayed up this long. Only a
/// healthy connection starts the backoff again from `BACKOFF_FIRST` (and
/// is followed, when lost, by an immediate reconnect): a broker that
/// accepts and then drops the agent — another client with the same
/// CLIENT_ID, a topic it refuses — is retried with a growing delay, so at
/// most about four connections a minute once the backoff is at its maximum.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// After a stop request, how long unsent and unacknowledged envelopes may
/// still be delivered before the agent exits anyway.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// How often an idle publisher looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(250);

/// The largest payload: one envelope, or a batch (whose array brackets an
/// envelope larger than BATCH_MAX_BYTES sent alone).
fn payload_capacity(settings: &Settings) -> usize {
    match settings.mqtt.batch {
        None => settings.max_envelope,
        Some(batch) => batch.max_bytes.max(settings.max_envelope + 2),
    }
}

/// Bytes of minimq's transmit buffer: [`TX_BUFFER_BYTES`], or more when
/// the largest payload needs it.
fn tx_buffer_bytes(settings: &Settings) -> usize {
    TX_BUFFER_BYTES
        .max(TX_PAYLOADS * (payload_capacity(settings) + PUBLISH_OVERHEAD + settings.mqtt.topic.len()))
}

/// What the publisher needs to know.
pub struct Settings {
    pub mqtt: Mqtt,
    /// The largest envelope the queue can hold.
    pub max_envelope: usize,
}

type Conn<'a, 'buf> = Connection<'a, 'buf, Coalescing>;

/// Publish until the queue is closed and drained, or until `stop` has been
/// set for [`DRAIN_GRACE`].
/// With `metrics`, the Prometheus endpoint is served on the same runtime.
pub fn run(
    settings: &Settings,
    queue: &Queue,
    counters: &Counters,
    stop: &AtomicBool,
    metrics: Option<std::net::TcpListener>,
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start the publisher runtime: {e}"))?;
    let result = runtime.block_on(async {
        let publisher = Publisher::new(settings, queue, counters, stop).run();
        match metrics {
            None => publisher.await,
            Some(listener) => tokio::select! {
                done = publisher => done,
                failed = crate::metrics::serve(listener, counters) => {
                    failed.map_err(|e| format!("metrics endpoint: {e}"))
                }
            },
        }
    });
    // A name lookup abandoned at a stop may still run on a blocking
    // thread: do not wait for it.
    runtime.shutdown_background();
    result
}

/// Resolves when the grace period after a stop request is over: at
/// `give_up_at` when it is known, else [`DRAIN_GRACE`] after `stop` is seen.
async fn given_up(stop: &AtomicBool, mut give_up_at: Option<Instant>) {
    loop {
        match give_up_at {
            Some(at) => return sleep_until(at).await,
            None if stop.load(Ordering::Relaxed) => give_up_at = Some(Instant::now() + DRAIN_GRACE),
            None => sleep(STOP_CHECK).await,
        }
    }
}

struct Publisher<'a> {
    settings: &'a Settings,
    queue: &'a Queue,
    counters: &'a Counters,
    stop: &'a AtomicBool,
    /// The payloads sent and not yet settled.
    window: Window,
    /// The next payload, copied out of the queue for minimq to encode.
    /// Mapped: only as much as the largest payload so far is resident.
    scratch: crate::buffers::Region,
    /// Set when a stop request was first seen.
    give_up_at: Option<Instant>,
    started: Instant,
    next_telemetry: Option<Instant>,
    report: Vec<u8>,
    /// What the broker said on the current connection.
    heard: Rc<Cell<Heard>>,
    /// Nothing can be sent until PUBACKs come: the link acknowledges what
    /// it reads at once (see [`Coalescing`]).
    blocked: Rc<Cell<bool>>,
    /// The address of the current or last connection.
    peer: Option<SocketAddr>,
    throttle: Throttle,
    /// Publishes handed to minimq so far: orders envelopes, status and
    /// telemetry, whose PUBACKs come in the same order.
    sent: u64,
    /// The status and telemetry publishes awaiting their PUBACK, with
    /// their place in that order (the status with what it says).
    status_op: Option<(Op, u64, &'static [u8])>,
    telemetry_op: Option<(Op, u64)>,
    /// The largest payload the broker takes, from the Maximum Packet Size
    /// of its CONNACK (`usize::MAX` when it announces none).
    payload_limit: usize,
    /// After minimq refused a batch as too large: at most this many
    /// envelopes in the next payload, halved at each refusal.
    split: Option<usize>,
    /// Connections in a row the broker closed before they turned healthy.
    short_closes: u32,
}

const ONLINE: &[u8] = b"online";
const OFFLINE: &[u8] = b"offline";

/// How long the broker keeps the session after a disconnect, so that a
/// reconnect resumes it and minimq replays its in-flight publishes itself.
const SESSION_EXPIRY_S: u32 = 3600;

type MqttError = minimq::Error<std::io::Error>;

/// Bytes of a QoS 1 PUBLISH besides its topic and payload (MQTT 5 §3.3):
/// fixed header with the longest Remaining Length, topic length, packet
/// identifier, empty properties.
const PUBLISH_OVERHEAD: usize = 1 + 4 + 2 + 2 + 1;

/// MQTT 5 reason code 0x8E, Session taken over (§3.14.2.1).
const SESSION_TAKEN_OVER: u8 = 0x8e;

/// Why serving a connection ended.
enum Ended {
    /// Everything is delivered, or the grace period after a stop is over.
    Done,
    /// The connection broke; reconnect.
    Lost(String),
}

/// One broker connection's standing, for the backoff and the status.
struct Standing {
    since: Instant,
    /// Stayed up [`HEALTHY_AFTER`].
    healthy: bool,
    /// `online` was published on it.
    said_online: bool,
}

impl<'a> Publisher<'a> {
    fn new(settings: &'a Settings, queue: &'a Queue, counters: &'a Counters, stop: &'a AtomicBool) -> Self {
        Publisher {
            settings,
            queue,
            counters,
            stop,
            window: Window::new(
                settings.mqtt.max_in_flight,
                settings.mqtt.batch.map(|b| b.max_delay),
            ),
            scratch: crate::buffers::Region::new(payload_capacity(settings)),
            give_up_at: None,
            started: Instant::now(),
            next_telemetry: settings
                .mqtt
                .telemetry_interval
                .map(|every| Instant::now() + every),
            report: vec![0; REPORT_CAPACITY],
            heard: Rc::default(),
            blocked: Rc::default(),
            peer: None,
            throttle: Throttle::new(),
            sent: 0,
            status_op: None,
            telemetry_op: None,
            payload_limit: usize::MAX,
            split: None,
            short_closes: 0,
        }
    }

    async fn run(mut self) -> Result<(), String> {
        let mut rx = vec![0u8; RX_BYTES];
        // Mapped, so that only what in-flight publishes reach becomes resident.
        let mut tx = crate::buffers::Region::new(tx_buffer_bytes(self.settings));
        let mut config = ConfigBuilder::new(Buffers::new(&mut rx, &mut tx[..]));
        if let Some((user, password)) = &self.settings.mqtt.credentials {
            config = config
                .auth(user, password)
                .map_err(|e| format!("USERNAME {user:?}: {e}"))?;
        }
        let mut session = Session::new(
            config
                .client_id(&self.settings.mqtt.client_id)
                .map_err(|e| format!("CLIENT_ID {:?}: {e}", self.settings.mqtt.client_id))?
                .keepalive_interval(KEEPALIVE_S)
                .session_expiry_interval(SESSION_EXPIRY_S)
                .will(
                    Will::new(&self.settings.mqtt.status_topic, OFFLINE, &[])
                        .map_err(|e| format!("STATUS_TOPIC {:?}: {e}", self.settings.mqtt.status_topic))?
                        .retained()
                        .qos(QoS::AtLeastOnce),
                )
                .map_err(|e| format!("STATUS_TOPIC {:?}: {e}", self.settings.mqtt.status_topic))?,
        );
        let broker = self.settings.mqtt.broker.to_string();
        let mut backoff = Backoff::new();
        let mut connected_before = false;
        // `online` goes out on the first connection and on the first after
        // a healthy one; after short-lived ones, when one turns healthy.
        let mut say_online = true;
        let mut wait = None;
        while !self.finished() {
            if let Some(wait) = wait.take() {
                self.sleep_unless_stopping(wait).await;
                continue;
            }
            // Resolving, TCP, TLS and CONNECT all give way to a stop
            // request once its grace period is over.
            let (stop, give_up_at) = (self.stop, self.give_up_at);
            let attempt = tokio::select! {
                attempt = self.connect(&mut session) => attempt,
                () = given_up(stop, give_up_at) => break,
            };
            let mut conn = match attempt {
                Ok(conn) => conn,
                Err(e) => {
                    // The broker went away, rather than another client
                    // taking its connections.
                    self.short_closes = 0;
                    let delay = backoff.wait();
                    self.throttle.log(
                        log::Level::Warn,
                        &e,
                        format_args!("broker {broker}: {e}; retrying in {} ms", delay.as_millis()),
                    );
                    wait = Some(delay);
                    continue;
                }
            };
            self.payload_limit = match self.heard.get().connack {
                Some(Connack::V5 {
                    max_packet_size: Some(max),
                    ..
                }) => (max as usize).saturating_sub(PUBLISH_OVERHEAD + self.settings.mqtt.topic.len()),
                _ => usize::MAX,
            };
            if let Some(batch) = self.settings.mqtt.batch {
                self.queue.set_payload_size(PayloadSize {
                    envelopes: batch.max_messages,
                    bytes: batch.max_bytes.min(self.payload_limit),
                });
            }
            self.window.open(match self.heard.get().connack {
                Some(Connack::V5 {
                    receive_maximum: Some(most),
                    ..
                }) => self.settings.mqtt.max_in_flight.min(usize::from(most)),
                _ => self.settings.mqtt.max_in_flight,
            });
            let mut standing = Standing {
                since: Instant::now(),
                healthy: false,
                said_online: false,
            };
            // Which address of a name answered.
            let named = self
                .settings
                .mqtt
                .broker
                .host
                .parse::<std::net::IpAddr>()
                .is_err();
            let at = match self.peer {
                Some(address) if named => format!(" at {address}"),
                _ => String::new(),
            };
            if connected_before {
                Counters::inc(&self.counters.reconnects);
                self.throttle.log(
                    log::Level::Info,
                    "reconnected",
                    format_args!("reconnected to broker {broker}{at}"),
                );
            } else {
                log::info!(
                    "connected to broker {broker}{at} as {}",
                    self.settings.mqtt.client_id
                );
            }
            connected_before = true;
            if conn.connect_event() == ConnectEvent::Reconnected {
                // minimq sends the publishes still without PUBACK again
                // itself, with DUP set: the subscriber may see them twice.
                let again: usize = self
                    .window
                    .iter()
                    .filter(|sent| sent.op.is_some_and(|op| conn.is_pending(&op)))
                    .map(|sent| sent.envelopes)
                    .sum();
                if again > 0 {
                    Counters::add(&self.counters.resent_on_resume, again as u64);
                    self.throttle.log(
                        log::Level::Info,
                        "resumed the session",
                        format_args!("resumed the session: {again} unacknowledged envelopes sent again"),
                    );
                }
            }
            if conn.connect_event() == ConnectEvent::Connected && !self.window.is_empty() {
                // The broker has no session to resume (restarted without
                // persistence, or it expired): what it had not acknowledged
                // is sent again.
                self.window.clear();
                let again = self.queue.rewind();
                Counters::add(&self.counters.republished, again as u64);
                self.throttle.log(
                    log::Level::Info,
                    "lost the session",
                    format_args!("broker lost the session: sending {again} unacknowledged envelopes again"),
                );
            }
            if say_online {
                self.say_online(&mut conn, &mut standing).await;
                say_online = !standing.said_online;
            }
            match self.serve(&mut conn, &mut standing).await {
                Ended::Done => {
                    // A clean DISCONNECT suppresses the Will: say it here.
                    let _ = timeout(STOP_CHECK, self.publish_status(&mut conn, OFFLINE)).await;
                    let _ = timeout(STOP_CHECK, conn.disconnect()).await;
                    let _ = timeout(STOP_CHECK, conn.into_inner().drain()).await;
                    break;
                }
                Ended::Lost(e) if standing.healthy => {
                    // Up long enough: the broker restarted or the network
                    // broke. Reconnect at once, and say online again (the
                    // broker may have published the Will).
                    backoff.reset();
                    say_online = true;
                    self.throttle
                        .log(log::Level::Warn, &e, format_args!("lost broker {broker}: {e}"));
                }
                Ended::Lost(e) => {
                    let delay = backoff.wait();
                    let up = standing.since.elapsed().as_millis();
                    self.throttle.log(
                        log::Level::Warn,
                        &e,
                        format_args!(
                            "lost broker {broker} {up} ms after connecting: {e}; retrying in {} ms",
                            delay.as_millis()
                        ),
                    );
                    wait = Some(delay);
                }
            }
        }
        Ok(())
    }

    /// Publish the retained `online` status, once per connection.
    async fn say_online(&mut self, conn: &mut Conn<'_, '_>, standing: &mut Standing) {
        match self.publish_status(conn, ONLINE).await {
            Ok(()) => standing.said_online = true,
            // No room right now (a resumed session replaying): the Will
            // still stands for the agent; say online later.
            Err(e) => log::debug!("status not published: {e}"),
        }
    }

    /// Resolve the broker's name and connect over TCP to each address in
    /// turn, in the order the resolver gives them (RFC 6724's, which
    /// getaddrinfo applies), until one accepts; then TLS and MQTT CONNECT.
    /// Every address but the last gets [`ADDRESS_TIMEOUT`], so a silent
    /// IPv6 address delays an IPv4 one by that at most.
    async fn connect<'s, 'buf>(&mut self, session: &'s mut Session<'buf>) -> Result<Conn<'s, 'buf>, String> {
        let Broker {
            host,
            port,
            websocket,
            ..
        } = &self.settings.mqtt.broker;
        let addresses: Vec<SocketAddr> =
            timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((host.as_str(), *port)))
                .await
                .map_err(|_| "resolving the name timed out".to_string())?
                .map_err(|e| format!("cannot resolve: {e}"))?
                .collect();
        let mut failures = Vec::new();
        let mut connected = None;
        for (i, &address) in addresses.iter().enumerate() {
            let limit = if i + 1 < addresses.len() {
                ADDRESS_TIMEOUT
            } else {
                CONNECT_TIMEOUT
            };
            match timeout(limit, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => {
                    connected = Some(stream);
                    self.peer = Some(address);
                    break;
                }
                Ok(Err(e)) => failures.push(format!("{address}: {e}")),
                Err(_) => failures.push(format!("{address}: timed out")),
            }
        }
        let Some(stream) = connected else {
            return Err(match failures.is_empty() {
                true => "the name has no address".into(),
                false => format!("TCP connect: {}", failures.join("; ")),
            });
        };
        let _ = stream.set_nodelay(true);
        let socket = rustix::io::dup(&stream).ok();
        let mut link: Link = match &self.settings.mqtt.tls {
            None => Box::new(stream),
            Some(tls) => {
                let stream = timeout(CONNECT_TIMEOUT, tls::connect(tls, stream))
                    .await
                    .map_err(|_| "TLS handshake timed out".to_string())?
                    .map_err(|e| tls::describe(&e))?;
                Box::new(stream)
            }
        };
        if let Some(path) = websocket {
            let tls = self.settings.mqtt.tls.is_some();
            link = Box::new(
                timeout(CONNECT_TIMEOUT, websocket::connect(link, host, *port, path, tls))
                    .await
                    .map_err(|_| "WebSocket handshake timed out".to_string())??,
            );
        }
        self.heard.set(Heard::default());
        self.blocked.set(false);
        timeout(
            CONNECT_TIMEOUT,
            session.connect(Coalescing::new(
                link,
                socket,
                self.heard.clone(),
                self.blocked.clone(),
            )),
        )
        .await
        .map_err(|_| "MQTT CONNECT timed out".to_string())?
        .map_err(|e| self.connect_refused(e))
    }

    /// Why the broker did not accept CONNECT, in words. A broker that
    /// speaks only MQTT 3.1.1 either answers with a 3.1.1 CONNACK (return
    /// code 1, unacceptable protocol version: aedes) or closes the socket
    /// without a word (RabbitMQ before 3.13): both are named, as
    /// `mosquitto_pub -V mqttv5` names them.
    fn connect_refused(&self, e: MqttError) -> String {
        let heard = self.heard.get();
        if let Some(Connack::V3 { return_code }) = heard.connack {
            let meaning = match return_code {
                1 => ", unacceptable protocol version",
                _ => "",
            };
            return format!(
                "the broker answered with an MQTT 3.1.1 CONNACK (return code {return_code}{meaning}): \
the broker appears not to support MQTT 5"
            );
        }
        let closed = match &e {
            minimq::Error::Disconnected => true,
            minimq::Error::Transport(io) => matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        };
        match e {
            minimq::Error::Disconnected if heard.disconnect == Some(SESSION_TAKEN_OVER) => {
                Counters::inc(&self.counters.client_id_conflicts);
                self.taken_over()
            }
            _ if closed && heard.packets == 0 => {
                "the broker closed the connection without answering CONNECT: \
the broker appears not to support MQTT 5 (or refuses this client without saying why)"
                    .into()
            }
            // A broker that refuses the client certificate says so on the
            // first read after the TLS 1.3 handshake.
            minimq::Error::Transport(io) => tls::describe(&io),
            minimq::Error::Peer(PeerError::Rejected(reason)) => {
                format!("broker refused the connection: {reason:?}")
            }
            other => format!("MQTT CONNECT: {other:?}"),
        }
    }

    /// What to say when the broker hands the session to another client.
    fn taken_over(&self) -> String {
        format!(
            "the broker gave the session to another client (DISCONNECT 0x8E, session taken over): \
another client is using CLIENT_ID {:?}",
            self.settings.mqtt.client_id
        )
    }

    /// Why a connection broke, in words: the same words for the same cause
    /// (the log throttle counts by them). Connections the broker closes
    /// before they turn healthy, twice or more in a row with the broker
    /// accepting each next one, are most often another client with the
    /// same CLIENT_ID taking the session over (mosquitto 2.0 closes the
    /// socket without a DISCONNECT): that is said, and counted, plainly.
    fn lost_cause(&mut self, e: MqttError, standing: &Standing) -> String {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
        let closed = match &e {
            minimq::Error::Disconnected | minimq::Error::WriteZero => true,
            minimq::Error::Transport(io) => {
                matches!(
                    io.kind(),
                    ConnectionReset | BrokenPipe | ConnectionAborted | UnexpectedEof
                )
            }
            _ => false,
        };
        match self.heard.get().disconnect {
            Some(SESSION_TAKEN_OVER) => {
                Counters::inc(&self.counters.client_id_conflicts);
                return self.taken_over();
            }
            Some(code) => {
                return format!(
                    "the broker disconnected the agent: reason 0x{code:02X} ({:?})",
                    minimq::ReasonCode::from(code)
                );
            }
            None => {}
        }
        let short = closed && !standing.healthy;
        self.short_closes = if short { self.short_closes + 1 } else { 0 };
        match e {
            // Twice in a row, the broker accepting the connection between:
            // a broker that restarts refuses the next connection instead.
            _ if short && self.short_closes >= 2 => {
                Counters::inc(&self.counters.client_id_conflicts);
                format!(
                    "the broker closed the connection soon after accepting it, again: another client is \
probably using CLIENT_ID {:?} (each connection takes the session over from the other)",
                    self.settings.mqtt.client_id
                )
            }
            _ if short => "the broker closed the connection soon after accepting it".into(),
            _ if closed => "the broker closed the connection".into(),
            minimq::Error::Transport(io) => format!("connection failed: {io}"),
            minimq::Error::Peer(PeerError::InvalidPacket) => "the broker sent an invalid MQTT packet".into(),
            other => format!("{other:?}"),
        }
    }

    /// Publish the retained status. Not tracked in `in_flight`, which
    /// mirrors the store of envelopes.
    async fn publish_status(&mut self, conn: &mut Conn<'_, '_>, status: &'static [u8]) -> Result<(), String> {
        let publication = Publication::bytes(&self.settings.mqtt.status_topic, status)
            .qos(QoS::AtLeastOnce)
            .retain();
        let op = conn.publish(publication).await.map_err(|e| format!("{e:?}"))?;
        self.sent += 1;
        self.status_op = op.map(|op| (op, self.sent, status));
        Ok(())
    }

    /// Publish a telemetry report when one is due (QoS 1, not retained,
    /// untracked like the status). A report that cannot go now is skipped.
    async fn publish_telemetry_if_due(&mut self, conn: &mut Conn<'_, '_>) {
        let (Some(due), Some(every)) = (self.next_telemetry, self.settings.mqtt.telemetry_interval) else {
            return;
        };
        if Instant::now() < due {
            return;
        }
        self.next_telemetry = Some(due.max(Instant::now() - every) + every);
        let report = Report {
            counters: self.counters,
            uptime_s: self.started.elapsed().as_secs(),
        };
        let Ok(json) = report.write(&mut self.report) else {
            return log::warn!("telemetry report does not fit its buffer");
        };
        let publication = Publication::bytes(&self.settings.mqtt.telemetry_topic, json).qos(QoS::AtLeastOnce);
        match conn.publish(publication).await {
            Ok(op) => {
                self.sent += 1;
                self.telemetry_op = op.map(|op| (op, self.sent));
            }
            Err(e) => log::debug!("telemetry not published: {e:?}"),
        }
    }

    /// Publish from the queue and collect acknowledgements until the
    /// connection breaks or the work is done.
    async fn serve(&mut self, conn: &mut Conn<'_, '_>, standing: &mut Standing) -> Ended {
        // One timer for the whole connection, moved only when it has fired
        // or a batch falls due before it: setting a tokio timer per turn of
        // the loop cost more instructions than the publish.
        let wake = sleep_until(self.next_wake());
        tokio::pin!(wake);
        loop {
            if !standing.healthy && standing.since.elapsed() >= HEALTHY_AFTER {
                standing.healthy = true;
                if !standing.said_online {
                    self.say_online(conn, standing).await;
                }
            }
            self.retire(conn);
            let (envelopes, bytes) = self.queue.depth();
            Counters::set(&self.counters.store_envelopes, envelopes as u64);
            Counters::set(&self.counters.store_bytes, bytes as u64);
            Counters::set(&self.counters.in_flight, self.window.len() as u64);
            self.publish_telemetry_if_due(conn).await;
            if let Err(e) = self.publish_queued(conn).await {
                return Ended::Lost(self.lost_cause(e, standing));
            }
            if self.finished() {
                return Ended::Done;
            }
            let room = self.window.has_room(conn.can_publish(QoS::AtLeastOnce));
            self.blocked.set(!room);
            let next_wake = self.next_wake();
            if wake.is_elapsed() || next_wake < wake.deadline() {
                wake.as_mut().reset(next_wake);
            }
            let polled = tokio::select! {
                polled = conn.poll() => polled.map(|_| ()),
                // A window waiting to refill is woken by PUBACKs or its
                // delay, never by the queue: a push cannot make it due.
                () = self.queue.ready(), if room && !self.window.waiting_to_refill() => Ok(()),
                () = &mut wake => Ok(()),
            };
            match polled {
                Ok(()) => {}
                // A PUBACK with a failure reason: that envelope is settled,
                // not delivered.
                Err(minimq::Error::Peer(PeerError::Rejected(reason))) if conn.is_connected() => {
                    self.settle_rejected(conn, reason);
                }
                Err(e) => return Ended::Lost(self.lost_cause(e, standing)),
            }
        }
    }

    /// Hand queued envelopes to minimq while it has room, from when a
    /// refill is due (see [`Window::may_refill`]) until the window is full.
    async fn publish_queued(&mut self, conn: &mut Conn<'_, '_>) -> Result<(), MqttError> {
        if !self.window.may_refill(conn.can_publish(QoS::AtLeastOnce)) {
            return Ok(());
        }
        let finishing = self.queue.is_closed() || self.give_up_at.is_some();
        while self.window.has_room(conn.can_publish(QoS::AtLeastOnce))
            && self.window.batch_due(|| self.queue.unsent(), finishing)
        {
            let (envelopes, len) = self.fill_payload();
            if envelopes == 0 {
                return Ok(());
            }
            let publication =
                Publication::bytes(&self.settings.mqtt.topic, &self.scratch[..len]).qos(QoS::AtLeastOnce);
            match conn.publish(publication).await {
                Ok(op) => {
                    self.split = None;
                    self.queue.mark_sent(envelopes);
                    Counters::add(&self.counters.published, envelopes as u64);
                    // QoS 1 always has an operation; has_room() guaranteed a slot.
                    self.sent += 1;
                    self.window.push(Sent {
                        op,
                        envelopes,
                        order: self.sent,
                        rejected: false,
                    });
                }
                Err(minimq::PubError::Session(minimq::Error::NotReady))
                | Err(minimq::PubError::Session(minimq::Error::Resource(ResourceError::InflightExhausted))) =>
                {
                    return Ok(());
                }
                // The transmit buffer is taken by publishes in flight: their
                // PUBACKs make room (tx_buffer_bytes holds any payload alone).
                // minimq says so as a payload error when the PUBLISH header
                // fits but the payload does not, as BufferTooSmall when not
                // even the header does.
                Err(minimq::PubError::Payload(()))
                | Err(minimq::PubError::Session(minimq::Error::Resource(ResourceError::BufferTooSmall)))
                    if !conn.session().is_publish_quiescent() =>
                {
                    self.window.set_tx_full();
                    return Ok(());
                }
                Err(minimq::PubError::Session(minimq::Error::Resource(ResourceError::PacketTooLarge)))
                    if envelopes > 1 =>
                {
                    // Over the broker's limit although the batch kept to
                    // it: send the same envelopes in smaller batches.
                    self.split = Some(envelopes / 2);
                }
                Err(e @ minimq::PubError::Payload(()))
                | Err(e @ minimq::PubError::Session(minimq::Error::Resource(_))) => {
                    // Too large for the broker's Maximum Packet Size or our
                    // buffer: retrying cannot help.
                    self.queue.mark_sent(envelopes);
                    self.window.push(Sent {
                        op: None,
                        envelopes,
                        order: self.sent,
                        rejected: true,
                    });
                    log::warn!("payload of {len} bytes ({envelopes} envelopes) refused: {e}");
                }
                Err(minimq::PubError::Session(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// When the serve loop must look again without being woken: for the
    /// stop flag, or when a refill or a waiting batch falls due.
    fn next_wake(&self) -> Instant {
        let check = Instant::now() + STOP_CHECK;
        self.window.deadline().map_or(check, |at| at.min(check))
    }

    /// Copy the next payload out of the queue into `scratch`: the oldest
    /// unsent envelope, or with batching a JSON array of the oldest ones
    /// within BATCH_MAX_MESSAGES, BATCH_MAX_BYTES and the broker's Maximum
    /// Packet Size (an envelope larger than that goes alone). Returns the
    /// envelopes taken and the length.
    fn fill_payload(&mut self) -> (usize, usize) {
        let batch = self.settings.mqtt.batch;
        let (max_messages, max_bytes) = batch.map_or((1, usize::MAX), |b| {
            (
                self.split.unwrap_or(b.max_messages),
                b.max_bytes.min(self.payload_limit),
            )
        });
        let array = batch.is_some();
        let out = &mut self.scratch;
        let mut len = 0;
        if array {
            out[0] = b'[';
            len = 1;
        }
        let mut taken = 0;
        self.queue.peek_unsent(|first, second| {
            let comma = usize::from(taken > 0);
            let end = len + comma + first.len() + second.len();
            let limit = if taken == 0 { out.len() } else { max_bytes };
            // Leave room for the closing bracket.
            if taken == max_messages || end + usize::from(array) > limit {
                return false;
            }
            if comma == 1 {
                out[len] = b',';
            }
            let at = len + comma;
            out[at..at + first.len()].copy_from_slice(first);
            out[at + first.len()..end].copy_from_slice(second);
            (len, taken) = (end, taken + 1);
            true
        });
        if array && taken > 0 {
            out[len] = b']';
            len += 1;
        }
        (taken, len)
    }

    /// Settle the oldest payloads whose PUBACK arrived, in order, removing
    /// their envelopes from the store.
    fn retire(&mut self, conn: &Conn<'_, '_>) {
        if self.status_op.is_some_and(|(op, ..)| conn.is_complete(&op)) {
            self.status_op = None;
        }
        if self.telemetry_op.is_some_and(|(op, _)| conn.is_complete(&op)) {
            self.telemetry_op = None;
        }
        while let Some(settled) = self.window.pop_settled(|op| conn.is_complete(op)) {
            let counter = match settled.rejected {
                true => &self.counters.rejected,
                false => &self.counters.acknowledged,
            };
            Counters::add(counter, settled.envelopes as u64);
            self.queue.acknowledge_oldest(settled.envelopes);
        }
    }

    /// A PUBACK just carried a failure reason. PUBACKs come in the order
    /// of the publishes, so it is for the latest sent of those whose
    /// PUBACK has arrived and that are not settled yet: a payload of
    /// envelopes (counted `rejected`), the retained status or a telemetry
    /// report. The log says which.
    fn settle_rejected(&mut self, conn: &Conn<'_, '_>, reason: minimq::ReasonCode) {
        let arrived = |op: &Op| conn.is_complete(op);
        let envelopes = self.window.latest_arrived(arrived);
        let status = self.status_op.filter(|(op, ..)| arrived(op));
        let telemetry = self.telemetry_op.filter(|(op, _)| arrived(op));
        let latest = [
            envelopes,
            status.map(|(_, order, _)| order),
            telemetry.map(|(_, order)| order),
        ]
        .into_iter()
        .flatten()
        .max();
        let (line, cause) = match (envelopes, status, telemetry) {
            (Some(order), ..) if Some(order) == latest => {
                let count = self.window.reject(order);
                (
                    format!("broker rejected {count} envelopes: {reason:?}"),
                    "envelope",
                )
            }
            (_, Some((_, order, said)), _) if Some(order) == latest => {
                self.status_op = None;
                (
                    format!(
                        "broker rejected the retained status {:?} on STATUS_TOPIC {:?}: {reason:?}",
                        String::from_utf8_lossy(said),
                        self.settings.mqtt.status_topic
                    ),
                    "status",
                )
            }
            (.., Some(_)) => {
                self.telemetry_op = None;
                (
                    format!(
                        "broker rejected a telemetry report on TELEMETRY_TOPIC {:?}: {reason:?}",
                        self.settings.mqtt.telemetry_topic
                    ),
                    "telemetry",
                )
            }
            _ => (format!("broker rejected a publish: {reason:?}"), "publish"),
        };
        self.throttle
            .log(log::Level::Warn, &format!("rejected {cause} {reason:?}"), line);
        self.retire(conn);
    }

    /// Done when the queue is closed and everything in it was acknowledged,
    /// or when the grace period after a stop request has passed.
    fn finished(&mut self) -> bool {
        if self.stop.load(Ordering::Relaxed) && self.give_up_at.is_none() {
            self.give_up_at = Some(Instant::now() + DRAIN_GRACE);
        }
        let drained = self.queue.is_closed() && self.queue.depth().0 == 0 && self.window.is_empty();
        drained || self.give_up_at.is_some_and(|at| Instant::now() >= at)
    }

    async fn sleep_unless_stopping(&mut self, wait: Duration) {
        let until = Instant::now() + wait;
        while Instant::now() < until && !self.finished() {
            sleep(STOP_CHECK.min(until - Instant::now())).await;
        }
    }
}
