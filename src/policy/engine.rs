//! `decide`: from the facts of one request to the decision, with no Pingora in sight. The
//! proxy reads a request into `RequestFacts` once and applies the `Decision` once; `explain`
//! and `stdio` call the same function.

use super::{evaluate, Denial, Facts, Mode, Trace};
use crate::auth::jwt::Provider;
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
    pub trusted_proxies: Vec<super::networks::Cidr>,
}

impl Engine {
    /// The engine of a configuration (sharing its keys and caches).
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            routes: RouteTable::new(&config.routes),
            providers: config.providers.clone(),
            api_keys: config.api_keys.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
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
                let mut d = Denial::new(
                    405,
                    "method_not_allowed",
                    "This route does not accept this method; see the Allow header.",
                );
                d.allow = Some(allow);
                outcome.denial = Some(d);
                outcome.path = Some(path);
                return outcome;
            }
            RouteMatch::NotFound => {
                trace.note(|| "route".into(), || "no route matches".into());
                outcome.denial = Some(Denial::new(
                    404,
                    "route_not_found",
                    "No route matches this request.",
                ));
                outcome.path = Some(path);
                return outcome;
            }
        };
        trace.note(
            || "route".into(),
            || format!("{} (upstream #{})", route.name, route.upstream),
        );
        outcome.path = Some(path);
        let facts = Facts {
            method: facts.method,
            headers: facts.headers,
            query: facts.query,
            client_ip,
            now: facts.now,
            extra_permission: facts.extra_permission,
        };
        let auth = super::Authenticators {
            providers: &self.providers,
            api_keys: self.api_keys.as_deref(),
        };
        let verdict = evaluate(&route.auth, &auth, &facts, trace).await;
        outcome.identity = verdict.identity;
        let mode = route.auth.mode;
        match verdict.denial {
            None => route.allowed.inc(),
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
