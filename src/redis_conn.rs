//! One lazily made Redis connection for a gateway part (rate limits, the revocation list):
//! a redis-rs `ConnectionManager` (one multiplexed, reconnecting connection) made on first use,
//! in the runtime that needs it. After a failed connect, calls fail at once for a second
//! instead of each waiting for a timeout.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct LazyConnection {
    pub client: redis::Client,
    conn: tokio::sync::OnceCell<ConnectionManager>,
    /// Milliseconds since `start` of the last failed connect (0 = none).
    failed_at: AtomicU64,
    start: Instant,
    /// Bounds every connect and response.
    pub timeout: Duration,
}

impl LazyConnection {
    /// For `url` (`redis://host:port/db`); nothing is connected yet.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis url: {e}"))?;
        Ok(Self {
            client,
            conn: tokio::sync::OnceCell::new(),
            failed_at: AtomicU64::new(0),
            start: Instant::now(),
            timeout,
        })
    }

    /// The connection manager, made on first use.
    pub async fn get(&self) -> Result<ConnectionManager, String> {
        if let Some(c) = self.conn.get() {
            return Ok(c.clone());
        }
        let now_ms = self.start.elapsed().as_millis() as u64 + 1;
        let failed = self.failed_at.load(Ordering::Relaxed);
        if failed != 0 && now_ms - failed < 1000 {
            return Err("redis: unreachable (retrying within a second)".into());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let made = self
            .conn
            .get_or_try_init(|| async {
                tokio::time::timeout(
                    self.timeout * 4,
                    self.client.get_connection_manager_with_config(config),
                )
                .await
                .map_err(|_| "redis: connection timed out".to_string())?
                .map_err(|e| format!("redis: {e}"))
            })
            .await;
        match made {
            Ok(c) => Ok(c.clone()),
            Err(e) => {
                self.failed_at.store(now_ms, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}
