//! sha256 in one place: hex digests, and a reader that hashes the raw bytes of an input as they
//! are read (inputs, columnar files, the writer's arrays and the manifest's fingerprint use it).

use std::io::Read;

use sha2::{Digest, Sha256};

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Hashes and counts every byte read through it: the hash of an input covers its raw
/// (compressed) bytes whatever the decoder on top reads.
pub struct HashingReader<R> {
    pub inner: R,
    pub hasher: Sha256,
    pub size: u64,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Sha256::new(), size: 0 }
    }

    /// Size and hex sha256 of the bytes read so far (the hasher starts again).
    pub fn take_digest(&mut self) -> (u64, String) {
        (self.size, hex(&std::mem::take(&mut self.hasher).finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// Reads `reader` to its end, discarding the bytes (for a [`HashingReader`] underneath).
pub fn drain(reader: &mut impl Read) -> std::io::Result<()> {
    std::io::copy(reader, &mut std::io::sink()).map(|_| ())
}
