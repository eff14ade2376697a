//! Rego policies, evaluated in-process with Microsoft's `regorus` interpreter: a route's
//! `auth.rego` names a policy file, the rule whose value decides (`rule`, e.g.
//! `data.gateway.authz.allow`), an optional `data` JSON file and the request headers the
//! policy may read. The rule is evaluated after the credential and the route's requirements,
//! on an input document built from the request and the verified identity:
//!
//! ```json
//! { "method": "GET", "path": "/admin/users", "segments": ["admin", "users"],
//!   "query": {"page": "2"}, "headers": {"x-region": "eu"}, "client_ip": "10.0.0.7",
//!   "tls": false, "route": "admin", "time": {"unix": 1800000000, "ns": 1800000000000000000},
//!   "identity": {"subject": "alice", "method": "jwt", "provider": "corp", "roles": [..],
//!                "scopes": [..], "permissions": [..], "tenant": "acme", "client_id": null} }
//! ```
//!
//! `identity` is `null` on a public route. `Authorization` is never in `headers`, whatever the
//! policy asks for. The rule's value decides:
//! - `true` allows; `false`, or no value (undefined: no rule body held), refuses with `403
//!   policy_denied`;
//! - an object allows when its `allow` is `true`, and its `reason` (a string) becomes the
//!   refusal's message; an allowing object's `headers` (`{"X-User-Tier": "gold"}`) go to the
//!   backend, each one of the route's `result_headers` (identity-namespace headers, so the
//!   client's own copies were removed);
//! - anything else, or an evaluation error, is the gateway's failure: `500 policy_error`, never
//!   an allow (fail closed), counted in `portcullis_rego_errors_total{route}`.
//!
//! `time.ns` is what OPA's time builtins take: `time.clock([input.time.ns, "Europe/Berlin"])`
//! and `time.weekday(...)` give a time window in a policy. The files are read again when they
//! change and on `SIGHUP`; a policy that no longer loads is refused and the one in force stays.
//! An OPA server (`opa`) decides on the same input document.

use crate::auth::Identity;
use http::HeaderName;
use serde_json::{json, Map, Value as Json};
use std::net::IpAddr;
use std::sync::{Mutex, RwLock};
use std::time::SystemTime;

/// A compiled policy and the rule that decides; its files are read again when they change
/// and on `SIGHUP` (`Reloadable`), and a policy that no longer loads leaves this one in force.
#[derive(Debug)]
pub struct RegoPolicy {
    /// Parsed, with its data loaded and its rules analysed; each evaluation uses a clone
    /// (an input is per request).
    engine: RwLock<regorus::Engine>,
    pub rule: String,
    /// The policy file, for messages and reloads.
    pub file: String,
    /// The data file, when there is one.
    data_file: Option<String>,
    /// Request headers the policy may read (lower-case).
    pub headers: Vec<HeaderName>,
    /// Headers an allowing result may add to the upstream request.
    pub result_headers: Vec<HeaderName>,
    pub route: String,
    /// Size and modification time of the files last loaded.
    stamp: Mutex<Option<(u64, SystemTime)>>,
}

/// What the rule decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegoVerdict {
    /// Allowed, with the headers the result adds to the upstream request.
    Allow(Vec<(HeaderName, String)>),
    /// Refused, with the policy's reason when it gave one.
    Deny(Option<String>),
    /// The evaluation failed, or the rule's value is not a decision.
    Error(String),
}

/// The facts the input document is built from.
pub struct RegoFacts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    pub client_ip: Option<IpAddr>,
    pub tls: bool,
    pub now: u64,
    pub identity: Option<&'a Identity>,
}

/// A policy file's text and its data file's JSON; `Err` names the key (`policy` or `data`)
/// and what is wrong.
pub fn read_files(
    policy: &str,
    data: Option<&str>,
) -> Result<(String, Option<Json>), (&'static str, String)> {
    let source = std::fs::read_to_string(policy)
        .map_err(|e| ("policy", format!("cannot read \"{policy}\": {e}")))?;
    let data = match data {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ("data", format!("cannot read \"{path}\": {e}")))?;
            let json = serde_json::from_str::<Json>(&text)
                .map_err(|e| ("data", format!("\"{path}\" is not JSON: {e}")))?;
            Some(json)
        }
    };
    Ok((source, data))
}

/// Parse `source` (named `file`), load `data`, and evaluate `rule` once on an empty input:
/// an unknown builtin or a rule that cannot be evaluated is a configuration problem, not
/// every request's 500; and the engine is then prepared (its rules analysed), so each
/// request's clone is not. `Err` names the file and line.
fn engine(
    file: &str,
    source: String,
    data: Option<Json>,
    rule: &str,
    result_headers: &[HeaderName],
) -> Result<regorus::Engine, String> {
    let mut engine = regorus::Engine::new();
    engine
        .add_policy(file.to_string(), source)
        .map_err(|e| e.to_string())?;
    if let Some(data) = data {
        engine
            .add_data(regorus::Value::from(data))
            .map_err(|e| format!("data: {e}"))?;
    }
    engine.set_input(regorus::Value::from(json!({})));
    if let RegoVerdict::Error(e) = verdict(engine.eval_rule(rule.to_string()), rule, result_headers)
    {
        return Err(e);
    }
    Ok(engine)
}

impl RegoPolicy {
    /// A policy from its text (named `file`) and data, without files to reload.
    pub fn new(
        file: &str,
        source: String,
        data: Option<Json>,
        rule: &str,
        headers: Vec<HeaderName>,
        result_headers: Vec<HeaderName>,
        route: &str,
    ) -> Result<Self, String> {
        Ok(Self {
            engine: RwLock::new(engine(file, source, data, rule, &result_headers)?),
            rule: rule.to_string(),
            file: file.to_string(),
            data_file: None,
            headers: headers
                .into_iter()
                .filter(|h| h != http::header::AUTHORIZATION)
                .collect(),
            result_headers,
            route: route.to_string(),
            stamp: Mutex::new(None),
        })
    }

    /// The policy of `file` with the data of `data_file`, kept in force by reloads.
    pub fn load(
        file: &str,
        data_file: Option<&str>,
        rule: &str,
        headers: Vec<HeaderName>,
        result_headers: Vec<HeaderName>,
        route: &str,
    ) -> Result<Self, (&'static str, String)> {
        let stamp = stamp(file, data_file);
        let (source, data) = read_files(file, data_file)?;
        let mut policy = Self::new(file, source, data, rule, headers, result_headers, route)
            .map_err(|e| ("policy", e))?;
        policy.data_file = data_file.map(str::to_string);
        policy.stamp = Mutex::new(stamp);
        Ok(policy)
    }

    /// The input document for one request (see the module docs).
    pub fn input(&self, f: &RegoFacts<'_>) -> Json {
        input_document(f, &self.headers, &self.route)
    }

    /// The rule's decision for `input`.
    pub fn decide_on(&self, input: Json) -> RegoVerdict {
        let mut engine = match self.engine.read() {
            Ok(e) => e.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        engine.set_input(regorus::Value::from(input));
        verdict(
            engine.eval_rule(self.rule.clone()),
            &self.rule,
            &self.result_headers,
        )
    }
}

/// Size and modification time of the policy and data files together.
fn stamp(file: &str, data_file: Option<&str>) -> Option<(u64, SystemTime)> {
    let (len, modified) = crate::reload::file_stamp(std::path::Path::new(file))?;
    match data_file.map(|d| crate::reload::file_stamp(std::path::Path::new(d))) {
        None => Some((len, modified)),
        Some(None) => None,
        Some(Some((data_len, data_modified))) => {
            Some((len ^ data_len.rotate_left(32), modified.max(data_modified)))
        }
    }
}

impl crate::reload::Reloadable for RegoPolicy {
    fn what(&self) -> &'static str {
        "Rego policy"
    }

    fn path(&self) -> &std::path::Path {
        std::path::Path::new(&self.file)
    }

    fn stamp(&self) -> &Mutex<Option<(u64, SystemTime)>> {
        &self.stamp
    }

    fn stamp_now(&self) -> Option<(u64, SystemTime)> {
        stamp(&self.file, self.data_file.as_deref())
    }

    fn read_and_swap(&self) -> Result<usize, Vec<String>> {
        let (source, data) =
            read_files(&self.file, self.data_file.as_deref()).map_err(|(_, e)| vec![e])?;
        let engine = engine(&self.file, source, data, &self.rule, &self.result_headers)
            .map_err(|e| vec![e])?;
        match self.engine.write() {
            Ok(mut e) => *e = engine,
            Err(poisoned) => *poisoned.into_inner() = engine,
        }
        Ok(1)
    }
}

/// The input document of a request: what a route's Rego policy and an OPA server decide on
/// (see the module docs). `headers` are the ones the policy declared; `Authorization` is
/// never among them.
pub fn input_document(f: &RegoFacts<'_>, headers: &[HeaderName], route: &str) -> Json {
    let segments: Vec<&str> = f.path.split('/').filter(|s| !s.is_empty()).collect();
    let mut query = Map::new();
    for (k, v) in url::form_urlencoded::parse(f.query.unwrap_or("").as_bytes()) {
        query
            .entry(k.into_owned())
            .or_insert_with(|| Json::String(v.into_owned()));
    }
    let mut declared = Map::new();
    for name in headers.iter().filter(|h| *h != http::header::AUTHORIZATION) {
        if let Some(v) = f.headers.get(name).and_then(|v| v.to_str().ok()) {
            declared.insert(name.as_str().to_string(), Json::String(v.to_string()));
        }
    }
    let identity = f.identity.map(|id| {
        json!({
            "subject": id.subject, "method": id.method, "provider": id.provider,
            "roles": id.roles, "scopes": id.scopes, "permissions": id.permissions,
            "tenant": id.tenant, "client_id": id.client_id,
        })
    });
    json!({
        "method": f.method, "path": f.path, "segments": segments, "query": query,
        "headers": declared, "client_ip": f.client_ip.map(|ip| ip.to_string()),
        "tls": f.tls, "route": route,
        // Nanoseconds too, as OPA's `time.*` builtins take them.
        "time": {"unix": f.now, "ns": f.now.saturating_mul(1_000_000_000)},
        "identity": identity,
    })
}

/// What the rule's value (or its evaluation's error) decides.
pub fn verdict<E: std::fmt::Display>(
    value: Result<regorus::Value, E>,
    rule: &str,
    result_headers: &[HeaderName],
) -> RegoVerdict {
    let value = match value {
        Ok(v) => v,
        Err(e) => return RegoVerdict::Error(e.to_string()),
    };
    match value {
        regorus::Value::Bool(true) => RegoVerdict::Allow(Vec::new()),
        regorus::Value::Bool(false) | regorus::Value::Undefined => RegoVerdict::Deny(None),
        regorus::Value::Object(_) => {
            let allow = &value[&regorus::Value::from("allow")];
            let reason = value[&regorus::Value::from("reason")]
                .as_string()
                .ok()
                .map(|r| r.to_string());
            match allow {
                regorus::Value::Bool(true) => {
                    match added_headers(&value[&regorus::Value::from("headers")], result_headers) {
                        Ok(headers) => RegoVerdict::Allow(headers),
                        Err(e) => RegoVerdict::Error(e),
                    }
                }
                regorus::Value::Bool(false) | regorus::Value::Undefined => {
                    RegoVerdict::Deny(reason)
                }
                _ => RegoVerdict::Error("the result's `allow` is not a boolean".into()),
            }
        }
        _ => RegoVerdict::Error(format!(
            "{rule} is neither a boolean nor an object with `allow`"
        )),
    }
}

/// An allowing result's `headers` object: names among `allowed`, values that are strings a
/// header can carry. Anything else is the policy's error, never a header dropped quietly.
fn added_headers(
    headers: &regorus::Value,
    allowed: &[HeaderName],
) -> Result<Vec<(HeaderName, String)>, String> {
    let members = match headers {
        regorus::Value::Undefined | regorus::Value::Null => return Ok(Vec::new()),
        regorus::Value::Object(members) => members,
        _ => return Err("the result's `headers` is not an object".into()),
    };
    let mut out = Vec::new();
    for (name, value) in members.iter() {
        let name = name.as_string().map_err(|e| e.to_string())?;
        let Some(known) = allowed
            .iter()
            .find(|h| h.as_str().eq_ignore_ascii_case(name))
        else {
            return Err(format!(
                "the result's header \"{name}\" is not one of `result_headers`"
            ));
        };
        let value = value
            .as_string()
            .map_err(|_| format!("the result's header \"{name}\" is not a string"))?;
        if http::HeaderValue::from_str(value).is_err() {
            return Err(format!(
                "the result's header \"{name}\" has a value no header can carry"
            ));
        }
        out.push((known.clone(), value.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's policy: `/health` is public, `/admin/*` needs the admin role; and what
    /// richer policies do with `some`, `every`, `data` and request headers.
    const SEED: &str = r#"
package gateway.authz

default allow := false

allow if input.path == "/health"

allow if {
    input.segments[0] == "admin"
    "admin" in input.identity.roles
}

# Per tenant: /tenants/<t>/... only for callers of tenant t.
allow if {
    input.segments[0] == "tenants"
    input.segments[1] == input.identity.tenant
}

# A scope per method, from data: every scope the method needs is held.
allow if {
    input.segments[0] == "orders"
    needed := data.scopes[input.method]
    every s in needed { s in input.identity.scopes }
}

# Only from the EU region header, with some role of the reporting ones.
allow if {
    input.segments[0] == "reports"
    input.headers["x-region"] == "eu"
    some role in input.identity.roles
    role in {"analyst", "auditor"}
}
"#;

    fn policy(source: &str, rule: &str) -> RegoPolicy {
        let data =
            json!({"scopes": {"GET": ["orders:read"], "DELETE": ["orders:read", "orders:delete"]}});
        RegoPolicy::new(
            "authz.rego",
            source.to_string(),
            Some(data),
            rule,
            vec![
                http::HeaderName::from_static("x-region"),
                http::header::AUTHORIZATION,
            ],
            vec![HeaderName::from_static("x-user-tier")],
            "r",
        )
        .unwrap()
    }

    fn identity(roles: &[&str], scopes: &[&str], tenant: Option<&str>) -> Identity {
        Identity {
            method: "jwt",
            subject: "alice".into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            tenant: tenant.map(str::to_string),
            ..Identity::default()
        }
    }

    fn decide(
        p: &RegoPolicy,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        id: Option<&Identity>,
    ) -> RegoVerdict {
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let facts = RegoFacts {
            method,
            path,
            query: None,
            headers: &h,
            client_ip: None,
            tls: true,
            now: 1_800_000_000,
            identity: id,
        };
        p.decide_on(p.input(&facts))
    }

    /// Method, path, headers, caller, and the decision Rego gives.
    type Row<'a> = (
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        Option<&'a Identity>,
        RegoVerdict,
    );

    #[test]
    fn the_seed_policy_and_richer_rules_decide_as_rego_says() {
        let p = policy(SEED, "data.gateway.authz.allow");
        let admin = identity(&["admin"], &[], None);
        let user = identity(&["user"], &["orders:read"], Some("acme"));
        let deny = RegoVerdict::Deny(None);
        let allow = RegoVerdict::Allow(vec![]);
        let rows: &[Row<'_>] = &[
            ("GET", "/health", &[], None, allow.clone()),
            ("GET", "/admin/users", &[], Some(&admin), allow.clone()),
            ("GET", "/admin/users", &[], Some(&user), deny.clone()),
            // No identity: `input.identity.roles` is undefined, so the body fails; default.
            ("GET", "/admin/users", &[], None, deny.clone()),
            (
                "GET",
                "/tenants/acme/bills",
                &[],
                Some(&user),
                allow.clone(),
            ),
            (
                "GET",
                "/tenants/other/bills",
                &[],
                Some(&user),
                deny.clone(),
            ),
            // `every` over data: GET needs orders:read (held), DELETE also orders:delete.
            ("GET", "/orders/7", &[], Some(&user), allow.clone()),
            ("DELETE", "/orders/7", &[], Some(&user), deny.clone()),
            // No entry in data for POST: `needed` is undefined, the body fails.
            ("POST", "/orders", &[], Some(&user), deny.clone()),
            (
                "GET",
                "/reports/q3",
                &[("x-region", "eu")],
                Some(&identity(&["auditor"], &[], None)),
                allow.clone(),
            ),
            (
                "GET",
                "/reports/q3",
                &[("x-region", "us")],
                Some(&identity(&["auditor"], &[], None)),
                deny.clone(),
            ),
            (
                "GET",
                "/reports/q3",
                &[("x-region", "eu")],
                Some(&user),
                deny.clone(),
            ),
        ];
        for (method, path, headers, id, want) in rows {
            assert_eq!(
                &decide(&p, method, path, headers, *id),
                want,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn undefined_objects_reasons_and_errors() {
        let allow = RegoVerdict::Allow(vec![]);
        // No default: a request no rule holds for leaves the rule undefined, a refusal.
        let p = policy(
            "package t\nallow if input.method == \"GET\"\n",
            "data.t.allow",
        );
        assert_eq!(decide(&p, "GET", "/", &[], None), allow.clone());
        assert_eq!(decide(&p, "POST", "/", &[], None), RegoVerdict::Deny(None));
        // An object result carries the reason.
        let p = policy(
            "package t\ndefault decision := {\"allow\": false, \"reason\": \"read-only on weekends\"}\ndecision := {\"allow\": true} if input.method == \"GET\"\n",
            "data.t.decision",
        );
        assert_eq!(decide(&p, "GET", "/", &[], None), allow.clone());
        assert_eq!(
            decide(&p, "PUT", "/", &[], None),
            RegoVerdict::Deny(Some("read-only on weekends".into()))
        );
        // A value that is no decision is an error: found at load when it always is one, at
        // the request when it depends on the input.
        let at_load = RegoPolicy::new(
            "t.rego",
            "package t\nallow := \"yes\"\n".into(),
            None,
            "data.t.allow",
            vec![],
            vec![],
            "r",
        );
        assert!(at_load.is_err());
        let p = policy("package t\nallow := input.method\n", "data.t.allow");
        assert!(matches!(
            decide(&p, "GET", "/", &[], None),
            RegoVerdict::Error(_)
        ));
        let p = policy("package t\nallow if 1 / input.zero > 0\n", "data.t.allow");
        let zero = decide(&p, "GET", "/", &[], None);
        assert!(
            matches!(zero, RegoVerdict::Deny(None) | RegoVerdict::Error(_)),
            "{zero:?}"
        );
    }

    #[test]
    fn an_allowing_result_adds_only_declared_headers_with_text_values() {
        let tier = |name: &str, value: &str| {
            let p = policy(
                &format!("package t\ndecision := {{\"allow\": true, \"headers\": {{\"{name}\": {value}}}}} if input.method == \"GET\"\n"),
                "data.t.decision",
            );
            decide(&p, "GET", "/", &[], None)
        };
        assert_eq!(
            tier("X-User-Tier", "\"gold\""),
            RegoVerdict::Allow(vec![(
                HeaderName::from_static("x-user-tier"),
                "gold".into()
            )])
        );
        for (name, value) in [
            ("X-User-Role", "\"root\""),
            ("X-User-Tier", "7"),
            ("X-User-Tier", "\"a\\nb\""),
        ] {
            assert!(
                matches!(tier(name, value), RegoVerdict::Error(_)),
                "{name}: {value}"
            );
        }
    }

    /// `input.time.ns` is what OPA's time builtins take: a business-hours window written in
    /// the policy, in Berlin's time (CET in December, CEST in July).
    #[test]
    fn a_time_window_in_the_policy_reads_input_time_ns() {
        let p = policy(
            r#"package t
default allow := false
allow if {
    [hour, _, _] := time.clock([input.time.ns, "Europe/Berlin"])
    hour >= 8
    hour < 18
    not time.weekday([input.time.ns, "Europe/Berlin"]) in {"Saturday", "Sunday"}
}
"#,
            "data.t.allow",
        );
        let at = |unix: u64| {
            let h = http::HeaderMap::new();
            p.decide_on(p.input(&RegoFacts {
                method: "GET",
                path: "/maintenance",
                query: None,
                headers: &h,
                client_ip: None,
                tls: false,
                now: unix,
                identity: None,
            }))
        };
        let allow = RegoVerdict::Allow(vec![]);
        let deny = RegoVerdict::Deny(None);
        // Thu 2026-12-03 07:30 UTC is 08:30 in Berlin (CET, UTC+1): open.
        assert_eq!(at(1_796_283_000), allow);
        // 06:30 UTC is 07:30 in Berlin: closed.
        assert_eq!(at(1_796_279_400), deny);
        // Thu 2026-07-02 06:30 UTC is 08:30 in Berlin (CEST, UTC+2): open.
        assert_eq!(at(1_782_973_800), allow);
        // Sat 2026-12-05 10:00 UTC: a weekend.
        assert_eq!(at(1_796_464_800), deny);
    }

    #[test]
    fn the_authorization_header_never_reaches_the_policy() {
        let p = policy(SEED, "data.gateway.authz.allow");
        let mut h = http::HeaderMap::new();
        h.insert("authorization", "Bearer secret".parse().unwrap());
        h.insert("x-region", "eu".parse().unwrap());
        h.insert("x-other", "1".parse().unwrap());
        let facts = RegoFacts {
            method: "GET",
            path: "/a/b",
            query: Some("page=2&page=3&q=x"),
            headers: &h,
            client_ip: Some("10.0.0.7".parse().unwrap()),
            tls: false,
            now: 5,
            identity: None,
        };
        let input = p.input(&facts);
        assert_eq!(input["headers"], json!({"x-region": "eu"}));
        assert_eq!(input["query"], json!({"page": "2", "q": "x"}));
        assert_eq!(input["segments"], json!(["a", "b"]));
        assert_eq!(input["client_ip"], "10.0.0.7");
        assert_eq!(input["identity"], Json::Null);
    }

    #[test]
    fn a_policy_that_does_not_parse_names_its_file_and_line() {
        let err = RegoPolicy::new(
            "broken.rego",
            "package t\n\nallow if {\n  input.x ==\n".into(),
            None,
            "data.t.allow",
            vec![],
            vec![],
            "r",
        )
        .unwrap_err();
        assert!(err.contains("broken.rego"), "{err}");
        assert!(err.contains(":4") || err.contains(":5"), "{err}");
        let err = RegoPolicy::new(
            "unknown.rego",
            "package t\nallow if no_such_builtin(input.x)\n".into(),
            None,
            "data.t.allow",
            vec![],
            vec![],
            "r",
        )
        .unwrap_err();
        assert!(err.contains("no_such_builtin"), "{err}");
    }
}
