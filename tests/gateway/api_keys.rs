//! API keys end to end: keys made by `portcullis keys new`, a consumers file holding only
//! digests, the real gateway and an echo origin.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

struct Setup {
    consumers: PathBuf,
    echo: Echo,
    gw: Gateway,
    _dir: tempfile::TempDir,
}

/// A gateway whose `/billing` route takes API keys (scope `invoices:read`), `/either` takes a
/// JWT or a key, and whose consumers file is `consumers` (written before start by `prepare`).
fn setup(api_keys_extra: &str, prepare: impl FnOnce(&Path)) -> (Setup, SigningIdp) {
    let dir = tempfile::tempdir().unwrap();
    let consumers = dir.path().join("consumers.yaml");
    prepare(&consumers);
    let idp = SigningIdp::new();
    let echo = Echo::start();
    let gw = Gateway::start(&format!(
        r#"{provider}api_keys:
  consumers_file: {file}
  reload_interval: 100ms
{api_keys_extra}upstreams:
  echo:
    backends: ["{origin}"]
routes:
  - name: billing
    match: {{ path_prefix: /billing }}
    upstream: echo
    auth: {{ api_key: true, scopes: ["invoices:read"] }}
  - name: either
    match: {{ path_prefix: /either }}
    upstream: echo
    auth: {{ any: [{{ jwt: corp }}, {{ api_key: true }}] }}
"#,
        provider = idp.provider_yaml("corp"),
        file = consumers.display(),
        origin = echo.addr
    ));
    (
        Setup {
            consumers,
            echo,
            gw,
            _dir: dir,
        },
        idp,
    )
}

fn with_key(s: &Setup, path: &str, key: &str) -> (u16, serde_json::Value, Option<String>) {
    let resp = client()
        .get(s.gw.url(path))
        .header("X-API-Key", key)
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.json().unwrap_or(serde_json::Value::Null);
    (status, body, challenge)
}

/// Give the consumer a scope in the file (keys new does not set scopes).
fn grant_scope(file: &Path, consumer: &str, scope: &str) {
    let at = format!("consumers[{consumer}]");
    Conf::read(file)
        .set(format!("{at}.tenant"), format!("{consumer}-corp"))
        .set(format!("{at}.scopes"), [scope])
        .write(file);
}

#[test]
fn a_key_made_by_keys_new_authenticates_and_the_backend_sees_the_consumer_not_the_key() {
    let mut key = String::new();
    let (s, _idp) = setup("", |f| {
        key = new_api_key(f, "acme", &["--expires", "90d"]);
        grant_scope(f, "acme", "invoices:read");
    });
    let text = std::fs::read_to_string(&s.consumers).unwrap();
    assert!(
        !text.contains(&key),
        "the file holds a digest, never the key"
    );

    let (status, body, _) = with_key(&s, "/billing/7", &key);
    assert_eq!(status, 200, "{body}");
    let e: Echoed = serde_json::from_value(body).unwrap();
    assert_eq!(e.header("x-client-id"), Some("acme"));
    assert_eq!(e.header("x-tenant-id"), Some("acme-corp"));
    assert_eq!(e.header("x-user-scopes"), Some("invoices:read"));
    assert_eq!(e.header("x-auth-method"), Some("api_key"));
    assert_eq!(e.header("x-user-id"), None);
    assert_eq!(
        e.header("x-api-key"),
        None,
        "the key never reaches the backend"
    );

    // The admin listener shows the key's last use, never its digest.
    let admin = client()
        .get(s.gw.admin_url("/admin/consumers"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&admin).unwrap();
    let k = &v["consumers"][0]["keys"][0];
    assert_eq!(v["consumers"][0]["name"], "acme");
    assert!(
        k["last_used"].as_str().unwrap().starts_with("20"),
        "{admin}"
    );
    assert!(k["expires"].is_string());
    assert!(!admin.contains("sha256"), "{admin}");
    assert!(!admin.contains(&key));
    // Nothing in the access log carries the key.
    assert!(s.gw.eventually(Duration::from_secs(5), || s
        .gw
        .access_log()
        .contains("/billing/7")));
    let log = s.gw.access_log();
    assert!(!log.contains(&key));
    let line: serde_json::Value =
        serde_json::from_str(log.lines().find(|l| l.contains("/billing/7")).unwrap()).unwrap();
    assert_eq!(line["consumer"], "acme");
    assert_eq!(line["key_id"].as_str(), key.split('_').nth(2));
}

#[test]
fn refused_keys_get_401_with_distinct_codes() {
    let (mut live, mut expired, mut disabled) = (String::new(), String::new(), String::new());
    let (s, _idp) = setup("", |f| {
        live = new_api_key(f, "acme", &[]);
        expired = new_api_key(f, "acme", &[]);
        disabled = new_api_key(f, "acme", &[]);
        grant_scope(f, "acme", "invoices:read");
        // Expire the second key and disable the third (entries are in creation order).
        Conf::read(f)
            .set("consumers[acme].keys.1.expires", "2020-01-01")
            .set("consumers[acme].keys.2.disabled", true)
            .write(f);
    });
    let test_key = {
        let out = Command::new(BIN)
            .args(["keys", "new", "--consumer", "x", "--env", "test"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(with_key(&s, "/billing/1", &live).0, 200);
    let mut unknown = live.clone();
    unknown.replace_range(live.len() - 5.., "AAAAA");
    for (key, code) in [
        (unknown.as_str(), "api_key_unknown"),
        ("not-even-a-key", "api_key_unknown"),
        (expired.as_str(), "api_key_expired"),
        (disabled.as_str(), "api_key_disabled"),
        (test_key.as_str(), "api_key_wrong_environment"),
    ] {
        let (status, body, challenge) = with_key(&s, "/billing/1", key);
        assert_eq!((status, body["error"].as_str()), (401, Some(code)), "{key}");
        assert_eq!(
            challenge.as_deref(),
            Some(r#"ApiKey realm="portcullis", header="x-api-key""#)
        );
        assert!(!body.to_string().contains(key));
    }
    let (_, body, _) = with_key(&s, "/billing/1", &test_key);
    assert_eq!(
        body["message"],
        "This gateway accepts live keys; this is a test key."
    );
    let missing = client().get(s.gw.url("/billing/1")).send().unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(
        error_body(&missing.text().unwrap())["error"],
        "api_key_missing"
    );
    // A key in the query string does not count unless that is configured.
    let in_query = client()
        .get(s.gw.url(&format!("/billing/1?api_key={live}")))
        .send()
        .unwrap();
    assert_eq!(
        error_body(&in_query.text().unwrap())["error"],
        "api_key_missing"
    );
    // Two keys: which one? Refused.
    let two = client()
        .get(s.gw.url("/billing/1"))
        .header("X-API-Key", &live)
        .header("X-API-Key", &live)
        .send()
        .unwrap();
    assert_eq!(two.status(), 400);
    assert_eq!(s.echo.received().len(), 1);
}

#[test]
fn a_key_in_the_query_string_works_when_enabled_and_is_never_forwarded() {
    let mut key = String::new();
    let (s, _idp) = setup("  query_param: api_key\n", |f| {
        key = new_api_key(f, "acme", &[]);
        grant_scope(f, "acme", "invoices:read");
    });
    let (status, body, _) = with_key(&s, "/billing/1?page=2", &key);
    assert_eq!(status, 200, "{body}");
    let resp = client()
        .get(s.gw.url(&format!("/billing/1?page=2&api_key={key}&sort=asc")))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let e: Echoed = resp.json().unwrap();
    assert_eq!(e.query.as_deref(), Some("page=2&sort=asc"));
    // Header and query at once: ambiguous.
    let both = client()
        .get(s.gw.url(&format!("/billing/1?api_key={key}")))
        .header("X-API-Key", &key)
        .send()
        .unwrap();
    assert_eq!(both.status(), 400);
}

#[test]
fn rotation_and_revocation_take_effect_without_a_restart_and_a_bad_file_changes_nothing() {
    let (mut old, mut new) = (String::new(), String::new());
    let (s, _idp) = setup("", |f| {
        old = new_api_key(f, "acme", &[]);
        new = new_api_key(f, "acme", &[]);
        grant_scope(f, "acme", "invoices:read");
    });
    assert_eq!(with_key(&s, "/billing/1", &old).0, 200);
    assert_eq!(with_key(&s, "/billing/1", &new).0, 200);

    // Revoke the old key: remove its entry from the file.
    let old_id = old.split('_').nth(2).unwrap().to_string();
    Conf::read(&s.consumers)
        .remove(format!("consumers[acme].keys[id={old_id}]"))
        .write(&s.consumers);
    assert!(s
        .gw
        .eventually(Duration::from_secs(5), || with_key(&s, "/billing/1", &old)
            .0
            == 401));
    assert_eq!(with_key(&s, "/billing/1", &new).0, 200);

    // A broken file is refused whole: the keys in force stay, and it is counted.
    std::fs::write(&s.consumers, "consumers: [{name: acme, keys: [{id: x}]}]\n").unwrap();
    assert!(s.gw.eventually(Duration::from_secs(5), || s
        .gw
        .metric(r#"portcullis_consumers_reloads_total{outcome="invalid"}"#)
        .is_some()));
    assert_eq!(with_key(&s, "/billing/1", &new).0, 200);
    assert_eq!(s.gw.metric("portcullis_api_keys"), Some(1.0));
}

#[test]
fn sighup_reloads_the_consumers_file() {
    let mut first = String::new();
    let dir = tempfile::tempdir().unwrap();
    let consumers = dir.path().join("consumers.yaml");
    first.push_str(&new_api_key(&consumers, "acme", &[]));
    let echo = Echo::start();
    let gw = Gateway::start(&format!(
        "api_keys:\n  consumers_file: {}\n  reload_interval: 1h\nupstreams:\n  echo:\n    backends: [\"{}\"]\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    upstream: echo\n    auth: {{ api_key: true }}\n",
        consumers.display(),
        echo.addr
    ));
    let second = new_api_key(&consumers, "acme", &[]);
    let status = |key: &str| {
        client()
            .get(gw.url("/x"))
            .header("X-API-Key", key)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(status(&first), 200);
    // The file changed, but with an hour between checks only SIGHUP loads it.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status(&second), 401);
    let ok = Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    assert!(gw.eventually(Duration::from_secs(5), || status(&second) == 200));
    assert_eq!(status(&first), 200, "the gateway is still up and serving");
}

#[test]
fn scopes_are_required_of_keys_as_of_tokens_and_any_takes_a_jwt_or_a_key() {
    let mut key = String::new();
    let (s, idp) = setup("", |f| key = new_api_key(f, "acme", &[]));
    let (status, body, _) = with_key(&s, "/billing/1", &key);
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("insufficient_scope"))
    );
    assert_eq!(
        body["message"],
        "Insufficient scopes: required [invoices:read], have []"
    );

    assert_eq!(with_key(&s, "/either/1", &key).0, 200);
    let token = idp.token_for("alice", &[], &[], &[]);
    let resp = client()
        .get(s.gw.url("/either/1"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let e: Echoed = resp.json().unwrap();
    assert_eq!(e.header("x-auth-method"), Some("jwt"));
    // Neither: 401 with a challenge for each accepted scheme.
    let none = client().get(s.gw.url("/either/1")).send().unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(
        none.headers()["www-authenticate"],
        r#"Bearer realm="portcullis", ApiKey realm="portcullis""#
    );
}

#[test]
fn a_peppered_gateway_accepts_keys_made_with_its_pepper() {
    let dir = tempfile::tempdir().unwrap();
    let pepper = dir.path().join("pepper");
    std::fs::write(&pepper, format!("{}\n", "s".repeat(48))).unwrap();
    let consumers = dir.path().join("consumers.yaml");
    let key = new_api_key(
        &consumers,
        "acme",
        &["--pepper-file", pepper.to_str().unwrap()],
    );
    assert!(std::fs::read_to_string(&consumers)
        .unwrap()
        .contains("hash: hmac-sha256:"));
    // `keys hash` with the same pepper gives the stored form.
    let mut hash = Command::new(BIN)
        .args(["keys", "hash", "--pepper-file"])
        .arg(&pepper)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut hash.stdin.take().unwrap(),
        format!("{key}\n").as_bytes(),
    )
    .unwrap();
    let stored = String::from_utf8(hash.wait_with_output().unwrap().stdout).unwrap();
    assert!(std::fs::read_to_string(&consumers)
        .unwrap()
        .contains(stored.trim()));

    let echo = Echo::start();
    let gw = Gateway::start(&format!(
        "api_keys:\n  consumers_file: {}\n  pepper_file: {}\nupstreams:\n  echo:\n    backends: [\"{}\"]\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    upstream: echo\n    auth: {{ api_key: true }}\n",
        consumers.display(),
        pepper.display(),
        echo.addr
    ));
    let status = client()
        .get(gw.url("/x"))
        .header("X-API-Key", &key)
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 200);
}
