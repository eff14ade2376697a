//! Request ids: an incoming `X-Request-ID` is kept when it is well-formed, otherwise a new one
//! is generated. Well-formed means exactly one header, 1 to 128 characters, each of
//! `A-Z a-z 0-9 - _ . :`; anything else (too long, spaces, quotes, control bytes, non-ASCII, two
//! headers) could poison logs or downstream systems, so it is replaced, not repaired.

use http::HeaderMap;

pub const HEADER: &str = "x-request-id";
pub const MAX_LEN: usize = 128;

pub fn is_well_formed(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_LEN
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A fresh id: 32 lower-case hex digits (128 random bits).
pub fn generate() -> String {
    // 32 lower-case hex digits; `hex` writes them straight, without the formatting machinery.
    hex::encode(fastrand::u128(..).to_be_bytes())
}

/// The id this request carries from now on.
pub fn from_headers(headers: &HeaderMap) -> String {
    let mut values = headers.get_all(HEADER).iter();
    match (values.next(), values.next()) {
        (Some(v), None) if is_well_formed(v.as_bytes()) => {
            // Checked above: ASCII only, so this cannot fail.
            String::from_utf8_lossy(v.as_bytes()).into_owned()
        }
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
        assert_eq!(from_headers(&h), "abc-123_X.y:z");
    }

    #[test]
    fn replaces_malformed_or_duplicate_ids() {
        for bad in ["", "has space", "quote\"", "a/b", &"x".repeat(MAX_LEN + 1)] {
            let mut h = HeaderMap::new();
            h.insert(HEADER, bad.parse().unwrap());
            let id = from_headers(&h);
            assert_ne!(id, bad);
            assert_eq!(id.len(), 32);
        }
        let mut h = HeaderMap::new();
        h.append(HEADER, "one".parse().unwrap());
        h.append(HEADER, "two".parse().unwrap());
        let id = from_headers(&h);
        assert!(id != "one" && id != "two");
        assert!(is_well_formed(&[b'a'; MAX_LEN]));
    }

    #[test]
    fn generated_ids_are_well_formed_and_distinct() {
        let a = generate();
        assert!(is_well_formed(a.as_bytes()));
        assert_ne!(a, generate());
    }
}
