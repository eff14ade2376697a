//! ForwardAuth (as Traefik's middleware of that name): an auth service of the operator's
//! decides each request. The gateway sends it a `GET` with what the request is (its method,
//! scheme, host, path and query in `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`, and the
//! client in `X-Forwarded-For`) and the request headers the service is configured to see
//! (`Authorization`, `Cookie`, ...); never the body.
//!
//! - A `2xx` allows the request: the configured response headers (all in the identity
//!   namespace, so the client's own copies were removed) go to the backend with it, and
//!   `subject_header`'s value names the caller in the log and for rate limits, and
//!   `roles_header`'s comma-separated values are the caller's roles, for the route's `roles`.
//! - Any other answer is the client's answer: its status, its body (at most 64 KiB) and the
//!   headers that make a refusal or a login redirect work (`Content-Type`, `WWW-Authenticate`,
//!   `Location`, `Retry-After`, `Cache-Control`).
//! - No answer (a timeout, a refused connection, an answer too large) is `503
//!   auth_unavailable` with `Retry-After`, and counts toward a circuit breaker, as for
//!   introspection: at most `max_concurrent` calls are in flight, and after `failures` failed
//!   calls in a row the service is not called for `open_for`, then one probe decides.
//!
//! Answers are not cached: the service sees every request, as it expects to.

use super::breaker::GuardedCalls;
use super::Identity;
use crate::metrics::metrics;
use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Largest answer read from the service.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The service's response headers a refusal keeps for the client.
const REFUSAL_HEADERS: [&str; 5] = [
    "content-type",
    "www-authenticate",
    "location",
    "retry-after",
    "cache-control",
];

#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub timeout: Duration,
    /// Request headers copied to the service's request.
    pub request_headers: Vec<HeaderName>,
    /// The service's response headers copied to the upstream request on a 2xx.
    pub response_headers: Vec<HeaderName>,
    /// The response header (one of `response_headers`) whose value is the caller's subject.
    pub subject_header: Option<HeaderName>,
    /// The response header (one of `response_headers`) listing the caller's roles.
    pub roles_header: Option<HeaderName>,
    pub max_concurrent: usize,
    /// Of those, at most this many for one client address.
    pub max_per_client: usize,
    pub breaker_failures: u32,
    pub breaker_open_for: Duration,
}

/// What the service is told about one request.
pub struct Ask<'a> {
    pub method: &'a str,
    pub https: bool,
    pub host: Option<&'a str>,
    /// The path (canonical) and query.
    pub uri: &'a str,
    pub client: Option<IpAddr>,
    pub headers: &'a HeaderMap,
}

/// The service's decision.
#[derive(Debug)]
pub enum Outcome {
    Allowed(Arc<Identity>),
    /// Its own answer, for the client.
    Refused {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Bytes,
    },
    /// No usable answer: 503, retry after this many seconds.
    Unavailable {
        retry_after: u64,
    },
}

pub struct ForwardAuth {
    pub name: String,
    pub settings: Settings,
    client: reqwest::Client,
    calls: GuardedCalls,
}

impl std::fmt::Debug for ForwardAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardAuth")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ForwardAuth {
    pub fn new(name: &str, settings: Settings) -> Result<Self, String> {
        let client = super::http_client(settings.timeout, settings.max_concurrent)?;
        let calls = GuardedCalls::new(
            format!("ForwardAuth service \"{name}\""),
            settings.timeout,
            (settings.max_concurrent, settings.max_per_client),
            (settings.breaker_failures, settings.breaker_open_for),
            metrics().forward_auth_breaker.with_label_values(&[name]),
        );
        Ok(Self {
            name: name.to_string(),
            client,
            calls,
            settings,
        })
    }

    /// Ask the service about one request.
    pub async fn check(&self, ask: &Ask<'_>) -> Outcome {
        let (status, headers, body) = match self.calls.call(ask.client, self.call(ask)).await {
            Ok(answer) => answer,
            Err(failed) => {
                self.count(failed.outcome);
                return Outcome::Unavailable {
                    retry_after: failed.retry_after,
                };
            }
        };
        if (200..300).contains(&status) {
            self.count("allowed");
            return Outcome::Allowed(Arc::new(self.identity(&headers)));
        }
        self.count("denied");
        let kept = REFUSAL_HEADERS
            .iter()
            .filter_map(|name| {
                let value = headers.get(*name)?.to_str().ok()?;
                Some((*name, value.to_string()))
            })
            .collect();
        Outcome::Refused {
            status,
            headers: kept,
            body,
        }
    }

    async fn call(&self, ask: &Ask<'_>) -> Result<(u16, HeaderMap, Bytes), &'static str> {
        let mut req = self
            .client
            .get(&self.settings.url)
            .header("x-forwarded-method", ask.method)
            .header(
                "x-forwarded-proto",
                if ask.https { "https" } else { "http" },
            )
            .header("x-forwarded-uri", ask.uri);
        if let Some(host) = ask.host {
            req = req.header("x-forwarded-host", host);
        }
        if let Some(ip) = ask.client {
            req = req.header("x-forwarded-for", ip.to_string());
        }
        for name in &self.settings.request_headers {
            for value in ask.headers.get_all(name) {
                req = req.header(name, value);
            }
        }
        let resp = req.send().await.map_err(|e| {
            let why = super::fetch::transport(&e);
            tracing::warn!(service = %self.name, "the ForwardAuth service {}", match why {
                "timeout" => "did not answer in time",
                _ => "is unreachable",
            });
            why
        })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = super::fetch::read_bounded(resp, MAX_RESPONSE_BYTES).await?;
        Ok((status, headers, Bytes::from(body)))
    }

    /// The caller a 2xx vouches for: its listed headers, and the subject among them.
    fn identity(&self, answer: &HeaderMap) -> Identity {
        let s = &self.settings;
        let value = |name: &HeaderName| {
            answer
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let subject = s
            .subject_header
            .as_ref()
            .and_then(value)
            .unwrap_or_default();
        let extra = s
            .response_headers
            .iter()
            // The subject goes to the backend as `X-User-ID` anyway.
            .filter(|name| *name != "x-user-id" || subject.is_empty())
            .filter_map(|name| Some((name.clone(), value(name)?)))
            .collect();
        let roles = s
            .roles_header
            .iter()
            .flat_map(|name| answer.get_all(name))
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|role| !role.is_empty())
            .map(str::to_string)
            .collect();
        Identity {
            method: "forward_auth",
            provider: self.name.clone(),
            subject,
            roles,
            extra,
            ..Identity::default()
        }
    }

    fn count(&self, outcome: &str) {
        metrics()
            .forward_auth_calls
            .with_label_values(&[self.name.as_str(), outcome])
            .inc();
    }
}
