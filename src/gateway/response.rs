//! Responses the gateway writes itself. Every one has a JSON body
//! `{"error": "<stable_code>", "message": "<human text>", "request_id": "<id>"}`,
//! `Content-Type: application/json`, `Cache-Control: no-store` and the request id header.
//! Messages never echo what the client sent.
//!
//! Refusals the engine decides are `policy::Denial`s (`write_refusal`); the constants here
//! are the gateway's own answers when proxying fails (no backend, timeouts, bad gateway).
//!
//! A gRPC client (`content-type: application/grpc`, with or without a `+format` suffix) reads
//! a call's outcome from `grpc-status`, not from the HTTP status, and no JSON body. It gets
//! the same answer as gRPC's Trailers-Only response: HTTP 200, `content-type:
//! application/grpc`, `grpc-status` from `grpc_status` and `grpc-message` with the stable code
//! and the message (percent-encoded as gRPC's wire format says), in one header block that
//! ends the stream; the other headers (the request id, `WWW-Authenticate`, `Retry-After`, the
//! rate-limit and CORS headers) are kept beside them.

use crate::policy::Denial;
pub use crate::policy::{ErrorKind, BODY_TIMEOUT};
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::proxy::Session;
use serde::Serialize;

pub const BAD_REQUEST: ErrorKind = ErrorKind {
    status: 400,
    code: "bad_request",
    message: "The request is malformed.",
};
/// The client sent more bytes after a request whose end was already read, before it was
/// answered: a pipelined next request, or a body the request's head did not announce. Pingora
/// does not serve pipelined requests and ends the request in flight (threat S10).
pub const PIPELINED_REQUEST: ErrorKind = ErrorKind {
    status: 400,
    code: "pipelined_request",
    message: "More was sent before the previous request was answered; send each request after the previous answer.",
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

pub const REQUEST_HEADER_TIMEOUT: ErrorKind = ErrorKind {
    status: 408,
    code: "request_header_timeout",
    message: "The request head did not arrive in time.",
};
pub const REQUEST_HEADER_TOO_LARGE: ErrorKind = ErrorKind {
    status: 431,
    code: "request_header_too_large",
    message: "The request head, or one of its header fields, is too large.",
};
pub const URI_TOO_LONG: ErrorKind = ErrorKind {
    status: 414,
    code: "uri_too_long",
    message: "The request target is too long.",
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

/// `kind` as a whole HTTP/1.1 response that ends the connection, for answers written on
/// the connection itself, before Pingora has a request to answer.
pub fn http1_closing(kind: &ErrorKind, request_id: &str) -> Vec<u8> {
    let body = json_body(kind.code, kind.message, request_id);
    let reason = http::StatusCode::from_u16(kind.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\n{}: {request_id}\r\nconnection: close\r\n\r\n",
        kind.status,
        body.len(),
        crate::request_id::HEADER,
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Write `kind` as the complete response.
pub async fn write_error(
    session: &mut Session,
    kind: &ErrorKind,
    request_id: &str,
) -> pingora::Result<()> {
    write_json(
        session,
        kind.status,
        kind.code,
        kind.message,
        request_id,
        std::iter::empty(),
    )
    .await
}

/// Write a refusal as the complete response: its status, code, message and headers; or, for
/// a ForwardAuth service's refusal, that service's own answer (except to a gRPC client, which
/// gets the gRPC status of its HTTP status).
pub async fn write_refusal(
    session: &mut Session,
    d: &Denial,
    request_id: &str,
) -> pingora::Result<()> {
    if let Some(answer) = d.answer.as_deref().filter(|_| !is_grpc(session)) {
        let mut resp = ResponseHeader::build(d.status, Some(answer.headers.len() + 4))?;
        for (name, value) in answer.headers.iter().cloned().chain(d.headers()) {
            resp.insert_header(name, value)?;
        }
        resp.insert_header("content-length", answer.body.len().to_string())?;
        resp.insert_header(crate::request_id::HEADER, request_id)?;
        if !session.is_body_empty() && !session.is_body_done() {
            session.set_keepalive(None);
        }
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(answer.body.clone()), true)
            .await?;
        return Ok(());
    }
    write_json(
        session,
        d.status,
        d.code,
        &d.message,
        request_id,
        d.headers(),
    )
    .await
}

/// The gateway's answer to an allowed CORS preflight: `204`, its CORS headers, no body.
pub async fn write_preflight(
    session: &mut Session,
    headers: &[(&'static str, String)],
    request_id: &str,
) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(204, Some(headers.len() + 1))?;
    resp.insert_header(crate::request_id::HEADER, request_id)?;
    for (name, value) in headers {
        resp.insert_header(*name, value.as_str())?;
    }
    if !session.is_body_empty() && !session.is_body_done() {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), true).await?;
    Ok(())
}

/// The gRPC status code for a refusal or error of HTTP status `status`: gRPC's own mapping of
/// HTTP statuses (`doc/http-grpc-status-mapping.md`: 400 → INTERNAL, 401 → UNAUTHENTICATED,
/// 403 → PERMISSION_DENIED, 404 → UNIMPLEMENTED, 502–504 → UNAVAILABLE, others → UNKNOWN),
/// except for the statuses the gateway gives a meaning of its own: 429 (a rate limit) and the
/// size limits (413, 414, 431) are RESOURCE_EXHAUSTED, 408 (a body too slow) is
/// DEADLINE_EXCEEDED and 500 (the gateway's own failure) is INTERNAL.
pub fn grpc_status(status: u16) -> u8 {
    match status {
        400 | 500 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        408 => 4,
        413 | 414 | 429 | 431 => 8,
        502..=504 => 14,
        _ => 2,
    }
}

/// Whether the request is a gRPC call, by its `content-type`.
fn is_grpc(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| is_grpc_content_type(v.as_bytes()))
}

/// `application/grpc`, alone or with a `+format` suffix or parameters, in any case.
pub fn is_grpc_content_type(v: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    v.len() >= GRPC.len()
        && v[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(v.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// Bytes gRPC's `grpc-message` carries percent-encoded: `%` itself and all but printable
/// ASCII (non-ASCII is always encoded).
const GRPC_MESSAGE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

/// The `grpc-message` of a refusal: the stable code, then the message.
fn grpc_message(code: &str, message: &str) -> String {
    let text = format!("{code}: {message}");
    percent_encoding::utf8_percent_encode(&text, GRPC_MESSAGE).to_string()
}

async fn write_json(
    session: &mut Session,
    status: u16,
    code: &str,
    message: &str,
    request_id: &str,
    extra: impl Iterator<Item = (&'static str, String)>,
) -> pingora::Result<()> {
    let grpc = is_grpc(session);
    let body = (!grpc).then(|| json_body(code, message, request_id));
    let mut resp = ResponseHeader::build(if grpc { 200 } else { status }, Some(8))?;
    match &body {
        Some(body) => {
            resp.insert_header("content-type", "application/json")?;
            resp.insert_header("content-length", body.len().to_string())?;
        }
        // gRPC's Trailers-Only response (see the module docs).
        None => {
            resp.insert_header("content-type", "application/grpc")?;
            resp.insert_header("grpc-status", grpc_status(status).to_string())?;
            resp.insert_header("grpc-message", grpc_message(code, message))?;
        }
    }
    resp.insert_header("cache-control", "no-store")?;
    resp.insert_header(crate::request_id::HEADER, request_id)?;
    for (name, value) in extra {
        resp.insert_header(name, value)?;
    }
    // A request body we did not read would be taken for the next request.
    if !session.is_body_empty() && !session.is_body_done() {
        session.set_keepalive(None);
    }
    match (body, session.downstream_session.as_mut()) {
        (Some(body), _) => {
            session.write_response_header(Box::new(resp), false).await?;
            session.write_response_body(Some(body), true).await?;
        }
        // Pingora's session API ends an HTTP/2 stream with a DATA frame of its own after the
        // headers, which a gRPC client takes for a response without a status ("Stream
        // removed"); the HTTP/2 session itself can end the stream on the headers.
        (None, ServerSession::H2(h2)) => h2.write_response_header(Box::new(resp), true)?,
        (None, _) => session.write_response_header(Box::new(resp), true).await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_encoded_as_grpc_says() {
        assert_eq!(
            grpc_message("rate_limited", "100% used; wait \u{e9}"),
            "rate_limited: 100%25 used; wait %C3%A9"
        );
        assert_eq!(grpc_message("x", "a\r\nb"), "x: a%0D%0Ab");
    }

    #[test]
    fn grpc_calls_are_told_by_their_content_type() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC;x=1",
        ] {
            assert!(is_grpc_content_type(yes.as_bytes()), "{yes}");
        }
        for no in [
            "application/grpc-web",
            "application/grpcx",
            "application/json",
            "",
        ] {
            assert!(!is_grpc_content_type(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn each_refusal_status_has_its_grpc_code() {
        for (http, grpc) in [
            (400, 13),
            (401, 16),
            (403, 7),
            (404, 12),
            (408, 4),
            (413, 8),
            (429, 8),
            (431, 8),
            (500, 13),
            (502, 14),
            (503, 14),
            (504, 14),
            (405, 2),
        ] {
            assert_eq!(grpc_status(http), grpc, "HTTP {http}");
        }
    }

    #[test]
    fn body_is_the_documented_json() {
        let b = json_body(NO_HEALTHY_UPSTREAM.code, NO_HEALTHY_UPSTREAM.message, "abc");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"], "no_healthy_upstream");
        assert_eq!(v["request_id"], "abc");
        assert!(v["message"].as_str().unwrap().len() > 5);
    }

    #[test]
    fn a_closing_answer_is_one_parseable_response_with_the_json_body() {
        let raw = http1_closing(&URI_TOO_LONG, "r1");
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head) = resp.parse(&raw).unwrap() else {
            panic!("incomplete head");
        };
        assert_eq!(resp.code, Some(414));
        let connection = resp
            .headers
            .iter()
            .find(|h| h.name == "connection")
            .unwrap();
        assert_eq!(connection.value, b"close");
        let v: serde_json::Value = serde_json::from_slice(&raw[head..]).unwrap();
        assert_eq!(v["error"], "uri_too_long");
        assert_eq!(v["request_id"], "r1");
    }
}
