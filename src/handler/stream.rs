//! The streamed response: upstream SSE events forwarded as they arrive, metered on the
//! way. The usage chunk the gateway asked for is removed when the client did not ask
//! for it; a stream that breaks ends with one OpenAI-style error event and `[DONE]`,
//! never a silent truncation. A stream that ends with `[DONE]` and no error is handed
//! to the response cache, when it records one.

use std::borrow::Cow;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;

use super::exchange::Exchange;
use crate::accounting::Usage;
use crate::accounting::usage::{GeneratedText, OpenAiUsage};
use crate::cache::StreamRecorder;
use crate::dispatch::Slot;
use crate::error::{ApiError, UpstreamFailure};
use crate::provider::{ByteStream, FailureKind};
use crate::sse::{data_of, event_end};

const DONE: &[u8] = b"data: [DONE]\n\n";

/// What the stream has seen so far.
#[derive(Default)]
struct Meter {
    usage: Option<Usage>,
    output_chars: usize,
    /// Chunks that carried generated text: servers stream about one token each.
    output_chunks: u64,
    /// Identity of the stream, for a usage chunk the gateway adds itself.
    id: Option<String>,
    model: Option<String>,
    created: u64,
    finish_seen: bool,
    upstream_error: bool,
    /// The upstream sent `[DONE]`.
    done_seen: bool,
}

pub struct MeteredStream {
    exchange: Option<Exchange>,
    first: Option<Bytes>,
    rest: ByteStream,
    buffer: BytesMut,
    include_usage: bool,
    meter: Meter,
    ttft: Option<Duration>,
    ended: bool,
    /// Follows the answer for the response cache.
    recorder: Option<StreamRecorder>,
    /// The deployment's in-flight slot, freed when the stream is dropped.
    _slot: Slot,
}

impl MeteredStream {
    pub fn new(
        exchange: Exchange,
        first: Bytes,
        rest: ByteStream,
        include_usage: bool,
        slot: Slot,
        recorder: Option<StreamRecorder>,
    ) -> Self {
        MeteredStream {
            exchange: Some(exchange),
            first: Some(first),
            rest,
            buffer: BytesMut::new(),
            include_usage,
            meter: Meter::default(),
            ttft: None,
            ended: false,
            recorder,
            _slot: slot,
        }
    }

    /// Takes the complete events out of the buffer and returns the bytes to forward.
    fn drain_events(&mut self) -> BytesMut {
        let mut out = BytesMut::new();
        while !self.ended {
            let Some((len, sep)) = event_end(&self.buffer) else {
                break;
            };
            let event = self.buffer.split_to(len + sep);
            match self.inspect(&event[..len]) {
                Verdict::Forward => out.extend_from_slice(&event),
                Verdict::Drop => {}
                Verdict::Done => {
                    self.meter.done_seen = true;
                    self.add_estimated_usage(&mut out);
                    out.extend_from_slice(DONE);
                    self.end(200, None);
                }
            }
        }
        out
    }

    /// Decides what to do with one event and meters it.
    fn inspect(&mut self, event: &[u8]) -> Verdict {
        let Some(data) = data_of(event) else {
            return Verdict::Forward;
        };
        if data.trim_ascii() == b"[DONE]" {
            return Verdict::Done;
        }
        if let Some(recorder) = &mut self.recorder {
            recorder.push(data);
        }
        let Ok(chunk) = serde_json::from_slice::<ChunkPeek>(data) else {
            return Verdict::Forward;
        };
        if chunk.error.is_some() {
            self.meter.upstream_error = true;
        }
        if self.meter.id.is_none() {
            self.meter.id = chunk.id.map(Cow::into_owned);
            self.meter.model = chunk.model.map(Cow::into_owned);
            self.meter.created = chunk.created.unwrap_or(0);
        }
        for choice in &chunk.choices {
            if let Some(delta) = &choice.delta {
                let chars = delta.chars();
                self.meter.output_chars += chars;
                self.meter.output_chunks += u64::from(chars > 0);
            }
            if choice.finish_reason.is_some() {
                self.meter.finish_seen = true;
            }
        }
        if let Some(usage) = chunk.usage {
            self.meter.usage = Some(usage.into());
            if chunk.choices.is_empty() && !self.include_usage {
                return Verdict::Drop;
            }
        }
        Verdict::Forward
    }

    /// Output tokens estimated from what was streamed: one a chunk, or four
    /// characters a token when chunks carry several.
    fn estimated_output(&self) -> u64 {
        self.meter
            .output_chunks
            .max(crate::accounting::usage::estimate_tokens(
                self.meter.output_chars,
            ))
    }

    /// A client that asked for usage gets it even from upstreams that send none (as
    /// llama.cpp does): the gateway's estimate, in OpenAI's final usage chunk.
    fn add_estimated_usage(&self, out: &mut BytesMut) {
        if !self.include_usage || self.meter.usage.is_some() {
            return;
        }
        let Some(ex) = &self.exchange else {
            return;
        };
        let usage = ex.estimated_usage(self.estimated_output());
        let chunk = serde_json::json!({
            "id": self.meter.id.as_deref().unwrap_or_default(),
            "object": "chat.completion.chunk",
            "created": self.meter.created,
            "model": self.meter.model.as_deref().unwrap_or_default(),
            "choices": [],
            "usage": {
                "prompt_tokens": usage.input,
                "completion_tokens": usage.output,
                "total_tokens": usage.input + usage.output,
            },
        });
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(chunk.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    /// Records the request once; later calls do nothing.
    fn end(&mut self, status: u16, error: Option<&'static str>) {
        self.ended = true;
        // A stream that arrived whole in one read ends before poll_next notes its
        // first bytes: they are going out now.
        if status == 200
            && self.ttft.is_none()
            && let Some(ex) = &self.exchange
        {
            self.ttft = Some(ex.started().elapsed());
        }
        let output = self.estimated_output();
        if let Some(mut ex) = self.exchange.take() {
            let usage = match self.meter.usage {
                Some(u) => u,
                None => ex.estimated_usage(output),
            };
            let error = error.or(self.meter.upstream_error.then_some("upstream_stream_error"));
            if status == 200
                && error.is_none()
                && self.meter.done_seen
                && let Some(recorder) = self.recorder.take()
            {
                recorder.finish(usage);
            }
            ex.finish(status, error, usage, self.ttft);
        }
    }

    /// Ends a broken stream: one error event the SDKs raise, then `[DONE]`.
    fn fail(&mut self, out: &mut BytesMut, kind: FailureKind, message: String) {
        let failure = if kind == FailureKind::Timeout {
            UpstreamFailure::Timeout
        } else {
            UpstreamFailure::BadGateway
        };
        let error = ApiError::Upstream { failure, message };
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&error.to_json());
        out.extend_from_slice(b"\n\n");
        out.extend_from_slice(DONE);
        self.end(error.status().as_u16(), Some("stream_interrupted"));
    }
}

enum Verdict {
    Forward,
    Drop,
    Done,
}

impl Stream for MeteredStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            let chunk = match this.first.take() {
                Some(first) => Some(Ok(first)),
                None => match this.rest.poll_next_unpin(cx) {
                    Poll::Ready(item) => item,
                    Poll::Pending => return Poll::Pending,
                },
            };
            let mut out = match chunk {
                Some(Ok(bytes)) => {
                    this.buffer.extend_from_slice(&bytes);
                    this.drain_events()
                }
                Some(Err(e)) => {
                    let mut out = BytesMut::new();
                    this.fail(&mut out, e.kind, e.message);
                    out
                }
                None => {
                    // The upstream closed without `[DONE]`. After a finish_reason the
                    // answer is whole: complete it. Before one, it was cut short.
                    let mut out = BytesMut::new();
                    if this.meter.finish_seen {
                        this.add_estimated_usage(&mut out);
                        out.extend_from_slice(DONE);
                        this.end(200, None);
                    } else {
                        this.fail(
                            &mut out,
                            FailureKind::Protocol,
                            "the upstream ended the stream before the answer was complete".into(),
                        );
                    }
                    out
                }
            };
            if !out.is_empty() {
                if this.ttft.is_none()
                    && let Some(ex) = &this.exchange
                {
                    this.ttft = Some(ex.started().elapsed());
                }
                return Poll::Ready(Some(Ok(std::mem::take(&mut out).freeze())));
            }
        }
    }
}

impl Drop for MeteredStream {
    /// The client went away mid-stream: record what was generated so far.
    fn drop(&mut self) {
        if !self.ended {
            self.end(super::exchange::CLIENT_CLOSED, Some("client_disconnected"));
        }
    }
}

#[derive(Deserialize)]
struct ChunkPeek<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    created: Option<u64>,
    #[serde(default, borrow)]
    choices: Vec<ChoicePeek<'a>>,
    #[serde(default)]
    usage: Option<OpenAiUsage>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct ChoicePeek<'a> {
    #[serde(default, borrow)]
    delta: Option<GeneratedText<'a>>,
    #[serde(default)]
    finish_reason: Option<serde::de::IgnoredAny>,
}
