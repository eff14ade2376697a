//! One Redis connection for a gateway part (rate limits, the nonce store, the revocation list):
//! a redis-rs `ConnectionManager` (one multiplexed, reconnecting connection) made on first use,
//! in the runtime that needs it, and [`LazyConnection::run`], the one way a part sends a
//! command: bounded by the part's timeout in all, and sent once more over a fresh connection
//! when the first try found the connection gone.
//!
//! Why the second try: when Redis goes away, the manager remakes its connection in the
//! background and keeps the outcome for the next command. A remake that ran while Redis was
//! still down leaves its failure behind, so the next command, however long after Redis came
//! back, got that old connection error and only then started a new remake: the first call
//! after every outage failed (a `fail_closed` limit answered 503, a `fail_open` one counted
//! locally and let a fleet through one request more than its shared limit, a signed request
//! got 503, a revocation was refused). Now a command whose first try fails because the
//! connection is gone (refused, reset, closed) waits for the remake that failure started and
//! is sent again, within what is left of the timeout. A command Redis answered with an error,
//! or that timed out, is not sent again.
//!
//! A connection that breaks after Redis ran a command but before its answer arrived looks the
//! same as one that was already gone, so a second try may repeat a command that took effect;
//! every part's commands are safe to repeat: the limiter's counts the request once more (it
//! can only refuse sooner), the nonce store recognises its own first write, and the
//! revocation scripts keep the later instant and delete what is there.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RedisResult};
use std::future::Future;
use std::time::Duration;
use tokio::time::{timeout_at, Instant};

pub struct LazyConnection {
    pub client: redis::Client,
    conn: tokio::sync::OnceCell<ConnectionManager>,
    /// Bounds every call, its reconnect and second try included.
    pub timeout: Duration,
}

impl LazyConnection {
    /// For `url` (`redis://host:port/db`); nothing is connected yet.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis url: {e}"))?;
        Ok(Self {
            client,
            conn: tokio::sync::OnceCell::new(),
            timeout,
        })
    }

    /// The connection manager, made (not yet connected) on first use. It connects on its
    /// first command and remakes its connection after each failure, one attempt at a time:
    /// the second try of [`LazyConnection::run`] is the only retry, so no attempt outlives the
    /// call that started it by a backoff.
    async fn manager(&self) -> Result<ConnectionManager, String> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(0);
        self.conn
            .get_or_try_init(|| async {
                self.client
                    .get_connection_manager_lazy(config)
                    .map_err(|e| format!("redis: {e}"))
            })
            .await
            .cloned()
    }

    /// Runs `command` (which sends one command or pipeline over the connection it is given)
    /// within the timeout; when the first try finds the connection gone, once more over the
    /// connection that failure started to remake.
    pub async fn run<T, F, Fut>(&self, mut command: F) -> Result<T, String>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = Instant::now() + self.timeout;
        let manager = self.manager().await?;
        let first = timeout_at(deadline, command(manager.clone()))
            .await
            .map_err(|_| timed_out())?;
        match first {
            Ok(v) => Ok(v),
            Err(e) if connection_gone(&e) => timeout_at(deadline, command(manager))
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| format!("redis: {e}")),
            Err(e) => Err(format!("redis: {e}")),
        }
    }
}

/// The connection was refused, reset or closed: the command was sent over a connection that
/// no longer exists (or none was made), and the manager is making a new one.
fn connection_gone(e: &RedisError) -> bool {
    e.is_connection_dropped() || e.is_connection_refusal()
}

fn timed_out() -> String {
    "redis: timed out".into()
}
