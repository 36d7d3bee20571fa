//! Equal fixed-size buffers carved from one allocation made at start-up.
//!
//! Reassembly needs many buffers of one size (a slot per IP datagram, a
//! buffer per TCP stream holding a partial message). Allocated one by one,
//! the allocator zeroes them and they count as resident memory from the
//! start; as one large allocation the kernel maps zero pages lazily, so
//! memory becomes resident only as traffic uses it, and never beyond the
//! configured total.

pub struct Buffers {
    bytes: Box<[u8]>,
    each: usize,
}

impl Buffers {
    /// `count` buffers of `each` bytes.
    pub fn new(count: usize, each: usize) -> Buffers {
        Buffers {
            bytes: vec![0; count * each].into_boxed_slice(),
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
