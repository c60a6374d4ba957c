//! The parts of `tokenizer.json` that fastsft reads, parsed in one pass with the vocabulary's and
//! the merges' strings borrowed from the file's bytes. A `serde_json::Value` tree of the whole file
//! (one allocation per token, per merge and per map) was most of the load time and of the peak
//! memory; the small sections (normalizer, pre-tokenizer, post-processor, added tokens) stay
//! `Value`s, the decoder is skipped unread.
//!
//! The same struct is what the on-disk cache stores (`crate::tokenizer_cache`), so a cached load
//! builds the fast tokenizer through exactly the code an uncached one does.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The sections of a `tokenizer.json`; absent ones are `Value::Null`.
#[derive(Debug, Default, Deserialize)]
pub struct TokenizerJson<'a> {
    #[serde(default)]
    pub version: Option<Value>,
    #[serde(default)]
    pub truncation: Value,
    #[serde(default)]
    pub padding: Value,
    #[serde(default)]
    pub added_tokens: Value,
    #[serde(default)]
    pub normalizer: Value,
    #[serde(default)]
    pub pre_tokenizer: Value,
    #[serde(default)]
    pub post_processor: Value,
    #[serde(default, borrow)]
    pub model: Option<ModelJson<'a>>,
}

/// A string of the file, borrowed unless it had escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Str<'a>(pub Cow<'a, str>);

/// One entry of `model.merges`: `"a b"` (split later, as the `tokenizers` crate splits it) or
/// `["a", "b"]`; anything else is kept as `Invalid` so that fastbpe declines the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeJson<'a> {
    Joined(Cow<'a, str>),
    Pair(Cow<'a, str>, Cow<'a, str>),
    Invalid,
}

/// The `model` section: the vocabulary and merges as flat lists (file order), every other field
/// as JSON.
#[derive(Debug, Default)]
pub struct ModelJson<'a> {
    pub fields: Map<String, Value>,
    /// `None` when `vocab` is not an object of integer ids (a Unigram list, say).
    pub vocab: Option<Vec<(Cow<'a, str>, u64)>>,
    /// `None` when `merges` is absent or not a list.
    pub merges: Option<Vec<MergeJson<'a>>>,
}

impl ModelJson<'_> {
    pub fn kind(&self) -> Option<&str> {
        self.fields.get("type").and_then(Value::as_str)
    }
}

impl<'a> TokenizerJson<'a> {
    /// Parses the file. Errors only for invalid JSON or a wrongly typed small section; an
    /// unfamiliar model keeps `vocab`/`merges` as `None`.
    pub fn parse(json: &'a [u8]) -> serde_json::Result<TokenizerJson<'a>> {
        serde_json::from_slice(json)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A vocabulary value: an integer id, or anything else (then the vocabulary is unusable here).
enum Id {
    Int(u64),
    Other,
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a token id")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
                Ok(Id::Int(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id, E> {
                Ok(u64::try_from(v).map_or(Id::Other, Id::Int))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Id, E> {
                Ok(Id::Other)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Id, E> {
                Ok(Id::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Id, E> {
                Ok(Id::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Id, E> {
                Ok(Id::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Id, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Id::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Id, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Id::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// `vocab`: an object of ids, or anything else (`None`).
struct VocabJson<'a>(Option<Vec<(Cow<'a, str>, u64)>>);

impl<'de: 'a, 'a> Deserialize<'de> for VocabJson<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = VocabJson<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a vocabulary")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                let mut usable = true;
                while let Some((Str(token), id)) = map.next_entry::<Str<'de>, Id>()? {
                    match id {
                        Id::Int(id) => entries.push((token, id)),
                        Id::Other => usable = false,
                    }
                }
                Ok(VocabJson(usable.then_some(entries)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(VocabJson(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(VocabJson(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for MergeJson<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MergeJson<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a merge")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MergeJson::Joined(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MergeJson::Joined(Cow::Owned(v.to_string())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut parts: Vec<Value> = Vec::new();
                let mut strs: Vec<Cow<'de, str>> = Vec::new();
                // Elements are read as `Value` only when they are not strings, to keep going.
                while let Some(item) = seq.next_element::<StrOrValue<'de>>()? {
                    match item {
                        StrOrValue::Str(s) => strs.push(s),
                        StrOrValue::Value(v) => parts.push(v),
                    }
                }
                Ok(match (<[_; 2]>::try_from(strs), parts.is_empty()) {
                    (Ok([a, b]), true) => MergeJson::Pair(a, b),
                    _ => MergeJson::Invalid,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MergeJson::Invalid)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MergeJson::Invalid)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MergeJson::Invalid)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MergeJson::Invalid)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MergeJson::Invalid)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(MergeJson::Invalid)
            }
        }
        d.deserialize_any(V)
    }
}

enum StrOrValue<'a> {
    Str(Cow<'a, str>),
    Value(Value),
}

impl<'de: 'a, 'a> Deserialize<'de> for StrOrValue<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrOrValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(StrOrValue::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StrOrValue::Str(Cow::Owned(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(StrOrValue::Value(v.into()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(StrOrValue::Value(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(StrOrValue::Value(v.into()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(StrOrValue::Value(v.into()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(StrOrValue::Value(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(StrOrValue::Value(Value::Array(Vec::new())))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(StrOrValue::Value(Value::Object(Map::new())))
            }
        }
        d.deserialize_any(V)
    }
}

/// `merges`: a list, or anything else (`None`).
struct MergesJson<'a>(Option<Vec<MergeJson<'a>>>);

impl<'de: 'a, 'a> Deserialize<'de> for MergesJson<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MergesJson<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of merges")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut merges = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(m) = seq.next_element::<MergeJson<'de>>()? {
                    merges.push(m);
                }
                Ok(MergesJson(Some(merges)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MergesJson(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(MergesJson(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MergesJson(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MergesJson(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MergesJson(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MergesJson(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(MergesJson(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ModelJson<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ModelJson<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a tokenizer model")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut model = ModelJson::default();
                while let Some(Str(key)) = map.next_key::<Str<'de>>()? {
                    match key.as_ref() {
                        "vocab" => model.vocab = map.next_value::<VocabJson<'de>>()?.0,
                        "merges" => model.merges = map.next_value::<MergesJson<'de>>()?.0,
                        _ => {
                            let value: Value = map.next_value()?;
                            model.fields.insert(key.into_owned(), value);
                        }
                    }
                }
                Ok(model)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocab_and_merges_are_borrowed_unless_escaped() {
        let json = br#"{"model": {"type": "BPE", "vocab": {"a": 0, "b\u0020": 1, "ab": 2},
            "merges": ["a b", ["a", "b"], 3, ["a"]], "dropout": null}, "decoder": {"x": [1, 2]}}"#;
        let parsed = TokenizerJson::parse(json).expect("parses");
        let model = parsed.model.expect("model");
        assert_eq!(model.kind(), Some("BPE"));
        let vocab = model.vocab.expect("vocab");
        assert_eq!(vocab.iter().map(|(t, id)| (t.as_ref(), *id)).collect::<Vec<_>>(), [("a", 0), ("b ", 1), ("ab", 2)]);
        assert!(matches!(vocab[0].0, Cow::Borrowed(_)) && matches!(vocab[1].0, Cow::Owned(_)));
        let merges = model.merges.expect("merges");
        assert_eq!(merges[0], MergeJson::Joined(Cow::Borrowed("a b")));
        assert_eq!(merges[1], MergeJson::Pair(Cow::Borrowed("a"), Cow::Borrowed("b")));
        assert_eq!(merges[2..], [MergeJson::Invalid, MergeJson::Invalid]);
        assert_eq!(model.fields.get("dropout"), Some(&Value::Null));
        assert!(parsed.normalizer.is_null() && parsed.added_tokens.is_null());
    }

    #[test]
    fn other_models_parse_without_a_vocabulary() {
        let json = br#"{"model": {"type": "Unigram", "vocab": [["a", -1.5], ["b", -2.0]]}, "normalizer": {"type": "NFC"}}"#;
        let parsed = TokenizerJson::parse(json).expect("parses");
        let model = parsed.model.expect("model");
        assert_eq!(model.kind(), Some("Unigram"));
        assert!(model.vocab.is_none() && model.merges.is_none());
        assert_eq!(parsed.normalizer["type"], "NFC");
        let float_ids = br#"{"model": {"type": "BPE", "vocab": {"a": 1.5}, "merges": []}}"#;
        assert!(TokenizerJson::parse(float_ids).expect("parses").model.expect("model").vocab.is_none());
        assert!(TokenizerJson::parse(b"not json").is_err());
    }
}
