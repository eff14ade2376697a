//! `upstreams`: each pool's backends, selection, health check, timeouts, TLS to the
//! backends and identity assertion, checked and compiled into `upstream::PoolSpec`s.

use super::check::Check;
use super::file::{
    AssertionSection, BackendEntry, HashKeySection, HealthCheckSection, NamedHashKey,
    UpstreamSection, UpstreamTls,
};
use super::{file, resolve_path, valid_name};
use crate::assertion::{self, Assertion, AssertionSettings, AssertionSigner};
use crate::upstream::{
    HashKey, HealthCheckKind, HealthCheckSpec, PoolSpec, Protocol, Selection, TlsSpec,
    DEFAULT_RETRIES, DEFAULT_TIMEOUTS, MAX_RETRIES,
};
use http::HeaderName;
use pingora::tls::pkey::PKey;
use pingora::tls::x509::X509;
use pingora::utils::tls::CertKey;
use std::collections::BTreeMap;
use std::fs;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The pools that compiled, and where each name's pool is in `pools`.
pub(super) struct Upstreams {
    pub(super) pools: Vec<PoolSpec>,
    index: BTreeMap<String, usize>,
}

impl Upstreams {
    /// The index of the pool called `name`, when it compiled.
    pub(super) fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }
}

pub(super) fn compile(
    sections: &BTreeMap<String, UpstreamSection>,
    base: &Path,
    c: &mut Check<'_>,
) -> Upstreams {
    if sections.is_empty() {
        c.problem("upstreams", "at least one upstream is required");
    }
    let mut out = Upstreams {
        pools: Vec::new(),
        index: BTreeMap::new(),
    };
    let mut c = c.at("upstreams");
    for (name, u) in sections {
        if !valid_name(name) {
            c.problem(name, "names use only letters, digits, `-` and `_`");
        }
        // A bad name is reported, yet the pool is still compiled and can be named.
        if let Some(spec) = compile_upstream(name, u, base, &mut c.at(name)) {
            out.index.insert(name.clone(), out.pools.len());
            out.pools.push(spec);
        }
    }
    out
}

/// One pool; `None` when anything in it is wrong.
fn compile_upstream(
    name: &str,
    u: &UpstreamSection,
    base: &Path,
    c: &mut Check<'_>,
) -> Option<PoolSpec> {
    let backends = backends(&u.backends, c);
    let selection = match u.selection {
        file::Selection::RoundRobin => Selection::RoundRobin,
        file::Selection::Random => Selection::Random,
        file::Selection::ConsistentHash => Selection::ConsistentHash,
    };
    let hash_key = hash_key(selection, u.hash_key.as_ref(), c);
    let health_check = u
        .health_check
        .as_ref()
        .map(|h| health_check(h, &mut c.at("health_check")));
    let mut timeouts = DEFAULT_TIMEOUTS;
    for (key, v, slot) in [
        ("connect_timeout", u.connect_timeout, &mut timeouts.connect),
        ("read_timeout", u.read_timeout, &mut timeouts.read),
        ("write_timeout", u.write_timeout, &mut timeouts.write),
        ("idle_timeout", u.idle_timeout, &mut timeouts.idle),
    ] {
        if let Some(v) = v {
            if v.is_zero() {
                c.problem(key, "must be above zero");
            }
            *slot = v;
        }
    }
    let retries = u.retries.unwrap_or(DEFAULT_RETRIES);
    c.range(
        "retries",
        retries,
        ..=MAX_RETRIES,
        &format!("at most {MAX_RETRIES}"),
    );
    let tls = u.tls.as_ref().map(|t| tls(t, base, &mut c.at("tls")));
    let protocol = match (u.protocol, tls.is_some()) {
        (file::UpstreamProtocol::Http1, _) => Protocol::Http1,
        (file::UpstreamProtocol::H2, true) | (file::UpstreamProtocol::H2c, false) => {
            Protocol::Http2
        }
        (file::UpstreamProtocol::H2, false) => {
            c.problem(
                "protocol",
                "`h2` is HTTP/2 over TLS and needs `tls`; use `h2c` for cleartext backends",
            );
            Protocol::Http2
        }
        (file::UpstreamProtocol::H2c, true) => {
            c.problem(
                "protocol",
                "`h2c` is HTTP/2 in cleartext; with `tls`, use `h2`",
            );
            Protocol::Http2
        }
    };
    let assertion = u
        .identity_assertion
        .as_ref()
        .and_then(|a| assertion(name, a, base, &mut c.at("identity_assertion")));
    c.ok().then(|| PoolSpec {
        name: name.to_string(),
        backends,
        selection,
        hash_key,
        health_check,
        timeouts,
        retries,
        tls,
        protocol,
        assertion,
    })
}

/// Each backend's address (resolved once, now) and weight.
fn backends(entries: &[BackendEntry], c: &mut Check<'_>) -> Vec<(SocketAddr, usize)> {
    if entries.is_empty() {
        c.problem("backends", "at least one backend is required");
    }
    let mut backends = Vec::new();
    for (i, b) in entries.iter().enumerate() {
        let (addr, weight) = match b {
            BackendEntry::Address(a) => (a, 1),
            BackendEntry::Weighted(w) => (&w.address, w.weight),
        };
        let mut c = c.index("backends", i);
        c.range("weight", weight, 1..=1000, "must be between 1 and 1000");
        match resolve(addr) {
            Ok(sa) if backends.iter().any(|(o, _)| *o == sa) => {
                c.here(format!("{sa} is listed twice"));
            }
            Ok(sa) => backends.push((sa, weight)),
            Err(msg) => c.here(msg),
        }
    }
    backends
}

fn hash_key(selection: Selection, section: Option<&HashKeySection>, c: &mut Check<'_>) -> HashKey {
    match (selection, section) {
        (Selection::ConsistentHash, None) => {
            c.problem(
                "hash_key",
                "consistent_hash needs a hash_key (`header: NAME` or `client_address`)",
            );
            HashKey::None
        }
        (Selection::ConsistentHash, Some(HashKeySection::Named(NamedHashKey::ClientAddress))) => {
            HashKey::ClientAddress
        }
        (Selection::ConsistentHash, Some(HashKeySection::Header(h))) => {
            let h = &h.header;
            match HeaderName::from_bytes(h.as_bytes()) {
                Ok(name) => HashKey::Header(name),
                Err(_) => {
                    c.problem("hash_key.header", format!("\"{h}\" is not a header name"));
                    HashKey::None
                }
            }
        }
        (_, Some(_)) => {
            c.problem("hash_key", "only used with `selection: consistent_hash`");
            HashKey::None
        }
        (_, None) => HashKey::None,
    }
}

fn health_check(h: &HealthCheckSection, c: &mut Check<'_>) -> HealthCheckSpec {
    let kind = match h.kind {
        file::HealthCheckKind::Tcp => HealthCheckKind::Tcp,
        file::HealthCheckKind::Http => HealthCheckKind::Http,
    };
    if kind == HealthCheckKind::Tcp
        && (h.path.is_some() || h.host.is_some() || h.expected_status.is_some())
    {
        c.here("`path`, `host` and `expected_status` need `type: http`");
    }
    let path = h.path.clone().unwrap_or_else(|| "/".into());
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        c.problem(
            "path",
            "must start with `/` and hold no spaces or control characters",
        );
    }
    let expected_status = h.expected_status.unwrap_or(200);
    c.range(
        "expected_status",
        expected_status,
        100..=599,
        "must be an HTTP status (100-599)",
    );
    let interval = h.interval.unwrap_or(Duration::from_secs(5));
    let timeout = h.timeout.unwrap_or(Duration::from_secs(1));
    for (key, v) in [("interval", interval), ("timeout", timeout)] {
        c.range(key, v, Duration::from_millis(10).., "must be at least 10ms");
    }
    let healthy_threshold = h.healthy_threshold.unwrap_or(1);
    let unhealthy_threshold = h.unhealthy_threshold.unwrap_or(1);
    for (key, v) in [
        ("healthy_threshold", healthy_threshold),
        ("unhealthy_threshold", unhealthy_threshold),
    ] {
        c.range(key, v, 1..=100, "must be between 1 and 100");
    }
    HealthCheckSpec {
        kind,
        path,
        host: h.host.clone(),
        expected_status,
        interval,
        timeout,
        healthy_threshold,
        unhealthy_threshold,
    }
}

/// TLS to the backends: the name sent, the CAs trusted, the certificate presented.
fn tls(t: &UpstreamTls, base: &Path, c: &mut Check<'_>) -> TlsSpec {
    if t.sni.is_empty() {
        c.problem("sni", "must not be empty");
    }
    let ca = t.ca_file.as_ref().and_then(|path| {
        let path = &resolve_path(base, path);
        let loaded = fs::read(path)
            .map_err(|e| format!("cannot read \"{path}\": {e}"))
            .and_then(|pem| {
                X509::stack_from_pem(&pem)
                    .map_err(|e| format!("\"{path}\" holds no PEM certificates: {e}"))
            });
        match loaded {
            Ok(certs) if !certs.is_empty() => Some(Arc::new(certs.into_boxed_slice())),
            Ok(_) => {
                c.problem("ca_file", format!("\"{path}\" holds no certificates"));
                None
            }
            Err(msg) => {
                c.problem("ca_file", msg);
                None
            }
        }
    });
    TlsSpec {
        sni: t.sni.clone(),
        verify: t.verify,
        ca,
        client_cert_key: client_cert(t, base, c),
    }
}

/// The certificate and key a pool presents to its backends (`None` after reporting).
fn client_cert(t: &UpstreamTls, base: &Path, c: &mut Check<'_>) -> Option<Arc<CertKey>> {
    let (cert, key) = match (&t.client_certificate, &t.client_key) {
        (None, None) => return None,
        (Some(cert), Some(key)) => (resolve_path(base, cert), resolve_path(base, key)),
        _ => {
            c.problem(
                "client_certificate",
                "give both `client_certificate` and `client_key`",
            );
            return None;
        }
    };
    let certs = fs::read(&cert)
        .map_err(|e| format!("cannot read \"{cert}\": {e}"))
        .and_then(|pem| {
            X509::stack_from_pem(&pem)
                .map_err(|e| format!("\"{cert}\" holds no PEM certificate: {e}"))
        })
        .and_then(|certs| {
            if certs.is_empty() {
                Err(format!("\"{cert}\" holds no PEM certificate"))
            } else {
                Ok(certs)
            }
        });
    let certs = certs.map_err(|m| c.problem("client_certificate", m)).ok()?;
    let pkey = fs::read(&key)
        .map_err(|e| format!("cannot read \"{key}\": {e}"))
        .and_then(|pem| {
            PKey::private_key_from_pem(&pem)
                .map_err(|_| format!("\"{key}\" holds no PEM private key"))
        })
        .map_err(|m| c.problem("client_key", m))
        .ok()?;
    let matches = certs[0]
        .public_key()
        .is_ok_and(|public| public.public_eq(&pkey));
    if !matches {
        c.problem(
            "client_key",
            format!("does not belong to the certificate in \"{cert}\""),
        );
        return None;
    }
    Some(Arc::new(CertKey::new(certs, pkey)))
}

/// The signer of the identity assertion a pool's requests carry.
fn assertion(
    upstream: &str,
    a: &AssertionSection,
    base: &Path,
    c: &mut Check<'_>,
) -> Option<Arc<Assertion>> {
    let header = a.header.as_deref().unwrap_or(assertion::DEFAULT_HEADER);
    let Ok(header) = HeaderName::from_bytes(header.as_bytes()) else {
        c.problem("header", "not a header name");
        return None;
    };
    let ttl = a.ttl.unwrap_or(assertion::DEFAULT_TTL);
    let hour = Duration::from_secs(3600);
    if !c.range(
        "ttl",
        ttl,
        Duration::from_secs(1)..=hour,
        "between 1s and 1h",
    ) {
        return None;
    }
    let settings = AssertionSettings {
        key_file: resolve_path(base, &a.key_file).into(),
        kid: a.kid.clone(),
        issuer: a.issuer.clone().unwrap_or_else(|| "portcullis".into()),
        audience: Some(a.audience.clone().unwrap_or_else(|| upstream.to_string())),
        ttl,
        previous_public_keys: a
            .previous_keys
            .iter()
            .map(|k| (k.kid.clone(), resolve_path(base, &k.key_file).into()))
            .collect(),
    };
    match AssertionSigner::load(&settings) {
        Ok(signer) => Some(Arc::new(Assertion { signer, header })),
        Err(e) => {
            c.here(e);
            None
        }
    }
}

/// A backend address: `IP:port` as written, else `host:port` resolved now.
fn resolve(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(sa);
    }
    if !addr.contains(':') {
        return Err(format!("\"{addr}\" needs a port (host:port)"));
    }
    match addr.to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| format!("\"{addr}\" resolves to no address")),
        Err(e) => Err(format!("\"{addr}\" cannot be resolved: {e}")),
    }
}
