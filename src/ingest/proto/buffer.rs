//! [`FrameBuffer`]: the fixed-capacity input buffer both ends of the
//! ingest protocol read into (the server one per connection, `weir feed`
//! one per connection's reader).
//!
//! Limits: never holds more than the capacity it was made with (at least
//! [`super::PREAMBLE_BYTES`], 6; callers give `8 + frame_bytes_max`).
//! Must never: grow, or hand out bytes that were not filled.

use super::PREAMBLE_BYTES;

/// A fixed-capacity input buffer: read into [`FrameBuffer::spare`], mark
/// with [`FrameBuffer::filled`], decode from [`FrameBuffer::data`], drop
/// with [`FrameBuffer::consume`]. Never grows past its capacity, which
/// must be at least [`Limits::buffer_bytes`] so one whole frame fits.
#[derive(Debug)]
pub struct FrameBuffer {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl FrameBuffer {
    pub fn new(capacity_bytes: usize) -> Self {
        FrameBuffer {
            buf: vec![0u8; capacity_bytes.max(PREAMBLE_BYTES)].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// The unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Free space to read into, after moving the unconsumed bytes to the
    /// front if that makes room. Empty only when the buffer is full.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 && (self.end == self.buf.len() || self.start == self.end) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes of the last [`FrameBuffer::spare`] as read.
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    #[cfg(any(test, feature = "testing"))]
    /// Copies as much of `bytes` as fits; returns how many.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let spare = self.spare();
        let n = spare.len().min(bytes.len());
        spare[..n].copy_from_slice(&bytes[..n]);
        self.filled(n);
        n
    }

    /// Drops `n` decoded bytes.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_buffer_compacts_and_never_grows() {
        let mut fb = FrameBuffer::new(8);
        assert_eq!(fb.push(b"0123456789"), 8);
        assert!(fb.spare().is_empty());
        fb.consume(5);
        assert_eq!(fb.data(), b"567");
        assert_eq!(fb.spare().len(), 5);
        assert_eq!(fb.push(b"ab"), 2);
        assert_eq!(fb.data(), b"567ab");
    }
}
