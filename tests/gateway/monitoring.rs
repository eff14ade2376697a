//! The operations pack in `deploy/monitoring/` holds against the real thing: the alert rules
//! and the example Prometheus configuration pass `promtool`; a gateway that has served every
//! kind of route (public, JWT from a JWKS, policy refusals, API keys over their rate limit,
//! token introspection, a dead upstream, a connection it closed itself) exports metrics that
//! pass `promtool check metrics` and hold every series the dashboard and the rules query,
//! with the labels and label values they select on; and a real Prometheus scrapes the
//! gateway, loads and evaluates the rules, and runs every dashboard query.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package (`make test-deps`); a
//! test that cannot run them fails, it does not skip.

use crate::support::introspection::TestIntrospection;
use crate::support::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const INSTALL: &str = "install Debian's prometheus package: make test-deps";

/// The metric families the dashboard must read (issue 16: one row or panel for each).
const DASHBOARD_MUST_READ: &[&str] = &[
    "portcullis_requests_total",
    "portcullis_request_duration_seconds",
    "portcullis_auth_decisions_total",
    "portcullis_policy_decisions_total",
    "portcullis_jwks_age_seconds",
    "portcullis_jwks_fetches_total",
    "portcullis_introspection_requests_total",
    "portcullis_introspection_cache_total",
    "portcullis_introspection_breaker_state",
    "portcullis_rate_limited_total",
    "portcullis_backend_healthy",
    "portcullis_upstream_connect_errors_total",
    "portcullis_open_connections",
    "portcullis_connections_closed_total",
];

/// A file of the pack.
fn pack(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/monitoring")
        .join(file)
}

/// `name` (from the `prometheus` package) as a command; a missing one fails the test.
fn tool(name: &str) -> Command {
    let probe = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match probe {
        Ok(_) => Command::new(name),
        Err(e) => panic!("`{name}` cannot be run ({e}): {INSTALL}"),
    }
}

/// Run `cmd` with `stdin` fed to it; its output.
fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// The pack's files and the PromQL in them.

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(pack("grafana-dashboard.json")).unwrap()).unwrap()
}

fn rules() -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(pack("alerts.yml")).unwrap()).unwrap()
}

/// Every rule of every group of alerts.yml.
fn rule_list(rules: &serde_yaml::Value) -> Vec<serde_yaml::Value> {
    rules["groups"]
        .as_sequence()
        .expect("alerts.yml has groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .collect()
}

/// The `expr` of every rule.
fn rule_exprs() -> Vec<String> {
    rule_list(&rules())
        .iter()
        .map(|r| {
            r["expr"]
                .as_str()
                .expect("every rule has an expr")
                .to_string()
        })
        .collect()
}

/// Every `expr` string anywhere in the dashboard (the panels' queries).
fn dashboard_exprs() -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&dashboard(), &mut out);
    out
}

/// The template variables' queries (`label_values(...)`).
fn dashboard_variable_queries() -> Vec<String> {
    dashboard()["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["query"]["query"].as_str().map(str::to_string))
        .collect()
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A metric in a query, named by its family (`_bucket`, `_sum` and `_count` series by their
/// histogram's name), with its label matchers `(label, op, value)`.
#[derive(Debug)]
struct Selector {
    family: String,
    matchers: Vec<(String, String, String)>,
}

/// Every `portcullis_...` metric a PromQL expression names.
fn selectors(expr: &str) -> Vec<Selector> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = expr[i..].find("portcullis_") {
        let start = i + at;
        let mut end = start;
        while end < b.len()
            && (b[end].is_ascii_lowercase() || b[end].is_ascii_digit() || b[end] == b'_')
        {
            end += 1;
        }
        i = end;
        if start > 0 && is_word(b[start - 1]) {
            continue;
        }
        let name = &expr[start..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name)
            .to_string();
        let mut matchers = Vec::new();
        let mut j = end;
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if j < b.len() && b[j] == b'{' {
            j += 1;
            loop {
                while j < b.len() && (b[j].is_ascii_whitespace() || b[j] == b',') {
                    j += 1;
                }
                if j >= b.len() || b[j] == b'}' {
                    break;
                }
                let l = j;
                while j < b.len() && is_word(b[j]) {
                    j += 1;
                }
                let label = expr[l..j].to_string();
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                let op = ["=~", "!~", "!=", "="]
                    .into_iter()
                    .find(|op| expr[j..].starts_with(op))
                    .unwrap_or_else(|| panic!("no matcher operator after `{label}` in `{expr}`"));
                j += op.len();
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                assert_eq!(b.get(j), Some(&b'"'), "unquoted matcher value in `{expr}`");
                j += 1;
                let mut value = String::new();
                while j < b.len() && b[j] != b'"' {
                    if b[j] == b'\\' {
                        j += 1;
                    }
                    value.push(b[j] as char);
                    j += 1;
                }
                j += 1;
                matchers.push((label, op.to_string(), value));
            }
            i = j;
        }
        out.push(Selector { family, matchers });
    }
    out
}

/// `expr` with the contents of its string literals removed (so that words in label values
/// are not read as PromQL).
fn without_strings(expr: &str) -> String {
    let (mut out, mut quoted, mut escaped) = (String::new(), false, false);
    for c in expr.chars() {
        if !quoted {
            out.push(c);
            quoted = c == '"';
        } else if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            out.push(c);
            quoted = false;
        }
    }
    out
}

/// The labels named in `by (...)`, `without (...)`, `on (...)`, `ignoring (...)` and
/// `group_left/right (...)` clauses, and as the label of `label_values(metric, label)`.
fn grouping_labels(expr: &str) -> BTreeSet<String> {
    const CLAUSES: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let s = without_strings(expr);
    let b = s.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        if !is_word(b[i]) || (i > 0 && is_word(b[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && is_word(b[i]) {
            i += 1;
        }
        let word = &s[start..i];
        let Some(args) = s[i..].trim_start().strip_prefix('(') else {
            continue;
        };
        let args = &args[..args.find(')').unwrap_or(args.len())];
        if CLAUSES.contains(&word) {
            out.extend(
                args.split(',')
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
            );
        } else if word == "label_values" {
            if let Some((_, label)) = args.rsplit_once(',') {
                out.insert(label.trim().to_string());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// A live /metrics page.

/// The metric families of a /metrics page: their types, and the values seen for each label.
#[derive(Debug, Default)]
struct Live {
    types: BTreeMap<String, String>,
    labels: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

/// `name{a="1",b="2"} value` as the name and its labels.
fn sample(line: &str) -> (String, Vec<(String, String)>) {
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = line[..end].to_string();
    let mut labels = Vec::new();
    if line[end..].starts_with('{') {
        let mut chars = line[end + 1..].chars();
        loop {
            let label: String = chars.by_ref().take_while(|c| *c != '=').collect();
            let label = label.trim_start_matches(',').to_string();
            if label.is_empty() || label.starts_with('}') {
                break;
            }
            assert_eq!(chars.next(), Some('"'), "{line}");
            let mut value = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.push((label, value));
        }
    }
    (name, labels)
}

fn live(text: &str) -> Live {
    let mut live = Live::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            live.types.insert(name.to_string(), kind.to_string());
        }
    }
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, labels) = sample(line);
        let family = if live.types.contains_key(&name) {
            name
        } else {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| live.types.contains_key(*f))
                .unwrap_or_else(|| panic!("a sample of no family: {line}"))
                .to_string()
        };
        let seen = live.labels.entry(family).or_default();
        for (label, value) in labels {
            seen.entry(label).or_default().insert(value);
        }
    }
    live
}

/// What in `expr` the live page does not hold: metrics, label names, literal `=` values, and
/// labels grouped or matched on. `job` and `instance` are the ones Prometheus adds.
fn problems(origin: &str, expr: &str, live: &Live) -> Vec<String> {
    let mut out = Vec::new();
    let sels = selectors(expr);
    let mut known: BTreeSet<&str> = ["job", "instance"].into();
    for s in &sels {
        let Some(labels) = live.labels.get(&s.family) else {
            if !live.types.contains_key(&s.family) {
                out.push(format!("{origin}: `{}` is not in /metrics", s.family));
            }
            continue;
        };
        known.extend(labels.keys().map(String::as_str));
        for (label, op, value) in &s.matchers {
            match labels.get(label) {
                None => out.push(format!(
                    "{origin}: `{}` has no label `{label}` (it has {:?})",
                    s.family,
                    labels.keys().collect::<Vec<_>>()
                )),
                Some(values) if op == "=" && !value.contains('$') && !values.contains(value) => {
                    out.push(format!(
                        "{origin}: `{}{{{label}=\"{value}\"}}`: no such value live (seen {values:?})",
                        s.family
                    ))
                }
                Some(_) => {}
            }
        }
    }
    for label in grouping_labels(expr) {
        if !known.contains(label.as_str()) {
            out.push(format!(
                "{origin}: label `{label}` is on none of the metrics of `{expr}`"
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// A gateway with every kind of route, and traffic through each.

const ISS: &str = "https://idp.monitoring.test";
const AUD: &str = "api://monitoring";
const CLIENT_ID: &str = "portcullis-gw";
const SECRET: &str = "monitoring-secret";

struct World {
    gw: Gateway,
    signing: jsonwebtoken::EncodingKey,
    introspection: TestIntrospection,
    api_key: String,
    _echo: Echo,
    _idp: TestIdp,
    _dir: tempfile::TempDir,
}

impl World {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // JWT provider `corp`: keys from a JWKS server, so that the JWKS series exist.
        let rsa = Rsa::generate(2048).unwrap();
        let jwks = json!({"keys": [{
            "kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
            "n": URL_SAFE_NO_PAD.encode(rsa.n().to_vec()),
            "e": URL_SAFE_NO_PAD.encode(rsa.e().to_vec()),
        }]});
        let signing = jsonwebtoken::EncodingKey::from_rsa_pem(
            &PKey::from_rsa(rsa)
                .unwrap()
                .private_key_to_pem_pkcs8()
                .unwrap(),
        )
        .unwrap();
        let idp = TestIdp::start(jwks.to_string());
        // Introspection provider `sso`.
        let introspection = TestIntrospection::start(CLIENT_ID, SECRET);
        let secret_file = dir.path().join("client-secret");
        std::fs::write(&secret_file, SECRET).unwrap();
        // API keys.
        let consumers = dir.path().join("consumers.yaml");
        let api_key = new_api_key(&consumers, "acme", &[]);
        let echo = Echo::start();
        let closed = free_port();
        let providers = identity_providers([
            (
                "corp",
                Conf::from(json!({
                    "issuer": ISS,
                    "audiences": [AUD],
                    "algorithms": ["RS256"],
                    "keys": { "jwks_uri": idp.jwks_uri() },
                })),
            ),
            (
                "sso",
                Conf::from(json!({
                    "issuer": introspection.issuer(),
                    "audiences": [AUD],
                    "introspection": {
                        "endpoint": introspection.endpoint(),
                        "client_id": CLIENT_ID,
                        "client_secret_file": secret_file,
                    },
                })),
            ),
        ]);
        let gw = Gateway::start_with(
            "",
            "  max_request_line_size: 1024\n",
            &format!(
                r#"{providers}api_keys:
  consumers_file: {consumers}
upstreams:
  echo:
    backends: ["{origin}"]
    health_check: {{ type: tcp, interval: 1s }}
  dead:
    backends: ["127.0.0.1:{closed}"]
    retries: 0
routes:
  - name: public
    match: {{ path_prefix: /public }}
    upstream: echo
    auth: public
  - name: orders
    match: {{ path_prefix: /orders }}
    upstream: echo
    auth: {{ jwt: corp }}
  - name: admin
    match: {{ path_prefix: /admin }}
    upstream: echo
    auth: {{ jwt: corp, scopes: [admin] }}
  - name: keyed
    match: {{ path_prefix: /keyed }}
    upstream: echo
    auth: {{ api_key: true }}
    rate_limit: {{ key: consumer, requests: 2, per: minute }}
  - name: opaque
    match: {{ path_prefix: /opaque }}
    upstream: echo
    auth: {{ introspection: sso }}
  - name: dead
    match: {{ path_prefix: /dead }}
    upstream: dead
    auth: public
"#,
                consumers = consumers.display(),
                origin = echo.addr,
            ),
        );
        Self {
            gw,
            signing,
            introspection,
            api_key,
            _echo: echo,
            _idp: idp,
            _dir: dir,
        }
    }

    fn token(&self, scope: &str) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some("k1".into());
        let claims = json!({
            "iss": ISS, "aud": AUD, "sub": "alice", "scope": scope,
            "iat": now(), "exp": now() + 300,
        });
        jsonwebtoken::encode(&header, &claims, &self.signing).unwrap()
    }

    /// GET `path` with these headers; the status.
    fn get(&self, path: &str, headers: &[(&str, &str)]) -> u16 {
        let mut req = client().get(self.gw.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.send().unwrap().status().as_u16()
    }

    /// Allowed and refused requests on every route; ends with a 502 from `dead` and a
    /// connection the gateway closes (414).
    fn drive_traffic(&self) {
        let bearer = |t: &str| format!("Bearer {t}");
        for _ in 0..3 {
            assert_eq!(self.get("/public/x", &[]), 200);
        }
        assert_eq!(self.get("/nowhere", &[]), 404);
        // JWT: allowed, no token, a token that is not one; a policy refusal (scope).
        let good = bearer(&self.token("orders:read"));
        assert_eq!(self.get("/orders/1", &[("Authorization", &good)]), 200);
        assert_eq!(self.get("/orders/1", &[]), 401);
        assert_eq!(
            self.get("/orders/1", &[("Authorization", "Bearer not-a-jwt")]),
            401
        );
        assert_eq!(self.get("/admin/users", &[("Authorization", &good)]), 403);
        // API keys: two allowed, the third over the limit, and a wrong key.
        let key = self.api_key.as_str();
        assert_eq!(self.get("/keyed/a", &[("X-API-Key", key)]), 200);
        assert_eq!(self.get("/keyed/a", &[("X-API-Key", key)]), 200);
        assert_eq!(self.get("/keyed/a", &[("X-API-Key", key)]), 429);
        assert_eq!(self.get("/keyed/a", &[("X-API-Key", "ptc_not_a_key")]), 401);
        // Introspection: an active token (a miss, then a hit) and an inactive one.
        self.introspection.activate(
            "opaque-active",
            json!({"sub": "bob", "aud": AUD, "exp": now() + 300, "iat": now()}),
        );
        let active = bearer("opaque-active");
        assert_eq!(self.get("/opaque/1", &[("Authorization", &active)]), 200);
        assert_eq!(self.get("/opaque/1", &[("Authorization", &active)]), 200);
        assert_eq!(
            self.get("/opaque/1", &[("Authorization", "Bearer opaque-unknown")]),
            401
        );
        // A backend that refuses connections.
        assert_eq!(self.get("/dead", &[]), 502);
        // A request line over max_request_line_size: 414, and the gateway closes.
        let long = raw_request(
            self.gw.addr,
            format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "x".repeat(2000)).as_bytes(),
        );
        assert!(long.starts_with("HTTP/1.1 414"), "{long}");
        // Requests are counted after their response is sent: wait for the last ones.
        let closed = format!(
            "portcullis_connections_closed_total{{listener=\"{}\",reason=\"line_too_large\"}} 1",
            self.gw.addr
        );
        assert!(
            self.gw.eventually(Duration::from_secs(5), || {
                let m = self.gw.metrics();
                m.contains(
                    r#"portcullis_requests_total{method="GET",route="dead",status_class="5xx"} 1"#,
                ) && m.contains(&closed)
            }),
            "{}",
            self.gw.metrics()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn the_alert_rules_pass_promtool() {
    let mut rules_check = tool("promtool");
    rules_check.args(["check", "rules"]).arg(pack("alerts.yml"));
    assert_success("promtool check rules alerts.yml", &run(rules_check, b""));
    // rule_files are resolved next to prometheus.yml, so this checks alerts.yml again too.
    let mut config_check = tool("promtool");
    config_check
        .args(["check", "config"])
        .arg(pack("prometheus.yml"));
    let out = run(config_check, b"");
    assert_success("promtool check config prometheus.yml", &out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 rule files found"),
        "prometheus.yml loads alerts.yml: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The shape the README promises: one group `portcullis`, every rule an alert with a
    // `for`, a severity and a summary and description.
    let rules = rules();
    let groups = rules["groups"].as_sequence().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["name"].as_str(), Some("portcullis"));
    let list = rule_list(&rules);
    assert!(list.len() >= 8, "{} rules", list.len());
    for r in &list {
        let name = r["alert"]
            .as_str()
            .unwrap_or_else(|| panic!("not an alert: {r:?}"));
        assert!(r["for"].as_str().is_some(), "{name}: no `for`");
        assert!(
            matches!(
                r["labels"]["severity"].as_str(),
                Some("critical" | "warning" | "info")
            ),
            "{name}: severity {:?}",
            r["labels"]["severity"]
        );
        for a in ["summary", "description"] {
            assert!(
                r["annotations"][a].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: no {a}"
            );
        }
    }
    // The scrape job is the one PortcullisDown selects.
    let config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(pack("prometheus.yml")).unwrap()).unwrap();
    let job = &config["scrape_configs"][0];
    assert_eq!(job["job_name"].as_str(), Some("portcullis"));
    assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
    assert_eq!(
        job["static_configs"][0]["targets"][0].as_str(),
        Some("127.0.0.1:9901")
    );
}

#[test]
fn live_metrics_pass_promtool_and_hold_every_series_the_pack_queries() {
    let mut lint = tool("promtool");
    lint.args(["check", "metrics"]);
    let world = World::start();
    world.drive_traffic();
    let text = world.gw.metrics();

    let out = run(lint, text.as_bytes());
    assert_success("promtool check metrics (the live /metrics page)", &out);

    // The dashboard's shape: schema 39, a Prometheus datasource variable every query uses,
    // and a route variable from the requests counter.
    let d = dashboard();
    assert_eq!(d["schemaVersion"], 39);
    let vars = d["templating"]["list"].as_array().unwrap();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable `{name}`"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    assert_eq!(
        var("route")["query"]["query"],
        "label_values(portcullis_requests_total, route)"
    );
    for p in d["panels"].as_array().unwrap() {
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in std::iter::once(p).chain(targets) {
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "panel {}",
                p["title"]
            );
        }
    }

    let dash = dashboard_exprs();
    let read: BTreeSet<String> = dash
        .iter()
        .flat_map(|e| selectors(e))
        .map(|s| s.family)
        .collect();
    for family in DASHBOARD_MUST_READ {
        assert!(
            read.contains(*family),
            "the dashboard does not read {family}"
        );
    }

    // Every metric the pack queries is on the live page (`# TYPE` line), with the labels
    // and the literal label values it selects on. Each labelled family was made to appear
    // by the traffic above; none is exempt.
    let live = live(&text);
    let queries: Vec<(String, String)> = dash
        .iter()
        .map(|e| ("grafana-dashboard.json".to_string(), e.clone()))
        .chain(
            dashboard_variable_queries()
                .into_iter()
                .map(|q| ("grafana-dashboard.json variable".to_string(), q)),
        )
        .chain(
            rule_exprs()
                .into_iter()
                .map(|e| ("alerts.yml".to_string(), e)),
        )
        .collect();
    let mut families = BTreeSet::new();
    let mut found = Vec::new();
    for (origin, q) in &queries {
        families.extend(selectors(q).into_iter().map(|s| s.family));
        found.extend(problems(origin, q, &live));
    }
    for family in &families {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} is queried by the pack but has no `# TYPE` line in /metrics:\n{text}"
        );
    }
    assert!(
        found.is_empty(),
        "the pack queries what the gateway does not export:\n  {}\n\n/metrics:\n{text}",
        found.join("\n  ")
    );
    assert!(families.len() >= DASHBOARD_MUST_READ.len(), "{families:?}");
}

/// A real Prometheus on a free loopback port, killed (by its pid) when dropped.
struct Prometheus {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scraping `target` every second, evaluating deploy/monitoring/alerts.yml every second.
    fn start(target: SocketAddr) -> Self {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let config = dir.path().join("prometheus.yml");
            std::fs::write(
                &config,
                format!(
                    "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: portcullis\n    metrics_path: /metrics\n    static_configs:\n      - targets: [\"{target}\"]\n",
                    rules = pack("alerts.yml").display()
                ),
            )
            .unwrap();
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
            let child = tool("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting prometheus: {e}: {INSTALL}"));
            let mut p = Self {
                child,
                base: format!("http://{addr}"),
                dir,
            };
            let ready = eventually(Duration::from_secs(30), &mut || {
                if !matches!(p.child.try_wait(), Ok(None)) {
                    return true;
                }
                client()
                    .get(format!("{}/-/ready", p.base))
                    .send()
                    .is_ok_and(|r| r.status() == 200)
            });
            if ready && matches!(p.child.try_wait(), Ok(None)) {
                return p;
            }
            // Lost its port to another process: try another one; any other failure is one.
            let log = p.log();
            assert!(
                log.contains("address already in use"),
                "prometheus did not start:\n{log}"
            );
        }
        panic!("prometheus did not start on five ports");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET `path` of the HTTP API (with `query=` when given); its JSON, whatever the status.
    fn api(&self, path: &str, query: Option<&str>) -> Value {
        let mut url = format!("{}{path}", self.base);
        if let Some(q) = query {
            url.push_str("?query=");
            url.extend(url::form_urlencoded::byte_serialize(q.as_bytes()));
        }
        let text = client().get(url).send().unwrap().text().unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_the_gateway() {
    let echo = Echo::start();
    let gw = Gateway::start(&format!(
        "upstreams:\n  echo:\n    backends: [\"{}\"]\nroutes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    upstream: echo\n    auth: public\n",
        echo.addr
    ));
    let prom = Prometheus::start(gw.admin);
    const SENT: u32 = 5;
    for _ in 0..SENT {
        assert_eq!(client().get(gw.url("/api/x")).send().unwrap().status(), 200);
    }

    // The counter, as Prometheus scraped it, has every request.
    let mut last = Value::Null;
    let scraped = eventually(Duration::from_secs(30), &mut || {
        last = prom.api("/api/v1/query", Some("portcullis_requests_total"));
        last["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                s["metric"]["route"] == "api"
                    && s["metric"]["job"] == "portcullis"
                    && s["value"][1]
                        .as_str()
                        .and_then(|v| v.parse::<f64>().ok())
                        .is_some_and(|v| v >= f64::from(SENT))
            })
    });
    assert!(
        scraped,
        "Prometheus never saw {SENT} requests on route api: {last}\n{}",
        prom.log()
    );

    // Prometheus loaded alerts.yml itself, and evaluates every rule without an error.
    let want: BTreeSet<String> = rule_list(&rules())
        .iter()
        .map(|r| r["alert"].as_str().unwrap().to_string())
        .collect();
    let evaluated = eventually(Duration::from_secs(30), &mut || {
        last = prom.api("/api/v1/rules", None);
        let Some(group) = last["data"]["groups"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["name"] == "portcullis"))
        else {
            return false;
        };
        let rules = group["rules"].as_array().cloned().unwrap_or_default();
        let names: BTreeSet<String> = rules
            .iter()
            .filter(|r| r["type"] == "alerting")
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect();
        names == want && rules.iter().all(|r| r["health"] == "ok")
    });
    assert!(
        evaluated,
        "Prometheus did not load and evaluate the rules {want:?}: {last}\n{}",
        prom.log()
    );

    // Every dashboard query is PromQL Prometheus runs (Grafana's variables filled in).
    for expr in dashboard_exprs() {
        let q = expr
            .replace("$__rate_interval", "1m")
            .replace("$route", ".*");
        assert!(
            !q.contains('$'),
            "a variable the test does not fill in: {expr}"
        );
        let answer = prom.api("/api/v1/query", Some(&q));
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
    }
    // Prometheus is stopped (by its pid) when `prom` is dropped, before the gateway.
    drop(prom);
}

#[test]
fn the_promql_readers_find_metrics_labels_and_values() {
    // The helpers the coverage test rests on, on the kinds of expression the pack uses.
    let s = selectors(
        r#"histogram_quantile(0.99, sum by (route, le) (rate(portcullis_request_duration_seconds_bucket{route=~"$route", status_class = "5xx"}[1m]))) / portcullis_x_total"#,
    );
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].family, "portcullis_request_duration_seconds");
    assert_eq!(
        s[0].matchers,
        [
            ("route".into(), "=~".into(), "$route".into()),
            ("status_class".into(), "=".into(), "5xx".into())
        ]
    );
    assert_eq!(s[1].family, "portcullis_x_total");
    assert_eq!(
        grouping_labels(
            r#"sum by (job, instance) (a{reason="by (x)"}) unless on(provider) b / ignoring (le) c"#
        ),
        ["instance", "job", "le", "provider"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        grouping_labels("label_values(portcullis_requests_total, route)"),
        ["route".to_string()].into()
    );
    let page = "# TYPE portcullis_a_total counter\nportcullis_a_total{route=\"r\",k=\"x\\\"y\"} 1\n# TYPE portcullis_h histogram\nportcullis_h_bucket{le=\"0.5\"} 1\nportcullis_h_sum 1\n";
    let l = live(page);
    assert_eq!(
        l.labels["portcullis_a_total"]["k"],
        ["x\"y".to_string()].into()
    );
    assert!(l.labels["portcullis_h"].contains_key("le"));
    assert!(problems("t", r#"sum by (route) (portcullis_a_total{route="r"})"#, &l).is_empty());
    assert_eq!(
        problems("t", r#"portcullis_a_total{status="r"}"#, &l).len(),
        1,
        "a label the metric lacks"
    );
    assert_eq!(
        problems("t", r#"portcullis_a_total{route="nope"}"#, &l).len(),
        1,
        "a value never seen"
    );
    assert_eq!(
        problems("t", "sum by (status) (portcullis_a_total)", &l).len(),
        1,
        "grouping by a label the metric lacks"
    );
    assert_eq!(
        problems("t", "portcullis_b", &l).len(),
        1,
        "a missing metric"
    );
}
