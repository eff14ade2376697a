//! `portcullis check` (and `run -t`) on the bundled examples and on broken configurations.

use crate::support::*;
use std::path::Path;
use std::process::Command;

fn check(path: &Path) -> (bool, String, String) {
    // From another directory: relative paths in a file are relative to the file itself.
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(path)
        // conf/introspection.yaml reads one client secret from the environment.
        .env("LEGACY_AS_CLIENT_SECRET", "demo-secret")
        .current_dir("/")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn conf_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conf")
}

#[test]
fn every_example_in_conf_is_valid() {
    let mut checked = 0;
    for entry in std::fs::read_dir(conf_dir()).unwrap() {
        let path = entry.unwrap().path();
        // consumers.yaml and signing-keys.yaml are not main configurations; api-keys.yaml
        // and signing.yaml load (and so check) them.
        if path.extension().is_some_and(|e| e == "yaml")
            && path
                .file_name()
                .is_some_and(|n| n != "consumers.yaml" && n != "signing-keys.yaml")
        {
            let (ok, stdout, stderr) = check(&path);
            assert!(ok, "{} is invalid:\n{stderr}", path.display());
            assert!(stdout.contains("configuration OK"), "{stdout}");
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "expected the default and at least one more example"
    );
}

/// The example consumers file holds digests only and loads through `conf/api-keys.yaml`.
#[test]
fn the_example_consumers_file_holds_only_digests() {
    let text = std::fs::read_to_string(conf_dir().join("consumers.yaml")).unwrap();
    assert!(!text.contains("ptc_live_") && !text.contains("ptc_test_"));
    assert_eq!(text.matches("hash: sha256:").count(), 3);
    let (ok, _, stderr) = check(&conf_dir().join("api-keys.yaml"));
    assert!(ok, "{stderr}");
}

/// Broken configurations and the message each must produce (the key path leads).
const BROKEN: &[(&str, &str, &str)] = &[
    (
        "unknown top-level key",
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\nlistner: []\n",
        "unknown field `listner`",
    ),
    (
        "unknown nested key",
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: [127.0.0.1:1], helth_check: {}}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "unknown field `helth_check`",
    ),
    (
        "unknown upstream",
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {users: {backends: [127.0.0.1:1]}}\nroutes:\n  - {name: a, match: {path_prefix: /a}, upstream: users, auth: public}\n  - {name: b, match: {path_prefix: /b}, upstream: users, auth: public}\n  - {name: c, match: {path_prefix: /c}, upstream: userz, auth: public}\n",
        "routes[2].upstream: unknown upstream \"userz\"",
    ),
    (
        "bad listener address",
        "listeners: [{address: localhost}]\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "listeners[0].address: \"localhost\" is not an IP:port address",
    ),
    (
        "admin on a public listener",
        "listeners: [{address: 127.0.0.1:8080}]\nadmin: {address: 127.0.0.1:8080}\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "admin.address: 127.0.0.1:8080 is also a public listener",
    ),
    (
        "backend without port",
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: [10.0.0.1]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "upstreams.a.backends[0]: \"10.0.0.1\" needs a port",
    ),
    (
        "no backends",
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: []}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "upstreams.a.backends: at least one backend is required",
    ),
    (
        "consistent hash without key",
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: [127.0.0.1:1], selection: consistent_hash}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "upstreams.a.hash_key: consistent_hash needs a hash_key",
    ),
    (
        "unknown selection",
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: [127.0.0.1:1], selection: least_conn}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "unknown variant `least_conn`",
    ),
    (
        "tcp check with a path",
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: [127.0.0.1:1], health_check: {type: tcp, path: /h}}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "upstreams.a.health_check: `path`, `host` and `expected_status` need `type: http`",
    ),
    (
        "bad expected status",
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: [127.0.0.1:1], health_check: {type: http, expected_status: 42}}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "upstreams.a.health_check.expected_status: must be an HTTP status",
    ),
    (
        "too many retries",
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: [127.0.0.1:1], retries: 50}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "upstreams.a.retries: at most 10",
    ),
    (
        "bad duration",
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: [127.0.0.1:1], connect_timeout: soon}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "upstreams.a.connect_timeout",
    ),
    (
        "path and prefix together",
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path: /x, path_prefix: /}, upstream: a, auth: public}]\n",
        "routes[0].match: give either `path` or `path_prefix`, not both",
    ),
    (
        "relative route path",
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path_prefix: api}, upstream: a, auth: public}]\n",
        "routes[0].match.path_prefix: \"api\" must start with `/`",
    ),
    (
        "lower-case method",
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path_prefix: /, methods: [get]}, upstream: a, auth: public}]\n",
        "routes[0].match.methods[0]: \"get\" is not an HTTP method",
    ),
    (
        "duplicate route",
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes:\n  - {name: one, match: {path_prefix: /x}, upstream: a, auth: public}\n  - {name: two, match: {path_prefix: /x}, upstream: a, auth: public}\n",
        "routes[1].match: matches exactly what route \"one\" matches",
    ),
    (
        "duplicate route name",
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes:\n  - {name: one, match: {path_prefix: /x}, upstream: a, auth: public}\n  - {name: one, match: {path_prefix: /y}, upstream: a, auth: public}\n",
        "routes[1].name: route name \"one\" is used twice",
    ),
    (
        "host with port",
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {host: \"a.example:80\", path_prefix: /}, upstream: a, auth: public}]\n",
        "routes[0].match.host: \"a.example:80\" is not a host name",
    ),
    (
        "missing tls files",
        "listeners: [{address: 127.0.0.1:8443, tls: {certificate: /nonexistent/cert.pem, key: /nonexistent/key.pem}}]\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "listeners[0].tls.certificate: cannot read \"/nonexistent/cert.pem\"",
    ),
    (
        "route without routes",
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: []\n",
        "routes: at least one route is required",
    ),
    (
        "route without auth",
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a}]\n",
        "routes[0].auth: every route states its auth",
    ),
    (
        "unknown identity provider",
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: {jwt: corp}}]\n",
        "routes[0].auth.jwt: unknown identity provider \"corp\"",
    ),
    (
        "alg none",
        "listeners: [{address: 127.0.0.1:8080}]\nidentity_providers: {corp: {issuer: https://i, audiences: [a], algorithms: [none], keys: {jwks_file: /nonexistent}}}\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "identity_providers.corp.algorithms[0]: \"none\" is not a supported algorithm",
    ),
    (
        "mixed hmac and rsa",
        "listeners: [{address: 127.0.0.1:8080}]\nidentity_providers: {corp: {issuer: https://i, audiences: [a], algorithms: [RS256, HS256], keys: {hmac_secret_env: NOPE}}}\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "identity_providers.corp: a provider cannot mix HMAC and public-key algorithms",
    ),
    (
        "two key sources",
        "listeners: [{address: 127.0.0.1:8080}]\nidentity_providers: {corp: {issuer: https://i, audiences: [a], algorithms: [RS256], keys: {pem_file: /a, jwks_file: /b}}}\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "identity_providers.corp.keys: give exactly one of",
    ),
    (
        "claim header outside the identity namespace",
        "listeners: [{address: 127.0.0.1:8080}]\nidentity_providers: {corp: {issuer: https://i, audiences: [a], algorithms: [HS256], keys: {hmac_secret_env: PATH}, claims: {headers: {X-Department: dept}}}}\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "identity_providers.corp.claims.headers.X-Department: claim headers must be in the identity namespace",
    ),
    (
        "jwks over plain http to a remote host",
        "listeners: [{address: 127.0.0.1:8080}]\nidentity_providers: {corp: {issuer: https://i, audiences: [a], algorithms: [RS256], keys: {jwks_uri: \"http://idp.example.com/jwks\"}}}\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "identity_providers.corp.keys.jwks_uri: the jwks_uri must be https",
    ),
    (
        "hmac from a jwks",
        "listeners: [{address: 127.0.0.1:8080}]\nidentity_providers: {corp: {issuer: https://i, audiences: [a], algorithms: [HS256], keys: {jwks_uri: \"https://idp.example.com/jwks\"}}}\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "identity_providers.corp.keys: a JWKS never carries HMAC secrets",
    ),
    (
        "jwks_uri and oidc_discovery together",
        "listeners: [{address: 127.0.0.1:8080}]\nidentity_providers: {corp: {issuer: https://i, audiences: [a], algorithms: [RS256], keys: {jwks_uri: \"https://i/jwks\", oidc_discovery: true}}}\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "identity_providers.corp.keys: give exactly one of",
    ),
    (
        "discovery from a plain-http issuer",
        "listeners: [{address: 127.0.0.1:8080}]\nidentity_providers: {corp: {issuer: \"http://idp.example.com\", audiences: [a], algorithms: [RS256], keys: {oidc_discovery: true}}}\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "identity_providers.corp.keys.oidc_discovery: the issuer (for oidc_discovery) must be https",
    ),
    (
        "jwks timings and cache ttl out of range",
        "listeners: [{address: 127.0.0.1:8080}]\nidentity_providers: {corp: {issuer: https://i, audiences: [a], algorithms: [RS256], keys: {jwks_uri: \"https://i/jwks\"}, jwks: {cooldown: 10ms}, cache: {ttl: 2h}}}\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "identity_providers.corp.jwks.cooldown: must be at least 100ms",
    ),
    (
        "missing upstream CA file",
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: [127.0.0.1:1], tls: {sni: a.internal, ca_file: /nonexistent/ca.pem}}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "upstreams.a.tls.ca_file: cannot read \"/nonexistent/ca.pem\"",
    ),
    (
        "client certificates without a CA bundle",
        "listeners: [{address: 127.0.0.1:8443, tls: {certificate: /nonexistent/c.pem, key: /nonexistent/k.pem, client_certificate: required}}]\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "listeners[0].tls.client_ca_file: client certificates need the CA bundle they must chain to",
    ),
    (
        "unreadable client CA bundle",
        "listeners: [{address: 127.0.0.1:8443, tls: {certificate: /nonexistent/c.pem, key: /nonexistent/k.pem, client_certificate: optional, client_ca_file: /nonexistent/ca.pem}}]\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "listeners[0].tls.client_ca_file: cannot read \"/nonexistent/ca.pem\"",
    ),
    (
        "a client CA bundle without asking for certificates",
        "listeners: [{address: 127.0.0.1:8443, tls: {certificate: /nonexistent/c.pem, key: /nonexistent/k.pem, client_ca_file: /nonexistent/ca.pem}}]\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "listeners[0].tls.client_certificate: set `required` or `optional`",
    ),
    (
        "unknown client certificate mode",
        "listeners: [{address: 127.0.0.1:8443, tls: {certificate: /nonexistent/c.pem, key: /nonexistent/k.pem, client_certificate: sometimes}}]\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
        "unknown variant `sometimes`",
    ),
    (
        "not yaml",
        "listeners: [{address: 127.0.0.1:8080\n",
        "did not find expected",
    ),
];

#[test]
fn broken_configs_are_rejected_with_the_offending_key() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (what, text, expected)) in BROKEN.iter().enumerate() {
        let path = dir.path().join(format!("broken-{i}.yaml"));
        std::fs::write(&path, text).unwrap();
        let (ok, _, stderr) = check(&path);
        assert!(!ok, "{what}: accepted");
        assert!(
            stderr.contains(expected),
            "{what}: expected `{expected}` in:\n{stderr}"
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.yaml");
    std::fs::write(
        &path,
        "listeners: [{address: nowhere}]\nupstreams: {a: {backends: [127.0.0.1:1], retries: 99}}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: b, auth: public}\n  - {name: s, match: {path: x}, upstream: a, auth: public}\n",
    )
    .unwrap();
    let (ok, _, stderr) = check(&path);
    assert!(!ok);
    for expected in [
        "listeners[0].address",
        "upstreams.a.retries",
        "routes[0].upstream: unknown upstream \"b\"",
        "routes[1].match.path",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
}

#[test]
fn run_dash_t_tests_the_configuration_and_exits() {
    let good = conf_dir().join("portcullis.yaml");
    let out = Command::new(BIN)
        .arg("-t")
        .arg("-c")
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "listeners: []\n").unwrap();
    let out = Command::new(BIN)
        .args(["run", "-t", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let missing = Command::new(BIN)
        .args(["check", "-c", "/nonexistent/portcullis.yaml"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
}

/// Policies, trusted proxies, identity headers and assertions that cannot work are refused
/// with the key that is wrong.
#[test]
fn broken_policies_are_rejected_with_the_offending_key() {
    const HEAD: &str = "listeners: [{address: 127.0.0.1:8080}]\nidentity_providers: {corp: {issuer: https://i, audiences: [a], algorithms: [RS256], keys: {jwks_uri: \"https://i/jwks\"}}}\n";
    const UPSTREAMS: &str = "upstreams: {a: {backends: [127.0.0.1:1]}}\n";
    let route = |auth: &str| {
        format!("{HEAD}{UPSTREAMS}routes: [{{name: r, match: {{path_prefix: /}}, upstream: a, auth: {auth}}}]\n")
    };
    let cases: Vec<(String, &str)> = vec![
        (route("private"), "\"private\" is not a policy"),
        (route("{jwt: corp, public: true}"), "routes[0].auth: state exactly one of"),
        (route("{roles: [admin]}"), "routes[0].auth: state exactly one of"),
        (route("{public: true, roles: [a]}"), "a public route has no caller"),
        (route("{jwt: corp, rolez: [a]}"), "unknown field `rolez`"),
        (route("{jwt: nope}"), "routes[0].auth.jwt: unknown identity provider \"nope\""),
        (route("{any: []}"), "routes[0].auth.any: list at least one credential"),
        (route("{any: [{jwt: corp}, {}]}"), "routes[0].auth.any[1]: name one credential"),
        (route("{all: [{jwt: corp}, {jwt: other}]}"), "routes[0].auth.all[1].jwt: unknown identity provider"),
        (route("{jwt: corp, method_permissions: {delete: d}}"), "routes[0].auth.method_permissions.delete: \"delete\" is not an HTTP method"),
        (route("{jwt: corp, roles: [\"a b\"]}"), "routes[0].auth.roles[0]: a non-empty name"),
        (route("{jwt: corp, networks: {allow: [10.1.2.3/8]}}"), "routes[0].auth.networks.allow[0]: \"10.1.2.3/8\" has host bits set; did you mean 10.0.0.0/8"),
        (route("{jwt: corp, networks: {}}"), "routes[0].auth.networks: list `allow` or `deny`"),
        (route("{jwt: corp, mode: shadow}"), "unknown variant `shadow`"),
        (route("{public: true, keep_authorization: true}"), "routes[0].auth.keep_authorization"),
        (route("{api_key: true}"), "api_keys: a route accepts `api_key` but no `api_keys.consumers_file`"),
        (route("{any: [{jwt: corp, api_key: true}]}"), "routes[0].auth.any[0]: name one credential"),
        (
            format!("{HEAD}api_keys: {{consumers_file: /nonexistent/consumers.yaml}}\n{UPSTREAMS}routes: [{{name: r, match: {{path_prefix: /}}, upstream: a, auth: {{api_key: true}}}}]\n"),
            "api_keys.consumers_file (/nonexistent/consumers.yaml): cannot read",
        ),
        (
            format!("{HEAD}api_keys: {{consumers_file: c.yaml, headers: [Authorization], environment: staging}}\n{UPSTREAMS}routes: [{{name: r, match: {{path_prefix: /}}, upstream: a, auth: public}}]\n"),
            "unknown variant `staging`",
        ),
        (
            format!("{HEAD}api_keys: {{consumers_file: c.yaml, headers: [Authorization]}}\n{UPSTREAMS}routes: [{{name: r, match: {{path_prefix: /}}, upstream: a, auth: public}}]\n"),
            "api_keys.headers[0]: Authorization is not a key header",
        ),
        (
            format!("{HEAD}rate_limits: {{tiers: {{gold: {{key: consumer, requests: 5, per: minute}}}}, global: {{requests: 0, per: second}}}}\n{UPSTREAMS}routes: [{{name: r, match: {{path_prefix: /}}, upstream: a, auth: public, rate_limit: {{key: cookie, requests: 1, per: hour}}}}]\n"),
            "rate_limits.tiers.gold.key: a tier is always counted per consumer",
        ),
        (
            format!("{HEAD}rate_limits: {{failed_auth: {{failures: 5, per: minute, block: 3d}}}}\n{UPSTREAMS}routes: [{{name: r, match: {{path_prefix: /}}, upstream: a, auth: public}}]\n"),
            "rate_limits.failed_auth.block: between 1s and 24h",
        ),
        (
            format!("{HEAD}rate_limits: {{backend: redis}}\n{UPSTREAMS}routes: [{{name: r, match: {{path_prefix: /}}, upstream: a, auth: public}}]\n"),
            "rate_limits.redis: `backend: redis` needs `redis: { url: ... }`",
        ),
        (
            format!("{HEAD}rate_limits: {{backend: redis, redis: {{url: \"mongodb://x\", timeout: 5s}}}}\n{UPSTREAMS}routes: [{{name: r, match: {{path_prefix: /}}, upstream: a, auth: public}}]\n"),
            "rate_limits.redis.timeout: between 1ms and 1s",
        ),
        (
            format!("{HEAD}rate_limits: {{global: {{requests: 0, per: second}}}}\n{UPSTREAMS}routes: [{{name: r, match: {{path_prefix: /}}, upstream: a, auth: public}}]\n"),
            "rate_limits.global.requests: between 1 and 1000000000",
        ),
        (
            format!("{HEAD}{UPSTREAMS}routes: [{{name: r, match: {{path_prefix: /}}, upstream: a, auth: public, rate_limit: {{key: cookie, requests: 1, per: hour}}}}]\n"),
            "routes[0].rate_limit.key: \"cookie\": use consumer, api_key, subject, tenant, client_address or header:NAME",
        ),
        (
            format!("{HEAD}{UPSTREAMS}routes: [{{name: r, match: {{path_prefix: /}}, upstream: a, auth: public, rate_limit: {{requests: 1, per: day}}}}]\n"),
            "unknown variant `day`",
        ),
        (
            format!("{HEAD}trusted_proxies: [proxy.internal]\n{UPSTREAMS}routes: [{{name: r, match: {{path_prefix: /}}, upstream: a, auth: public}}]\n"),
            "trusted_proxies[0]: \"proxy.internal\" is not an IP address or CIDR block",
        ),
        (
            format!("{HEAD}identity_headers: {{allow: [X_User_ID]}}\n{UPSTREAMS}routes: [{{name: r, match: {{path_prefix: /}}, upstream: a, auth: public}}]\n"),
            "identity_headers.allow[0]: X_User_ID is set by the gateway",
        ),
        (
            format!("{HEAD}upstreams: {{a: {{backends: [127.0.0.1:1], identity_assertion: {{key_file: /nonexistent.pem, kid: k}}}}}}\nroutes: [{{name: r, match: {{path_prefix: /}}, upstream: a, auth: public}}]\n"),
            "upstreams.a.identity_assertion: assertion signing key /nonexistent.pem",
        ),
        (
            format!("{HEAD}upstreams: {{a: {{backends: [127.0.0.1:1], identity_assertion: {{key_file: /nonexistent.pem, kid: k, ttl: 2h}}}}}}\nroutes: [{{name: r, match: {{path_prefix: /}}, upstream: a, auth: public}}]\n"),
            "upstreams.a.identity_assertion.ttl: between 1s and 1h",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("policy-{i}.yaml"));
        std::fs::write(&path, text).unwrap();
        let (ok, _, stderr) = check(&path);
        assert!(!ok, "accepted:\n{text}");
        assert!(
            stderr.contains(expected),
            "expected `{expected}` in:\n{stderr}\nfor:\n{text}"
        );
    }
}

/// API-key settings that cannot work: each refused with its key. The files are relative to
/// the configuration, as everywhere.
#[test]
fn broken_api_key_settings_are_rejected_with_the_offending_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("consumers.yaml"), "consumers: []\n").unwrap();
    std::fs::write(dir.path().join("short-pepper"), "too short\n").unwrap();
    let cases = [
        (
            "pepper_file: short-pepper",
            "api_keys.pepper_file: the pepper must be at least 32 bytes",
        ),
        (
            "pepper_file: missing-pepper",
            "api_keys.pepper_file: cannot read",
        ),
        (
            "reload_interval: 10ms",
            "api_keys.reload_interval: at least 100ms",
        ),
        (
            "query_param: \"api key\"",
            "api_keys.query_param: letters, digits",
        ),
        (
            "headers: [Cookie]",
            "api_keys.headers[0]: Cookie is not a key header",
        ),
    ];
    for (i, (setting, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("api-{i}.yaml"));
        std::fs::write(
            &path,
            format!("listeners: [{{address: 127.0.0.1:8080}}]\napi_keys:\n  consumers_file: consumers.yaml\n  {setting}\nupstreams: {{a: {{backends: [127.0.0.1:1]}}}}\nroutes: [{{name: r, match: {{path_prefix: /}}, upstream: a, auth: {{api_key: true}}}}]\n"),
        )
        .unwrap();
        let (ok, _, stderr) = check(&path);
        assert!(!ok, "{setting}: accepted");
        assert!(
            stderr.contains(expected),
            "{setting}: expected `{expected}` in:\n{stderr}"
        );
    }
    // The same file with a good pepper is fine.
    std::fs::write(dir.path().join("pepper"), format!("{}\n", "p".repeat(40))).unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "listeners: [{address: 127.0.0.1:8080}]\napi_keys:\n  consumers_file: consumers.yaml\n  pepper_file: pepper\nupstreams: {a: {backends: [127.0.0.1:1]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: {api_key: true}}]\n",
    )
    .unwrap();
    let (ok, _, stderr) = check(&good);
    assert!(ok, "{stderr}");
}

/// Every YAML example in the README whose paragraph names a `conf/` file is that file's text,
/// so what the docs show is what `every_example_in_conf_is_valid` checks.
#[test]
fn readme_yaml_examples_are_taken_from_checked_conf_files() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut checked = 0;
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```yaml\n") {
        let before = &rest[..start];
        let after = &rest[start + 8..];
        let end = after.find("```").unwrap();
        let block = &after[..end];
        // The nearest `conf/NAME.yaml` in the paragraph before the block.
        let paragraph = before.trim_end().rsplit("\n\n").next().unwrap_or("");
        if let Some(i) = paragraph.rfind("conf/") {
            let name: String = paragraph[i + 5..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
                .collect();
            let name = name.trim_end_matches('.');
            let text = std::fs::read_to_string(conf_dir().join(name)).unwrap();
            assert!(
                text.contains(block),
                "the README's example for conf/{name} is not in that file:\n{block}"
            );
            checked += 1;
        }
        rest = &after[end + 3..];
    }
    assert!(
        checked >= 3,
        "only {checked} README examples name their conf file"
    );
}

/// Introspection and revocation mistakes, each named by its key path (catalogue I5: a plain-http
/// endpoint off loopback, or one without client credentials, is refused at start).
#[test]
fn i5_broken_introspection_and_revocation_settings_are_rejected_with_the_offending_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "client-secret\n").unwrap();
    std::fs::write(dir.path().join("short-token"), "short\n").unwrap();
    std::fs::write(dir.path().join("hmac"), "0123456789abcdef0123456789abcdef").unwrap();
    let head =
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: [127.0.0.1:1]}}\n";
    let provider = |intro: &str| {
        format!("identity_providers:\n  as:\n    issuer: https://as.example.com\n    audiences: [api]\n    introspection: {{ {intro} }}\n")
    };
    let good =
        "endpoint: https://as.example.com/introspect, client_id: gw, client_secret_file: secret";
    let route = |auth: &str| {
        format!("routes: [{{name: r, match: {{path_prefix: /}}, upstream: a, auth: {auth}}}]\n")
    };
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{}{}", provider("endpoint: http://as.example.com/introspect, client_id: gw, client_secret_file: secret"), route("{introspection: as}")),
            "identity_providers.as.introspection.endpoint: must be https",
        ),
        (
            format!("{}{}", provider("discovery: true, endpoint: https://as.example.com/i, client_id: gw, client_secret_file: secret"), route("{introspection: as}")),
            "identity_providers.as.introspection: give exactly one of `endpoint` or `discovery: true`",
        ),
        (
            format!("{}{}", provider("endpoint: https://as.example.com/introspect, client_id: gw"), route("{introspection: as}")),
            "identity_providers.as.introspection: give exactly one of client_secret_file or client_secret_env",
        ),
        (
            format!("{}{}", provider("endpoint: https://as.example.com/introspect, client_id: gw, client_secret_env: PORTCULLIS_TEST_UNSET_VAR"), route("{introspection: as}")),
            "identity_providers.as.introspection.client_secret_env: environment variable PORTCULLIS_TEST_UNSET_VAR is not set",
        ),
        (
            format!("{}{}", provider(&format!("{good}, cache: {{ capacity: 0 }}")), route("{introspection: as}")),
            "identity_providers.as.introspection.cache.capacity: at least 1",
        ),
        (
            format!("{}{}", provider(&format!("{good}, introspect_jwts: true")), route("{introspection: as}")),
            "identity_providers.as.introspection.introspect_jwts: this provider has no `keys`",
        ),
        (
            format!("{}{}", provider(good), route("{jwt: as}")),
            "routes[0].auth.jwt: identity provider \"as\" has no `keys` to verify JWTs; use `introspection: as`",
        ),
        (
            format!("identity_providers:\n  corp: {{issuer: https://idp, audiences: [api], algorithms: [HS256], keys: {{hmac_secret_file: hmac}}}}\n{}", route("{any: [{introspection: corp}]}")),
            "routes[0].auth.any[0].introspection: identity provider \"corp\" has no `introspection` endpoint",
        ),
        (
            format!("identity_providers:\n  x: {{issuer: https://idp, audiences: [api]}}\n{}", route("public")),
            "identity_providers.x: give `keys` (to verify its JWTs) or `introspection`",
        ),
        (
            format!("{}revocation: {{ state_file: s.json, redis: {{url: \"redis://127.0.0.1/\"}} }}\n{}", provider(good), route("{introspection: as}")),
            "revocation: give `state_file` (one gateway) or `redis` (a fleet), not both",
        ),
        (
            format!("{}revocation: {{ admin_token_file: short-token, state_file: s.json }}\n{}", provider(good), route("{introspection: as}")),
            "revocation.admin_token_file: the admin token must be at least 16 bytes",
        ),
        (
            format!("{}revocation: {{ admin_token_file: secret }}\n{}", provider(good), route("{introspection: as}")),
            "revocation: give `state_file` (so a restart keeps the list) or `redis`",
        ),
    ];
    for (i, (body, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("broken-intro-{i}.yaml"));
        std::fs::write(&path, format!("{head}{body}")).unwrap();
        let (ok, _, stderr) = check(&path);
        assert!(!ok, "case {i}: accepted:\n{body}");
        assert!(
            stderr.contains(expected),
            "case {i}: expected `{expected}` in:\n{stderr}"
        );
    }
}

#[test]
fn broken_mtls_settings_are_rejected_with_the_offending_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = conf_dir().join("keys");
    std::fs::write(dir.path().join("garbage.crl"), "not a CRL\n").unwrap();
    // A well-formed CRL, but from a CA the listener does not trust.
    let stranger = crate::support::pki::Ca::new(dir.path(), "stranger-ca");
    stranger.write_crl(dir.path(), &dir.path().join("stranger.crl"), &[], false);
    let tls = format!(
        "{{certificate: {0}/demo-server.crt, key: {0}/demo-server.key, client_certificate: optional, client_ca_file: {0}/demo-clients-ca.pem",
        keys.display()
    );
    let upstream = "upstreams: {a: {backends: [127.0.0.1:1]}}\n";
    let route = |auth: &str| {
        format!("routes: [{{name: r, match: {{path_prefix: /}}, upstream: a, auth: {auth}}}]\n")
    };
    let mtls_listener = format!("listeners: [{{address: 127.0.0.1:8443, tls: {tls}}}}}]\n");
    let cases: Vec<(String, &str)> = vec![
        (
            format!("listeners: [{{address: 127.0.0.1:8080}}]\n{upstream}{}", route("{mtls: true}")),
            "listeners: a route accepts `mtls` but no listener asks for client certificates",
        ),
        (
            format!("{mtls_listener}{upstream}{}", route("{api_key: true, client_subjects: [spiffe://a/b]}")),
            "routes[0].auth.client_subjects: only the `mtls` credential has certificate subjects",
        ),
        (
            format!("{mtls_listener}{upstream}{}", route("{mtls: true, client_subjects: [\"spiffe://*/b\"]}")),
            "routes[0].auth.client_subjects[0]: an identity, or a prefix ending in a single `*`",
        ),
        (
            format!("{mtls_listener}{upstream}{}", route("{mtls: true, bound_tokens: true}")),
            "routes[0].auth.bound_tokens: only bearer tokens (`jwt`, `introspection`) can be bound",
        ),
        (
            format!("{mtls_listener}client_certificates: {{consumers: [{{identity: spiffe://a/b, consumer: x}}, {{identity: spiffe://a/b, consumer: y}}]}}\n{upstream}{}", route("{mtls: true}")),
            "client_certificates.consumers[1].identity: \"spiffe://a/b\" is listed twice",
        ),
        (
            format!("{mtls_listener}client_certificates: {{consumers: [{{identity: spiffe://a/b, consumer: x, tier: gold}}]}}\n{upstream}{}", route("{mtls: true}")),
            "client_certificates.consumers[0].tier: \"gold\" is not a tier of rate_limits.tiers",
        ),
        (
            format!("listeners: [{{address: 127.0.0.1:8443, tls: {tls}, client_crl_file: {}}}}}]\n{upstream}{}", dir.path().join("garbage.crl").display(), route("{mtls: true}")),
            "holds no PEM CRL",
        ),
        (
            format!("listeners: [{{address: 127.0.0.1:8443, tls: {tls}, client_crl_file: {}}}}}]\n{upstream}{}", dir.path().join("stranger.crl").display(), route("{mtls: true}")),
            "CRL #1 is not signed by a CA of the client CA bundle",
        ),
        (
            format!("listeners: [{{address: 127.0.0.1:8080}}]\nupstreams: {{a: {{backends: [127.0.0.1:1], tls: {{sni: a.internal, client_certificate: {}/demo-server.crt}}}}}}\n{}", keys.display(), route("public")),
            "upstreams.a.tls.client_certificate: give both `client_certificate` and `client_key`",
        ),
        (
            format!("listeners: [{{address: 127.0.0.1:8080}}]\nupstreams: {{a: {{backends: [127.0.0.1:1], tls: {{sni: a.internal, client_certificate: {0}/demo-clients-ca.pem, client_key: {0}/demo-server.key}}}}}}\n{1}", keys.display(), route("public")),
            "upstreams.a.tls.client_key: does not belong to the certificate",
        ),
    ];
    for (i, (body, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("broken-mtls-{i}.yaml"));
        std::fs::write(&path, body).unwrap();
        let (ok, _, stderr) = check(&path);
        assert!(!ok, "case {i}: accepted:\n{body}");
        assert!(
            stderr.contains(expected),
            "case {i}: expected `{expected}` in:\n{stderr}"
        );
    }
}

#[test]
fn broken_request_signing_settings_are_rejected_with_the_offending_key() {
    let dir = tempfile::tempdir().unwrap();
    let good_secret = "base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v";
    std::fs::write(
        dir.path().join("keys.yaml"),
        format!(
            "keys:\n- id: k1\n  consumer: c\n  secret: \"{good_secret}\"\n  created: 2026-01-01\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("short.yaml"),
        "keys:\n- id: k1\n  consumer: c\n  secret: \"base64:c2hvcnQ=\"\n  created: 2026-01-01\n",
    )
    .unwrap();
    let head =
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: [127.0.0.1:1]}}\n";
    let route = "routes: [{name: r, match: {path_prefix: /}, upstream: a, auth: {hmac: true}}]\n";
    let cases: Vec<(String, &str)> = vec![
        (
            route.to_string(),
            "request_signing: a route accepts `hmac` but no `request_signing.keys_file` is configured",
        ),
        (
            format!("request_signing: {{keys_file: short.yaml}}\n{route}"),
            "keys[0].secret: must decode to at least 32 bytes",
        ),
        (
            format!("request_signing: {{keys_file: keys.yaml, window: 2h}}\n{route}"),
            "request_signing.window: between 1s and 1h",
        ),
        (
            format!("request_signing: {{keys_file: keys.yaml, components: [\"@method\", \"@authority\"]}}\n{route}"),
            "request_signing.components: must include `@path`",
        ),
        (
            format!("request_signing: {{keys_file: keys.yaml, components: [\"@method\", \"@path\", \"@query-param\"]}}\n{route}"),
            "request_signing.components[2]: ",
        ),
        (
            format!("request_signing: {{keys_file: keys.yaml, nonces: {{max_entries: 0}}}}\n{route}"),
            "request_signing.nonces.max_entries: at least 1",
        ),
        (
            "request_signing: {keys_file: keys.yaml}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: {any: [{hmac: true, api_key: true}]}}]\n".to_string(),
            "routes[0].auth.any[0]: name one credential",
        ),
    ];
    for (i, (body, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("broken-signing-{i}.yaml"));
        std::fs::write(&path, format!("{head}{body}")).unwrap();
        let (ok, _, stderr) = check(&path);
        assert!(!ok, "case {i}: accepted:\n{body}");
        assert!(
            stderr.contains(expected),
            "case {i}: expected `{expected}` in:\n{stderr}"
        );
        assert!(!stderr.contains("c2hvcnQ"), "a secret in the error output");
    }
}

#[test]
fn parts_the_gateway_cannot_put_to_work_are_reported_at_their_keys() {
    // Valid as a file, but the composition root cannot make these: two Redis URLs it cannot
    // use and a revocation state file that is not one. `check` names each at its key.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("revocations.json");
    std::fs::write(&state, "not a revocation list").unwrap();
    let path = dir.path().join("unusable.yaml");
    std::fs::write(
        &path,
        format!(
            "listeners: [{{address: 127.0.0.1:1}}]\nadmin: {{address: 127.0.0.1:2}}\nrate_limits:\n  backend: redis\n  redis: {{ url: \"nope://x\" }}\n  global: {{ requests: 10, per: second }}\nrequest_signing:\n  keys_file: {keys}\n  nonces: {{ redis: {{ url: \"nope://x\" }} }}\nrevocation:\n  state_file: {state}\nupstreams: {{a: {{backends: [127.0.0.1:9]}}}}\nroutes: [{{name: r, match: {{path_prefix: /}}, upstream: a, auth: {{hmac: true}}}}]\n",
            keys = conf_dir().join("signing-keys.yaml").display(),
            state = state.display(),
        ),
    )
    .unwrap();
    let (ok, _, err) = check(&path);
    assert!(!ok, "{err}");
    for key in [
        "rate_limits.redis.url: ",
        "request_signing.nonces.redis.url: ",
        "revocation.state_file: ",
    ] {
        assert!(err.contains(key), "missing `{key}` in:\n{err}");
    }
}
