//! Request ids: a client's well-formed `X-Request-Id` is kept so traces join up across hops;
//! anything else is replaced by a fresh one.

use std::fmt::Write;

/// A request id, at most 128 bytes, stored inline so the hot path does not allocate.
#[derive(Clone, Copy)]
pub struct RequestId {
    buf: [u8; 128],
    len: u8,
}

impl RequestId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever stored (see `accept_request_id` and `new_request_id`).
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("")
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId {
            buf: [0; 128],
            len: 0,
        }
    }
}

/// Accepts a client-supplied id when it is 1–128 characters of `[A-Za-z0-9._:-]`.
pub fn accept_request_id(value: &[u8]) -> Option<RequestId> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if !ok {
        return None;
    }
    let mut id = RequestId::default();
    id.buf[..value.len()].copy_from_slice(value);
    id.len = value.len() as u8;
    Some(id)
}

/// The header a request id travels in, to the upstream and back to the client.
pub(crate) const X_REQUEST_ID: &str = "x-request-id";

/// The id of a request with `headers`: the client's `X-Request-Id` when well-formed, else a
/// fresh one; with it as a header value, built once so the upstream request and the response
/// share it (a reference-count bump each, not a copy).
pub(crate) fn request_id_of(headers: &http::HeaderMap) -> (RequestId, Option<http::HeaderValue>) {
    let client_id = headers
        .get(X_REQUEST_ID)
        .and_then(|v| accept_request_id(v.as_bytes()).map(|id| (id, v.clone())));
    match client_id {
        Some((id, value)) => (id, Some(value)),
        None => {
            let id = new_request_id();
            (id, http::HeaderValue::from_str(id.as_str()).ok())
        }
    }
}

/// A fresh random id: 32 lowercase hex characters (128 bits).
pub fn new_request_id() -> RequestId {
    let mut id = RequestId::default();
    let mut s = HexWriter { id: &mut id };
    let _ = write!(s, "{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    id
}

struct HexWriter<'a> {
    id: &'a mut RequestId,
}

impl Write for HexWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let start = self.id.len as usize;
        let end = start + s.len();
        if end > self.id.buf.len() {
            return Err(std::fmt::Error);
        }
        self.id.buf[start..end].copy_from_slice(s.as_bytes());
        self.id.len = end as u8;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_ids_are_kept_and_others_refused() {
        assert_eq!(
            accept_request_id(b"abc-123_x.y:z").map(|i| i.as_str().to_string()),
            Some("abc-123_x.y:z".into())
        );
        assert!(accept_request_id(b"").is_none());
        assert!(accept_request_id(b"has space").is_none());
        assert!(accept_request_id(b"new\nline").is_none());
        assert!(accept_request_id(&[b'a'; 129]).is_none());
        assert!(accept_request_id(&[b'a'; 128]).is_some());
    }

    #[test]
    fn generated_ids_are_32_hex_chars_and_differ() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.as_str(), b.as_str());
    }
}
