//! Token ids back to text, for `fastsft inspect`: the `tokenizers` crate that encodes is also the
//! one that decodes, so looking at prepared data needs no Python tokenizer package.
//!
//! Only decoding: no template, no chat layout, no offsets (so `tokenizer.json` is loaded as is,
//! without the `trim_offsets` patch `encode` applies). The methods mirror the Python `tokenizers`
//! names `inspect` calls (`decode`, `id_to_token`, `get_vocab_size`).

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::error::{Error, Result};

pub struct TokenDecoder {
    tokenizer: Tokenizer,
    path: PathBuf,
}

impl TokenDecoder {
    /// `path`: a model directory holding `tokenizer.json`, or the `tokenizer.json` itself.
    pub fn load(path: &Path) -> Result<TokenDecoder> {
        let file = if path.is_dir() { path.join("tokenizer.json") } else { path.to_path_buf() };
        let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
        let tokenizer = Tokenizer::from_bytes(bytes)
            .map_err(|e| Error::Tokenizer { path: file.clone(), detail: format!("not a tokenizers file: {e}") })?;
        Ok(TokenDecoder { tokenizer, path: file })
    }

    /// The text of `ids`, decoded as a whole (byte-level pieces of one character join up; the
    /// tokenizer's decoder rules, e.g. Metaspace's leading space, apply as `tokenizers` applies them).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.tokenizer
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::Tokenizer { path: self.path.clone(), detail: format!("cannot decode: {e}") })
    }

    /// The token's own string in the vocabulary (`"èŃ"` for half of 譯), or None for an unknown id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.tokenizer.id_to_token(id)
    }

    /// Number of ids the tokenizer knows, added tokens included when asked.
    pub fn vocab_size(&self, with_added_tokens: bool) -> usize {
        self.tokenizer.get_vocab_size(with_added_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qwen() -> TokenDecoder {
        TokenDecoder::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tokenizers/qwen2.5")).unwrap()
    }

    #[test]
    fn decodes_what_the_tokenizer_encodes() {
        let decoder = qwen();
        // Qwen2.5 ids of "請翻譯" (譯 is two byte-level tokens) and of "<|im_end|>".
        let ids = [100792, 100712, 91048, 107, 151645];
        assert_eq!(decoder.decode(&ids, false).unwrap(), "請翻譯<|im_end|>");
        assert_eq!(decoder.decode(&ids, true).unwrap(), "請翻譯");
        // Half a character alone decodes to a replacement character; its token string is its bytes.
        assert_eq!(decoder.decode(&[91048], false).unwrap(), "\u{fffd}");
        assert_eq!(decoder.id_to_token(91048).as_deref(), Some("èŃ"));
        assert_eq!(decoder.id_to_token(151645).as_deref(), Some("<|im_end|>"));
        assert_eq!(decoder.id_to_token(10_000_000), None);
        assert_eq!(decoder.vocab_size(true), 151_665);
        assert_eq!(decoder.vocab_size(false), 151_643);
    }

    #[test]
    fn a_missing_or_broken_tokenizer_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TokenDecoder::load(dir.path()).err().unwrap().to_string();
        assert!(missing.ends_with("tokenizer.json: not found"), "{missing}");
        std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
        let broken = TokenDecoder::load(dir.path()).err().unwrap().to_string();
        assert!(broken.contains("tokenizer.json: not a tokenizers file"), "{broken}");
    }
}
