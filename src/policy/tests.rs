//! The policy evaluator, in-process: route policies against requests carrying real
//! credentials (HS256 JWTs signed here, API keys from a consumers file written here), each
//! row checked for its exact status and code, or for who it lets through.
//!
//! Report mode is the engine's business (it decides whether a refusal is enforced), so it
//! is not tested here.

use super::networks::Cidr;
use super::time_window::{self, TimeWindow};
use super::{
    evaluate, Authenticators, Credential, Facts, NetworkRule, Policy, Requirements, Trace, Verdict,
};
use crate::auth::api_key::{generate, parse, ApiKeys, Environment, Hasher};
use crate::auth::jwt::{KeySet, ProviderRules, DEFAULT_MAX_TOKEN_BYTES};
use crate::auth::provider::{KeySource, Provider, TokenCache};
use crate::auth::ClaimMap;
use crate::metrics::ProviderSeries;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::Arc;
use tempfile::TempDir;

const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://idp.example.com";
const AUD: &str = "api://orders";
const SECRET: &[u8] = b"policy-tests-hmac-secret-0123456789abcdef";
const OTHER_SECRET: &[u8] = b"someone-elses-hmac-secret-0123456789abcdef";

/// Index of the one identity provider in `Fixture::providers`.
const IDP: usize = 0;

// ------------------------------------------------------------------ credentials

/// The claims of a good token for `alice`, with `extra` added (or replacing).
fn claims(extra: Value) -> Value {
    let mut claims = json!({
        "iss": ISS, "aud": AUD, "sub": "alice", "iat": NOW - 10, "exp": NOW + 600,
    });
    if let (Some(into), Some(from)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in from {
            into.insert(k.clone(), v.clone());
        }
    }
    claims
}

fn signed_with(secret: &[u8], claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// A token signed with the provider's secret, carrying `extra` claims.
fn token(extra: Value) -> String {
    signed_with(SECRET, &claims(extra))
}

fn good_token() -> String {
    token(json!({}))
}

fn expired_token() -> String {
    token(json!({"iat": NOW - 3600, "exp": NOW - 60}))
}

fn forged_token() -> String {
    signed_with(OTHER_SECRET, &claims(json!({})))
}

/// An HS256 provider for `ISS`/`AUD` (roles in `roles`, permissions in `permissions`,
/// scopes in the standard `scope`), with no token cache so every row verifies afresh.
fn provider() -> Provider {
    let mut keys = KeySet::default();
    keys.add_hmac_secret(None, SECRET).unwrap();
    Provider {
        name: "policy-tests".into(),
        rules: ProviderRules {
            issuer: ISS.into(),
            audiences: vec![AUD.into()],
            algorithms: vec![Algorithm::HS256],
            leeway_secs: 0,
            max_token_age_secs: None,
            require_exp: true,
            typ: None,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            key_only: false,
        },
        keys: KeySource::Static(Arc::new(keys)),
        claims: ClaimMap {
            roles: Some("roles".into()),
            permissions: Some("permissions".into()),
            ..ClaimMap::default()
        },
        cache: TokenCache::new(0, 0),
        series: ProviderSeries::new("policy-tests"),
        introspection: None,
    }
}

/// The identity provider, and a consumers file with one key for consumer `acme` (scope
/// `invoices:read`), read from `X-API-Key`.
struct Fixture {
    providers: Vec<Provider>,
    api_keys: ApiKeys,
    api_key: String,
    _dir: TempDir,
}

impl Fixture {
    fn new() -> Self {
        let (api_key, _) = generate(Environment::Live).unwrap();
        let hasher = Hasher::default();
        let yaml = format!(
            "consumers:\n  - name: acme\n    scopes: [invoices:read]\n    keys:\n      - id: {}\n        hash: {}\n        created: 2026-11-01\n",
            parse(&api_key).unwrap().id,
            hasher.stored_form(&api_key)
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consumers.yaml");
        std::fs::write(&path, yaml).unwrap();
        let api_keys = ApiKeys::load(
            path,
            Environment::Live,
            vec![HeaderName::from_static("x-api-key")],
            None,
            hasher,
            Vec::new(),
        )
        .unwrap();
        Self {
            providers: vec![provider()],
            api_keys,
            api_key,
            _dir: dir,
        }
    }

    async fn evaluate(&self, policy: &Policy, request: &Request) -> (Verdict, Trace) {
        let auth = Authenticators {
            providers: &self.providers,
            api_keys: Some(&self.api_keys),
            revocations: None,
            client_certs: None,
            bound_tokens: false,
            signing: None,
            forward_auth: &[],
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &request.headers {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let facts = Facts {
            method: &request.method,
            headers: &headers,
            query: None,
            client_ip: request.client_ip,
            now: NOW,
            extra_permission: None,
            client_cert: None,
            host: Some("api.example.com"),
            path: "/orders",
            raw_path: "/orders",
            https: true,
            body: None,
        };
        let mut trace = Trace::on();
        let verdict = evaluate(policy, &auth, &facts, &mut trace).await;
        (verdict, trace)
    }

    /// Evaluate every row and check its outcome exactly.
    async fn check(&self, rows: &[Row]) {
        for row in rows {
            let (verdict, _) = self.evaluate(&row.policy, &row.request).await;
            assert_eq!(outcome(&verdict), row.expect, "{}", row.name);
        }
    }
}

// ------------------------------------------------------------------ rows

struct Request {
    method: Method,
    headers: Vec<(&'static str, String)>,
    client_ip: Option<IpAddr>,
}

impl Request {
    /// A GET from 10.1.2.3 carrying nothing.
    fn bare() -> Self {
        Self {
            method: Method::GET,
            headers: Vec::new(),
            client_ip: Some(ip("10.1.2.3")),
        }
    }

    fn bearer(token: &str) -> Self {
        Self::bare().with("authorization", format!("Bearer {token}"))
    }

    fn with(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    fn from(mut self, client_ip: Option<IpAddr>) -> Self {
        self.client_ip = client_ip;
        self
    }
}

/// What a verdict comes to, in terms a row can state exactly.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Allowed without an identity (a public route).
    Anonymous,
    /// Allowed: `method:who`, who being the subject, or the consumer for an API key.
    Allowed(String),
    /// Refused with this status, code and `WWW-Authenticate`.
    Denied {
        status: u16,
        code: &'static str,
        challenge: Option<String>,
    },
}

fn outcome(verdict: &Verdict) -> Outcome {
    match (&verdict.denial, &verdict.identity) {
        (Some(d), _) => Outcome::Denied {
            status: d.status,
            code: d.code,
            challenge: d.challenge.clone(),
        },
        (None, None) => Outcome::Anonymous,
        (None, Some(id)) => {
            let who = if id.subject.is_empty() {
                id.client_id.clone().unwrap_or_default()
            } else {
                id.subject.clone()
            };
            Outcome::Allowed(format!("{}:{who}", id.method))
        }
    }
}

fn allowed(who: &str) -> Outcome {
    Outcome::Allowed(who.into())
}

fn denied(status: u16, code: &'static str, challenge: Option<&str>) -> Outcome {
    Outcome::Denied {
        status,
        code,
        challenge: challenge.map(str::to_string),
    }
}

struct Row {
    name: &'static str,
    policy: Policy,
    request: Request,
    expect: Outcome,
}

fn row(name: &'static str, policy: Policy, request: Request, expect: Outcome) -> Row {
    Row {
        name,
        policy,
        request,
        expect,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cidrs(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|c| c.parse().unwrap()).collect()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn requiring(credential: Credential, require: Requirements) -> Policy {
    Policy {
        credential,
        require,
        ..Policy::public()
    }
}

fn jwt_route() -> Policy {
    requiring(Credential::Jwt(IDP), Requirements::default())
}

/// The RFC 6750 challenge for a token refused for `description`.
fn invalid_token(description: &str) -> String {
    format!(
        r#"Bearer realm="portcullis", error="invalid_token", error_description="{description}""#
    )
}

const BARE_BEARER: Option<&str> = Some(r#"Bearer realm="portcullis""#);

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn a_public_route_lets_every_request_through_without_looking_at_credentials() {
    let f = Fixture::new();
    f.check(&[
        row(
            "nothing carried",
            Policy::public(),
            Request::bare(),
            Outcome::Anonymous,
        ),
        row(
            "a forged token is not even read",
            Policy::public(),
            Request::bearer(&forged_token()),
            Outcome::Anonymous,
        ),
        row(
            "a good token does not name the caller either",
            Policy::public(),
            Request::bearer(&good_token()),
            Outcome::Anonymous,
        ),
    ])
    .await;
}

#[tokio::test]
async fn a_jwt_route_refuses_a_missing_or_bad_token_with_its_reason_and_a_challenge() {
    let f = Fixture::new();
    f.check(&[
        row(
            "no Authorization header: 401 with a bare challenge (RFC 6750 section 3)",
            jwt_route(),
            Request::bare(),
            denied(401, "token_missing", BARE_BEARER),
        ),
        row(
            "another scheme counts as no token",
            jwt_route(),
            Request::bare().with("authorization", "Basic YWxpY2U6c2VjcmV0".into()),
            denied(401, "token_missing", BARE_BEARER),
        ),
        row(
            "signed with another secret",
            jwt_route(),
            Request::bearer(&forged_token()),
            denied(
                401,
                "token_bad_signature",
                Some(&invalid_token("The token's signature is invalid.")),
            ),
        ),
        row(
            "expired",
            jwt_route(),
            Request::bearer(&expired_token()),
            denied(401, "token_expired", Some(&invalid_token("Token expired"))),
        ),
        row(
            "meant for another API",
            jwt_route(),
            Request::bearer(&token(json!({"aud": "api://billing"}))),
            denied(
                401,
                "token_wrong_audience",
                Some(&invalid_token("The token is not meant for this API.")),
            ),
        ),
        row(
            "two Authorization headers: which one counts? 400",
            jwt_route(),
            Request::bearer(&good_token())
                .with("authorization", format!("Bearer {}", good_token())),
            denied(
                400,
                "ambiguous_credentials",
                Some(r#"Bearer realm="portcullis", error="invalid_request""#),
            ),
        ),
        row(
            "a good token names its subject",
            jwt_route(),
            Request::bearer(&good_token()),
            allowed("jwt:alice"),
        ),
    ])
    .await;
}

#[tokio::test]
async fn a_verified_caller_lacking_what_the_route_requires_is_refused_with_403() {
    let f = Fixture::new();
    let roles = || {
        requiring(
            Credential::Jwt(IDP),
            Requirements {
                roles: strings(&["admin", "ops"]),
                ..Requirements::default()
            },
        )
    };
    let scopes = || {
        requiring(
            Credential::Jwt(IDP),
            Requirements {
                scopes: strings(&["orders:read", "orders:write"]),
                ..Requirements::default()
            },
        )
    };
    let permissions = || {
        requiring(
            Credential::Jwt(IDP),
            Requirements {
                permissions: strings(&["orders:view"]),
                ..Requirements::default()
            },
        )
    };
    let insufficient = Some(r#"Bearer realm="portcullis", error="insufficient_scope""#);
    f.check(&[
        row(
            "roles: one of them is enough",
            roles(),
            Request::bearer(&token(json!({"roles": ["user", "ops"]}))),
            allowed("jwt:alice"),
        ),
        row(
            "roles: none of them",
            roles(),
            Request::bearer(&token(json!({"roles": ["user"]}))),
            denied(403, "insufficient_role", insufficient),
        ),
        row(
            "roles: a token without any",
            roles(),
            Request::bearer(&good_token()),
            denied(403, "insufficient_role", insufficient),
        ),
        row(
            "scopes: all of them",
            scopes(),
            Request::bearer(&token(json!({"scope": "orders:write profile orders:read"}))),
            allowed("jwt:alice"),
        ),
        row(
            "scopes: one of two is not enough, and the challenge names both",
            scopes(),
            Request::bearer(&token(json!({"scope": "orders:read"}))),
            denied(
                403,
                "insufficient_scope",
                Some(
                    r#"Bearer realm="portcullis", error="insufficient_scope", scope="orders:read orders:write""#,
                ),
            ),
        ),
        row(
            "permissions: held",
            permissions(),
            Request::bearer(&token(json!({"permissions": ["orders:view"]}))),
            allowed("jwt:alice"),
        ),
        row(
            "permissions: not held",
            permissions(),
            Request::bearer(&token(json!({"permissions": ["orders:edit"]}))),
            denied(403, "insufficient_permissions", insufficient),
        ),
    ])
    .await;
}

#[tokio::test]
async fn a_refused_requirement_still_names_the_caller() {
    let f = Fixture::new();
    let policy = requiring(
        Credential::Jwt(IDP),
        Requirements {
            roles: strings(&["admin"]),
            ..Requirements::default()
        },
    );
    let (verdict, _) = f.evaluate(&policy, &Request::bearer(&good_token())).await;
    assert_eq!(
        verdict.denial.as_ref().map(|d| (d.status, d.code)),
        Some((403, "insufficient_role"))
    );
    assert_eq!(
        verdict.identity.as_ref().map(|id| id.subject.as_str()),
        Some("alice")
    );
}

#[tokio::test]
async fn a_method_needs_its_own_permission_on_top_of_the_routes() {
    let f = Fixture::new();
    let policy = || {
        requiring(
            Credential::Jwt(IDP),
            Requirements {
                permissions: strings(&["orders:view"]),
                method_permissions: vec![(Method::DELETE, "orders:delete".into())],
                ..Requirements::default()
            },
        )
    };
    let viewer = || token(json!({"permissions": ["orders:view"]}));
    let deleter = || token(json!({"permissions": ["orders:view", "orders:delete"]}));
    let only_deleter = || token(json!({"permissions": ["orders:delete"]}));
    let insufficient = Some(r#"Bearer realm="portcullis", error="insufficient_scope""#);
    f.check(&[
        row(
            "GET needs only the route's permission",
            policy(),
            Request::bearer(&viewer()),
            allowed("jwt:alice"),
        ),
        row(
            "DELETE without the delete permission",
            policy(),
            Request::bearer(&viewer()).method(Method::DELETE),
            denied(403, "insufficient_permissions", insufficient),
        ),
        row(
            "DELETE with both permissions",
            policy(),
            Request::bearer(&deleter()).method(Method::DELETE),
            allowed("jwt:alice"),
        ),
        row(
            "DELETE with the delete permission only: the route's is still needed",
            policy(),
            Request::bearer(&only_deleter()).method(Method::DELETE),
            denied(403, "insufficient_permissions", insufficient),
        ),
    ])
    .await;
}

#[tokio::test]
async fn a_network_rule_refuses_before_any_credential_is_looked_at() {
    let f = Fixture::new();
    let policy = || Policy {
        networks: Some(NetworkRule {
            allow: cidrs(&["10.0.0.0/8"]),
            deny: cidrs(&["10.9.0.0/16"]),
        }),
        ..jwt_route()
    };
    f.check(&[
        row(
            "an allowed network, then the missing token is the answer",
            policy(),
            Request::bare(),
            denied(401, "token_missing", BARE_BEARER),
        ),
        row(
            "an allowed network and a good token",
            policy(),
            Request::bearer(&good_token()),
            allowed("jwt:alice"),
        ),
        row(
            "outside the allowed networks, with no token: 403, not 401",
            policy(),
            Request::bare().from(Some(ip("192.0.2.7"))),
            denied(403, "network_denied", None),
        ),
        row(
            "outside the allowed networks, even with a good token",
            policy(),
            Request::bearer(&good_token()).from(Some(ip("192.0.2.7"))),
            denied(403, "network_denied", None),
        ),
        row(
            "inside an allowed network but also a denied one: deny wins",
            policy(),
            Request::bearer(&good_token()).from(Some(ip("10.9.1.1"))),
            denied(403, "network_denied", None),
        ),
        row(
            "a client that cannot be told is refused (fail closed)",
            policy(),
            Request::bearer(&good_token()).from(None),
            denied(403, "network_denied", None),
        ),
    ])
    .await;
    let (_, trace) = f
        .evaluate(
            &policy(),
            &Request::bearer(&forged_token()).from(Some(ip("192.0.2.7"))),
        )
        .await;
    let checked: Vec<&str> = trace.steps.iter().map(|(what, _)| what.as_str()).collect();
    assert_eq!(checked, ["network rule"], "nothing after the network rule");
}

/// A window on Fridays, UTC, `from`..`to` (NOW is Friday 15 January 2027, 08:00 UTC).
fn friday(from: &str, to: &str) -> Option<TimeWindow> {
    let mut days = [false; 7];
    days[4] = true;
    Some(TimeWindow {
        zone: jiff::tz::TimeZone::UTC,
        zone_name: "UTC".into(),
        days,
        from: time_window::minutes(from, false).unwrap(),
        to: time_window::minutes(to, true).unwrap(),
    })
}

#[tokio::test]
async fn a_time_window_refuses_outside_its_hours_before_any_credential_is_looked_at() {
    let f = Fixture::new();
    let open = || Policy {
        during: friday("07:00", "09:00"),
        ..jwt_route()
    };
    let closed = || Policy {
        during: friday("09:00", "17:00"),
        ..jwt_route()
    };
    let public_closed = || Policy {
        during: friday("09:00", "17:00"),
        ..Policy::public()
    };
    f.check(&[
        row(
            "inside the window, the credential decides",
            open(),
            Request::bare(),
            denied(401, "token_missing", BARE_BEARER),
        ),
        row(
            "inside the window, a good token",
            open(),
            Request::bearer(&good_token()),
            allowed("jwt:alice"),
        ),
        row(
            "outside it, even a good token",
            closed(),
            Request::bearer(&good_token()),
            denied(403, "outside_time_window", None),
        ),
        row(
            "outside it, no token: 403, not 401",
            closed(),
            Request::bare(),
            denied(403, "outside_time_window", None),
        ),
        row(
            "a public route has hours too",
            public_closed(),
            Request::bare(),
            denied(403, "outside_time_window", None),
        ),
    ])
    .await;
    let (verdict, trace) = f
        .evaluate(&closed(), &Request::bearer(&forged_token()))
        .await;
    let message = verdict.denial.map(|d| d.message.to_string());
    assert_eq!(
        message.as_deref(),
        Some("This route is open fri 09:00-17:00 UTC only.")
    );
    let checked: Vec<&str> = trace.steps.iter().map(|(what, _)| what.as_str()).collect();
    assert_eq!(
        checked,
        ["time window: fri 09:00-17:00 UTC"],
        "nothing after the window"
    );
}

#[tokio::test]
async fn any_accepts_whichever_credential_the_request_carries() {
    let f = Fixture::new();
    let any = || {
        requiring(
            Credential::Any(vec![Credential::Jwt(IDP), Credential::ApiKey]),
            Requirements::default(),
        )
    };
    let key = || f.api_key.clone();
    f.check(&[
        row(
            "a token only",
            any(),
            Request::bearer(&good_token()),
            allowed("jwt:alice"),
        ),
        row(
            "an API key only",
            any(),
            Request::bare().with("x-api-key", key()),
            allowed("api_key:acme"),
        ),
        row(
            "a forged token does not spoil a good API key",
            any(),
            Request::bearer(&forged_token()).with("x-api-key", key()),
            allowed("api_key:acme"),
        ),
        row(
            "nothing: the first scheme's refusal, a challenge for each scheme",
            any(),
            Request::bare(),
            denied(
                401,
                "token_missing",
                Some(r#"Bearer realm="portcullis", ApiKey realm="portcullis""#),
            ),
        ),
        row(
            "an expired token beats a missing key: the carried credential's reason",
            any(),
            Request::bearer(&expired_token()),
            denied(
                401,
                "token_expired",
                Some(
                    r#"Bearer realm="portcullis", error="invalid_token", error_description="Token expired", ApiKey realm="portcullis""#,
                ),
            ),
        ),
        row(
            "an unknown key beats a missing token",
            any(),
            Request::bare().with(
                "x-api-key",
                "ptc_live_abcdefghij_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
            ),
            denied(
                401,
                "api_key_unknown",
                Some(
                    r#"ApiKey realm="portcullis", header="x-api-key", Bearer realm="portcullis""#,
                ),
            ),
        ),
    ])
    .await;
}

#[tokio::test]
async fn all_needs_every_credential_and_adds_up_what_they_grant() {
    let f = Fixture::new();
    let all = |require: Requirements| {
        requiring(
            Credential::All(vec![Credential::Jwt(IDP), Credential::ApiKey]),
            require,
        )
    };
    let both = |token: &str| Request::bearer(token).with("x-api-key", f.api_key.clone());
    f.check(&[
        row(
            "both: the first credential names the caller",
            all(Requirements::default()),
            both(&good_token()),
            allowed("jwt:alice"),
        ),
        row(
            "the token only",
            all(Requirements::default()),
            Request::bearer(&good_token()),
            denied(
                401,
                "api_key_missing",
                Some(r#"ApiKey realm="portcullis", header="x-api-key""#),
            ),
        ),
        row(
            "the API key only",
            all(Requirements::default()),
            Request::bare().with("x-api-key", f.api_key.clone()),
            denied(401, "token_missing", BARE_BEARER),
        ),
        row(
            "both, but the token has expired",
            all(Requirements::default()),
            both(&expired_token()),
            denied(401, "token_expired", Some(&invalid_token("Token expired"))),
        ),
        row(
            "the token's scope and the consumer's scope together meet the route's",
            all(Requirements {
                scopes: strings(&["orders:read", "invoices:read"]),
                ..Requirements::default()
            }),
            both(&token(json!({"scope": "orders:read"}))),
            allowed("jwt:alice"),
        ),
        row(
            "a scope neither grants is still missing",
            all(Requirements {
                scopes: strings(&["orders:read", "invoices:write"]),
                ..Requirements::default()
            }),
            both(&token(json!({"scope": "orders:read"}))),
            denied(
                403,
                "insufficient_scope",
                Some(
                    r#"Bearer realm="portcullis", error="insufficient_scope", scope="orders:read invoices:write""#,
                ),
            ),
        ),
    ])
    .await;
}
