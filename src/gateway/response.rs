//! Responses the gateway writes itself. Every one has a JSON body
//! `{"error": "<stable_code>", "message": "<human text>", "request_id": "<id>"}`,
//! `Content-Type: application/json`, `Cache-Control: no-store` and the request id header.
//! Messages never echo what the client sent.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use serde::Serialize;

/// A stable error code with its status and default message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorKind {
    pub status: u16,
    pub code: &'static str,
    pub message: &'static str,
}

pub const BAD_REQUEST: ErrorKind = ErrorKind {
    status: 400,
    code: "bad_request",
    message: "The request is malformed.",
};
pub const AMBIGUOUS_HOST: ErrorKind = ErrorKind {
    status: 400,
    code: "ambiguous_host",
    message:
        "The request names more than one host (two Host headers, or a target for another host).",
};
/// A resumed TLS session whose client certificate was revoked (or expired) since.
pub const CLIENT_CERT_REVOKED: ErrorKind = ErrorKind {
    status: 401,
    code: "client_cert_revoked",
    message:
        "The client certificate of this TLS session has been revoked or has expired; reconnect.",
};
/// A signed request's body is larger than the gateway buffers to verify it.
pub const SIGNED_BODY_TOO_LARGE: ErrorKind = ErrorKind {
    status: 413,
    code: "signed_body_too_large",
    message: "The body of a signed request may be at most 65536 bytes.",
};
/// A signed request's body did not arrive in time.
pub const BODY_TIMEOUT: ErrorKind = ErrorKind {
    status: 408,
    code: "body_timeout",
    message: "The request body did not arrive in time.",
};
/// The `Host` names another server than the TLS connection was made for (SNI).
pub const MISDIRECTED: ErrorKind = ErrorKind {
    status: 421,
    code: "misdirected_request",
    message: "This connection was made for another host name; connect to the one you address.",
};
pub const INVALID_CONNECTION_HEADER: ErrorKind = ErrorKind {
    status: 400,
    code: "invalid_connection_header",
    message: "The Connection header names a header that frames or identifies the request.",
};
pub const INTERNAL_ERROR: ErrorKind = ErrorKind {
    status: 500,
    code: "internal_error",
    message: "The gateway failed to handle the request.",
};
pub const UPSTREAM_UNREACHABLE: ErrorKind = ErrorKind {
    status: 502,
    code: "upstream_unreachable",
    message: "The upstream service could not be reached.",
};
pub const BAD_GATEWAY: ErrorKind = ErrorKind {
    status: 502,
    code: "bad_gateway",
    message: "The upstream service sent an invalid response or closed the connection.",
};
pub const NO_HEALTHY_UPSTREAM: ErrorKind = ErrorKind {
    status: 503,
    code: "no_healthy_upstream",
    message: "No healthy backend is available for this route.",
};
pub const UPSTREAM_TIMEOUT: ErrorKind = ErrorKind {
    status: 504,
    code: "upstream_timeout",
    message: "The upstream service did not answer in time.",
};

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
    request_id: &'a str,
}

pub fn json_body(code: &str, message: &str, request_id: &str) -> Bytes {
    let body = Body {
        error: code,
        message,
        request_id,
    };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// Write `kind` as the complete response. `extra` headers are added as given.
pub async fn write_error(
    session: &mut Session,
    kind: &ErrorKind,
    request_id: &str,
    extra: &[(&'static str, String)],
) -> pingora::Result<()> {
    write_error_message(session, kind, kind.message, request_id, extra).await
}

/// Like `write_error`, with a message of its own (e.g. what a 403 required).
pub async fn write_error_message(
    session: &mut Session,
    kind: &ErrorKind,
    message: &str,
    request_id: &str,
    extra: &[(&'static str, String)],
) -> pingora::Result<()> {
    let body = json_body(kind.code, message, request_id);
    let mut resp = ResponseHeader::build(kind.status, Some(5 + extra.len()))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    resp.insert_header(crate::request_id::HEADER, request_id)?;
    for (name, value) in extra {
        resp.insert_header(*name, value.as_str())?;
    }
    // A request body we did not read would be taken for the next request.
    if !session.is_body_empty() && !session.is_body_done() {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_the_documented_json() {
        let b = json_body(NO_HEALTHY_UPSTREAM.code, NO_HEALTHY_UPSTREAM.message, "abc");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"], "no_healthy_upstream");
        assert_eq!(v["request_id"], "abc");
        assert!(v["message"].as_str().unwrap().len() > 5);
    }
}
