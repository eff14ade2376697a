//! A circuit breaker for the gateway's calls to a dependency (introspection, ForwardAuth):
//! consecutive failures open it, and while open, requests that would call fail fast instead of
//! piling onto a service that is down; after `open_for` one probe is let through, and its
//! outcome closes the circuit or opens it again.

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
