//! Unit tests of the revocation list: entry semantics, limits, callbacks, the file store, and
//! the Redis store against a real redis-server.

use super::*;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicUsize;
use tokio::task::JoinHandle;

const NOW: u64 = 1_700_000_000;

fn jti(j: &str, exp: u64) -> Entry {
    Entry::Jti {
        jti: j.into(),
        expires_at: exp,
    }
}
fn subject(s: &str, before: u64) -> Entry {
    Entry::Subject {
        subject: s.into(),
        before,
    }
}
fn token(t: &str, exp: u64) -> Entry {
    Entry::Token {
        sha256: token_sha256(t.as_bytes()),
        expires_at: exp,
    }
}
fn check<'a>(jti: Option<&'a str>, sub: &'a str, iat: Option<u64>, now: u64) -> Check<'a> {
    Check {
        jti,
        subject: sub,
        issued_at: iat,
        token_sha256: None,
        now,
    }
}
fn memory(max: usize) -> Revocations {
    Revocations::new(Backend::Memory, max).unwrap()
}
fn counter(r: &Revocations) -> Arc<AtomicUsize> {
    let n = Arc::new(AtomicUsize::new(0));
    let m = n.clone();
    r.on_revoke(Box::new(move |_| {
        m.fetch_add(1, Ordering::SeqCst);
    }));
    n
}

#[tokio::test]
async fn jti_entries_count_until_expiry_and_keep_the_later_expiry() {
    let r = memory(10);
    assert!(!r.is_revoked(&check(Some("a"), "alice", Some(NOW), NOW)));
    r.add_at(jti("a", NOW + 10), NOW).await.unwrap();
    r.add_at(jti("a", NOW + 5), NOW).await.unwrap();
    assert!(r.is_revoked(&check(Some("a"), "alice", Some(NOW), NOW + 10)));
    assert!(!r.is_revoked(&check(Some("a"), "alice", Some(NOW), NOW + 11)));
    assert!(!r.is_revoked(&check(Some("b"), "alice", Some(NOW), NOW)));
    assert!(!r.is_revoked(&check(None, "alice", Some(NOW), NOW)));
    r.add_at(jti("a", NOW + 20), NOW).await.unwrap();
    assert_eq!(r.list(NOW), vec![jti("a", NOW + 20)]);
    assert_eq!(r.list(NOW + 21), vec![]);
    assert_eq!(r.counts(NOW + 21), (0, 0, 0));
    // Expired entries are pruned by the next add, and cannot be added at all.
    r.add_at(jti("b", NOW + 100), NOW + 50).await.unwrap();
    assert_eq!(r.read().jti.len(), 1);
    assert!(r.add_at(jti("c", NOW - 1), NOW).await.is_err());
    assert!(r.remove(&jti("b", 0)).await.unwrap());
    assert!(!r.remove(&jti("b", 0)).await.unwrap());
    assert!(!r.is_revoked(&check(Some("b"), "alice", Some(NOW), NOW + 60)));
}

#[tokio::test]
async fn subject_entries_revoke_up_to_before_and_tokens_without_iat() {
    let r = memory(10);
    r.add_at(subject("alice", NOW), NOW).await.unwrap();
    r.add_at(subject("alice", NOW - 100), NOW).await.unwrap();
    assert!(r.is_revoked(&check(None, "alice", Some(NOW), NOW)));
    assert!(!r.is_revoked(&check(None, "alice", Some(NOW + 1), NOW)));
    assert!(r.is_revoked(&check(None, "alice", None, NOW)));
    assert!(!r.is_revoked(&check(None, "bob", None, NOW)));
    r.add_at(subject("alice", NOW + 1), NOW).await.unwrap();
    assert!(r.is_revoked(&check(None, "alice", Some(NOW + 1), u64::MAX)));
    assert_eq!(r.counts(u64::MAX), (0, 1, 0));
    assert!(r.remove(&subject("alice", 0)).await.unwrap());
    assert!(!r.is_revoked(&check(None, "alice", None, NOW)));
}

#[tokio::test]
async fn token_entries_and_has_token_entries() {
    let r = memory(10);
    assert!(!r.has_token_entries());
    r.add_at(token("opaque-1", NOW + 5), NOW).await.unwrap();
    assert!(r.has_token_entries());
    let h = token_sha256(b"opaque-1");
    let other = token_sha256(b"opaque-2");
    let mut c = check(None, "", None, NOW + 5);
    c.token_sha256 = Some(&h);
    assert!(r.is_revoked(&c));
    c.now = NOW + 6;
    assert!(!r.is_revoked(&c));
    c.now = NOW;
    c.token_sha256 = Some(&other);
    assert!(!r.is_revoked(&c));
    let json = serde_json::to_string(&token("opaque-1", 7)).unwrap();
    assert_eq!(
        json,
        format!(
            r#"{{"kind":"token","sha256":"{}","expires_at":7}}"#,
            hex::encode(h)
        )
    );
    assert_eq!(
        serde_json::from_str::<Entry>(&json).unwrap(),
        token("opaque-1", 7)
    );
    assert!(r.remove(&token("opaque-1", 0)).await.unwrap());
    assert!(!r.has_token_entries());
}

#[tokio::test]
async fn list_is_sorted_by_kind_then_key() {
    let r = memory(10);
    for e in [
        token("t", NOW),
        subject("s2", 1),
        jti("b", NOW),
        subject("s1", 2),
        jti("a", NOW),
    ] {
        r.add_at(e, NOW).await.unwrap();
    }
    let listed = r.list(NOW);
    let expected = vec![
        jti("a", NOW),
        jti("b", NOW),
        subject("s1", 2),
        subject("s2", 1),
        token("t", NOW),
    ];
    assert_eq!(listed, expected);
    assert_eq!(r.counts(NOW), (2, 2, 1));
}

#[tokio::test]
async fn max_entries_refuses_new_keys_only() {
    let r = memory(2);
    r.add_at(jti("a", NOW + 1), NOW).await.unwrap();
    r.add_at(subject("s", NOW), NOW).await.unwrap();
    let err = r.add_at(jti("b", NOW + 1), NOW).await.unwrap_err();
    assert!(err.contains("max_entries"), "{err}");
    r.add_at(jti("a", NOW + 9), NOW).await.unwrap();
    // Once "a" expired there is room again.
    r.add_at(jti("b", NOW + 20), NOW + 10).await.unwrap();
    assert_eq!(r.counts(NOW + 10), (1, 1, 0));
}

#[tokio::test]
async fn invalid_keys_are_refused() {
    let r = memory(10);
    for bad in [
        jti("", NOW),
        jti("a\nb", NOW),
        subject("x\u{7f}", 1),
        subject(&"s".repeat(1025), 1),
    ] {
        assert!(r.add_at(bad, NOW).await.is_err());
    }
    r.add_at(subject(&"s".repeat(1024), 1), NOW).await.unwrap();
    r.add_at(jti("ünïcödé jti", NOW), NOW).await.unwrap();
    assert_eq!(r.counts(NOW), (1, 1, 0));
}

#[tokio::test]
async fn callback_runs_once_per_effective_add() {
    let r = memory(10);
    let n = counter(&r);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    r.on_revoke(Box::new(move |e| s.lock().unwrap().push(e.clone())));
    r.add_at(jti("a", NOW + 10), NOW).await.unwrap();
    r.add_at(jti("a", NOW + 10), NOW).await.unwrap();
    r.add_at(jti("a", NOW + 5), NOW).await.unwrap();
    assert_eq!(n.load(Ordering::SeqCst), 1);
    r.add_at(subject("alice", 5), NOW).await.unwrap();
    r.add_at(subject("alice", 6), NOW).await.unwrap();
    assert_eq!(n.load(Ordering::SeqCst), 3);
    assert_eq!(seen.lock().unwrap().last(), Some(&subject("alice", 6)));
}

#[tokio::test]
async fn file_backend_persists_prunes_and_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revoked.json");
    let r = Revocations::new(Backend::File(path.clone()), 10).unwrap();
    assert!(r.list(0).is_empty());
    let future = unix_now() + 3600;
    r.add(jti("a", future)).await.unwrap();
    r.add(subject("alice", 5)).await.unwrap();
    r.add(token("t", future)).await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = Revocations::new(Backend::File(path.clone()), 10).unwrap();
    assert_eq!(again.list(0), r.list(0));
    assert!(again.remove(&jti("a", 0)).await.unwrap());
    let third = Revocations::new(Backend::File(path.clone()), 10).unwrap();
    assert_eq!(third.counts(0), (0, 1, 1));
    // Expired entries in the file are dropped on load and on the next save.
    let hex = hex::encode(token_sha256(b"old"));
    let text =
        format!(r#"{{"version":1,"jti":{{"old":1000,"new":{future}}},"tokens":{{"{hex}":1000}}}}"#);
    std::fs::write(&path, text).unwrap();
    let loaded = Revocations::new(Backend::File(path.clone()), 10).unwrap();
    assert_eq!(loaded.list(0), vec![jti("new", future)]);
    loaded.add(subject("bob", 1)).await.unwrap();
    let saved = std::fs::read_to_string(&path).unwrap();
    assert!(!saved.contains("old") && !saved.contains(&hex), "{saved}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "temporary files left: {names:?}");
}

#[test]
fn corrupt_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revoked.json");
    for text in [
        "{not json",
        r#"{"version":2}"#,
        r#"{"version":1,"tokens":{"zz":1}}"#,
    ] {
        std::fs::write(&path, text).unwrap();
        let err = Revocations::new(Backend::File(path.clone()), 10).unwrap_err();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("corrupt"),
            "{err}"
        );
    }
}

// --- against a real redis-server ---

struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = RedisServer { port, child: None };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn gateway(&self) -> Arc<Revocations> {
        let backend = Backend::Redis {
            url: self.url(),
            key_prefix: "test:".into(),
            timeout: Duration::from_millis(500),
        };
        Arc::new(Revocations::new(backend, 100).unwrap())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `r`'s sync loop; it stops when the returned sender is dropped or sent to.
fn run(r: &Arc<Revocations>, resync: Duration) -> (watch::Sender<bool>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let r = r.clone();
    (
        tx,
        tokio::spawn(async move { r.sync_loop(resync, rx).await }),
    )
}

/// Polls `f` every 10 ms until it holds or `limit` passes; how long it took.
async fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = std::time::Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

fn revoked(r: &Revocations, j: &str) -> bool {
    r.is_revoked(&check(Some(j), "x", Some(0), unix_now()))
}

async fn hset(conn: &mut ::redis::aio::MultiplexedConnection, hash: &str, f: &str, v: u64) {
    let () = ::redis::cmd("HSET")
        .arg(hash)
        .arg(f)
        .arg(v)
        .query_async(conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_propagates_between_gateways() {
    let test = async {
        let server = RedisServer::start();
        let (a, b) = (server.gateway(), server.gateway());
        assert!(!a.loaded());
        let (stop_a, sync_a) = run(&a, Duration::from_secs(30));
        let _b = run(&b, Duration::from_secs(30));
        within(Duration::from_secs(5), || a.loaded() && b.loaded()).await;
        let fired = counter(&b);
        let future = unix_now() + 3600;

        a.add(jti("j1", future)).await.unwrap();
        assert!(revoked(&a, "j1"));
        within(Duration::from_secs(1), || revoked(&b, "j1")).await;
        a.add(subject("alice", 10)).await.unwrap();
        a.add(token("opaque", future)).await.unwrap();
        within(Duration::from_secs(1), || b.counts(0) == (1, 1, 1)).await;
        assert!(b.has_token_entries());
        // Callbacks run just after the entry is applied: wait for them, then for strays.
        within(Duration::from_secs(1), || fired.load(Ordering::SeqCst) == 3).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(fired.load(Ordering::SeqCst), 3);

        // The layout other tools may rely on.
        let client = ::redis::Client::open(server.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let exp: u64 = ::redis::cmd("HGET")
            .arg("test:revoked:jti")
            .arg("j1")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(exp, future);

        // Merging keeps the later instant, across gateways too.
        b.add(jti("j2", future + 100)).await.unwrap();
        a.add(jti("j2", future)).await.unwrap();
        assert!(a.list(0).contains(&jti("j2", future + 100)));

        assert!(b.remove(&jti("j1", 0)).await.unwrap());
        assert!(!b.remove(&jti("j1", 0)).await.unwrap());
        within(Duration::from_secs(1), || !revoked(&a, "j1")).await;

        // Entries written behind the gateways' backs, then an unparsable message: a reload.
        hset(&mut conn, "test:revoked:jti", "sneaky", future).await;
        hset(&mut conn, "test:revoked:jti", "stale", 1000).await;
        let _: i64 = ::redis::cmd("PUBLISH")
            .arg("test:revocations")
            .arg("garbage")
            .query_async(&mut conn)
            .await
            .unwrap();
        within(Duration::from_secs(1), || revoked(&b, "sneaky")).await;

        // A gateway started later loads the list, and prunes expired fields.
        let c = server.gateway();
        let _c = run(&c, Duration::from_millis(300));
        within(Duration::from_secs(5), || c.loaded()).await;
        assert_eq!(c.list(unix_now()), a.list(unix_now()));
        assert_eq!(c.counts(unix_now()), (2, 1, 1));
        let stale: bool = ::redis::cmd("HEXISTS")
            .arg("test:revoked:jti")
            .arg("stale")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(!stale);
        // Its periodic resync catches what no message announced.
        hset(&mut conn, "test:revoked:subject", "quiet", 1).await;
        within(Duration::from_secs(2), || c.counts(0).1 == 2).await;

        stop_a.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(2), sync_a)
            .await
            .unwrap()
            .unwrap();
    };
    tokio::time::timeout(Duration::from_secs(30), test)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_refuses_adds_and_sync_recovers() {
    let test = async {
        let mut server = RedisServer::start();
        let (a, b) = (server.gateway(), server.gateway());
        let _a = run(&a, Duration::from_millis(500));
        let _b = run(&b, Duration::from_millis(500));
        within(Duration::from_secs(5), || a.loaded() && b.loaded()).await;
        let future = unix_now() + 3600;
        a.add(jti("before", future)).await.unwrap();
        within(Duration::from_secs(1), || revoked(&b, "before")).await;

        server.stop();
        let started = std::time::Instant::now();
        assert!(a.add(jti("down", future)).await.is_err());
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(!revoked(&a, "down"));
        assert!(a.remove(&jti("before", 0)).await.is_err());
        assert!(revoked(&a, "before") && revoked(&b, "before"));
        // Long enough for b's reconnect attempts to fail and back off a few times.
        tokio::time::sleep(Duration::from_millis(1500)).await;

        // Restarted empty (no persistence); a reconnects on its next command...
        server.spawn();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while let Err(e) = a.add(jti("after", future)).await {
            assert!(std::time::Instant::now() < deadline, "no reconnect: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // ...and b reloads after resubscribing: Redis's (empty) list replaced b's.
        within(Duration::from_secs(10), || {
            revoked(&b, "after") && !revoked(&b, "before")
        })
        .await;
        a.add(jti("later", future)).await.unwrap();
        within(Duration::from_secs(1), || revoked(&b, "later")).await;
    };
    tokio::time::timeout(Duration::from_secs(40), test)
        .await
        .unwrap();
}

#[tokio::test]
async fn local_sync_loop_prunes_and_stops() {
    let r = Arc::new(memory(10));
    r.add_at(jti("old", NOW + 10), NOW).await.unwrap();
    assert_eq!(r.read().jti.len(), 1);
    let (stop, task) = run(&r, Duration::from_millis(100));
    within(Duration::from_secs(2), || r.read().jti.is_empty()).await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .unwrap()
        .unwrap();
}
