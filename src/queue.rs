//! The store between capture and publish: a byte ring of fixed size.
//!
//! Capture pushes envelopes. The publisher copies out the oldest unsent ones
//! (one, or a batch), publishes them and marks them sent; they stay in the
//! ring until the broker acknowledges them, and if the MQTT session is lost
//! before that, the
//! publisher rewinds and sends everything unacknowledged again
//! (at-least-once). The ring is allocated once (QUEUE_BYTES) and never
//! grows. A live capture uses [`Queue::push`]: when
//! an envelope does not fit it is refused and the caller counts a drop, so
//! capture never waits on the broker (the kernel would drop packets
//! instead). Reading a file, nothing is lost by waiting, so
//! [`Queue::push_waiting`] waits for room.
//!
//! What it does not do: persist anything. A message the broker acknowledged
//! is gone from the ring; one in the ring when the agent stops is counted
//! as undelivered.

use crate::buffers::Region;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Each record is a 4-byte length followed by the envelope bytes.
const LEN_PREFIX: usize = 4;

/// A payload's worth of unsent envelopes: `envelopes` of them, or enough
/// that their bytes, with one byte each for a JSON array's commas and one
/// for its opening bracket, reach `bytes`. One envelope for a publisher
/// that does not batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadSize {
    pub envelopes: usize,
    pub bytes: usize,
}

impl PayloadSize {
    /// One envelope, whatever its size.
    pub const ONE: PayloadSize = PayloadSize {
        envelopes: 1,
        bytes: usize::MAX,
    };
}

pub struct Queue {
    ring: Mutex<Ring>,
    /// Wakes the publisher when the unsent envelopes become a payload, or
    /// the first of them arrives (it starts a partial batch's timer), or
    /// the queue closes. Waking it for each envelope of a batch it will not
    /// send yet cost a system call and a context switch each
    /// (docs/performance.md).
    ready: Notify,
    /// Wakes a waiting pusher when an envelope leaves.
    room: Condvar,
    /// A pusher waits on `room`: only then does `pop` pay for a wake-up,
    /// and only once the queue is down to half, so that a file read
    /// faster than the broker takes it wakes once per half queue, not once
    /// per message.
    pusher_waiting: AtomicBool,
    closed: AtomicBool,
}

struct Ring {
    buf: Region,
    /// Offset of the oldest record.
    head: usize,
    /// Bytes in use, length prefixes included.
    used: usize,
    records: usize,
    /// The oldest records, sent and awaiting acknowledgement: how many and
    /// their bytes. The next to send follows them.
    sent: usize,
    sent_bytes: usize,
    /// What the publisher sends at once: see [`Queue::set_payload_size`].
    payload: PayloadSize,
}

impl Queue {
    /// A queue holding at most `capacity` bytes of envelopes and prefixes.
    pub fn new(capacity: usize) -> Queue {
        Queue {
            ring: Mutex::new(Ring {
                buf: Region::new(capacity),
                head: 0,
                used: 0,
                records: 0,
                sent: 0,
                sent_bytes: 0,
                payload: PayloadSize::ONE,
            }),
            ready: Notify::new(),
            room: Condvar::new(),
            pusher_waiting: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// Append a copy of `envelope`; `false` when it does not fit.
    pub fn push(&self, envelope: &[u8]) -> bool {
        let mut ring = self.lock();
        let pushed = ring.push(envelope);
        let wake = pushed && ring.wakes_publisher();
        drop(ring);
        if wake {
            self.ready.notify_one();
        }
        pushed
    }

    /// Append a copy of `envelope`, waiting for room while the publisher
    /// drains the queue (to half, see `pusher_waiting`); `false` only if
    /// `stop` is set first or the envelope can never fit.
    pub fn push_waiting(&self, envelope: &[u8], stop: &AtomicBool) -> bool {
        if LEN_PREFIX + envelope.len() > self.lock().buf.len() {
            return false;
        }
        let mut ring = self.lock();
        while !ring.push(envelope) {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            // Timed, so a stop request is seen even if nothing is popped.
            self.pusher_waiting.store(true, Ordering::Release);
            ring = self
                .room
                .wait_timeout(ring, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        self.pusher_waiting.store(false, Ordering::Release);
        let wake = ring.wakes_publisher();
        drop(ring);
        if wake {
            self.ready.notify_one();
        }
        true
    }

    /// Offer the unsent envelopes, oldest first, to `take` until it
    /// returns `false`; returns how many it took. Each envelope arrives in
    /// two parts, as the ring may wrap inside it (the second is usually
    /// empty). Nothing is marked sent: see [`Queue::mark_sent`].
    pub fn peek_unsent(&self, mut take: impl FnMut(&[u8], &[u8]) -> bool) -> usize {
        let ring = self.lock();
        let size = ring.buf.len();
        let (mut at, mut taken) = ((ring.head + ring.sent_bytes) % size, 0);
        while ring.sent + taken < ring.records {
            let len = ring.len_at(at);
            let start = (at + LEN_PREFIX) % size;
            let first = len.min(size - start);
            if !take(&ring.buf[start..start + first], &ring.buf[..len - first]) {
                break;
            }
            taken += 1;
            at = (start + len) % size;
        }
        taken
    }

    /// Envelopes not yet sent: how many, and whether they make a payload
    /// (see [`Queue::set_payload_size`]).
    pub fn unsent(&self) -> (usize, bool) {
        let ring = self.lock();
        (ring.records - ring.sent, ring.unsent_make_payload())
    }

    /// What the publisher sends at once. A push wakes it only when the
    /// unsent envelopes reach that, or when the push is the first unsent
    /// one (for a partial batch, the publisher's own timer does the rest).
    pub fn set_payload_size(&self, payload: PayloadSize) {
        self.lock().payload = payload;
    }

    /// The oldest `count` unsent envelopes were sent.
    pub fn mark_sent(&self, count: usize) {
        let mut ring = self.lock();
        for _ in 0..count.min(ring.records - ring.sent) {
            let at = (ring.head + ring.sent_bytes) % ring.buf.len();
            ring.sent_bytes += LEN_PREFIX + ring.len_at(at);
            ring.sent += 1;
        }
    }

    /// The oldest `count` sent envelopes were acknowledged (or refused for
    /// good): remove them.
    pub fn acknowledge_oldest(&self, count: usize) {
        let mut ring = self.lock();
        for _ in 0..count.min(ring.sent) {
            let len = LEN_PREFIX + ring.len_at(ring.head);
            ring.head = (ring.head + len) % ring.buf.len();
            ring.used -= len;
            ring.records -= 1;
            ring.sent -= 1;
            ring.sent_bytes -= len;
        }
        // Set under the lock by a waiting pusher, so this read cannot miss it.
        let waiting = self.pusher_waiting.load(Ordering::Acquire) && ring.used <= ring.buf.len() / 2;
        drop(ring);
        if waiting {
            self.room.notify_one();
        }
    }

    /// The session that carried the sent envelopes was lost: they will be
    /// sent again. Returns how many.
    pub fn rewind(&self) -> usize {
        let mut ring = self.lock();
        let sent = ring.sent;
        ring.sent = 0;
        ring.sent_bytes = 0;
        sent
    }

    /// Number of stored envelopes (sent or not) and the bytes they take.
    pub fn depth(&self) -> (usize, usize) {
        let ring = self.lock();
        (ring.records, ring.used)
    }

    /// No more envelopes will come (end of file or shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Wait until something was pushed or the queue closed.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // A panic while holding the lock would leave a consistent ring (the
        // counters move only after the copy), so a poisoned lock is usable.
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Ring {
    fn push(&mut self, envelope: &[u8]) -> bool {
        let Ok(len) = u32::try_from(envelope.len()) else {
            return false;
        };
        if self.buf.len() - self.used < LEN_PREFIX + envelope.len() {
            return false;
        }
        let tail = (self.head + self.used) % self.buf.len();
        let tail = self.write_at(tail, &len.to_le_bytes());
        self.write_at(tail, envelope);
        self.used += LEN_PREFIX + envelope.len();
        self.records += 1;
        true
    }

    /// Whether the push just made should wake the publisher.
    fn wakes_publisher(&self) -> bool {
        self.records - self.sent == 1 || self.unsent_make_payload()
    }

    fn unsent_make_payload(&self) -> bool {
        let envelopes = self.records - self.sent;
        let bytes = self.used - self.sent_bytes - envelopes * LEN_PREFIX;
        envelopes >= self.payload.envelopes || 1 + bytes + envelopes >= self.payload.bytes
    }

    /// The length of the record at offset `at`.
    fn len_at(&self, at: usize) -> usize {
        let mut len = [0u8; LEN_PREFIX];
        self.read_at(at, &mut len);
        u32::from_le_bytes(len) as usize
    }

    /// Copy `bytes` in at `at`, wrapping around the end; returns the offset
    /// after them.
    fn write_at(&mut self, at: usize, bytes: &[u8]) -> usize {
        let first = bytes.len().min(self.buf.len() - at);
        self.buf[at..at + first].copy_from_slice(&bytes[..first]);
        self.buf[..bytes.len() - first].copy_from_slice(&bytes[first..]);
        (at + bytes.len()) % self.buf.len()
    }

    fn read_at(&self, at: usize, out: &mut [u8]) {
        let first = out.len().min(self.buf.len() - at);
        out[..first].copy_from_slice(&self.buf[at..at + first]);
        let rest = out.len() - first;
        out[first..].copy_from_slice(&self.buf[..rest]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copy out the oldest unsent envelope, without marking it sent.
    fn peek_one(queue: &Queue, out: &mut [u8]) -> Option<usize> {
        let mut len = None;
        queue.peek_unsent(|first, second| {
            let size = first.len() + second.len();
            if len.is_some() || size > out.len() {
                return false;
            }
            out[..first.len()].copy_from_slice(first);
            out[first.len()..size].copy_from_slice(second);
            len = Some(size);
            true
        });
        len
    }

    /// Send, acknowledge, remove: in order, across the ring's end.
    fn send_and_acknowledge(queue: &Queue, out: &mut [u8]) -> Option<usize> {
        let len = peek_one(queue, out)?;
        queue.mark_sent(1);
        queue.acknowledge_oldest(1);
        Some(len)
    }

    #[test]
    fn fifo_with_wraparound() {
        let queue = Queue::new(32);
        let mut out = [0u8; 32];
        for round in 0..20u8 {
            let msg = [round; 9];
            assert!(queue.push(&msg));
            assert!(queue.push(&msg[..5]));
            assert_eq!(send_and_acknowledge(&queue, &mut out), Some(9));
            assert_eq!(out[..9], msg);
            assert_eq!(send_and_acknowledge(&queue, &mut out), Some(5));
            assert_eq!(queue.depth(), (0, 0));
        }
    }

    #[test]
    fn unacknowledged_envelopes_stay_and_rewind() {
        let queue = Queue::new(64);
        let mut out = [0u8; 16];
        for n in 1..=3u8 {
            assert!(queue.push(&[n; 4]));
        }
        for n in 1..=2u8 {
            assert_eq!(peek_one(&queue, &mut out), Some(4));
            assert_eq!(out[0], n);
            queue.mark_sent(1);
        }
        queue.acknowledge_oldest(1);
        assert_eq!(queue.depth(), (2, 16));
        // The session is lost: envelope 2 was sent but not acknowledged.
        assert_eq!(queue.rewind(), 1);
        assert_eq!(peek_one(&queue, &mut out), Some(4));
        assert_eq!(out[0], 2);
        queue.mark_sent(1);
        assert_eq!(peek_one(&queue, &mut out), Some(4));
        assert_eq!(out[0], 3);
    }

    /// Several envelopes at once, the ring wrapping inside one of them.
    #[test]
    fn batches_across_the_end() {
        let queue = Queue::new(40);
        assert!(queue.push(&[9; 10]));
        queue.mark_sent(1);
        queue.acknowledge_oldest(1);
        for n in 1..=3u8 {
            assert!(queue.push(&[n; 6]));
        }
        assert_eq!(queue.unsent(), (3, true));
        let mut seen = Vec::new();
        let taken = queue.peek_unsent(|first, second| {
            seen.push([first, second].concat());
            seen.len() < 2
        });
        assert_eq!(taken, 1, "the closure refused the second");
        assert_eq!(seen, [vec![1; 6], vec![2; 6]]);
        // Envelope 3 starts at 34 and wraps after 2 of its 6 bytes.
        let mut parts = Vec::new();
        assert_eq!(
            queue.peek_unsent(|f, s| {
                parts.push((f.len(), s.len()));
                true
            }),
            3
        );
        assert_eq!(parts, [(6, 0), (6, 0), (2, 4)]);
        queue.mark_sent(2);
        assert_eq!(queue.unsent(), (1, true));
        queue.acknowledge_oldest(5);
        assert_eq!(queue.depth(), (1, 10));
    }

    /// Whether a wake-up of the publisher is pending, taking it.
    fn woken(queue: &Queue) -> bool {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_millis(1), queue.ready())
                .await
                .is_ok()
        })
    }

    /// A batch wakes the publisher twice: when its first envelope comes
    /// (to start its timer) and once it makes a payload, by count or by
    /// bytes; not for each envelope in between.
    #[test]
    fn pushes_wake_the_publisher_for_the_first_envelope_and_a_whole_payload() {
        let queue = Queue::new(1024);
        assert!(queue.push(&[0; 6]));
        assert!(woken(&queue), "unbatched: every envelope is a payload");
        assert!(queue.push(&[0; 6]));
        assert!(woken(&queue));
        queue.mark_sent(2);

        queue.set_payload_size(PayloadSize {
            envelopes: 3,
            bytes: 1000,
        });
        let pushes: Vec<_> = (0..4).map(|_| (queue.push(&[0; 6]), woken(&queue))).collect();
        assert_eq!(pushes, [(true, true), (true, false), (true, true), (true, true)]);
        assert_eq!(queue.unsent(), (4, true));
        queue.mark_sent(4);

        // Bytes: `[`, two envelopes of 6 and a separator each: 15.
        queue.set_payload_size(PayloadSize {
            envelopes: 100,
            bytes: 15,
        });
        assert!(queue.push(&[0; 6]) && woken(&queue));
        assert_eq!(queue.unsent(), (1, false));
        assert!(queue.push(&[0; 5]) && !woken(&queue));
        assert_eq!(queue.unsent(), (2, false));
        assert!(queue.push(&[0; 1]) && woken(&queue));
        assert_eq!(queue.unsent(), (3, true));
    }

    #[test]
    fn push_waiting_waits_for_room() {
        let queue = std::sync::Arc::new(Queue::new(16));
        let stop = AtomicBool::new(false);
        assert!(queue.push_waiting(&[1; 8], &stop));
        let popper = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                send_and_acknowledge(&queue, &mut [0; 16]);
            })
        };
        assert!(queue.push_waiting(&[2; 8], &stop));
        popper.join().unwrap();
        assert_eq!(queue.depth(), (1, 12));
        stop.store(true, Ordering::Relaxed);
        assert!(!queue.push_waiting(&[3; 8], &stop));
        assert!(!queue.push_waiting(&[4; 20], &AtomicBool::new(false)));
    }

    #[test]
    fn full_queue_refuses() {
        let queue = Queue::new(20);
        assert!(queue.push(&[1; 8]));
        assert!(!queue.push(&[2; 5]));
        assert!(queue.push(&[3; 4]));
        assert!(!queue.push(&[]));
        assert_eq!(queue.depth(), (2, 20));
        let mut small = [0u8; 2];
        assert_eq!(peek_one(&queue, &mut small), None);
    }
}
