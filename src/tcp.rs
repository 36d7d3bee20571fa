//! Reassembly stage, part 2: TCP byte streams, in memory fixed at start-up.
//!
//! One stream per direction, keyed by (source, destination) address and
//! port and where it was observed (capture interface, VLAN tags: the same
//! addresses on two VLANs are two streams). Bytes are delivered to the SIP framer ([`crate::split`]) in order
//! and once: retransmitted bytes are trimmed, segments ahead of a hole wait
//! in the stream's buffer.
//!
//! Holes: a hole is waited for only while a reordered or retransmitted
//! segment could still plausibly fill it — TCP_HOLE_WAIT_MS of capture time
//! since the first byte after it was captured, and TCP_HOLE_MAX_BYTES
//! buffered after it (also [`MAX_HOLES`] ranges, [`MAX_MARKS`] arrivals
//! and the buffer's size). Then, or when the stream ends first (FIN after
//! the holes' wait, RST, idle expiry, eviction, end of capture), the hole is
//! skipped (`tcp_gaps`, `tcp_gap_bytes`, logged at debug): the message it
//! cut is dropped (`tcp_partial_messages`, `tcp_partial_bytes`) and framing
//! resumes at the next start line after it. Each complete message after it
//! is published then, stamped with the capture time at which its bytes,
//! from where framing resumed, had all been captured: the time of the
//! segment that completed it, not of whatever ended the wait. For that the
//! buffer keeps, with each range of bytes after a hole, when it grew (its
//! marks).
//!
//! Time is capture time: the newest seen on any frame, moved on by every
//! frame ([`TcpReassembler::advance`]) and by a live capture's idle tick,
//! so a stream that gets no more segments still ends its wait. Streams
//! waiting on a hole are kept in order of their hole's age, so each frame
//! looks at the first only.
//!
//! Memory: a table of TCP_MAX_FLOWS streams, a hash index sized for it, and
//! a pool of TCP_BUFFERS buffers of TCP_BUFFER_BYTES with their ranges and
//! marks, all allocated at start-up. The common case — a segment holding
//! whole messages, in order — is framed straight from the packet and needs
//! no buffer; only a message split across segments, or data after a hole,
//! takes one. When no buffer is free the partial message is dropped
//! (`tcp_no_buffer`), and a hole is skipped at once.
//!
//! Streams: a SYN sets the sequence base; a stream first seen mid-way starts
//! at its first segment and resynchronises at the next start line. FIN and
//! RST end a stream. A stream idle for TCP_IDLE_TIMEOUT_S of capture time
//! expires (`tcp_flows_expired`); when the table is full the least recently
//! used stream is evicted (`tcp_flows_evicted`). Pure ACKs never create a
//! stream.
//!
//! What it does not do: look inside the bytes (the framer does), or follow
//! the TCP state machine beyond what delivery needs (it does not read ACKs,
//! which could tell a hole the receiver already has from one it lacks).

use crate::buffers::Buffers;
use crate::config::ReassemblyLimits;
use crate::counters::Counters;
use crate::decode::{Context, Segment, TcpHeader, Transport};
use crate::defrag::micros_between;
use crate::envelope::{Origin, Timestamp};
use crate::split::Framer;
use crate::split::websocket::Shared;
use core::net::SocketAddr;
use std::collections::HashMap;

/// Ranges of bytes after holes a stream keeps; a segment needing one more
/// ends the wait for the first hole.
pub const MAX_HOLES: usize = 8;
/// Arrivals after holes (segments that extended a range, each with its
/// capture time) a stream keeps; one more ends the wait for the first hole.
/// 128 segments of 256 bytes fill the default TCP_HOLE_MAX_BYTES; SIP
/// segments are rarely smaller. 16 bytes each, 2 KiB a buffer.
pub const MAX_MARKS: usize = 128;
const NIL: u32 = u32::MAX;

/// One direction of a connection, and where it was observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    context: Context,
    src: SocketAddr,
    dst: SocketAddr,
}

/// Bytes received after a hole: sequence numbers `start..end`, the first of
/// them captured at `since`.
#[derive(Debug, Clone, Copy)]
struct Range {
    start: u32,
    end: u32,
    since: Timestamp,
}

/// The bytes of a range, from its start up to sequence number `end`, had
/// all been captured at [`Mark::time`]. (A Timestamp's fields, unpadded.)
#[derive(Debug, Clone, Copy)]
struct Mark {
    secs: i64,
    micros: u32,
    end: u32,
}

impl Mark {
    fn new(end: u32, time: Timestamp) -> Mark {
        Mark {
            secs: time.secs,
            micros: time.micros,
            end,
        }
    }

    fn time(&self) -> Timestamp {
        Timestamp {
            secs: self.secs,
            micros: self.micros,
        }
    }
}

/// What a stream buffer holds after the stream's holes. It belongs to the
/// buffer, not the stream: only a stream holding a buffer has holes, and
/// buffers are far fewer than streams.
#[derive(Default)]
struct Ahead {
    /// Disjoint and not touching, in sequence order.
    ranges: heapless::Vec<Range, MAX_HOLES>,
    /// In sequence order; each range's last mark ends where the range ends.
    marks: heapless::Vec<Mark, MAX_MARKS>,
}

/// Links of a stream in one of the two lists the table keeps.
#[derive(Debug, Clone, Copy)]
struct Links {
    /// Towards the front (older).
    prev: u32,
    next: u32,
}

const UNLINKED: Links = Links { prev: NIL, next: NIL };
/// The list of every stream, least recently used first.
const BY_USE: usize = 0;
/// The list of streams waiting on a hole, the oldest hole first.
const BY_HOLE: usize = 1;

struct Flow {
    key: Key,
    /// The sequence number of the next in-order byte.
    next_seq: u32,
    last_seen: Timestamp,
    framer: Framer,
    /// Index into the buffer pool, while the stream holds bytes.
    buffer: u32,
    /// In-order bytes at the front of the buffer, not yet consumed. The
    /// bytes of sequence number `s` after a hole are at `pending + (s -
    /// next_seq)`.
    pending: usize,
    /// A FIN came while the stream waited on a hole: it ends when no hole
    /// is left.
    closing: bool,
    /// In the BY_HOLE list, since `hole_since`: when the first byte after
    /// the first hole was captured.
    waiting: bool,
    hole_since: Timestamp,
    links: [Links; 2],
}

/// Where each complete message goes: its origin (capture time, addresses)
/// and bytes.
pub type OnMessage<'a> = dyn FnMut(&Origin, &[u8]) + 'a;

pub struct TcpReassembler {
    flows: Vec<Flow>,
    index: HashMap<Key, u32>,
    free_flows: Vec<u32>,
    buffers: Buffers,
    ahead: Vec<Ahead>,
    free_buffers: Vec<u32>,
    /// Front and back of the BY_USE and BY_HOLE lists.
    front: [u32; 2],
    back: [u32; 2],
    /// The newest capture time seen.
    now: Timestamp,
    idle_us: i64,
    hole_wait_us: i64,
    hole_max_bytes: usize,
    max_message: usize,
    /// The WebSocket framer's message buffer and inflate contexts.
    ws: Shared,
}

impl TcpReassembler {
    /// Streams, buffers, idle timeout and hole bounds as `limits` says
    /// (the TCP_ keys); messages over `max_message` bytes are dropped.
    pub fn new(limits: &ReassemblyLimits, max_message: usize) -> Self {
        let max_flows = limits.tcp_flows.max(1);
        let buffers = limits.tcp_buffers;
        let micros = |n: u64, unit: i64| i64::try_from(n).unwrap_or(i64::MAX).saturating_mul(unit);
        TcpReassembler {
            flows: Vec::with_capacity(max_flows),
            // Twice the entries: removals never force the map to grow.
            index: HashMap::with_capacity(2 * max_flows),
            free_flows: Vec::with_capacity(max_flows),
            buffers: Buffers::new(buffers, limits.tcp_buffer_bytes),
            // Reserved, not written: an `Ahead` is about 2 KiB, made when
            // its buffer is first taken (`take_buffer`), so only the
            // buffers traffic has used are resident (140 KiB for all 64).
            ahead: Vec::with_capacity(buffers),
            free_buffers: (0..buffers as u32).rev().collect(),
            front: [NIL; 2],
            back: [NIL; 2],
            now: Timestamp {
                secs: i64::MIN,
                micros: 0,
            },
            idle_us: micros(limits.tcp_idle_s, 1_000_000),
            hole_wait_us: micros(limits.tcp_hole_wait_ms, 1000),
            hole_max_bytes: limits.tcp_hole_max_bytes,
            max_message: max_message.min(limits.tcp_buffer_bytes),
            ws: Shared::new(max_message.min(limits.tcp_buffer_bytes)),
        }
    }

    /// Take one TCP segment captured at `time`; each SIP message it
    /// completes, or that capture time reaching `time` releases (see
    /// [`advance`](Self::advance)), goes to `on_message`.
    pub fn add(
        &mut self,
        time: Timestamp,
        seg: &Segment<'_>,
        tcp: TcpHeader,
        counters: &Counters,
        on_message: &mut OnMessage<'_>,
    ) {
        Counters::inc(&counters.tcp_segments);
        self.advance(time, counters, on_message);
        let key = Key {
            context: seg.context,
            src: seg.src,
            dst: seg.dst,
        };
        let existing = self.index.get(&key).copied();
        if tcp.rst {
            if let Some(i) = existing {
                self.close(i, "RST", counters, on_message);
            }
            return;
        }
        let i = match existing {
            Some(i) => i,
            None if tcp.syn || !seg.payload.is_empty() => {
                // Mid-stream: the first segment seen sets the base.
                let base = if tcp.syn { tcp.seq.wrapping_add(1) } else { tcp.seq };
                self.open(key, base, tcp.syn, counters, on_message)
            }
            None => return,
        };
        self.touch(i);
        if tcp.syn {
            // A new connection on the same addresses: the old one is over.
            self.flush(i, "SYN", counters, on_message);
            let flow = &mut self.flows[i as usize];
            flow.framer.end(&mut self.ws);
            flow.next_seq = tcp.seq.wrapping_add(1);
            flow.framer = Framer::default();
            flow.closing = false;
        } else if !seg.payload.is_empty() {
            self.data(i, time, tcp.seq, seg.payload, counters, on_message);
        }
        if tcp.fin {
            self.flows[i as usize].closing = true;
        }
        self.end_if_closing(i, counters, on_message);
    }

    /// Capture time has reached `now` (a frame of any kind, or a live
    /// capture's idle tick): streams idle for TCP_IDLE_TIMEOUT_S expire and
    /// holes waited for TCP_HOLE_WAIT_MS are skipped, their complete
    /// messages going to `on_message`. Costs a comparison or two unless
    /// something is due; time never goes back.
    pub fn advance(&mut self, now: Timestamp, counters: &Counters, on_message: &mut OnMessage<'_>) {
        if now <= self.now {
            return;
        }
        self.now = now;
        while let Some(i) = self.first(BY_USE)
            && micros_between(self.flows[i as usize].last_seen, now) > self.idle_us
        {
            Counters::inc(&counters.tcp_flows_expired);
            self.close(i, "TCP_IDLE_TIMEOUT_S", counters, on_message);
        }
        while let Some(i) = self.first(BY_HOLE)
            && micros_between(self.flows[i as usize].hole_since, now) >= self.hole_wait_us
        {
            self.skip_hole(i, "TCP_HOLE_WAIT_MS", counters, on_message);
            self.end_if_closing(i, counters, on_message);
        }
    }

    /// End of the capture: every stream ends, as with a FIN.
    pub fn finish(&mut self, counters: &Counters, on_message: &mut OnMessage<'_>) {
        while let Some(i) = self.first(BY_USE) {
            self.close(i, "end of capture", counters, on_message);
        }
    }

    fn first(&self, list: usize) -> Option<u32> {
        Some(self.front[list]).filter(|&i| i != NIL)
    }

    fn data(
        &mut self,
        i: u32,
        time: Timestamp,
        seq: u32,
        payload: &[u8],
        counters: &Counters,
        on_message: &mut OnMessage<'_>,
    ) {
        let flow = &self.flows[i as usize];
        let ahead = seq.wrapping_sub(flow.next_seq) as i32;
        if ahead > 0 {
            return self.out_of_order(i, time, seq, payload, counters, on_message);
        }
        // Bytes before next_seq were delivered already: trim them.
        let old = ahead.unsigned_abs() as usize;
        if old >= payload.len() {
            return Counters::inc(&counters.tcp_retransmissions);
        }
        let key = flow.key;
        let mut payload = &payload[old..];
        while !payload.is_empty() {
            let capacity = self.buffers.each();
            let flow = &mut self.flows[i as usize];
            if flow.buffer == NIL {
                // In order, nothing buffered: frame straight from the packet.
                flow.next_seq = flow.next_seq.wrapping_add(payload.len() as u32);
                let used = flow
                    .framer
                    .split(payload, self.max_message, &mut self.ws, counters, |t, m, _| {
                        on_message(&origin(key, t, time), m)
                    });
                let rest = &payload[used..];
                if rest.is_empty() {
                    return;
                }
                if rest.len() > capacity {
                    // An unfinished line longer than a buffer, before any
                    // start line (a buffer smaller than a junk line may be).
                    Counters::inc(&counters.tcp_oversize);
                    return self.flows[i as usize].framer.reset(&mut self.ws);
                }
                if !self.take_buffer(i) {
                    Counters::inc(&counters.tcp_no_buffer);
                    return self.flows[i as usize].framer.reset(&mut self.ws);
                }
                let flow = &mut self.flows[i as usize];
                self.buffers.get_mut(flow.buffer as usize)[..rest.len()].copy_from_slice(rest);
                flow.pending = rest.len();
                return;
            }
            if flow.pending == capacity {
                // A full buffer the framer could not consume: a message (or
                // a line) longer than a message may be.
                Counters::inc(&counters.tcp_oversize);
                self.discard_front(i, capacity);
                self.flows[i as usize].framer.reset(&mut self.ws);
                continue;
            }
            // Into the buffer, as much as fits: framing then makes room.
            let n = (capacity - flow.pending).min(payload.len());
            self.buffers.get_mut(flow.buffer as usize)[flow.pending..flow.pending + n]
                .copy_from_slice(&payload[..n]);
            flow.pending += n;
            flow.next_seq = flow.next_seq.wrapping_add(n as u32);
            payload = &payload[n..];
            self.merge_and_frame(i, time, counters, on_message);
        }
    }

    /// Keep a segment that arrived ahead of a hole, then end the wait for
    /// the first hole if more than TCP_HOLE_MAX_BYTES wait after it. When
    /// the segment cannot be kept, the first hole is skipped at once.
    fn out_of_order(
        &mut self,
        i: u32,
        time: Timestamp,
        seq: u32,
        payload: &[u8],
        counters: &Counters,
        on_message: &mut OnMessage<'_>,
    ) {
        if !self.take_buffer(i) {
            // No buffer to wait in (and so nothing buffered): resume here.
            self.give_up(i, seq, "no buffer free", counters);
            return self.data(i, time, seq, payload, counters, on_message);
        }
        match self.keep(i, time, seq, payload) {
            Kept::Stored => Counters::inc(&counters.tcp_out_of_order),
            Kept::Duplicate => return Counters::inc(&counters.tcp_retransmissions),
            Kept::NoRoom => {
                if self.ahead[self.flows[i as usize].buffer as usize]
                    .ranges
                    .is_empty()
                {
                    self.give_up(i, seq, "beyond the buffer", counters);
                } else {
                    self.skip_hole(i, "buffer, ranges or marks full", counters, on_message);
                }
                // The stream moved on: the segment may now be in order.
                return self.data(i, time, seq, payload, counters, on_message);
            }
        }
        while self.buffered_after_hole(i) > self.hole_max_bytes {
            self.skip_hole(i, "TCP_HOLE_MAX_BYTES", counters, on_message);
        }
    }

    /// Store `payload` (sequence numbers from `seq`, ahead of next_seq,
    /// captured at `time`) in the buffer: join it with the ranges it
    /// overlaps or touches, and mark when the joined range grew.
    fn keep(&mut self, i: u32, time: Timestamp, seq: u32, payload: &[u8]) -> Kept {
        let flow = &self.flows[i as usize];
        let next = flow.next_seq;
        // Positions relative to next_seq: every range is ahead of it, less
        // than 2^31 plus a segment away, so they compare without wrapping.
        let pos = |s: u32| s.wrapping_sub(next);
        let end = seq.wrapping_add(payload.len() as u32);
        let offset = flow.pending + pos(seq) as usize;
        if offset
            .checked_add(payload.len())
            .is_none_or(|e| e > self.buffers.each())
        {
            return Kept::NoRoom;
        }
        let ahead = &mut self.ahead[flow.buffer as usize];
        // ranges[lo..hi] overlap or touch seq..end.
        let lo = ahead.ranges.iter().take_while(|r| pos(r.end) < pos(seq)).count();
        let hi = lo
            + ahead.ranges[lo..]
                .iter()
                .take_while(|r| pos(r.start) <= pos(end))
                .count();
        let joined = &ahead.ranges[lo..hi];
        // The first byte this segment adds.
        let new = match joined.first() {
            Some(r) if pos(r.start) <= pos(seq) && pos(r.end) >= pos(end) => return Kept::Duplicate,
            Some(r) if pos(r.start) <= pos(seq) => r.end,
            _ => seq,
        };
        let range = Range {
            start: joined
                .first()
                .map_or(seq, |r| if pos(r.start) < pos(seq) { r.start } else { seq }),
            end: joined
                .last()
                .map_or(end, |r| if pos(r.end) > pos(end) { r.end } else { end }),
            since: joined.iter().map(|r| r.since).fold(time, Ord::min),
        };
        // Marks past `new` in the joined range now all complete at `time`
        // (or a later time they had, if capture time went back); the mark
        // just before `new` in the same range, if as late, is superseded.
        let keep = ahead.marks.iter().take_while(|m| pos(m.end) <= pos(new)).count();
        let gone = ahead.marks[keep..]
            .iter()
            .take_while(|m| pos(m.end) <= pos(range.end))
            .count();
        let before = keep
            .checked_sub(1)
            .filter(|&k| pos(ahead.marks[k].end) > pos(range.start));
        let late = ahead.marks[keep..keep + gone]
            .iter()
            .chain(before.map(|k| &ahead.marks[k]))
            .map(Mark::time)
            .fold(time, Ord::max);
        let merge_before = before.is_some_and(|k| ahead.marks[k].time() == late);
        let marks_after = ahead.marks.len() - gone - usize::from(merge_before) + 1;
        let ranges_after = ahead.ranges.len() - (hi - lo) + 1;
        if marks_after > MAX_MARKS || ranges_after > MAX_HOLES {
            return Kept::NoRoom;
        }
        self.buffers.get_mut(flow.buffer as usize)[offset..offset + payload.len()].copy_from_slice(payload);
        splice(&mut ahead.ranges, lo..hi, range);
        let first = if merge_before { keep - 1 } else { keep };
        splice(&mut ahead.marks, first..keep + gone, Mark::new(range.end, late));
        self.reschedule(i);
        Kept::Stored
    }

    /// Bytes kept after the first hole.
    fn buffered_after_hole(&self, i: u32) -> usize {
        let flow = &self.flows[i as usize];
        if flow.buffer == NIL {
            return 0;
        }
        let ranges = &self.ahead[flow.buffer as usize].ranges;
        ranges.iter().map(|r| r.end.wrapping_sub(r.start) as usize).sum()
    }

    /// Join the ranges the in-order bytes now reach, frame the in-order
    /// bytes (each message completed at `time`), and move what is left to
    /// the front of the buffer.
    fn merge_and_frame(
        &mut self,
        i: u32,
        time: Timestamp,
        counters: &Counters,
        on_message: &mut OnMessage<'_>,
    ) {
        let flow = &mut self.flows[i as usize];
        let ahead = &mut self.ahead[flow.buffer as usize];
        let mut joined = false;
        while let Some(&r) = ahead.ranges.first()
            && r.start.wrapping_sub(flow.next_seq) as i32 <= 0
        {
            ahead.ranges.remove(0);
            drop_marks(&mut ahead.marks, r.end);
            let extra = r.end.wrapping_sub(flow.next_seq) as i32;
            if extra > 0 {
                flow.pending += extra as usize;
                flow.next_seq = r.end;
            }
            joined = true;
        }
        let key = flow.key;
        self.frame_pending(i, counters, &mut |t, m, _| on_message(&origin(key, t, time), m));
        if joined {
            self.reschedule(i);
        }
        self.drop_buffer_if_empty(i);
    }

    /// Frame the in-order bytes of the buffer; `on_message` gets each
    /// message and the sequence number just past it. What the framer
    /// consumed is removed from the buffer.
    fn frame_pending(
        &mut self,
        i: u32,
        counters: &Counters,
        on_message: &mut dyn FnMut(Transport, &[u8], u32),
    ) {
        let flow = &mut self.flows[i as usize];
        let buffer = self.buffers.get(flow.buffer as usize);
        // The sequence number of the buffer's first byte.
        let first = flow.next_seq.wrapping_sub(flow.pending as u32);
        let used = flow.framer.split(
            &buffer[..flow.pending],
            self.max_message,
            &mut self.ws,
            counters,
            |t, m, end| on_message(t, m, first.wrapping_add(end as u32)),
        );
        self.discard_front(i, used);
    }

    /// Remove the first `n` bytes of the buffer (at most the in-order
    /// ones), moving what follows to the front.
    fn discard_front(&mut self, i: u32, n: usize) {
        let flow = &mut self.flows[i as usize];
        if n == 0 {
            return;
        }
        let tail = self.ahead[flow.buffer as usize]
            .ranges
            .last()
            .map_or(flow.pending, |r| {
                flow.pending + r.end.wrapping_sub(flow.next_seq) as usize
            });
        self.buffers.get_mut(flow.buffer as usize).copy_within(n..tail, 0);
        flow.pending -= n;
    }

    /// Skip the stream's first hole: drop the partial message before it,
    /// resume framing at the first range after it and publish each complete
    /// message there with the time its bytes were all captured.
    fn skip_hole(&mut self, i: u32, why: &str, counters: &Counters, on_message: &mut OnMessage<'_>) {
        let flow = &mut self.flows[i as usize];
        let Some(&first) = (flow.buffer != NIL)
            .then(|| self.ahead[flow.buffer as usize].ranges.first())
            .flatten()
        else {
            // Nothing after a hole: not waiting.
            return self.reschedule(i);
        };
        let gap = first.start.wrapping_sub(flow.next_seq);
        skipped(flow, gap, why, counters);
        self.drop_partial(i, counters);
        let flow = &mut self.flows[i as usize];
        flow.framer.reset(&mut self.ws);
        // The first range becomes the in-order bytes.
        flow.pending = gap as usize;
        flow.next_seq = first.start;
        self.discard_front(i, gap as usize);
        let flow = &mut self.flows[i as usize];
        let ahead = &mut self.ahead[flow.buffer as usize];
        ahead.ranges.remove(0);
        flow.pending = first.end.wrapping_sub(first.start) as usize;
        flow.next_seq = first.end;
        let marks = core::mem::take(&mut ahead.marks);
        let key = flow.key;
        self.frame_pending(i, counters, &mut |t, m, end| {
            // The first mark at or past the message's end: marks are in
            // order, and the range's last one ends where the range does.
            let pos = |s: u32| s.wrapping_sub(first.start);
            let time = marks
                .iter()
                .find(|k| pos(k.end) >= pos(end))
                .map_or(first.since, Mark::time);
            on_message(&origin(key, t, time), m)
        });
        let ahead = &mut self.ahead[self.flows[i as usize].buffer as usize];
        ahead.marks = marks;
        drop_marks(&mut ahead.marks, first.end);
        self.reschedule(i);
        self.drop_buffer_if_empty(i);
    }

    /// Resume at `seq`, ahead of next_seq, with nothing kept after the hole
    /// before it (no buffer, or the segment is beyond the buffer).
    fn give_up(&mut self, i: u32, seq: u32, why: &str, counters: &Counters) {
        let flow = &self.flows[i as usize];
        let gap = seq.wrapping_sub(flow.next_seq);
        skipped(flow, gap, why, counters);
        self.drop_partial(i, counters);
        let flow = &mut self.flows[i as usize];
        flow.framer.reset(&mut self.ws);
        flow.next_seq = seq;
        self.drop_buffer_if_empty(i);
    }

    /// Drop the in-order bytes the framer holds (a message cut short),
    /// counted.
    fn drop_partial(&mut self, i: u32, counters: &Counters) {
        let pending = self.flows[i as usize].pending;
        if pending > 0 {
            Counters::inc(&counters.tcp_partial_messages);
            Counters::add(&counters.tcp_partial_bytes, pending as u64);
            self.discard_front(i, pending);
        }
    }

    /// End of the stream's bytes (`why`): skip every hole, publishing what
    /// is complete after it, and drop (counted) what is not.
    fn flush(&mut self, i: u32, why: &str, counters: &Counters, on_message: &mut OnMessage<'_>) {
        while self.flows[i as usize].waiting {
            self.skip_hole(i, why, counters, on_message);
        }
        if self.flows[i as usize].buffer != NIL {
            self.drop_partial(i, counters);
            self.drop_buffer_if_empty(i);
        }
        self.flows[i as usize].framer.reset(&mut self.ws);
    }

    fn close(&mut self, i: u32, why: &str, counters: &Counters, on_message: &mut OnMessage<'_>) {
        self.flush(i, why, counters, on_message);
        self.release(i);
    }

    /// A stream that saw a FIN ends once no hole is left to wait for.
    fn end_if_closing(&mut self, i: u32, counters: &Counters, on_message: &mut OnMessage<'_>) {
        let flow = &self.flows[i as usize];
        if flow.closing && !flow.waiting && self.index.get(&flow.key) == Some(&i) {
            self.close(i, "FIN", counters, on_message);
        }
    }

    /// Put the stream in its place in the BY_HOLE list: by when its first
    /// hole became known, the earliest capture time of the ranges after it.
    fn reschedule(&mut self, i: u32) {
        let flow = &self.flows[i as usize];
        let since = (flow.buffer != NIL)
            .then(|| {
                self.ahead[flow.buffer as usize]
                    .ranges
                    .iter()
                    .map(|r| r.since)
                    .min()
            })
            .flatten();
        if flow.waiting && Some(flow.hole_since) == since {
            return;
        }
        if flow.waiting {
            self.unlink(BY_HOLE, i);
        }
        let flow = &mut self.flows[i as usize];
        flow.waiting = since.is_some();
        let Some(since) = since else {
            return;
        };
        flow.hole_since = since;
        // Usually the newest hole: look from the back.
        let mut after = self.back[BY_HOLE];
        while after != NIL && self.flows[after as usize].hole_since > since {
            after = self.flows[after as usize].links[BY_HOLE].prev;
        }
        self.link_after(BY_HOLE, i, after);
    }

    /// Give the stream a buffer if it has none; false when the pool is
    /// empty.
    fn take_buffer(&mut self, i: u32) -> bool {
        let flow = &mut self.flows[i as usize];
        if flow.buffer == NIL {
            match self.free_buffers.pop() {
                Some(b) => {
                    // A buffer never used yet: its `Ahead` is made now,
                    // within the capacity reserved at start-up.
                    if self.ahead.len() <= b as usize {
                        self.ahead.resize_with(b as usize + 1, Ahead::default);
                    }
                    flow.buffer = b
                }
                None => return false,
            }
        }
        true
    }

    fn drop_buffer_if_empty(&mut self, i: u32) {
        let flow = &mut self.flows[i as usize];
        if flow.buffer != NIL && flow.pending == 0 && self.ahead[flow.buffer as usize].ranges.is_empty() {
            self.ahead[flow.buffer as usize].marks.clear();
            self.free_buffers.push(flow.buffer);
            flow.buffer = NIL;
        }
    }

    fn open(
        &mut self,
        key: Key,
        base: u32,
        syn: bool,
        counters: &Counters,
        on_message: &mut OnMessage<'_>,
    ) -> u32 {
        Counters::inc(&counters.tcp_flows);
        if self.flows.len() == self.flows.capacity()
            && self.free_flows.is_empty()
            && let Some(oldest) = self.first(BY_USE)
        {
            Counters::inc(&counters.tcp_flows_evicted);
            self.close(oldest, "TCP_MAX_FLOWS", counters, on_message);
        }
        let flow = Flow {
            key,
            next_seq: base,
            last_seen: self.now,
            framer: if syn {
                Framer::default()
            } else {
                Framer::resynchronising()
            },
            buffer: NIL,
            pending: 0,
            closing: false,
            waiting: false,
            hole_since: self.now,
            links: [UNLINKED; 2],
        };
        let i = match self.free_flows.pop() {
            Some(i) => {
                self.flows[i as usize] = flow;
                i
            }
            None => {
                self.flows.push(flow);
                (self.flows.len() - 1) as u32
            }
        };
        self.index.insert(key, i);
        self.link_after(BY_USE, i, self.back[BY_USE]);
        i
    }

    fn release(&mut self, i: u32) {
        self.unlink(BY_USE, i);
        if self.flows[i as usize].waiting {
            self.unlink(BY_HOLE, i);
        }
        let flow = &mut self.flows[i as usize];
        flow.waiting = false;
        flow.framer.end(&mut self.ws);
        self.index.remove(&flow.key);
        if flow.buffer != NIL {
            let ahead = &mut self.ahead[flow.buffer as usize];
            ahead.ranges.clear();
            ahead.marks.clear();
            self.free_buffers.push(flow.buffer);
            flow.buffer = NIL;
        }
        self.free_flows.push(i);
    }

    fn touch(&mut self, i: u32) {
        self.flows[i as usize].last_seen = self.now;
        if self.back[BY_USE] != i {
            self.unlink(BY_USE, i);
            self.link_after(BY_USE, i, self.back[BY_USE]);
        }
    }

    /// Insert stream `i` into `list` after stream `after` (at the front
    /// when NIL).
    fn link_after(&mut self, list: usize, i: u32, after: u32) {
        let next = if after == NIL {
            self.front[list]
        } else {
            self.flows[after as usize].links[list].next
        };
        self.flows[i as usize].links[list] = Links { prev: after, next };
        match after {
            NIL => self.front[list] = i,
            a => self.flows[a as usize].links[list].next = i,
        }
        match next {
            NIL => self.back[list] = i,
            n => self.flows[n as usize].links[list].prev = i,
        }
    }

    fn unlink(&mut self, list: usize, i: u32) {
        let Links { prev, next } = self.flows[i as usize].links[list];
        match prev {
            NIL => self.front[list] = next,
            p => self.flows[p as usize].links[list].next = next,
        }
        match next {
            NIL => self.back[list] = prev,
            n => self.flows[n as usize].links[list].prev = prev,
        }
        self.flows[i as usize].links[list] = UNLINKED;
    }
}

/// What became of an out-of-order segment.
enum Kept {
    Stored,
    /// Every byte of it was kept already.
    Duplicate,
    /// Beyond the buffer, or no range or mark left.
    NoRoom,
}

fn origin(key: Key, transport: Transport, time: Timestamp) -> Origin {
    Origin {
        time,
        context: key.context,
        transport,
        src: key.src,
        dst: key.dst,
    }
}

/// Replace `v[range]` with `item`, moving the tail once; the caller
/// checked it fits.
fn splice<T: Copy, const N: usize>(v: &mut heapless::Vec<T, N>, range: core::ops::Range<usize>, item: T) {
    if range.is_empty() {
        let _fits = v.insert(range.start, item);
        return debug_assert!(_fits.is_ok());
    }
    let len = v.len();
    v[range.start] = item;
    v.copy_within(range.end..len, range.start + 1);
    v.truncate(len - range.len() + 1);
}

/// Remove the marks of the range that ends at `end`, the first range
/// whose marks are left.
fn drop_marks(marks: &mut heapless::Vec<Mark, MAX_MARKS>, end: u32) {
    let n = marks.iter().position(|m| m.end == end).map_or(0, |k| k + 1);
    let len = marks.len();
    marks.copy_within(n..len, 0);
    marks.truncate(len - n);
}

/// Count and log a hole of `gap` bytes skipped at `flow`'s next sequence
/// number, for `why`.
fn skipped(flow: &Flow, gap: u32, why: &str, counters: &Counters) {
    Counters::inc(&counters.tcp_gaps);
    Counters::add(&counters.tcp_gap_bytes, u64::from(gap));
    log::debug!(
        "TCP {} -> {}: skipped a hole of {gap} bytes at sequence number {} ({why})",
        flow.key.src,
        flow.key.dst,
        flow.next_seq
    );
}
