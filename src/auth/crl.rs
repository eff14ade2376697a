//! Certificate revocation lists for mTLS listeners (catalogue X4, X5).
//!
//! Decisions:
//! - **A revoked certificate fails the TLS handshake** (alert `certificate_revoked`); no HTTP
//!   request is ever read on such a connection. The check runs in OpenSSL's verify callback,
//!   for every certificate of the presented chain whose issuer has a list here.
//! - **Every list must be signed by a CA of the client CA bundle**, checked when the file is
//!   read; a file with a list that is not, or that cannot be parsed, is refused whole.
//! - **A stale list fails closed**: once any list's `nextUpdate` has passed, every client
//!   certificate is refused until a fresh list is in the file. An unknown revocation status
//!   is never read as "not revoked".
//! - **Reload**: the file is read again when its size or modification time changes (and on
//!   `SIGHUP`). A file that cannot be read or is invalid at reload is logged and the lists in
//!   force stay (they still go stale at their own `nextUpdate`).
//! - **Resumed TLS sessions** skip certificate verification; the handshake callback checks
//!   the leaf of a resumed session against the lists in force (and its expiry), and such a
//!   connection gets `401 client_cert_revoked` for every request (X5).

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::x509::{CrlStatus, X509Crl, X509Ref, X509};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// The revocation lists of one file.
pub struct Crls {
    lists: Vec<X509Crl>,
    /// The earliest `nextUpdate` of the lists, unix seconds (`None`: no list has one).
    next_update: Option<u64>,
}

impl std::fmt::Debug for Crls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crls")
            .field("lists", &self.lists.len())
            .field("next_update", &self.next_update)
            .finish()
    }
}

fn unix(t: &Asn1TimeRef) -> Option<u64> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    let secs = i64::from(d.days) * 86_400 + i64::from(d.secs);
    u64::try_from(secs).ok()
}

impl Crls {
    /// Read the PEM lists of `path`, each checked against the CAs of `ca_file`.
    pub fn load(path: &Path, ca_file: &str) -> Result<Crls, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read \"{}\": {e}", path.display()))?;
        let cas = std::fs::read(ca_file)
            .ok()
            .and_then(|pem| X509::stack_from_pem(&pem).ok())
            .ok_or_else(|| format!("cannot read the client CA bundle \"{ca_file}\""))?;
        Self::parse(&text, &cas).map_err(|e| format!("\"{}\": {e}", path.display()))
    }

    fn parse(text: &str, cas: &[X509]) -> Result<Crls, String> {
        const BEGIN: &str = "-----BEGIN X509 CRL-----";
        const END: &str = "-----END X509 CRL-----";
        let mut lists = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find(BEGIN) {
            let Some(len) = rest[start..].find(END) else {
                return Err("a CRL without its END line".into());
            };
            let block = &rest[start..start + len + END.len()];
            let crl = X509Crl::from_pem(block.as_bytes())
                .map_err(|e| format!("CRL #{} is not a valid CRL: {e}", lists.len() + 1))?;
            let signed_by_ca = cas.iter().any(|ca| {
                ca.subject_name()
                    .try_cmp(crl.issuer_name())
                    .is_ok_and(|o| o.is_eq())
                    && ca
                        .public_key()
                        .is_ok_and(|k| crl.verify(&k).unwrap_or(false))
            });
            if !signed_by_ca {
                return Err(format!(
                    "CRL #{} is not signed by a CA of the client CA bundle",
                    lists.len() + 1
                ));
            }
            lists.push(crl);
            rest = &rest[start + len + END.len()..];
        }
        if lists.is_empty() {
            return Err("holds no PEM CRL (-----BEGIN X509 CRL-----)".into());
        }
        let next_update = lists
            .iter()
            .filter_map(|c| c.next_update().and_then(unix))
            .min();
        Ok(Crls { lists, next_update })
    }

    pub fn len(&self) -> usize {
        self.lists.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }

    /// True once a list's `nextUpdate` has passed: revocation status is unknown.
    pub fn stale(&self, now: u64) -> bool {
        self.next_update.is_some_and(|t| t < now)
    }

    /// True when a list of `cert`'s issuer names its serial.
    pub fn revoked(&self, cert: &X509Ref) -> bool {
        self.lists.iter().any(|crl| {
            crl.issuer_name()
                .try_cmp(cert.issuer_name())
                .is_ok_and(|o| o.is_eq())
                && !matches!(
                    crl.get_by_serial(cert.serial_number()),
                    CrlStatus::NotRevoked
                )
        })
    }
}

/// The lists in force for one listener, and how to read them again.
pub struct CrlFile {
    pub path: PathBuf,
    ca_file: String,
    current: RwLock<Arc<Crls>>,
    stamp: Mutex<Option<(u64, std::time::SystemTime)>>,
}

impl std::fmt::Debug for CrlFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrlFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Why a client certificate is refused by the lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Revoked,
    /// A list is past its `nextUpdate`.
    Stale,
}

impl CrlFile {
    pub fn load(path: PathBuf, ca_file: String) -> Result<Self, String> {
        let stamp = crate::reload::file_stamp(&path);
        let crls = Crls::load(&path, &ca_file)?;
        Ok(Self {
            path,
            ca_file,
            current: RwLock::new(Arc::new(crls)),
            stamp: Mutex::new(stamp),
        })
    }

    pub fn current(&self) -> Arc<Crls> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The verdict of the lists in force on one certificate of a chain.
    pub fn check(&self, cert: &X509Ref) -> Result<(), Refused> {
        let crls = self.current();
        if crls.stale(crate::unix_now()) {
            return Err(Refused::Stale);
        }
        if crls.revoked(cert) {
            return Err(Refused::Revoked);
        }
        Ok(())
    }
}

impl crate::reload::Reloadable for CrlFile {
    fn what(&self) -> &'static str {
        "client CRL file"
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn stamp(&self) -> &Mutex<Option<(u64, std::time::SystemTime)>> {
        &self.stamp
    }

    fn read_and_swap(&self) -> Result<usize, Vec<String>> {
        let crls = Crls::load(&self.path, &self.ca_file).map_err(|e| vec![e])?;
        let n = crls.len();
        match self.current.write() {
            Ok(mut c) => *c = Arc::new(crls),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(crls),
        }
        Ok(n)
    }
}
