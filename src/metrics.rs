//! Every Prometheus metric Portcullis exports, in one place. All names start with
//! `portcullis_`; they live in their own registry, served on the admin listener's `/metrics`.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `portcullis_requests_total` | counter | `route`, `method`, `status_class` | requests answered, by route (`none` when no route matched), method (`OTHER` for non-standard ones) and status class (`2xx` ... `5xx`) |
//! | `portcullis_request_duration_seconds` | histogram | `route` | time from the request header to the end of the response |
//! | `portcullis_upstream_connect_errors_total` | counter | `upstream`, `backend` | failed connection attempts to a backend (each retry counts) |
//! | `portcullis_backend_healthy` | gauge | `upstream`, `backend` | 1 while the health check considers the backend healthy, else 0 |
//! | `portcullis_config_reloads_total` | counter | `result` | configurations loaded by this process (`success`); a reload is a graceful upgrade, so each new process counts its own |
//! | `portcullis_config_last_reload_timestamp_seconds` | gauge | | Unix time at which the running configuration was loaded |
//! | `portcullis_access_log_dropped_total` | counter | | access-log lines dropped because the writer could not keep up |
//! | `portcullis_auth_decisions_total` | counter | `provider`, `result`, `reason` | authentication outcomes on protected routes: `result` is `allow` or `deny`, `reason` the stable error code (`ok` when allowed) |
//! | `portcullis_policy_decisions_total` | counter | `route`, `decision`, `reason`, `mode` | every decision on a matched route: `decision` is `allow`, `deny` or `unavailable`, `reason` the stable code (`ok` when allowed), `mode` `enforce` or `report` (report-mode refusals are counted, then forwarded) |
//! | `portcullis_consumers_reloads_total` | counter | `outcome` | consumers-file reloads: `success`, or `invalid` (the file was refused as a whole; the keys in force stay) |
//! | `portcullis_rate_limited_total` | counter | `route`, `key` | requests refused with 429 by a limit counted per `key` (`consumer`, `api_key`, `subject`, `tenant`, `client_address`, `header`) |
//! | `portcullis_rate_limit_keys` | gauge | | keys the local limiter tracks (read at scrape time) |
//! | `portcullis_auth_throttled_total` | counter | `event` | failed-authentication guard: `blocked` (an address went over and is blocked), `refused` (a request from a blocked address got 429) |
//! | `portcullis_redis_duration_seconds` | histogram | | round-trip time of rate-limit decisions in Redis |
//! | `portcullis_redis_errors_total` | counter | | rate-limit decisions Redis did not answer (then `fail_open` counts locally, `fail_closed` answers 503) |
//! | `portcullis_api_keys` | gauge | | API keys loaded from the consumers file |
//! | `portcullis_signing_keys` | gauge | | HMAC signing keys loaded from the signing keys file |
//! | `portcullis_signing_key_reloads_total` | counter | `result` | signing keys file reloads: `success`, `invalid` |
//! | `portcullis_signature_nonces_total` | counter | `result` | signed-request nonces: `fresh`, `replayed`, `store_full`, `store_error` |
//! | `portcullis_jwt_cache_total` | counter | `provider`, `result` | verified-token cache lookups that found (`hit`) or did not find (`miss`) a valid entry |
//! | `portcullis_jwt_verify_duration_seconds` | histogram | `provider` | time to verify a token that was not cached (signature and claims) |
//! | `portcullis_jwt_keys` | gauge | `provider` | keys loaded for the provider |
//! | `portcullis_jwks_fetches_total` | counter | `provider`, `outcome` | JWKS fetches: `success`, `timeout`, `unreachable`, `bad_status`, `too_large`, `invalid`, `no_usable_keys`, `discovery_invalid` |
//! | `portcullis_jwks_age_seconds` | gauge | `provider` | seconds since the last successful JWKS fetch |
//! | `portcullis_introspection_requests_total` | counter | `provider`, `outcome` | introspection calls: `active`, `inactive`, `refused` (active but wrong issuer, audience or claims), `timeout`, `unreachable`, `bad_status`, `unauthorized` (the endpoint refused the gateway's client credentials), `invalid_response`, `too_large` (over 64 KiB), `discovery_invalid`, `busy`, `circuit_open` (not sent: the breaker is open) |
//! | `portcullis_introspection_duration_seconds` | histogram | `provider` | time of an introspection call (from sending to its answer or timeout) |
//! | `portcullis_introspection_cache_total` | counter | `provider`, `result` | introspection cache lookups: `hit`, or `miss` (this request made the call) |
//! | `portcullis_introspection_singleflight_joins_total` | counter | `provider` | requests that waited for another request's call for the same token instead of making their own |
//! | `portcullis_introspection_breaker_state` | gauge | `provider` | 0 closed, 1 open (requests needing a call fail fast with 503) |
//! | `portcullis_forward_auth_requests_total` | counter | `service`, `outcome` | ForwardAuth calls: `allowed` (2xx), `denied` (any other answer, returned to the client), `timeout`, `unreachable`, `too_large` (an answer over 64 KiB), `busy` (no free slot in time), `client_busy` (not sent: the client address has its share of calls in flight), `circuit_open` (not sent: the breaker is open) |
//! | `portcullis_forward_auth_breaker_state` | gauge | `service` | 0 closed, 1 open (requests needing the service fail fast with 503) |
//! | `portcullis_opa_requests_total` | counter | `server`, `outcome` | OPA decisions: `decided` (an answer with a result or undefined), `cached` (from the cache, not sent), `policy_error` (OPA's error on the input: 500 to the client, the breaker untouched), `error_status`, `invalid_response`, `timeout`, `unreachable`, `too_large` (an answer over 1 MiB), `busy` (no free slot in time), `client_busy` (not sent: the client address has its share of calls in flight), `circuit_open` (not sent: the breaker is open) |
//! | `portcullis_opa_breaker_state` | gauge | `server` | 0 closed, 1 open (requests the server decides fail fast with 503) |
//! | `portcullis_rego_errors_total` | counter | `route` | Rego evaluations that failed (the request got `500 policy_error`) |
//! | `portcullis_revocations_active` | gauge | `kind` | entries on the revocation list: `jti`, `subject`, `token` (read at scrape time) |
//! | `portcullis_revoked_rejections_total` | counter | `provider` | requests refused because their token was revoked |
//! | `portcullis_client_cert_refusals_total` | counter | `reason` | client certificates refused by the CRL: `revoked`, `crl_stale`, `resumed_revoked` |
//! | `portcullis_revocation_sync_total` | counter | `event` | shared revocation list: `loaded` (full load from Redis), `message` (an update from another gateway applied), `error` |
//! | `portcullis_open_connections` | gauge | `listener`, `protocol` | client connections open now, by listener address and protocol (`http/1.1`, `h2`; `tls` while the handshake runs) |
//! | `portcullis_connections_closed_total` | counter | `listener`, `reason` | client connections the gateway ended itself: `connection_limit` (refused at accept), `tls_handshake_timeout`, `request_header_timeout` (408), `preface_timeout` (HTTP/2), `request_head_too_large` (431), `line_too_large` (414 for the request line, 431 for a header field), `invalid_chunk` (400: a control byte in a chunk extension) |
//! | `portcullis_upgraded_connections` | gauge | `route` | upgraded connections (WebSocket) open now, by route |
//! | `portcullis_upgraded_connections_closed_total` | counter | `route`, `reason` | upgraded connections the gateway ended: `max_lifetime` |
//! | `portcullis_build_info` | gauge | `version` | always 1 |

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::LazyLock;

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_connect_errors: IntCounterVec,
    pub backend_healthy: IntGaugeVec,
    pub config_reloads: IntCounterVec,
    pub config_last_reload: IntGauge,
    pub access_log_dropped: IntCounter,
    pub auth_decisions: IntCounterVec,
    pub policy_decisions: IntCounterVec,
    pub consumer_reloads: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub rate_limit_keys: IntGauge,
    pub auth_throttled: IntCounterVec,
    pub redis_duration: Histogram,
    pub redis_errors: IntCounter,
    pub api_keys: IntGauge,
    pub signing_keys: IntGauge,
    pub signing_key_reloads: IntCounterVec,
    pub signature_nonces: IntCounterVec,
    pub jwt_cache: IntCounterVec,
    pub jwt_verify_duration: HistogramVec,
    pub jwt_keys: IntGaugeVec,
    pub jwks_fetches: IntCounterVec,
    pub jwks_age: GaugeVec,
    pub introspection_calls: IntCounterVec,
    pub introspection_duration: HistogramVec,
    pub introspection_cache: IntCounterVec,
    pub introspection_joins: IntCounterVec,
    pub introspection_breaker: IntGaugeVec,
    pub forward_auth_calls: IntCounterVec,
    pub forward_auth_breaker: IntGaugeVec,
    pub opa_calls: IntCounterVec,
    pub opa_breaker: IntGaugeVec,
    pub rego_errors: IntCounterVec,
    pub revocations_active: IntGaugeVec,
    pub revoked_rejections: IntCounterVec,
    pub client_cert_refusals: IntCounterVec,
    pub revocation_sync: IntCounterVec,
    pub build_info: GaugeVec,
    pub open_connections: IntGaugeVec,
    pub upgraded_connections: IntGaugeVec,
    pub upgraded_closed: IntCounterVec,
    pub connections_closed: IntCounterVec,
}

/// Buckets from 0.5 ms to 10 s: a gateway's own overhead lives at the low end.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let requests = IntCounterVec::new(
        Opts::new("portcullis_requests_total", "Requests answered"),
        &["route", "method", "status_class"],
    )?;
    let request_duration = HistogramVec::new(
        HistogramOpts::new(
            "portcullis_request_duration_seconds",
            "Time from request header to end of response",
        )
        .buckets(DURATION_BUCKETS.to_vec()),
        &["route"],
    )?;
    let upstream_connect_errors = IntCounterVec::new(
        Opts::new(
            "portcullis_upstream_connect_errors_total",
            "Failed connection attempts to upstream backends",
        ),
        &["upstream", "backend"],
    )?;
    let backend_healthy = IntGaugeVec::new(
        Opts::new(
            "portcullis_backend_healthy",
            "1 while the backend passes its health check, else 0",
        ),
        &["upstream", "backend"],
    )?;
    let config_reloads = IntCounterVec::new(
        Opts::new(
            "portcullis_config_reloads_total",
            "Configurations loaded by this process",
        ),
        &["result"],
    )?;
    let config_last_reload = IntGauge::new(
        "portcullis_config_last_reload_timestamp_seconds",
        "Unix time the running configuration was loaded",
    )?;
    let access_log_dropped = IntCounter::new(
        "portcullis_access_log_dropped_total",
        "Access-log lines dropped because the writer could not keep up",
    )?;
    let auth_decisions = IntCounterVec::new(
        Opts::new(
            "portcullis_auth_decisions_total",
            "Authentication outcomes on protected routes",
        ),
        &["provider", "result", "reason"],
    )?;
    let policy_decisions = IntCounterVec::new(
        Opts::new(
            "portcullis_policy_decisions_total",
            "Route policy decisions by route, decision, reason and mode",
        ),
        &["route", "decision", "reason", "mode"],
    )?;
    let consumer_reloads = IntCounterVec::new(
        Opts::new(
            "portcullis_consumers_reloads_total",
            "Consumers file reloads by outcome",
        ),
        &["outcome"],
    )?;
    let rate_limited = IntCounterVec::new(
        Opts::new(
            "portcullis_rate_limited_total",
            "Requests refused by a rate limit, by route and key kind",
        ),
        &["route", "key"],
    )?;
    let rate_limit_keys = IntGauge::new(
        "portcullis_rate_limit_keys",
        "Keys the local rate limiter tracks",
    )?;
    let auth_throttled = IntCounterVec::new(
        Opts::new(
            "portcullis_auth_throttled_total",
            "Failed-authentication guard: addresses blocked, and requests refused while blocked",
        ),
        &["event"],
    )?;
    let redis_duration = Histogram::with_opts(
        HistogramOpts::new(
            "portcullis_redis_duration_seconds",
            "Round-trip time of rate-limit decisions in Redis",
        )
        .buckets(vec![
            0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1,
        ]),
    )?;
    let redis_errors = IntCounter::new(
        "portcullis_redis_errors_total",
        "Rate-limit decisions Redis did not answer (timeouts, connection errors)",
    )?;
    let api_keys = IntGauge::new(
        "portcullis_api_keys",
        "API keys loaded from the consumers file",
    )?;
    let jwt_cache = IntCounterVec::new(
        Opts::new("portcullis_jwt_cache_total", "Verified-token cache lookups"),
        &["provider", "result"],
    )?;
    let jwt_verify_duration = HistogramVec::new(
        HistogramOpts::new(
            "portcullis_jwt_verify_duration_seconds",
            "Time to verify a token that was not cached",
        )
        .buckets(vec![
            0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.0025, 0.01,
        ]),
        &["provider"],
    )?;
    let jwt_keys = IntGaugeVec::new(
        Opts::new("portcullis_jwt_keys", "Keys loaded per identity provider"),
        &["provider"],
    )?;
    let jwks_fetches = IntCounterVec::new(
        Opts::new("portcullis_jwks_fetches_total", "JWKS fetches by outcome"),
        &["provider", "outcome"],
    )?;
    let jwks_age = GaugeVec::new(
        Opts::new(
            "portcullis_jwks_age_seconds",
            "Seconds since the last successful JWKS fetch",
        ),
        &["provider"],
    )?;
    let introspection_calls = IntCounterVec::new(
        Opts::new(
            "portcullis_introspection_requests_total",
            "Introspection calls by outcome",
        ),
        &["provider", "outcome"],
    )?;
    let introspection_duration = HistogramVec::new(
        HistogramOpts::new(
            "portcullis_introspection_duration_seconds",
            "Time of an introspection call",
        )
        .buckets(DURATION_BUCKETS.to_vec()),
        &["provider"],
    )?;
    let introspection_cache = IntCounterVec::new(
        Opts::new(
            "portcullis_introspection_cache_total",
            "Introspection cache lookups",
        ),
        &["provider", "result"],
    )?;
    let introspection_joins = IntCounterVec::new(
        Opts::new(
            "portcullis_introspection_singleflight_joins_total",
            "Requests that shared another request's introspection call",
        ),
        &["provider"],
    )?;
    let introspection_breaker = IntGaugeVec::new(
        Opts::new(
            "portcullis_introspection_breaker_state",
            "Introspection circuit breaker: 0 closed, 1 open",
        ),
        &["provider"],
    )?;
    let forward_auth_calls = IntCounterVec::new(
        Opts::new(
            "portcullis_forward_auth_requests_total",
            "ForwardAuth calls by outcome",
        ),
        &["service", "outcome"],
    )?;
    let forward_auth_breaker = IntGaugeVec::new(
        Opts::new(
            "portcullis_forward_auth_breaker_state",
            "ForwardAuth circuit breaker: 0 closed, 1 open",
        ),
        &["service"],
    )?;
    let opa_calls = IntCounterVec::new(
        Opts::new(
            "portcullis_opa_requests_total",
            "OPA server decisions by outcome",
        ),
        &["server", "outcome"],
    )?;
    let opa_breaker = IntGaugeVec::new(
        Opts::new(
            "portcullis_opa_breaker_state",
            "OPA server circuit breaker: 0 closed, 1 open",
        ),
        &["server"],
    )?;
    let rego_errors = IntCounterVec::new(
        Opts::new(
            "portcullis_rego_errors_total",
            "Rego evaluations that failed",
        ),
        &["route"],
    )?;
    let revocations_active = IntGaugeVec::new(
        Opts::new(
            "portcullis_revocations_active",
            "Entries on the revocation list",
        ),
        &["kind"],
    )?;
    let revoked_rejections = IntCounterVec::new(
        Opts::new(
            "portcullis_revoked_rejections_total",
            "Requests refused because their token was revoked",
        ),
        &["provider"],
    )?;
    let revocation_sync = IntCounterVec::new(
        Opts::new(
            "portcullis_revocation_sync_total",
            "Shared revocation list events",
        ),
        &["event"],
    )?;
    let build_info = GaugeVec::new(
        Opts::new("portcullis_build_info", "Build information, always 1"),
        &["version"],
    )?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(request_duration.clone()))?;
    registry.register(Box::new(upstream_connect_errors.clone()))?;
    registry.register(Box::new(backend_healthy.clone()))?;
    registry.register(Box::new(config_reloads.clone()))?;
    registry.register(Box::new(config_last_reload.clone()))?;
    registry.register(Box::new(access_log_dropped.clone()))?;
    registry.register(Box::new(auth_decisions.clone()))?;
    registry.register(Box::new(policy_decisions.clone()))?;
    registry.register(Box::new(consumer_reloads.clone()))?;
    registry.register(Box::new(rate_limited.clone()))?;
    registry.register(Box::new(rate_limit_keys.clone()))?;
    registry.register(Box::new(auth_throttled.clone()))?;
    registry.register(Box::new(redis_duration.clone()))?;
    registry.register(Box::new(redis_errors.clone()))?;
    registry.register(Box::new(api_keys.clone()))?;
    let signing_keys = IntGauge::new(
        "portcullis_signing_keys",
        "HMAC signing keys loaded from the signing keys file.",
    )?;
    registry.register(Box::new(signing_keys.clone()))?;
    let signing_key_reloads = IntCounterVec::new(
        Opts::new(
            "portcullis_signing_key_reloads_total",
            "Signing keys file reloads, by result.",
        ),
        &["result"],
    )?;
    registry.register(Box::new(signing_key_reloads.clone()))?;
    let signature_nonces = IntCounterVec::new(
        Opts::new(
            "portcullis_signature_nonces_total",
            "Nonces of verified signed requests, by result.",
        ),
        &["result"],
    )?;
    registry.register(Box::new(signature_nonces.clone()))?;
    registry.register(Box::new(jwt_cache.clone()))?;
    registry.register(Box::new(jwt_verify_duration.clone()))?;
    registry.register(Box::new(jwt_keys.clone()))?;
    registry.register(Box::new(jwks_fetches.clone()))?;
    registry.register(Box::new(jwks_age.clone()))?;
    registry.register(Box::new(introspection_calls.clone()))?;
    registry.register(Box::new(introspection_duration.clone()))?;
    registry.register(Box::new(introspection_cache.clone()))?;
    registry.register(Box::new(introspection_joins.clone()))?;
    registry.register(Box::new(introspection_breaker.clone()))?;
    registry.register(Box::new(forward_auth_calls.clone()))?;
    registry.register(Box::new(forward_auth_breaker.clone()))?;
    registry.register(Box::new(opa_calls.clone()))?;
    registry.register(Box::new(opa_breaker.clone()))?;
    registry.register(Box::new(rego_errors.clone()))?;
    registry.register(Box::new(revocations_active.clone()))?;
    registry.register(Box::new(revoked_rejections.clone()))?;
    let client_cert_refusals = IntCounterVec::new(
        Opts::new(
            "portcullis_client_cert_refusals_total",
            "Client certificates refused by the revocation lists, by reason.",
        ),
        &["reason"],
    )?;
    registry.register(Box::new(client_cert_refusals.clone()))?;
    registry.register(Box::new(revocation_sync.clone()))?;
    registry.register(Box::new(build_info.clone()))?;
    let open_connections = IntGaugeVec::new(
        Opts::new(
            "portcullis_open_connections",
            "Client connections open now, by listener and protocol.",
        ),
        &["listener", "protocol"],
    )?;
    registry.register(Box::new(open_connections.clone()))?;
    let upgraded_connections = IntGaugeVec::new(
        Opts::new(
            "portcullis_upgraded_connections",
            "Upgraded connections (WebSocket) open now, by route.",
        ),
        &["route"],
    )?;
    registry.register(Box::new(upgraded_connections.clone()))?;
    let upgraded_closed = IntCounterVec::new(
        Opts::new(
            "portcullis_upgraded_connections_closed_total",
            "Upgraded connections the gateway ended, by route and reason.",
        ),
        &["route", "reason"],
    )?;
    registry.register(Box::new(upgraded_closed.clone()))?;
    let connections_closed = IntCounterVec::new(
        Opts::new(
            "portcullis_connections_closed_total",
            "Client connections the gateway ended itself, by reason.",
        ),
        &["listener", "reason"],
    )?;
    registry.register(Box::new(connections_closed.clone()))?;
    build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1.0);
    Ok(Metrics {
        registry,
        requests,
        request_duration,
        upstream_connect_errors,
        backend_healthy,
        config_reloads,
        config_last_reload,
        access_log_dropped,
        auth_decisions,
        policy_decisions,
        consumer_reloads,
        rate_limited,
        rate_limit_keys,
        auth_throttled,
        redis_duration,
        redis_errors,
        api_keys,
        signing_keys,
        signing_key_reloads,
        signature_nonces,
        jwt_cache,
        jwt_verify_duration,
        jwt_keys,
        jwks_fetches,
        jwks_age,
        introspection_calls,
        introspection_duration,
        introspection_cache,
        introspection_joins,
        introspection_breaker,
        forward_auth_calls,
        forward_auth_breaker,
        opa_calls,
        opa_breaker,
        rego_errors,
        revocations_active,
        revoked_rejections,
        client_cert_refusals,
        revocation_sync,
        build_info,
        open_connections,
        upgraded_connections,
        upgraded_closed,
        connections_closed,
    })
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| match build() {
    Ok(m) => m,
    // Only reachable through a programming error (duplicate or invalid metric names),
    // which the unit test below catches.
    Err(e) => panic!("metric definitions are invalid: {e}"),
});

pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// One provider's hot-path series, resolved once so that a request does not hash labels.
#[derive(Clone, Debug)]
pub struct ProviderSeries {
    pub cache_hit: IntCounter,
    pub cache_miss: IntCounter,
    pub verify_duration: Histogram,
    pub allowed: IntCounter,
}

impl ProviderSeries {
    pub fn new(provider: &str) -> Self {
        let m = metrics();
        Self {
            cache_hit: m.jwt_cache.with_label_values(&[provider, "hit"]),
            cache_miss: m.jwt_cache.with_label_values(&[provider, "miss"]),
            verify_duration: m.jwt_verify_duration.with_label_values(&[provider]),
            allowed: m
                .auth_decisions
                .with_label_values(&[provider, "allow", "ok"]),
        }
    }
}

/// `2xx`-style label for a status code; `0` (no response) counts as `none`.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}

/// Method label with bounded cardinality.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// The registry in the Prometheus text exposition format.
pub fn render() -> Vec<u8> {
    let mut buf = Vec::with_capacity(8192);
    let families = metrics().registry.gather();
    if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_metrics_register_and_render_with_prefix() {
        metrics()
            .requests
            .with_label_values(&["r", "GET", "2xx"])
            .inc();
        let text = String::from_utf8(render()).unwrap();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("portcullis_"), "unprefixed series: {line}");
        }
        assert!(text.contains("portcullis_build_info{version="));
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(0), "none");
        assert_eq!(
            method_label(&http::Method::from_bytes(b"BREW").unwrap()),
            "OTHER"
        );
    }
}
