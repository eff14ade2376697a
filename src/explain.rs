//! `portcullis explain`: what the gateway would do with one request, step by step, using the
//! same engine as the proxy (keys fetched live from `jwks_uri`s). For testing policies in CI
//! before they are deployed: exit status 0 when the request would be forwarded, 3 when it
//! would be refused.

use crate::config::Config;
use crate::gateway::proxy::{prepare_upstream_request, UpstreamView};
use crate::policy::engine::{Engine, RequestFacts};
use crate::policy::Trace;
use crate::unix_now;
use serde_json::{json, Value};
use std::net::IpAddr;

pub struct Request {
    pub method: String,
    /// `/path?query`, or `http(s)://host/path?query` (the host then becomes `Host`).
    pub url: String,
    /// `Name: value` lines.
    pub headers: Vec<String>,
    pub peer: IpAddr,
}

/// The explanation as JSON (the text form is rendered from it).
pub fn explain(config: &Config, req: &Request) -> Result<Value, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    rt.block_on(explain_async(config, req))
}

fn split_url(url: &str) -> Result<(Option<&str>, &str), String> {
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

async fn explain_async(config: &Config, req: &Request) -> Result<Value, String> {
    let method = http::Method::from_bytes(req.method.as_bytes())
        .map_err(|_| format!("\"{}\" is not an HTTP method", req.method))?;
    let (url_host, target) = split_url(&req.url)?;
    let mut headers = http::HeaderMap::new();
    for line in &req.headers {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("-H \"{line}\": expected `Name: value`"))?;
        let name = http::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("-H \"{line}\": not a header name"))?;
        let value = http::HeaderValue::from_str(value.trim())
            .map_err(|_| format!("-H \"{line}\": not a header value"))?;
        headers.append(name, value);
    }
    if let (Some(h), false) = (url_host, headers.contains_key(http::header::HOST)) {
        let v = http::HeaderValue::from_str(h).map_err(|_| format!("bad host \"{h}\""))?;
        headers.insert(http::header::HOST, v);
    }

    // Keys first, as the running gateway has them before it is ready.
    let mut key_problems = Vec::new();
    for p in &config.providers {
        if let crate::auth::provider::KeySource::Remote(r) = &p.keys {
            r.refresh().await;
            if !r.ready() {
                key_problems.push(format!("{}: keys could not be fetched", p.name));
            }
        }
    }
    let engine = Engine::from_config(config);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let facts = RequestFacts {
        client_cert: None,
        https: false,
        // `explain` takes no body: a signed request is checked as bodiless.
        body: Some(b""),
        method: &method,
        host: host.as_deref(),
        path,
        query,
        headers: &headers,
        peer: Some(req.peer),
        now: unix_now(),
        extra_permission: None,
    };
    let mut trace = Trace::on();
    let outcome = engine.decide(&facts, &mut trace).await;
    let route = outcome.route.as_deref();
    let upstream = route.and_then(|r| config.upstreams.get(r.upstream));
    let steps: Vec<Value> = trace
        .steps
        .iter()
        .map(|(check, result)| json!({"check": check, "outcome": result}))
        .collect();

    let decision = match &outcome.denial {
        Some(d) => {
            let mut h = serde_json::Map::new();
            if let Some(c) = &d.challenge {
                h.insert("www-authenticate".into(), json!(c));
            }
            if let Some(r) = d.retry_after {
                h.insert("retry-after".into(), json!(r.to_string()));
            }
            if let Some(a) = &d.allow {
                h.insert("allow".into(), json!(a));
            }
            if let Some((policy, state)) = &d.rate_headers {
                h.insert("ratelimit-policy".into(), json!(policy));
                h.insert("ratelimit".into(), json!(state));
            }
            json!({"forward": false, "status": d.status, "error": d.code,
                   "message": d.message, "headers": h})
        }
        None => json!({"forward": true, "upstream": upstream.map(|u| u.name.as_str())}),
    };

    let upstream_request = match (&outcome.denial, route) {
        (None, Some(route)) => {
            let rewritten = crate::gateway::proxy::forwarded_target(
                path,
                outcome.path.as_deref(),
                query,
                config
                    .api_keys
                    .as_deref()
                    .and_then(|k| k.query_param.as_deref()),
            );
            let mut up =
                pingora::http::RequestHeader::build(method.clone(), target.as_bytes(), None)
                    .map_err(|e| format!("cannot build the request: {e}"))?;
            for (name, value) in &headers {
                up.append_header(name.clone(), value.clone())
                    .map_err(|e| format!("header {name}: {e}"))?;
            }
            let request_id = crate::request_id::from_headers(&headers);
            let forwarded_for = Some(crate::policy::networks::forwarded_for(
                req.peer,
                &headers,
                &config.trusted_proxies,
            ));
            let view = UpstreamView {
                namespace: &config.identity_namespace,
                key_headers: config
                    .api_keys
                    .as_deref()
                    .map_or(&[], |k| k.headers.as_slice()),
                route: Some(route),
                identity: outcome.identity.as_deref(),
                assertion: upstream.and_then(|u| u.assertion.as_deref()),
                rewritten: rewritten.as_deref(),
                request_id: &request_id,
                forwarded_for,
                client_ip: outcome.client_ip,
                client_cert: None,
                cert_forward: config.client_certs.forward,
                https: false,
                host: host.as_deref(),
                now: unix_now(),
            };
            prepare_upstream_request(&mut up, view).map_err(|e| e.to_string())?;
            let headers: Vec<Value> = up
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
            json!({
                "method": method.as_str(),
                "target": String::from_utf8_lossy(up.raw_path()),
                "headers": headers,
            })
        }
        _ => Value::Null,
    };

    Ok(json!({
        "request": {"method": method.as_str(), "target": target, "client": req.peer.to_string()},
        "canonical_path": outcome.path.as_deref(),
        "route": route.map(|r| json!({"name": r.name, "upstream": upstream.map(|u| u.name.as_str()), "mode": r.auth.mode.label()})),
        "client_ip": outcome.client_ip.map(|ip| ip.to_string()),
        "steps": steps,
        "decision": decision,
        "report_mode_would_refuse": outcome.reported.as_ref().map(|d| json!({"status": d.status, "error": d.code, "message": d.message})),
        "upstream_request": upstream_request,
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
