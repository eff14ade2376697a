//! `decide`: from the facts of one request to the decision, with no Pingora in sight. The
//! proxy reads a request into `RequestFacts` once and applies the `Decision` once; `explain`
//! and `stdio` call the same function.

use super::{evaluate, Denial, Facts, Mode, Trace};
use crate::auth::provider::Provider;
use crate::auth::Identity;
use crate::routing::canon::canonical_path;
use crate::routing::{Route, RouteMatch, RouteTable};
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

/// Everything that decides a request: routes with their policies, the identity providers,
/// and which proxies' `X-Forwarded-For` to believe.
pub struct Engine {
    pub routes: RouteTable,
    pub providers: Vec<Provider>,
    pub api_keys: Option<Arc<crate::auth::api_key::ApiKeys>>,
    pub revocations: Option<Arc<crate::auth::revocation::Revocations>>,
    pub client_certs: Arc<crate::auth::mtls::ClientCertPolicy>,
    pub signing: Option<Arc<crate::config::SigningSpec>>,
    pub trusted_proxies: Vec<super::networks::Cidr>,
    pub rate_limits: crate::config::limits::RateLimits,
}

impl Engine {
    /// Count the request against the global limit and the route's (or the caller's tier's);
    /// the refusal when one is exhausted. Headers for the response go into `outcome`.
    async fn rate_limit(
        &self,
        route: &Route,
        outcome: &mut Outcome<'_>,
        headers: &http::HeaderMap,
        trace: &mut Trace,
    ) -> Option<Denial> {
        let rl = &self.rate_limits;
        let limiter = rl.limiter.as_deref()?;
        let identity = outcome.identity.as_deref();
        // The caller's tier replaces the route's limit, for that caller.
        let route_limit = route.rate_limit.map(|i| {
            identity
                .and_then(|id| id.tier.as_deref())
                .and_then(|t| rl.tiers.get(t).copied())
                .unwrap_or(i)
        });
        let mut shown = None;
        for index in [rl.global, route_limit].into_iter().flatten() {
            let Some(limit) = rl.limits.get(index) else {
                continue;
            };
            let key = limit_key(&limit.key, identity, outcome.client_ip, headers);
            let v = match &rl.redis {
                None => limiter.check(index, limit, &key),
                Some(redis) => match self.redis_check(redis, limit, &key).await {
                    Ok(v) => v,
                    Err(e) => {
                        crate::metrics::metrics().redis_errors.inc();
                        tracing::warn!(error = %e, "rate limit: Redis did not answer");
                        if rl.on_redis_error == Some(crate::config::file::OnRedisError::FailClosed)
                        {
                            let mut d = Denial::new(
                                503,
                                "rate_limit_unavailable",
                                "The rate-limit store is unavailable; try again shortly.",
                            );
                            d.retry_after = Some(1);
                            return Some(d);
                        }
                        // fail_open: count locally, per instance, until Redis is back.
                        limiter.check(index, limit, &key)
                    }
                },
            };
            trace.note(
                || format!("rate limit \"{}\" ({})", limit.name, limit.describe()),
                || {
                    format!(
                        "{} ({} left)",
                        if v.allowed { "within" } else { "exceeded" },
                        v.remaining
                    )
                },
            );
            if !v.allowed {
                crate::metrics::metrics()
                    .rate_limited
                    .with_label_values(&[&route.name, limit.key.label()])
                    .inc();
                let mut d = Denial::new(
                    429,
                    "rate_limited",
                    format!(
                        "Rate limit \"{}\" exceeded: {}. Retry after {} s.",
                        limit.name,
                        limit.describe(),
                        v.reset_secs
                    ),
                );
                d.retry_after = Some(v.reset_secs);
                d.rate_headers = Some((limit.policy_header(), v.header(limit)));
                return Some(d);
            }
            shown = Some((limit.policy_header(), v.header(limit)));
        }
        outcome.rate_headers = shown;
        None
    }

    async fn redis_check(
        &self,
        redis: &crate::ratelimit::redis_backend::RedisLimiter,
        limit: &crate::ratelimit::Limit,
        key: &crate::ratelimit::KeyValue<'_>,
    ) -> Result<crate::ratelimit::Verdict, String> {
        use crate::ratelimit::KeyValue;
        let owned;
        let value: &[u8] = match key {
            KeyValue::Named(_, v) => v,
            KeyValue::Address(ip) => {
                owned = ip.to_string();
                owned.as_bytes()
            }
            KeyValue::Unknown => b"unknown",
        };
        let started = std::time::Instant::now();
        let v = redis.check(limit, value).await;
        crate::metrics::metrics()
            .redis_duration
            .observe(started.elapsed().as_secs_f64());
        v
    }

    /// The engine of a configuration (sharing its keys and caches).
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            routes: RouteTable::new(&config.routes),
            providers: config.providers.clone(),
            api_keys: config.api_keys.clone(),
            revocations: config.revocation.as_ref().map(|r| r.list.clone()),
            client_certs: config.client_certs.clone(),
            signing: config.signing.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            rate_limits: config.rate_limits.clone(),
        }
    }
}

/// One request, as plain data.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a http::Method,
    /// The `Host` (or `:authority`), port allowed.
    pub host: Option<&'a str>,
    /// The path as sent, without the query.
    pub path: &'a str,
    /// The raw query string, if any.
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    /// The TCP peer.
    pub peer: Option<IpAddr>,
    /// Unix seconds.
    pub now: u64,
    /// One more permission the caller must hold (the decision protocol's field).
    pub extra_permission: Option<&'a str>,
    /// The connection's verified client certificate (mTLS listeners).
    pub client_cert: Option<&'a crate::auth::mtls::ClientCert>,
    /// Whether the request came over TLS.
    pub https: bool,
    /// The body, once read for a signed request (see `Outcome::needs_body`).
    pub body: Option<&'a [u8]>,
}

/// What the engine decided, and what it found on the way.
#[derive(Debug)]
pub struct Outcome<'a> {
    /// The canonical path: what was routed, and what is forwarded. `None` when the path
    /// was refused.
    pub path: Option<Cow<'a, str>>,
    pub route: Option<Arc<Route>>,
    pub client_ip: Option<IpAddr>,
    /// The verified caller, when a credential verified.
    pub identity: Option<Arc<Identity>>,
    /// The answer instead of forwarding; `None` to forward.
    pub denial: Option<Denial>,
    /// A refusal that a report-mode policy computed but did not enforce.
    pub reported: Option<Denial>,
    /// `RateLimit-Policy` and `RateLimit` values for an allowed response, when a limit applied.
    pub rate_headers: Option<(String, String)>,
    /// Nothing was decided: the route verifies a signature over the body, so read it (at
    /// most `http_sig::MAX_SIGNED_BODY` bytes) and decide again with `RequestFacts::body`.
    pub needs_body: bool,
}

impl Engine {
    pub async fn decide<'a>(&self, facts: &RequestFacts<'a>, trace: &mut Trace) -> Outcome<'a> {
        let client_ip =
            super::networks::client_ip(facts.peer, facts.headers, &self.trusted_proxies);
        let mut outcome = Outcome {
            path: None,
            route: None,
            client_ip,
            identity: None,
            denial: None,
            reported: None,
            rate_headers: None,
            needs_body: false,
        };
        let path = match canonical_path(facts.path) {
            Ok(p) => p,
            Err(e) => {
                trace.note(|| "path".into(), || format!("refused: {}", e.code()));
                outcome.denial = Some(Denial::new(400, e.code(), e.message()));
                return outcome;
            }
        };
        trace.note(|| "canonical path".into(), || path.to_string());
        let route = match self.routes.find(facts.host, &path, facts.method) {
            RouteMatch::Found(route) => route.clone(),
            RouteMatch::MethodNotAllowed(methods) => {
                let allow = methods
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                trace.note(
                    || "route".into(),
                    || format!("none takes the method; allow {allow}"),
                );
                outcome.denial = Some(Denial::method_not_allowed(allow));
                outcome.path = Some(path);
                return outcome;
            }
            RouteMatch::NotFound => {
                trace.note(|| "route".into(), || "no route matches".into());
                outcome.denial = Some(Denial::route_not_found());
                outcome.path = Some(path);
                return outcome;
            }
        };
        trace.note(
            || "route".into(),
            || format!("{} (upstream #{})", route.name, route.upstream),
        );
        // Borrowed in the common case (the path was already canonical): no copy.
        let canonical = path.clone();
        outcome.path = Some(path);
        let facts = Facts {
            method: facts.method,
            headers: facts.headers,
            query: facts.query,
            client_ip,
            now: facts.now,
            extra_permission: facts.extra_permission,
            client_cert: facts.client_cert,
            host: facts.host,
            path: &canonical,
            https: facts.https,
            body: facts.body,
        };
        let auth = super::Authenticators {
            providers: &self.providers,
            api_keys: self.api_keys.as_deref(),
            revocations: self.revocations.as_deref(),
            client_certs: Some(&self.client_certs),
            bound_tokens: false,
            signing: self.signing.as_deref(),
        };
        let guard = self
            .rate_limits
            .failed_auth
            .as_deref()
            .filter(|_| !route.auth.is_public());
        if let (Some(g), Some(ip)) = (guard, client_ip) {
            if let Some(left) = g.blocked_for(ip) {
                trace.note(
                    || "failed-auth guard".into(),
                    || format!("address blocked for {left} s more"),
                );
                crate::metrics::metrics()
                    .auth_throttled
                    .with_label_values(&["refused"])
                    .inc();
                let mut d = Denial::new(
                    429,
                    "auth_throttled",
                    "Too many failed authentication attempts from this address; try again later.",
                );
                d.retry_after = Some(left);
                outcome.denial = Some(d);
                outcome.route = Some(route);
                return outcome;
            }
        }
        // A signed request's body is read only once the address may still authenticate.
        if facts.body.is_none()
            && route.auth.verifies_signatures()
            && facts.headers.contains_key("signature-input")
        {
            trace.note(|| "body".into(), || "needed for the signature".into());
            outcome.needs_body = true;
            outcome.route = Some(route);
            return outcome;
        }
        let verdict = evaluate(&route.auth, &auth, &facts, trace).await;
        if let (Some(g), Some(ip), Some(401)) =
            (guard, client_ip, verdict.denial.as_ref().map(|d| d.status))
        {
            if g.failed(ip) {
                crate::metrics::metrics()
                    .auth_throttled
                    .with_label_values(&["blocked"])
                    .inc();
                tracing::warn!(client = %ip, "too many failed authentications; address blocked");
            }
        }
        outcome.identity = verdict.identity;
        let mode = route.auth.mode;
        match verdict.denial {
            None => {
                route.allowed.inc();
                if let Some(d) = self
                    .rate_limit(&route, &mut outcome, facts.headers, trace)
                    .await
                {
                    outcome.denial = Some(d);
                }
            }
            Some(d) => {
                crate::metrics::metrics()
                    .policy_decisions
                    .with_label_values(&[&route.name, d.decision_label(), d.code, mode.label()])
                    .inc();
                match mode {
                    Mode::Enforce => outcome.denial = Some(d),
                    Mode::Report => {
                        trace.note(
                            || "mode".into(),
                            || format!("report: would answer {} {}, forwarded", d.status, d.code),
                        );
                        outcome.reported = Some(d);
                    }
                }
            }
        }
        outcome.route = Some(route);
        outcome
    }
}

/// The value a limit counts under. A caller without the value the limit is keyed on (no
/// consumer on a public route, say) is counted per address instead.
fn limit_key<'a>(
    key: &crate::ratelimit::LimitKey,
    identity: Option<&'a Identity>,
    client: Option<IpAddr>,
    headers: &'a http::HeaderMap,
) -> crate::ratelimit::KeyValue<'a> {
    use crate::ratelimit::{KeyValue, LimitKey};
    let named = |kind: &'static str, v: Option<&'a str>| {
        v.filter(|v| !v.is_empty())
            .map(|v| KeyValue::Named(kind, v.as_bytes()))
    };
    let value = match key {
        LimitKey::Consumer => named("consumer", identity.and_then(|i| i.client_id.as_deref())),
        LimitKey::ApiKey => named("api_key", identity.and_then(|i| i.key_id.as_deref())),
        LimitKey::Subject => named("subject", identity.map(|i| i.subject.as_str())),
        LimitKey::Tenant => named("tenant", identity.and_then(|i| i.tenant.as_deref())),
        // A claim mapped to a header (`claims.headers`) is the verified value; otherwise
        // the request's own header.
        LimitKey::Header(h) => identity
            .and_then(|i| i.extra.iter().find(|(n, _)| n == h))
            .map(|(_, v)| KeyValue::Named("header", v.as_bytes()))
            .or_else(|| {
                headers
                    .get(h)
                    .map(|v| KeyValue::Named("header", v.as_bytes()))
            }),
        LimitKey::ClientAddress => None,
    };
    value.unwrap_or(match client {
        Some(ip) => KeyValue::Address(ip),
        None => KeyValue::Unknown,
    })
}
