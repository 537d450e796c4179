//! Feature extraction: one pass over the conversation's text counting the signals the
//! classifiers use (code, math, reasoning and writing cues, length, structure, PII).

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
    pub pii: PiiKinds,
    pub signals: Signals,
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
        f.prompt_tokens =
            estimate_tokens(f.chars) + u64::from(prompt.messages) * TOKENS_PER_MESSAGE;
        f.code = cues.code_keywords + 4.0 * cues.fences + cues.code_symbols;
        f.math = cues.math_words + cues.math_notation;
        f.reasoning = cues.reasoning;
        f.writing = cues.writing;

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

/// Running cue counts over the text.
#[derive(Default)]
struct Cues {
    fences: f32,
    code_keywords: f32,
    code_symbols: f32,
    math_words: f32,
    math_notation: f32,
    reasoning: f32,
    writing: f32,
}

/// ASCII letters, digits and `_`: the bytes of a word the cue scan reads.
static CUE_WORD_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric() || b == b'_' as usize;
        b += 1;
    }
    table
};

/// Words longer than this are never cue words, so they are not lower-cased.
const MAX_CUE_WORD: usize = 14;

impl Cues {
    fn scan(&mut self, text: &str, weight: f32) {
        let bytes = text.as_bytes();
        let mut symbols = 0u32;
        let mut operators_between_digits = 0u32;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b.is_ascii_alphabetic() || b == b'_' {
                let start = i;
                i += bytes[i..]
                    .iter()
                    .position(|&c| !CUE_WORD_BYTE[usize::from(c)])
                    .unwrap_or(bytes.len() - i);
                // A preceding '#' or '\' changes the meaning: `#include`, `\frac`.
                let prefix = if start > 0 { bytes[start - 1] } else { b' ' };
                self.word(&bytes[start..i], prefix, weight);
                continue;
            }
            match b {
                b'`' if bytes[i..].starts_with(b"```") => {
                    self.fences += 0.5 * weight;
                    i += 3;
                    continue;
                }
                b'{' | b'}' | b';' | b'[' | b']' => symbols += 1,
                b'=' if bytes.get(i + 1) == Some(&b'>') || bytes.get(i + 1) == Some(&b'=') => {
                    symbols += 1
                }
                b':' if bytes.get(i + 1) == Some(&b':') => symbols += 1,
                b'+' | b'-' | b'*' | b'/' | b'^' | b'=' => {
                    let digit_before = i > 0 && bytes[i - 1].is_ascii_digit()
                        || i > 1 && bytes[i - 1] == b' ' && bytes[i - 2].is_ascii_digit();
                    let digit_after = bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
                        || bytes.get(i + 1) == Some(&b' ')
                            && bytes.get(i + 2).is_some_and(u8::is_ascii_digit);
                    if digit_before && digit_after {
                        operators_between_digits += 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        // Prose has some brackets and semicolons too: only dense use counts, in eights.
        self.code_symbols += (symbols / 8) as f32 * weight;
        self.math_notation += operators_between_digits.min(8) as f32 * 0.5 * weight;
    }

    fn word(&mut self, word: &[u8], prefix: u8, weight: f32) {
        if word.len() > MAX_CUE_WORD {
            return;
        }
        let mut buf = [0u8; MAX_CUE_WORD];
        let lower = &mut buf[..word.len()];
        lower.copy_from_slice(word);
        lower.make_ascii_lowercase();
        if prefix == b'\\' {
            if matches!(
                &*lower,
                b"frac"
                    | b"int"
                    | b"sum"
                    | b"sqrt"
                    | b"lim"
                    | b"cdot"
                    | b"pi"
                    | b"theta"
                    | b"alpha"
            ) {
                self.math_notation += weight;
            }
            return;
        }
        if prefix == b'#' && matches!(&*lower, b"include" | b"define" | b"pragma") {
            self.code_keywords += 2.0 * weight;
            return;
        }
        match &*lower {
            b"def" | b"fn" | b"impl" | b"struct" | b"enum" | b"const" | b"let" | b"var"
            | b"function" | b"return" | b"import" | b"class" | b"public" | b"private"
            | b"static" | b"void" | b"async" | b"await" | b"elif" | b"lambda" | b"println"
            | b"printf" | b"console" | b"self" | b"null" | b"nullptr" | b"bool" | b"int"
            | b"string" | b"usize" | b"unwrap" | b"python" | b"javascript" | b"typescript"
            | b"rust" | b"java" | b"golang" | b"sql" | b"select" | b"regex" | b"compile"
            | b"compiler" | b"debug" | b"bug" | b"refactor" | b"function_call" | b"api"
            | b"json" | b"html" | b"css" | b"bash" | b"shell" | b"script" | b"code"
            | b"algorithm" | b"implement" | b"dockerfile" | b"kubernetes" | b"segfault"
            | b"exception" | b"stacktrace" | b"traceback" => self.code_keywords += weight,
            b"solve" | b"equation" | b"equations" | b"integral" | b"derivative"
            | b"probability" | b"calculate" | b"compute" | b"theorem" | b"matrix"
            | b"polynomial" | b"algebra" | b"geometry" | b"triangle" | b"fraction" | b"percent"
            | b"percentage" | b"sum" | b"product" | b"quotient" | b"remainder" | b"prime"
            | b"integer" | b"integers" | b"divisible" | b"factor" | b"logarithm" | b"sqrt"
            | b"limit" | b"vector" | b"eigenvalue" | b"expected" | b"variance" | b"mean"
            | b"median" | b"radius" | b"area" | b"perimeter" | b"angle" | b"ratio" | b"how" => {
                // "how" alone is weak; it only tips "how many/much" questions.
                self.math_words += if &*lower == b"how" { 0.25 } else { 1.0 } * weight
            }
            b"prove" | b"proof" | b"derive" | b"analyze" | b"analyse" | b"compare"
            | b"tradeoffs" | b"tradeoff" | b"evaluate" | b"critique" | b"design"
            | b"architecture" | b"optimize" | b"rigorous" | b"why" | b"justify" | b"strategy"
            | b"plan" | b"reason" | b"reasoning" | b"implications" | b"nuanced" => {
                self.reasoning += weight
            }
            b"story" | b"poem" | b"poetry" | b"essay" | b"lyrics" | b"song" | b"novel"
            | b"fiction" | b"character" | b"characters" | b"narrative" | b"haiku" | b"sonnet"
            | b"screenplay" | b"creative" | b"rewrite" | b"tone" | b"blog" | b"slogan"
            | b"limerick" => self.writing += weight,
            _ => {}
        }
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
