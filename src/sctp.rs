//! Reassembly stage, part 3: SCTP user messages (RFC 9260 §6.9, RFC 8260),
//! in memory fixed at start-up.
//!
//! SIP over SCTP (RFC 4168) sends each SIP message as one user message;
//! a user message larger than the path allows is fragmented over several
//! DATA chunks (B on the first, E on the last, consecutive TSNs, the same
//! stream and Stream Sequence Number) or I-DATA chunks (the same Message
//! Identifier, Fragment Sequence Numbers 0, 1, ...; fragments of several
//! messages may interleave). Each user message is handed on whole, with
//! the capture time of the packet that completed it.
//!
//! An association is followed per direction and per place, keyed by
//! source and destination address and port, Verification Tag and where it
//! was observed (capture interface, VLAN tags): the same addresses on two
//! VLANs are two associations. A multi-homed association's paths are
//! followed separately, so a user message whose fragments switch path is
//! not joined (they are counted when their buffer is evicted or the
//! capture ends).
//!
//! Duplicates: a retransmitted chunk carries the TSN it had, so each
//! association remembers which of the last [`TSN_WINDOW`] TSNs below the
//! highest (in serial-number arithmetic, RFC 1982) it has seen; a TSN seen
//! before, or older than the window, is a duplicate (`sctp_duplicates`),
//! and each user message is published once.
//!
//! Order: a message is handed on as soon as it is complete, whatever its
//! Stream Sequence Number: a passive observer publishes what it saw, so
//! ordered and unordered (U) messages are treated alike. Fragments may
//! arrive in any order.
//!
//! Memory: a table of SCTP_MAX_ASSOCIATIONS associations (a TSN window of
//! 128 bytes each) with a hash index sized for it, and SCTP_BUFFERS
//! buffers of SCTP_BUFFER_BYTES (each with room to note [`MAX_FRAGMENTS`]
//! fragments) plus one to put fragments in order, all allocated at
//! start-up. A message in one chunk (B and E set: SIP messages usually
//! are) is handed on straight from the packet and needs no buffer. When
//! every buffer is busy, the least recently used one is evicted; when the
//! table is full, the least recently used association is, with its
//! buffers (both found by a scan, only then). Evicted chunks are counted.
//!
//! What it does not do: follow the association's state (INIT, SACK,
//! SHUTDOWN are skipped), look at the Payload Protocol Identifier (SIP is
//! recognised by content, as on UDP), or time out unfinished messages (a
//! buffer is reused when needed; at the end of the capture they are
//! counted, `sctp_chunks_expired`).

use crate::buffers::{Buffers, Region};
use crate::config::ReassemblyLimits;
use crate::counters::Counters;
use crate::decode::{Context, DataChunk, MessageId, Sctp, Transport};
use crate::envelope::{Origin, Timestamp};
use core::net::SocketAddr;
use std::collections::HashMap;

/// TSNs below the highest seen whose duplicates an association recognises
/// (a bitmap, 128 bytes). A retransmission comes after at least a
/// retransmission timeout (RFC 9260 §6.3: 1 s at least), by when a busy
/// association has sent this many chunks only at over 1,000 chunks a
/// second in one direction.
pub const TSN_WINDOW: usize = 1024;
/// Fragments one user message may have: a 64 KiB message over a path of
/// 576 bytes needs 120. 12 bytes each, 1.5 KiB a buffer.
pub const MAX_FRAGMENTS: usize = 128;
const NIL: u32 = u32::MAX;
const WORDS: usize = TSN_WINDOW / 64;

/// One direction of an association, and where it was observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    context: Context,
    src: SocketAddr,
    dst: SocketAddr,
    verification_tag: u32,
}

/// Which TSNs of an association have been seen: `highest` and, bit `i`
/// of `seen`, `highest - i`.
#[derive(Debug, Clone, Copy, Default)]
struct TsnWindow {
    started: bool,
    highest: u32,
    seen: [u64; WORDS],
}

impl TsnWindow {
    /// Note `tsn`; false when it was seen before or is older than the
    /// window (taken as a retransmission).
    fn first_time(&mut self, tsn: u32) -> bool {
        if !self.started {
            *self = TsnWindow {
                started: true,
                highest: tsn,
                seen: [0; WORDS],
            };
            self.seen[0] = 1;
            return true;
        }
        // RFC 1982: `tsn` is after `highest` when less than 2^31 ahead.
        let ahead = tsn.wrapping_sub(self.highest) as i32;
        if ahead > 0 {
            self.shift(ahead.unsigned_abs() as usize);
            self.highest = tsn;
            self.seen[0] |= 1;
            return true;
        }
        let behind = ahead.unsigned_abs() as usize;
        if behind >= TSN_WINDOW {
            return false;
        }
        let (word, bit) = (behind / 64, 1u64 << (behind % 64));
        let new = self.seen[word] & bit == 0;
        self.seen[word] |= bit;
        new
    }

    /// Move every bit `n` places towards the old end.
    fn shift(&mut self, n: usize) {
        let (words, bits) = (n / 64, n % 64);
        for w in (0..WORDS).rev() {
            let from = |back: usize| w.checked_sub(words + back).map_or(0, |s| self.seen[s]);
            self.seen[w] = match bits {
                0 => from(0),
                _ => from(0) << bits | from(1) >> (64 - bits),
            };
        }
    }
}

struct Association {
    key: Key,
    window: TsnWindow,
    /// When last used, on the reassembler's clock.
    used: u64,
}

/// One fragment in a buffer: its position in the message (TSN or FSN),
/// where its bytes are in the buffer, and whether it is the first or last.
#[derive(Debug, Clone, Copy)]
struct Fragment {
    position: u32,
    at: u32,
    len: u32,
    beginning: bool,
    ending: bool,
}

/// A buffer collecting the fragments of one user message.
struct Slot {
    /// The association's index; `NIL` when the buffer is free.
    association: u32,
    stream: u16,
    unordered: bool,
    message: MessageId,
    /// Bytes of the buffer in use.
    filled: usize,
    /// In arrival order until the message completes.
    fragments: heapless::Vec<Fragment, MAX_FRAGMENTS>,
    /// The message was too large: its remaining chunks are counted as
    /// oversize until its last one.
    discarding: bool,
    used: u64,
}

const FREE: Slot = Slot {
    association: NIL,
    stream: 0,
    unordered: false,
    message: MessageId::Unordered,
    filled: 0,
    fragments: heapless::Vec::new(),
    discarding: false,
    used: 0,
};

/// Where each complete user message goes: its origin (capture time,
/// addresses, transport `sctp`) and bytes.
pub type OnMessage<'a> = dyn FnMut(&Origin, &[u8]) + 'a;

pub struct SctpReassembler {
    associations: Vec<Association>,
    index: HashMap<Key, u32>,
    max_associations: usize,
    slots: Vec<Slot>,
    buffers: Buffers,
    /// Where fragments that arrived out of order are put in order: a
    /// [`Region`], resident only once a capture has such fragments.
    assembly: Region,
    /// Counts uses, for least-recently-used eviction.
    clock: u64,
    /// The largest user message handed on, in bytes.
    max_message: usize,
}

impl SctpReassembler {
    /// Associations and buffers as `limits` says (the SCTP_ keys); user
    /// messages over `max_message` bytes (or, when fragmented, over
    /// SCTP_BUFFER_BYTES) are dropped and counted (`sctp_oversize`).
    pub fn new(limits: &ReassemblyLimits, max_message: usize) -> Self {
        let max_associations = limits.sctp_associations.max(1);
        let each = limits.sctp_buffer_bytes;
        SctpReassembler {
            associations: Vec::with_capacity(max_associations),
            // Twice the entries: removals never force the map to grow.
            index: HashMap::with_capacity(2 * max_associations),
            max_associations,
            // Reserved, not written: a slot is about 2 KiB (its fragment
            // list), made on the buffer's first use, so a capture without
            // fragmented SCTP never makes them resident (68 KiB by default).
            slots: Vec::with_capacity(limits.sctp_buffers),
            buffers: Buffers::new(limits.sctp_buffers, each),
            assembly: Region::new(each),
            clock: 0,
            max_message,
        }
    }

    /// Take one SCTP packet captured at `time`: each user message its DATA
    /// and I-DATA chunks complete goes to `on_message`. Other chunks are
    /// skipped; a malformed chunk ends the packet's walk
    /// (`sctp_malformed_chunks`).
    pub fn add(
        &mut self,
        time: Timestamp,
        sctp: &Sctp<'_>,
        counters: &Counters,
        on_message: &mut OnMessage<'_>,
    ) {
        Counters::inc(&counters.sctp_packets);
        if !sctp.packet.checksum_ok() {
            Counters::inc(&counters.sctp_bad_checksums);
        }
        let origin = Origin {
            time,
            context: sctp.context,
            transport: Transport::Sctp,
            src: sctp.src,
            dst: sctp.dst,
        };
        let key = Key {
            context: sctp.context,
            src: sctp.src,
            dst: sctp.dst,
            verification_tag: sctp.packet.verification_tag(),
        };
        // Looked up at the first data chunk: control chunks alone (SACK,
        // HEARTBEAT) take no entry.
        let mut association = None;
        for chunk in sctp.packet.chunks() {
            let data = match chunk.map(DataChunk::new_checked) {
                Ok(None) => continue,
                Ok(Some(Ok(data))) => data,
                Err(_) | Ok(Some(Err(_))) => {
                    Counters::inc(&counters.sctp_malformed_chunks);
                    break;
                }
            };
            Counters::inc(&counters.sctp_data_chunks);
            let a = match association {
                Some(a) => a,
                None => *association.insert(self.association(key, counters)),
            };
            self.data(a, &data, &origin, counters, on_message);
        }
    }

    /// End of the capture: unfinished user messages never complete.
    pub fn finish(&mut self, counters: &Counters) {
        for s in 0..self.slots.len() {
            if self.slots[s].association != NIL {
                self.drop_slot(s, &counters.sctp_chunks_expired);
            }
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The index of the association `key`, opened (evicting the least
    /// recently used when the table is full) if new.
    fn association(&mut self, key: Key, counters: &Counters) -> u32 {
        let used = self.tick();
        if let Some(&a) = self.index.get(&key) {
            self.associations[a as usize].used = used;
            return a;
        }
        Counters::inc(&counters.sctp_associations);
        let fresh = Association {
            key,
            window: TsnWindow::default(),
            used,
        };
        let a = if self.associations.len() < self.max_associations {
            self.associations.push(fresh);
            self.associations.len() - 1
        } else {
            let (a, _) = self
                .associations
                .iter()
                .enumerate()
                .min_by_key(|(_, a)| a.used)
                .expect("the table is full, so not empty");
            Counters::inc(&counters.sctp_associations_evicted);
            self.index.remove(&self.associations[a].key);
            for s in 0..self.slots.len() {
                if self.slots[s].association == a as u32 {
                    self.drop_slot(s, &counters.sctp_chunks_evicted);
                }
            }
            self.associations[a] = fresh;
            a
        };
        self.index.insert(key, a as u32);
        a as u32
    }

    fn data(
        &mut self,
        a: u32,
        chunk: &DataChunk<'_>,
        origin: &Origin,
        counters: &Counters,
        on_message: &mut OnMessage<'_>,
    ) {
        if !self.associations[a as usize].window.first_time(chunk.tsn()) {
            return Counters::inc(&counters.sctp_duplicates);
        }
        let user_data = chunk.user_data();
        if user_data.is_empty() {
            // RFC 9260 §6.2: a protocol violation the receiver aborts on.
            return Counters::inc(&counters.sctp_chunks_invalid);
        }
        if chunk.beginning() && chunk.ending() {
            if user_data.len() > self.max_message {
                return Counters::inc(&counters.sctp_oversize);
            }
            Counters::inc(&counters.sctp_chunks_joined);
            return on_message(origin, user_data);
        }
        let (stream, unordered, message) = (chunk.stream_id(), chunk.unordered(), chunk.message_id());
        let found = self.slots.iter().position(|s| {
            s.association == a && s.stream == stream && s.unordered == unordered && s.message == message
        });
        let Some(s) = found.or_else(|| self.take_slot(counters)) else {
            // No buffer at all (SCTP_BUFFERS 0).
            return Counters::inc(&counters.sctp_chunks_evicted);
        };
        let used = self.tick();
        let limit = self.max_message.min(self.buffers.each());
        let slot = &mut self.slots[s];
        if found.is_none() {
            *slot = Slot {
                association: a,
                stream,
                unordered,
                message,
                used,
                ..FREE
            };
        }
        slot.used = used;
        if slot.discarding || slot.filled + user_data.len() > limit || slot.fragments.is_full() {
            Counters::inc(&counters.sctp_oversize);
            let discarding = !chunk.ending();
            self.drop_slot(s, &counters.sctp_oversize);
            if discarding {
                // Keep the slot's key to recognise the rest of the message.
                let slot = &mut self.slots[s];
                *slot = Slot {
                    association: a,
                    stream,
                    unordered,
                    message,
                    used,
                    discarding: true,
                    ..FREE
                };
            }
            return;
        }
        let at = slot.filled;
        self.buffers.get_mut(s)[at..at + user_data.len()].copy_from_slice(user_data);
        slot.filled += user_data.len();
        // Cannot fail: checked not full above. Offsets and lengths fit u32:
        // a buffer is at most 16 MiB (SCTP_BUFFER_BYTES).
        let _ = slot.fragments.push(Fragment {
            position: chunk.position(),
            at: at as u32,
            len: user_data.len() as u32,
            beginning: chunk.beginning(),
            ending: chunk.ending(),
        });
        self.complete(s, origin, counters, on_message);
    }

    /// A free buffer, or the least recently used one, evicted; `None`
    /// when there are no buffers.
    fn take_slot(&mut self, counters: &Counters) -> Option<usize> {
        if let Some(s) = self.slots.iter().position(|s| s.association == NIL) {
            return Some(s);
        }
        // A buffer never used yet: its slot is made now, within the
        // capacity reserved at start-up (no allocation).
        if self.slots.len() < self.slots.capacity() {
            self.slots.push(FREE);
            return Some(self.slots.len() - 1);
        }
        let (s, _) = self.slots.iter().enumerate().min_by_key(|(_, s)| s.used)?;
        self.drop_slot(s, &counters.sctp_chunks_evicted);
        Some(s)
    }

    /// Free buffer `s`, counting its fragments under `reason`.
    fn drop_slot(&mut self, s: usize, reason: &portable_atomic::AtomicU64) {
        Counters::add(reason, self.slots[s].fragments.len() as u64);
        self.slots[s] = FREE;
    }

    /// If buffer `s` holds a first fragment, a last one and every one
    /// between, hand the message on and free the buffer. Fragments left
    /// over (of another unordered message on the same stream, or with
    /// positions that do not line up) are counted invalid.
    fn complete(&mut self, s: usize, origin: &Origin, counters: &Counters, on_message: &mut OnMessage<'_>) {
        let slot = &mut self.slots[s];
        let fragments = &mut slot.fragments;
        let (Some(first), Some(last)) = (
            fragments.iter().find(|f| f.beginning),
            fragments.iter().find(|f| f.ending),
        ) else {
            return;
        };
        let base = first.position;
        // Compared before adding one: a span of u32::MAX would overflow a
        // 32-bit usize.
        let span = last.position.wrapping_sub(base) as usize;
        if span >= fragments.len() {
            return;
        }
        let count = span + 1;
        fragments.sort_unstable_by_key(|f| f.position.wrapping_sub(base));
        if !fragments
            .iter()
            .take(count)
            .enumerate()
            .all(|(i, f)| f.position.wrapping_sub(base) as usize == i)
        {
            return;
        }
        let parts = &fragments[..count];
        let total: usize = parts.iter().map(|f| f.len as usize).sum();
        let start = parts[0].at as usize;
        let in_place = parts
            .iter()
            .scan(start, |next, f| {
                let here = f.at as usize == *next;
                *next += f.len as usize;
                Some(here)
            })
            .all(|here| here);
        Counters::add(&counters.sctp_chunks_joined, count as u64);
        Counters::add(&counters.sctp_chunks_invalid, (fragments.len() - count) as u64);
        let buffer = self.buffers.get(s);
        if in_place {
            on_message(origin, &buffer[start..start + total]);
        } else {
            let mut n = 0;
            for f in parts {
                let (at, len) = (f.at as usize, f.len as usize);
                self.assembly[n..n + len].copy_from_slice(&buffer[at..at + len]);
                n += len;
            }
            on_message(origin, &self.assembly[..total]);
        }
        self.slots[s] = FREE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsn_window_tells_duplicates_across_the_wrap() {
        let mut w = TsnWindow::default();
        let start = u32::MAX - 5;
        assert!(w.first_time(start));
        assert!(!w.first_time(start));
        for t in 1..20u32 {
            assert!(w.first_time(start.wrapping_add(t)), "{t}");
        }
        assert!(!w.first_time(start.wrapping_add(3)));
        assert!(w.first_time(start.wrapping_add(100)));
        assert!(!w.first_time(start.wrapping_add(10)));
        // A gap filled late is new; then older than the window is not.
        assert!(w.first_time(start.wrapping_add(50)));
        assert!(!w.first_time(start.wrapping_add(50)));
        assert!(w.first_time(start.wrapping_add(100 + 2000)));
        assert!(!w.first_time(start.wrapping_add(100 + 2000 - TSN_WINDOW as u32)));
        assert!(w.first_time(start.wrapping_add(100 + 2000 - TSN_WINDOW as u32 + 1)));
        // Shifts of every size keep the bits that stay in the window.
        for shift in [1usize, 63, 64, 65, 200, 1023] {
            let mut w = TsnWindow::default();
            assert!(w.first_time(0));
            assert!(w.first_time(shift as u32));
            assert!(!w.first_time(0));
            assert!(w.first_time(1) || shift == 1);
        }
    }
}
