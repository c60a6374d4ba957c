//! What a verified load stores in its tokenizer cache entry, and the load that reads it back:
//! three parts ([`tokenizer_cache::join_parts`]): the file's small sections (no vocabulary or
//! merges), what the load derived from the vocabulary (vocab size, special tokens, offsets), and
//! the fast BPE's built tables (`fastbpe::tables`). Reading one back parses no JSON vocabulary
//! and builds no table.

use super::*;
use crate::fastbpe::json::ModelJson;
use crate::fastbpe::tables::{Reader, Writer};
use crate::tokenizer_cache::Entry;

/// `parsed` without its vocabulary and merges, as [`tokenizer_cache::encode_sections`] bytes.
pub(super) fn small_sections(parsed: &TokenizerJson) -> Vec<u8> {
    let small = TokenizerJson {
        version: parsed.version.clone(),
        truncation: parsed.truncation.clone(),
        padding: parsed.padding.clone(),
        added_tokens: parsed.added_tokens.clone(),
        normalizer: parsed.normalizer.clone(),
        pre_tokenizer: parsed.pre_tokenizer.clone(),
        post_processor: parsed.post_processor.clone(),
        model: parsed.model.as_ref().map(|m| ModelJson { fields: m.fields.clone(), vocab: None, merges: None }),
    };
    tokenizer_cache::encode_sections(&small)
}

/// What `loaded` derived from the vocabulary, as bytes: taken when it is loaded, before the
/// encoder takes parts of it (the special texts) away.
pub(super) fn derived(loaded: &LoadedTokenizer) -> Vec<u8> {
    let mut derived = Writer::default();
    derived.u64(loaded.vocab_size as u64);
    derived.bytes(&loaded.special_ids.iter().map(|&s| u8::from(s)).collect::<Vec<u8>>());
    derived.u64(loaded.special.len() as u64);
    for text in &loaded.special {
        derived.bytes(text.as_bytes());
    }
    match &loaded.offsets {
        OffsetSource::ByteLengths { lengths, nfc } => {
            derived.u8(0);
            derived.bool(*nfc);
            derived.u32s(lengths);
        }
        OffsetSource::FastBpe => derived.u8(1),
        OffsetSource::Tokenizer => derived.u8(2),
    }
    derived.out
}

/// The entry's payload for a verified load: `sections` from [`small_sections`], `derived` from
/// [`derived`], and the fast BPE's tables.
pub(super) fn payload(sections: &[u8], derived: &[u8], fast: &FastTokenizer) -> Vec<u8> {
    let mut tables = Writer::default();
    fast.write_tables(&mut tables);
    tokenizer_cache::join_parts(&[sections, derived, &tables.out])
}

/// The verified load of `file` from its entry, or `None` when the entry does not read back whole
/// (then the caller loads cold and replaces it).
pub(super) fn load(entry: &Entry, file: &Path, sha256: &str, bytes: Arc<[u8]>) -> Option<LoadedTokenizer> {
    if !entry.fast_verified {
        return None;
    }
    let [sections, derived, tables] = <[&[u8]; 3]>::try_from(entry.parts()?).ok()?;
    let parsed = tokenizer_cache::decode_sections(sections).ok()?;
    let mut r = Reader::new(derived);
    let vocab_size = usize::try_from(r.u64()?).ok()?;
    let special_ids: Vec<bool> = r.bytes()?.iter().map(|&b| b != 0).collect();
    let count = usize::try_from(r.u64()?).ok()?;
    let special = (0..count).map(|_| r.bytes().and_then(|b| String::from_utf8(b.to_vec()).ok())).collect::<Option<Vec<_>>>()?;
    let offsets = match r.u8()? {
        0 => {
            let nfc = r.bool()?;
            OffsetSource::ByteLengths { nfc, lengths: r.u32s()? }
        }
        1 => OffsetSource::FastBpe,
        2 => OffsetSource::Tokenizer,
        _ => return None,
    };
    let mut t = Reader::new(tables);
    let fast = FastTokenizer::from_tables(&parsed, &mut t)?;
    if !r.is_done() || !t.is_done() {
        return None;
    }
    Some(LoadedTokenizer {
        file: file.to_path_buf(),
        sha256: sha256.to_string(),
        vocab_size,
        special_ids,
        special,
        offsets,
        fast: Some(fast),
        verified: true,
        probe_verdict: None,
        reference: Reference::new(file.to_path_buf(), bytes),
        pending_cache: None,
    })
}
