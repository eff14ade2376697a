//! The signature base (RFC 9421 §2.5): the covered components' values, derived from the
//! request line or canonicalized from header fields, one per line, then `@signature-params`.
//! The same base is built when verifying and when signing.

use super::{malformed, SigError, SignedRequest};

/// Why a component value could not be produced; carries the component name for `sign`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ComponentError {
    Unsupported(String),
    Absent(String),
    Opaque(String),
}

impl ComponentError {
    pub(super) fn to_sig(&self) -> SigError {
        match self {
            ComponentError::Unsupported(_) => malformed("unsupported component"),
            ComponentError::Absent(_) => malformed("a covered field is absent from the request"),
            ComponentError::Opaque(_) => malformed("a covered value has non-ASCII bytes"),
        }
    }

    pub(super) fn describe(&self) -> String {
        match self {
            ComponentError::Unsupported(n) => format!("component {n:?} is not supported"),
            ComponentError::Absent(n) => {
                format!("covered header field {n:?} is absent from the request")
            }
            ComponentError::Opaque(n) => format!("component {n:?} has non-ASCII or control bytes"),
        }
    }
}

/// RFC 9421 §2.5: `"<name>": <value>\n` per component, then `"@signature-params": <params>`.
/// `digest` replaces the request's `content-digest` (used by `sign`, which computes it).
pub(super) fn build_base(
    req: &SignedRequest<'_>,
    components: &[String],
    params: &str,
    digest: Option<&str>,
) -> Result<String, ComponentError> {
    let mut base = String::new();
    for name in components {
        let value = component_value(req, name, digest)?;
        base.push('"');
        base.push_str(name);
        base.push_str("\": ");
        base.push_str(&value);
        base.push('\n');
    }
    base.push_str("\"@signature-params\": ");
    base.push_str(params);
    Ok(base)
}

/// The value of one covered component.
fn component_value(
    req: &SignedRequest<'_>,
    name: &str,
    digest: Option<&str>,
) -> Result<String, ComponentError> {
    if name.starts_with('@') {
        let value =
            derived_value(req, name).ok_or_else(|| ComponentError::Unsupported(name.into()))?;
        // Derived values come from the request line: no controls at all, ASCII only.
        if value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            Ok(value)
        } else {
            Err(ComponentError::Opaque(name.into()))
        }
    } else if let (Some(d), "content-digest") = (digest, name) {
        Ok(d.to_string())
    } else {
        header_value(req.headers, name)
    }
}

/// Derived components (RFC 9421 §2.2); `None` for an unsupported name.
pub(super) fn derived_value(req: &SignedRequest<'_>, name: &str) -> Option<String> {
    let scheme = req.scheme.to_ascii_lowercase();
    let path = if req.path.is_empty() { "/" } else { req.path };
    let query = req.query.map(|q| format!("?{q}")).unwrap_or_default();
    Some(match name {
        "@method" => req.method.to_string(),
        "@authority" => normalized_authority(&scheme, req.authority),
        "@scheme" => scheme,
        "@path" => path.to_string(),
        // RFC 9421 §2.2.7: an absent query is the lone "?".
        "@query" => format!("?{}", req.query.unwrap_or("")),
        "@request-target" => format!("{path}{query}"),
        "@target-uri" => format!(
            "{scheme}://{}{path}{query}",
            normalized_authority(&scheme, req.authority)
        ),
        _ => return None,
    })
}

/// Lower-case, without the scheme's default port (RFC 9421 §2.2.3).
pub(super) fn normalized_authority(scheme: &str, authority: &str) -> String {
    let lower = authority.to_ascii_lowercase();
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return lower,
    };
    match lower.strip_suffix(default_port) {
        Some(host) => host.to_string(),
        None => lower,
    }
}

/// A header component (RFC 9421 §2.1): every field line canonicalized, joined with `", "`.
fn header_value(headers: &http::HeaderMap, name: &str) -> Result<String, ComponentError> {
    let mut lines = Vec::new();
    for value in headers.get_all(name) {
        lines.push(
            canonical_field_line(value.as_bytes())
                .ok_or_else(|| ComponentError::Opaque(name.into()))?,
        );
    }
    if lines.is_empty() {
        return Err(ComponentError::Absent(name.into()));
    }
    Ok(lines.join(", "))
}

/// Trim SP/HTAB at both ends, replace obs-fold (OWS CRLF RWS) with one SP; `None` for any other
/// control or non-ASCII byte.
pub(super) fn canonical_field_line(bytes: &[u8]) -> Option<String> {
    let is_ws = |b: u8| b == b' ' || b == b'\t';
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'\r'
            && bytes.get(i + 1) == Some(&b'\n')
            && bytes.get(i + 2).is_some_and(|&c| is_ws(c))
        {
            out.truncate(out.trim_end_matches([' ', '\t']).len());
            out.push(' ');
            i += 2;
            while bytes.get(i).is_some_and(|&c| is_ws(c)) {
                i += 1;
            }
            continue;
        }
        if !(is_ws(b) || (0x21..0x7f).contains(&b)) {
            return None;
        }
        out.push(char::from(b));
        i += 1;
    }
    Some(out.trim_matches([' ', '\t']).to_string())
}
