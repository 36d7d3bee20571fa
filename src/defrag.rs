//! Reassembly stage, part 1: IPv4 and IPv6 fragments back into datagrams,
//! in memory fixed at start-up.
//!
//! A fixed number of slots (FRAG_MAX_DATAGRAMS), each with a buffer of
//! FRAG_BUFFER_BYTES / FRAG_MAX_DATAGRAMS bytes and a bitmap of the 8-byte
//! blocks received. Fragments may arrive in any order and be of any size
//! (some carriers send fragments shorter than usual).
//!
//! Policies, each counted in fragments (frames), so that every fragment
//! ends either in a reassembled datagram (`frag_joined`) or under exactly
//! one reason:
//! - Overlaps and duplicates: the first copy of a byte wins; later
//!   fragments only fill what is still missing (`frag_overlaps`).
//! - Conflicting ends (two different last fragments, or data past the end):
//!   the datagram is dropped (`frag_invalid`).
//! - A datagram larger than a slot is dropped (`frag_too_large`).
//! - A datagram not complete FRAG_TIMEOUT_MS after its first fragment
//!   arrived (in capture time) is dropped (`frag_expired`); so is every
//!   unfinished one at the end of a capture file.
//! - When every slot is busy, the datagram whose first fragment is oldest is
//!   evicted (`frag_evicted`).
//!
//! What it does not do: look at the transport header; the reassembled
//! payload goes back to `decode`.

use crate::buffers::Buffers;
use crate::counters::Counters;
use crate::decode::{Context, Fragment};
use crate::envelope::Timestamp;
use core::net::IpAddr;

const BLOCK: usize = 8;

/// A reassembled datagram, borrowing its slot until the next call.
pub struct Datagram<'d> {
    /// Where its fragments were observed (all in the same place).
    pub context: Context,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    /// The capture time of the first fragment that arrived.
    pub first_seen: Timestamp,
    pub payload: &'d [u8],
}

/// What identifies one datagram: RFC 791's source, destination, protocol
/// and identification (for IPv6, RFC 8200's with the Fragment header's Next
/// Header as the protocol), and where its fragments were observed, so that
/// equal addresses and identifications on two VLANs are never joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    context: Context,
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    protocol: u8,
}

struct Slot {
    key: Option<Key>,
    first_seen: Timestamp,
    /// The datagram length, known once the last fragment arrived.
    total: Option<usize>,
    /// Blocks received, and how many.
    blocks: Box<[u64]>,
    blocks_set: usize,
    /// Fragments (frames) taken into this datagram so far.
    fragments: u64,
}

pub struct Defrag {
    slots: Vec<Slot>,
    /// One buffer per slot, same index.
    buffers: Buffers,
    timeout_us: i64,
}

impl Defrag {
    /// `datagrams` slots sharing `buffer_bytes`; fragments older than
    /// `timeout_ms` are dropped.
    pub fn new(datagrams: usize, buffer_bytes: usize, timeout_ms: u64) -> Defrag {
        let slot_bytes = (buffer_bytes / datagrams.max(1)).max(BLOCK);
        let blocks = slot_bytes.div_ceil(BLOCK).div_ceil(64);
        Defrag {
            slots: (0..datagrams.max(1))
                .map(|_| Slot {
                    key: None,
                    first_seen: Timestamp { secs: 0, micros: 0 },
                    total: None,
                    blocks: vec![0; blocks].into_boxed_slice(),
                    blocks_set: 0,
                    fragments: 0,
                })
                .collect(),
            buffers: Buffers::new(datagrams.max(1), slot_bytes),
            timeout_us: i64::try_from(timeout_ms)
                .unwrap_or(i64::MAX / 1000)
                .saturating_mul(1000),
        }
    }

    /// The largest datagram a slot holds, in bytes.
    pub fn datagram_capacity(&self) -> usize {
        self.buffers.each()
    }

    /// Add one fragment; returns the datagram when this fragment completed it.
    pub fn add<'d>(
        &'d mut self,
        now: Timestamp,
        frag: &Fragment<'_>,
        counters: &Counters,
    ) -> Option<Datagram<'d>> {
        Counters::inc(&counters.frag_fragments);
        self.expire(now, counters);
        let key = Key {
            context: frag.context,
            src: frag.src,
            dst: frag.dst,
            id: frag.id,
            protocol: frag.protocol,
        };
        let index = match self.slots.iter().position(|s| s.key == Some(key)) {
            Some(index) => index,
            None => self.claim(key, now, counters),
        };
        let slot = &mut self.slots[index];
        slot.fragments += 1;
        let end = frag.offset + frag.payload.len();
        let conflicting_end = match (frag.more, slot.total) {
            (false, Some(total)) => total != end,
            (true, Some(total)) => end > total,
            (_, None) => false,
        };
        if !frag.offset.is_multiple_of(BLOCK) || conflicting_end {
            slot.drop_fragments(&counters.frag_invalid);
            return None;
        }
        if end > self.buffers.each() {
            slot.drop_fragments(&counters.frag_too_large);
            return None;
        }
        if !frag.more {
            slot.total = Some(end);
        }
        if slot.fill(self.buffers.get_mut(index), frag.offset, frag.payload) {
            Counters::inc(&counters.frag_overlaps);
        }
        let total = slot.total?;
        if slot.blocks_set < total.div_ceil(BLOCK) {
            return None;
        }
        Counters::inc(&counters.frag_reassembled);
        let key = slot.key?;
        slot.drop_fragments(&counters.frag_joined);
        Some(Datagram {
            context: key.context,
            src: key.src,
            dst: key.dst,
            protocol: key.protocol,
            first_seen: slot.first_seen,
            payload: &self.buffers.get(index)[..total],
        })
    }

    /// Drop every unfinished datagram (end of a capture file).
    pub fn expire_all(&mut self, counters: &Counters) {
        for slot in self.slots.iter_mut().filter(|s| s.key.is_some()) {
            slot.drop_fragments(&counters.frag_expired);
        }
    }

    fn expire(&mut self, now: Timestamp, counters: &Counters) {
        for slot in self.slots.iter_mut().filter(|s| s.key.is_some()) {
            if micros_between(slot.first_seen, now) > self.timeout_us {
                slot.drop_fragments(&counters.frag_expired);
            }
        }
    }

    /// A free slot for `key`, evicting the oldest datagram if none is free.
    fn claim(&mut self, key: Key, now: Timestamp, counters: &Counters) -> usize {
        let index = match self.slots.iter().position(|s| s.key.is_none()) {
            Some(free) => free,
            None => {
                let oldest = (0..self.slots.len())
                    .min_by_key(|&i| self.slots[i].first_seen)
                    .unwrap_or(0);
                self.slots[oldest].drop_fragments(&counters.frag_evicted);
                oldest
            }
        };
        let slot = &mut self.slots[index];
        slot.key = Some(key);
        slot.first_seen = now;
        slot.total = None;
        slot.blocks.fill(0);
        slot.blocks_set = 0;
        index
    }
}

impl Slot {
    /// Free the slot, adding its fragments to `counter`: the reason they
    /// were dropped, or `frag_joined` once the datagram is complete.
    fn drop_fragments(&mut self, counter: &portable_atomic::AtomicU64) {
        Counters::add(counter, self.fragments);
        self.fragments = 0;
        self.key = None;
    }

    /// Copy the blocks of a fragment that are still missing; a trailing
    /// partial block counts only at the end of the datagram. Returns whether
    /// some blocks had already arrived.
    fn fill(&mut self, buf: &mut [u8], offset: usize, payload: &[u8]) -> bool {
        let mut overlapped = false;
        for (i, chunk) in payload.chunks(BLOCK).enumerate() {
            let start = offset + i * BLOCK;
            let block = start / BLOCK;
            let (word, bit) = (block / 64, 1u64 << (block % 64));
            if self.blocks[word] & bit != 0 {
                overlapped = true;
                continue;
            }
            buf[start..start + chunk.len()].copy_from_slice(chunk);
            if chunk.len() == BLOCK || self.total == Some(start + chunk.len()) {
                self.blocks[word] |= bit;
                self.blocks_set += 1;
            }
        }
        overlapped
    }
}

/// Microseconds from `earlier` to `later`, saturating.
pub fn micros_between(earlier: Timestamp, later: Timestamp) -> i64 {
    let secs = later.secs.saturating_sub(earlier.secs);
    secs.saturating_mul(1_000_000)
        .saturating_add(i64::from(later.micros) - i64::from(earlier.micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp { secs: 100, micros: 0 };

    fn frag(offset: usize, more: bool, payload: &[u8]) -> Fragment<'_> {
        Fragment {
            context: Context::default(),
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            id: 7,
            protocol: 17,
            offset,
            more,
            payload,
        }
    }

    fn datagram() -> Vec<u8> {
        (0..100u8).collect()
    }

    #[test]
    fn any_order() {
        let data = datagram();
        let c = Counters::default();
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]] {
            let mut d = Defrag::new(4, 4096, 1000);
            let parts = [
                frag(0, true, &data[..48]),
                frag(48, true, &data[48..96]),
                frag(96, false, &data[96..]),
            ];
            let mut done = None;
            for i in order {
                if let Some(dg) = d.add(T0, &parts[i], &c) {
                    done = Some(dg.payload.to_vec());
                }
            }
            assert_eq!(done.as_deref(), Some(&data[..]), "{order:?}");
        }
    }

    #[test]
    fn first_copy_wins_on_overlap() {
        let data = datagram();
        let other = [0xEEu8; 100];
        let c = Counters::default();
        let mut d = Defrag::new(4, 4096, 1000);
        assert!(d.add(T0, &frag(0, true, &data[..56]), &c).is_none());
        assert!(d.add(T0, &frag(48, true, &other[48..96]), &c).is_none());
        let done = d
            .add(T0, &frag(96, false, &data[96..]), &c)
            .unwrap()
            .payload
            .to_vec();
        assert_eq!(&done[..56], &data[..56]);
        assert_eq!(&done[56..96], &other[56..96]);
        assert_eq!(c.frag_overlaps.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn expiry_and_eviction_are_counted() {
        let data = datagram();
        let c = Counters::default();
        let mut d = Defrag::new(2, 4096, 1000);
        let mut f = frag(0, true, &data[..8]);
        for id in 0..3 {
            f.id = id;
            assert!(d.add(T0, &f, &c).is_none());
        }
        assert_eq!(c.frag_evicted.load(std::sync::atomic::Ordering::Relaxed), 1);
        f.id = 9;
        let later = Timestamp { secs: 102, micros: 0 };
        assert!(d.add(later, &f, &c).is_none());
        assert_eq!(c.frag_expired.load(std::sync::atomic::Ordering::Relaxed), 2);
    }

    #[test]
    fn conflicting_and_oversized_are_dropped() {
        let data = datagram();
        let c = Counters::default();
        let mut d = Defrag::new(2, 128, 1000);
        assert!(d.add(T0, &frag(8, false, &data[..40]), &c).is_none());
        assert!(d.add(T0, &frag(8, false, &data[..48]), &c).is_none());
        // Counted in fragments: the first one is dropped with the datagram.
        assert_eq!(c.frag_invalid.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert!(d.add(T0, &frag(64, false, &data[..8]), &c).is_none());
        assert_eq!(c.frag_too_large.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(d.add(T0, &frag(3, true, &data[..8]), &c).is_none());
        assert_eq!(c.frag_invalid.load(std::sync::atomic::Ordering::Relaxed), 3);
    }
}
