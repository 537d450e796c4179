//! Counting tokens with a real tokenizer, for replies whose upstream reported no usage
//! (or a stream that was cut short). OpenAI's BPE encodings from tiktoken:
//!
//! - `o200k_base` for the gpt-4o, gpt-4.1, gpt-4.5, gpt-5, gpt-oss and o-series
//!   families;
//! - `cl100k_base` for everything else: older OpenAI models exactly, and as the closest
//!   public encoding for the rest. Llama 3's and Qwen's vocabularies are BPE vocabularies
//!   built from cl100k_base's (extended), so counts land close; Claude's tokenizer is not
//!   public, so its counts are an approximation. Such records stay marked
//!   `usage_estimated` either way.
//!
//! An encoding takes tens of megabytes and a noticeable time to build, so each is built
//! on first use only (a deployment whose upstreams always report usage never pays), and
//! only off the async runtime: callers count on a blocking thread.

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

use super::usage::estimate_tokens;

/// The most prompt tokens a request whose body is `body_bytes` long, with `images`
/// images, can be billed, in any byte-level BPE vocabulary (tiktoken's, Llama 3's,
/// Qwen's): every token stands for at least one byte, and the body holds every billed
/// byte (messages, names, tool schemas and arguments, each escaped no shorter than it
/// is); the message framing is well under the JSON around each message; an image
/// counts [`IMAGE_TOKENS_BOUND`]. A bound at no cost, for budget reservations before a
/// request is sent (several times the usual count, which the settled cost corrects).
pub fn prompt_upper_bound(body_bytes: usize, images: u32) -> u64 {
    body_bytes as u64 + u64::from(images) * IMAGE_TOKENS_BOUND + TOKENS_PER_REPLY
}

/// More tokens than any frontier model bills one image at its largest detail
/// (OpenAI's tiles and patches, Anthropic's pixels over 750, both under 2,000 today).
pub const IMAGE_TOKENS_BOUND: u64 = 3_000;

/// A tokenizer encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    O200kBase,
    Cl100kBase,
}

/// Tokens OpenAI's chat format adds around each message (role and separators), and
/// once to prime the reply, as OpenAI documents for its chat models.
pub const TOKENS_PER_MESSAGE: u64 = 3;
pub const TOKENS_PER_REPLY: u64 = 3;

impl Encoding {
    /// The encoding of the model family `model` (an upstream model name) belongs to.
    pub fn for_model(model: &str) -> Encoding {
        // Provider-prefixed names ("openai/gpt-4o", "azure/gpt-5") name the same model.
        let name = model.rsplit('/').next().unwrap_or(model);
        // gpt-oss uses o200k_harmony: o200k_base plus chat special tokens, which
        // ordinary text never produces.
        let o200k = [
            "gpt-4o",
            "chatgpt-4o",
            "gpt-4.1",
            "gpt-4.5",
            "gpt-5",
            "gpt-oss",
            "o1",
            "o3",
            "o4",
        ];
        if o200k.iter().any(|family| {
            name.strip_prefix(family)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '.', ':']))
        }) {
            Encoding::O200kBase
        } else {
            Encoding::Cl100kBase
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
        }
    }

    /// The encoder, built on first use. Blocks for the build: never call it on the
    /// async runtime's threads. `None` if it cannot be built (it is compiled in, so
    /// only a broken build could).
    fn bpe(self) -> Option<&'static CoreBPE> {
        static O200K: OnceLock<Option<CoreBPE>> = OnceLock::new();
        static CL100K: OnceLock<Option<CoreBPE>> = OnceLock::new();
        let cell = match self {
            Encoding::O200kBase => &O200K,
            Encoding::Cl100kBase => &CL100K,
        };
        cell.get_or_init(|| {
            let built = match self {
                Encoding::O200kBase => tiktoken_rs::o200k_base(),
                Encoding::Cl100kBase => tiktoken_rs::cl100k_base(),
            };
            match built {
                Ok(bpe) => Some(bpe),
                Err(e) => {
                    tracing::error!(encoding = self.name(), error = %e, "cannot build the tokenizer; token counts fall back to 4 bytes a token");
                    None
                }
            }
        })
        .as_ref()
    }

    /// Tokens of `text`, as the model would count it. Blocks while the encoding is
    /// built, on first use.
    pub fn count(self, text: &str) -> u64 {
        match self.bpe() {
            Some(bpe) => bpe.encode_ordinary(text).len() as u64,
            None => estimate_tokens(text.len()),
        }
    }

    /// Prompt tokens of a conversation of `messages` messages holding `texts`: every
    /// text part, plus the chat format's framing. Images and tool schemas are not
    /// counted. Blocking.
    pub fn count_prompt<'a>(self, texts: impl IntoIterator<Item = &'a str>, messages: u32) -> u64 {
        texts.into_iter().map(|t| self.count(t)).sum::<u64>()
            + u64::from(messages) * TOKENS_PER_MESSAGE
            + TOKENS_PER_REPLY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_families_pick_their_encoding() {
        for model in [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4.1-2025-04-14",
            "gpt-5",
            "gpt-5-mini",
            "o1",
            "o3-mini",
            "o4-mini",
            "openai/gpt-4o",
            "chatgpt-4o-latest",
            "gpt-oss-20b",
        ] {
            assert_eq!(Encoding::for_model(model), Encoding::O200kBase, "{model}");
        }
        for model in [
            "gpt-4",
            "gpt-4-turbo",
            "gpt-3.5-turbo",
            "claude-sonnet-4-5",
            "llama-3.1-8b-instruct",
            "qwen2.5-coder",
            "o1x",
            "gpt-40",
        ] {
            assert_eq!(Encoding::for_model(model), Encoding::Cl100kBase, "{model}");
        }
    }

    #[test]
    fn the_reservation_bound_holds_where_four_bytes_a_token_does_not() {
        // Digits, punctuation and CJK take far more tokens than a quarter of their bytes.
        for text in [
            "1,2,3,4,5,6,7,8,9",
            "a;b;c;d;e;f",
            "東京都の天気は晴れ",
            "🙂🙃🙂🙃",
            "hello world",
        ] {
            for encoding in [Encoding::Cl100kBase, Encoding::O200kBase] {
                let counted = encoding.count(text) + TOKENS_PER_MESSAGE + TOKENS_PER_REPLY;
                let body = serde_json::json!({
                    "model": "m",
                    "messages": [{"role": "user", "content": text}],
                })
                .to_string();
                assert!(counted <= prompt_upper_bound(body.len(), 0), "{text}");
            }
        }
        assert!(Encoding::Cl100kBase.count("1,2,3,4,5,6,7,8,9") > estimate_tokens(17));
    }

    #[test]
    fn counts_match_the_published_encodings() {
        // Known counts: "hello world" is two tokens in both; the encodings differ on
        // longer text.
        assert_eq!(Encoding::Cl100kBase.count("hello world"), 2);
        assert_eq!(Encoding::O200kBase.count("hello world"), 2);
        assert_eq!(Encoding::Cl100kBase.count(""), 0);
        // Special-token text is counted as text, as the APIs do for user content.
        assert!(Encoding::Cl100kBase.count("<|endoftext|>") > 1);
    }
}
