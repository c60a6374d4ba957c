//! The on-disk cache of loaded tokenizers: an entry's payload is a list of parts
//! ([`join_parts`]); `crate::tokenizer` stores the small sections of a `tokenizer.json` that
//! fastsft reads ([`TokenizerJson`] without its vocabulary and merges, in a binary layout that
//! loads without JSON parsing), what a load derives from the vocabulary, and the fast BPE's
//! built tables (`fastbpe::tables`), with the verdict of its self-check. A cached start builds
//! nothing big, and skips the `tokenizers` crate's load until a text needs it.
//!
//! One file per `tokenizer.json`, named by the sha256 of its bytes and by this build of fastsft
//! (version + a hash of its Rust sources, so a changed fast BPE never trusts an old verdict),
//! under `$XDG_CACHE_HOME/fastsft/tokenizers` (default `~/.cache/fastsft/tokenizers`);
//! `FASTSFT_CACHE=0` turns the cache off. Never trusted blindly: a file whose magic, format,
//! build, sha256, length or checksum differ is ignored (and replaced by the next cold load).
//! Written to a temporary name and renamed, so concurrent processes see a whole file or none.
//! Entries unused for a while are removed when a new one is written (rust/tokenizer_cache_prune.rs).

use std::borrow::Cow;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use crate::fastbpe::json::{MergeJson, ModelJson};
use crate::fastbpe::TokenizerJson;
use crate::tokenizer_cache_prune;

const MAGIC: &[u8; 24] = b"fastsft tokenizer cache\n";
/// The layout below; bump when it changes.
const FORMAT: u32 = 2;
const FLAG_FAST_VERIFIED: u32 = 1;

/// This build: the package version and a hash of the Rust sources (`build.rs`).
pub fn build_id() -> String {
    format!("{}+{}", env!("CARGO_PKG_VERSION"), env!("FASTSFT_SOURCE_HASH"))
}

/// A cache directory.
#[derive(Debug, Clone)]
pub struct CacheDir(pub PathBuf);

impl CacheDir {
    /// `$XDG_CACHE_HOME/fastsft/tokenizers` or `~/.cache/fastsft/tokenizers`; `None` when
    /// `FASTSFT_CACHE=0` (or no home is known).
    pub fn from_env() -> Option<CacheDir> {
        let var = |name: &str| std::env::var_os(name);
        CacheDir::from_vars(var("FASTSFT_CACHE").as_deref(), var("XDG_CACHE_HOME").as_deref(), var("HOME").as_deref())
    }

    /// [`CacheDir::from_env`] of the given variables' values.
    pub fn from_vars(fastsft_cache: Option<&OsStr>, xdg_cache_home: Option<&OsStr>, home: Option<&OsStr>) -> Option<CacheDir> {
        if fastsft_cache.and_then(OsStr::to_str).is_some_and(|v| matches!(v.trim(), "0" | "false" | "off" | "no")) {
            return None;
        }
        let base = xdg_cache_home
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| home.filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
        Some(CacheDir(base.join("fastsft").join("tokenizers")))
    }

    /// The entry of a `tokenizer.json` with this sha256 (hex), for this build.
    pub fn entry_path(&self, sha256: &str) -> PathBuf {
        self.0.join(format!("{sha256}{}", entry_suffix()))
    }
}

/// What ends the name of this build's entries: `-<build>.bin`.
fn entry_suffix() -> String {
    format!("-{}.bin", build_id().replace(|c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '+', "_"))
}

/// A cache entry read and checked.
pub struct Entry {
    payload: Vec<u8>,
    pub fast_verified: bool,
}

impl Entry {
    /// The payload's parts ([`join_parts`]); `None` if they do not add up.
    pub fn parts(&self) -> Option<Vec<&[u8]>> {
        let mut r = Reader { data: &self.payload, at: 0 };
        let n = r.count()?;
        let parts = (0..n).map(|_| r.count().and_then(|len| r.take(len))).collect::<Option<Vec<_>>>()?;
        (r.at == self.payload.len()).then_some(parts)
    }

    /// The sections ([`encode_sections`]) in the first part, borrowed from the entry.
    pub fn sections(&self) -> Result<TokenizerJson<'_>, String> {
        decode_sections(self.parts().and_then(|p| p.first().copied()).ok_or("malformed tokenizer cache entry")?)
    }
}

/// A payload of several parts (each length-prefixed), for [`write`]; [`Entry::parts`] splits it.
pub fn join_parts(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 8).sum::<usize>() + 8);
    out.extend_from_slice(&(parts.len() as u64).to_le_bytes());
    for part in parts {
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// The checked entry for `sha256`, or `None` (missing, unreadable, another build, corrupt).
pub fn read(dir: &CacheDir, sha256: &str) -> Option<Entry> {
    let path = dir.entry_path(sha256);
    let data = std::fs::read(&path).ok()?;
    let mut r = Reader { data: &data, at: 0 };
    if r.take(MAGIC.len())? != MAGIC || r.u32()? != FORMAT {
        return None;
    }
    let flags = r.u32()?;
    if r.str()? != build_id() || r.str()? != sha256 {
        return None;
    }
    let len = usize::try_from(r.u64()?).ok()?;
    let sum = r.u64()?;
    let start = r.at;
    if data.len() - start != len || checksum(&data[start..]) != sum {
        return None;
    }
    let mut payload = data;
    payload.drain(..start);
    tokenizer_cache_prune::touch_if_old(&path, std::time::SystemTime::now());
    Some(Entry { payload, fast_verified: flags & FLAG_FAST_VERIFIED != 0 })
}

/// Stores `payload` (from [`join_parts`]) for `sha256`: written to a temporary file in the same
/// directory, then renamed over the entry.
pub fn write(dir: &CacheDir, sha256: &str, payload: &[u8], fast_verified: bool) -> std::io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(&dir.0)?;
    let mut data = Vec::with_capacity(payload.len() + 200);
    data.extend_from_slice(MAGIC);
    data.extend_from_slice(&FORMAT.to_le_bytes());
    data.extend_from_slice(&(if fast_verified { FLAG_FAST_VERIFIED } else { 0 }).to_le_bytes());
    put_str(&mut data, &build_id());
    put_str(&mut data, sha256);
    data.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    data.extend_from_slice(&checksum(payload).to_le_bytes());
    data.extend_from_slice(payload);
    let path = dir.entry_path(sha256);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let tmp = dir.0.join(format!(
        ".{}.tmp-{}-{}-{nanos}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("entry"),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = std::fs::write(&tmp, &data).and_then(|()| std::fs::rename(&tmp, &path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    tokenizer_cache_prune::prune(dir, &entry_suffix(), std::time::SystemTime::now());
    result.map(|()| path)
}

/// 64-bit multiply-xorshift over 8-byte words: detects truncation and flipped bits (not an
/// adversary), at memory speed.
pub fn checksum(data: &[u8]) -> u64 {
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15 ^ data.len() as u64;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        h = (h ^ u64::from_le_bytes(word)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 31;
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x94D0_49BB_1331_11EB);
    }
    h ^ (h >> 29)
}

/// The sections as bytes: the small ones as JSON text, the vocabulary and merges as
/// length-prefixed strings.
pub fn encode_sections(t: &TokenizerJson) -> Vec<u8> {
    let vocab_bytes = t.model.as_ref().and_then(|m| m.vocab.as_ref()).map_or(0, |v| v.iter().map(|(s, _)| s.len() + 12).sum());
    let merge_bytes = t.model.as_ref().and_then(|m| m.merges.as_ref()).map_or(0, |v| v.len() * 16);
    let mut out = Vec::with_capacity(vocab_bytes + merge_bytes + 4096);
    match &t.version {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put_json(&mut out, v);
        }
    }
    for v in [&t.truncation, &t.padding, &t.added_tokens, &t.normalizer, &t.pre_tokenizer, &t.post_processor] {
        put_json(&mut out, v);
    }
    let Some(model) = &t.model else {
        out.push(0);
        return out;
    };
    out.push(1);
    put_json(&mut out, &Value::Object(model.fields.clone()));
    match &model.vocab {
        None => out.push(0),
        Some(vocab) => {
            out.push(1);
            out.extend_from_slice(&(vocab.len() as u64).to_le_bytes());
            for (token, id) in vocab {
                put_str(&mut out, token);
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
    }
    match &model.merges {
        None => out.push(0),
        Some(merges) => {
            out.push(1);
            out.extend_from_slice(&(merges.len() as u64).to_le_bytes());
            for m in merges {
                match m {
                    MergeJson::Joined(s) => {
                        out.push(0);
                        put_str(&mut out, s);
                    }
                    MergeJson::Pair(a, b) => {
                        out.push(1);
                        put_str(&mut out, a);
                        put_str(&mut out, b);
                    }
                    MergeJson::Invalid => out.push(2),
                }
            }
        }
    }
    out
}

/// The inverse of [`encode_sections`], borrowing the strings.
pub fn decode_sections(data: &[u8]) -> Result<TokenizerJson<'_>, String> {
    let bad = || "malformed tokenizer cache entry".to_string();
    let mut r = Reader { data, at: 0 };
    let version = match r.u8().ok_or_else(bad)? {
        0 => None,
        _ => Some(r.json().ok_or_else(bad)?),
    };
    let mut small = Vec::with_capacity(6);
    for _ in 0..6 {
        small.push(r.json().ok_or_else(bad)?);
    }
    let model = match r.u8().ok_or_else(bad)? {
        0 => None,
        _ => {
            let Value::Object(fields) = r.json().ok_or_else(bad)? else { return Err(bad()) };
            let vocab = match r.u8().ok_or_else(bad)? {
                0 => None,
                _ => {
                    let n = r.count().ok_or_else(bad)?;
                    let mut vocab = Vec::with_capacity(n);
                    for _ in 0..n {
                        let token = r.str().ok_or_else(bad)?;
                        vocab.push((Cow::Borrowed(token), r.u64().ok_or_else(bad)?));
                    }
                    Some(vocab)
                }
            };
            let merges = match r.u8().ok_or_else(bad)? {
                0 => None,
                _ => {
                    let n = r.count().ok_or_else(bad)?;
                    let mut merges = Vec::with_capacity(n);
                    for _ in 0..n {
                        merges.push(match r.u8().ok_or_else(bad)? {
                            0 => MergeJson::Joined(Cow::Borrowed(r.str().ok_or_else(bad)?)),
                            1 => {
                                let a = r.str().ok_or_else(bad)?;
                                MergeJson::Pair(Cow::Borrowed(a), Cow::Borrowed(r.str().ok_or_else(bad)?))
                            }
                            _ => MergeJson::Invalid,
                        });
                    }
                    Some(merges)
                }
            };
            Some(ModelJson { fields, vocab, merges })
        }
    };
    if r.at != data.len() {
        return Err(bad());
    }
    let mut small = small.into_iter();
    let mut next = || small.next().unwrap_or_default();
    Ok(TokenizerJson {
        version,
        truncation: next(),
        padding: next(),
        added_tokens: next(),
        normalizer: next(),
        pre_tokenizer: next(),
        post_processor: next(),
        model,
    })
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_json(out: &mut Vec<u8>, v: &Value) {
    put_str(out, &v.to_string());
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len())?;
        let bytes = &self.data[self.at..end];
        self.at = end;
        Some(bytes)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
    }

    /// A count of items, each at least one byte: never more than the bytes left.
    fn count(&mut self) -> Option<usize> {
        usize::try_from(self.u64()?).ok().filter(|&n| n <= self.data.len() - self.at)
    }

    fn str(&mut self) -> Option<&'a str> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }

    fn json(&mut self) -> Option<Value> {
        serde_json::from_str(self.str()?).ok()
    }
}
