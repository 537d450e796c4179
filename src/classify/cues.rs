//! The cue scan: counts the words and symbols that say a prompt is about code, math,
//! reasoning or writing, and those that say how much work it asks for (numbers,
//! sentences, operators, negations, constraints): signals that mean the same on any
//! dataset, where topic words do not.
//!
//! It runs on every request, over up to 8 KB of text, so it reads each byte once
//! through a class table, builds each word's lower-cased key as it goes, and looks the
//! key up in a small open-addressing table built at compile time (one probe for most
//! words) rather than comparing it against the lists.

/// Running cue counts over the text, each occurrence times its message's weight.
#[derive(Debug, Default, PartialEq)]
pub struct Cues {
    /// Code fences (a pair of ``` counts one).
    pub fences: f32,
    pub code_keywords: f32,
    /// Dense brackets and semicolons, in eights.
    pub code_symbols: f32,
    pub math_words: f32,
    /// Operators between digits (at most 8 per text, half each), and TeX commands.
    pub math_notation: f32,
    pub reasoning: f32,
    pub writing: f32,
    /// How much work the text asks for (`word_length` is left to the caller, from
    /// `words` and `word_bytes`).
    pub complexity: Complexity,
    /// Words, and their letters and digits (the mean word length).
    pub words: f32,
    pub word_bytes: f32,
}

use super::features::Complexity;

/// Code keywords and words about code (one code keyword each).
const CODE_WORDS: &str = "\
    def fn impl struct enum const let var function return import class public private \
    static void async await elif lambda println printf console self null nullptr bool \
    int string usize unwrap python javascript typescript rust java golang sql select \
    regex compile compiler debug bug refactor function_call api json html css bash shell \
    script code algorithm implement dockerfile kubernetes segfault exception stacktrace \
    traceback";

/// Math words (one each).
const MATH_WORDS: &str = "\
    solve equation equations integral derivative probability calculate compute theorem \
    matrix polynomial algebra geometry triangle fraction percent percentage sum product \
    quotient remainder prime integer integers divisible factor logarithm sqrt limit \
    vector eigenvalue expected variance mean median radius area perimeter angle ratio";

/// Alone it is weak: it only tips "how many / how much" questions (a quarter each).
const WEAK_MATH_WORDS: &str = "how";

/// Words that ask for reasoning.
const REASONING_WORDS: &str = "\
    prove proof derive analyze analyse compare tradeoffs tradeoff evaluate critique \
    design architecture optimize rigorous why justify strategy plan reason reasoning \
    implications nuanced";

/// Words that ask for creative writing.
const WRITING_WORDS: &str = "\
    story poem poetry essay lyrics song novel fiction character characters narrative \
    haiku sonnet screenplay creative rewrite tone blog slogan limerick";

/// Words that turn a question around.
const NEGATION_WORDS: &str = "not except least incorrect false never unless cannot neither";

/// Words that add a condition or a step to a problem.
const CONSTRAINT_WORDS: &str = "\
    must exactly each every per remaining times twice half if then after total only \
    most";

/// After a `#`: C preprocessor directives (two code keywords each).
const DIRECTIVES: &str = "include define pragma";

/// After a `\`: TeX commands (math notation).
const TEX_COMMANDS: &str = "\
    frac int sum sqrt lim cdot pi theta alpha";

/// Words longer than this are never cue words.
const MAX_WORD: usize = 14;

/// What a word is a cue for: one plain meaning, and its meanings after `#` and `\`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Meaning(u8);

impl Meaning {
    const CODE: u8 = 1;
    const MATH: u8 = 2;
    const WEAK_MATH: u8 = 3;
    const REASONING: u8 = 4;
    const WRITING: u8 = 5;
    const NEGATION: u8 = 6;
    const CONSTRAINT: u8 = 7;
    /// The plain meaning lives in the low bits, the prefixed ones above.
    const PLAIN: u8 = 0b111;
    const DIRECTIVE: u8 = 1 << 3;
    const TEX: u8 = 1 << 4;
}

/// Slots of the cue word table (a power of two, about four times the words).
const SLOTS: usize = 1024;

/// The cue words by key; an empty slot has key 0.
static TABLE: [(u128, Meaning); SLOTS] = build_table();

/// A word's key: its bytes, big-endian, in a `u128` (words are at most 14 bytes; a
/// longer word keeps its last 16).
const fn key(word: &[u8]) -> u128 {
    let mut key = 0u128;
    let mut i = 0;
    while i < word.len() {
        key = key << 8 | word[i] as u128;
        i += 1;
    }
    key
}

/// The first slot to probe for `key`.
const fn slot(key: u128) -> usize {
    let folded = (key as u64) ^ ((key >> 64) as u64).rotate_left(29);
    (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOTS.trailing_zeros())) as usize
}

const fn build_table() -> [(u128, Meaning); SLOTS] {
    let mut table = [(0u128, Meaning(0)); SLOTS];
    // The plain lists in order of precedence: a word takes the first plain meaning.
    let lists: [(&str, u8); 9] = [
        (CODE_WORDS, Meaning::CODE),
        (MATH_WORDS, Meaning::MATH),
        (WEAK_MATH_WORDS, Meaning::WEAK_MATH),
        (REASONING_WORDS, Meaning::REASONING),
        (WRITING_WORDS, Meaning::WRITING),
        (NEGATION_WORDS, Meaning::NEGATION),
        (CONSTRAINT_WORDS, Meaning::CONSTRAINT),
        (DIRECTIVES, Meaning::DIRECTIVE),
        (TEX_COMMANDS, Meaning::TEX),
    ];
    let mut l = 0;
    while l < lists.len() {
        let (words, meaning) = lists[l];
        let words = words.as_bytes();
        let mut w = 0;
        while w < words.len() {
            // The next word: up to a space or the end.
            let mut end = w;
            while end < words.len() && words[end] != b' ' {
                end += 1;
            }
            let word = words.split_at(end).0.split_at(w).1;
            w = end + 1;
            if word.is_empty() {
                continue;
            }
            assert!(word.len() <= MAX_WORD);
            let k = key(word);
            let mut s = slot(k);
            while table[s].0 != 0 && table[s].0 != k {
                s = (s + 1) % SLOTS;
            }
            let old = table[s].1.0;
            let plain_taken = old & Meaning::PLAIN != 0;
            let add = if meaning & Meaning::PLAIN != 0 && plain_taken {
                0
            } else {
                meaning
            };
            table[s] = (k, Meaning(old | add));
        }
        l += 1;
    }
    table
}

/// The meaning of the word with `key` (0 for none).
#[inline]
fn meaning(key: u128) -> u8 {
    let mut s = slot(key);
    loop {
        match TABLE.get(s) {
            Some(&(k, m)) if k == key => return m.0,
            Some(&(0, _)) | None => return 0,
            Some(_) => s = (s + 1) % SLOTS,
        }
    }
}

/// What a byte starts in the scan.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Other,
    /// An ASCII letter or `_`: a word.
    Word,
    /// `{ } ; [ ]`: a code symbol.
    Symbol,
    /// `+ - * / ^`: an operator, math notation between digits.
    Operator,
    Equals,
    Colon,
    Backtick,
    Digit,
    /// `.`, `!`: a sentence end before a space.
    Stop,
    Question,
}

static CLASS: [Class; 256] = {
    let mut table = [Class::Other; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => Class::Word,
            b'{' | b'}' | b';' | b'[' | b']' => Class::Symbol,
            b'+' | b'-' | b'*' | b'/' | b'^' => Class::Operator,
            b'=' => Class::Equals,
            b':' => Class::Colon,
            b'`' => Class::Backtick,
            b'0'..=b'9' => Class::Digit,
            b'.' | b'!' => Class::Stop,
            b'?' => Class::Question,
            _ => Class::Other,
        };
        b += 1;
    }
    table
};

/// ASCII letters, digits and `_`, lower-cased; 0 for every other byte (it ends a word).
static WORD_BYTE: [u8; 256] = {
    let mut table = [0; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'_' {
            table[b] = c.to_ascii_lowercase();
        }
        b += 1;
    }
    table
};

impl Cues {
    /// Counts the cues of `text`, each times `weight`.
    pub fn scan(&mut self, text: &str, weight: f32) {
        let bytes = text.as_bytes();
        let digit = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_digit);
        let next_is = |i: usize, c: u8| bytes.get(i + 1) == Some(&c);
        let ends_sentence = |i: usize| bytes.get(i + 1).is_none_or(u8::is_ascii_whitespace);
        let mut symbols = 0u32;
        let mut operators_between_digits = 0u32;
        let (mut numbers, mut decimals, mut sentences, mut questions) = (0u32, 0u32, 0u32, 0u32);
        let (mut operators, mut words, mut word_bytes) = (0u32, 0u32, 0u32);
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            match CLASS[usize::from(b)] {
                Class::Word => {
                    let start = i;
                    let mut key = 0u128;
                    while let Some(&c) = bytes.get(i) {
                        let lower = WORD_BYTE[usize::from(c)];
                        if lower == 0 {
                            break;
                        }
                        key = key << 8 | u128::from(lower);
                        i += 1;
                    }
                    words += 1;
                    word_bytes += (i - start) as u32;
                    if i - start <= MAX_WORD {
                        // A preceding '#' or '\' changes the meaning: `#include`, `\frac`.
                        let prefix = start.checked_sub(1).and_then(|p| bytes.get(p));
                        self.word(meaning(key), prefix.copied(), weight);
                    }
                    continue;
                }
                Class::Backtick if bytes[i..].starts_with(b"```") => {
                    self.fences += 0.5 * weight;
                    i += 3;
                    continue;
                }
                Class::Digit => {
                    // A number: digits, and `.` or `,` between digits.
                    numbers += 1;
                    let mut point = false;
                    i += 1;
                    while let Some(&c) = bytes.get(i) {
                        if c.is_ascii_digit() {
                            i += 1;
                        } else if (c == b'.' || c == b',') && digit(i + 1) {
                            point |= c == b'.';
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    decimals += u32::from(point);
                    continue;
                }
                Class::Stop if ends_sentence(i) => sentences += 1,
                Class::Question => {
                    questions += 1;
                    sentences += u32::from(ends_sentence(i));
                }
                Class::Symbol => symbols += 1,
                Class::Equals if next_is(i, b'>') || next_is(i, b'=') => symbols += 1,
                Class::Colon if next_is(i, b':') => symbols += 1,
                Class::Operator | Class::Equals => {
                    operators += 1;
                    let digit_before =
                        i > 0 && digit(i - 1) || i > 1 && bytes[i - 1] == b' ' && digit(i - 2);
                    let digit_after = digit(i + 1) || next_is(i, b' ') && digit(i + 2);
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
        let c = &mut self.complexity;
        c.numbers += numbers as f32 * weight;
        c.decimals += decimals as f32 * weight;
        c.sentences += sentences as f32 * weight;
        c.questions += questions as f32 * weight;
        c.operators += operators as f32 * weight;
        self.words += words as f32 * weight;
        self.word_bytes += word_bytes as f32 * weight;
    }

    /// Counts a word of `meaning` after the byte `prefix`.
    fn word(&mut self, meaning: u8, prefix: Option<u8>, weight: f32) {
        if meaning == 0 {
            return;
        }
        match prefix {
            Some(b'\\') => {
                if meaning & Meaning::TEX != 0 {
                    self.math_notation += weight;
                }
                return;
            }
            Some(b'#') if meaning & Meaning::DIRECTIVE != 0 => {
                self.code_keywords += 2.0 * weight;
                return;
            }
            _ => {}
        }
        match meaning & Meaning::PLAIN {
            Meaning::CODE => self.code_keywords += weight,
            Meaning::MATH => self.math_words += weight,
            Meaning::WEAK_MATH => self.math_words += 0.25 * weight,
            Meaning::REASONING => self.reasoning += weight,
            Meaning::WRITING => self.writing += weight,
            Meaning::NEGATION => self.complexity.negations += weight,
            Meaning::CONSTRAINT => self.complexity.constraints += weight,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> Cues {
        let mut cues = Cues::default();
        cues.scan(text, 1.0);
        cues
    }

    #[test]
    fn every_listed_word_counts_in_any_case() {
        type Count = fn(&Cues) -> f32;
        let lists: [(&str, Count, f32); 7] = [
            (CODE_WORDS, |c| c.code_keywords, 1.0),
            (MATH_WORDS, |c| c.math_words, 1.0),
            (WEAK_MATH_WORDS, |c| c.math_words, 0.25),
            (REASONING_WORDS, |c| c.reasoning, 1.0),
            (WRITING_WORDS, |c| c.writing, 1.0),
            (NEGATION_WORDS, |c| c.complexity.negations, 1.0),
            (CONSTRAINT_WORDS, |c| c.complexity.constraints, 1.0),
        ];
        for (words, count, each) in lists {
            for word in words.split_whitespace() {
                let upper = word.to_ascii_uppercase();
                for text in [format!("so {word} it"), format!("({upper})")] {
                    assert_eq!(count(&scan(&text)), each, "{text}");
                }
            }
        }
    }

    #[test]
    fn words_that_are_not_listed_count_nothing() {
        // Prefixes, extensions and neighbours of listed words, and long words.
        let text = "de fns structs lets varx returned imports classy sums solved \
                    equationz proofs poems stor songbook a_very_long_identifier_name \
                    javascriptx include define frac theta";
        let counted = scan(text);
        assert_eq!((counted.words, counted.word_bytes), (21.0, 143.0));
        let cues = Cues {
            words: 0.0,
            word_bytes: 0.0,
            ..counted
        };
        assert_eq!(cues, Cues::default());
    }

    #[test]
    fn prefixes_change_the_meaning() {
        let tex = scan(r"\frac{1}{2} + \int x \sum \alpha");
        assert_eq!(tex.math_notation, 4.0);
        assert_eq!((tex.code_keywords, tex.math_words), (0.0, 0.0));
        let c = scan("#include <stdio.h>\n#define N 3\n#pragma once");
        assert_eq!(c.code_keywords, 6.0);
        // A listed word after `#` that is no directive counts as itself.
        assert_eq!(scan("#code").code_keywords, 1.0);
        // After `\` only TeX commands count.
        assert_eq!(scan(r"\code").code_keywords, 0.0);
    }

    #[test]
    fn symbols_operators_and_fences() {
        let c = scan("```rust\nfn f() { a[0]; b[1]; c; }\n```");
        assert_eq!(c.fences, 1.0);
        assert_eq!(c.code_symbols, 1.0, "eight symbols make one");
        let m = scan("3 + 4 = 7 and 2*5 and x - y");
        assert_eq!(m.math_notation, 1.5);
        assert_eq!(scan("a => b == c :: d").code_symbols, 0.0, "three of eight");
    }

    #[test]
    fn complexity_counts_numbers_sentences_and_conditions() {
        let c = scan(
            "Ann has 3.5 kg of flour and 1,200 g of sugar. She uses half of each! \
             How much is not used? x2 is a name, not a number.",
        )
        .complexity;
        assert_eq!(
            (c.numbers, c.decimals),
            (2.0, 1.0),
            "3.5 and 1,200; x2 is a word"
        );
        assert_eq!((c.sentences, c.questions), (4.0, 1.0));
        assert_eq!(c.negations, 2.0);
        assert_eq!(c.constraints, 2.0, "half, each");
        assert_eq!(scan("a = b + c - 2").complexity.operators, 3.0);
        assert_eq!(
            scan("v1.2.3 and 4.").complexity.sentences,
            1.0,
            "a point inside a token ends nothing"
        );
        assert_eq!(
            scan("Done.").complexity.sentences,
            1.0,
            "the end of the text ends a sentence"
        );
        let w = scan("ab abcd");
        assert_eq!((w.words, w.word_bytes), (2.0, 6.0));
    }

    #[test]
    fn every_word_has_its_slot() {
        let lists = [
            CODE_WORDS,
            MATH_WORDS,
            WEAK_MATH_WORDS,
            REASONING_WORDS,
            WRITING_WORDS,
            NEGATION_WORDS,
            CONSTRAINT_WORDS,
            DIRECTIVES,
            TEX_COMMANDS,
        ];
        let words: Vec<&str> = lists.iter().flat_map(|l| l.split_whitespace()).collect();
        assert!(words.len() * 4 <= SLOTS, "{} words", words.len());
        for word in words {
            assert_ne!(meaning(key(word.as_bytes())), 0, "{word}");
        }
        // "int" is a code word, and a TeX command after `\`.
        assert_eq!(
            meaning(key(b"int")),
            Meaning::CODE | Meaning::TEX,
            "plain and prefixed meanings combine"
        );
    }
}
