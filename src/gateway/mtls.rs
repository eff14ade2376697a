//! TLS on the public listeners: the OpenSSL acceptor of a listener (Mozilla "intermediate",
//! HTTP/2 offered) and, with client certificates (mTLS), the verification settings and the
//! handshake callback that reads a verified certificate's facts once per connection. The
//! handshake itself runs in `connection`, under the listener's deadline.

use crate::auth::crl::{CrlFile, Refused};
use crate::auth::mtls::ClientCert;
use crate::config::{ClientCertSpec, ListenerTlsSpec};
use crate::metrics::metrics;
use async_trait::async_trait;
use openssl::asn1::Asn1Time;
use pingora::listeners::TlsAccept;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::tls::server::{handshake, handshake_with_callback};
use pingora::protocols::tls::{SslStream, TlsRef};
use pingora::tls::hash::MessageDigest;
use pingora::tls::ssl::{
    select_next_proto, AlpnError, NameType, SslAcceptor, SslAcceptorBuilder, SslFiletype,
    SslMethod, SslOptions, SslRef, SslVerifyMode,
};
use pingora::tls::x509::{X509Name, X509Ref};
use pingora::tls::x509::{X509StoreContextRef, X509VerifyResult};
use std::any::Any;
use std::sync::Arc;

/// What the handshake callback of an mTLS listener leaves on the connection (read with
/// `ssl_digest.extension.get::<ConnFacts>()`).
pub struct ConnFacts {
    /// The verified client certificate, if the client sent one.
    pub cert: Option<Arc<ClientCert>>,
    /// The server name the client asked for (SNI), lower case.
    pub sni: Option<Arc<str>>,
    /// A resumed session whose certificate has since been revoked or has expired: every
    /// request on it is refused (`401 client_cert_revoked`).
    pub rejected: bool,
}

struct Callbacks {
    crl: Option<Arc<CrlFile>>,
}

#[async_trait]
impl TlsAccept for Callbacks {
    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        // Runs only after a successful handshake: a certificate here was verified, in this
        // handshake or in the one whose session is resumed.
        let sni = ssl
            .servername(NameType::HOST_NAME)
            .map(|n| Arc::from(n.to_ascii_lowercase()));
        let cert = ssl.peer_certificate();
        let rejected = ssl.session_reused()
            && cert
                .as_ref()
                .is_some_and(|c| !still_good(c, self.crl.as_deref()));
        if rejected {
            metrics()
                .client_cert_refusals
                .with_label_values(&["resumed_revoked"])
                .inc();
        }
        Some(Arc::new(ConnFacts {
            cert: cert.and_then(|c| facts(&c)).map(Arc::new),
            sni,
            rejected,
        }))
    }
}

/// A resumed session skipped verification: the leaf must still be within its validity and
/// not revoked by the lists in force now (catalogue X5).
fn still_good(cert: &X509Ref, crl: Option<&CrlFile>) -> bool {
    let in_date = Asn1Time::days_from_now(0)
        .is_ok_and(|now| cert.not_after() >= now.as_ref() && cert.not_before() <= now.as_ref());
    in_date && crl.is_none_or(|c| c.check(cert).is_ok())
}

/// Checks each certificate of the presented chain against the revocation lists, after
/// OpenSSL's own verification of it succeeded.
fn crl_verdict(preverify_ok: bool, ctx: &mut X509StoreContextRef, crl: &CrlFile) -> bool {
    if !preverify_ok {
        return false;
    }
    let Some(cert) = ctx.current_cert() else {
        return false;
    };
    let reason = match crl.check(cert) {
        Ok(()) => return true,
        Err(Refused::Revoked) => "revoked",
        Err(Refused::Stale) => "crl_stale",
    };
    metrics()
        .client_cert_refusals
        .with_label_values(&[reason])
        .inc();
    // The handshake fails with a generic certificate alert; the metric tells why.
    ctx.set_error(X509VerifyResult::APPLICATION_VERIFICATION);
    false
}

fn text(data: &openssl::asn1::Asn1StringRef) -> String {
    data.to_string()
        .unwrap_or_else(|_| String::from_utf8_lossy(data.as_slice()).into_owned())
}

/// The facts of a certificate.
pub fn facts(cert: &X509Ref) -> Option<ClientCert> {
    let subject: Vec<(String, String)> = cert
        .subject_name()
        .entries()
        .map(|e| {
            let key = e
                .object()
                .nid()
                .short_name()
                .map_or_else(|_| e.object().to_string(), str::to_string);
            (key, text(e.data()))
        })
        .collect();
    let common_name = subject
        .iter()
        .find(|(k, _)| k == "CN")
        .map(|(_, v)| v.clone());
    let (mut san_dns, mut san_uri, mut san_email) = (Vec::new(), Vec::new(), Vec::new());
    if let Some(names) = cert.subject_alt_names() {
        for n in names.iter() {
            if let Some(d) = n.dnsname() {
                san_dns.push(d.to_string());
            } else if let Some(u) = n.uri() {
                san_uri.push(u.to_string());
            } else if let Some(e) = n.email() {
                san_email.push(e.to_string());
            }
        }
    }
    let serial = cert
        .serial_number()
        .to_bn()
        .ok()
        .and_then(|bn| bn.to_hex_str().ok().map(|h| h.to_string()))
        .unwrap_or_default();
    let digest = cert.digest(MessageDigest::sha256()).ok()?;
    let fingerprint: [u8; 32] = digest.as_ref().try_into().ok()?;
    Some(ClientCert {
        subject,
        common_name,
        san_dns,
        san_uri,
        san_email,
        serial,
        fingerprint,
    })
}

/// The TLS side of one listener.
pub struct TlsAcceptor {
    acceptor: SslAcceptor,
    /// Present when the listener asks for client certificates.
    callbacks: Option<Callbacks>,
}

impl TlsAcceptor {
    /// Run the server side of the handshake on an accepted connection.
    pub async fn handshake(&self, tcp: TcpStream) -> pingora::Result<SslStream<TcpStream>> {
        match &self.callbacks {
            Some(cb) => handshake_with_callback(&self.acceptor, tcp, cb).await,
            None => handshake(&self.acceptor, tcp).await,
        }
    }
}

/// A listener's acceptor: Mozilla "intermediate", HTTP/2 offered, and, when client
/// certificates are asked for, verification against the CA bundle to the configured depth.
pub fn listener_acceptor(
    t: &ListenerTlsSpec,
    crl: Option<Arc<CrlFile>>,
) -> Result<TlsAcceptor, String> {
    let mut tls = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    tls.set_certificate_chain_file(&t.certificate)
        .map_err(|e| format!("{}: {e}", t.certificate))?;
    tls.set_private_key_file(&t.key, SslFiletype::PEM)
        .map_err(|e| format!("{}: {e}", t.key))?;
    tls.check_private_key()
        .map_err(|e| format!("{} does not match {}: {e}", t.key, t.certificate))?;
    if let Some(client) = &t.client {
        verify_clients(&mut tls, client, crl.clone())?;
    }
    // A TLS 1.2 renegotiation could present another certificate mid-connection (X13).
    tls.set_options(SslOptions::NO_RENEGOTIATION);
    tls.set_alpn_select_callback(prefer_h2);
    // OpenSSL reads as much as the socket holds into its own record buffer, which it gives
    // back once empty (rust-openssl sets SSL_MODE_RELEASE_BUFFERS), instead of a 5-byte record
    // header, then the record. So no buffer below TLS is needed to spare those small reads
    // their system calls: against a 4 KiB one, the same system calls, 0.6% fewer instructions
    // per request and 4 KiB less per idle connection (load-tests/RESULTS.md, issue 15).
    tls.set_read_ahead(true);
    Ok(TlsAcceptor {
        acceptor: tls.build(),
        callbacks: t.client.as_ref().map(|_| Callbacks { crl }),
    })
}

/// HTTP/2 when the client offers it, else HTTP/1.1; a client offering neither gets no ALPN
/// answer and speaks HTTP/1.1.
fn prefer_h2<'a>(_ssl: &mut SslRef, offered: &'a [u8]) -> Result<&'a [u8], AlpnError> {
    select_next_proto(b"\x02h2\x08http/1.1", offered).ok_or(AlpnError::NOACK)
}

fn verify_clients(
    tls: &mut SslAcceptorBuilder,
    c: &ClientCertSpec,
    crl: Option<Arc<CrlFile>>,
) -> Result<(), String> {
    let mode = if c.required {
        SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT
    } else {
        SslVerifyMode::PEER
    };
    match crl {
        None => tls.set_verify(mode),
        Some(crl) => tls.set_verify_callback(mode, move |ok, ctx| crl_verdict(ok, ctx, &crl)),
    }
    tls.set_verify_depth(c.max_chain_depth);
    tls.set_ca_file(&c.ca_file)
        .map_err(|e| format!("{}: {e}", c.ca_file))?;
    tls.set_client_ca_list(
        X509Name::load_client_ca_file(&c.ca_file).map_err(|e| format!("{}: {e}", c.ca_file))?,
    );
    // Sessions may be resumed (a resumed session skips verification; the handshake callback
    // checks its certificate against the revocation lists and dates in force, X5). OpenSSL
    // refuses to resume a verified session without an id context.
    tls.set_session_id_context(b"portcullis-mtls")
        .map_err(|e| e.to_string())?;
    Ok(())
}
