//! Fixed zeroed memory made at start-up that becomes resident only as
//! traffic touches it: [`Region`], and [`Buffers`], equal buffers carved
//! from one region.
//!
//! The agent sizes its large buffers once (the store, QUEUE_BYTES; the
//! reassembly buffers; minimq's transmit buffer), most of which a quiet
//! link never uses. Allocated with `vec![0; n]`, whether they count as
//! resident memory from the start depends on the allocator: glibc's maps
//! large zeroed blocks lazily, musl's (the static builds for the
//! appliances, and OpenWrt) writes zeros over the whole block, so every
//! page was resident before the first packet (13.5 MiB, against 5 MiB with
//! glibc, for a small capture: docs/performance.md "Peak memory"). A
//! [`Region`] is an anonymous private mapping instead: the kernel gives a
//! page its frame on the first write to it, whatever the C library, and
//! never more than the configured size.
//!
//! What it does not do: give memory back. A page once written stays
//! resident until the agent exits, as it would with any allocator.

use memmap2::MmapMut;
use std::ops::{Deref, DerefMut};

/// A zeroed byte region of fixed size, an anonymous private mapping
/// (`mmap(MAP_PRIVATE | MAP_ANONYMOUS)`): its pages become resident on
/// first write. Out of address space, it aborts like a failed allocation.
pub struct Region(MmapMut);

impl Region {
    /// `len` zero bytes (`len` may be 0).
    pub fn new(len: usize) -> Region {
        match MmapMut::map_anon(len) {
            Ok(map) => Region(map),
            Err(_) => std::alloc::handle_alloc_error(
                std::alloc::Layout::array::<u8>(len).unwrap_or(std::alloc::Layout::new::<u8>()),
            ),
        }
    }
}

impl Deref for Region {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl DerefMut for Region {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

/// `count` buffers of one size in one [`Region`]: a slot per IP datagram,
/// a buffer per TCP stream holding a partial message.
pub struct Buffers {
    bytes: Region,
    each: usize,
}

impl Buffers {
    /// `count` buffers of `each` bytes.
    pub fn new(count: usize, each: usize) -> Buffers {
        Buffers {
            bytes: Region::new(count * each),
            each,
        }
    }

    /// The size of each buffer.
    pub fn each(&self) -> usize {
        self.each
    }

    pub fn get(&self, i: usize) -> &[u8] {
        &self.bytes[i * self.each..(i + 1) * self.each]
    }

    pub fn get_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.bytes[i * self.each..(i + 1) * self.each]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_zeroed_writable_and_may_be_empty() {
        let mut region = Region::new(3 * 4096 + 5);
        assert!(region.iter().all(|&b| b == 0));
        region[3 * 4096 + 4] = 7;
        assert_eq!(region.len(), 3 * 4096 + 5);
        assert_eq!(region[3 * 4096 + 4], 7);
        assert!(Region::new(0).is_empty());
        let mut buffers = Buffers::new(2, 3);
        buffers.get_mut(1).copy_from_slice(b"abc");
        assert_eq!((buffers.get(0), buffers.get(1)), (&[0u8; 3][..], &b"abc"[..]));
    }
}
