//! Token usage in the gateway's own terms, read from OpenAI-wire usage objects or
//! estimated locally when an upstream reports none.

use serde::Deserialize;

use super::money::{PerMillion, Usd};

/// Tokens of one request, by the kinds that are priced separately.
///
/// `input` excludes cached input and cache writes, so no token is counted twice;
/// `reasoning` is a subset of `output`, recorded separately but priced as output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Usage {
    pub input: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    pub output: u64,
    pub reasoning: u64,
    /// Counted by the gateway, not reported by the upstream.
    pub estimated: bool,
}

impl Usage {
    /// Every input token, cached or not. Saturates: the counts come from upstreams,
    /// and a buggy or hostile one may report anything up to `u64::MAX`.
    pub fn total_input(&self) -> u64 {
        self.input
            .saturating_add(self.cached_input)
            .saturating_add(self.cache_write)
    }
}

/// The OpenAI `usage` object, as chat completions and the final stream chunk carry it.
#[derive(Debug, Default, Deserialize)]
pub struct OpenAiUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    pub completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PromptDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
    /// Prompt tokens written to a provider cache (Anthropic), priced apart. Not an
    /// OpenAI field: the Anthropic adapter adds it to the usage it reports.
    #[serde(default)]
    pub cache_write_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CompletionDetails {
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

impl From<OpenAiUsage> for Usage {
    /// OpenAI counts cached tokens inside `prompt_tokens`: take them out of `input`.
    fn from(u: OpenAiUsage) -> Self {
        let details = u.prompt_tokens_details.unwrap_or_default();
        let cached = details.cached_tokens.unwrap_or(0).min(u.prompt_tokens);
        let written = details
            .cache_write_tokens
            .unwrap_or(0)
            .min(u.prompt_tokens - cached);
        let reasoning = u
            .completion_tokens_details
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0)
            .min(u.completion_tokens);
        Usage {
            input: u.prompt_tokens - cached - written,
            cached_input: cached,
            cache_write: written,
            output: u.completion_tokens,
            reasoning,
            estimated: false,
        }
    }
}

/// Generated text of a message or stream delta: content, reasoning and tool-call
/// arguments, borrowed where the JSON has no escapes.
#[derive(Debug, Default, Deserialize)]
pub struct GeneratedText<'a> {
    #[serde(default, borrow)]
    pub content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub reasoning_content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub tool_calls: Option<Vec<ToolCallText<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ToolCallText<'a> {
    #[serde(default, borrow)]
    pub function: Option<FunctionText<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct FunctionText<'a> {
    #[serde(default, borrow)]
    pub name: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub arguments: Option<std::borrow::Cow<'a, str>>,
}

impl GeneratedText<'_> {
    /// Appends the generated text to `out`, for counting its tokens.
    pub fn push_to(&self, out: &mut String) {
        let parts = [&self.content, &self.reasoning_content];
        for part in parts.into_iter().flatten() {
            out.push_str(part);
        }
        for f in self
            .tool_calls
            .iter()
            .flatten()
            .filter_map(|t| t.function.as_ref())
        {
            for part in [&f.name, &f.arguments].into_iter().flatten() {
                out.push_str(part);
            }
        }
    }
}

/// The generated text of every choice of a chat.completion body (empty when the body
/// is not one).
pub fn completion_text(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Peek<'a> {
        #[serde(default, borrow)]
        choices: Vec<Choice<'a>>,
    }
    #[derive(Deserialize)]
    struct Choice<'a> {
        #[serde(default, borrow)]
        message: Option<GeneratedText<'a>>,
    }
    let mut text = String::new();
    if let Ok(peek) = serde_json::from_slice::<Peek>(body) {
        for message in peek.choices.iter().filter_map(|c| c.message.as_ref()) {
            message.push_to(&mut text);
        }
    }
    text
}

/// Per-token prices of one model, by token kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Price {
    pub input: PerMillion,
    pub cached_input: PerMillion,
    pub cache_write: PerMillion,
    pub output: PerMillion,
}

impl Price {
    /// The exact cost of `usage` at this price.
    pub fn cost(&self, usage: &Usage) -> Usd {
        self.input.cost(usage.input)
            + self.cached_input.cost(usage.cached_input)
            + self.cache_write.cost(usage.cache_write)
            + self.output.cost(usage.output)
    }

    /// An upper bound for a request of `input` tokens and at most `max_output` tokens.
    pub fn upper_bound(&self, input: u64, max_output: u64) -> Usd {
        let dearest_input = self.input.max(self.cache_write).max(self.cached_input);
        dearest_input.cost(input) + self.output.cost(max_output)
    }
}

/// Tokens a model would see for `chars` characters of text.
///
/// A length-based estimate (about four bytes a token for English prose; code, digits
/// and CJK take more), free to compute: for the classifier's prompt-length features and
/// rate-limit admission. Neither a bound nor a count: reservations use
/// [`super::tokens::prompt_upper_bound`], and records the tokenizer
/// ([`super::tokens::Encoding::count`]).
pub fn estimate_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

/// Fixed per-message framing tokens in the chat template (role markers, separators).
pub const TOKENS_PER_MESSAGE: u64 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_reported_counts_saturate() {
        let u = Usage {
            input: u64::MAX,
            cached_input: 2,
            cache_write: 3,
            ..Usage::default()
        };
        assert_eq!(u.total_input(), u64::MAX);
    }

    fn price(input: f64, cached: f64, write: f64, output: f64) -> Price {
        Price {
            input: PerMillion::from_usd(input).unwrap_or_default(),
            cached_input: PerMillion::from_usd(cached).unwrap_or_default(),
            cache_write: PerMillion::from_usd(write).unwrap_or_default(),
            output: PerMillion::from_usd(output).unwrap_or_default(),
        }
    }

    #[test]
    fn openai_cached_tokens_are_not_charged_twice() {
        let raw: OpenAiUsage = serde_json::from_str(
            r#"{"prompt_tokens":1000,"completion_tokens":200,"total_tokens":1200,
                "prompt_tokens_details":{"cached_tokens":600},
                "completion_tokens_details":{"reasoning_tokens":50}}"#,
        )
        .unwrap_or_default();
        let usage = Usage::from(raw);
        assert_eq!(usage.input, 400);
        assert_eq!(usage.cached_input, 600);
        assert_eq!(usage.output, 200);
        assert_eq!(usage.reasoning, 50);
        // gpt-4.1: $2 input, $0.50 cached, $8 output per 1M tokens.
        let cost = price(2.0, 0.5, 2.0, 8.0).cost(&usage);
        // 400*2 + 600*0.5 + 200*8 = 800 + 300 + 1600 = 2700 micro-dollars.
        assert_eq!(cost.to_string(), "0.0027");
    }

    #[test]
    fn missing_details_mean_zero() {
        let raw: OpenAiUsage = serde_json::from_str(r#"{"prompt_tokens":7,"completion_tokens":3}"#)
            .unwrap_or_default();
        let usage = Usage::from(raw);
        assert_eq!((usage.input, usage.cached_input, usage.output), (7, 0, 3));
    }

    #[test]
    fn estimate_rounds_up() {
        assert_eq!(estimate_tokens(0), 0);
        assert_eq!(estimate_tokens(1), 1);
        assert_eq!(estimate_tokens(8), 2);
    }
}
