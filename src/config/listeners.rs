//! `listeners` (addresses, TLS, client certificates of a listener) and the `admin` address.

use super::check::Check;
use super::file::{AdminSection, ClientCertificateMode, ListenerSection, ListenerTls};
use super::{resolve_path, ClientCertSpec, Listener, ListenerTlsSpec};
use crate::auth::crl::Crls;
use pingora::tls::x509::X509;
use std::collections::HashSet;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;

/// Open connections a listener holds at most unless told otherwise: at the ≈ 18 KiB an idle
/// TLS connection costs (4 KiB plain; load-tests/RESULTS.md), about 180 MiB, and below the
/// 65536 file descriptors the unit allows.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Each connection's read buffer below HTTP and TLS (Pingora allocates 64 KiB per connection
/// unless told). Measured (load-tests/RESULTS.md): on plain HTTP none is best — reads go
/// straight into the HTTP layer's buffers, 25 KiB instead of 86 KiB per idle connection, and a
/// 64 KiB POST costs less. Under TLS, OpenSSL reads ahead into its own buffer (`mtls`), which
/// it releases when empty: none is best there too (the same system calls as a 4 KiB buffer,
/// 0.6% fewer instructions, 4 KiB less per idle connection: a buffer only adds its size).
pub const DEFAULT_READ_BUFFER_SIZE: usize = 0;

/// The public listeners; one whose address does not parse is left out (and reported).
pub(super) fn compile(
    sections: &[ListenerSection],
    base: &Path,
    c: &mut Check<'_>,
) -> Vec<Listener> {
    if sections.is_empty() {
        c.problem("listeners", "at least one listener is required");
    }
    let mut listeners = Vec::new();
    let mut seen_addrs = HashSet::new();
    for (i, l) in sections.iter().enumerate() {
        let mut c = c.index("listeners", i);
        let Some(address) = socket_addr(&l.address, &mut c.at("address")) else {
            continue;
        };
        if !seen_addrs.insert(address) {
            c.problem("address", format!("{address} is used by another listener"));
        }
        let tls = l.tls.as_ref().map(|t| tls(t, base, &mut c.at("tls")));
        let max_connections = l.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        c.range(
            "max_connections",
            max_connections,
            1..=1_000_000,
            "between 1 and 1000000",
        );
        let read_buffer_size = l.read_buffer_size.unwrap_or(DEFAULT_READ_BUFFER_SIZE);
        c.range(
            "read_buffer_size",
            read_buffer_size,
            0..=1 << 20,
            "between 0 (no buffer) and 1048576 bytes",
        );
        if l.h2c && tls.is_some() {
            c.problem(
                "h2c",
                "a TLS listener offers HTTP/2 by ALPN; h2c is for cleartext listeners",
            );
        }
        listeners.push(Listener {
            address,
            tls,
            max_connections,
            read_buffer_size,
            h2c: l.h2c,
        });
    }
    listeners
}

fn tls(t: &ListenerTls, base: &Path, c: &mut Check<'_>) -> ListenerTlsSpec {
    // Relative paths are relative to the configuration file, as everywhere.
    let certificate = resolve_path(base, &t.certificate);
    let key = resolve_path(base, &t.key);
    c.readable("certificate", &certificate);
    c.readable("key", &key);
    let client = client_certificates(t, base, c);
    ListenerTlsSpec {
        certificate,
        key,
        client,
    }
}

/// The admin listener's address: never one of the public listeners'.
pub(super) fn admin_address(
    a: &AdminSection,
    listeners: &[Listener],
    c: &mut Check<'_>,
) -> Option<SocketAddr> {
    let address = socket_addr(&a.address, &mut c.at("address"))?;
    if listeners.iter().any(|l| l.address == address) {
        c.problem(
            "address",
            format!("{address} is also a public listener; the admin listener must be separate"),
        );
    }
    Some(address)
}

fn socket_addr(s: &str, c: &mut Check<'_>) -> Option<SocketAddr> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            c.here(format!(
                "\"{s}\" is not an IP:port address (e.g. 127.0.0.1:8080 or [::1]:8080)"
            ));
            None
        }
    }
}

/// A listener's client-certificate settings: the CA bundle must hold at least one
/// certificate; the depth is bounded (deep chains cost handshake CPU, catalogue X11).
fn client_certificates(t: &ListenerTls, base: &Path, c: &mut Check<'_>) -> Option<ClientCertSpec> {
    let Some(mode) = t.client_certificate else {
        if t.client_ca_file.is_some() || t.max_chain_depth.is_some() || t.client_crl_file.is_some()
        {
            c.problem(
                "client_certificate",
                "set `required` or `optional` to ask clients for certificates",
            );
        }
        return None;
    };
    let Some(ca_file) = t.client_ca_file.as_deref().map(|f| resolve_path(base, f)) else {
        c.problem(
            "client_ca_file",
            "client certificates need the CA bundle they must chain to",
        );
        return None;
    };
    match fs::read(&ca_file) {
        Err(e) => {
            c.problem("client_ca_file", format!("cannot read \"{ca_file}\": {e}"));
            return None;
        }
        Ok(pem) => {
            if X509::stack_from_pem(&pem).map_or(true, |s| s.is_empty()) {
                c.problem(
                    "client_ca_file",
                    format!("\"{ca_file}\" holds no PEM certificate"),
                );
                return None;
            }
        }
    }
    let max_chain_depth = t.max_chain_depth.unwrap_or(2);
    if !c.range("max_chain_depth", max_chain_depth, 1..=8, "between 1 and 8") {
        return None;
    }
    let crl_file = t.client_crl_file.as_deref().map(|f| resolve_path(base, f));
    if let Some(path) = &crl_file {
        if let Err(e) = Crls::load(Path::new(path), &ca_file) {
            c.problem("client_crl_file", e);
            return None;
        }
    }
    Some(ClientCertSpec {
        required: mode == ClientCertificateMode::Required,
        ca_file,
        max_chain_depth,
        crl_file,
    })
}
