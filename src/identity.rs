//! Header hygiene between the client and the backend: what the gateway removes from a
//! request before it is forwarded, the proxy headers it sets, and the identity it asserts.
//!
//! The gateway owns the identity namespace: `X-User-*`, `X-Auth-*`, `X-Tenant-ID` and
//! `X-Client-ID`, in any case and with `_` or `.` in place of `-` (`x_user_id`, `X.User.ID`),
//! however many times sent. Every such header from the client is removed on every route,
//! public or not, before the verified identity (if any) is added.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection and are never forwarded:
//! `Connection`, `Keep-Alive`, `Proxy-Connection`, `Proxy-Authorization`, `TE`, `Trailer`,
//! `Upgrade`, and every header the client's `Connection` header names. A client cannot use
//! `Connection` to remove the headers that frame or route the request (`Host`,
//! `Content-Length`, `Transfer-Encoding`) nor the ones the gateway itself sets: such a request
//! is ambiguous and is rejected with 400 `invalid_connection_header` before routing.
//! (WebSocket upgrades are therefore not proxied yet.)

use http::header::{HeaderName, CONNECTION};
use pingora::http::RequestHeader;

/// Always removed before forwarding.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Never removable through a `Connection` nomination.
const PROTECTED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
];

/// `X-User-ID`, `x_user_id`, `X.USER.ID` all normalise to `x-user-id`.
fn normalised(b: u8) -> u8 {
    match b {
        b'_' | b'.' => b'-',
        _ => b.to_ascii_lowercase(),
    }
}

fn starts_normalised(name: &[u8], prefix: &[u8]) -> bool {
    name.len() >= prefix.len() && name.iter().zip(prefix).all(|(a, p)| normalised(*a) == *p)
}

/// Whether a header name belongs to the identity namespace the gateway owns. Runs for every
/// header of every request, so it compares in place instead of building a normalised copy.
pub fn is_identity_header(name: &str) -> bool {
    let n = name.as_bytes();
    let exact = |target: &[u8]| n.len() == target.len() && starts_normalised(n, target);
    starts_normalised(n, b"x-user-")
        || starts_normalised(n, b"x-auth-")
        || exact(b"x-tenant-id")
        || exact(b"x-client-id")
}

/// Remove every client-sent header of the identity namespace.
pub fn strip_identity_headers(req: &mut RequestHeader) {
    let forged: Vec<HeaderName> = req
        .headers
        .keys()
        .filter(|k| is_identity_header(k.as_str()))
        .cloned()
        .collect();
    for name in &forged {
        req.remove_header(name);
    }
}

/// Add the verified identity. Values were checked when the token was (no control
/// characters, no commas inside list items), so they are valid header values.
pub fn inject_identity(req: &mut RequestHeader, id: &crate::auth::Identity) -> pingora::Result<()> {
    req.insert_header("x-user-id", id.subject.as_str())?;
    req.insert_header("x-auth-method", id.method)?;
    if !id.provider.is_empty() {
        req.insert_header("x-auth-provider", id.provider.as_str())?;
    }
    for (name, values) in [
        ("x-user-roles", &id.roles),
        ("x-user-scopes", &id.scopes),
        ("x-user-permissions", &id.permissions),
    ] {
        if !values.is_empty() {
            req.insert_header(name, values.join(","))?;
        }
    }
    for (name, value) in [
        ("x-tenant-id", &id.tenant),
        ("x-user-email", &id.email),
        ("x-client-id", &id.client_id),
    ] {
        if let Some(v) = value {
            req.insert_header(name, v.as_str())?;
        }
    }
    for (name, value) in &id.extra {
        req.insert_header(name.clone(), value.as_str())?;
    }
    Ok(())
}

/// True when `Connection` names a header that must not be removable (see the module docs).
pub fn connection_nominates_protected(headers: &http::HeaderMap) -> bool {
    headers.get_all(CONNECTION).iter().any(|value| {
        value.as_bytes().split(|b| *b == b',').any(|token| {
            let token = token.trim_ascii();
            PROTECTED
                .iter()
                .any(|p| p.as_bytes().eq_ignore_ascii_case(token))
        })
    })
}

/// Remove hop-by-hop headers, including those named in `Connection`.
pub fn strip_hop_by_hop(req: &mut RequestHeader) {
    // Collect nominations first: the Connection header itself is about to go.
    let mut nominated: Vec<HeaderName> = Vec::new();
    for value in req.headers.get_all(CONNECTION) {
        for token in value.as_bytes().split(|b| *b == b',') {
            let token = token.trim_ascii();
            if token.is_empty() {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token) {
                if !PROTECTED.contains(&name.as_str()) && !nominated.contains(&name) {
                    nominated.push(name);
                }
            }
        }
    }
    for name in HOP_BY_HOP {
        // remove_header removes every instance of the header
        req.remove_header(*name);
    }
    for name in &nominated {
        req.remove_header(name);
    }
}

/// Append the client to `X-Forwarded-For` and set `X-Forwarded-Proto` and
/// `X-Forwarded-Host` (replacing whatever the client sent for those two).
pub fn set_forwarded(
    req: &mut RequestHeader,
    client_ip: Option<&str>,
    https: bool,
    host: Option<&str>,
) -> pingora::Result<()> {
    if let Some(ip) = client_ip {
        // Several X-Forwarded-For headers are one comma-separated list (RFC 9110 §5.3).
        let mut chain = String::new();
        for v in req.headers.get_all("x-forwarded-for") {
            if let Ok(s) = v.to_str() {
                let s = s.trim();
                if !s.is_empty() {
                    chain.push_str(s);
                    chain.push_str(", ");
                }
            }
        }
        chain.push_str(ip);
        req.insert_header("x-forwarded-for", chain)?;
    }
    req.insert_header("x-forwarded-proto", if https { "https" } else { "http" })?;
    match host {
        Some(h) => req.insert_header("x-forwarded-host", h.to_string())?,
        None => {
            req.remove_header("x-forwarded-host");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn connection_nominated_headers_are_removed_but_framing_is_protected() {
        let mut r = req(&[
            ("Connection", "close, X-Secret, Content-Length"),
            ("Connection", "Host, x-other"),
            ("X-Secret", "1"),
            ("X-Other", "1"),
            ("Content-Length", "0"),
            ("Host", "a"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("X-Kept", "1"),
        ]);
        strip_hop_by_hop(&mut r);
        for gone in ["connection", "x-secret", "x-other", "keep-alive", "te"] {
            assert!(r.headers.get(gone).is_none(), "{gone} was forwarded");
        }
        for kept in ["content-length", "host", "x-kept"] {
            assert!(r.headers.get(kept).is_some(), "{kept} was removed");
        }
    }

    #[test]
    fn forged_identity_headers_are_removed_in_every_spelling() {
        let mut r = req(&[
            ("X-User-ID", "admin"),
            ("x_user_id", "admin"),
            ("X.User.ID", "admin"),
            ("X-USER-ROLES", "root"),
            ("x-auth-method", "jwt"),
            ("X-Tenant-Id", "other"),
            ("x_client_id", "c"),
            ("X-Userland", "kept"),
            ("X-Request-ID", "kept"),
        ]);
        strip_identity_headers(&mut r);
        let mut left: Vec<_> = r.headers.keys().map(|k| k.as_str().to_string()).collect();
        left.sort();
        assert_eq!(left, ["x-request-id", "x-userland"]);
    }

    #[test]
    fn nominating_a_protected_header_is_detected_in_any_case() {
        for v in [
            "close, Content-Length",
            "HOST",
            "keep-alive,x-forwarded-for",
            "X-Request-ID",
        ] {
            let r = req(&[("Connection", v)]);
            assert!(connection_nominates_protected(&r.headers), "{v}");
        }
        let r = req(&[("Connection", "close, x-user-id")]);
        assert!(!connection_nominates_protected(&r.headers));
    }

    #[test]
    fn forwarded_for_is_appended_and_proto_host_replaced() {
        let mut r = req(&[
            ("X-Forwarded-For", "1.1.1.1"),
            ("X-Forwarded-For", "2.2.2.2"),
            ("X-Forwarded-Proto", "https"),
        ]);
        set_forwarded(&mut r, Some("127.0.0.1"), false, Some("api.example.com")).unwrap();
        let xff: Vec<_> = r.headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff, ["1.1.1.1, 2.2.2.2, 127.0.0.1"]);
        assert_eq!(r.headers["x-forwarded-proto"], "http");
        assert_eq!(r.headers["x-forwarded-host"], "api.example.com");
    }
}
