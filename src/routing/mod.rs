//! The route table: which route, and so which upstream pool, a request belongs to.
//!
//! Routes are tried **most specific first**, whatever their order in the file:
//! 1. routes with a `host` before routes without one;
//! 2. an exact `path` before any `path_prefix`;
//! 3. longer prefixes before shorter ones;
//! 4. routes that list `methods` before routes that take every method;
//! 5. and, only among routes equal on all of that, the order of the file.
//!
//! A prefix matches whole path segments: `/users` matches `/users` and `/users/7` but not
//! `/usersettings`; a prefix that ends in `/` matches everything below it. Host names compare
//! case-insensitively, without the port. When a host and path match but no route takes the
//! method, the answer is 405 with the methods that would have matched.

pub mod canon;

use crate::policy::{Mode, Policy};
use http::Method;
use std::sync::Arc;
use std::time::Duration;

/// What a route matches on its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

/// One route: what it matches, where it goes, and its policy.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub host: Option<String>,
    pub path: PathMatch,
    pub methods: Vec<Method>,
    /// Index of the upstream pool.
    pub upstream: usize,
    /// Per-route upstream timeouts, replacing the pool's.
    pub connect_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
    pub auth: Policy,
    /// Index of the route's rate limit in the configuration's limits.
    pub rate_limit: Option<usize>,
    /// `portcullis_policy_decisions_total` for this route's allowed requests, resolved once.
    pub allowed: prometheus::IntCounter,
    /// CORS for browser clients, when configured (the route's own or the top-level one).
    pub cors: Option<Arc<crate::policy::cors::Cors>>,
    /// WebSocket and other upgrades, when the route lets them through.
    pub upgrades: Option<Upgrades>,
}

/// The limits of a route's upgraded connections (WebSocket). The credential is checked once,
/// on the handshake; `max_lifetime` is what keeps an expired or revoked one from living on an
/// open socket for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upgrades {
    /// No byte either way for this long closes the connection.
    pub idle_timeout: Duration,
    /// The connection is closed at the first frame past this age (an idle one sooner, at
    /// `idle_timeout`): it lives at most `max_lifetime + idle_timeout`.
    pub max_lifetime: Duration,
}

impl Route {
    /// The counter of this route's allowed requests (`portcullis_policy_decisions_total`),
    /// resolved once when the route is built rather than looked up per request.
    pub fn allowed_counter(name: &str, mode: Mode) -> prometheus::IntCounter {
        crate::metrics::metrics()
            .policy_decisions
            .with_label_values(&[name, "allow", "ok", mode.label()])
    }

    fn matches_target(&self, host: Option<&str>, path: &str) -> bool {
        if let Some(want) = &self.host {
            match host {
                Some(h) if h.eq_ignore_ascii_case(want) => {}
                _ => return false,
            }
        }
        match &self.path {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => prefix_matches(p, path),
        }
    }

    fn takes(&self, method: &Method) -> bool {
        self.methods.is_empty() || self.methods.contains(method)
    }

    fn specificity(&self) -> (bool, bool, usize, bool) {
        let (exact, len) = match &self.path {
            PathMatch::Exact(p) => (true, p.len()),
            PathMatch::Prefix(p) => (false, p.len()),
        };
        (self.host.is_some(), exact, len, !self.methods.is_empty())
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/')
            || path.len() == prefix.len()
            || path.as_bytes()[prefix.len()] == b'/')
}

/// What the table says about one request.
#[derive(Debug)]
pub enum RouteMatch<'a> {
    Found(&'a Arc<Route>),
    /// Host and path matched, the method did not; these methods would have.
    MethodNotAllowed(Vec<&'a Method>),
    NotFound,
}

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        let mut routes: Vec<Arc<Route>> = routes.into_iter().map(Arc::new).collect();
        // Stable sort: equal specificity keeps the file's order.
        routes.sort_by_key(|r| std::cmp::Reverse(r.specificity()));
        Self { routes }
    }

    /// The routes in the order they are tried.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// `host` is the request's Host (any case, port allowed); `path` excludes the query.
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method) -> RouteMatch<'_> {
        let host = host.map(strip_port);
        let mut first_target_match = None;
        for (i, r) in self.routes.iter().enumerate() {
            if r.matches_target(host, path) {
                if r.takes(method) {
                    return RouteMatch::Found(r);
                }
                first_target_match.get_or_insert(i);
            }
        }
        match first_target_match {
            None => RouteMatch::NotFound,
            Some(start) => {
                let mut allowed: Vec<&Method> = Vec::new();
                for r in &self.routes[start..] {
                    if r.matches_target(host, path) {
                        for m in &r.methods {
                            if !allowed.contains(&m) {
                                allowed.push(m);
                            }
                        }
                    }
                }
                RouteMatch::MethodNotAllowed(allowed)
            }
        }
    }
}

/// `example.com:8080` -> `example.com`; `[::1]:8080` -> `[::1]`.
/// The host without its port and without a trailing dot (`API.example.com.:443` and
/// `api.example.com` are one host; names compare case-insensitively).
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    let name = match host.rfind(':') {
        Some(i) => &host[..i],
        None => host,
    };
    name.strip_suffix('.').unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, host: Option<&str>, path: PathMatch, methods: &[&str]) -> Route {
        Route {
            name: name.into(),
            host: host.map(str::to_string),
            path,
            methods: methods
                .iter()
                .map(|m| Method::from_bytes(m.as_bytes()).unwrap_or(Method::GET))
                .collect(),
            upstream: 0,
            connect_timeout: None,
            read_timeout: None,
            write_timeout: None,
            auth: Policy::public(),
            rate_limit: None,
            cors: None,
            upgrades: None,
            allowed: Route::allowed_counter(name, Mode::Enforce),
        }
    }

    fn name<'a>(m: RouteMatch<'a>) -> &'a str {
        match m {
            RouteMatch::Found(r) => &r.name,
            RouteMatch::MethodNotAllowed(_) => "405",
            RouteMatch::NotFound => "404",
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(vec![
            spec("catch_all", None, PathMatch::Prefix("/".into()), &[]),
            spec("api", None, PathMatch::Prefix("/api".into()), &[]),
            spec(
                "api_users",
                None,
                PathMatch::Prefix("/api/users".into()),
                &[],
            ),
            spec(
                "login",
                None,
                PathMatch::Exact("/api/login".into()),
                &["POST"],
            ),
            spec(
                "admin_host",
                Some("admin.example.com"),
                PathMatch::Prefix("/".into()),
                &[],
            ),
        ])
    }

    #[test]
    fn most_specific_route_wins_regardless_of_file_order() {
        let t = table();
        let get = Method::GET;
        assert_eq!(name(t.find(None, "/api/users/7", &get)), "api_users");
        assert_eq!(name(t.find(None, "/api/orders", &get)), "api");
        assert_eq!(name(t.find(None, "/other", &get)), "catch_all");
        assert_eq!(
            name(t.find(Some("ADMIN.example.com:443"), "/api", &get)),
            "admin_host"
        );
        assert_eq!(name(t.find(Some("www.example.com"), "/api", &get)), "api");
    }

    #[test]
    fn prefix_matches_whole_segments_only() {
        let t = RouteTable::new(vec![spec(
            "u",
            None,
            PathMatch::Prefix("/users".into()),
            &[],
        )]);
        assert_eq!(name(t.find(None, "/users", &Method::GET)), "u");
        assert_eq!(name(t.find(None, "/users/", &Method::GET)), "u");
        assert_eq!(name(t.find(None, "/users/1", &Method::GET)), "u");
        assert_eq!(name(t.find(None, "/usersettings", &Method::GET)), "404");
        assert_eq!(name(t.find(None, "/", &Method::GET)), "404");
    }

    #[test]
    fn exact_path_and_method_mismatch_falls_through_then_405() {
        let t = table();
        // POST /api/login is the exact route; GET falls through to the /api prefix.
        assert_eq!(name(t.find(None, "/api/login", &Method::POST)), "login");
        assert_eq!(name(t.find(None, "/api/login", &Method::GET)), "api");
        let only = RouteTable::new(vec![spec(
            "login",
            None,
            PathMatch::Exact("/login".into()),
            &["POST", "PUT"],
        )]);
        match only.find(None, "/login", &Method::GET) {
            RouteMatch::MethodNotAllowed(m) => {
                assert_eq!(m, vec![&Method::POST, &Method::PUT]);
            }
            other => panic!("expected 405, got {other:?}"),
        }
    }

    #[test]
    fn host_with_ipv6_literal_keeps_brackets() {
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("example.com:80"), "example.com");
    }
}
