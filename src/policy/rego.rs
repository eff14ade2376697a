//! Rego policies, evaluated in-process with Microsoft's `regorus` interpreter: a route's
//! `auth.rego` names a policy file, the rule whose value decides (`rule`, e.g.
//! `data.gateway.authz.allow`), an optional `data` JSON file and the request headers the
//! policy may read. The rule is evaluated after the credential and the route's requirements,
//! on an input document built from the request and the verified identity:
//!
//! ```json
//! { "method": "GET", "path": "/admin/users", "segments": ["admin", "users"],
//!   "query": {"page": "2"}, "headers": {"x-region": "eu"}, "client_ip": "10.0.0.7",
//!   "tls": false, "route": "admin", "time": {"unix": 1800000000},
//!   "identity": {"subject": "alice", "method": "jwt", "provider": "corp", "roles": [..],
//!                "scopes": [..], "permissions": [..], "tenant": "acme", "client_id": null} }
//! ```
//!
//! `identity` is `null` on a public route. `Authorization` is never in `headers`, whatever the
//! policy asks for. The rule's value decides:
//! - `true` allows; `false`, or no value (undefined: no rule body held), refuses with `403
//!   policy_denied`;
//! - an object allows when its `allow` is `true`, and its `reason` (a string) becomes the
//!   refusal's message;
//! - anything else, or an evaluation error, is the gateway's failure: `500 policy_error`, never
//!   an allow (fail closed), counted in `portcullis_rego_errors_total{route}`.

use crate::auth::Identity;
use serde_json::{json, Map, Value as Json};
use std::net::IpAddr;

/// A compiled policy and the rule that decides.
#[derive(Debug, Clone)]
pub struct RegoPolicy {
    /// Parsed, with its data loaded; cloned for each evaluation (an input is per request).
    engine: regorus::Engine,
    pub rule: String,
    /// The policy file, for messages.
    pub file: String,
    /// Request headers the policy may read (lower-case).
    pub headers: Vec<http::HeaderName>,
    pub route: String,
}

/// What the rule decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegoVerdict {
    Allow,
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

impl RegoPolicy {
    /// Parse `source` (named `file`) and load `data`; `Err` names the file and line.
    pub fn new(
        file: &str,
        source: String,
        data: Option<Json>,
        rule: &str,
        headers: Vec<http::HeaderName>,
        route: &str,
    ) -> Result<Self, String> {
        let mut engine = regorus::Engine::new();
        engine
            .add_policy(file.to_string(), source)
            .map_err(|e| e.to_string())?;
        if let Some(data) = data {
            engine
                .add_data(regorus::Value::from(data))
                .map_err(|e| format!("data: {e}"))?;
        }
        // Evaluated once, here, on an empty request: an unknown builtin or a rule that cannot
        // be evaluated is a configuration problem, not every request's 500; and the engine
        // kept is then prepared (its rules analysed), so each request's clone is not.
        engine.set_input(regorus::Value::from(json!({})));
        if let RegoVerdict::Error(e) = verdict(engine.eval_rule(rule.to_string()), rule) {
            return Err(e);
        }
        Ok(Self {
            engine,
            rule: rule.to_string(),
            file: file.to_string(),
            headers: headers
                .into_iter()
                .filter(|h| h != http::header::AUTHORIZATION)
                .collect(),
            route: route.to_string(),
        })
    }

    /// The input document for one request (see the module docs).
    pub fn input(&self, f: &RegoFacts<'_>) -> Json {
        let segments: Vec<&str> = f.path.split('/').filter(|s| !s.is_empty()).collect();
        let mut query = Map::new();
        for (k, v) in url::form_urlencoded::parse(f.query.unwrap_or("").as_bytes()) {
            query
                .entry(k.into_owned())
                .or_insert_with(|| Json::String(v.into_owned()));
        }
        let mut headers = Map::new();
        for name in &self.headers {
            if let Some(v) = f.headers.get(name).and_then(|v| v.to_str().ok()) {
                headers.insert(name.as_str().to_string(), Json::String(v.to_string()));
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
            "headers": headers, "client_ip": f.client_ip.map(|ip| ip.to_string()),
            "tls": f.tls, "route": self.route, "time": {"unix": f.now},
            "identity": identity,
        })
    }

    /// The rule's decision for `input`.
    pub fn decide_on(&self, input: Json) -> RegoVerdict {
        let mut engine = self.engine.clone();
        engine.set_input(regorus::Value::from(input));
        verdict(engine.eval_rule(self.rule.clone()), &self.rule)
    }
}

/// What the rule's value (or its evaluation's error) decides.
fn verdict<E: std::fmt::Display>(value: Result<regorus::Value, E>, rule: &str) -> RegoVerdict {
    let value = match value {
        Ok(v) => v,
        Err(e) => return RegoVerdict::Error(e.to_string()),
    };
    match value {
        regorus::Value::Bool(true) => RegoVerdict::Allow,
        regorus::Value::Bool(false) | regorus::Value::Undefined => RegoVerdict::Deny(None),
        regorus::Value::Object(_) => {
            let allow = &value[&regorus::Value::from("allow")];
            let reason = value[&regorus::Value::from("reason")]
                .as_string()
                .ok()
                .map(|r| r.to_string());
            match allow {
                regorus::Value::Bool(true) => RegoVerdict::Allow,
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
        let rows: &[Row<'_>] = &[
            ("GET", "/health", &[], None, RegoVerdict::Allow),
            ("GET", "/admin/users", &[], Some(&admin), RegoVerdict::Allow),
            ("GET", "/admin/users", &[], Some(&user), deny.clone()),
            // No identity: `input.identity.roles` is undefined, so the body fails; default.
            ("GET", "/admin/users", &[], None, deny.clone()),
            (
                "GET",
                "/tenants/acme/bills",
                &[],
                Some(&user),
                RegoVerdict::Allow,
            ),
            (
                "GET",
                "/tenants/other/bills",
                &[],
                Some(&user),
                deny.clone(),
            ),
            // `every` over data: GET needs orders:read (held), DELETE also orders:delete.
            ("GET", "/orders/7", &[], Some(&user), RegoVerdict::Allow),
            ("DELETE", "/orders/7", &[], Some(&user), deny.clone()),
            // No entry in data for POST: `needed` is undefined, the body fails.
            ("POST", "/orders", &[], Some(&user), deny.clone()),
            (
                "GET",
                "/reports/q3",
                &[("x-region", "eu")],
                Some(&identity(&["auditor"], &[], None)),
                RegoVerdict::Allow,
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
        // No default: a request no rule holds for leaves the rule undefined, a refusal.
        let p = policy(
            "package t\nallow if input.method == \"GET\"\n",
            "data.t.allow",
        );
        assert_eq!(decide(&p, "GET", "/", &[], None), RegoVerdict::Allow);
        assert_eq!(decide(&p, "POST", "/", &[], None), RegoVerdict::Deny(None));
        // An object result carries the reason.
        let p = policy(
            "package t\ndefault decision := {\"allow\": false, \"reason\": \"read-only on weekends\"}\ndecision := {\"allow\": true} if input.method == \"GET\"\n",
            "data.t.decision",
        );
        assert_eq!(decide(&p, "GET", "/", &[], None), RegoVerdict::Allow);
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
            "r",
        )
        .unwrap_err();
        assert!(err.contains("no_such_builtin"), "{err}");
    }
}
