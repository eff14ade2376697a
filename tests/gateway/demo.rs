//! The first ten minutes: the bundled `conf/portcullis.yaml` (what `make run` serves) with the
//! credentials of `conf/demo/`, driven through the tour that `conf/demo/tour.sh` prints — with
//! the tokens that script mints with `portcullis token` and the API key it shows — and
//! answering what the tour says each request answers. Only the addresses differ: the
//! listener, the admin listener and the two origins are on ephemeral ports here.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn conf_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conf")
}

/// The bundled configuration around two echo origins, with its file paths made absolute
/// (the harness writes the configuration in a temporary directory).
fn demo_gateway(one: &Echo, two: &Echo) -> Gateway {
    let demo = conf_dir().join("demo");
    let body = Conf::read(&conf_dir().join("portcullis.yaml"))
        .remove("server")
        .remove("listeners")
        .remove("admin")
        .remove("access_log")
        .set(
            "identity_providers.demo.keys.pem_file",
            demo.join("jwt-public.pem").display().to_string(),
        )
        .set(
            "api_keys.consumers_file",
            demo.join("consumers.yaml").display().to_string(),
        )
        .set(
            "upstreams.echo.backends",
            serde_json::json!([one.addr.to_string(), {"address": two.addr.to_string(), "weight": 1}]),
        );
    Gateway::start(&body.yaml())
}

/// What `tour.sh` prints, and the `NAME=value` lines of it.
fn tour(gw: &Gateway) -> (String, std::collections::HashMap<String, String>) {
    let out = Command::new(conf_dir().join("demo/tour.sh"))
        .args([BIN, &gw.addr.to_string(), &gw.admin.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let vars = text
        .lines()
        .filter_map(|l| l.trim().split_once('='))
        .filter(|(k, _)| ["USER", "ADMIN", "KEY"].contains(k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (text, vars)
}

#[test]
fn the_bundled_demo_answers_the_tour_as_printed() {
    let (one, two) = (Echo::start(), Echo::start());
    let gw = demo_gateway(&one, &two);
    let (text, vars) = tour(&gw);
    let (user, admin, key) = (&vars["USER"], &vars["ADMIN"], &vars["KEY"]);
    assert!(
        text.contains(&format!("curl -s  http://{}/status", gw.addr)),
        "{text}"
    );
    let c = client();

    // A public route.
    assert_eq!(c.get(gw.url("/status")).send().unwrap().status(), 200);

    // The JWT route: a challenge without a token; with the user's, the origin sees alice and
    // never the client's own X-User-ID.
    let challenge = unauthorized(c.get(gw.url("/api/hello")).send().unwrap(), "token_missing");
    assert_eq!(challenge, r#"Bearer realm="portcullis""#);
    let resp = c
        .get(gw.url("/api/hello"))
        .bearer_auth(user)
        .header("X-User-ID", "mallory")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen: Echoed = resp.json().unwrap();
    assert_eq!(seen.header_all("x-user-id"), ["alice"]);
    assert_eq!(seen.header_all("x-user-roles"), ["user"]);
    assert_eq!(seen.header_all("x-auth-provider"), ["demo"]);
    assert_eq!(seen.header("authorization"), None);

    // The role route: 403 for alice, 200 for root.
    let resp = c
        .get(gw.url("/api/admin/users"))
        .bearer_auth(user)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        error_body(&resp.text().unwrap())["error"],
        "insufficient_role"
    );
    let resp = c
        .get(gw.url("/api/admin/users"))
        .bearer_auth(admin)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen: Echoed = resp.json().unwrap();
    assert_eq!(seen.header_all("x-user-id"), ["root"]);

    // The API-key route, exactly as the tour's loop runs it: five 200s, then 429.
    let looped = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("for i in"))
        .expect("the tour's loop");
    let out = Command::new("bash")
        .args(["-c", looped])
        .env("KEY", key)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "200 200 200 200 200 429"
    );
    let resp = c
        .get(gw.url("/reports"))
        .header("X-API-Key", key)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert!(resp.headers().contains_key("ratelimit-policy"));
    assert_eq!(error_body(&resp.text().unwrap())["error"], "rate_limited");
    // The consumer reached the origin, as X-Client-ID, on the requests that passed.
    let keyed: Vec<_> = one
        .logged()
        .into_iter()
        .chain(two.logged())
        .filter(|e| e.path == "/reports")
        .collect();
    assert_eq!(keyed.len(), 5);
    assert!(keyed
        .iter()
        .all(|e| e.header_all("x-client-id") == ["demo-app"]));

    // `portcullis explain`, as the tour prints it (on the bundled file itself), says why.
    let out = Command::new(BIN)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["explain", "-c", "conf/portcullis.yaml", "-H"])
        .arg(format!("Authorization: Bearer {user}"))
        .args(["GET", "/api/admin/users"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let explained = String::from_utf8_lossy(&out.stdout);
    assert!(explained.contains("insufficient_role"), "{explained}");
    assert!(
        !explained.contains(user.as_str()),
        "explain never prints the token"
    );
}

#[test]
fn portcullis_token_refuses_to_run_without_an_explicit_key() {
    let out = Command::new(BIN)
        .args(["token", "--sub", "alice"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--key PEM, --jwks FILE or --secret-file FILE"),
        "{err}"
    );
    let help = Command::new(BIN)
        .args(["token", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("DEVELOPMENT"));
}

#[test]
fn version_names_portcullis_and_the_pingora_it_was_built_with() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let lock =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock")).unwrap();
    let pingora = lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"pingora\"\n"))
        .and_then(|p| p.split("version = \"").nth(1))
        .and_then(|v| v.split('"').next())
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!(
            "portcullis {} (pingora {pingora})",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn check_summarises_each_section_of_the_bundled_configuration() {
    let out = Command::new(BIN)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["check", "-c", "conf/portcullis.yaml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let line = |section: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(section))
            .unwrap_or_else(|| panic!("no {section} line in:\n{text}"))
            .to_string()
    };
    assert_eq!(line("listeners"), "listeners (1): 127.0.0.1:8080 (http)");
    assert_eq!(
        line("identity providers"),
        "identity providers (1): demo (1 key(s) from the configuration)"
    );
    assert_eq!(line("api keys"), "api keys: 1 key(s) loaded");
    let routes = line("routes");
    for route in [
        "status GET,HEAD /status -> echo: public",
        "api /api/* -> echo: jwt demo",
        "admin /api/admin/* -> echo: jwt demo, role admin",
        "reports /reports/* -> echo: api key, limit 5 per minute",
    ] {
        assert!(routes.contains(route), "{route} not in {routes}");
    }
}
