//! Renders the pipeline's chat.completion.chunk stream as another API's event stream:
//! each chat event is parsed once and handed to the front-end's [`Translator`], which
//! writes its own events. The chat stream always ends with `[DONE]`, after one error
//! event when it broke (see [`crate::pipeline`]), so every translated stream ends too.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde_json::Value;

use crate::accounting::Usage;
use crate::accounting::usage::OpenAiUsage;
use crate::sse::{data_of, event_end};

/// One API's stream writer.
pub trait Translator: Send + Unpin + 'static {
    /// A chat.completion.chunk.
    fn chunk(&mut self, chunk: &Value, out: &mut Vec<u8>);
    /// The stream broke: `error` is the OpenAI error object (`{"message", "type", ...}`).
    fn error(&mut self, error: &Value, out: &mut Vec<u8>);
    /// The chat stream ended (`[DONE]`), after an error or not.
    fn done(&mut self, out: &mut Vec<u8>);
}

/// Appends one SSE event named `name` carrying `data`.
pub fn event(out: &mut Vec<u8>, name: &str, data: &impl serde::Serialize) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // Writing into a Vec fails only for a value JSON cannot hold, which none is.
    let _ = serde_json::to_writer(&mut *out, data);
    out.extend_from_slice(b"\n\n");
}

/// The usage a chat chunk carries, if any.
pub fn chunk_usage(chunk: &Value) -> Option<Usage> {
    let usage = chunk.get("usage").filter(|u| u.is_object())?;
    serde_json::from_value::<OpenAiUsage>(usage.clone())
        .ok()
        .map(Usage::from)
}

/// The chat stream `S`, rendered by `T`.
pub struct Translated<S, T> {
    chat: S,
    buffer: BytesMut,
    translator: T,
    ended: bool,
}

impl<S, T> Translated<S, T> {
    pub fn new(chat: S, translator: T) -> Self {
        Translated {
            chat,
            buffer: BytesMut::new(),
            translator,
            ended: false,
        }
    }
}

impl<S, T> Translated<S, T>
where
    T: Translator,
{
    /// Translates every complete event in the buffer.
    fn drain(&mut self, out: &mut Vec<u8>) {
        while let Some((len, sep)) = event_end(&self.buffer) {
            let event = self.buffer.split_to(len + sep);
            let Some(data) = data_of(&event[..len]) else {
                continue;
            };
            if data.trim_ascii() == b"[DONE]" {
                self.end(out);
                return;
            }
            let Ok(value) = serde_json::from_slice::<Value>(data) else {
                continue;
            };
            match value.get("error") {
                Some(error) => self.translator.error(error, out),
                None => self.translator.chunk(&value, out),
            }
        }
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        if !self.ended {
            self.ended = true;
            self.translator.done(out);
        }
    }
}

impl<S, T> Stream for Translated<S, T>
where
    S: Stream<Item = Result<Bytes, Infallible>> + Send + Unpin,
    T: Translator,
{
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            let mut out = Vec::new();
            match this.chat.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => {
                    this.buffer.extend_from_slice(&bytes);
                    this.drain(&mut out);
                }
                // The pipeline always sends `[DONE]`; end the stream in shape anyway.
                Poll::Ready(None) => this.end(&mut out),
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Bytes::from(out))));
            }
        }
    }
}

#[cfg(test)]
pub mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use serde_json::Value;

    /// A translated stream's events, as (name, data).
    pub fn events(out: &[u8]) -> Vec<(String, Value)> {
        String::from_utf8_lossy(out)
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let mut lines = e.lines();
                let name = lines.next().unwrap().strip_prefix("event: ").unwrap();
                let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
                (name.to_owned(), serde_json::from_str(data).unwrap())
            })
            .collect()
    }
}
