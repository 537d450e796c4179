//! A stored answer: the usage of the original response and its chat.completion body,
//! in one byte string that every backend stores as is.
//!
//! Layout: a format byte, a flags byte (bit 0: usage estimated), the five token counts
//! as little-endian u64 (input, cached input, cache write, output, reasoning), then the
//! chat.completion JSON. A hit serves the body as a slice of the stored bytes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::accounting::Usage;

/// Bumped when the layout changes; entries of another format read as misses.
const FORMAT: u8 = 1;
const HEADER: usize = 2 + 5 * 8;

/// One cached answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The usage of the response that was stored, recorded again on every hit.
    pub usage: Usage,
    /// A chat.completion JSON body.
    pub body: Bytes,
}

impl Entry {
    /// The stored form.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER + self.body.len());
        out.put_u8(FORMAT);
        out.put_u8(u8::from(self.usage.estimated));
        let u = &self.usage;
        for n in [
            u.input,
            u.cached_input,
            u.cache_write,
            u.output,
            u.reasoning,
        ] {
            out.put_u64_le(n);
        }
        out.extend_from_slice(&self.body);
        out.freeze()
    }

    /// Reads a stored entry; `None` for bytes of another format or a truncated value.
    pub fn decode(stored: Bytes) -> Option<Entry> {
        let header = stored.get(..HEADER)?;
        if header[0] != FORMAT || header[1] > 1 {
            return None;
        }
        let mut counts = [0u64; 5];
        for (i, chunk) in header[2..].chunks_exact(8).enumerate() {
            counts[i] = u64::from_le_bytes(chunk.try_into().ok()?);
        }
        let [input, cached_input, cache_write, output, reasoning] = counts;
        Some(Entry {
            usage: Usage {
                input,
                cached_input,
                cache_write,
                output,
                reasoning,
                estimated: header[1] == 1,
            },
            body: stored.slice(HEADER..),
        })
    }

    /// Bytes the stored form takes.
    pub fn stored_len(&self) -> usize {
        Self::stored_len_of(self.body.len())
    }

    /// Bytes an entry with a body of `body_len` bytes takes once stored.
    pub fn stored_len_of(body_len: usize) -> usize {
        HEADER + body_len
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn round_trips() {
        let entry = Entry {
            usage: Usage {
                input: 9,
                cached_input: 1 << 40,
                cache_write: 3,
                output: 4,
                reasoning: 2,
                estimated: true,
            },
            body: Bytes::from_static(br#"{"object":"chat.completion"}"#),
        };
        let stored = entry.encode();
        assert_eq!(stored.len(), entry.stored_len());
        assert_eq!(Entry::decode(stored), Some(entry));
    }

    #[test]
    fn rejects_other_formats_and_truncated_values() {
        assert_eq!(Entry::decode(Bytes::new()), None);
        assert_eq!(Entry::decode(Bytes::from_static(b"{\"a\":1}")), None);
        let mut other = vec![FORMAT + 1, 0];
        other.extend_from_slice(&[0; 40]);
        assert_eq!(Entry::decode(Bytes::from(other)), None);
        let mut short = vec![FORMAT, 0];
        short.extend_from_slice(&[0; 39]);
        assert_eq!(Entry::decode(Bytes::from(short)), None);
    }
}
