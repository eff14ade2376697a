//! The one canonical form of a request path.
//!
//! Routing, route policy and the upstream request all use the output of [`canonical_path`], so a
//! request can never be "authorised as `/api/public`, served as `/api/admin`" (security catalogue
//! §2.5, P1–P14). Anything whose meaning could differ between this gateway and some backend is
//! refused (the caller answers 400) rather than guessed at. `raw` is the path of the
//! request-target only: the query string has already been split off.
//!
//! Decisions, in the order they are applied:
//!
//! 1. **Absolute only.** The path must start with `/`; otherwise [`PathError::NotAbsolute`]
//!    (`*`, `api/admin`, `@evil/...`, the empty string).
//! 2. **Raw bytes.** Allowed are the RFC 3986 `pchar` set plus `/`: unreserved `A-Za-z0-9-._~`,
//!    the sub-delims `!$&'()*+,=`, `:`, `@`, and `%` as the start of a percent-encoding. A raw `\`
//!    is [`PathError::Backslash`] (a separator to Windows backends), a raw `;` is
//!    [`PathError::PathParameter`] (see 5); every other byte — `#`, space, control bytes, `"`,
//!    `<`, `>`, `^`, `` ` ``, `{`, `|`, `}`, and any byte >= 0x80 such as a raw fullwidth `．／` —
//!    is [`PathError::ForbiddenCharacter`].
//! 3. **Percent-encodings.** `%` must be followed by two hex digits, else
//!    [`PathError::InvalidEncoding`] (`%u002e`, `%2`, `%zz`). Then, by the decoded byte:
//!    - `/` or `\` ([`PathError::EncodedSeparator`]), `.` ([`PathError::EncodedDot`]: it can only
//!      hide a dot segment or a trailing dot), `%` ([`PathError::DoubleEncoding`], e.g. `%252e`),
//!      `0x00`–`0x1F` and `0x7F` ([`PathError::EncodedControl`]), `;`
//!      ([`PathError::PathParameter`]) and `#` ([`PathError::EncodedFragment`]) are refused;
//!    - the other unreserved characters (`A-Za-z0-9-_~`) are decoded (RFC 3986 §6.2.2.2):
//!      otherwise `/api/%61dmin` would miss the `/api/admin` route while the backend decodes it
//!      to `/api/admin`;
//!    - everything else (`%20`, `%3A`, `%40`, bytes >= 0x80, ...) stays encoded, with its hex
//!      digits upper-cased (RFC 3986 §6.2.2.1), so `%3a` and `%3A` are one path;
//!    - encoded bytes >= 0x80 must be valid UTF-8 (read as whole sequences of `%XX`), else
//!      [`PathError::InvalidEncoding`]: overlong `%C0%AE`, a lone continuation byte, `%FF`, a
//!      truncated sequence. `%C3%A9` (é) or `%EF%BC%8E` (fullwidth `．`) are accepted, encoded.
//! 4. **Dot segments.** Literal `.` and `..` segments are resolved as in RFC 3986 §5.2.4
//!    (`/api/public/../admin/users` → `/api/admin/users`, `/a/./b` → `/a/b`), and a trailing
//!    `/.` or `/..` leaves a trailing slash (`/a/b/..` → `/a/`). A `..` that would climb above
//!    the root (`/..`, `/a/../..`) is [`PathError::EscapesRoot`] rather than being clamped to
//!    `/`: no honest client sends one.
//! 5. **No path parameters.** `;` is refused anywhere, raw or encoded (Tomcat/Jetty path
//!    parameters, `/..;/`): [`PathError::PathParameter`].
//! 6. **Empty segments are merged**, like nginx's `merge_slashes`: `//api//admin///users` →
//!    `/api/admin/users`. Merging happens *before* dot resolution, so an empty segment never
//!    counts as a level that a `..` can remove: `/a//../b` is `/a/../b`, which is `/b`.
//! 7. **A trailing slash is kept** as sent (`/users/` and `/users` are different paths).
//! 8. **Case is kept** as sent; paths are case-sensitive. Only the hex digits of the
//!    percent-encodings that remain are upper-cased.
//! 9. **Ambiguous segments are refused.** A segment that ends in `.` but is not `.` or `..`
//!    (`/api/admin./users`, `/api/admin/users.`), or that ends in an encoded space (`%20`), is
//!    [`PathError::AmbiguousSegment`]: Windows/IIS and some frameworks strip trailing dots and
//!    spaces, which would make it a different path from the one policy saw. (A trailing `%09`
//!    is already refused as a control byte.)
//! 10. **Limits.** More than [`MAX_PATH_BYTES`] bytes, or more than [`MAX_SEGMENTS`] segments (a
//!     segment is counted per `/` in the path as sent), is [`PathError::TooLong`]. The canonical
//!     form is never longer, nor has more segments, than its input.
//!
//! The result is idempotent: the canonical form of a canonical path is itself. A path that is
//! already canonical — by far the common case — comes back as `Cow::Borrowed` after one scan
//! and no allocation; a new `String` is built only when something changes.

use std::borrow::Cow;
use std::fmt;

/// Longest path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 8192;
/// Most segments accepted (one per `/` in the path as sent).
pub const MAX_SEGMENTS: usize = 256;

/// Why a path has no canonical form. Every variant is answered with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Does not start with `/` (asterisk-form, authority-like or relative target).
    NotAbsolute,
    /// Longer than [`MAX_PATH_BYTES`] or more than [`MAX_SEGMENTS`] segments.
    TooLong,
    /// A raw byte outside the RFC 3986 path characters (including `#` and any non-ASCII byte).
    ForbiddenCharacter,
    /// A raw `\`.
    Backslash,
    /// A `;`, raw or encoded as `%3B`.
    PathParameter,
    /// A `%` not followed by two hex digits, or encoded bytes that are not valid UTF-8.
    InvalidEncoding,
    /// `%2F` or `%5C`.
    EncodedSeparator,
    /// `%2E`.
    EncodedDot,
    /// `%25`: the path was encoded twice.
    DoubleEncoding,
    /// `%00`–`%1F` or `%7F`.
    EncodedControl,
    /// `%23`.
    EncodedFragment,
    /// A `..` segment that would climb above the root.
    EscapesRoot,
    /// A segment ending in `.` (other than `.`/`..`) or in `%20`.
    AmbiguousSegment,
}

impl PathError {
    /// A stable `snake_case` code for logs, metrics and error bodies.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::NotAbsolute => "path_not_absolute",
            Self::TooLong => "path_too_long",
            Self::ForbiddenCharacter => "path_forbidden_character",
            Self::Backslash => "path_backslash",
            Self::PathParameter => "path_parameter",
            Self::InvalidEncoding => "path_invalid_encoding",
            Self::EncodedSeparator => "path_encoded_separator",
            Self::EncodedDot => "path_encoded_dot",
            Self::DoubleEncoding => "path_double_encoding",
            Self::EncodedControl => "path_encoded_control",
            Self::EncodedFragment => "path_encoded_fragment",
            Self::EscapesRoot => "path_escapes_root",
            Self::AmbiguousSegment => "path_ambiguous_segment",
        }
    }

    /// One sentence for a human. It never quotes the path, which is attacker-controlled.
    #[must_use]
    pub fn message(self) -> &'static str {
        match self {
            Self::NotAbsolute => "The request path must start with '/'.",
            Self::TooLong => "The request path is too long or has too many segments.",
            Self::ForbiddenCharacter => {
                "The request path contains a character that must be percent-encoded."
            }
            Self::Backslash => "The request path contains a backslash.",
            Self::PathParameter => "The request path contains a ';' path parameter.",
            Self::InvalidEncoding => {
                "The request path contains a malformed percent-encoding or invalid UTF-8."
            }
            Self::EncodedSeparator => "The request path contains an encoded '/' or '\\'.",
            Self::EncodedDot => "The request path contains an encoded '.'.",
            Self::DoubleEncoding => "The request path contains an encoded '%' (double encoding).",
            Self::EncodedControl => "The request path contains an encoded control character.",
            Self::EncodedFragment => "The request path contains an encoded '#'.",
            Self::EscapesRoot => "The request path climbs above the root with '..'.",
            Self::AmbiguousSegment => {
                "The request path has a segment ending in '.' or a space, which servers disagree on."
            }
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for PathError {}

/// The one canonical form of a request path: what routing and policy see, and exactly what is
/// forwarded. See the module documentation for the rules.
///
/// # Errors
///
/// A [`PathError`] naming the first rule `raw` breaks, scanning left to right; the caller
/// answers 400 and must not forward the request.
pub fn canonical_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if raw.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let bytes = rest.as_bytes();

    // One pass validates everything and notes whether the canonical form differs from `raw`.
    let mut changed = false;
    let mut depth = 0usize; // segments on the stack after dot resolution
    let mut segments = 1usize; // the leading '/' opens the first segment
    let mut start = 0usize;
    let mut i = 0usize;
    loop {
        match bytes.get(i).copied() {
            None | Some(b'/') => {
                let last = i >= bytes.len();
                match segment_kind(bytes.get(start..i).unwrap_or_default())? {
                    // An empty segment is a merged slash unless it is the trailing slash.
                    Segment::Empty => changed |= !last,
                    Segment::Dot => changed = true,
                    Segment::DotDot => {
                        depth = depth.checked_sub(1).ok_or(PathError::EscapesRoot)?;
                        changed = true;
                    }
                    Segment::Name => depth += 1,
                }
                if last {
                    break;
                }
                segments += 1;
                if segments > MAX_SEGMENTS {
                    return Err(PathError::TooLong);
                }
                i += 1;
                start = i;
            }
            Some(b'%') => {
                let (next, rewrite) = check_percent(bytes, i)?;
                changed |= rewrite;
                i = next;
            }
            Some(b) => {
                check_raw_byte(b)?;
                i += 1;
            }
        }
    }

    if changed {
        Ok(Cow::Owned(rebuild(rest)))
    } else {
        Ok(Cow::Borrowed(raw))
    }
}

enum Segment {
    Empty,
    Dot,
    DotDot,
    Name,
}

/// Classifies a segment whose bytes have already been checked.
fn segment_kind(seg: &[u8]) -> Result<Segment, PathError> {
    match seg {
        b"" => Ok(Segment::Empty),
        b"." => Ok(Segment::Dot),
        b".." => Ok(Segment::DotDot),
        // Servers that strip trailing dots or spaces would see another segment than we do.
        _ if seg.ends_with(b".") || seg.ends_with(b"%20") => Err(PathError::AmbiguousSegment),
        _ => Ok(Segment::Name),
    }
}

fn check_raw_byte(b: u8) -> Result<(), PathError> {
    match b {
        // unreserved
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => Ok(()),
        // sub-delims without ';', plus ':' and '@'
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@' => {
            Ok(())
        }
        b'\\' => Err(PathError::Backslash),
        b';' => Err(PathError::PathParameter),
        _ => Err(PathError::ForbiddenCharacter),
    }
}

/// Checks the percent-encoding at `i` (a UTF-8 sequence may span several `%XX`). Returns the
/// index after it and whether its canonical spelling differs from the raw one.
fn check_percent(bytes: &[u8], i: usize) -> Result<(usize, bool), PathError> {
    let (value, lower_hex) = percent_byte(bytes, i).ok_or(PathError::InvalidEncoding)?;
    match value {
        b'/' | b'\\' => Err(PathError::EncodedSeparator),
        b'.' => Err(PathError::EncodedDot),
        b'%' => Err(PathError::DoubleEncoding),
        0x00..=0x1F | 0x7F => Err(PathError::EncodedControl),
        b';' => Err(PathError::PathParameter),
        b'#' => Err(PathError::EncodedFragment),
        0x80..=0xFF => check_utf8_sequence(bytes, i, value),
        _ if decodes(value) => Ok((i + 3, true)),
        _ => Ok((i + 3, lower_hex)),
    }
}

/// The unreserved characters that are decoded. `.` is unreserved too, but `%2E` is refused.
fn decodes(value: u8) -> bool {
    value.is_ascii_alphanumeric() || matches!(value, b'-' | b'_' | b'~')
}

/// The `%XX` at `i`: the byte it encodes and whether a hex digit was lower-case.
fn percent_byte(bytes: &[u8], i: usize) -> Option<(u8, bool)> {
    match (bytes.get(i), bytes.get(i + 1), bytes.get(i + 2)) {
        (Some(b'%'), Some(&hi), Some(&lo)) => {
            let value = hex_digit(hi)? << 4 | hex_digit(lo)?;
            Some((value, hi.is_ascii_lowercase() || lo.is_ascii_lowercase()))
        }
        _ => None,
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A UTF-8 sequence of `%XX` starting at `i`, whose lead byte is `lead` (>= 0x80).
fn check_utf8_sequence(bytes: &[u8], i: usize, lead: u8) -> Result<(usize, bool), PathError> {
    let len = match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        // continuation bytes, overlong leads C0/C1, and F5..FF never start a character
        _ => return Err(PathError::InvalidEncoding),
    };
    let mut buf = [0u8; 4];
    let mut lower_hex = false;
    for (k, slot) in buf.iter_mut().enumerate().take(len) {
        let (value, lower) = percent_byte(bytes, i + 3 * k).ok_or(PathError::InvalidEncoding)?;
        *slot = value;
        lower_hex |= lower;
    }
    // std rejects overlong forms, surrogates, code points above U+10FFFF and bad continuations.
    match buf.get(..len).map(std::str::from_utf8) {
        Some(Ok(_)) => Ok((i + 3 * len, lower_hex)),
        _ => Err(PathError::InvalidEncoding),
    }
}

/// Builds the canonical form of `rest` (the path after its leading `/`), which
/// [`canonical_path`] has already validated.
fn rebuild(rest: &str) -> String {
    // `out` holds "/seg" per kept segment, so a `..` is a truncation at the last '/'.
    let mut out = String::with_capacity(rest.len() + 1);
    for seg in rest.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                let cut = out.rfind('/').unwrap_or(0);
                out.truncate(cut);
            }
            _ => {
                out.push('/');
                push_normalised(&mut out, seg);
            }
        }
    }
    // A path ending in "/", "/." or "/.." ends in a slash, and the root is "/".
    let trailing_slash = matches!(rest.rsplit('/').next(), Some("" | "." | ".."));
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

/// Appends `seg` with unreserved characters decoded and remaining hex digits upper-cased.
fn push_normalised(out: &mut String, seg: &str) {
    let bytes = seg.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match percent_byte(bytes, i) {
            Some((value, _)) if decodes(value) => out.push(char::from(value)),
            Some(_) => {
                out.push('%');
                for digit in bytes.iter().skip(i + 1).take(2) {
                    out.push(char::from(digit.to_ascii_uppercase()));
                }
            }
            // Validated input is ASCII outside percent-encodings.
            None => {
                out.push(char::from(b));
                i += 1;
                continue;
            }
        }
        i += 3;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The canonical form, or the error code.
    fn canon(raw: &str) -> Result<String, &'static str> {
        canonical_path(raw)
            .map(Cow::into_owned)
            .map_err(PathError::code)
    }

    fn ok(raw: &str, want: &str) {
        assert_eq!(canon(raw), Ok(want.to_string()), "input {raw:?}");
    }

    fn refused(raw: &str, code: &str) {
        assert_eq!(canon(raw), Err(code), "input {raw:?}");
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        assert!(matches!(
            canonical_path("/api/users/1"),
            Ok(Cow::Borrowed(_))
        ));
        for raw in [
            "/",
            "/api/users/",
            "/a/b.json",
            "/~user/x-y_z",
            "/caf%C3%A9",
            "/a%20b",
            "/p:q@r!$&'()*+,=",
            "/.well-known/acme",
            "/a..b/.hidden",
        ] {
            match canonical_path(raw) {
                Ok(Cow::Borrowed(out)) => assert_eq!(out, raw),
                other => panic!("{raw:?} should be borrowed unchanged, got {other:?}"),
            }
        }
    }

    #[test]
    fn changed_paths_are_owned() {
        for raw in ["/a//b", "/a/./b", "/%61", "/%3a", "/a/.."] {
            assert!(matches!(canonical_path(raw), Ok(Cow::Owned(_))), "{raw:?}");
        }
    }

    #[test]
    fn p1_dot_segments_are_resolved_before_routing() {
        ok("/api/public/../admin/users", "/api/admin/users");
        ok("/api/public/./../admin/users", "/api/admin/users");
        ok("/a/./b", "/a/b");
        ok("/a/b/..", "/a/");
        ok("/a/b/.", "/a/b/");
        ok("/a/..", "/");
        ok("/.", "/");
        ok("/./", "/");
        ok("/a/b/../../c", "/c");
        refused("/..", "path_escapes_root");
        refused("/../api/admin", "path_escapes_root");
        refused("/a/../..", "path_escapes_root");
        refused("/api/public/../../../etc/passwd", "path_escapes_root");
    }

    #[test]
    fn p2_encoded_dots_are_refused() {
        refused("/api/public/%2e%2e/admin/users", "path_encoded_dot");
        refused("/api/public/%2E%2E/admin/users", "path_encoded_dot");
        refused("/api/public/.%2e/admin/users", "path_encoded_dot");
        refused("/api/public/%2e./admin/users", "path_encoded_dot");
        refused("/%2e%2e", "path_encoded_dot");
        refused("/a/%2e/b", "path_encoded_dot");
        // Even inside a name: it has no honest use and hides trailing dots.
        refused("/file%2ejson", "path_encoded_dot");
    }

    #[test]
    fn p3_encoded_separators_are_refused() {
        refused("/api/public%2f..%2fadmin/users", "path_encoded_separator");
        refused("/api/public%2F..%2Fadmin/users", "path_encoded_separator");
        refused("/api/public%5c..%5cadmin", "path_encoded_separator");
        refused("/api/public%5C..%5Cadmin", "path_encoded_separator");
        refused("/api/public/..%5c", "path_encoded_separator");
        refused("/api\\admin", "path_backslash");
        refused("/api/public/..\\admin", "path_backslash");
    }

    #[test]
    fn p4_repeated_slashes_are_merged() {
        ok("//api/admin/users", "/api/admin/users");
        ok("/api//admin/users", "/api/admin/users");
        ok("/api/admin//users", "/api/admin/users");
        ok("//api//admin///users", "/api/admin/users");
        ok("/api/admin//", "/api/admin/");
        ok("//", "/");
        ok("///", "/");
        // Merged first, then resolved: the empty segment is not a level.
        ok("/a//../b", "/b");
        ok("/a/..//b", "/b");
        refused("//..", "path_escapes_root");
    }

    #[test]
    fn p5_case_is_kept() {
        ok("/API/Admin/users", "/API/Admin/users");
        ok("/api/ADMIN", "/api/ADMIN");
        // Decoded letters keep the case they encode.
        ok("/%41pi/%61dmin", "/Api/admin");
    }

    #[test]
    fn p6_trailing_dots_and_spaces_are_refused() {
        refused("/api/admin./users", "path_ambiguous_segment");
        refused("/api/admin/users.", "path_ambiguous_segment");
        refused("/api/admin.../users", "path_ambiguous_segment");
        refused("/api/admin./", "path_ambiguous_segment");
        refused("/api/admin%20/users", "path_ambiguous_segment");
        refused("/api/admin%20", "path_ambiguous_segment");
        refused("/api/admin%09", "path_encoded_control");
        // The trailing slash is significant, not ambiguous.
        ok("/api/admin/users/", "/api/admin/users/");
        ok("/api/admin/users", "/api/admin/users");
        // Dots and spaces inside a segment are fine.
        ok("/a.b/c%20d", "/a.b/c%20d");
    }

    #[test]
    fn p7_path_parameters_are_refused() {
        refused("/api/admin;x=y/users", "path_parameter");
        refused("/api/public/..;/admin/users", "path_parameter");
        refused("/api/public/..;foo=bar/admin", "path_parameter");
        refused("/user/..;foo=bar/admin", "path_parameter");
        refused("/api/admin%3bx=y", "path_parameter");
        refused("/api/admin%3B", "path_parameter");
    }

    #[test]
    fn p8_double_encoding_and_overlong_utf8_are_refused() {
        refused("/api/public/%252e%252e/admin", "path_double_encoding");
        refused("/a%25", "path_double_encoding");
        refused("/api/public/%c0%ae%c0%ae/admin", "path_invalid_encoding");
        refused("/%e0%80%ae", "path_invalid_encoding"); // overlong 3-byte '.'
        refused("/api/public/%u002e%u002e/admin", "path_invalid_encoding");
        refused("/%ff", "path_invalid_encoding");
        refused("/%80", "path_invalid_encoding"); // lone continuation byte
        refused("/%c3", "path_invalid_encoding"); // truncated
        refused("/%c3a", "path_invalid_encoding");
        refused("/%c3%28", "path_invalid_encoding"); // bad continuation
        refused("/%ed%a0%80", "path_invalid_encoding"); // surrogate
        refused("/%f4%90%80%80", "path_invalid_encoding"); // above U+10FFFF
        refused("/%2", "path_invalid_encoding");
        refused("/%zz", "path_invalid_encoding");
        refused("/%", "path_invalid_encoding");
        // Raw fullwidth ．．／ is non-ASCII: refused. Encoded, it is valid UTF-8 and stays encoded.
        refused(
            "/api/public/\u{FF0E}\u{FF0E}\u{FF0F}admin",
            "path_forbidden_character",
        );
        ok("/%ef%bc%8e%ef%bc%8e", "/%EF%BC%8E%EF%BC%8E");
        ok("/caf%c3%a9", "/caf%C3%A9");
        ok("/%f0%9f%a6%80", "/%F0%9F%A6%80");
    }

    #[test]
    fn p9_fragments_are_refused() {
        refused("/api/public/#/../admin/users", "path_forbidden_character");
        refused("/api/public%23/../admin", "path_encoded_fragment");
    }

    #[test]
    fn p10_encoded_control_bytes_are_refused() {
        refused("/api/admin%00/users", "path_encoded_control");
        refused("/api/admin%0a", "path_encoded_control");
        refused("/api/admin%0D%0A", "path_encoded_control");
        refused("/api/admin%1f", "path_encoded_control");
        refused("/api/admin%7f", "path_encoded_control");
        refused("/api/admin\0", "path_forbidden_character");
        refused("/api/admin\n", "path_forbidden_character");
        refused("/api/admin\x7f", "path_forbidden_character");
    }

    #[test]
    fn p11_non_absolute_targets_are_refused() {
        refused("", "path_not_absolute");
        refused("*", "path_not_absolute");
        refused("api/admin", "path_not_absolute");
        refused("@evil/api/admin", "path_not_absolute");
        refused("http://internal-host/api/admin", "path_not_absolute");
    }

    #[test]
    fn forbidden_raw_characters_are_refused() {
        for c in [
            ' ', '"', '<', '>', '^', '`', '{', '|', '}', '[', ']', '#', '\t', 'é',
        ] {
            let raw = format!("/a{c}b");
            refused(&raw, "path_forbidden_character");
        }
        ok("/a!$&'()*+,=:@b", "/a!$&'()*+,=:@b");
    }

    #[test]
    fn unreserved_characters_are_decoded() {
        ok("/api/%61dmin", "/api/admin");
        ok("/%7euser", "/~user");
        ok("/%7Euser", "/~user");
        ok("/a%2db%5fc", "/a-b_c");
        ok("/v%31", "/v1");
        ok("/%41%5A%61%7A%30%39", "/AZaz09");
    }

    #[test]
    fn reserved_encodings_keep_encoded_with_upper_hex() {
        ok("/a%3ab", "/a%3Ab");
        ok("/a%3Ab", "/a%3Ab");
        ok("/a%40b%2c", "/a%40b%2C");
        ok("/a%20b", "/a%20b");
        ok("/%5b%5d%7b%7d", "/%5B%5D%7B%7D");
        ok("/x%3F", "/x%3F");
        ok("/%c3%a9t%c3%a9/", "/%C3%A9t%C3%A9/");
    }

    #[test]
    fn limits_are_enforced() {
        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES - 1));
        ok(&long, &long);
        refused(&format!("{long}a"), "path_too_long");
        let many = "/a".repeat(MAX_SEGMENTS);
        ok(&many, &many);
        refused(&format!("{many}/a"), "path_too_long");
        // Empty segments count too: they are bytes the client sent.
        refused(&"/".repeat(MAX_SEGMENTS + 1), "path_too_long");
        ok(&"/".repeat(MAX_SEGMENTS), "/");
    }

    #[test]
    fn codes_are_stable_and_messages_never_quote_the_path() {
        let all = [
            (PathError::NotAbsolute, "path_not_absolute"),
            (PathError::TooLong, "path_too_long"),
            (PathError::ForbiddenCharacter, "path_forbidden_character"),
            (PathError::Backslash, "path_backslash"),
            (PathError::PathParameter, "path_parameter"),
            (PathError::InvalidEncoding, "path_invalid_encoding"),
            (PathError::EncodedSeparator, "path_encoded_separator"),
            (PathError::EncodedDot, "path_encoded_dot"),
            (PathError::DoubleEncoding, "path_double_encoding"),
            (PathError::EncodedControl, "path_encoded_control"),
            (PathError::EncodedFragment, "path_encoded_fragment"),
            (PathError::EscapesRoot, "path_escapes_root"),
            (PathError::AmbiguousSegment, "path_ambiguous_segment"),
        ];
        for (i, (e, code)) in all.iter().enumerate() {
            assert_eq!(e.code(), *code);
            assert_eq!(e.to_string(), e.message());
            assert!(e.message().ends_with('.'), "{code}");
            for (other, _) in all.iter().skip(i + 1) {
                assert_ne!(e.message(), other.message());
            }
        }
    }

    #[test]
    fn canonical_form_is_idempotent() {
        for raw in [
            "/api/public/../admin/users",
            "//api//admin///users/",
            "/%61%2d%7e/%3a%c3%a9",
            "/a/b/..",
            "/a/./b/.",
            "/x/../y//z/",
            "/",
            "/.",
        ] {
            let once = canon(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
            let twice = canonical_path(&once);
            assert!(
                matches!(&twice, Ok(Cow::Borrowed(s)) if *s == once),
                "{raw:?} -> {once:?} -> {twice:?}"
            );
        }
    }

    /// splitmix64: deterministic, no crates.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// An independent, allocation-happy model of the rewriting rules, for accepted inputs.
    fn model(raw: &str) -> String {
        let mut stack: Vec<String> = Vec::new();
        let parts: Vec<&str> = raw[1..].split('/').collect();
        for part in &parts {
            match *part {
                "" | "." => {}
                ".." => {
                    stack.pop();
                }
                seg => {
                    let mut s = String::new();
                    let mut chars = seg.chars();
                    while let Some(c) = chars.next() {
                        if c == '%' {
                            let hex: String = chars.by_ref().take(2).collect();
                            let v = u8::from_str_radix(&hex, 16).unwrap();
                            if v.is_ascii_alphanumeric() || "-_~".contains(char::from(v)) {
                                s.push(char::from(v));
                            } else {
                                s.push('%');
                                s.push_str(&hex.to_ascii_uppercase());
                            }
                        } else {
                            s.push(c);
                        }
                    }
                    stack.push(s);
                }
            }
        }
        let mut out = format!("/{}", stack.join("/"));
        let last = parts.last().copied().unwrap();
        if matches!(last, "" | "." | "..") && !stack.is_empty() {
            out.push('/');
        }
        out
    }

    fn assert_invariants(raw: &str, out: Cow<'_, str>) {
        let borrowed = matches!(out, Cow::Borrowed(_));
        let s: &str = &out;
        assert!(s.starts_with('/'), "{raw:?} -> {s:?}");
        assert!(!s.contains("//"), "{raw:?} -> {s:?}");
        assert!(s.len() <= raw.len(), "{raw:?} -> {s:?}");
        for seg in s.split('/') {
            assert!(seg != "." && seg != "..", "{raw:?} -> {s:?}");
            assert!(
                !seg.ends_with('.') && !seg.ends_with("%20"),
                "{raw:?} -> {s:?}"
            );
        }
        for bad in [";", "\\", "#", "%2F", "%5C", "%2E", "%25", "%3B", "%23"] {
            assert!(!s.to_ascii_uppercase().contains(bad), "{raw:?} -> {s:?}");
        }
        assert!(s.is_ascii(), "{raw:?} -> {s:?}");
        // Borrowed exactly when nothing changed.
        assert_eq!(borrowed, s == raw, "{raw:?} -> {s:?}");
        assert_eq!(s, model(raw), "{raw:?}");
        let again = canonical_path(s);
        assert!(
            matches!(&again, Ok(Cow::Borrowed(t)) if *t == s),
            "not idempotent: {raw:?} -> {s:?} -> {again:?}"
        );
    }

    #[test]
    fn generated_paths_never_panic_and_outputs_are_canonical() {
        const PIECES: &[&str] = &[
            "/",
            "/",
            "/",
            "//",
            ".",
            "..",
            "/.",
            "/..",
            "a",
            "B",
            "api",
            "admin",
            "~",
            "-",
            "_",
            "!",
            "=",
            "@",
            ":",
            "%41",
            "%61",
            "%7e",
            "%7E",
            "%2d",
            "%3a",
            "%3A",
            "%20",
            "%40",
            "%2e",
            "%2E",
            "%2f",
            "%2F",
            "%5c",
            "%5C",
            "%25",
            "%00",
            "%0a",
            "%09",
            "%7f",
            "%3b",
            "%23",
            "%c3%a9",
            "%C3%A9",
            "%ef%bc%8e",
            "%c0%ae",
            "%80",
            "%ff",
            "%c3",
            "%",
            "%2",
            "%zz",
            "%u002e",
            ";",
            "\\",
            "#",
            " ",
            "é",
            "\u{FF0E}",
            "\0",
            "?",
        ];
        let mut rng = Rng(0x5EED_0CA7);
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..50_000 {
            let mut raw = String::new();
            if rng.below(10) != 0 {
                raw.push('/');
            }
            for _ in 0..rng.below(12) {
                raw.push_str(PIECES[rng.below(PIECES.len())]);
            }
            match canonical_path(&raw) {
                Ok(out) => {
                    accepted += 1;
                    assert_invariants(&raw, out);
                }
                Err(e) => {
                    refused += 1;
                    assert!(e.code().starts_with("path_"));
                }
            }
        }
        // The generator must exercise both outcomes for the loop to mean anything.
        assert!(
            accepted > 5_000 && refused > 5_000,
            "{accepted} / {refused}"
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(42);
        for _ in 0..20_000 {
            let len = rng.below(24);
            let mut bytes = vec![b'/'];
            bytes.extend((0..len).map(|_| {
                // Bias towards the interesting ASCII bytes.
                let pick = rng.below(4);
                if pick == 0 {
                    (rng.next() & 0xFF) as u8
                } else {
                    b"/.%2eEfF0a;#\\"[rng.below(13)]
                }
            }));
            let raw = String::from_utf8_lossy(&bytes);
            if let Ok(out) = canonical_path(&raw) {
                assert_invariants(&raw, out);
            }
        }
    }
}
