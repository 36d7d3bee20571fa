//! Reassembly stage, part 2: TCP byte streams, in memory fixed at start-up.
//!
//! One stream per direction, keyed by (source, destination) address and
//! port. Bytes are delivered to the SIP framer ([`crate::split`]) in order
//! and once: retransmitted bytes are trimmed, segments ahead of a hole wait
//! in the stream's buffer (up to [`MAX_HOLES`] ranges and the buffer's size).
//! A hole that never fills (a segment lost before the tap) is skipped when
//! the buffer cannot take more: the partial message is dropped and framing
//! resumes at the next start line (`tcp_gaps`).
//!
//! Memory: a table of TCP_MAX_FLOWS streams, a hash index sized for it, and
//! a pool of TCP_BUFFERS buffers of TCP_BUFFER_BYTES, all allocated at
//! start-up. The common case — a segment holding whole messages, in order —
//! is framed straight from the packet and needs no buffer; only a message
//! split across segments, or data after a hole, takes one. When no buffer
//! is free the partial message is dropped (`tcp_no_buffer`).
//!
//! Streams: a SYN sets the sequence base; a stream first seen mid-way starts
//! at its first segment and resynchronises at the next start line. FIN and
//! RST end a stream. A stream idle for TCP_IDLE_TIMEOUT_S of capture time
//! expires (`tcp_flows_expired`); when the table is full the least recently
//! used stream is evicted (`tcp_flows_evicted`). Pure ACKs never create a
//! stream.
//!
//! What it does not do: look inside the bytes (the framer does), or follow
//! the TCP state machine beyond what delivery needs.

use crate::buffers::Buffers;
use crate::counters::Counters;
use crate::decode::{Context, Segment, TcpHeader};
use crate::defrag::micros_between;
use crate::envelope::Timestamp;
use crate::split::Framer;
use core::net::SocketAddr;
use std::collections::HashMap;

/// Out-of-order ranges a stream keeps before it gives up on a hole.
pub const MAX_HOLES: usize = 8;
const NIL: u32 = u32::MAX;

/// One direction of a connection, and where it was observed: the same
/// addresses and ports on two VLANs are two streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    context: Context,
    src: SocketAddr,
    dst: SocketAddr,
}

struct Flow {
    key: Key,
    /// The sequence number of the next in-order byte.
    next_seq: u32,
    last_seen: Timestamp,
    framer: Framer,
    /// Index into the buffer pool, while the stream holds bytes.
    buffer: u32,
    /// In-order bytes at the front of the buffer, not yet consumed.
    pending: usize,
    /// Out-of-order data: absolute sequence ranges, stored in the buffer at
    /// `pending + (start - next_seq)`.
    holes: heapless::Vec<(u32, u32), MAX_HOLES>,
    /// Least-recently-used list links.
    newer: u32,
    older: u32,
}

pub struct TcpReassembler {
    flows: Vec<Flow>,
    index: HashMap<Key, u32>,
    free_flows: Vec<u32>,
    buffers: Buffers,
    free_buffers: Vec<u32>,
    newest: u32,
    oldest: u32,
    idle_us: i64,
    max_message: usize,
}

impl TcpReassembler {
    /// `max_flows` streams, `buffers` buffers of `buffer_bytes`; a stream
    /// idle for `idle_s` seconds of capture time expires.
    pub fn new(
        max_flows: usize,
        buffers: usize,
        buffer_bytes: usize,
        idle_s: u64,
        max_message: usize,
    ) -> Self {
        let max_flows = max_flows.max(1);
        TcpReassembler {
            flows: Vec::with_capacity(max_flows),
            // Twice the entries: removals never force the map to grow.
            index: HashMap::with_capacity(2 * max_flows),
            free_flows: Vec::with_capacity(max_flows),
            buffers: Buffers::new(buffers, buffer_bytes),
            free_buffers: (0..buffers as u32).rev().collect(),
            newest: NIL,
            oldest: NIL,
            idle_us: i64::try_from(idle_s)
                .unwrap_or(i64::MAX / 1_000_000)
                .saturating_mul(1_000_000),
            max_message: max_message.min(buffer_bytes),
        }
    }

    /// Take one TCP segment; each SIP message it completes goes to
    /// `on_message`.
    pub fn add(
        &mut self,
        now: Timestamp,
        seg: &Segment<'_>,
        tcp: TcpHeader,
        counters: &Counters,
        on_message: &mut dyn FnMut(&[u8]),
    ) {
        Counters::inc(&counters.tcp_segments);
        self.expire_idle(now, counters);
        let key = Key {
            context: seg.context,
            src: seg.src,
            dst: seg.dst,
        };
        let existing = self.index.get(&key).copied();
        if tcp.rst {
            if let Some(i) = existing {
                self.release(i);
            }
            return;
        }
        let i = match existing {
            Some(i) => i,
            None if tcp.syn || !seg.payload.is_empty() => {
                // Mid-stream: the first segment seen sets the base.
                let base = if tcp.syn { tcp.seq.wrapping_add(1) } else { tcp.seq };
                self.open(key, base, counters, tcp.syn)
            }
            None => return,
        };
        self.touch(i, now);
        if tcp.syn {
            let flow = &mut self.flows[i as usize];
            flow.next_seq = tcp.seq.wrapping_add(1);
            flow.framer = Framer::default();
            flow.pending = 0;
            flow.holes.clear();
        } else if !seg.payload.is_empty() {
            self.data(i, tcp.seq, seg.payload, counters, on_message);
        }
        if tcp.fin {
            self.release(i);
        }
    }

    fn data(
        &mut self,
        i: u32,
        seq: u32,
        payload: &[u8],
        counters: &Counters,
        on_message: &mut dyn FnMut(&[u8]),
    ) {
        let flow = &mut self.flows[i as usize];
        let ahead = seq.wrapping_sub(flow.next_seq) as i32;
        if ahead > 0 {
            return self.out_of_order(i, seq, payload, counters, on_message);
        }
        // Bytes before next_seq were delivered already: trim them.
        let old = ahead.unsigned_abs() as usize;
        if old >= payload.len() {
            Counters::inc(&counters.tcp_retransmissions);
            return;
        }
        let payload = &payload[old..];

        // In order, and nothing buffered: frame straight from the packet.
        if flow.pending == 0 && flow.holes.is_empty() {
            flow.next_seq = flow.next_seq.wrapping_add(payload.len() as u32);
            let used = flow
                .framer
                .split(payload, self.max_message, counters, &mut *on_message);
            let rest = &payload[used..];
            if !rest.is_empty() && self.ensure_buffer(i, counters) {
                let flow = &mut self.flows[i as usize];
                self.buffers.get_mut(flow.buffer as usize)[..rest.len()].copy_from_slice(rest);
                flow.pending = rest.len();
            }
            return self.drop_buffer_if_empty(i);
        }

        let capacity = self.buffer_len();
        let flow = &mut self.flows[i as usize];
        if flow.pending + payload.len() > capacity {
            // The message in progress cannot fit: drop it, start over.
            Counters::inc(&counters.tcp_oversize);
            flow.pending = 0;
            flow.holes.clear();
            flow.framer.reset();
            let next_seq = flow.next_seq;
            return self.data(i, next_seq, payload, counters, on_message);
        }
        let buffer = &mut self.buffers.get_mut(flow.buffer as usize);
        buffer[flow.pending..flow.pending + payload.len()].copy_from_slice(payload);
        flow.pending += payload.len();
        flow.next_seq = flow.next_seq.wrapping_add(payload.len() as u32);
        self.merge_and_frame(i, counters, on_message);
    }

    /// Keep a segment that arrived ahead of a hole. When it cannot be kept,
    /// the hole is given up on (a segment lost before the tap).
    fn out_of_order(
        &mut self,
        i: u32,
        seq: u32,
        payload: &[u8],
        counters: &Counters,
        on_message: &mut dyn FnMut(&[u8]),
    ) {
        if self.ensure_buffer(i, counters) {
            let capacity = self.buffer_len();
            let flow = &mut self.flows[i as usize];
            let offset = flow.pending + seq.wrapping_sub(flow.next_seq) as usize;
            let end = seq.wrapping_add(payload.len() as u32);
            if offset + payload.len() <= capacity && add_range(&mut flow.holes, flow.next_seq, seq, end) {
                Counters::inc(&counters.tcp_out_of_order);
                self.buffers.get_mut(flow.buffer as usize)[offset..offset + payload.len()]
                    .copy_from_slice(payload);
                return;
            }
        }
        Counters::inc(&counters.tcp_gaps);
        let flow = &mut self.flows[i as usize];
        if flow.holes.is_empty() {
            // Nothing kept to resume from: this segment starts afresh.
            flow.pending = 0;
            flow.framer.reset();
            flow.next_seq = seq;
        } else {
            self.skip_hole(i, counters, on_message);
        }
        self.data(i, seq, payload, counters, on_message);
    }

    /// Drop the partial message and the hole before the first out-of-order
    /// range; the stream resumes there, at the next start line. At least
    /// one range is absorbed, so retrying terminates.
    fn skip_hole(&mut self, i: u32, counters: &Counters, on_message: &mut dyn FnMut(&[u8])) {
        let flow = &mut self.flows[i as usize];
        let next = flow.next_seq;
        let Some(first) = flow
            .holes
            .iter()
            .map(|&(start, _)| start)
            .min_by_key(|&s| s.wrapping_sub(next))
        else {
            return;
        };
        let from = flow.pending + first.wrapping_sub(next) as usize;
        let used = flow.pending
            + flow
                .holes
                .iter()
                .map(|&(_, end)| end.wrapping_sub(next) as usize)
                .max()
                .unwrap_or(0);
        self.buffers
            .get_mut(flow.buffer as usize)
            .copy_within(from..used, 0);
        flow.next_seq = first;
        flow.pending = 0;
        flow.framer.reset();
        self.merge_and_frame(i, counters, on_message);
    }

    /// Join out-of-order ranges that now follow the in-order bytes, frame,
    /// and move what is left to the front of the buffer.
    fn merge_and_frame(&mut self, i: u32, counters: &Counters, on_message: &mut dyn FnMut(&[u8])) {
        let flow = &mut self.flows[i as usize];
        while let Some(at) = flow
            .holes
            .iter()
            .position(|&(start, _)| start.wrapping_sub(flow.next_seq) as i32 <= 0)
        {
            let (_, end) = flow.holes.swap_remove(at);
            let extra = end.wrapping_sub(flow.next_seq) as i32;
            if extra > 0 {
                flow.pending += extra as usize;
                flow.next_seq = end;
            }
        }
        let buffer = &mut self.buffers.get_mut(flow.buffer as usize);
        let used = flow.framer.split(
            &buffer[..flow.pending],
            self.max_message,
            counters,
            &mut *on_message,
        );
        let tail = flow.pending
            + flow
                .holes
                .iter()
                .map(|&(_, end)| end.wrapping_sub(flow.next_seq) as usize)
                .max()
                .unwrap_or(0);
        buffer.copy_within(used..tail, 0);
        flow.pending -= used;
        self.drop_buffer_if_empty(i);
    }

    fn buffer_len(&self) -> usize {
        self.buffers.each()
    }

    /// Give the stream a buffer if it has none; false (and counted) when the
    /// pool is empty, in which case the partial message is dropped.
    fn ensure_buffer(&mut self, i: u32, counters: &Counters) -> bool {
        let flow = &mut self.flows[i as usize];
        if flow.buffer != NIL {
            return true;
        }
        match self.free_buffers.pop() {
            Some(b) => {
                flow.buffer = b;
                true
            }
            None => {
                Counters::inc(&counters.tcp_no_buffer);
                flow.framer.reset();
                false
            }
        }
    }

    fn drop_buffer_if_empty(&mut self, i: u32) {
        let flow = &mut self.flows[i as usize];
        if flow.buffer != NIL && flow.pending == 0 && flow.holes.is_empty() {
            self.free_buffers.push(flow.buffer);
            flow.buffer = NIL;
        }
    }

    fn open(&mut self, key: Key, base: u32, counters: &Counters, syn: bool) -> u32 {
        Counters::inc(&counters.tcp_flows);
        if self.flows.len() == self.flows.capacity() && self.free_flows.is_empty() {
            Counters::inc(&counters.tcp_flows_evicted);
            self.release(self.oldest);
        }
        let flow = Flow {
            key,
            next_seq: base,
            last_seen: Timestamp { secs: 0, micros: 0 },
            framer: if syn {
                Framer::default()
            } else {
                Framer::resynchronising()
            },
            buffer: NIL,
            pending: 0,
            holes: heapless::Vec::new(),
            newer: NIL,
            older: NIL,
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
        self.link_newest(i);
        i
    }

    fn release(&mut self, i: u32) {
        if i == NIL {
            return;
        }
        self.unlink(i);
        let flow = &mut self.flows[i as usize];
        self.index.remove(&flow.key);
        if flow.buffer != NIL {
            self.free_buffers.push(flow.buffer);
            flow.buffer = NIL;
        }
        self.free_flows.push(i);
    }

    fn expire_idle(&mut self, now: Timestamp, counters: &Counters) {
        while self.oldest != NIL
            && micros_between(self.flows[self.oldest as usize].last_seen, now) > self.idle_us
        {
            Counters::inc(&counters.tcp_flows_expired);
            self.release(self.oldest);
        }
    }

    fn touch(&mut self, i: u32, now: Timestamp) {
        self.flows[i as usize].last_seen = now;
        if self.newest != i {
            self.unlink(i);
            self.link_newest(i);
        }
    }

    fn link_newest(&mut self, i: u32) {
        self.flows[i as usize].older = self.newest;
        self.flows[i as usize].newer = NIL;
        if self.newest != NIL {
            self.flows[self.newest as usize].newer = i;
        }
        self.newest = i;
        if self.oldest == NIL {
            self.oldest = i;
        }
    }

    fn unlink(&mut self, i: u32) {
        let (newer, older) = (self.flows[i as usize].newer, self.flows[i as usize].older);
        if newer != NIL {
            self.flows[newer as usize].older = older;
        } else if self.newest == i {
            self.newest = older;
        }
        if older != NIL {
            self.flows[older as usize].newer = newer;
        } else if self.oldest == i {
            self.oldest = newer;
        }
        self.flows[i as usize].newer = NIL;
        self.flows[i as usize].older = NIL;
    }
}

/// Record the out-of-order range `start..end`, joining every range it
/// overlaps or touches, so duplicates and neighbours take no extra slot.
/// False when a new slot is needed and none is left.
fn add_range(ranges: &mut heapless::Vec<(u32, u32), MAX_HOLES>, base: u32, start: u32, end: u32) -> bool {
    let pos = |s: u32| s.wrapping_sub(base);
    let (mut start, mut end) = (start, end);
    let mut i = 0;
    while i < ranges.len() {
        let (s, e) = ranges[i];
        if pos(s) <= pos(end) && pos(start) <= pos(e) {
            start = if pos(s) < pos(start) { s } else { start };
            end = if pos(e) > pos(end) { e } else { end };
            ranges.swap_remove(i);
        } else {
            i += 1;
        }
    }
    ranges.push((start, end)).is_ok()
}
