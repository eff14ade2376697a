//! A circuit breaker for the gateway's calls to a dependency (introspection, ForwardAuth, OPA):
//! consecutive failures open it, and while open, requests that would call fail fast instead of
//! piling onto a service that is down; after `open_for` one probe is let through, and its
//! outcome closes the circuit or opens it again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub enum Admit {
    Closed,
    /// The circuit was open long enough: this call is the probe.
    Probe,
    /// Fail fast; the circuit reopens for probing after this long.
    Open(Duration),
}

#[derive(Debug, Clone, Copy)]
enum BreakerState {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight since this instant.
    HalfOpen {
        since: Instant,
    },
}

/// Consecutive failures open the circuit; after `open_for` one probe decides.
pub struct Breaker {
    state: Mutex<BreakerState>,
    threshold: u32,
    open_for: Duration,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
            threshold: threshold.max(1),
            open_for,
        }
    }

    pub fn admit(&self) -> Admit {
        let Ok(mut s) = self.state.lock() else {
            return Admit::Closed;
        };
        let now = Instant::now();
        match *s {
            BreakerState::Closed { .. } => Admit::Closed,
            BreakerState::Open { until } if now < until => Admit::Open(until - now),
            // A probe that never reported back (its request was dropped) is replaced.
            BreakerState::HalfOpen { since } if now.duration_since(since) < self.open_for => {
                Admit::Open(self.open_for - now.duration_since(since))
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. } => {
                *s = BreakerState::HalfOpen { since: now };
                Admit::Probe
            }
        }
    }

    /// Returns true when this closed an open circuit.
    pub fn success(&self) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        let was_open = !matches!(*s, BreakerState::Closed { .. });
        *s = BreakerState::Closed { failures: 0 };
        was_open
    }

    /// Returns true when this opened the circuit.
    pub fn failure(&self) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        let open = match *s {
            BreakerState::Closed { failures } => failures + 1 >= self.threshold,
            BreakerState::HalfOpen { .. } => true,
            BreakerState::Open { .. } => false,
        };
        *s = if open {
            BreakerState::Open {
                until: Instant::now() + self.open_for,
            }
        } else if let BreakerState::Closed { failures } = *s {
            BreakerState::Closed {
                failures: failures + 1,
            }
        } else {
            *s
        };
        open
    }
}

/// A dependency the gateway calls on a request's path (a ForwardAuth service, an OPA server):
/// every call goes through its breaker, waits at most `timeout` for one of `max_concurrent`
/// slots and then at most `timeout` for the answer. A call that ran and failed counts toward
/// the breaker; no free slot in time is the gateway's own limit and does not (unless it was
/// the probe). The breaker's state is kept in a gauge, 0 closed and 1 open.
///
/// One client address holds at most `max_per_client` of the slots at a time (by default a
/// quarter); its next call is refused at once (`client_busy`), so that one client sending many distinct
/// requests, anonymous ones included, cannot take the dependency from everyone else.
pub struct GuardedCalls {
    /// What is called, for logs: `ForwardAuth service "sso"`.
    label: String,
    timeout: Duration,
    open_for: Duration,
    slots: tokio::sync::Semaphore,
    /// Calls in flight per client address, and how many one may have.
    per_client: Mutex<HashMap<IpAddr, usize>>,
    client_share: usize,
    breaker: Breaker,
    state: prometheus::IntGauge,
}

/// A client's call in flight, given back when dropped.
struct ClientSlot<'a> {
    calls: &'a GuardedCalls,
    client: IpAddr,
}

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.calls.per_client.lock() {
            if let Some(n) = m.get_mut(&self.client) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.client);
                }
            }
        }
    }
}

/// No usable answer: why (a metric outcome such as `timeout`), and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unanswered {
    pub outcome: &'static str,
    pub retry_after: u64,
}

impl GuardedCalls {
    pub fn new(
        label: String,
        timeout: Duration,
        (max_concurrent, max_per_client): (usize, usize),
        (failures, open_for): (u32, Duration),
        state: prometheus::IntGauge,
    ) -> Self {
        state.set(0);
        Self {
            label,
            timeout,
            open_for,
            slots: tokio::sync::Semaphore::new(max_concurrent),
            per_client: Mutex::new(HashMap::new()),
            client_share: max_per_client.max(1),
            breaker: Breaker::new(failures, open_for),
            state,
        }
    }

    /// `call` for a request of `client`, guarded: its answer, or why there is none
    /// (`Err(outcome)` of the call itself, `timeout`, `busy`, `client_busy`, `circuit_open`).
    pub async fn call<T>(
        &self,
        client: Option<IpAddr>,
        call: impl std::future::Future<Output = Result<T, &'static str>>,
    ) -> Result<T, Unanswered> {
        let probe = match self.breaker.admit() {
            Admit::Closed => false,
            Admit::Probe => true,
            Admit::Open(wait) => {
                return Err(Unanswered {
                    outcome: "circuit_open",
                    retry_after: seconds(wait),
                })
            }
        };
        // Clients whose address cannot be told share one share.
        let client = client.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let Some(_client_slot) = self.client_slot(client) else {
            return Err(Unanswered {
                outcome: "client_busy",
                retry_after: 1,
            });
        };
        // A free slot, waited for at most `timeout`; then the call gets the whole `timeout`.
        let Ok(Ok(_slot)) = tokio::time::timeout(self.timeout, self.slots.acquire()).await else {
            return Err(self.failed("busy", probe));
        };
        let answer = match tokio::time::timeout(self.timeout, call).await {
            Ok(answer) => answer,
            Err(_) => Err("timeout"),
        };
        match answer {
            Ok(answer) => {
                if self.breaker.success() {
                    self.state.set(0);
                    tracing::info!(dependency = %self.label, "answering again; circuit closed");
                }
                Ok(answer)
            }
            Err(outcome) => Err(self.failed(outcome, probe)),
        }
    }

    fn client_slot(&self, client: IpAddr) -> Option<ClientSlot<'_>> {
        let mut m = self.per_client.lock().ok()?;
        let n = m.entry(client).or_insert(0);
        if *n >= self.client_share {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            calls: self,
            client,
        })
    }

    fn failed(&self, outcome: &'static str, probe: bool) -> Unanswered {
        let opened = (outcome != "busy" || probe) && self.breaker.failure();
        if opened {
            self.state.set(1);
            tracing::error!(dependency = %self.label, open_for = ?self.open_for, "keeps failing; circuit open");
        }
        Unanswered {
            outcome,
            retry_after: if opened { seconds(self.open_for) } else { 1 },
        }
    }
}

/// Whole seconds for `Retry-After`, at least 1.
fn seconds(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(max: usize, per_client: usize) -> GuardedCalls {
        GuardedCalls::new(
            "test dependency".into(),
            Duration::from_secs(1),
            (max, per_client),
            (3, Duration::from_secs(1)),
            prometheus::IntGauge::new("state", "state").unwrap(),
        )
    }

    /// A call that is in flight until `release` is notified.
    async fn held(
        calls: &GuardedCalls,
        client: Option<IpAddr>,
        release: &tokio::sync::Notify,
    ) -> Result<(), Unanswered> {
        calls
            .call(client, async {
                release.notified().await;
                Ok(())
            })
            .await
    }

    #[tokio::test]
    async fn a_client_holds_its_share_of_the_calls_and_no_more() {
        let calls = calls(4, 1);
        let release = tokio::sync::Notify::new();
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        let first = held(&calls, a, &release);
        tokio::pin!(first);
        // The first call of `a` is in flight...
        assert!(poll_once(first.as_mut()).await.is_none());
        // ...so its second is refused at once, and `b`'s goes through.
        let busy = calls.call(a, async { Ok(()) }).await;
        assert_eq!(busy.map_err(|u| u.outcome), Err("client_busy"));
        assert_eq!(calls.call(b, async { Ok(()) }).await, Ok(()));
        release.notify_one();
        assert_eq!(first.await, Ok(()));
        // Its share is back once the call is done.
        assert_eq!(calls.call(a, async { Ok(()) }).await, Ok(()));
        // Clients whose address is unknown share one share.
        let unknown = held(&calls, None, &release);
        tokio::pin!(unknown);
        assert!(poll_once(unknown.as_mut()).await.is_none());
        let busy = calls.call(None, async { Ok(()) }).await;
        assert_eq!(busy.map_err(|u| u.outcome), Err("client_busy"));
        // A refusal for a client's share is not a failure of the dependency.
        assert!(matches!(calls.breaker.admit(), Admit::Closed));
    }

    /// Polls `f` once: its output if it is ready.
    async fn poll_once<F: std::future::Future + Unpin>(mut f: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
