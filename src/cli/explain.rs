//! `portcullis explain`: what the gateway would do with one request, step by step, using the
//! same engine as the proxy (keys fetched live from `jwks_uri`s). For testing policies in CI
//! before they are deployed: exit status 0 when the request would be forwarded, 3 when it
//! would be refused.

use crate::app::App;
use crate::engine::{Decision, RequestFacts};
use crate::forward;
use crate::policy::Trace;
use crate::request_id;
use crate::unix_now;
use serde_json::{json, Value};
use std::net::IpAddr;

pub struct Request {
    pub method: String,
    /// `/path?query`, or `http(s)://host/path?query` (an absolute-form target, as a proxy
    /// client sends it: the host is its authority).
    pub url: String,
    /// `Name: value` lines.
    pub headers: Vec<String>,
    pub peer: IpAddr,
    /// The TLS server name, as an mTLS listener sees it.
    pub sni: Option<String>,
}

/// The explanation as JSON (the text form is rendered from it).
pub fn explain(app: &App, req: &Request) -> Result<Value, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    rt.block_on(explain_async(app, req))
}

/// `(authority, target)` of a URL or an origin-form target.
pub fn split_url(url: &str) -> Result<(Option<&str>, &str), String> {
    for scheme in ["http://", "https://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let at = rest.find(['/', '?']).unwrap_or(rest.len());
            let (host, target) = rest.split_at(at);
            let target = if target.is_empty() { "/" } else { target };
            return Ok((Some(host), target));
        }
    }
    if url.starts_with('/') {
        return Ok((None, url));
    }
    Err(format!("\"{url}\": give a path (/a/b?c) or an http(s) URL"))
}

async fn explain_async(app: &App, req: &Request) -> Result<Value, String> {
    let method = http::Method::from_bytes(req.method.as_bytes())
        .map_err(|_| format!("\"{}\" is not an HTTP method", req.method))?;
    let (authority, target) = split_url(&req.url)?;
    let mut headers = super::parse_headers(&req.headers)?;
    // An HTTP/1.1 client sends `Host` with an absolute-form target too; a different one given
    // with -H is refused as the proxy refuses it.
    if let (Some(h), false) = (authority, headers.contains_key(http::header::HOST)) {
        let v = http::HeaderValue::from_str(h).map_err(|_| format!("bad host \"{h}\""))?;
        headers.insert(http::header::HOST, v);
    }

    // Keys first, as the running gateway has them before it is ready.
    let key_problems: Vec<String> = app
        .fetch_keys()
        .await
        .into_iter()
        .map(|p| format!("{p}: keys could not be fetched"))
        .collect();
    let now = unix_now();
    let mut facts = RequestFacts::new(&method, target.as_bytes(), &headers, Some(req.peer), now);
    facts.authority = authority;
    facts.sni = req.sni.as_deref();
    facts.https = req.sni.is_some();
    // `explain` takes no body: a signed request is checked as bodiless.
    facts.body = Some(b"");
    let mut trace = Trace::on();
    let decision = app.engine.decide(&facts, &mut trace).await;
    let steps: Vec<Value> = trace
        .steps
        .iter()
        .map(|(check, result)| json!({"check": check, "outcome": result}))
        .collect();
    let upstream_name = |r: &crate::routing::Route| app.upstream_name(r.upstream);
    let route_json = |r: &crate::routing::Route| json!({"name": r.name, "upstream": upstream_name(r), "mode": r.auth.mode.label()});
    let request =
        json!({"method": method.as_str(), "target": target, "client": req.peer.to_string()});

    let f = match decision {
        Decision::Forward(f) => f,
        Decision::Refuse(r) => {
            let d = &r.denial;
            let h: serde_json::Map<String, Value> = d
                .headers()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
            return Ok(json!({
                "request": request,
                "canonical_path": r.path.as_deref(),
                "route": r.route.as_deref().map(route_json),
                "client_ip": r.client_ip.map(|ip| ip.to_string()),
                "steps": steps,
                "decision": {"forward": false, "status": d.status, "error": d.code,
                             "message": d.message, "headers": h},
                "report_mode_would_refuse": Value::Null,
                "upstream_request": Value::Null,
                "key_problems": key_problems,
            }));
        }
        Decision::Preflight(p) => {
            let h: serde_json::Map<String, Value> = p
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
            return Ok(json!({
                "request": request,
                "canonical_path": p.path,
                "route": route_json(&p.route),
                "client_ip": p.client_ip.map(|ip| ip.to_string()),
                "steps": steps,
                "decision": {"forward": false, "preflight": true, "status": 204,
                             "error": "cors_preflight",
                             "message": "a CORS preflight from an allowed origin, answered by the gateway",
                             "headers": h},
                "report_mode_would_refuse": Value::Null,
                "upstream_request": Value::Null,
                "key_problems": key_problems,
            }));
        }
        Decision::NeedsBody => return Err("the engine asked for a body it was given".into()),
    };

    let mut up = pingora::http::RequestHeader::build(method.clone(), target.as_bytes(), None)
        .map_err(|e| format!("cannot build the request: {e}"))?;
    for (name, value) in &headers {
        up.append_header(name.clone(), value.clone())
            .map_err(|e| format!("header {name}: {e}"))?;
    }
    let request_id = request_id::from_headers(&headers);
    forward::prepare(&mut up, &f, &app.forward, &request_id, now).map_err(|e| e.to_string())?;
    let upstream_headers: Vec<Value> = up
        .headers
        .iter()
        .map(|(n, v)| {
            let value = if n == http::header::AUTHORIZATION {
                // The caller's own credential: shown as present, never printed.
                "<redacted>".to_string()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            json!([n.as_str(), value])
        })
        .collect();
    let canonical = match f.target.as_deref() {
        Some(t) => t.split_once('?').map_or(t, |(p, _)| p),
        None => target.split_once('?').map_or(target, |(p, _)| p),
    };
    Ok(json!({
        "request": request,
        "canonical_path": canonical,
        "route": route_json(&f.route),
        "client_ip": f.client_ip.map(|ip| ip.to_string()),
        "steps": steps,
        "decision": {"forward": true, "upstream": upstream_name(&f.route)},
        "report_mode_would_refuse": f.reported.as_ref().map(|d| json!({"status": d.status, "error": d.code, "message": d.message})),
        "upstream_request": {
            "method": method.as_str(),
            "target": String::from_utf8_lossy(up.raw_path()),
            "headers": upstream_headers,
        },
        "key_problems": key_problems,
    }))
}

/// The explanation for people.
pub fn render_text(v: &Value) -> String {
    let mut out = String::new();
    let s = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let line = |out: &mut String, k: &str, val: String| {
        out.push_str(&format!("{k:<16}{val}\n"));
    };
    line(
        &mut out,
        "request",
        format!(
            "{} {}",
            s(&v["request"]["method"]),
            s(&v["request"]["target"])
        ),
    );
    line(&mut out, "canonical path", s(&v["canonical_path"]));
    match v["route"].as_object() {
        Some(r) => line(
            &mut out,
            "route",
            format!(
                "{} (upstream {}, {} mode)",
                s(&r["name"]),
                s(&r["upstream"]),
                s(&r["mode"])
            ),
        ),
        None => line(&mut out, "route", "none".into()),
    }
    line(&mut out, "client", s(&v["client_ip"]));
    for p in v["key_problems"].as_array().into_iter().flatten() {
        line(&mut out, "warning", s(p));
    }
    out.push_str("checks\n");
    for step in v["steps"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<34}{}\n",
            s(&step["check"]),
            s(&step["outcome"])
        ));
    }
    let d = &v["decision"];
    if d["forward"] == json!(true) {
        line(
            &mut out,
            "decision",
            format!("forward to upstream {}", s(&d["upstream"])),
        );
    } else {
        line(
            &mut out,
            "decision",
            format!(
                "{} {}: {}",
                s(&d["status"]),
                s(&d["error"]),
                s(&d["message"])
            ),
        );
        for (k, val) in d["headers"].as_object().into_iter().flatten() {
            line(&mut out, "", format!("{k}: {}", s(val)));
        }
    }
    if let Some(r) = v["report_mode_would_refuse"].as_object() {
        line(
            &mut out,
            "report mode",
            format!(
                "would refuse with {} {}: {}",
                s(&r["status"]),
                s(&r["error"]),
                s(&r["message"])
            ),
        );
    }
    if let Some(u) = v["upstream_request"].as_object() {
        out.push_str("upstream request\n");
        out.push_str(&format!("  {} {}\n", s(&u["method"]), s(&u["target"])));
        for h in u["headers"].as_array().into_iter().flatten() {
            out.push_str(&format!("  {}: {}\n", s(&h[0]), s(&h[1])));
        }
    }
    out
}
