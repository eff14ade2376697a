//! CORS (the Fetch standard's CORS protocol) for a route: which browser origins may read its
//! responses, and the preflight answer the gateway gives itself. A preflight carries no
//! credentials, so it is answered before authentication and never reaches a backend; the
//! actual responses — refusals included, so a page can read a 401's JSON — carry the
//! `Access-Control-Allow-*` headers when the request's `Origin` is allowed, and nothing when
//! it is not (the browser then keeps the response from the page). Pure: headers in, headers
//! out.

use http::{HeaderMap, Method};

/// An allowed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// Any origin (`*`); never with credentials.
    Any,
    /// Exactly this serialized origin, `scheme://host[:port]`, lower-case.
    Exact(String),
    /// `scheme://*.suffix[:port]`: any host with at least one label before `suffix`, with this
    /// scheme and port (`https://*.example.com` takes `https://a.example.com` and
    /// `https://a.b.example.com`, not `https://example.com` or `http://a.example.com`).
    Subdomains { scheme: String, suffix: String },
}

impl OriginPattern {
    fn matches(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(o) => origin.eq_ignore_ascii_case(o),
            Self::Subdomains { scheme, suffix } => {
                let origin = origin.to_ascii_lowercase();
                let Some(rest) = origin
                    .strip_prefix(scheme.as_str())
                    .and_then(|r| r.strip_prefix("://"))
                else {
                    return false;
                };
                // `suffix` starts with the dot, and is followed by the same port (or none).
                rest.strip_suffix(suffix.as_str()).is_some_and(|labels| {
                    !labels.is_empty()
                        && labels
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                        && !labels.starts_with('.')
                        && !labels.ends_with('.')
                })
            }
        }
    }
}

/// A route's CORS settings, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    pub origins: Vec<OriginPattern>,
    /// `Access-Control-Allow-Methods`.
    pub methods: Vec<Method>,
    /// `Access-Control-Allow-Headers` (lower-case names).
    pub allow_headers: Vec<String>,
    /// `Access-Control-Expose-Headers`.
    pub expose_headers: Vec<String>,
    pub credentials: bool,
    /// `Access-Control-Max-Age`, seconds.
    pub max_age: u64,
}

/// Response headers a CORS decision adds, in order.
pub type CorsHeaders = Vec<(&'static str, String)>;

impl Cors {
    /// Whether the request is a CORS preflight: `OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`. Its method for routing is the one it asks about.
    pub fn preflight_method(method: &Method, headers: &HeaderMap) -> Option<Method> {
        if method != Method::OPTIONS || !headers.contains_key(http::header::ORIGIN) {
            return None;
        }
        let asked = headers.get(http::header::ACCESS_CONTROL_REQUEST_METHOD)?;
        Method::from_bytes(asked.as_bytes()).ok()
    }

    /// The request's `Origin` when it is exactly one and allowed here.
    fn allowed_origin<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        let mut all = headers.get_all(http::header::ORIGIN).iter();
        let origin = all.next()?.to_str().ok()?;
        if all.next().is_some() {
            return None;
        }
        self.origins
            .iter()
            .any(|p| p.matches(origin))
            .then_some(origin)
    }

    /// Whether any origin is allowed (`*`): the answer is then the same for every origin
    /// and needs no `Vary: Origin`.
    fn any_origin(&self) -> bool {
        self.origins.contains(&OriginPattern::Any)
    }

    fn allow_origin(&self, origin: &str) -> CorsHeaders {
        let mut out = Vec::with_capacity(4);
        if self.any_origin() && !self.credentials {
            out.push(("access-control-allow-origin", "*".to_string()));
        } else {
            out.push(("access-control-allow-origin", origin.to_string()));
        }
        if self.credentials {
            out.push(("access-control-allow-credentials", "true".to_string()));
        }
        out
    }

    fn vary(&self) -> Option<(&'static str, String)> {
        (!self.any_origin() || self.credentials).then(|| ("vary", "Origin".to_string()))
    }

    /// The headers of a preflight's answer when its origin is allowed; `None` when it is not
    /// (the request is then handled like any other `OPTIONS`).
    pub fn preflight(&self, headers: &HeaderMap) -> Option<CorsHeaders> {
        let origin = self.allowed_origin(headers)?;
        let mut out = self.allow_origin(origin);
        let methods: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
        out.push(("access-control-allow-methods", methods.join(", ")));
        if !self.allow_headers.is_empty() {
            out.push((
                "access-control-allow-headers",
                self.allow_headers.join(", "),
            ));
        }
        out.push(("access-control-max-age", self.max_age.to_string()));
        out.extend(self.vary());
        Some(out)
    }

    /// The headers an actual response (forwarded or refused) carries: the allow headers when
    /// the origin is allowed, and `Vary: Origin` whenever the answer depends on the origin.
    pub fn response(&self, headers: &HeaderMap) -> CorsHeaders {
        let mut out = match self.allowed_origin(headers) {
            Some(origin) => {
                let mut out = self.allow_origin(origin);
                if !self.expose_headers.is_empty() {
                    out.push((
                        "access-control-expose-headers",
                        self.expose_headers.join(", "),
                    ));
                }
                out
            }
            None => Vec::new(),
        };
        out.extend(self.vary());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: Vec<OriginPattern>, credentials: bool) -> Cors {
        Cors {
            origins,
            methods: vec![Method::GET, Method::POST],
            allow_headers: vec!["authorization".into(), "content-type".into()],
            expose_headers: vec!["x-request-id".into()],
            credentials,
            max_age: 600,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn subdomains() -> OriginPattern {
        OriginPattern::Subdomains {
            scheme: "https".into(),
            suffix: ".example.com".into(),
        }
    }

    #[test]
    fn o1_origins_match_exactly_or_by_subdomain_never_by_suffix_or_prefix() {
        let exact = OriginPattern::Exact("https://app.example.com".into());
        assert!(exact.matches("https://app.example.com"));
        assert!(exact.matches("HTTPS://APP.example.com"));
        for no in [
            "https://app.example.com:8443",
            "http://app.example.com",
            "https://app.example.com.evil.test",
            "null",
        ] {
            assert!(!exact.matches(no), "{no}");
        }
        let sub = subdomains();
        assert!(sub.matches("https://a.example.com"));
        assert!(sub.matches("https://a.b.example.com"));
        for no in [
            "https://example.com",
            "http://a.example.com",
            "https://a.example.com:444",
            "https://evil.test/.example.com",
            "https://a.example.com.evil.test",
            "https://.example.com",
            "https://evilexample.com",
        ] {
            assert!(!sub.matches(no), "{no}");
        }
    }

    #[test]
    fn a_preflight_is_options_with_origin_and_a_requested_method() {
        let h = headers(&[
            ("origin", "https://a.example.com"),
            ("access-control-request-method", "DELETE"),
        ]);
        assert_eq!(
            Cors::preflight_method(&Method::OPTIONS, &h),
            Some(Method::DELETE)
        );
        assert_eq!(Cors::preflight_method(&Method::GET, &h), None);
        let no_origin = headers(&[("access-control-request-method", "GET")]);
        assert_eq!(Cors::preflight_method(&Method::OPTIONS, &no_origin), None);
        let plain = headers(&[("origin", "https://a.example.com")]);
        assert_eq!(Cors::preflight_method(&Method::OPTIONS, &plain), None);
    }

    #[test]
    fn an_allowed_preflight_gets_the_configured_lists() {
        let c = cors(vec![subdomains()], true);
        let h = headers(&[
            ("origin", "https://a.example.com"),
            ("access-control-request-method", "POST"),
        ]);
        assert_eq!(
            c.preflight(&h).unwrap(),
            vec![
                (
                    "access-control-allow-origin",
                    "https://a.example.com".to_string()
                ),
                ("access-control-allow-credentials", "true".to_string()),
                ("access-control-allow-methods", "GET, POST".to_string()),
                (
                    "access-control-allow-headers",
                    "authorization, content-type".to_string()
                ),
                ("access-control-max-age", "600".to_string()),
                ("vary", "Origin".to_string()),
            ]
        );
        let other = headers(&[
            ("origin", "https://evil.test"),
            ("access-control-request-method", "POST"),
        ]);
        assert_eq!(c.preflight(&other), None);
        // Two Origin headers: no origin is allowed.
        let two = headers(&[
            ("origin", "https://a.example.com"),
            ("origin", "https://b.example.com"),
        ]);
        assert_eq!(c.preflight(&two), None);
    }

    #[test]
    fn responses_carry_cors_headers_only_for_an_allowed_origin() {
        let c = cors(
            vec![OriginPattern::Exact("https://app.example.com".into())],
            false,
        );
        let allowed = c.response(&headers(&[("origin", "https://app.example.com")]));
        assert_eq!(
            allowed,
            vec![
                (
                    "access-control-allow-origin",
                    "https://app.example.com".to_string()
                ),
                ("access-control-expose-headers", "x-request-id".to_string()),
                ("vary", "Origin".to_string()),
            ]
        );
        assert_eq!(
            c.response(&headers(&[("origin", "https://evil.test")])),
            vec![("vary", "Origin".to_string())]
        );
        assert_eq!(
            c.response(&HeaderMap::new()),
            vec![("vary", "Origin".to_string())]
        );
        // Any origin without credentials: `*`, the same for everyone, no Vary.
        let any = cors(vec![OriginPattern::Any], false);
        assert_eq!(
            any.response(&headers(&[("origin", "https://x.test")]))[0],
            ("access-control-allow-origin", "*".to_string())
        );
        assert!(!any
            .response(&HeaderMap::new())
            .iter()
            .any(|(n, _)| *n == "vary"));
    }
}
