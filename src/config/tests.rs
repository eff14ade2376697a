//! Configuration checks, in-process: each row is a configuration text and every problem it
//! must be refused with, exactly as a user reads them (key path, message, order).

use super::check::Check;
use super::parse;
use std::time::Duration;

const LISTENER: &str = "listeners: [{address: 127.0.0.1:8080}]\n";
const UPSTREAM: &str = "upstreams: {a: {backends: [127.0.0.1:1]}}\n";
const ROUTE: &str = "routes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n";

/// Every problem of `yaml`, as printed; empty when it is valid.
fn problems(yaml: &str) -> Vec<String> {
    match parse(yaml) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.0.iter().map(ToString::to_string).collect(),
    }
}

/// A configuration of the standard listener, upstream `a` and route `r`, with `changes`
/// (whole top-level sections) in place of the defaults they name.
fn config(changes: &str) -> String {
    let mut text = String::new();
    for (key, default) in [
        ("listeners:", LISTENER),
        ("upstreams:", UPSTREAM),
        ("routes:", ROUTE),
    ] {
        if !changes.lines().any(|l| l.starts_with(key)) {
            text.push_str(default);
        }
    }
    text + changes
}

#[test]
fn the_standard_configuration_is_valid() {
    assert_eq!(problems(&config("")), Vec::<String>::new());
}

#[test]
fn each_broken_section_is_refused_with_its_exact_problems() {
    let rows: &[(&str, String, &[&str])] = &[
        (
            "empty lists",
            "listeners: []\nupstreams: {}\nroutes: []\n".into(),
            &[
                "listeners: at least one listener is required",
                "upstreams: at least one upstream is required",
                "routes: at least one route is required",
            ],
        ),
        (
            "server",
            config("server: {threads: 0, pid_file: run/p.pid}\n"),
            &[
                "server.threads: must be between 1 and 1024",
                "server.pid_file: must be an absolute path",
            ],
        ),
        (
            "listener and admin addresses",
            config("listeners: [{address: 127.0.0.1:8080}, {address: 127.0.0.1:8080}, {address: nope}, {address: 127.0.0.1:9901}]\n"),
            &[
                "listeners[1].address: 127.0.0.1:8080 is used by another listener",
                "listeners[2].address: \"nope\" is not an IP:port address (e.g. 127.0.0.1:8080 or [::1]:8080)",
                "admin.address: 127.0.0.1:9901 is also a public listener; the admin listener must be separate",
            ],
        ),
        (
            "unknown upstream",
            config("routes: [{name: r, match: {path_prefix: /}, upstream: x, auth: public}]\n"),
            &["routes[0].upstream: unknown upstream \"x\""],
        ),
        (
            "bad backend weight",
            config("upstreams: {a: {backends: [{address: 127.0.0.1:1, weight: 0}]}}\n"),
            &["upstreams.a.backends[0].weight: must be between 1 and 1000"],
        ),
        (
            // Both problems of one pool, at once; the route naming the pool adds none.
            "two problems at once",
            config("upstreams: {a: {backends: [127.0.0.1:1, 127.0.0.1:1], retries: 99}}\n"),
            &[
                "upstreams.a.backends[1]: 127.0.0.1:1 is listed twice",
                "upstreams.a.retries: at most 10",
            ],
        ),
        (
            "HTTP/2 to upstreams and from clients",
            config("listeners: [{address: 127.0.0.1:8080, h2c: true}, {address: 127.0.0.1:8443, h2c: true, tls: {certificate: /nonexistent/c.pem, key: /nonexistent/k.pem}}]\nupstreams: {a: {backends: [127.0.0.1:1], protocol: h2}, b: {backends: [127.0.0.1:2], protocol: h2c, tls: {sni: b.internal}}}\n"),
            &[
                "listeners[1].tls.certificate: cannot read \"/nonexistent/c.pem\": No such file or directory (os error 2)",
                "listeners[1].tls.key: cannot read \"/nonexistent/k.pem\": No such file or directory (os error 2)",
                "listeners[1].h2c: a TLS listener offers HTTP/2 by ALPN; h2c is for cleartext listeners",
                "upstreams.a.protocol: `h2` is HTTP/2 over TLS and needs `tls`; use `h2c` for cleartext backends",
                "upstreams.b.protocol: `h2c` is HTTP/2 in cleartext; with `tls`, use `h2`",
            ],
        ),
        (
            "time windows",
            config("routes: [{name: r, match: {path_prefix: /}, upstream: a, auth: {public: true, during: {timezone: Mars/Olympus, days: [mon, funday, sat-xyz], from: '8:00', to: '24:00'}}}, {name: s, match: {path_prefix: /s}, upstream: a, auth: {public: true, during: {days: [], from: '09:00', to: '09:00'}}}, {name: t, match: {path_prefix: /t}, upstream: a, auth: {public: true, during: {from: '24:00'}}}]\n"),
            &[
                "routes[0].auth.during.timezone: \"Mars/Olympus\" is not an IANA time zone (e.g. Europe/Berlin, UTC)",
                "routes[0].auth.during.days[1]: a day (`mon` .. `sun`) or a range (`mon-fri`)",
                "routes[0].auth.during.days[2]: a day (`mon` .. `sun`) or a range (`mon-fri`)",
                "routes[0].auth.during.from: \"8:00\" is not a time `HH:MM` (00:00 to 23:59)",
                "routes[1].auth.during.days: at least one day; leave `days` out for every day",
                "routes[1].auth.during.to: equal to `from`, the window would be empty; leave both out for the whole day",
                "routes[2].auth.during.from: \"24:00\" is not a time `HH:MM` (00:00 to 23:59)",
            ],
        ),
        (
            "forward_auth services and routes naming them",
            config("forward_auth: {sso: {url: 'http://10.0.0.9/verify', timeout: 0s, request_headers: ['bad header'], response_headers: [X-User-ID, X-Role], subject_header: X-Email, roles_header: X-Groups}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: {forward_auth: nope}}, {name: s, match: {path_prefix: /s}, upstream: a, auth: {any: [{forward_auth: nope}]}}]\n"),
            &[
                "routes[0].auth.forward_auth: unknown ForwardAuth service \"nope\" (define it under the top-level `forward_auth`)",
                "routes[1].auth.any[0].forward_auth: unknown ForwardAuth service \"nope\" (define it under the top-level `forward_auth`)",
                "forward_auth.sso.url: must be https (plain http only to a loopback address)",
                "forward_auth.sso.request_headers[0]: \"bad header\" is not a header name",
                "forward_auth.sso.response_headers[1]: \"x-role\" is outside the identity namespace (X-User-..., X-Auth-..., X-Tenant-...), so a client could send it too",
                "forward_auth.sso.subject_header: must be one of `response_headers`",
                "forward_auth.sso.roles_header: must be one of `response_headers`",
                "forward_auth.sso.timeout: between 10ms and 30s",
            ],
        ),
        (
            "rego",
            config("routes: [{name: r, match: {path_prefix: /}, upstream: a, auth: {public: true, rego: {policy: /nonexistent/p.rego, query: 'allow', headers: [Authorization, 'a b']}}}]\n"),
            &[
                "routes[0].auth.rego.policy: cannot read \"/nonexistent/p.rego\": No such file or directory (os error 2)",
                "routes[0].auth.rego.query: a rule's path, `data.PACKAGE.RULE` (e.g. `data.gateway.authz.allow`)",
                "routes[0].auth.rego.headers[0]: a policy never reads the credential; it sees the verified identity",
                "routes[0].auth.rego.headers[1]: \"a b\" is not a header name",
            ],
        ),
        (
            "rego result headers",
            config(&format!("routes: [{{name: r, match: {{path_prefix: /}}, upstream: a, auth: {{public: true, rego: {{policy: /dev/null, query: data.t.allow, result_headers: [X-Tier]}}}}}}, {{name: s, match: {{path_prefix: /s}}, upstream: a, auth: {{public: true, rego: {{policy: {}/conf/rego/authz.rego, query: data.gateway.authz.allow, result_headers: [X-User-Tier]}}}}}}]\n", env!("CARGO_MANIFEST_DIR"))),
            &[
                "routes[0].auth.rego.result_headers[0]: \"X-Tier\" is outside the identity namespace (X-User-..., X-Auth-..., X-Tenant-...), so a client could send it too",
                "routes[1].auth: a public route has no caller whose identity headers a policy's result could add to; `result_headers` need a credential",
            ],
        ),
        (
            "opa servers and routes naming them",
            config("opa: {authz: {url: 'http://10.0.0.9/v1/data/a', headers: [Authorization], result_headers: [X-Tier], cache: {ttl: 0s, capacity: 0}, max_concurrent: 0}, plain: {url: 'http://127.0.0.1:8181/allow', max_concurrent: 4, max_concurrent_per_client: 5}, 'bad name': {url: 'http://127.0.0.1:8181/v1/data/a'}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: {public: true, opa: nope}}, {name: s, match: {path_prefix: /s}, upstream: a, auth: {public: true, opa: authz}}]\n"),
            &[
                "opa.authz.url: must be https (plain http only to a loopback address)",
                "opa.authz.headers[0]: a policy never reads the credential; it sees the verified identity",
                "opa.authz.result_headers[0]: \"X-Tier\" is outside the identity namespace (X-User-..., X-Auth-..., X-Tenant-...), so a client could send it too",
                "opa.authz.cache.ttl: between 1s and 1h",
                "opa.authz.cache.capacity: at least 1 (leave `cache` out to ask every time)",
                "opa.authz.max_concurrent: between 1 and 10000",
                "opa.bad name: names use only letters, digits, `-` and `_`",
                "opa.plain.url: the Data API address of the deciding document, e.g. http://127.0.0.1:8181/v1/data/gateway/authz/allow",
                "opa.plain.max_concurrent_per_client: between 1 and max_concurrent",
                "routes[0].auth.opa: unknown OPA server \"nope\" (define it under the top-level `opa`)",
            ],
        ),
        (
            "an unknown upstream protocol",
            config("upstreams: {a: {backends: [127.0.0.1:1], protocol: h3}}\n"),
            &["upstreams.a.protocol: unknown variant `h3`, expected one of `http1`, `h2`, `h2c` at line 3 column 52"],
        ),
        (
            "consistent_hash without hash_key",
            config("upstreams: {a: {backends: [127.0.0.1:1], selection: consistent_hash}}\n"),
            &["upstreams.a.hash_key: consistent_hash needs a hash_key (`header: NAME` or `client_address`)"],
        ),
        (
            "health check",
            config("upstreams: {a: {backends: [127.0.0.1:1], health_check: {type: http, path: x, interval: 1ms, healthy_threshold: 101}}}\n"),
            &[
                "upstreams.a.health_check.path: must start with `/` and hold no spaces or control characters",
                "upstreams.a.health_check.interval: must be at least 10ms",
                "upstreams.a.health_check.healthy_threshold: must be between 1 and 100",
            ],
        ),
        (
            "duplicate route match",
            config("routes: [{name: r, match: {path_prefix: /, methods: [GET, POST]}, upstream: a, auth: public}, {name: s, match: {path_prefix: /, methods: [POST, GET]}, upstream: a, auth: public}]\n"),
            &["routes[1].match: matches exactly what route \"r\" matches, so it could never be used"],
        ),
        (
            "route match, methods and timeouts",
            config("routes: [{name: r, match: {path: /a, host: 'h:1', methods: [GET, get, GET]}, upstream: a, auth: public, timeouts: {read: 0s}}, {name: r, match: {}, upstream: a}]\n"),
            &[
                "routes[0].match.host: \"h:1\" is not a host name (no port, no wildcard)",
                "routes[0].match.methods[1]: \"get\" is not an HTTP method (use upper case, e.g. GET)",
                "routes[0].match.methods[2]: GET is listed twice",
                "routes[0].timeouts.read: must be above zero",
                "routes[1].name: route name \"r\" is used twice",
                "routes[1].match: one of `path` (exact) or `path_prefix` is required",
                "routes[1].auth: every route states its auth: `public` or a policy such as `{ jwt: PROVIDER }`",
            ],
        ),
        (
            "route auth",
            config("routes: [{name: r, match: {path_prefix: /}, upstream: a, auth: {any: [{jwt: idp}, {}], roles: ['a b']}}]\n"),
            &[
                "routes[0].auth.any[0].jwt: unknown identity provider \"idp\"",
                "routes[0].auth.any[1]: name one credential, e.g. `{ jwt: PROVIDER }`, `{ introspection: PROVIDER }`, `{ api_key: true }`, `{ mtls: true }`, `{ hmac: true }` or `{ forward_auth: SERVICE }`",
                "routes[0].auth.roles[0]: a non-empty name without spaces, commas or control characters",
            ],
        ),
        (
            "credentials without their sections",
            config("routes: [{name: r, match: {path_prefix: /}, upstream: a, auth: {any: [{api_key: true}, {mtls: true}, {hmac: true}]}}]\n"),
            &[
                "api_keys: a route accepts `api_key` but no `api_keys.consumers_file` is configured",
                "listeners: a route accepts `mtls` but no listener asks for client certificates (`tls.client_certificate`)",
                "request_signing: a route accepts `hmac` but no `request_signing.keys_file` is configured",
            ],
        ),
        (
            "identity headers",
            config("identity_headers: {prefixes: [X], allow: [X-User-ID]}\n"),
            &[
                "identity_headers.prefixes[0]: \"X\" is not a header name (or prefix)",
                "identity_headers.allow[0]: X-User-ID is set by the gateway from the verified identity; a client's copy is never forwarded",
            ],
        ),
        (
            "rate limits",
            config("rate_limits: {tiers: {gold: {requests: 0, per: second, key: consumer}, 'gold \"2\"': {requests: 1, per: second}}, failed_auth: {failures: 1, per: minute, block: 0s}, redis: {url: 'redis://127.0.0.1'}}\n"),
            &[
                "rate_limits.tiers.gold.requests: between 1 and 1000000000",
                "rate_limits.tiers.gold.burst: between 1 and 1000000000",
                "rate_limits.tiers.gold.key: a tier is always counted per consumer",
                "rate_limits.tiers.gold \"2\": tier names use only letters, digits, `-` and `_`, and are not empty",
                "rate_limits.failed_auth.block: between 1s and 24h",
                "rate_limits.redis: set `backend: redis` to use it (or remove it)",
            ],
        ),
        (
            "cors",
            config("cors: {allowed_origins: ['*', 'app.example.com', 'ftp://a.example.com', 'https://*.com', 'https://a.example.com/path', 'https://a.example.com:x'], allowed_methods: ['GE T'], allowed_headers: ['bad header'], allow_credentials: true, max_age: 2d}\n"),
            &[
                "cors.allowed_origins[1]: \"app.example.com\": an origin is `scheme://host[:port]`, e.g. https://app.example.com",
                "cors.allowed_origins[2]: \"ftp://a.example.com\": the scheme is http or https",
                "cors.allowed_origins[3]: \"https://*.com\": a wildcard is `*.` before a domain of two labels or more, e.g. https://*.example.com",
                "cors.allowed_origins[4]: \"https://a.example.com/path\": not a host name (no path, query or wildcard other than a leading `*.`)",
                "cors.allowed_origins[5]: \"https://a.example.com:x\": not a port after `:`",
                "cors.allow_credentials: browsers refuse `*` with credentials: list the origins instead",
                "cors.allowed_methods[0]: \"GE T\" is not a method",
                "cors.allowed_headers[0]: \"bad header\" is not a header name",
                "cors.max_age: at most 24h",
            ],
        ),
        (
            "route websocket",
            config("routes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public, websocket: {idle_timeout: 0s, max_lifetime: 30d}}]\n"),
            &[
                "routes[0].websocket.idle_timeout: between 1s and 24h",
                "routes[0].websocket.max_lifetime: between 1s and 7d",
            ],
        ),
        (
            "route cors",
            config("routes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public, cors: {allowed_origins: []}}]\n"),
            &["routes[0].cors.allowed_origins: list at least one origin (or `*`)"],
        ),
        (
            "route rate limit",
            config("routes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public, rate_limit: {requests: 5, per: second, key: 'header:'}}]\n"),
            &["routes[0].rate_limit.key: \"header:\": use consumer, api_key, subject, tenant, client_address or header:NAME"],
        ),
        (
            "revocation",
            config("revocation: {state_file: s, redis: {url: 'redis://127.0.0.1'}, max_entries: 0}\n"),
            &[
                "revocation.max_entries: between 1 and 10000000",
                "revocation: give `state_file` (one gateway) or `redis` (a fleet), not both",
            ],
        ),
        (
            "client certificate identities",
            config("client_certificates: {consumers: [{identity: a, consumer: x, tier: gold}, {identity: b, consumer: y}, {identity: b, consumer: z}]}\n"),
            &[
                "client_certificates.consumers[0].tier: \"gold\" is not a tier of rate_limits.tiers",
                "client_certificates.consumers[2].identity: \"b\" is listed twice",
            ],
        ),
        (
            "trusted proxies",
            config("trusted_proxies: [10.0.0.0/8, bad]\n"),
            &["trusted_proxies[1]: \"bad\" is not an IP address or CIDR block"],
        ),
    ];
    for (name, yaml, expected) in rows {
        assert_eq!(problems(yaml), *expected, "{name}:\n{yaml}");
    }
}

#[test]
fn a_pool_that_failed_is_not_also_an_unknown_upstream() {
    // The route names a pool that exists but did not compile: only the pool's problem.
    let yaml = config("upstreams: {a: {backends: []}}\n");
    assert_eq!(
        problems(&yaml),
        ["upstreams.a.backends: at least one backend is required"]
    );
}

#[test]
fn a_badly_named_pool_is_reported_and_still_usable_by_routes() {
    let yaml = config(
        "upstreams: {'a b': {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: 'a b', auth: public}]\n",
    );
    assert_eq!(
        problems(&yaml),
        ["upstreams.a b: names use only letters, digits, `-` and `_`"]
    );
}

#[test]
fn a_syntax_error_is_one_problem_with_serdes_key_path() {
    let found = problems(&config("server: {threads: many}\n"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("server.threads: invalid type"),
        "{found:?}"
    );
}

#[test]
fn a_check_builds_key_paths_and_knows_what_went_wrong_below_it() {
    let mut problems = Vec::new();
    let mut root = Check::root(&mut problems);
    root.problem("listeners", "a");
    {
        let mut upstreams = root.at("upstreams");
        let mut upstream = upstreams.at("u");
        upstream.here("b");
        let mut backend = upstream.index("backends", 2);
        assert!(backend.ok());
        backend.problem("weight", "c");
        assert!(!backend.ok());
        assert!(!upstream.ok());
        assert!(!upstreams.ok(), "a child's problem is its parent's too");
    }
    let mut fresh = root.at("routes");
    assert!(fresh.ok(), "a check made after a problem starts out ok");
    assert!(fresh.range("n", 5, 1..=10, "between 1 and 10"));
    assert!(!fresh.range("n", 0, 1..=10, "between 1 and 10"));
    assert!(!fresh.range(
        "t",
        Duration::ZERO,
        Duration::from_millis(1)..,
        "at least 1ms"
    ));
    assert!(fresh.range("r", 3, ..=3, "at most 3"));
    fresh.readable("file", "/nonexistent/x");
    let printed: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        printed,
        [
            "listeners: a",
            "upstreams.u: b",
            "upstreams.u.backends[2].weight: c",
            "routes.n: between 1 and 10",
            "routes.t: at least 1ms",
            "routes.file: cannot read \"/nonexistent/x\": No such file or directory (os error 2)",
        ]
    );
}

#[test]
fn work_stealing_is_off_at_one_thread_unless_asked_for() {
    let settings = |server: &str| match parse(&config(server)) {
        Ok(c) => (c.server.threads, c.server.work_stealing),
        Err(p) => panic!("{p:?}"),
    };
    assert_eq!(
        settings(""),
        (2, true),
        "the default: two threads, stealing"
    );
    assert_eq!(settings("server: {threads: 1}\n"), (1, false));
    assert_eq!(
        settings("server: {threads: 1, work_stealing: true}\n"),
        (1, true)
    );
    assert_eq!(
        settings("server: {threads: 4, work_stealing: false}\n"),
        (4, false)
    );
}

#[test]
fn a_rego_policy_that_does_not_parse_is_reported_at_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("authz.rego");
    std::fs::write(&file, "package t\n\nallow if {\n  input.x ==\n").unwrap();
    let found = problems(&config(&format!(
        "routes: [{{name: r, match: {{path_prefix: /}}, upstream: a, auth: {{public: true, rego: {{policy: {}, query: data.t.allow}}}}}}]\n",
        file.display()
    )));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("routes[0].auth.rego.policy: "),
        "{found:?}"
    );
    assert!(
        found[0].contains(&format!("{}:", file.display())),
        "{found:?}"
    );
}

#[test]
fn read_buffers_default_to_none_on_plain_and_tls_listeners() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/keys");
    let tls = format!("tls: {{certificate: {keys}/demo-server.crt, key: {keys}/demo-server.key}}");
    let buffers = |listeners: &str| match parse(&config(listeners)) {
        Ok(c) => c
            .listeners
            .iter()
            .map(|l| l.read_buffer_size)
            .collect::<Vec<_>>(),
        Err(p) => panic!("{p:?}"),
    };
    assert_eq!(
        buffers(&format!(
            "listeners: [{{address: 127.0.0.1:8080}}, {{address: 127.0.0.1:8443, {tls}}}]\n"
        )),
        [0, 0],
        "the default README.md and conf/README.md state"
    );
    assert_eq!(
        buffers(&format!(
            "listeners: [{{address: 127.0.0.1:8080, read_buffer_size: 65536}}, {{address: 127.0.0.1:8443, read_buffer_size: 16384, {tls}}}]\n"
        )),
        [65536, 16384],
        "a size set on a listener is kept"
    );
}
