//! The in-flight window: the payloads handed to minimq and not yet settled,
//! and when the next one may go.
//!
//! The publisher asks it whether a payload may go on this turn of its
//! serve loop ([`Window::may_refill`], [`Window::batch_due`]) and by when
//! to look again without being woken ([`Window::deadline`]); it records
//! each payload sent ([`Window::push`]) and takes back the oldest ones once
//! settled ([`Window::pop_settled`]). PUBACKs come in the order of the
//! publishes (MQTT 5 §4.6), so payloads settle oldest first.
//!
//! What it does not do: talk to minimq or the broker, or touch the queue's
//! bytes. The publisher passes in what minimq says (a publish complete, a
//! QoS 1 publish possible now) and what the queue holds.

use minimq::Op;
use std::time::Duration;
use tokio::time::Instant;

/// The longest a window with room waits to be refilled in a group
/// ([`Window::may_refill`]).
const REFILL_DELAY: Duration = Duration::from_millis(1);
/// The smallest group of publishes a window is refilled with
/// ([`Window::may_refill`]): windows of 64 and more refill by quarters.
const REFILL_GROUP_MIN: usize = 16;
/// Payloads tracked at once: room for the largest window
/// ([`super::MAX_IN_FLIGHT`]) plus refused payloads interleaved.
const ENTRIES: usize = 4 * super::MAX_IN_FLIGHT;

/// A payload handed to minimq and how many envelopes it carries. `op` is
/// `None` when minimq refused it for good (too large for the broker or the
/// buffer): it counts as settled once the payloads before it are.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub op: Option<Op>,
    pub envelopes: usize,
    /// Its place among all publishes, status and telemetry included.
    pub order: u64,
    /// Refused, or its PUBACK carried a failure reason.
    pub rejected: bool,
}

pub struct Window {
    /// Payloads sent and not yet settled, oldest first; the same envelopes,
    /// in the same order, as the store's sent ones.
    in_flight: heapless::Deque<Sent, ENTRIES>,
    /// The entries of `in_flight` awaiting a PUBACK (with an `op`).
    awaiting: usize,
    /// The most payloads awaiting a PUBACK on this connection:
    /// MAX_INFLIGHT_MESSAGES, or the broker's Receive Maximum when lower.
    limit: usize,
    /// Since when the window has had room but stayed above its refill
    /// mark (see [`Window::may_refill`]).
    refill_since: Option<Instant>,
    /// minimq's transmit buffer had no room for the next payload on this
    /// turn of the serve loop: wait for the broker, not for the queue.
    tx_full: bool,
    /// BATCH_MAX_DELAY_MS when batching.
    batch_delay: Option<Duration>,
    /// With batching: since when a batch that is not full has waited.
    batch_since: Option<Instant>,
}

impl Window {
    pub fn new(limit: usize, batch_delay: Option<Duration>) -> Self {
        Window {
            in_flight: heapless::Deque::new(),
            awaiting: 0,
            limit,
            refill_since: None,
            tx_full: false,
            batch_delay,
            batch_since: None,
        }
    }

    /// A connection is up that takes at most `limit` publishes awaiting
    /// their PUBACK.
    pub fn open(&mut self, limit: usize) {
        self.limit = limit;
        self.refill_since = None;
    }

    /// Forget every payload in flight: the broker kept no session, so the
    /// queue sends their envelopes again.
    pub fn clear(&mut self) {
        self.in_flight.clear();
        self.awaiting = 0;
    }

    /// Payloads sent and not settled.
    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// The payloads in flight, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Sent> {
        self.in_flight.iter()
    }

    /// Whether another payload may be handed to minimq, which says whether
    /// it can take a QoS 1 publish now (`can_publish`).
    pub fn has_room(&self, can_publish: bool) -> bool {
        self.awaiting < self.limit && !self.tx_full && !self.in_flight.is_full() && can_publish
    }

    /// minimq's transmit buffer is taken by publishes in flight: nothing
    /// more until the next turn, after PUBACKs.
    pub fn set_tx_full(&mut self) {
        self.tx_full = true;
    }

    /// Whether the window waits for a group to come free before it is
    /// refilled: a push to the queue cannot make it due.
    pub fn waiting_to_refill(&self) -> bool {
        self.refill_since.is_some()
    }

    /// Whether to start handing payloads to minimq on this turn of the
    /// serve loop. Not without room. While no more than three quarters of
    /// the window is taken, at once. Above that, only once a quarter has
    /// come free, or [`REFILL_DELAY`] after the first slot did: refilling
    /// each slot as its PUBACK arrives made a `send` of about two messages
    /// per PUBACK segment, a wake-up of the broker for each, and most of
    /// the CPU of both (docs/performance.md, "The in-flight window"). The
    /// delay bounds the wait when a broker with Nagle's algorithm on
    /// (mosquitto's default) holds its later PUBACKs until our next
    /// segment acknowledges its first. Windows whose quarter is under
    /// [`REFILL_GROUP_MIN`] (such as a stock mosquitto's 20) refill each
    /// slot at once: there the groups cost more throughput than they saved
    /// (measured).
    pub fn may_refill(&mut self, can_publish: bool) -> bool {
        // PUBACKs since the last turn may have made room in the buffer.
        self.tx_full = false;
        if !self.has_room(can_publish) {
            // A full window waits for PUBACKs, not for the refill delay.
            self.refill_since = None;
            return false;
        }
        let group = self.limit / 4;
        if group < REFILL_GROUP_MIN || self.awaiting + group <= self.limit {
            self.refill_since = None;
            return true;
        }
        let since = *self.refill_since.get_or_insert_with(Instant::now);
        let due = since.elapsed() >= REFILL_DELAY;
        if due {
            self.refill_since = None;
        }
        due
    }

    /// Whether the next payload should go now. Without batching, always
    /// (an empty queue makes an empty payload, which is not sent); with it,
    /// when the queue's unsent envelopes make a whole payload (`unsent`
    /// gives `Queue::unsent`), when a partial one has waited
    /// BATCH_MAX_DELAY_MS, or when the agent is `finishing`.
    pub fn batch_due(&mut self, unsent: impl FnOnce() -> (usize, bool), finishing: bool) -> bool {
        let Some(delay) = self.batch_delay else {
            return true;
        };
        let (envelopes, full) = unsent();
        if envelopes == 0 {
            self.batch_since = None;
            return false;
        }
        let since = *self.batch_since.get_or_insert_with(Instant::now);
        let due = full || finishing || since.elapsed() >= delay;
        if due {
            self.batch_since = None;
        }
        due
    }

    /// When a refill or a waiting batch falls due by time alone, if one
    /// waits.
    pub fn deadline(&self) -> Option<Instant> {
        let refill = self.refill_since.map(|since| since + REFILL_DELAY);
        let batch = self
            .batch_since
            .zip(self.batch_delay)
            .map(|(since, delay)| since + delay);
        match (refill, batch) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Record a payload handed to minimq (or refused by it for good).
    /// [`Window::has_room`] said there was room for it.
    pub fn push(&mut self, sent: Sent) {
        self.awaiting += usize::from(sent.op.is_some());
        let _ = self.in_flight.push_back(sent);
    }

    /// The oldest payload, taken out, once settled: its PUBACK arrived
    /// (`complete`) or it was refused.
    pub fn pop_settled(&mut self, complete: impl Fn(&Op) -> bool) -> Option<Sent> {
        let front = *self.in_flight.front()?;
        if !front.op.is_none_or(|op| complete(&op)) {
            return None;
        }
        self.awaiting -= usize::from(front.op.is_some());
        self.in_flight.pop_front()
    }

    /// Of the payloads at the front whose PUBACK has arrived (`arrived`),
    /// the latest sent: its place among all publishes.
    pub fn latest_arrived(&self, arrived: impl Fn(&Op) -> bool) -> Option<u64> {
        self.in_flight
            .iter()
            .take_while(|sent| sent.op.is_none_or(|op| arrived(&op)))
            .filter(|sent| sent.op.is_some())
            .last()
            .map(|sent| sent.order)
    }

    /// Mark the payload published `order`th as rejected by the broker;
    /// returns its envelopes (0 when it is not in flight).
    pub fn reject(&mut self, order: u64) -> usize {
        match self
            .in_flight
            .iter_mut()
            .find(|sent| sent.op.is_some() && sent.order == order)
        {
            Some(sent) => {
                sent.rejected = true;
                sent.envelopes
            }
            None => 0,
        }
    }
}
