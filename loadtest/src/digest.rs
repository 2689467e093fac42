//! FNV-1a 64, written out here so that dataset digests never change with a crate.

use std::io::{self, Write};

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `data`, continuing from `state` (start with [`fnv1a64`]).
pub fn fnv1a64_update(mut state: u64, data: &[u8]) -> u64 {
    for &b in data {
        state ^= u64::from(b);
        state = state.wrapping_mul(PRIME);
    }
    state
}

/// FNV-1a 64 of `data`.
pub fn fnv1a64(data: &[u8]) -> u64 {
    fnv1a64_update(OFFSET, data)
}

/// A writer that hashes and counts what passes through it.
#[derive(Debug)]
pub struct Fnv1a64<W> {
    inner: W,
    state: u64,
    bytes: u64,
}

impl<W: Write> Fnv1a64<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            state: OFFSET,
            bytes: 0,
        }
    }

    pub fn hash(&self) -> u64 {
        self.state
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl<W: Write> Write for Fnv1a64<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let written = buf.get(..n).unwrap_or(buf);
        self.state = fnv1a64_update(self.state, written);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // Reference values of FNV-1a 64.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn writer_hashes_what_it_writes() {
        let mut w = Fnv1a64::new(Vec::new());
        w.write_all(b"foo").unwrap();
        w.write_all(b"bar").unwrap();
        assert_eq!(w.hash(), fnv1a64(b"foobar"));
        assert_eq!(w.bytes(), 6);
    }
}
