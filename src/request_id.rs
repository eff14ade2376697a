//! Request ids: an incoming `X-Request-ID` is kept when it is well-formed, otherwise a new one
//! is generated. Well-formed means exactly one header, 1 to 128 characters, each of
//! `A-Z a-z 0-9 - _ . :`; anything else (too long, spaces, quotes, control bytes, non-ASCII, two
//! headers) could poison logs or downstream systems, so it is replaced, not repaired.

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

pub const HEADER: &str = "x-request-id";
/// The same name, parsed once: a name given as a string is parsed again on every lookup.
static NAME: HeaderName = HeaderName::from_static(HEADER);
pub const MAX_LEN: usize = 128;

pub fn is_well_formed(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_LEN
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A request's id, held as the header value it is sent as: a kept id shares the client's
/// bytes, and the upstream request and the response each take a clone (a reference count),
/// not a copy checked again. `Default` is the empty id of a request not read yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl Default for RequestId {
    fn default() -> Self {
        Self(HeaderValue::from_static(""))
    }
}

impl RequestId {
    pub fn as_str(&self) -> &str {
        // Only well-formed (ASCII) ids are ever made, so this cannot fall back.
        self.0.to_str().unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value to send in `X-Request-ID`.
    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

/// A fresh id: 32 lower-case hex digits (128 random bits).
pub fn generate() -> RequestId {
    // Written straight into a buffer, without the formatting machinery or a growing String.
    // 16 bytes always fill the 32 digits, and hex digits are always a header value.
    let mut hex = [b'0'; 32];
    let _ = hex::encode_to_slice(fastrand::u128(..).to_be_bytes(), &mut hex);
    HeaderValue::from_bytes(&hex).map_or_else(|_| RequestId::default(), RequestId)
}

/// The id this request carries from now on.
pub fn from_headers(headers: &HeaderMap) -> RequestId {
    let mut values = headers.get_all(&NAME).iter();
    match (values.next(), values.next()) {
        (Some(v), None) if is_well_formed(v.as_bytes()) => RequestId(v.clone()),
        _ => generate(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_well_formed_ids() {
        let mut h = HeaderMap::new();
        h.insert(HEADER, "abc-123_X.y:z".parse().unwrap());
        assert_eq!(from_headers(&h).as_str(), "abc-123_X.y:z");
    }

    #[test]
    fn replaces_malformed_or_duplicate_ids() {
        for bad in ["", "has space", "quote\"", "a/b", &"x".repeat(MAX_LEN + 1)] {
            let mut h = HeaderMap::new();
            h.insert(HEADER, bad.parse().unwrap());
            let id = from_headers(&h);
            assert_ne!(id.as_str(), bad);
            assert_eq!(id.as_str().len(), 32);
        }
        let mut h = HeaderMap::new();
        h.append(HEADER, "one".parse().unwrap());
        h.append(HEADER, "two".parse().unwrap());
        let id = from_headers(&h);
        assert!(id.as_str() != "one" && id.as_str() != "two");
        assert!(is_well_formed(&[b'a'; MAX_LEN]));
    }

    #[test]
    fn generated_ids_are_well_formed_and_distinct() {
        let a = generate();
        assert!(is_well_formed(a.as_str().as_bytes()));
        assert_ne!(a, generate());
    }
}
