//! Detects personal data and secrets in prompt text: which kinds occur, never the values.
//!
//! [`detect`] makes one forward pass over the UTF-8 bytes with no allocation
//! and no regex. Every recogniser is ASCII-only and runs only where a cheap
//! trigger fires: an `@`; a `+` before a digit; `--`; or, at a word start, a
//! digit, two uppercase letters, or the first two letters of a secret prefix
//! (`sk`, `gh`/`gi`, `xo`, `ey`). One table lookup per byte decides that for
//! eight bytes at a time, so ordinary text rarely leaves the fast loop, and a
//! kind already found is not looked for again.
//!
//! Recognisers read bytes through a helper that answers 0 outside the text, so
//! no input can make them index out of bounds, and they never slice a `str`, so
//! a multi-byte character is never split. Every look-around is bounded, which
//! keeps the whole scan linear even on adversarial input.
//!
//! Where a look-alike is common in prompts, precision wins over recall: formats
//! with a checksum must pass it (Luhn plus issuer prefix and length for cards;
//! ISO 13616 mod-97 plus the registered length per country for IBANs), numbers
//! must stand alone as a token, secrets must look random, and a private key
//! needs key material after its header.

/// A category of personal data or secret that [`detect`] can report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PiiKind {
    /// An e-mail address such as `jane.doe@example.com`.
    Email,
    /// A phone number: international `+44 20 7946 0958` or North-American `(415) 555-2671`.
    Phone,
    /// A payment card number that passes the Luhn check.
    PaymentCard,
    /// An IBAN whose length and mod-97 check digits verify.
    Iban,
    /// A US social security number written `123-45-6789`.
    UsSsn,
    /// A provider API key or bearer token (OpenAI, Anthropic, AWS, GitHub, Slack, JWT).
    ApiKey,
    /// A PEM, OpenSSH or PGP private key block.
    PrivateKey,
}

impl PiiKind {
    /// Every kind, in declaration order.
    pub const ALL: [PiiKind; 7] = [
        PiiKind::Email,
        PiiKind::Phone,
        PiiKind::PaymentCard,
        PiiKind::Iban,
        PiiKind::UsSsn,
        PiiKind::ApiKey,
        PiiKind::PrivateKey,
    ];

    /// Stable `snake_case` name, suitable for configuration, metrics and logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::PaymentCard => "payment_card",
            PiiKind::Iban => "iban",
            PiiKind::UsSsn => "us_ssn",
            PiiKind::ApiKey => "api_key",
            PiiKind::PrivateKey => "private_key",
        }
    }

    /// Inverse of [`PiiKind::as_str`]; `None` for any other string.
    #[must_use]
    pub fn parse(s: &str) -> Option<PiiKind> {
        PiiKind::ALL.into_iter().find(|kind| kind.as_str() == s)
    }

    const fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of PII kinds (bitset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PiiKinds(u16);

impl PiiKinds {
    /// The set containing no kind.
    #[must_use]
    pub const fn empty() -> Self {
        PiiKinds(0)
    }

    /// Whether the set contains no kind.
    #[must_use]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether `kind` is in the set.
    #[must_use]
    pub fn contains(self, kind: PiiKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// Adds `kind` to the set.
    pub fn insert(&mut self, kind: PiiKind) {
        self.0 |= kind.bit();
    }

    /// The kinds in either set.
    #[must_use]
    pub fn union(self, other: PiiKinds) -> PiiKinds {
        PiiKinds(self.0 | other.0)
    }

    /// Whether the two sets share at least one kind.
    #[must_use]
    pub fn intersects(self, other: PiiKinds) -> bool {
        self.0 & other.0 != 0
    }

    /// The kinds in the set, in [`PiiKind::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = PiiKind> {
        PiiKind::ALL
            .into_iter()
            .filter(move |kind| self.contains(*kind))
    }

    /// How many kinds the set contains.
    #[must_use]
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }
}

impl FromIterator<PiiKind> for PiiKinds {
    fn from_iter<I: IntoIterator<Item = PiiKind>>(iter: I) -> Self {
        let mut set = PiiKinds::empty();
        for kind in iter {
            set.insert(kind);
        }
        set
    }
}

/// Scans `text` once and returns every kind found.
///
/// Only which kinds occur is reported, never where or what, so the result is
/// safe to log. Any `&str` is accepted; the scan never panics.
#[must_use]
pub fn detect(text: &str) -> PiiKinds {
    let b = text.as_bytes();
    let mut found = 0u16;
    let mut live = OPENERS;
    let mut i = 0;
    // The start of the text is a word boundary, as after a space.
    let mut after = OPENERS;
    // Fast path: decide for a whole chunk, without branching per byte, which
    // positions may open a pattern; in ordinary text most chunks have none,
    // so the recognisers rarely run.
    while let Some(window) = b.get(i..i + CHUNK + 1) {
        let Ok(window) = <&[u8; CHUNK + 1]>::try_from(window) else {
            break;
        };
        let entry = window.map(|c| BYTES[usize::from(c)]);
        let mut open = [0u32; CHUNK];
        let mut any = 0;
        for (k, slot) in open.iter_mut().enumerate() {
            // A pattern may open at a byte only if the byte opens it, the
            // next byte fits its second character and the previous byte
            // allows a start there.
            *slot = entry[k] & (entry[k + 1] >> ADMITS) & after;
            any |= *slot;
            after = entry[k] >> AFTER;
        }
        if any & live != 0 {
            for (k, &opens) in open.iter().enumerate() {
                if opens & live != 0 {
                    found |= open_at(b, i + k, opens & live, found);
                    live = live_openers(found);
                    if live == 0 {
                        return PiiKinds(found);
                    }
                }
            }
        }
        i += CHUNK;
    }
    for j in i..b.len() {
        found = scan_at(b, j, found, &mut live);
        if live == 0 {
            break;
        }
    }
    PiiKinds(found)
}

/// Bytes judged together by the fast path of [`detect`].
const CHUNK: usize = 8;

/// Slow-path twin of the chunk test in [`detect`], for the last bytes.
#[inline]
fn scan_at(b: &[u8], j: usize, found: u16, live: &mut u32) -> u16 {
    let open = BYTES[usize::from(at(b, j))]
        & (BYTES[usize::from(at(b, j + 1))] >> ADMITS)
        & (BYTES[usize::from(before(b, j))] >> AFTER)
        & *live;
    if open == 0 {
        return found;
    }
    let found = found | open_at(b, j, open, found);
    *live = live_openers(found);
    found
}

// Openers: each byte opens at most one family of recognisers, and each is
// gated by the byte after it so that common words rarely leave the fast loop.
/// Digit at a word start: payment card, SSN, North-American phone.
const O_DIGIT: u32 = 1 << 0;
/// Two uppercase letters at a word start: IBAN country code, `AKIA`/`ASIA`.
const O_UPPER: u32 = 1 << 1;
/// `sk` at a word start.
const O_SK: u32 = 1 << 2;
/// `gh` or `gi` at a word start (`ghp_`, `github_pat_`).
const O_GH: u32 = 1 << 3;
/// `xo` at a word start (`xoxb-`).
const O_XO: u32 = 1 << 4;
/// `ey` at a word start (`eyJ`).
const O_EY: u32 = 1 << 5;
/// `@` anywhere.
const O_AT: u32 = 1 << 6;
/// `+` and a digit, not glued to a word.
const O_PLUS: u32 = 1 << 7;
/// `--` anywhere (`-----BEGIN`).
const O_DASH: u32 = 1 << 8;
const O_TOKEN: u32 = O_SK | O_GH | O_XO | O_EY;
const OPENERS: u32 = (1 << 9) - 1;

/// Each [`BYTES`] entry packs three opener sets: those the byte opens
/// (bits 0..9), those it admits as the following byte (`ADMITS`), and those
/// that may open right after it (`AFTER`); bit 31 marks `[A-Za-z0-9_]`.
const ADMITS: u32 = 10;
const AFTER: u32 = 20;
const WORD: u32 = 1 << 31;

static BYTES: [u32; 256] = byte_table();

const fn byte_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let word = c.is_ascii_alphanumeric() || c == b'_';
        let opens = match c {
            b'0'..=b'9' => O_DIGIT,
            b'A'..=b'Z' => O_UPPER,
            b's' => O_SK,
            b'g' => O_GH,
            b'x' => O_XO,
            b'e' => O_EY,
            b'@' => O_AT,
            b'+' => O_PLUS,
            b'-' => O_DASH,
            _ => 0,
        };
        // Digits and `@` take any follower; their recognisers look further.
        let mut admits = O_DIGIT | O_AT;
        admits |= match c {
            b'0'..=b'9' => O_PLUS,
            b'A'..=b'Z' => O_UPPER,
            b'k' => O_SK,
            b'h' | b'i' => O_GH,
            b'o' => O_XO,
            b'y' => O_EY,
            b'-' => O_DASH,
            _ => 0,
        };
        // Inside a word only `@` and `-----` may start; everything else must
        // begin a token ("task-…" is not "sk-…", "x4111…" is not a card).
        let after = if word { O_AT | O_DASH } else { OPENERS };
        table[i] = opens | (admits << ADMITS) | (after << AFTER) | if word { WORD } else { 0 };
        i += 1;
    }
    table
}

const ALL_KINDS: u16 = (1 << PiiKind::ALL.len()) - 1;

/// Openers still worth trying: those that can find a kind not yet found.
fn live_openers(found: u16) -> u32 {
    if found == ALL_KINDS {
        return 0;
    }
    let lacks = |kinds: &[PiiKind]| kinds.iter().any(|&kind| missing(found, kind));
    let mut live = 0;
    if lacks(&[PiiKind::PaymentCard, PiiKind::UsSsn, PiiKind::Phone]) {
        live |= O_DIGIT;
    }
    if lacks(&[PiiKind::Iban, PiiKind::ApiKey]) {
        live |= O_UPPER;
    }
    if lacks(&[PiiKind::ApiKey]) {
        live |= O_TOKEN;
    }
    if lacks(&[PiiKind::Email]) {
        live |= O_AT;
    }
    if lacks(&[PiiKind::Phone]) {
        live |= O_PLUS;
    }
    if lacks(&[PiiKind::PrivateKey]) {
        live |= O_DASH;
    }
    live
}

fn missing(found: u16, kind: PiiKind) -> bool {
    found & kind.bit() == 0
}

/// Runs the recognisers `open` selects at byte `i`; returns the kinds found.
// Kept out of line: inlined, the recognisers' registers and induction
// variables spill into the hot loop of `detect` and slow every byte ~7x.
#[inline(never)]
fn open_at(b: &[u8], i: usize, open: u32, found: u16) -> u16 {
    let mut hit = 0;
    if open & O_DIGIT != 0 {
        hit |= numbers(b, i, found);
    }
    if open & O_UPPER != 0 {
        if missing(found, PiiKind::Iban) && iban_at(b, i) {
            hit |= PiiKind::Iban.bit();
        }
        if missing(found, PiiKind::ApiKey) && aws_key_at(b, i) {
            hit |= PiiKind::ApiKey.bit();
        }
    }
    if open & O_TOKEN != 0 && missing(found, PiiKind::ApiKey) && token_at(b, i) {
        hit |= PiiKind::ApiKey.bit();
    }
    if open & O_AT != 0 && missing(found, PiiKind::Email) && email_at(b, i) {
        hit |= PiiKind::Email.bit();
    }
    if open & O_PLUS != 0 && missing(found, PiiKind::Phone) && intl_phone_at(b, i) {
        hit |= PiiKind::Phone.bit();
    }
    if open & O_DASH != 0 && missing(found, PiiKind::PrivateKey) && private_key_at(b, i) {
        hit |= PiiKind::PrivateKey.bit();
    }
    hit
}

// ---------------------------------------------------------------- byte access

/// The byte at `i`, or 0 past the end; 0 is neither a word byte nor
/// punctuation any recogniser accepts, so the text's end acts as a boundary.
#[inline]
fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

/// The byte before `i`, or 0 at the start.
#[inline]
fn before(b: &[u8], i: usize) -> u8 {
    i.checked_sub(1).map_or(0, |j| at(b, j))
}

#[inline]
fn is_word(c: u8) -> bool {
    BYTES[usize::from(c)] & WORD != 0
}

#[inline]
fn starts_with(b: &[u8], i: usize, prefix: &[u8]) -> bool {
    b.get(i..).is_some_and(|rest| rest.starts_with(prefix))
}

/// Length of the run of bytes satisfying `pred` from `i`, stopping at `cap`.
#[inline]
fn run(b: &[u8], i: usize, cap: usize, pred: impl Fn(u8) -> bool) -> usize {
    b.get(i..).map_or(0, |rest| {
        rest.iter().take(cap).take_while(|&&c| pred(c)).count()
    })
}

/// Length of the digit run at `i`. Capped: anything past 64 digits is no
/// number this module recognises, and the cap keeps rescans cheap.
#[inline]
fn digit_run(b: &[u8], i: usize) -> usize {
    run(b, i, 64, |c| c.is_ascii_digit())
}

// ------------------------------------------------------------------- numbers

/// Card, SSN and North-American phone checks for a digit run starting at `i`.
fn numbers(b: &[u8], i: usize, found: u16) -> u16 {
    // "978-3-16-…", "v1.2.3", UUID groups, message ids: a digit after a `-`
    // or `.` glued to a word continues a token that was judged whole at its
    // own start, so it must not be re-read as a fresh number.
    let p = before(b, i);
    if (p == b'-' || p == b'.') && before(b, i.saturating_sub(1)).is_ascii_alphanumeric() {
        return 0;
    }
    let len = digit_run(b, i);
    let mut hit = 0;
    if missing(found, PiiKind::UsSsn) && ssn_at(b, i, len) {
        hit |= PiiKind::UsSsn.bit();
    }
    if missing(found, PiiKind::Phone) && na_phone_at(b, i, len) {
        hit |= PiiKind::Phone.bit();
    }
    if missing(found, PiiKind::PaymentCard) && card_at(b, i, len) {
        hit |= PiiKind::PaymentCard.bit();
    }
    hit
}

/// Whether a number ending before `j` stands alone: not glued to a word and
/// not continued as a dash or dot chain (`-x`, `.5`, `.GW144@…`).
fn ends_token(b: &[u8], j: usize) -> bool {
    let c = at(b, j);
    !(is_word(c) || (matches!(c, b'-' | b'.') && at(b, j + 1).is_ascii_alphanumeric()))
}

/// Decimal value of `n` bytes at `i` that the caller has checked are digits.
fn value(b: &[u8], i: usize, n: usize) -> u32 {
    (i..i + n).fold(0, |acc, k| {
        acc * 10 + u32::from(at(b, k).wrapping_sub(b'0'))
    })
}

/// `AAA-GG-SSSS`, excluding numbers the SSA never issues (area 000, 666,
/// 900–999; group 00; serial 0000).
fn ssn_at(b: &[u8], i: usize, len: usize) -> bool {
    if len != 3
        || at(b, i + 3) != b'-'
        || digit_run(b, i + 4) != 2
        || at(b, i + 6) != b'-'
        || digit_run(b, i + 7) != 4
        || !ends_token(b, i + 11)
    {
        return false;
    }
    let area = value(b, i, 3);
    area != 0 && area != 666 && area < 900 && value(b, i + 4, 2) != 0 && value(b, i + 7, 4) != 0
}

/// North-American numbers: `(415) 555-2671`, `415-555-2671`, `415.555.2671`,
/// `415 555-2671`, with an optional `1-` trunk prefix. All-space `415 555 2671`
/// is deliberately not accepted: it is indistinguishable from three numbers
/// in a table row.
fn na_phone_at(b: &[u8], i: usize, len: usize) -> bool {
    if len == 3 && before(b, i) == b'(' && at(b, i + 3) == b')' {
        let mut j = i + 4;
        if matches!(at(b, j), b' ' | b'-') {
            j += 1;
        }
        return digit_run(b, j) == 3
            && matches!(at(b, j + 3), b'-' | b'.' | b' ')
            && digit_run(b, j + 4) == 4
            && ends_token(b, j + 8);
    }
    if len == 1 && at(b, i) == b'1' && matches!(at(b, i + 1), b'-' | b'.' | b' ') {
        // The digits after a `1-` prefix are skipped as a dash-chain
        // continuation, so the prefixed form is judged here as a whole.
        return digit_run(b, i + 2) == 3 && ten_digits(b, i + 2);
    }
    len == 3 && ten_digits(b, i)
}

/// `NPA<s1>NXX<s2>XXXX` at `i`, whose first three digits the caller checked.
fn ten_digits(b: &[u8], i: usize) -> bool {
    // Mixed separators other than "415 555-2671" look like arithmetic or ranges.
    matches!(
        (at(b, i + 3), at(b, i + 7)),
        (b'-', b'-') | (b'.', b'.') | (b' ', b'-')
    ) && digit_run(b, i + 4) == 3
        && digit_run(b, i + 8) == 4
        && ends_token(b, i + 12)
}

/// Payment card: 13–19 digits, bare or grouped the way cards are printed
/// (4-4-4-4, 4-4-4-4-3, Amex 4-6-5, Diners 4-6-4) with single spaces or
/// dashes, whose issuer prefix fits its length and which passes Luhn.
fn card_at(b: &[u8], i: usize, len: usize) -> bool {
    if len >= 13 {
        return len <= 19
            && ends_token(b, i + len)
            && issuer_fits(b, i, len)
            && luhn(b, i, i + len);
    }
    let sep = at(b, i + 4);
    if len != 4 || (sep != b' ' && sep != b'-') {
        return false;
    }
    // Group lengths of the separator-joined chain, and where each group ends.
    let mut groups = [(4, i + 4); 5];
    let mut count = 1;
    let mut end = i + 4;
    while at(b, end) == sep {
        let g = digit_run(b, end + 1);
        // A group glued to letters belongs to some other token.
        if g == 0 || is_word(at(b, end + 1 + g)) {
            break;
        }
        end += 1 + g;
        let Some(slot) = groups.get_mut(count) else {
            // Six or more groups: a longer chain (or a table), not one card.
            count += 1;
            break;
        };
        *slot = (g, end);
        count += 1;
    }
    // A dash chain is one token and must be a card as a whole. Spaces only
    // juxtapose, so a card may be followed by other numbers ("… 1111 12/27"):
    // try each printed layout that is a prefix of the chain, longest first.
    let shortest = if sep == b' ' { 3 } else { count };
    (shortest..=count.min(5)).rev().any(|n| {
        let Some(prefix) = groups.get(..n) else {
            return false;
        };
        let mut shape = prefix.iter().map(|&(g, _)| g);
        let layout_ok = matches!(
            (
                shape.next(),
                shape.next(),
                shape.next(),
                shape.next(),
                shape.next()
            ),
            (Some(4), Some(4), Some(4), Some(4), None | Some(3))
                | (Some(4), Some(6), Some(4 | 5), None, None)
        );
        let digits = prefix.iter().map(|&(g, _)| g).sum();
        let card_end = prefix.last().map_or(i, |&(_, end)| end);
        // Inside a row of hex-ish groups, a stretch passing Luhn is chance:
        // that is a table of numbers or code points, not a card.
        let in_table = sep == b' ' && (hex_group_before(b, i) || hex_group_at(b, card_end + 1));
        layout_ok
            && !in_table
            && ends_token(b, card_end)
            && issuer_fits(b, i, digits)
            && luhn(b, i, card_end)
    })
}

/// Whether the issuer prefix at `i` (IIN) belongs to a network that issues
/// `len`-digit numbers: Visa 4 (13/16/19), Mastercard 51–55 and 2221–2720
/// (16), Amex 34/37 (15), Diners 30/36/38/39 (14–16), JCB 3528–3589,
/// Discover/UnionPay/Maestro 6, Maestro 50/56–69. Rejects most timestamps,
/// ids and counters that happen to pass Luhn.
fn issuer_fits(b: &[u8], i: usize, len: usize) -> bool {
    let p2 = value(b, i, 2);
    let p4 = value(b, i, 4);
    let visa = p2 / 10 == 4;
    let maestro = p2 == 50 || (56..=69).contains(&p2);
    let jcb = (3528..=3589).contains(&p4);
    match len {
        13 => visa || maestro,
        14 => matches!(p2, 30 | 36 | 38 | 39) || maestro,
        15 => matches!(p2, 34 | 37) || maestro,
        16 => {
            visa || (51..=55).contains(&p2)
                || (2221..=2720).contains(&p4)
                || jcb
                || matches!(p2, 36 | 38 | 39)
                || maestro
        }
        17..=19 => visa || jcb || maestro,
        _ => false,
    }
}

/// Whether a standalone group of 4–8 hex characters with a decimal digit
/// (`1234`, `90FF`, `20BBF`, not `face`) starts at `j`.
fn hex_group_at(b: &[u8], j: usize) -> bool {
    let len = run(b, j, 9, |c| c.is_ascii_hexdigit());
    (4..=8).contains(&len)
        && !is_word(at(b, j + len))
        && !is_word(before(b, j))
        && b.get(j..j + len)
            .is_some_and(|g| g.iter().any(u8::is_ascii_digit))
}

/// Whether such a group and a single space precede `i`.
fn hex_group_before(b: &[u8], i: usize) -> bool {
    if before(b, i) != b' ' {
        return false;
    }
    let space = i - 1;
    let mut start = space;
    while start > 0 && space - start < 9 && before(b, start).is_ascii_hexdigit() {
        start -= 1;
    }
    start < space && hex_group_at(b, start)
}

/// Luhn checksum over the digits in `b[start..end]`, ignoring separators.
fn luhn(b: &[u8], start: usize, end: usize) -> bool {
    let Some(span) = b.get(start..end) else {
        return false;
    };
    let mut sum = 0u32;
    let mut double = false;
    for &c in span.iter().rev().filter(|c| c.is_ascii_digit()) {
        let mut d = u32::from(c - b'0');
        if double {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        double = !double;
    }
    sum.is_multiple_of(10)
}

// ---------------------------------------------------------------------- IBAN

/// IBAN at `i`, compact (`GB82WEST12345698765432`) or in space-separated
/// groups of four (`DE89 3704 0044 0532 0130 00`). The country's registered
/// length bounds the scan, so trailing words are never swallowed.
fn iban_at(b: &[u8], i: usize) -> bool {
    let cc = [at(b, i), at(b, i + 1)];
    let check = [at(b, i + 2), at(b, i + 3)];
    if !cc[1].is_ascii_uppercase() || !check[0].is_ascii_digit() || !check[1].is_ascii_digit() {
        return false;
    }
    let Some(len) = iban_length(cc) else {
        return false;
    };
    let mut j = i + 4;
    let mut spaced = None;
    let mut rem = 0;
    for n in 4..len {
        if n % 4 == 0 {
            let space = at(b, j) == b' ';
            if *spaced.get_or_insert(space) != space {
                return false;
            }
            if space {
                j += 1;
            }
        }
        let c = at(b, j);
        if !c.is_ascii_uppercase() && !c.is_ascii_digit() {
            return false;
        }
        rem = mod97_push(rem, c);
        j += 1;
    }
    if is_word(at(b, j)) {
        return false;
    }
    // ISO 13616: the first four characters move to the end before the check.
    for c in cc.into_iter().chain(check) {
        rem = mod97_push(rem, c);
    }
    rem == 1
}

/// Appends an IBAN character (digit, or letter as 10–35) to a running mod-97.
fn mod97_push(rem: u32, c: u8) -> u32 {
    if c.is_ascii_digit() {
        (rem * 10 + u32::from(c - b'0')) % 97
    } else {
        (rem * 100 + u32::from(c.wrapping_sub(b'A')) + 10) % 97
    }
}

/// Registered IBAN length per country (SWIFT IBAN registry, including
/// territories that borrow their parent's format).
fn iban_length(cc: [u8; 2]) -> Option<usize> {
    Some(match &cc {
        b"NO" => 15,
        b"BE" => 16,
        b"AX" | b"DK" | b"FI" | b"FK" | b"FO" | b"GL" | b"NL" | b"SD" => 18,
        b"MK" | b"SI" => 19,
        b"AT" | b"BA" | b"EE" | b"KZ" | b"LT" | b"LU" | b"MN" | b"XK" => 20,
        b"CH" | b"HR" | b"LI" | b"LV" => 21,
        b"BG" | b"BH" | b"CR" | b"DE" | b"GB" | b"GE" | b"GG" | b"IE" | b"IM" | b"JE" | b"ME"
        | b"RS" | b"VA" => 22,
        b"AE" | b"GI" | b"IL" | b"IQ" | b"OM" | b"SO" | b"TL" => 23,
        b"AD" | b"CZ" | b"ES" | b"MD" | b"PK" | b"RO" | b"SA" | b"SE" | b"SK" | b"TN" | b"VG" => 24,
        b"LY" | b"PT" | b"ST" => 25,
        b"IS" | b"TR" => 26,
        b"BI" | b"BL" | b"DJ" | b"FR" | b"GF" | b"GP" | b"GR" | b"IT" | b"MC" | b"MF" | b"MQ"
        | b"MR" | b"NC" | b"PF" | b"PM" | b"RE" | b"SM" | b"TF" | b"WF" | b"YT" => 27,
        b"AL" | b"AZ" | b"BY" | b"CY" | b"DO" | b"GT" | b"HN" | b"HU" | b"LB" | b"NI" | b"PL"
        | b"SV" => 28,
        b"BR" | b"EG" | b"PS" | b"QA" | b"UA" => 29,
        b"JO" | b"KW" | b"MU" | b"YE" => 30,
        b"MT" | b"SC" => 31,
        b"LC" => 32,
        b"RU" => 33,
        _ => return None,
    })
}

// ---------------------------------------------------------------------- e-mail

/// `local@domain.tld` around the `@` at `at_pos`.
///
/// Needs a dotted domain ending in an alphabetic TLD, so `user@localhost`,
/// `@mentions`, `@types/node` and `pkg@1.2.3` do not match. Also rejected:
/// URL credentials (`https://user:pw@host.com`), scp-style remotes
/// (`git@github.com:org/repo`) and asset names (`logo@2x.png`).
fn email_at(b: &[u8], at_pos: usize) -> bool {
    let mut start = at_pos;
    while start > 0 && is_local(before(b, start)) {
        start -= 1;
        if at_pos - start > 64 {
            return false;
        }
    }
    // Leading punctuation belongs to the surrounding text ("--bob@…").
    while start < at_pos && matches!(at(b, start), b'.' | b'-' | b'+' | b'%') {
        start += 1;
    }
    if start == at_pos || before(b, at_pos) == b'.' {
        return false;
    }
    if matches!(before(b, start), b':' | b'/') && inside_url(b, start) {
        return false;
    }

    let mut j = at_pos + 1;
    let mut labels = 0;
    let mut tld;
    loop {
        let label_start = j;
        let len = run(b, j, 64, is_label);
        j += len;
        if len == 0 || len > 63 || at(b, label_start) == b'-' || before(b, j) == b'-' {
            return false;
        }
        labels += 1;
        tld = (label_start, j);
        // A dot not followed by a label is sentence punctuation.
        if at(b, j) != b'.' || !is_label(at(b, j + 1)) || j - at_pos > 253 {
            break;
        }
        j += 1;
    }
    let Some(tld) = b.get(tld.0..tld.1) else {
        return false;
    };
    labels >= 2
        && tld.len() >= 2
        && tld.iter().all(u8::is_ascii_alphabetic)
        && !is_file_extension(tld)
        && !(at(b, j) == b':' && is_word(at(b, j + 1)))
}

/// RFC 5322 dot-atom characters commonly seen in addresses; bytes ≥ 0x80 are
/// admitted so internationalised local parts still anchor a match.
fn is_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-') || c >= 0x80
}

fn is_label(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-'
}

/// Whether the token ending at `start` contains `://`, i.e. the `@` separates
/// URL credentials from a host rather than a mailbox from a domain.
fn inside_url(b: &[u8], start: usize) -> bool {
    let mut k = start;
    let floor = start.saturating_sub(256);
    while k > floor {
        k -= 1;
        let c = at(b, k);
        // A URL has one userinfo `@`; stopping at an earlier one also keeps
        // the look-back from overlapping between `@`s.
        if c.is_ascii_whitespace() || matches!(c, b'"' | b'\'' | b'<' | b'(' | b'@') {
            return false;
        }
        if c == b':' && at(b, k + 1) == b'/' && at(b, k + 2) == b'/' {
            return true;
        }
    }
    false
}

/// File extensions that are not TLDs but follow `@` in asset names
/// (`icon@2x.png`) and package specs.
fn is_file_extension(tld: &[u8]) -> bool {
    const EXTENSIONS: [&[u8]; 30] = [
        b"png", b"jpg", b"jpeg", b"gif", b"svg", b"webp", b"ico", b"bmp", b"avif", b"js", b"mjs",
        b"cjs", b"ts", b"tsx", b"jsx", b"css", b"scss", b"less", b"json", b"yaml", b"yml", b"toml",
        b"lock", b"txt", b"html", b"htm", b"xml", b"pdf", b"csv", b"java",
    ];
    EXTENSIONS.iter().any(|ext| tld.eq_ignore_ascii_case(ext))
}

// ---------------------------------------------------------------------- phone

/// International number at the `+` at `plus`: 8–15 digits (E.164) after a
/// non-zero country digit, in groups separated by at most two of
/// space, dash, dot and parentheses (`+1 (415) 555-2671`, `+44 (0)20 …`).
fn intl_phone_at(b: &[u8], plus: usize) -> bool {
    let mut j = plus + 1;
    if !matches!(at(b, j), b'1'..=b'9') {
        return false;
    }
    let mut digits = 0;
    let mut dots = 0;
    let mut groups = 0;
    let first = digit_run(b, j);
    loop {
        let g = digit_run(b, j);
        digits += g;
        groups += 1;
        j += g;
        if digits > 15 {
            return false;
        }
        let sep_len = run(b, j, 2, |c| matches!(c, b' ' | b'-' | b'.' | b'(' | b')'));
        if sep_len == 0 || !at(b, j + sep_len).is_ascii_digit() {
            break;
        }
        dots += (j..j + sep_len).filter(|&k| at(b, k) == b'.').count();
        j += sep_len;
    }
    // A single dot makes "+3.14159265" a signed decimal, not a phone number.
    // ISO 6709 coordinates ("+4916-12307", "+364947-0845057") are a signed
    // latitude of 4/6 digits and a longitude one digit longer.
    let coordinates = groups == 2
        && matches!(first, 4 | 6)
        && at(b, plus + 1 + first) == b'-'
        && digits == 2 * first + 1;
    // Signed integer limits ("+2147483647") are the one bare `+` number
    // common in code.
    let int_limit = groups == 1
        && b.get(plus + 1..j)
            .is_some_and(|n| [&b"2147483647"[..], b"2147483648", b"4294967295"].contains(&n));
    (8..=15).contains(&digits) && dots != 1 && !coordinates && !int_limit && !is_word(at(b, j))
}

// ----------------------------------------------------------------- API tokens

/// AWS access key id: `AKIA`/`ASIA` and 16 uppercase alphanumerics.
fn aws_key_at(b: &[u8], i: usize) -> bool {
    (starts_with(b, i, b"AKIA") || starts_with(b, i, b"ASIA"))
        && run(b, i + 4, 16, |c| {
            c.is_ascii_uppercase() || c.is_ascii_digit()
        }) == 16
        && !is_word(at(b, i + 20))
}

/// Tokens with a lowercase prefix, dispatched on their first byte.
fn token_at(b: &[u8], i: usize) -> bool {
    // After a dash the prefix is the tail of a kebab-case name ("risk-…").
    if before(b, i) == b'-' {
        return false;
    }
    match at(b, i) {
        b's' => starts_with(b, i, b"sk-") && openai_body(b, i + 3),
        b'g' => github_token_at(b, i),
        b'x' => slack_token_at(b, i),
        b'e' => jwt_at(b, i),
        _ => false,
    }
}

fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// OpenAI (`sk-…`, `sk-proj-…`), Anthropic (`sk-ant-…`) and other `sk-` keys
/// share the shape `sk-` plus 20+ `[A-Za-z0-9_-]`. Real keys are random, so the
/// body must contain an uppercase letter or a digit and an unbroken alphanumeric
/// stretch of 16+; dash-joined names such as `sk-learn-compatible-estimators`
/// or OpenSSH's `sk-ssh-ed25519-cert-v01` have neither.
fn openai_body(b: &[u8], j: usize) -> bool {
    let len = run(b, j, 512, is_key_char);
    let Some(body) = b.get(j..j + len) else {
        return false;
    };
    len >= 20
        && body
            .iter()
            .any(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        && body
            .split(|&c| c == b'-' || c == b'_')
            .any(|stretch| stretch.len() >= 16)
}

/// GitHub: `ghp_`/`gho_`/`ghu_`/`ghs_`/`ghr_` + 36 alphanumerics, or a
/// fine-grained `github_pat_` + 22+ `[A-Za-z0-9_]`.
fn github_token_at(b: &[u8], i: usize) -> bool {
    if starts_with(b, i, b"github_pat_") {
        return run(b, i + 11, 512, |c| c.is_ascii_alphanumeric() || c == b'_') >= 22;
    }
    if at(b, i + 1) != b'h'
        || !matches!(at(b, i + 2), b'p' | b'o' | b'u' | b's' | b'r')
        || at(b, i + 3) != b'_'
    {
        return false;
    }
    let len = run(b, i + 4, 256, |c| c.is_ascii_alphanumeric());
    len >= 36 && !is_word(at(b, i + 4 + len))
}

/// Slack: `xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-` + 10+ alphanumerics and
/// dashes including a digit (real tokens embed numeric team/user ids;
/// placeholders like `xoxb-your-token-here` have none).
fn slack_token_at(b: &[u8], i: usize) -> bool {
    if !starts_with(b, i, b"xox")
        || !matches!(at(b, i + 3), b'b' | b'p' | b'a' | b'r' | b's')
        || at(b, i + 4) != b'-'
    {
        return false;
    }
    let len = run(b, i + 5, 512, |c| c.is_ascii_alphanumeric() || c == b'-');
    len >= 10
        && b.get(i + 5..i + 5 + len)
            .is_some_and(|body| body.iter().any(u8::is_ascii_digit))
}

/// JWT: three base64url segments joined by dots, header and payload both
/// JSON objects (`eyJ` = base64 of `{"`), each segment at least 16 characters.
fn jwt_at(b: &[u8], i: usize) -> bool {
    const MIN: usize = 16;
    let is_b64url = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
    if !starts_with(b, i, b"eyJ") {
        return false;
    }
    let header = run(b, i, 1 << 16, is_b64url);
    let j = i + header + 1;
    if header < MIN || at(b, j - 1) != b'.' || !starts_with(b, j, b"eyJ") {
        return false;
    }
    let payload = run(b, j, 1 << 16, is_b64url);
    let k = j + payload + 1;
    payload >= MIN && at(b, k - 1) == b'.' && run(b, k, MIN, is_b64url) >= MIN
}

// ---------------------------------------------------------------- private key

/// `-----BEGIN <…>PRIVATE KEY-----` (RSA, EC, DSA, OPENSSH, ENCRYPTED, plain)
/// or `-----BEGIN PGP PRIVATE KEY BLOCK-----`, followed by key material.
///
/// The body is required so that code and docs that merely name the marker
/// (`line.startswith("-----BEGIN RSA PRIVATE KEY-----")`) or show a redacted
/// block (`…`, `<your key>`) do not count as a leaked key.
fn private_key_at(b: &[u8], i: usize) -> bool {
    const BEGIN: &[u8] = b"-----BEGIN ";
    if !starts_with(b, i, BEGIN) {
        return false;
    }
    let label_start = i + BEGIN.len();
    let label_len = run(b, label_start, 48, |c| {
        c.is_ascii_uppercase() || c.is_ascii_digit() || c == b' '
    });
    let label_end = label_start + label_len;
    let Some(label) = b.get(label_start..label_end) else {
        return false;
    };
    (label.ends_with(b"PRIVATE KEY") || label.ends_with(b"PRIVATE KEY BLOCK"))
        && starts_with(b, label_end, b"-----")
        && key_body_follows(b, label_end + 5)
}

/// Whether base64 key material starts at `j`, after blank space and any
/// RFC 1421 / OpenPGP armor headers (`Proc-Type: …`, `Version: …`).
/// Newlines may be real or JSON-escaped (`\n`), as in service-account files
/// pasted verbatim.
fn key_body_follows(b: &[u8], mut j: usize) -> bool {
    // 16 base64 characters is less than one PEM line (64) yet longer than any
    // word or placeholder that might follow a header in prose.
    const MIN_BODY: usize = 16;
    const MAX_HEADERS: usize = 8;
    let is_b64 = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=');
    for _ in 0..=MAX_HEADERS {
        j = skip_blank(b, j);
        let token = run(b, j, MIN_BODY, is_b64);
        if token >= MIN_BODY {
            return true;
        }
        // Not base64: the only other thing allowed here is a header line.
        match line_colon(b, j) {
            Some(next_line) => j = next_line,
            None => return false,
        }
    }
    false
}

/// Skips spaces, tabs and newlines, real or written as `\n`, `\r`, `\t`.
fn skip_blank(b: &[u8], mut j: usize) -> usize {
    // Bounded so a long run of blank lines cannot make every `-----BEGIN` rescan it.
    for _ in 0..256 {
        match at(b, j) {
            b' ' | b'\t' | b'\r' | b'\n' => j += 1,
            b'\\' if matches!(at(b, j + 1), b'n' | b'r' | b't') => j += 2,
            _ => break,
        }
    }
    j
}

/// If the line at `j` is a `Name: value` header, the index just past it.
fn line_colon(b: &[u8], j: usize) -> Option<usize> {
    let name = run(b, j, 64, |c| c.is_ascii_alphanumeric() || c == b'-');
    if name == 0 || at(b, j + name) != b':' {
        return None;
    }
    let mut k = j + name + 1;
    for _ in 0..256 {
        match at(b, k) {
            0 => return None,
            b'\n' => return Some(k + 1),
            b'\\' if at(b, k + 1) == b'n' => return Some(k + 2),
            _ => k += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests;
