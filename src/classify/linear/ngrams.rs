//! The hashed input features of the linear model: word uni- and bigrams and character
//! n-grams of the conversation, fastText-style, plus a few dense structural signals.
//!
//! One walker, [`walk`], serves both training (which collects the features, through
//! [`for_each_feature`]) and classification (which adds their weight rows block by
//! block), so the two cannot drift apart. It allocates nothing.
//!
//! A text is read twice: once byte by byte, to normalize it into a buffer and hash its
//! words, then once per character n-gram length, hashing every window of the buffer in
//! a loop without branches.

use crate::classify::{Features, Prompt, Role, Signal};

/// How text becomes hashed features; stored in the model file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FeatureSpec {
    /// Hashed features fall into `1 << hash_bits` buckets.
    pub hash_bits: u8,
    /// Character n-grams of these lengths (inclusive); `0, 0` for none.
    pub char_min: u8,
    pub char_max: u8,
    /// Weight of the last user message; every other message (system prompt, earlier
    /// turns, assistant and tool text) counts with `context_weight`.
    pub last_user_weight: f32,
    pub context_weight: f32,
    /// Weight of word and word-bigram features relative to character n-grams, which
    /// are about three times as many.
    pub word_weight: f32,
}

impl Default for FeatureSpec {
    fn default() -> Self {
        FeatureSpec {
            hash_bits: 17,
            char_min: 3,
            char_max: 5,
            last_user_weight: 1.0,
            context_weight: 0.5,
            word_weight: 2.0,
        }
    }
}

impl FeatureSpec {
    /// Number of hashed buckets.
    pub fn buckets(&self) -> usize {
        1 << self.hash_bits
    }

    /// Rows of the weight matrix: the buckets, then one row per dense signal.
    pub fn rows(&self) -> usize {
        self.buckets() + DENSE
    }

    /// Whether every weight a feature can have (the last user turn's or the context's,
    /// times the word weight or 1) is a whole number of [`WEIGHT_UNITS`] from 0 to
    /// [`MAX_WEIGHT`]: classification multiplies rows by whole units, exact only then.
    pub fn weights_are_exact(&self) -> bool {
        [self.last_user_weight, self.context_weight]
            .into_iter()
            .flat_map(|turn| [turn, turn * self.word_weight])
            .all(|w| {
                let units = w * WEIGHT_UNITS;
                units.fract() == 0.0 && (0.0..=MAX_UNITS as f32).contains(&units)
            })
    }
}

/// Feature weights are counted in sixteenths when rows are added (see
/// [`FeatureSpec::weights_are_exact`]).
pub const WEIGHT_UNITS: f32 = 16.0;
/// The largest feature weight.
pub const MAX_WEIGHT: f32 = 8.0;
/// The largest feature weight in units.
pub const MAX_UNITS: u32 = (MAX_WEIGHT * WEIGHT_UNITS) as u32;

/// Number of dense structural signals, see [`dense`].
pub const DENSE: usize = 18;

/// The dense signals from this index on measure complexity (how much work a prompt
/// asks for); only the frontier head learns from them, the domain and task heads keep
/// to what a prompt is about.
pub const COMPLEXITY: usize = 10;

/// At most this many bytes of text (about 500 tokens) are read for n-grams, newest
/// message first: a long prompt's topic shows in its first page, and the cost stays
/// bounded. The PII scan still reads everything.
pub const MAX_NGRAM_BYTES: usize = 2 * 1024;

/// The dense signals of a request, each scaled to about [0, 1].
pub fn dense(f: &Features) -> [f32; DENSE] {
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let log = |x: f32| (x.max(0.0)).ln_1p() / 3.0;
    [
        ((f.prompt_tokens as f32).ln_1p() / 8.0).min(2.0),
        flag(f.user_turns > 1),
        flag(f.has_tools),
        flag(f.json_mode),
        flag(f.images > 0),
        log(f.code),
        log(f.math),
        log(f.reasoning),
        log(f.writing),
        flag(f.signals.contains(Signal::CodeFence)),
        log(f.complexity.numbers),
        log(f.complexity.decimals),
        log(f.complexity.sentences),
        log(f.complexity.questions),
        log(f.complexity.operators),
        log(f.complexity.negations),
        log(f.complexity.constraints),
        (f.complexity.word_length / 10.0).min(2.0),
    ]
}

/// A weight in whole [`WEIGHT_UNITS`], from 0 to [`MAX_WEIGHT`] (rounded: exact for
/// the weights a model file may hold).
pub fn units(weight: f32) -> u32 {
    (weight * WEIGHT_UNITS).round().clamp(0.0, MAX_UNITS as f32) as u32
}

/// The two kinds of hashed feature: within a message, each kind has one weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Chars,
    Words,
}

/// Features are handed over in blocks of at most this many, of one kind and weight.
pub const BLOCK: usize = 128;

/// Where [`walk`] delivers the features of a prompt.
pub trait Sink {
    /// What the walk calls with each feature as it is hashed.
    type Prefetch: Prefetch;

    /// The walk takes this once per text and keeps it in registers while it hashes.
    fn prefetch(&self) -> Self::Prefetch;

    /// Takes up to [`BLOCK`] features of one kind, each with the weight `units`
    /// (in [`WEIGHT_UNITS`]).
    fn block(&mut self, kind: Kind, units: u32, buckets: &[u32]);
}

/// Called with each feature as it is hashed, long before its block is delivered
/// (classification starts loading the feature's weight row into the cache).
pub trait Prefetch: Copy {
    fn bucket(self, bucket: usize);
}

/// No prefetching.
impl Prefetch for () {
    #[inline(always)]
    fn bucket(self, _: usize) {}
}

/// Calls `emit(bucket, units, kind)` for every hashed feature of `prompt` (once per
/// occurrence, in no particular order), with the feature's weight in
/// [`WEIGHT_UNITS`], and returns how many there were.
pub fn for_each_feature(
    spec: &FeatureSpec,
    prompt: &Prompt<'_>,
    emit: impl FnMut(usize, u32, Kind),
) -> u32 {
    struct Each<F>(F);
    impl<F: FnMut(usize, u32, Kind)> Sink for Each<F> {
        type Prefetch = ();

        fn prefetch(&self) {}

        fn block(&mut self, kind: Kind, units: u32, buckets: &[u32]) {
            for &b in buckets {
                (self.0)(b as usize, units, kind);
            }
        }
    }
    walk(spec, prompt, &mut Each(emit))
}

/// Hashes the features of `prompt` (the words, word bigrams and character n-grams of
/// each message, newest first, up to [`MAX_NGRAM_BYTES`]) into blocks for `sink`, and
/// returns how many there were.
#[inline(always)]
pub fn walk(spec: &FeatureSpec, prompt: &Prompt<'_>, sink: &mut impl Sink) -> u32 {
    let last_user = prompt
        .segments
        .iter()
        .rev()
        .find(|s| s.role == Role::User)
        .map(|s| s.message);
    let mut walker = Walker::new(spec);
    let mut budget = MAX_NGRAM_BYTES;
    // The newest text first, so the budget goes to the last turn.
    for segment in prompt.segments.iter().rev() {
        if budget == 0 {
            break;
        }
        let weight = if segment.role == Role::User && Some(segment.message) == last_user {
            spec.last_user_weight
        } else {
            spec.context_weight
        };
        let text = prefix(segment.text, budget);
        budget -= text.len();
        walker.chars.set_units(units(weight), Kind::Chars, sink);
        walker
            .words
            .set_units(units(weight * spec.word_weight), Kind::Words, sink);
        walker.text(text, sink);
    }
    walker.chars.flush(Kind::Chars, sink);
    walker.words.flush(Kind::Words, sink);
    walker.count
}

/// The longest prefix of `text` of at most `max` bytes.
fn prefix(text: &str, max: usize) -> &[u8] {
    let bytes = text.as_bytes();
    &bytes[..bytes.len().min(max)]
}

/// Multiplier of the hash mixes (2^64 / golden ratio).
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;
/// Tags that keep feature kinds apart in the shared bucket space.
const WORD: u64 = 0x5bd1_e995_0000_0001;
const BIGRAM: u64 = 0xc2b2_ae35_0000_0002;

/// The bucket of hash `h` in a space of `2^(64 - shift)`.
#[inline(always)]
fn bucket(h: u64, shift: u32) -> usize {
    (h.wrapping_mul(MIX) >> shift) as usize
}

/// Zero bytes before a text's normalized bytes, so that every byte ends an 8-byte
/// window.
const PAD: usize = 7;

/// Features of one kind waiting, at one weight, to be handed over.
struct Pending {
    units: u32,
    len: usize,
    buckets: [u32; BLOCK],
}

impl Pending {
    fn new() -> Self {
        Pending {
            units: 0,
            len: 0,
            buckets: [0; BLOCK],
        }
    }

    fn flush(&mut self, kind: Kind, sink: &mut impl Sink) {
        if let Some(waiting) = self.buckets.get(..self.len).filter(|w| !w.is_empty()) {
            sink.block(kind, self.units, waiting);
        }
        self.len = 0;
    }

    /// The weight of the features pushed from now on.
    fn set_units(&mut self, units: u32, kind: Kind, sink: &mut impl Sink) {
        if units != self.units {
            self.flush(kind, sink);
            self.units = units;
        }
    }
}

/// The walk's state: one text's normalized bytes, and the features waiting by kind.
struct Walker {
    shift: u32,
    /// The character n-gram lengths.
    char_lengths: std::ops::Range<usize>,
    /// [`PAD`] zeros, a space (so the first word's n-grams see a word boundary), then
    /// the text's bytes, normalized, with runs of spaces as one.
    bytes: [u8; PAD + 1 + MAX_NGRAM_BYTES],
    chars: Pending,
    words: Pending,
    count: u32,
}

/// The word being read, and the one before it (for the bigram).
struct Word {
    hash: u64,
    len: u32,
    previous: Option<u64>,
}

impl Walker {
    fn new(spec: &FeatureSpec) -> Self {
        let char_lengths = match spec.char_min {
            0 => 0..0,
            min => usize::from(min)..usize::from(spec.char_max.min(8)) + 1,
        };
        let mut bytes = [0; PAD + 1 + MAX_NGRAM_BYTES];
        bytes[PAD] = b' ';
        Walker {
            shift: 64 - u32::from(spec.hash_bits),
            char_lengths,
            bytes,
            chars: Pending::new(),
            words: Pending::new(),
            count: 0,
        }
    }

    /// Pushes a word or bigram feature.
    #[inline(always)]
    fn push_word<S: Sink>(&mut self, h: u64, sink: &mut S, prefetch: S::Prefetch) {
        let bucket = bucket(h, self.shift);
        prefetch.bucket(bucket);
        let words = &mut self.words;
        if let Some(slot) = words.buckets.get_mut(words.len) {
            *slot = bucket as u32;
            words.len += 1;
        }
        if words.len == BLOCK {
            words.flush(Kind::Words, sink);
        }
        self.count += 1;
    }

    /// Ends the word being read, if any: pushes it, and the bigram with the word
    /// before.
    #[inline(always)]
    fn end_word<S: Sink>(&mut self, word: &mut Word, sink: &mut S, prefetch: S::Prefetch) {
        if word.len == 0 {
            return;
        }
        self.push_word(word.hash, sink, prefetch);
        if let Some(p) = word.previous {
            self.push_word(p.rotate_left(17) ^ word.hash ^ BIGRAM, sink, prefetch);
        }
        word.previous = Some(word.hash);
        word.hash = WORD;
        word.len = 0;
    }

    /// The features of one text: its words and bigrams as its bytes are normalized,
    /// then its character n-grams, one length at a time.
    #[inline(always)]
    fn text(&mut self, text: &[u8], sink: &mut impl Sink) {
        let prefetch = sink.prefetch();
        let mut len = 0;
        let mut last_space = true;
        let mut word = Word {
            hash: WORD,
            len: 0,
            previous: None,
        };
        for &raw in text {
            let c = NORMALIZED[usize::from(raw)];
            if c == b' ' {
                self.end_word(&mut word, sink, prefetch);
                if last_space {
                    continue;
                }
                last_space = true;
            } else {
                last_space = false;
                if WORD_BYTE[usize::from(c)] {
                    word.hash = (word.hash ^ u64::from(c)).wrapping_mul(0x100_0000_01b3);
                    word.len += 1;
                } else {
                    // Punctuation ends a word but not the bigram chain.
                    self.end_word(&mut word, sink, prefetch);
                }
            }
            if let Some(slot) = self.bytes.get_mut(PAD + 1 + len) {
                *slot = c;
                len += 1;
            }
        }
        self.end_word(&mut word, sink, prefetch);
        for n in self.char_lengths.clone() {
            self.char_grams(n, len, sink, prefetch);
        }
    }

    /// Pushes the character n-grams of length `n` (1 to 8) of the `len` normalized
    /// bytes: one ending at each byte of the text from the n-th on (counting the
    /// leading space, which itself ends none).
    #[inline(always)]
    fn char_grams<S: Sink>(&mut self, n: usize, len: usize, sink: &mut S, prefetch: S::Prefetch) {
        // The n-gram is the window's low n bytes, tagged with its length.
        let mask = u64::MAX >> (64 - 8 * n.clamp(1, 8));
        let tag = (n as u64) << 59;
        let shift = self.shift;
        // Windows end at each byte; the first one of this length ends at its n-th, and
        // never at the leading space.
        let end = PAD + 1 + len;
        let mut at = PAD + n.max(2) - 1;
        while at < end {
            let chars = &mut self.chars;
            let take = (BLOCK - chars.len).min(end - at);
            let (Some(bytes), Some(slots)) = (
                self.bytes.get(at - PAD..at + take),
                chars.buckets.get_mut(chars.len..chars.len + take),
            ) else {
                break;
            };
            for (slot, window) in slots.iter_mut().zip(bytes.windows(8)) {
                let window = <[u8; 8]>::try_from(window).map_or(0, u64::from_be_bytes);
                let b = bucket((window & mask) ^ tag, shift);
                prefetch.bucket(b);
                *slot = b as u32;
            }
            chars.len += take;
            self.count += take as u32;
            at += take;
            if chars.len == BLOCK {
                chars.flush(Kind::Chars, sink);
            }
        }
    }
}

/// [`normalize`] of every byte, looked up rather than computed in the walk.
static NORMALIZED: [u8; 256] = {
    let mut table = [0; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = normalize(b as u8);
        b += 1;
    }
    table
};

/// [`is_word_byte`] of every byte.
static WORD_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = is_word_byte(b as u8);
        b += 1;
    }
    table
};

/// Lower-cases ASCII, folds digits to `0` and whitespace to a space; other bytes
/// (punctuation, UTF-8) pass as they are.
const fn normalize(b: u8) -> u8 {
    match b {
        b'A'..=b'Z' => b + 32,
        b'0'..=b'9' => b'0',
        b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => b' ',
        _ => b,
    }
}

/// Letters, digits, `_` and every byte of a multi-byte UTF-8 character.
const fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(spec: &FeatureSpec, text: &str) -> (Vec<usize>, u32) {
        let mut out = Vec::new();
        let norm = for_each_feature(spec, &Prompt::user(text), |b, _, _| out.push(b));
        (out, norm)
    }

    /// The character n-gram buckets of a prompt's `texts` (newest first) read the plain
    /// way: for each text within the byte budget, every window of each length over a
    /// space and its normalized bytes (runs of spaces read as one) that ends on a byte
    /// of the text.
    fn plain_char_grams(spec: &FeatureSpec, texts: &[&str]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut budget = MAX_NGRAM_BYTES;
        for text in texts {
            let read = &text.as_bytes()[..text.len().min(budget)];
            budget -= read.len();
            let mut bytes = vec![b' '];
            for &b in read {
                let c = normalize(b);
                if !(c == b' ' && bytes.last() == Some(&b' ')) {
                    bytes.push(c);
                }
            }
            for n in spec.char_min..=spec.char_max {
                let windows = bytes.windows(usize::from(n));
                // A 1-gram window on the leading space ends on no byte of the text.
                for window in windows.skip(usize::from(n == 1)) {
                    let h = window.iter().fold(0u64, |h, &b| h << 8 | u64::from(b));
                    out.push(bucket(
                        h ^ u64::from(n) << 59,
                        64 - u32::from(spec.hash_bits),
                    ));
                }
            }
        }
        out.sort_unstable();
        out
    }

    #[test]
    fn char_grams_are_every_window_of_the_normalized_text() {
        let long = "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich. ".repeat(40);
        fn one(text: &str) -> Prompt<'_> {
            Prompt::user(text)
        }
        let prompts = [
            (one(""), vec![""]),
            (one("a"), vec!["a"]),
            (one("ab"), vec!["ab"]),
            (one("abc"), vec!["abc"]),
            (
                one("  Hello,\t  World!\n\n 12 "),
                vec!["  Hello,\t  World!\n\n 12 "],
            ),
            (one(&long), vec![&long]),
            // Empty and blank messages add nothing; the budget runs out in the oldest.
            (
                Prompt::conversation(&[
                    (Role::System, &long),
                    (Role::User, ""),
                    (Role::Assistant, " \n "),
                    (Role::User, "the last question"),
                ]),
                vec!["the last question", " \n ", "", &long],
            ),
        ];
        for spec in (1..=8).flat_map(|min| {
            (min..=8).map(move |max| FeatureSpec {
                char_min: min,
                char_max: max,
                ..FeatureSpec::default()
            })
        }) {
            for (prompt, texts) in &prompts {
                let mut chars = Vec::new();
                for_each_feature(&spec, prompt, |b, _, kind| {
                    if kind == Kind::Chars {
                        chars.push(b);
                    }
                });
                chars.sort_unstable();
                let (min, max) = (spec.char_min, spec.char_max);
                assert_eq!(
                    chars,
                    plain_char_grams(&spec, texts),
                    "{min}-{max} {texts:?}"
                );
            }
        }
    }

    #[test]
    fn words_and_char_grams_are_counted() {
        let spec = FeatureSpec {
            char_min: 0,
            char_max: 0,
            ..FeatureSpec::default()
        };
        // Three words, two bigrams.
        let (features, norm) = collect(&spec, "one two three");
        assert_eq!(features.len(), 5);
        assert_eq!(norm, 5);
        let spec = FeatureSpec {
            char_min: 3,
            char_max: 3,
            ..FeatureSpec::default()
        };
        // " ab" and "ab " style windows: 4 normalized bytes after the leading space.
        let (features, _) = collect(&spec, "abcd");
        assert_eq!(features.len(), 1 + 3);
    }

    #[test]
    fn only_whole_sixteenths_up_to_8_are_exact_weights() {
        let with = |last_user_weight, word_weight| FeatureSpec {
            last_user_weight,
            word_weight,
            ..FeatureSpec::default()
        };
        assert!(FeatureSpec::default().weights_are_exact());
        assert!(with(0.0625, 4.0).weights_are_exact());
        for (user, word) in [(0.3, 2.0), (1.0, 9.0), (-1.0, 1.0), (f32::NAN, 1.0)] {
            assert!(!with(user, word).weights_are_exact(), "{user} × {word}");
        }
        assert_eq!(units(0.5), 8);
        assert_eq!(units(100.0), MAX_UNITS);
        assert_eq!(units(-1.0), 0);
    }

    #[test]
    fn case_digits_and_spacing_do_not_matter() {
        let spec = FeatureSpec::default();
        assert_eq!(
            collect(&spec, "Solve 12 + 7").0,
            collect(&spec, "solve   34\n+ 9").0
        );
        assert_ne!(collect(&spec, "solve x").0, collect(&spec, "solve y").0);
    }

    #[test]
    fn buckets_stay_in_range_for_any_bytes() {
        let spec = FeatureSpec {
            hash_bits: 10,
            ..FeatureSpec::default()
        };
        let (features, _) = collect(&spec, "héllo 🌍 计算 ```x=1;``` \u{0}\u{7f}");
        assert!(!features.is_empty());
        assert!(features.iter().all(|&b| b < spec.buckets()));
    }

    #[test]
    fn last_user_turn_outweighs_context() {
        let spec = FeatureSpec::default();
        let prompt = Prompt::conversation(&[(Role::System, "be brief"), (Role::User, "hello")]);
        let mut weights = Vec::new();
        for_each_feature(&spec, &prompt, |_, w, _| weights.push(w));
        assert!(weights.contains(&16) && weights.contains(&8));
    }

    #[test]
    fn long_text_is_read_up_to_the_budget() {
        let spec = FeatureSpec::default();
        let long = "word ".repeat(10 * MAX_NGRAM_BYTES);
        let (features, _) = collect(&spec, &long);
        assert!(features.len() < 6 * MAX_NGRAM_BYTES);
    }
}
