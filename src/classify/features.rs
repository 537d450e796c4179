//! Feature extraction: one pass over the conversation's text counting the signals the
//! classifiers use (code, math, reasoning and writing cues, length, structure, PII).

use super::cues::Cues;
use super::pii::{self, PiiKinds};
use super::{Prompt, Role};
use crate::accounting::usage::{TOKENS_PER_MESSAGE, estimate_tokens};

/// A named signal that fired for a request; reported by explain and recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Signal {
    CodeFence,
    CodeKeywords,
    CodeSymbols,
    MathNotation,
    MathWords,
    ReasoningWords,
    WritingWords,
    LongPrompt,
    MultiTurn,
    Tools,
    JsonMode,
    Images,
    Pii,
}

impl Signal {
    const ALL: [Signal; 13] = [
        Signal::CodeFence,
        Signal::CodeKeywords,
        Signal::CodeSymbols,
        Signal::MathNotation,
        Signal::MathWords,
        Signal::ReasoningWords,
        Signal::WritingWords,
        Signal::LongPrompt,
        Signal::MultiTurn,
        Signal::Tools,
        Signal::JsonMode,
        Signal::Images,
        Signal::Pii,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::CodeFence => "code_fence",
            Signal::CodeKeywords => "code_keywords",
            Signal::CodeSymbols => "code_symbols",
            Signal::MathNotation => "math_notation",
            Signal::MathWords => "math_words",
            Signal::ReasoningWords => "reasoning_words",
            Signal::WritingWords => "writing_words",
            Signal::LongPrompt => "long_prompt",
            Signal::MultiTurn => "multi_turn",
            Signal::Tools => "tools",
            Signal::JsonMode => "json_mode",
            Signal::Images => "images",
            Signal::Pii => "pii",
        }
    }
}

/// The set of signals that fired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Signals(u32);

impl Signals {
    pub fn insert(&mut self, signal: Signal) {
        self.0 |= 1 << signal as u8;
    }

    pub fn contains(self, signal: Signal) -> bool {
        self.0 & (1 << signal as u8) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Signal> {
        Signal::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

/// Measured facts about one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Features {
    /// Characters of text across all messages.
    pub chars: usize,
    /// Estimated prompt tokens (text plus per-message framing).
    pub prompt_tokens: u64,
    pub messages: u32,
    pub user_turns: u32,
    pub has_tools: bool,
    pub json_mode: bool,
    pub images: u32,
    /// Weighted cue counts; the last user message counts double.
    pub code: f32,
    pub math: f32,
    pub reasoning: f32,
    pub writing: f32,
    /// How much work the prompt asks for, weighted like the cues.
    pub complexity: Complexity,
    pub pii: PiiKinds,
    pub signals: Signals,
}

/// Counts that say how much work a prompt asks for, whatever its topic: they let the
/// difficulty score rank prompts of one kind (a set of word problems, say) where topic
/// words cannot.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Complexity {
    pub numbers: f32,
    pub decimals: f32,
    pub sentences: f32,
    pub questions: f32,
    pub operators: f32,
    pub negations: f32,
    pub constraints: f32,
    /// Mean letters and digits per word.
    pub word_length: f32,
}

/// At most this many bytes of text (about 2,000 tokens), newest message first, are
/// scanned for cue words: enough to see what a prompt is about, and an 8k-token prompt
/// costs no more to scan than a 2k-token one. The PII scan still reads everything.
pub const MAX_CUE_BYTES: usize = 8 * 1024;

/// Prompts longer than this many estimated tokens fire [`Signal::LongPrompt`].
const LONG_PROMPT_TOKENS: u64 = 2_000;

impl Features {
    /// Extracts the features of `prompt` in one pass over its text.
    pub fn extract(prompt: &Prompt<'_>) -> Self {
        let last_user = prompt
            .segments
            .iter()
            .rev()
            .find(|s| s.role == Role::User)
            .map(|s| s.message);
        let mut f = Features {
            messages: prompt.messages,
            has_tools: prompt.has_tools,
            json_mode: prompt.json_mode,
            images: prompt.images,
            ..Features::default()
        };
        let mut cues = Cues::default();
        let mut last_message = None;
        for segment in &prompt.segments {
            if segment.role == Role::User && last_message != Some(segment.message) {
                f.user_turns += 1;
            }
            last_message = Some(segment.message);
            f.chars += segment.text.len();
            f.pii = f.pii.union(pii::detect(segment.text));
        }
        // Cues come from the newest MAX_CUE_BYTES of text; PII from all of it.
        let mut budget = MAX_CUE_BYTES;
        for segment in prompt.segments.iter().rev() {
            if budget == 0 {
                break;
            }
            let mut end = budget.min(segment.text.len());
            while !segment.text.is_char_boundary(end) {
                end -= 1;
            }
            budget -= end;
            let weight = if Some(segment.message) == last_user && segment.role == Role::User {
                2.0
            } else {
                1.0
            };
            cues.scan(&segment.text[..end], weight);
        }
        f.prompt_tokens = estimate_tokens(f.chars)
            .saturating_add(u64::from(prompt.messages) * TOKENS_PER_MESSAGE)
            .saturating_add(prompt.token_ids);
        f.code = cues.code_keywords + 4.0 * cues.fences + cues.code_symbols;
        f.math = cues.math_words + cues.math_notation;
        f.reasoning = cues.reasoning;
        f.writing = cues.writing;
        f.complexity = Complexity {
            word_length: if cues.words > 0.0 {
                cues.word_bytes / cues.words
            } else {
                0.0
            },
            ..cues.complexity
        };

        let s = &mut f.signals;
        let flags = [
            (cues.fences > 0.0, Signal::CodeFence),
            (cues.code_keywords >= 2.0, Signal::CodeKeywords),
            (cues.code_symbols >= 2.0, Signal::CodeSymbols),
            (cues.math_notation >= 1.0, Signal::MathNotation),
            (cues.math_words >= 1.0, Signal::MathWords),
            (cues.reasoning >= 1.0, Signal::ReasoningWords),
            (cues.writing >= 1.0, Signal::WritingWords),
            (f.prompt_tokens > LONG_PROMPT_TOKENS, Signal::LongPrompt),
            (f.user_turns > 1, Signal::MultiTurn),
            (f.has_tools, Signal::Tools),
            (f.json_mode, Signal::JsonMode),
            (f.images > 0, Signal::Images),
            (!f.pii.is_empty(), Signal::Pii),
        ];
        for (fired, signal) in flags {
            if fired {
                s.insert(signal);
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(role: Role, message: u32, text: &str) -> super::super::Segment<'_> {
        super::super::Segment {
            role,
            message,
            text,
        }
    }

    #[test]
    fn code_prompt_fires_code_signals() {
        let f = Features::extract(&Prompt::user(
            "Fix this function:\n```python\ndef add(a, b):\n    return a - b\n```",
        ));
        assert!(f.signals.contains(Signal::CodeFence));
        assert!(f.signals.contains(Signal::CodeKeywords));
        assert!(f.code > f.math);
    }

    #[test]
    fn math_prompt_fires_math_signals() {
        let f = Features::extract(&Prompt::user(
            "Solve the equation 3x + 5 = 20 and compute the integral of x^2.",
        ));
        assert!(f.signals.contains(Signal::MathWords));
        assert!(f.signals.contains(Signal::MathNotation));
        assert!(f.math > f.code);
    }

    #[test]
    fn counts_tokens_and_turns() {
        let prompt = Prompt {
            segments: vec![
                segment(Role::System, 0, "You are terse."),
                segment(Role::User, 1, "Hello there"),
            ],
            messages: 2,
            ..Prompt::default()
        };
        let f = Features::extract(&prompt);
        assert_eq!(f.chars, 25);
        assert_eq!(f.prompt_tokens, 7 + 8);
        assert_eq!(f.user_turns, 1);
    }

    #[test]
    fn cues_come_from_the_newest_text_and_pii_from_all_of_it() {
        let old = format!(
            "{} Write a poem about the sea. Mail me at ada@example.com.",
            "é".repeat(MAX_CUE_BYTES / 2)
        );
        let prompt = Prompt {
            segments: vec![
                segment(Role::User, 0, &old),
                segment(Role::User, 1, "Now solve the equation 3x + 5 = 20."),
            ],
            messages: 2,
            ..Prompt::default()
        };
        let f = Features::extract(&prompt);
        assert!(
            f.signals.contains(Signal::MathWords),
            "the newest turn is read"
        );
        assert_eq!(f.writing, 0.0, "the poem lies past the cue budget");
        assert!(f.signals.contains(Signal::Pii), "PII is found anywhere");
        assert_eq!(f.chars, old.len() + 35, "every byte still counts as length");
    }

    #[test]
    fn non_ascii_text_is_safe() {
        let f = Features::extract(&Prompt::user("héllo wörld 🌍 计算 \\frac{1}{2} ```"));
        assert!(f.chars > 0);
    }
}
