//! What a verified client certificate (mTLS) says about the caller, read once per connection
//! in the TLS handshake callback, and how it is told to the backend.
//!
//! Only a certificate the listener verified (chain to the configured CA bundle, validity,
//! purpose `clientAuth`, depth) ever becomes facts: the callback runs after a successful
//! handshake. Values from the certificate are attacker-chosen text (a SAN can hold CR, LF,
//! commas, quotes): every value is percent-encoded before it becomes part of a header, so the
//! separators the gateway uses (`,` `=`) and line breaks can never be injected (catalogue X8).

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
    }
}
