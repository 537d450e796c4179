//! Server-sent events framing, shared by the stream metering and the provider adapters
//! that translate event streams. Pure byte functions.

/// Length of the first complete event in `buf` and of its blank-line separator.
pub fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = memchr::memmem::find(buf, b"\n\n").map(|i| (i, 2));
    let crlf = memchr::memmem::find(buf, b"\r\n\r\n").map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// The value of the first `field:` line of an event (`data`, `event` ...).
pub fn field<'a>(event: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    event.split(|b| *b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let value = line.strip_prefix(name)?.strip_prefix(b":")?;
        Some(value.strip_prefix(b" ").unwrap_or(value))
    })
}

/// The `data:` payload of an event (single-line data, as every LLM API sends).
pub fn data_of(event: &[u8]) -> Option<&[u8]> {
    field(event, b"data")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_event_boundaries() {
        assert_eq!(event_end(b"data: x\n\ndata: y"), Some((7, 2)));
        assert_eq!(event_end(b"data: x\r\n\r\n"), Some((7, 4)));
        assert_eq!(event_end(b"data: x\n"), None);
    }

    #[test]
    fn reads_fields() {
        assert_eq!(data_of(b"data: {\"a\":1}"), Some(&b"{\"a\":1}"[..]));
        assert_eq!(data_of(b"event: x\ndata:[DONE]"), Some(&b"[DONE]"[..]));
        assert_eq!(data_of(b": keep-alive"), None);
        assert_eq!(
            field(b"event: ping\ndata: {}", b"event"),
            Some(&b"ping"[..])
        );
        assert_eq!(field(b"database: x", b"data"), None);
    }
}
