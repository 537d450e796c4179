//! The streamed response: upstream SSE events forwarded as they arrive, metered on the
//! way. The usage chunk the gateway asked for is removed when the client did not ask
//! for it; a stream that breaks ends with one OpenAI-style error event and `[DONE]`,
//! never a silent truncation. A stream that ends with `[DONE]` and no error is handed
//! to the response cache, when it records one.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::oneshot;

use super::finish::{CLIENT_CLOSED, Counting, Finisher, wait_for};
use crate::accounting::Usage;
use crate::accounting::usage::{GeneratedText, OpenAiUsage};
use crate::cache::StreamRecorder;
use crate::dispatch::Slot;
use crate::error::{ApiError, UpstreamFailure};
use crate::ledger::Commit;
use crate::provider::{ByteStream, FailureKind};
use crate::request::Request;
use crate::sse::{data_of, event_end};

const DONE: &[u8] = b"data: [DONE]\n\n";

/// Work the stream polls to completion before it goes on.
type Waiting<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What the stream has seen so far.
#[derive(Default)]
struct Meter {
    /// As the upstream reported it, or as counted once the answer was whole.
    usage: Option<Usage>,
    /// Everything generated, to count its tokens if no usage comes.
    output_text: String,
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
    finisher: Option<Finisher>,
    first: Option<Bytes>,
    rest: ByteStream,
    buffer: BytesMut,
    include_usage: bool,
    meter: Meter,
    ttft: Option<Duration>,
    /// The answer is whole; `[DONE]` (and the usage chunk) are still to go out.
    closing: bool,
    /// Tokens being counted for the usage chunk the client asked for.
    counting: Option<Waiting<Usage>>,
    ended: bool,
    /// Follows the answer for the response cache.
    recorder: Option<StreamRecorder>,
    /// The request, for counting its prompt when the upstream reports no usage.
    request: Option<Request>,
    /// The last bytes (`[DONE]`), held until the record's commit (`durability =
    /// "commit"`): a client that saw the stream complete has its record on disk.
    held: Option<Waiting<()>>,
    /// The deployment's in-flight slot, freed when the stream is dropped.
    _slot: Slot,
}

impl MeteredStream {
    pub fn new(
        finisher: Finisher,
        first: Bytes,
        rest: ByteStream,
        slot: Slot,
        recorder: Option<StreamRecorder>,
        request: Request,
    ) -> Self {
        MeteredStream {
            finisher: Some(finisher),
            first: Some(first),
            rest,
            buffer: BytesMut::new(),
            include_usage: request.include_usage,
            meter: Meter::default(),
            ttft: None,
            closing: false,
            counting: None,
            ended: false,
            recorder,
            request: Some(request),
            held: None,
            _slot: slot,
        }
    }

    /// Takes the complete events out of the buffer and returns the bytes to forward.
    fn drain_events(&mut self) -> BytesMut {
        let mut out = BytesMut::new();
        while !self.ended && !self.closing {
            let Some((len, sep)) = event_end(&self.buffer) else {
                break;
            };
            let event = self.buffer.split_to(len + sep);
            match self.inspect(&event[..len]) {
                Verdict::Forward => out.extend_from_slice(&event),
                Verdict::Drop => {}
                Verdict::Done => {
                    self.meter.done_seen = true;
                    self.closing = true;
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
                delta.push_to(&mut self.meter.output_text);
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

    /// The counting of this stream's tokens, once: for an upstream that sent no usage.
    fn counting(&mut self) -> Option<Counting> {
        let ex = self.finisher.as_ref()?;
        Some(ex.counting(
            self.request.take(),
            std::mem::take(&mut self.meter.output_text),
        ))
    }

    /// The answer is whole: the usage chunk the client asked for, `[DONE]`, and the
    /// record. A client that asked for usage gets it even from upstreams that send none
    /// (as llama.cpp does): counted off the runtime first, so the chunk and the ledger
    /// agree. Only that `[DONE]` waits for the count; the answer itself is out.
    fn close(&mut self, cx: &mut Context<'_>) -> Poll<BytesMut> {
        let mut out = BytesMut::new();
        if self.include_usage && self.meter.usage.is_none() {
            if self.counting.is_none() {
                self.counting = self
                    .counting()
                    .map(|c| Box::pin(c.count_off_runtime()) as Pin<Box<_>>);
            }
            if let Some(counting) = &mut self.counting {
                let Poll::Ready(usage) = counting.as_mut().poll(cx) else {
                    return Poll::Pending;
                };
                self.counting = None;
                self.meter.usage = Some(usage);
                self.add_usage_chunk(&mut out, usage);
            }
        }
        self.end_with(200, None, &mut out);
        Poll::Ready(out)
    }

    /// Records the request and ends `out` with `[DONE]`, or holds `[DONE]` back until
    /// the record is committed.
    fn end_with(&mut self, status: u16, error: Option<&'static str>, out: &mut BytesMut) {
        match self.end(status, error) {
            Some(commit) => self.held = Some(Box::pin(wait_for(commit))),
            None => out.extend_from_slice(DONE),
        }
    }

    /// OpenAI's final usage chunk, carrying `usage`.
    fn add_usage_chunk(&self, out: &mut BytesMut, usage: Usage) {
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

    /// Records the request once; later calls do nothing. Without usage from the
    /// upstream, the tokens are counted on a blocking thread and the record follows;
    /// the ledger's flush and shutdown wait for it. Returns the record's commit when
    /// the response must wait for it.
    fn end(&mut self, status: u16, error: Option<&'static str>) -> Option<Commit> {
        self.ended = true;
        // A stream that arrived whole in one read ends before poll_next notes its
        // first bytes: they are going out now.
        if status == 200
            && self.ttft.is_none()
            && let Some(ex) = &self.finisher
        {
            self.ttft = Some(ex.started().elapsed());
        }
        // A count `close` started (the client asked for usage) and did not see
        // finish: the record takes it over, rather than counting an emptied text.
        let in_flight = match self.meter.usage {
            Some(_) => None,
            None => self.counting.take(),
        };
        let counting = match (self.meter.usage, &in_flight) {
            (None, None) => self.counting(),
            _ => None,
        };
        let mut ex = self.finisher.take()?;
        let durable = ex.durable();
        let error = error.or(self.meter.upstream_error.then_some("upstream_stream_error"));
        let recorder = if status == 200 && error.is_none() && self.meter.done_seen {
            self.recorder.take()
        } else {
            None
        };
        let ttft = self.ttft;
        let pending = ex.pending();
        let finish = move |usage: Usage| {
            if let Some(recorder) = recorder {
                recorder.finish(usage);
            }
            ex.finish(status, error, usage, ttft);
            drop(pending);
            ex.take_commit()
        };
        let runtime = tokio::runtime::Handle::try_current();
        match (counting, in_flight, runtime) {
            (Some(counting), _, Ok(runtime)) => spawn_finish(&runtime, durable, async move {
                finish(counting.count_off_runtime().await)
            }),
            // Dropped outside the runtime (at exit): count here.
            (Some(counting), _, Err(_)) => finish(counting.count()),
            (None, Some(in_flight), Ok(runtime)) => {
                spawn_finish(&runtime, durable, async move { finish(in_flight.await) })
            }
            (None, _, _) => finish(self.meter.usage.unwrap_or_default()),
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
        self.end_with(error.status().as_u16(), Some("stream_interrupted"), out);
    }
}

/// Finishes a record on the runtime once its usage is counted; with `durable`, the
/// returned commit resolves when the record is committed.
fn spawn_finish(
    runtime: &tokio::runtime::Handle,
    durable: bool,
    finish: impl Future<Output = Option<Commit>> + Send + 'static,
) -> Option<Commit> {
    if !durable {
        runtime.spawn(async move {
            finish.await;
        });
        return None;
    }
    let (done, commit) = oneshot::channel();
    runtime.spawn(async move {
        match finish.await {
            // Forwarded as it resolves; the stream bounds its wait.
            Some(commit) => {
                if commit.await.is_ok() {
                    let _ = done.send(());
                }
            }
            None => {
                let _ = done.send(());
            }
        }
    });
    Some(commit)
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
            if let Some(committed) = &mut this.held {
                std::task::ready!(committed.as_mut().poll(cx));
                this.held = None;
                return Poll::Ready(Some(Ok(Bytes::from_static(DONE))));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            if this.closing {
                let out = std::task::ready!(this.close(cx));
                if out.is_empty() {
                    // Nothing before the held `[DONE]`: wait for the commit.
                    continue;
                }
                return Poll::Ready(Some(Ok(out.freeze())));
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
                        this.closing = true;
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
                    && let Some(ex) = &this.finisher
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
            self.end(CLIENT_CLOSED, Some("client_disconnected"));
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
