//! Hashes the Rust sources into `FASTSFT_SOURCE_HASH`: the tokenizer cache (rust/tokenizer_cache.rs)
//! names its entries by it, so a build with a changed fast BPE never trusts an older build's
//! self-check.

use std::hash::Hasher;
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    println!("cargo:rerun-if-changed=rust");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let mut paths = Vec::new();
    files(Path::new("rust"), &mut paths);
    paths.push(PathBuf::from("Cargo.lock"));
    paths.sort();
    // FNV-1a: stable across Rust versions (std's DefaultHasher is not promised to be).
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    for path in &paths {
        h.write(path.to_string_lossy().as_bytes());
        h.write(&std::fs::read(path).unwrap_or_default());
    }
    println!("cargo:rustc-env=FASTSFT_SOURCE_HASH={:016x}", h.finish());
}
