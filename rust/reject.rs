//! [`Reject`]: why one record was not written. Every stage (reading, parsing, rendering,
//! tokenizing) returns one for a bad record; the pipeline counts it and writes it to
//! `rejects.jsonl`. A reject is never an error: errors ([`crate::error::Error`]) stop a run.

/// Why a record was not written. The code is stable (it appears in `rejects.jsonl`, the manifest
/// and the summary); the detail says what exactly was wrong and, where possible, how to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    InvalidJson,
    NotAnObject,
    UnknownLayout,
    MissingField,
    WrongType,
    UnknownRole,
    NonTextContent,
    EmptyConversation,
    NoAssistant,
    EndsWithoutAssistant,
    EmptyAssistant,
    ReservedCharacter,
    TemplateError,
    TokenizerError,
    MixedReasoning,
    NeedsSplit,
    MissingReasoning,
    InternalError,
    SpanNotFound,
    TooLong,
    NoTrainedTokens,
}

impl RejectReason {
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::UnknownLayout => "unknown_layout",
            RejectReason::MissingField => "missing_field",
            RejectReason::WrongType => "wrong_type",
            RejectReason::UnknownRole => "unknown_role",
            RejectReason::NonTextContent => "non_text_content",
            RejectReason::EmptyConversation => "empty_conversation",
            RejectReason::NoAssistant => "no_assistant_message",
            RejectReason::EndsWithoutAssistant => "ends_without_assistant",
            RejectReason::EmptyAssistant => "empty_assistant_message",
            RejectReason::ReservedCharacter => "reserved_character",
            RejectReason::TemplateError => "template_error",
            RejectReason::TokenizerError => "tokenizer_error",
            RejectReason::MixedReasoning => "mixed_reasoning",
            RejectReason::NeedsSplit => "needs_split_turns",
            RejectReason::MissingReasoning => "missing_reasoning",
            RejectReason::InternalError => "internal_error",
            RejectReason::SpanNotFound => "assistant_span_not_found",
            RejectReason::TooLong => "too_long",
            RejectReason::NoTrainedTokens => "no_trained_tokens",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub reason: RejectReason,
    pub detail: String,
}

impl Reject {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Reject { reason, detail: detail.into() }
    }
}
