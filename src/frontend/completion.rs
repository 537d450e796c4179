//! The chat completion every front-end renders from, read as a borrowed, typed view of
//! the upstream's bytes (no `serde_json::Value` built and dropped on the way).

use std::borrow::Cow;

use serde::Deserialize;

/// A chat.completion as the front-ends render it, borrowed from its bytes.
#[derive(Deserialize)]
pub(super) struct Completion<'a> {
    #[serde(default, borrow)]
    pub(super) id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) created: Option<u64>,
    #[serde(default, borrow)]
    pub(super) choices: Option<Vec<Choice<'a>>>,
}

impl<'a> Completion<'a> {
    /// The first choice, which is the answer (the gateway asks for one).
    pub(super) fn choice(&self) -> Option<&Choice<'a>> {
        self.choices.as_ref().and_then(|c| c.first())
    }
}

#[derive(Deserialize)]
pub(super) struct Choice<'a> {
    #[serde(default, borrow)]
    pub(super) message: Option<Reply<'a>>,
    #[serde(default, borrow)]
    pub(super) finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct Reply<'a> {
    #[serde(default, borrow)]
    pub(super) content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) tool_calls: Option<Vec<ToolCall<'a>>>,
}

#[derive(Deserialize)]
pub(super) struct ToolCall<'a> {
    #[serde(default, borrow)]
    pub(super) id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) function: Function<'a>,
}

#[derive(Deserialize)]
pub(super) struct Function<'a> {
    #[serde(default, borrow)]
    pub(super) name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) arguments: Option<Cow<'a, str>>,
}
