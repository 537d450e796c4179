//! The cache key: a 128-bit BLAKE3 hash of a canonical form of everything that changes
//! the answer. Pure: plain data in, a key out.
//!
//! What goes in: the scope (a team, or nothing for a shared cache), the resolved pool
//! and the upstream models that may answer for it (so changing a pool's models retires
//! its entries), the routing rule's `max_tokens` cap, and every field of the request
//! body except the few that cannot change the generated text ([`IGNORED`]). Unknown
//! provider fields are included: the gateway passes them upstream, so they may change
//! the answer.
//!
//! The canonical form is a tagged, self-delimiting byte encoding, written straight from
//! the parsed body into a per-thread scratch buffer that feeds the hasher 16 KiB at a
//! time (no allocation per key), so two different requests never encode to the same
//! bytes:
//! - object keys in byte order, whatever order the client sent them in;
//! - numbers by value: `1`, `1.0` and `1e0` are the same number;
//! - a top-level `null` is the same as an absent field (the API's default either way).
//!
//! A cryptographic hash, because the key is what keeps one team's answers from another:
//! a client must not be able to craft a request that collides with someone else's.

use std::cell::Cell;
use std::fmt;

use serde_json::{Map, Number, Value};

/// Body fields that never change the answer: `model` is replaced by the resolved pool,
/// `user` and `metadata` are bookkeeping, `stream` and `stream_options` only change
/// the framing, which a hit rebuilds.
pub const IGNORED: [&str; 5] = ["model", "user", "metadata", "stream", "stream_options"];

/// Bumped whenever the encoding changes, so old entries in a shared store stop matching.
const VERSION: u8 = 1;

/// A request's identity in the cache.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 16]);

impl CacheKey {
    /// The key of a request routed to `pool`, whose candidates run `models` (in
    /// dispatch order), with the rule's `max_tokens_cap`, within `scope` (a team id;
    /// `None` when the cache is shared by everyone).
    pub fn new<'m>(
        scope: Option<&str>,
        pool: &str,
        models: impl IntoIterator<Item = &'m str>,
        max_tokens_cap: Option<u64>,
        body: &Map<String, Value>,
    ) -> Self {
        let mut c = Canonical::new();
        c.byte(VERSION);
        match scope {
            None => c.byte(b'-'),
            Some(team) => {
                c.byte(b'+');
                c.str(team);
            }
        }
        c.str(pool);
        for model in models {
            c.byte(KEY);
            c.str(model);
        }
        c.byte(END);
        match max_tokens_cap {
            None => c.byte(b'-'),
            Some(cap) => {
                c.byte(b'+');
                c.u64(cap);
            }
        }
        c.object(body, |key, value| {
            !(value.is_null() || IGNORED.contains(&key))
        });
        CacheKey(c.finish())
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

/// 32 lowercase hex digits, as the Redis key ends.
impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({self})")
    }
}

// Tags of the encoding. Every value starts with one; arrays and objects end with `END`,
// object entries start with `KEY`, and strings carry their length, so the encoding of
// a sequence of values is never the encoding of another.
const NULL: u8 = b'n';
const TRUE: u8 = b't';
const FALSE: u8 = b'f';
const UINT: u8 = b'u';
const INT: u8 = b'i';
const FLOAT: u8 = b'd';
const STRING: u8 = b's';
const ARRAY: u8 = b'a';
const OBJECT: u8 = b'o';
const KEY: u8 = b'k';
const END: u8 = b'e';

/// Bytes gathered before they go to the hasher: 16 BLAKE3 chunks, so that each update
/// hashes whole chunks side by side with SIMD, where many small updates would hash
/// one block at a time.
const BUFFER: usize = 16 * 1024;

/// Objects with at most this many entries are sorted without allocating.
const SMALL_OBJECT: usize = 16;
static NULL_VALUE: Value = Value::Null;

thread_local! {
    /// One scratch buffer per thread, reused by every key: no allocation per request.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The canonical encoder, feeding the hasher through the thread's scratch buffer.
struct Canonical {
    hasher: blake3::Hasher,
    buf: Vec<u8>,
}

impl Canonical {
    fn new() -> Self {
        let mut buf = SCRATCH.take();
        buf.clear();
        buf.reserve(BUFFER);
        Canonical {
            hasher: blake3::Hasher::new(),
            buf,
        }
    }

    fn bytes(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = BUFFER - self.buf.len();
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.buf.extend_from_slice(now);
            if self.buf.len() == BUFFER {
                self.hasher.update(&self.buf);
                self.buf.clear();
            }
            bytes = later;
        }
    }

    fn byte(&mut self, b: u8) {
        self.bytes(&[b]);
    }

    fn u64(&mut self, n: u64) {
        self.bytes(&n.to_le_bytes());
    }

    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.bytes(s.as_bytes());
    }

    fn value(&mut self, value: &Value) {
        match value {
            Value::Null => self.byte(NULL),
            Value::Bool(true) => self.byte(TRUE),
            Value::Bool(false) => self.byte(FALSE),
            Value::Number(n) => self.number(n),
            Value::String(s) => {
                self.byte(STRING);
                self.str(s);
            }
            Value::Array(items) => {
                self.byte(ARRAY);
                for item in items {
                    self.value(item);
                }
                self.byte(END);
            }
            Value::Object(map) => self.object(map, |_, _| true),
        }
    }

    /// Integers as integers, floats with an integral value as that integer, other
    /// floats by their bits.
    fn number(&mut self, n: &Number) {
        if let Some(u) = n.as_u64() {
            self.byte(UINT);
            self.u64(u);
        } else if let Some(i) = n.as_i64() {
            self.byte(INT);
            self.bytes(&i.to_le_bytes());
        } else if let Some(f) = n.as_f64() {
            // 2^64 and -2^63 are exact in f64; `as` is exact below them for integral values.
            if f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                self.byte(UINT);
                self.u64(f as u64);
            } else if f.fract() == 0.0 && (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                self.byte(INT);
                self.bytes(&(f as i64).to_le_bytes());
            } else {
                self.byte(FLOAT);
                self.u64(f.to_bits());
            }
        }
    }

    /// An object's entries in key order, those `keep` accepts.
    fn object(&mut self, map: &Map<String, Value>, keep: impl Fn(&str, &Value) -> bool) {
        self.byte(OBJECT);
        // With serde_json's `preserve_order` (on: clients' key order is passed upstream),
        // maps keep the order they were sent in: sort them, on the stack when they are
        // small, as nearly all are.
        if map.keys().is_sorted() {
            for (k, v) in map {
                self.entry(k, v, &keep);
            }
        } else if map.len() <= SMALL_OBJECT {
            let mut entries: [(&str, &Value); SMALL_OBJECT] = [("", &NULL_VALUE); SMALL_OBJECT];
            for (slot, (k, v)) in entries.iter_mut().zip(map) {
                *slot = (k.as_str(), v);
            }
            let entries = &mut entries[..map.len()];
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (k, v) in entries.iter() {
                self.entry(k, v, &keep);
            }
        } else {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (k, v) in entries {
                self.entry(k, v, &keep);
            }
        }
        self.byte(END);
    }

    fn entry(&mut self, key: &str, value: &Value, keep: &impl Fn(&str, &Value) -> bool) {
        if keep(key, value) {
            self.byte(KEY);
            self.str(key);
            self.value(value);
        }
    }

    fn finish(mut self) -> [u8; 16] {
        self.hasher.update(&self.buf);
        SCRATCH.set(std::mem::take(&mut self.buf));
        let hash = self.hasher.finalize();
        let mut key = [0; 16];
        key.copy_from_slice(&hash.as_bytes()[..16]);
        key
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use serde_json::json;

    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    const MODELS: [&str; 2] = ["gpt-4.1", "gpt-4.1-mini"];

    fn key(v: Value) -> CacheKey {
        CacheKey::new(None, "frontier", MODELS, None, &body(v))
    }

    fn base() -> Value {
        json!({
            "model": "auto",
            "messages": [{ "role": "user", "content": "Say hello" }],
            "temperature": 0.2
        })
    }

    #[test]
    fn key_order_is_irrelevant_at_every_depth() {
        let a: Value = serde_json::from_str(
            r#"{"model":"auto","temperature":0.2,"messages":[{"role":"user","content":"hi"}],
                "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"a":1,"b":2}}}}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{"response_format":{"json_schema":{"schema":{"b":2,"a":1},"name":"x"},"type":"json_schema"},
                "messages":[{"content":"hi","role":"user"}],"temperature":0.2,"model":"auto"}"#,
        )
        .unwrap();
        assert_eq!(key(a), key(b));
    }

    #[test]
    fn large_objects_are_sorted_too() {
        let fields: Vec<String> = (0..40).map(|i| format!("\"f{i:02}\":{i}")).collect();
        let forward = format!(r#"{{"messages":[],"x":{{{}}}}}"#, fields.join(","));
        let backward: Vec<String> = fields.iter().rev().cloned().collect();
        let backward = format!(r#"{{"x":{{{}}},"messages":[]}}"#, backward.join(","));
        let parse = |s: &str| key(serde_json::from_str(s).unwrap());
        assert_eq!(parse(&forward), parse(&backward));
        let changed = forward.replace("\"f07\":7", "\"f07\":8");
        assert_ne!(parse(&forward), parse(&changed));
    }

    #[test]
    fn fields_that_do_not_change_the_answer_are_ignored() {
        let mut other = base();
        other["model"] = json!("frontier");
        other["user"] = json!("end-user-7");
        other["metadata"] = json!({ "trace": "abc" });
        other["stream"] = json!(true);
        other["stream_options"] = json!({ "include_usage": true });
        other["seed"] = Value::Null;
        assert_eq!(key(base()), key(other));
    }

    #[test]
    fn every_field_that_changes_the_answer_changes_the_key() {
        let fields = [
            (
                "messages",
                json!([{ "role": "user", "content": "Say goodbye" }]),
            ),
            ("temperature", json!(0.3)),
            ("top_p", json!(0.9)),
            ("max_tokens", json!(100)),
            ("max_completion_tokens", json!(100)),
            ("stop", json!(["\n"])),
            ("seed", json!(42)),
            (
                "tools",
                json!([{ "type": "function", "function": { "name": "f" } }]),
            ),
            ("tool_choice", json!("required")),
            ("response_format", json!({ "type": "json_object" })),
            ("n", json!(2)),
            ("logit_bias", json!({ "50256": -100 })),
            ("presence_penalty", json!(0.5)),
            ("frequency_penalty", json!(0.5)),
            ("logprobs", json!(true)),
            ("top_logprobs", json!(3)),
            ("x_vendor_extension", json!({ "nested": [1, 2] })),
        ];
        let reference = key(base());
        let mut seen = vec![reference];
        for (field, value) in fields {
            let mut changed = base();
            changed[field] = value;
            let k = key(changed);
            assert!(!seen.contains(&k), "`{field}` did not change the key");
            seen.push(k);
        }
    }

    #[test]
    fn scope_pool_models_and_cap_separate_keys() {
        let b = body(base());
        let shared = CacheKey::new(None, "frontier", MODELS, None, &b);
        let team_a = CacheKey::new(Some("team-a"), "frontier", MODELS, None, &b);
        let team_b = CacheKey::new(Some("team-b"), "frontier", MODELS, None, &b);
        let empty_team = CacheKey::new(Some(""), "frontier", MODELS, None, &b);
        let other_pool = CacheKey::new(None, "local", MODELS, None, &b);
        let upgraded = CacheKey::new(None, "frontier", ["gpt-5", "gpt-4.1-mini"], None, &b);
        let reordered = CacheKey::new(None, "frontier", ["gpt-4.1-mini", "gpt-4.1"], None, &b);
        let capped = CacheKey::new(None, "frontier", MODELS, Some(64), &b);
        let all = [
            shared, team_a, team_b, empty_team, other_pool, upgraded, reordered, capped,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(
            team_a,
            CacheKey::new(Some("team-a"), "frontier", MODELS, None, &b)
        );
    }

    #[test]
    fn numbers_are_compared_by_value() {
        let parse = |s: &str| key(serde_json::from_str(s).unwrap());
        let m = r#""messages":[{"role":"user","content":"x"}]"#;
        assert_eq!(
            parse(&format!(r#"{{{m},"temperature":1}}"#)),
            parse(&format!(r#"{{{m},"temperature":1.0}}"#))
        );
        assert_eq!(
            parse(&format!(r#"{{{m},"temperature":0.70}}"#)),
            parse(&format!(r#"{{{m},"temperature":0.7}}"#))
        );
        assert_eq!(
            parse(&format!(r#"{{{m},"seed":-3}}"#)),
            parse(&format!(r#"{{{m},"seed":-3.0}}"#))
        );
        assert_ne!(
            parse(&format!(r#"{{{m},"temperature":1}}"#)),
            parse(&format!(r#"{{{m},"temperature":"1"}}"#))
        );
        assert_ne!(
            parse(&format!(r#"{{{m},"temperature":0.7}}"#)),
            parse(&format!(r#"{{{m},"temperature":0.71}}"#))
        );
    }

    #[test]
    fn encoding_is_unambiguous() {
        let with = |v: Value| {
            let mut b = base();
            b["stop"] = v;
            key(b)
        };
        assert_ne!(with(json!(["ab", "c"])), with(json!(["a", "bc"])));
        assert_ne!(with(json!([["a"], []])), with(json!([[], ["a"]])));
        assert_ne!(with(json!({ "a": "b" })), with(json!({ "ab": "" })));
        assert_ne!(with(json!([null])), with(json!([])));
        assert_ne!(with(json!([false])), with(json!([0])));
        // A top-level null is an absent field; a nested one is a value.
        assert_ne!(with(json!({ "a": null })), with(json!({})));
    }

    #[test]
    fn message_order_and_long_content_matter() {
        let long = "x".repeat(5_000);
        let a = key(json!({ "messages": [
            { "role": "user", "content": long },
            { "role": "user", "content": "y" }
        ]}));
        let b = key(json!({ "messages": [
            { "role": "user", "content": "y" },
            { "role": "user", "content": long }
        ]}));
        assert_ne!(a, b);
        assert_eq!(
            a,
            key(json!({ "messages": [
                { "role": "user", "content": long },
                { "role": "user", "content": "y" }
            ]}))
        );
    }

    #[test]
    fn displays_as_hex() {
        let k = key(base());
        let hex = k.to_string();
        assert_eq!(hex.len(), 32);
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }
}
