//! Upstream pools: a set of backends, how one is chosen for a request, and how their health is
//! checked. Selection and health state come from Pingora's load balancer; this module adds
//! retries that avoid backends already tried, the health gauge and start-up readiness.

pub mod spec;

pub use spec::{
    HashKey, HealthCheckKind, HealthCheckSpec, PoolSpec, Protocol, Selection, Timeouts, TlsSpec,
    DEFAULT_RETRIES, DEFAULT_TIMEOUTS, MAX_RETRIES,
};

use crate::assertion::Assertion;
use crate::metrics::metrics;
use crate::routing::Route;
use async_trait::async_trait;
use futures::FutureExt;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::{BackendIter, BackendSelection, Consistent, Random, RoundRobin};
use pingora::lb::{discovery, Backend, Backends, LoadBalancer};
use pingora::prelude::{background_service, HttpPeer, RequestHeader};
use pingora::services::ServiceWithDependents;
use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// How many candidates a selection looks at before giving up.
const MAX_SELECT_ITERATIONS: usize = 256;

enum Selector {
    RoundRobin(Arc<LoadBalancer<RoundRobin>>),
    Random(Arc<LoadBalancer<Random>>),
    Consistent(Arc<LoadBalancer<Consistent>>),
}

/// Tracks whether every backend has been through its first health check: until then the
/// load balancer assumes all of them healthy, so readiness waits for the first round.
struct CheckProgress {
    total: usize,
    seen: Mutex<HashSet<SocketAddr>>,
    done: AtomicBool,
}

impl CheckProgress {
    fn mark(&self, addr: SocketAddr) {
        if self.done.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(addr);
            if seen.len() >= self.total {
                self.done.store(true, Ordering::Release);
            }
        }
    }
}

pub struct Pool {
    pub name: String,
    pub hash_key: HashKey,
    pub timeouts: Timeouts,
    pub retries: usize,
    pub tls: Option<TlsSpec>,
    pub protocol: Protocol,
    pub assertion: Option<Arc<Assertion>>,
    backends: Vec<SocketAddr>,
    selector: Selector,
    progress: Arc<CheckProgress>,
}

impl Pool {
    /// What a consistent-hash pool hashes for this request (empty for the other pools).
    pub fn hash_key<'a>(
        &self,
        req: &'a RequestHeader,
        peer: Option<std::net::IpAddr>,
    ) -> std::borrow::Cow<'a, [u8]> {
        use std::borrow::Cow;
        match &self.hash_key {
            HashKey::None => Cow::Borrowed(b""),
            HashKey::Header(name) => Cow::Borrowed(
                req.headers
                    .get(name)
                    .map_or(b"".as_slice(), |v| v.as_bytes()),
            ),
            HashKey::ClientAddress => Cow::Owned(match peer {
                Some(std::net::IpAddr::V4(v4)) => v4.octets().to_vec(),
                Some(std::net::IpAddr::V6(v6)) => v6.octets().to_vec(),
                None => Vec::new(),
            }),
        }
    }

    /// The pool's timeouts with the route's own in their place where it sets them.
    pub fn timeouts_for(&self, route: &Route) -> Timeouts {
        Timeouts {
            connect: route.connect_timeout.unwrap_or(self.timeouts.connect),
            read: route.read_timeout.unwrap_or(self.timeouts.read),
            write: route.write_timeout.unwrap_or(self.timeouts.write),
            idle: self.timeouts.idle,
        }
    }

    /// A healthy backend not in `tried`, or `None`.
    pub fn select(&self, key: &[u8], tried: &[SocketAddr]) -> Option<SocketAddr> {
        let accept = |b: &Backend, healthy: bool| {
            healthy && b.addr.as_inet().is_some_and(|a| !tried.contains(a))
        };
        let chosen = match &self.selector {
            Selector::RoundRobin(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
            Selector::Random(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
            Selector::Consistent(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
        }?;
        chosen.addr.as_inet().copied()
    }

    fn ready(&self, addr: SocketAddr) -> bool {
        let b = Backend {
            addr: pingora::protocols::l4::socket::SocketAddr::Inet(addr),
            weight: 1,
            ext: Default::default(),
        };
        match &self.selector {
            Selector::RoundRobin(lb) => lb.backends().ready(&b),
            Selector::Random(lb) => lb.backends().ready(&b),
            Selector::Consistent(lb) => lb.backends().ready(&b),
        }
    }

    /// Every backend with its current health.
    pub fn health(&self) -> Vec<(SocketAddr, bool)> {
        self.backends.iter().map(|a| (*a, self.ready(*a))).collect()
    }

    /// True once every backend has been health-checked at least once.
    pub fn first_check_done(&self) -> bool {
        self.progress.done.load(Ordering::Acquire)
    }

    /// A peer for `addr` with this pool's TLS settings and the given timeouts.
    pub fn peer(&self, addr: SocketAddr, t: Timeouts) -> HttpPeer {
        let (tls, sni) = match &self.tls {
            Some(tls) => (true, tls.sni.clone()),
            None => (false, String::new()),
        };
        let mut peer = HttpPeer::new(addr, tls, sni);
        peer.options.connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(t.read);
        peer.options.write_timeout = Some(t.write);
        peer.options.idle_timeout = Some(t.idle);
        if let Some(tls) = &self.tls {
            apply_tls(&mut peer, tls);
        }
        apply_protocol(&mut peer, self.protocol);
        peer
    }
}

/// Concurrent requests one HTTP/2 connection to a backend carries (Pingora's default is one,
/// which would open a connection per concurrent request, as HTTP/1.1 does).
const H2_STREAMS_PER_CONNECTION: usize = 100;

/// A pool's HTTP version on a peer (requests and HTTP health checks alike).
fn apply_protocol(peer: &mut HttpPeer, protocol: Protocol) {
    if protocol == Protocol::Http2 {
        // Minimum and maximum 2: ALPN `h2` alone over TLS, prior knowledge in cleartext.
        peer.options.set_http_version(2, 2);
        peer.options.max_h2_streams = H2_STREAMS_PER_CONNECTION;
    }
}

/// A pool's TLS settings on a peer (requests and health checks alike): verification, the
/// CAs to trust, and the gateway's own certificate for backends that ask for one.
fn apply_tls(peer: &mut HttpPeer, t: &TlsSpec) {
    peer.options.verify_cert = t.verify;
    peer.options.verify_hostname = t.verify;
    peer.options.ca = t.ca.clone();
    peer.client_cert_key = t.client_cert_key.clone();
}

/// Build every pool, and the background services that keep their health current.
pub fn build_pools(
    specs: &[PoolSpec],
) -> pingora::Result<(Vec<Arc<Pool>>, Vec<BackgroundService>)> {
    let mut pools = Vec::with_capacity(specs.len());
    let mut services: Vec<BackgroundService> = Vec::new();
    for spec in specs {
        let progress = Arc::new(CheckProgress {
            total: spec.backends.len(),
            seen: Mutex::new(HashSet::new()),
            done: AtomicBool::new(spec.health_check.is_none()),
        });
        let selector = match spec.selection {
            Selection::RoundRobin => {
                let (lb, svc) = load_balancer::<RoundRobin>(spec, &progress)?;
                services.extend(svc);
                Selector::RoundRobin(lb)
            }
            Selection::Random => {
                let (lb, svc) = load_balancer::<Random>(spec, &progress)?;
                services.extend(svc);
                Selector::Random(lb)
            }
            Selection::ConsistentHash => {
                let (lb, svc) = load_balancer::<Consistent>(spec, &progress)?;
                services.extend(svc);
                Selector::Consistent(lb)
            }
        };
        for (addr, _) in &spec.backends {
            metrics()
                .backend_healthy
                .with_label_values(&[spec.name.as_str(), &addr.to_string()])
                .set(1);
        }
        pools.push(Arc::new(Pool {
            name: spec.name.clone(),
            hash_key: spec.hash_key.clone(),
            timeouts: spec.timeouts,
            retries: spec.retries,
            tls: spec.tls.clone(),
            protocol: spec.protocol,
            assertion: spec.assertion.clone(),
            backends: spec.backends.iter().map(|(a, _)| *a).collect(),
            selector,
            progress,
        }));
    }
    Ok((pools, services))
}

/// A health-check loop to add to the server.
pub type BackgroundService = Box<dyn ServiceWithDependents>;
type LbAndService<S> = (Arc<LoadBalancer<S>>, Option<BackgroundService>);

fn load_balancer<S>(
    spec: &PoolSpec,
    progress: &Arc<CheckProgress>,
) -> pingora::Result<LbAndService<S>>
where
    S: BackendSelection + Send + Sync + 'static,
    S::Iter: BackendIter,
{
    let set: BTreeSet<Backend> = spec
        .backends
        .iter()
        .map(|(addr, weight)| Backend {
            addr: pingora::protocols::l4::socket::SocketAddr::Inet(*addr),
            weight: *weight,
            ext: Default::default(),
        })
        .collect();
    let mut lb = LoadBalancer::<S>::from_backends(Backends::new(discovery::Static::new(set)));
    // Static discovery never blocks; fill the selector now so requests can be served
    // before the background service has run.
    match lb.update().now_or_never() {
        Some(r) => r?,
        None => {
            return Err(pingora::Error::explain(
                pingora::ErrorType::InternalError,
                "static backend discovery blocked",
            ))
        }
    }
    let Some(hc) = &spec.health_check else {
        return Ok((Arc::new(lb), None));
    };
    lb.set_health_check(Box::new(ObservedCheck {
        inner: health_check(hc, spec.tls.as_ref(), spec.protocol)?,
        upstream: spec.name.clone(),
        progress: progress.clone(),
    }));
    lb.health_check_frequency = Some(hc.interval);
    lb.parallel_health_check = true;
    let svc = background_service(&format!("health check {}", spec.name), lb);
    let lb = svc.task();
    Ok((lb, Some(Box::new(svc))))
}

fn health_check(
    hc: &HealthCheckSpec,
    tls: Option<&TlsSpec>,
    protocol: Protocol,
) -> pingora::Result<Box<dyn HealthCheck + Send + Sync>> {
    match hc.kind {
        HealthCheckKind::Tcp => {
            // Pingora's TCP check cannot present a client certificate: for a pool whose
            // backends ask for one, the check is a plain TCP connect.
            let tls = tls.filter(|t| t.client_cert_key.is_none());
            let mut check = match tls {
                Some(t) => TcpHealthCheck::new_tls(&t.sni),
                None => TcpHealthCheck::new(),
            };
            check.peer_template.options.connection_timeout = Some(hc.timeout);
            check.peer_template.options.total_connection_timeout = Some(hc.timeout);
            if let Some(t) = tls {
                check.peer_template.options.verify_cert = t.verify;
                check.peer_template.options.verify_hostname = t.verify;
                check.peer_template.options.ca = t.ca.clone();
            }
            // An HTTP/2-only backend may refuse a TLS handshake that offers no `h2`.
            if protocol == Protocol::Http2 {
                check.peer_template.options.set_http_version(2, 2);
            }
            check.consecutive_success = hc.healthy_threshold;
            check.consecutive_failure = hc.unhealthy_threshold;
            Ok(check)
        }
        HealthCheckKind::Http => {
            let host = hc
                .host
                .clone()
                .or_else(|| tls.map(|t| t.sni.clone()))
                .unwrap_or_else(|| "localhost".to_string());
            let mut check = HttpHealthCheck::new(&host, tls.is_some());
            let mut req = RequestHeader::build("GET", hc.path.as_bytes(), None)?;
            req.insert_header("host", host.as_str())?;
            req.insert_header("user-agent", "portcullis-health-check")?;
            check.req = req;
            check.peer_template.options.connection_timeout = Some(hc.timeout);
            check.peer_template.options.read_timeout = Some(hc.timeout);
            check.peer_template.options.write_timeout = Some(hc.timeout);
            if let Some(t) = tls {
                apply_tls(&mut check.peer_template, t);
            }
            apply_protocol(&mut check.peer_template, protocol);
            check.consecutive_success = hc.healthy_threshold;
            check.consecutive_failure = hc.unhealthy_threshold;
            let expected = hc.expected_status;
            check.validator = Some(Box::new(move |resp| {
                if resp.status.as_u16() == expected {
                    Ok(())
                } else {
                    pingora::Error::e_explain(
                        pingora::ErrorType::CustomCode("unexpected status", resp.status.as_u16()),
                        "during http health check",
                    )
                }
            }));
            Ok(Box::new(check))
        }
    }
}

/// Wraps a health check to export its verdicts and log every change.
struct ObservedCheck {
    inner: Box<dyn HealthCheck + Send + Sync>,
    upstream: String,
    progress: Arc<CheckProgress>,
}

#[async_trait]
impl HealthCheck for ObservedCheck {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        let result = self.inner.check(target).await;
        if let Some(addr) = target.addr.as_inet() {
            self.progress.mark(*addr);
        }
        result
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        let backend = target.addr.to_string();
        metrics()
            .backend_healthy
            .with_label_values(&[self.upstream.as_str(), &backend])
            .set(i64::from(healthy));
        if healthy {
            tracing::info!(upstream = %self.upstream, %backend, "backend is healthy again");
        } else {
            tracing::warn!(upstream = %self.upstream, %backend, "backend failed its health check; taken out of rotation");
        }
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.inner.health_threshold(success)
    }
}
