//! What a verified client certificate (mTLS) says about the caller, read once per connection
//! in the TLS handshake callback, and how it is told to the backend.
//!
//! Only a certificate the listener verified (chain to the configured CA bundle, validity,
//! purpose `clientAuth`, depth) ever becomes facts: the callback runs after a successful
//! handshake. Values from the certificate are attacker-chosen text (a SAN can hold CR, LF,
//! commas, quotes): every value is percent-encoded before it becomes part of a header, so the
//! separators the gateway uses (`,` `=`) and line breaks can never be injected (catalogue X8).

use super::{crypto, AuthError, Identity};
use std::collections::HashMap;
use std::sync::Arc;

/// The verified client certificate of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// Subject attributes in order, e.g. `[("CN", "billing"), ("O", "Acme")]`.
    pub subject: Vec<(String, String)>,
    pub common_name: Option<String>,
    pub san_dns: Vec<String>,
    pub san_uri: Vec<String>,
    pub san_email: Vec<String>,
    /// Serial number, upper-case hex.
    pub serial: String,
    /// SHA-256 of the certificate (DER).
    pub fingerprint: [u8; 32],
}

/// Percent-encode everything but unreserved URI characters and `:/@`, so a value can never
/// carry a header separator, a list separator or a line break.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:/@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl ClientCert {
    /// `CN=billing,O=Acme`, each value encoded.
    pub fn subject_header(&self) -> String {
        let mut out = String::new();
        for (i, (k, v)) in self.subject.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&encode(k));
            out.push('=');
            out.push_str(&encode(v));
        }
        out
    }

    /// `URI:spiffe://acme/billing,DNS:billing.acme.internal,email:ops%40acme.example`.
    pub fn san_header(&self) -> String {
        let mut parts = Vec::new();
        for (kind, list) in [
            ("URI", &self.san_uri),
            ("DNS", &self.san_dns),
            ("email", &self.san_email),
        ] {
            for v in list {
                parts.push(format!("{kind}:{}", encode(v)));
            }
        }
        parts.join(",")
    }

    /// The headers that tell the backend about the certificate.
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            ("x-client-cert-subject", self.subject_header()),
            ("x-client-cert-san", self.san_header()),
            ("x-client-cert-fingerprint", hex::encode(self.fingerprint)),
            ("x-client-cert-serial", encode(&self.serial)),
        ]
    }
}

/// Which value of a certificate names the caller for the `mtls` credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentitySource {
    /// The URI SAN (SPIFFE IDs: `spiffe://trust-domain/path`).
    SanUri,
    /// The DNS SAN.
    SanDns,
    /// The subject's common name.
    CommonName,
}

impl IdentitySource {
    pub fn label(self) -> &'static str {
        match self {
            Self::SanUri => "san_uri",
            Self::SanDns => "san_dns",
            Self::CommonName => "common_name",
        }
    }
}

/// How the verified certificate's facts are told to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Forward {
    /// `X-Client-Cert-Subject`, `-SAN`, `-Fingerprint`, `-Serial`.
    #[default]
    Headers,
    /// One Envoy-style `X-Forwarded-Client-Cert: Hash=..;Subject="..";URI=..;DNS=..`.
    Xfcc,
}

/// The `mtls` credential's settings: which certificate value names the caller, and the
/// consumers those names map to.
#[derive(Debug, Clone)]
pub struct CertIdentities {
    pub source: IdentitySource,
    pub forward: Forward,
    /// Certificate identity -> the caller. When empty, any verified certificate is a caller
    /// named by its identity; otherwise only the listed identities are.
    pub consumers: HashMap<String, Arc<Identity>>,
}

impl Default for CertIdentities {
    fn default() -> Self {
        Self {
            source: IdentitySource::SanUri,
            forward: Forward::Headers,
            consumers: HashMap::new(),
        }
    }
}

/// A pattern of allowed certificate identities: exact, or a prefix ending in `*`
/// (`spiffe://acme/billing/*`).
pub fn subject_allowed(patterns: &[String], subject: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => subject.starts_with(prefix),
        None => p == subject,
    })
}

impl CertIdentities {
    /// The one identity of the configured kind the certificate carries.
    pub fn identity_of<'a>(&self, cert: &'a ClientCert) -> Result<&'a str, AuthError> {
        let values: &[String] = match self.source {
            IdentitySource::SanUri => &cert.san_uri,
            IdentitySource::SanDns => &cert.san_dns,
            IdentitySource::CommonName => {
                // A subject with two CNs names nobody in particular.
                let cns = cert.subject.iter().filter(|(k, _)| k == "CN").count();
                return cert
                    .common_name
                    .as_deref()
                    .filter(|cn| cns == 1 && !cn.is_empty())
                    .ok_or(AuthError::ClientCertNoIdentity);
            }
        };
        match values {
            [one] if !one.is_empty() => Ok(one),
            _ => Err(AuthError::ClientCertNoIdentity),
        }
    }

    /// The caller a verified certificate names (catalogue X14: no certificate is no identity,
    /// never an empty one).
    pub fn authenticate(&self, cert: Option<&ClientCert>) -> Result<Arc<Identity>, AuthError> {
        let cert = cert.ok_or(AuthError::ClientCertMissing)?;
        let name = self.identity_of(cert)?;
        if self.consumers.is_empty() {
            return Ok(Arc::new(Identity {
                method: "mtls",
                provider: "mtls".into(),
                subject: name.to_string(),
                ..Identity::default()
            }));
        }
        self.consumers
            .get(name)
            .cloned()
            .ok_or(AuthError::ClientCertUnknown)
    }
}

impl ClientCert {
    /// Envoy's `X-Forwarded-Client-Cert` element for this certificate:
    /// `Hash=<hex>;Subject="<subject>";URI=<uri>;DNS=<dns>`, every value percent-encoded
    /// (so no `,` `;` `"` or line break from the certificate survives).
    pub fn xfcc(&self) -> String {
        let mut out = format!(
            "Hash={};Subject=\"{}\"",
            hex::encode(self.fingerprint),
            self.subject_header()
        );
        for (key, list) in [("URI", &self.san_uri), ("DNS", &self.san_dns)] {
            for v in list {
                out.push(';');
                out.push_str(key);
                out.push('=');
                out.push_str(&encode(v));
            }
        }
        out
    }

    /// The SHA-256 thumbprint RFC 8705 binds tokens to (`cnf.x5t#S256`).
    pub fn matches_thumbprint(&self, thumbprint: &[u8; 32]) -> bool {
        crypto::constant_time_eq(&self.fingerprint, thumbprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> ClientCert {
        ClientCert {
            subject: vec![
                ("CN".into(), "billing, inc\r\nX-Evil: 1".into()),
                ("O".into(), "Acme=\"corp\";".into()),
            ],
            common_name: Some("billing".into()),
            san_dns: vec!["billing.acme.internal".into()],
            san_uri: vec!["spiffe://acme/billing".into(), "urn:x,y".into()],
            san_email: vec!["ops@acme.example".into()],
            serial: "0A1B".into(),
            fingerprint: [0xab; 32],
        }
    }

    #[test]
    fn x8_values_with_separators_and_line_breaks_are_encoded() {
        let c = cert();
        let subject = c.subject_header();
        assert_eq!(
            subject,
            "CN=billing%2C%20inc%0D%0AX-Evil:%201,O=Acme%3D%22corp%22%3B"
        );
        assert!(!subject.contains('\r') && !subject.contains('\n'));
        assert_eq!(
            c.san_header(),
            "URI:spiffe://acme/billing,URI:urn:x%2Cy,DNS:billing.acme.internal,email:ops@acme.example"
        );
        for (name, value) in c.headers() {
            assert!(
                http::HeaderValue::from_str(&value).is_ok(),
                "{name}: {value}"
            );
        }
        assert_eq!(c.headers()[2].1, "ab".repeat(32));
        let xfcc = c.xfcc();
        assert!(http::HeaderValue::from_str(&xfcc).is_ok());
        assert!(!xfcc.contains("\r") && !xfcc.contains(",O=Acme=") && !xfcc.contains("x,y"));
        assert_eq!(xfcc.matches(';').count(), 4, "{xfcc}");
    }

    #[test]
    fn x14_no_certificate_is_no_identity() {
        let policy = CertIdentities::default();
        assert_eq!(policy.authenticate(None), Err(AuthError::ClientCertMissing));
        // Two URI SANs: which one is the caller? Neither.
        assert_eq!(
            policy.authenticate(Some(&cert())),
            Err(AuthError::ClientCertNoIdentity)
        );
        let mut one = cert();
        one.san_uri.truncate(1);
        assert_eq!(
            policy.authenticate(Some(&one)).map(|i| i.subject.clone()),
            Ok("spiffe://acme/billing".to_string())
        );
        let mut none = cert();
        none.san_uri.clear();
        assert_eq!(
            policy.authenticate(Some(&none)),
            Err(AuthError::ClientCertNoIdentity)
        );
        let consumers = CertIdentities {
            consumers: [(
                "spiffe://acme/other".to_string(),
                Arc::new(Identity::default()),
            )]
            .into_iter()
            .collect(),
            ..CertIdentities::default()
        };
        assert_eq!(
            consumers.authenticate(Some(&one)),
            Err(AuthError::ClientCertUnknown)
        );
    }

    #[test]
    fn subject_patterns_are_exact_or_a_trailing_star_prefix() {
        let p = vec![
            "spiffe://acme/billing".to_string(),
            "spiffe://acme/ops/*".to_string(),
        ];
        assert!(subject_allowed(&p, "spiffe://acme/billing"));
        assert!(!subject_allowed(&p, "spiffe://acme/billing2"));
        assert!(subject_allowed(&p, "spiffe://acme/ops/deploy"));
        assert!(!subject_allowed(&p, "spiffe://acme/ops"));
        assert!(!subject_allowed(&[], "spiffe://acme/billing"));
    }
}
