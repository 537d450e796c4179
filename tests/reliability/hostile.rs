//! Seeded generators of hostile input: arbitrary JSON, near-valid chat requests, byte
//! mutations and re-spellings of one JSON value. Every run prints its seed; set
//! `CROSSROADS_SEED` to replay one, `CROSSROADS_PROP_CASES` to run more cases.

use serde_json::{Map, Number, Value, json};

/// How many cases a property runs: `CROSSROADS_PROP_CASES`, else `default`.
pub fn cases(default: usize) -> usize {
    env_usize("CROSSROADS_PROP_CASES", default)
}

/// A size set by the environment variable `name`, else `default` (the CI size).
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The run's seed: `CROSSROADS_SEED`, else a fixed one so CI is repeatable.
pub fn seed() -> u64 {
    std::env::var("CROSSROADS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_c0ad)
}

/// Runs `property` on `cases` generators, each seeded from the run's seed and its
/// index; a failure names the seed and case that reproduce it.
pub fn check(name: &str, cases: usize, mut property: impl FnMut(&mut Gen)) {
    let seed = seed();
    for case in 0..cases {
        let case_seed = seed ^ (case as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut g = Gen::new(case_seed);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| property(&mut g)));
        if let Err(cause) = outcome {
            eprintln!("property {name} failed: CROSSROADS_SEED={seed}, case {case}");
            std::panic::resume_unwind(cause);
        }
    }
    eprintln!("property {name}: {cases} cases, CROSSROADS_SEED={seed}");
}

pub struct Gen {
    pub rng: fastrand::Rng,
}

/// Strings that parsers trip on: empty, long, escapes, surrogates, control and
/// multi-byte characters, SSE and HTTP framing.
const NASTY: &[&str] = &[
    "",
    " ",
    "auto",
    "frontier",
    "local",
    "[DONE]",
    "data: x\n\n",
    "\r\n\r\n",
    "\u{0}",
    "\u{feff}",
    "é",
    "日本語",
    "🦀🦀",
    "\u{10ffff}",
    "\\",
    "\"",
    "null",
    "-0",
    "1e400",
    "user",
    "assistant",
    "system",
    "tool",
    "text",
    "image_url",
    "json_object",
    "my email is jane@example.com",
    "def f(x):\n    return x * 2\n",
];

/// Numbers at the edges: zero, signs, u64 and i64 limits, floats, exponents.
fn edge_number(g: &mut Gen) -> Number {
    match g.rng.usize(..9) {
        0 => Number::from(0u64),
        1 => Number::from(u64::MAX),
        2 => Number::from(i64::MIN),
        3 => Number::from(g.rng.u64(..)),
        4 => Number::from(-g.rng.i64(1..)),
        5 => Number::from_f64(g.rng.f64() * 1e300).unwrap_or(Number::from(1u8)),
        6 => Number::from_f64(-1e-300).unwrap_or(Number::from(1u8)),
        7 => Number::from(g.rng.u64(0..5)),
        _ => Number::from_f64(0.5).unwrap_or(Number::from(1u8)),
    }
}

impl Gen {
    pub fn new(seed: u64) -> Self {
        Gen {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    pub fn bool(&mut self) -> bool {
        self.rng.bool()
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.rng.usize(..n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.usize(..items.len())]
    }

    /// A string: a nasty one, random characters, or a long run.
    pub fn string(&mut self) -> String {
        match self.rng.usize(..4) {
            0 | 1 => (*self.pick(NASTY)).to_owned(),
            2 => (0..self.rng.usize(..24))
                .map(|_| self.rng.char(..))
                .collect(),
            _ => "word ".repeat(self.rng.usize(..400)),
        }
    }

    /// Any JSON value, at most `depth` levels deep.
    pub fn value(&mut self, depth: usize) -> Value {
        let kinds = if depth == 0 { 4 } else { 6 };
        match self.rng.usize(..kinds) {
            0 => Value::Null,
            1 => Value::Bool(self.bool()),
            2 => Value::Number(edge_number(self)),
            3 => Value::String(self.string()),
            4 => Value::Array(
                (0..self.rng.usize(..4))
                    .map(|_| self.value(depth - 1))
                    .collect(),
            ),
            _ => {
                let mut map = Map::new();
                for _ in 0..self.rng.usize(..4) {
                    map.insert(self.string(), self.value(depth - 1));
                }
                Value::Object(map)
            }
        }
    }

    /// Usually a value of the right shape, sometimes anything.
    fn or_any(&mut self, right: Value) -> Value {
        if self.one_in(6) { self.value(2) } else { right }
    }

    /// One content part: text, image, or something stranger.
    fn part(&mut self) -> Value {
        let text = self.string();
        let part = match self.rng.usize(..3) {
            0 => json!({ "type": "text", "text": text }),
            1 => {
                json!({ "type": "image_url", "image_url": { "url": "data:image/png;base64,AAAA" } })
            }
            _ => json!({ "type": text }),
        };
        self.or_any(part)
    }

    /// One message, mostly well formed.
    fn message(&mut self) -> Value {
        let role = *self.pick(&[
            "system",
            "developer",
            "user",
            "assistant",
            "tool",
            "function",
            "robot",
        ]);
        let content = match self.rng.usize(..4) {
            0 => Value::Array((0..self.rng.usize(..4)).map(|_| self.part()).collect()),
            1 => Value::Null,
            _ => Value::String(self.string()),
        };
        let mut m = json!({ "role": role, "content": content });
        if self.one_in(5) {
            m["tool_calls"] = json!([{ "id": "c1", "type": "function",
                "function": { "name": "f", "arguments": self.string() } }]);
        }
        if self.one_in(5) {
            m["tool_call_id"] = Value::String(self.string());
        }
        let role = Value::String(role.into());
        m["role"] = self.or_any(role);
        self.or_any(m)
    }

    /// A chat-completions body near the valid ones: every field the gateway reads,
    /// each sometimes of the wrong type, plus unknown fields.
    pub fn chat_body(&mut self) -> Value {
        let mut body = Map::new();
        let model = Value::String((*self.pick(&["auto", "frontier", "local", "gpt-x"])).into());
        body.insert("model".into(), self.or_any(model));
        let messages = Value::Array((0..self.rng.usize(1..4)).map(|_| self.message()).collect());
        body.insert("messages".into(), self.or_any(messages));
        let optional: [(&str, Value); 9] = [
            ("stream", Value::Bool(self.bool())),
            ("stream_options", json!({ "include_usage": self.bool() })),
            ("max_tokens", Value::Number(edge_number(self))),
            (
                "max_completion_tokens",
                Value::Number(Number::from(self.rng.u64(..5000))),
            ),
            ("n", Value::Number(Number::from(self.rng.u64(..4)))),
            ("temperature", Value::Number(edge_number(self))),
            (
                "tools",
                json!([{ "type": "function", "function": { "name": "f", "parameters": {} } }]),
            ),
            (
                "response_format",
                json!({ "type": *self.pick(&["text", "json_object", "json_schema"]) }),
            ),
            ("user", Value::String(self.string())),
        ];
        for (key, value) in optional {
            if self.bool() {
                let value = self.or_any(value);
                body.insert(key.into(), value);
            }
        }
        if self.one_in(3) {
            body.insert(self.string(), self.value(3));
        }
        Value::Object(body)
    }

    /// An Anthropic Messages body near the valid ones: blocks of every kind the
    /// gateway translates, each field sometimes of the wrong type.
    pub fn messages_body(&mut self) -> Value {
        let mut body = Map::new();
        let model = Value::String((*self.pick(&["auto", "frontier", "local", "claude-x"])).into());
        body.insert("model".into(), self.or_any(model));
        let max_tokens = Value::Number(edge_number(self));
        body.insert("max_tokens".into(), self.or_any(max_tokens));
        let blocks = [
            json!({"type": "text", "text": self.string()}),
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}),
            json!({"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}),
            json!({"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "r"}]}),
            json!({"type": "thinking", "thinking": "x"}),
        ];
        let messages: Vec<Value> = (0..self.rng.usize(1..4))
            .map(|_| {
                let role = Value::String((*self.pick(&["user", "assistant", "system"])).into());
                let content = if self.bool() {
                    Value::String(self.string())
                } else {
                    let n = self.rng.usize(..3);
                    Value::Array((0..n).map(|_| self.pick(&blocks).clone()).collect())
                };
                let content = self.or_any(content);
                json!({ "role": role, "content": content })
            })
            .collect();
        let messages = Value::Array(messages);
        body.insert("messages".into(), self.or_any(messages));
        let optional: [(&str, Value); 7] = [
            ("stream", Value::Bool(self.bool())),
            ("system", json!([{"type": "text", "text": self.string()}])),
            ("stop_sequences", json!([self.string()])),
            ("temperature", Value::Number(edge_number(self))),
            (
                "tools",
                json!([{"name": "f", "input_schema": {"type": "object"}}]),
            ),
            (
                "tool_choice",
                json!({"type": *self.pick(&["auto", "any", "tool", "none", "x"]), "name": "f"}),
            ),
            ("metadata", json!({"user_id": self.string()})),
        ];
        for (key, value) in optional {
            if self.bool() {
                let value = self.or_any(value);
                body.insert(key.into(), value);
            }
        }
        Value::Object(body)
    }

    /// A Responses API body near the valid ones: text or items of every kind the
    /// gateway translates, each field sometimes of the wrong type.
    pub fn responses_body(&mut self) -> Value {
        let mut body = Map::new();
        let model = Value::String((*self.pick(&["auto", "frontier", "local", "gpt-x"])).into());
        body.insert("model".into(), self.or_any(model));
        let items = [
            json!({"role": "user", "content": self.string()}),
            json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "t"},
                {"type": "input_image", "image_url": "https://x/y.png"}]}),
            json!({"role": "assistant", "content": [{"type": "output_text", "text": "a"}]}),
            json!({"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}),
            json!({"type": "function_call_output", "call_id": "c1", "output": "r"}),
            json!({"type": "reasoning", "summary": []}),
        ];
        let input = if self.bool() {
            Value::String(self.string())
        } else {
            let n = self.rng.usize(..4);
            Value::Array((0..n).map(|_| self.pick(&items).clone()).collect())
        };
        body.insert("input".into(), self.or_any(input));
        let optional: [(&str, Value); 8] = [
            ("stream", Value::Bool(self.bool())),
            ("instructions", Value::String(self.string())),
            ("max_output_tokens", Value::Number(edge_number(self))),
            ("temperature", Value::Number(edge_number(self))),
            (
                "tools",
                json!([{"type": *self.pick(&["function", "web_search"]), "name": "f", "parameters": {}}]),
            ),
            (
                "tool_choice",
                json!(*self.pick(&["auto", "none", "required", "sometimes"])),
            ),
            (
                "text",
                json!({"format": {"type": *self.pick(&["text", "json_object", "json_schema"]), "schema": {}}}),
            ),
            ("previous_response_id", Value::String(self.string())),
        ];
        for (key, value) in optional {
            if self.bool() {
                let value = self.or_any(value);
                body.insert(key.into(), value);
            }
        }
        Value::Object(body)
    }

    /// An embeddings body near the valid ones: every input shape the API allows, with
    /// empty items, negative or huge token ids and fields of the wrong type.
    pub fn embeddings_body(&mut self) -> Value {
        let mut body = Map::new();
        let model = Value::String((*self.pick(&["embed", "auto", "frontier", "x"])).into());
        body.insert("model".into(), self.or_any(model));
        let n = self.rng.usize(..4);
        let input = match self.rng.usize(..4) {
            0 => Value::String(self.string()),
            1 => Value::Array((0..n).map(|_| Value::String(self.string())).collect()),
            2 => Value::Array((0..n).map(|_| Value::Number(edge_number(self))).collect()),
            _ => Value::Array(
                (0..n)
                    .map(|_| {
                        let m = self.rng.usize(..3);
                        Value::Array((0..m).map(|_| Value::Number(edge_number(self))).collect())
                    })
                    .collect(),
            ),
        };
        body.insert("input".into(), self.or_any(input));
        let optional: [(&str, Value); 3] = [
            (
                "encoding_format",
                json!(*self.pick(&["float", "base64", "hex"])),
            ),
            ("dimensions", Value::Number(edge_number(self))),
            ("user", Value::String(self.string())),
        ];
        for (key, value) in optional {
            if self.bool() {
                let value = self.or_any(value);
                body.insert(key.into(), value);
            }
        }
        Value::Object(body)
    }

    /// `bytes` damaged: cut, bytes flipped, garbage or invalid UTF-8 spliced in,
    /// a stretch repeated.
    pub fn mutate(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        for _ in 0..self.rng.usize(1..4) {
            let at = self.rng.usize(..=out.len());
            match self.rng.usize(..5) {
                0 => out.truncate(at),
                1 if at < out.len() => out[at] = self.rng.u8(..),
                2 => {
                    let junk = *self.pick(&[
                        &b"\xff\xfe"[..],
                        b"\xc3",
                        b"\xed\xa0\x80",
                        b"{",
                        b"]",
                        b"\"",
                        b"\\u12",
                        b"\0",
                    ]);
                    out.splice(at..at, junk.iter().copied());
                }
                3 => {
                    let end = (at + self.rng.usize(..64)).min(out.len());
                    let stretch = out[at..end].to_vec();
                    out.splice(at..at, stretch);
                }
                _ => {
                    let n = self.rng.usize(..16);
                    out.splice(at..at, (0..n).map(|_| self.rng.u8(..)));
                }
            }
        }
        out
    }

    /// JSON nested `depth` levels (arrays or objects) around a value.
    pub fn nested(&mut self, depth: usize) -> String {
        let object = self.bool();
        let (open, close) = if object { ("{\"a\":", "}") } else { ("[", "]") };
        format!("{}1{}", open.repeat(depth), close.repeat(depth))
    }

    /// `value` spelled differently: object keys shuffled at every level, random
    /// whitespace between tokens, small integers as `1.0` or `1e0`. Any JSON parser
    /// reads the same value back.
    pub fn respell(&mut self, value: &Value) -> String {
        let mut out = String::new();
        self.respell_into(value, &mut out);
        out
    }

    fn space(&mut self, out: &mut String) {
        for _ in 0..self.rng.usize(..3) {
            out.push(*self.pick(&[' ', '\n', '\t', '\r']));
        }
    }

    fn respell_into(&mut self, value: &Value, out: &mut String) {
        self.space(out);
        match value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                self.rng.shuffle(&mut entries);
                out.push('{');
                for (i, (key, value)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.space(out);
                    out.push_str(&Value::String(key.clone()).to_string());
                    self.space(out);
                    out.push(':');
                    self.respell_into(value, out);
                }
                self.space(out);
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.respell_into(item, out);
                }
                self.space(out);
                out.push(']');
            }
            Value::Number(n) => match n.as_u64() {
                Some(small) if small < 1 << 53 => match self.rng.usize(..3) {
                    0 => out.push_str(&format!("{small}.0")),
                    1 => out.push_str(&format!("{small}e0")),
                    _ => out.push_str(&small.to_string()),
                },
                _ => out.push_str(&n.to_string()),
            },
            other => out.push_str(&other.to_string()),
        }
        self.space(out);
    }
}
