//! Certificates made at test time with OpenSSL: a CA, and client certificates it (or another
//! CA) signs, with chosen names, SANs, validity and key usage; and a self-signed server
//! certificate for `localhost` that a TLS listener or a TLS origin presents.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509NameBuilder, X509};
use std::path::{Path, PathBuf};

fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn serial() -> openssl::asn1::Asn1Integer {
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::ONE, false).unwrap();
    serial.to_asn1_integer().unwrap()
}

/// A certificate's serial number in upper-case hex, as the gateway reports it.
pub fn serial_hex(cert: &X509) -> String {
    cert.serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string()
}

pub struct Ca {
    pub cert: X509,
    key: PKey<Private>,
    /// The CA certificate as a PEM file.
    pub pem: PathBuf,
}

/// A client certificate to make.
pub struct Leaf<'a> {
    pub cn: &'a str,
    pub org: Option<&'a str>,
    pub san_uri: &'a [&'a str],
    pub san_dns: &'a [&'a str],
    pub san_email: &'a [&'a str],
    /// Extended key usage `clientAuth` (else `serverAuth` only).
    pub client_auth: bool,
    /// Valid from/until, in days from now.
    pub days: (i64, i64),
}

impl Default for Leaf<'_> {
    fn default() -> Self {
        Self {
            cn: "client",
            org: None,
            san_uri: &[],
            san_dns: &[],
            san_email: &[],
            client_auth: true,
            days: (-1, 2),
        }
    }
}

fn days(d: i64) -> Asn1Time {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    Asn1Time::from_unix(now + d * 86_400).unwrap()
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Self {
        Self::make(dir, name, None, (-1, 30))
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, dir: &Path, name: &str) -> Self {
        Self::make(dir, name, Some(self), (-1, 30))
    }

    /// An intermediate CA valid from/until these days from now.
    pub fn intermediate_valid(&self, dir: &Path, name: &str, valid: (i64, i64)) -> Self {
        Self::make(dir, name, Some(self), valid)
    }

    fn make(dir: &Path, name: &str, parent: Option<&Ca>, valid: (i64, i64)) -> Self {
        let key = key();
        let mut n = X509NameBuilder::new().unwrap();
        n.append_entry_by_nid(Nid::COMMONNAME, name).unwrap();
        let n = n.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&serial()).unwrap();
        b.set_subject_name(&n).unwrap();
        b.set_issuer_name(parent.map_or(&*n, |p| p.cert.subject_name()))
            .unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&days(valid.0)).unwrap();
        b.set_not_after(&days(valid.1)).unwrap();
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .unwrap(),
        )
        .unwrap();
        let signer = parent.map_or(&key, |p| &p.key);
        b.sign(signer, MessageDigest::sha256()).unwrap();
        let cert = b.build();
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, cert.to_pem().unwrap()).unwrap();
        Self { cert, key, pem }
    }

    /// A CRL of this CA revoking `revoked`, written to `out` (atomically, so a gateway
    /// watching the file never reads half of it). `stale`: its nextUpdate has passed.
    /// Made with the `openssl ca` command, as an operator would.
    pub fn write_crl(&self, dir: &Path, out: &Path, revoked: &[&X509], stale: bool) {
        let work = tempfile::tempdir_in(dir).unwrap();
        let w = work.path();
        let mut index = String::new();
        for c in revoked {
            let serial = serial_hex(c);
            index.push_str(&format!(
                "R\t300101000000Z\t240101000000Z\t{serial}\tunknown\t/CN=revoked\n"
            ));
        }
        std::fs::write(w.join("index.txt"), index).unwrap();
        std::fs::write(w.join("crlnumber"), "01\n").unwrap();
        std::fs::write(w.join("ca.crt"), self.cert.to_pem().unwrap()).unwrap();
        std::fs::write(
            w.join("ca.key"),
            self.key.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap();
        let cnf = format!(
            "[ca]\ndefault_ca = d\n[d]\ndatabase = {0}/index.txt\ncrlnumber = {0}/crlnumber\ndefault_md = sha256\ndefault_crl_days = 7\n",
            w.display()
        );
        std::fs::write(w.join("ca.cnf"), cnf).unwrap();
        let tmp = w.join("crl.pem");
        let mut cmd = std::process::Command::new("openssl");
        cmd.args(["ca", "-gencrl", "-batch", "-config"])
            .arg(w.join("ca.cnf"))
            .arg("-cert")
            .arg(w.join("ca.crt"))
            .arg("-keyfile")
            .arg(w.join("ca.key"))
            .arg("-out")
            .arg(&tmp);
        if stale {
            cmd.args([
                "-crl_lastupdate",
                "20240101000000Z",
                "-crl_nextupdate",
                "20240102000000Z",
            ]);
        }
        let out_status = cmd.output().unwrap();
        assert!(
            out_status.status.success(),
            "openssl ca -gencrl: {}",
            String::from_utf8_lossy(&out_status.stderr)
        );
        std::fs::rename(&tmp, out).unwrap();
    }

    /// A certificate signed by this CA: its PEM files (certificate, key) and the certificate.
    pub fn issue(&self, dir: &Path, file: &str, leaf: &Leaf) -> (PathBuf, PathBuf, X509) {
        let key = key();
        let mut n = X509NameBuilder::new().unwrap();
        n.append_entry_by_nid(Nid::COMMONNAME, leaf.cn).unwrap();
        if let Some(o) = leaf.org {
            n.append_entry_by_nid(Nid::ORGANIZATIONNAME, o).unwrap();
        }
        let n = n.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&serial()).unwrap();
        b.set_subject_name(&n).unwrap();
        b.set_issuer_name(self.cert.subject_name()).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&days(leaf.days.0)).unwrap();
        b.set_not_after(&days(leaf.days.1)).unwrap();
        b.append_extension(BasicConstraints::new().critical().build().unwrap())
            .unwrap();
        let mut eku = ExtendedKeyUsage::new();
        if leaf.client_auth {
            eku.client_auth();
        } else {
            eku.server_auth();
        }
        b.append_extension(eku.build().unwrap()).unwrap();
        if !(leaf.san_uri.is_empty() && leaf.san_dns.is_empty() && leaf.san_email.is_empty()) {
            let mut san = SubjectAlternativeName::new();
            for u in leaf.san_uri {
                san.uri(u);
            }
            for d in leaf.san_dns {
                san.dns(d);
            }
            for e in leaf.san_email {
                san.email(e);
            }
            let ext = san
                .build(&b.x509v3_context(Some(&self.cert), None))
                .unwrap();
            b.append_extension(ext).unwrap();
        }
        b.sign(&self.key, MessageDigest::sha256()).unwrap();
        let cert = b.build();
        let cert_path = dir.join(format!("{file}.crt"));
        let key_path = dir.join(format!("{file}.key"));
        std::fs::write(&cert_path, cert.to_pem().unwrap()).unwrap();
        std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        (cert_path, key_path, cert)
    }
}

/// A self-signed certificate for `localhost` and `127.0.0.1` (its own CA), written as PEM
/// files into `dir`: returns (certificate path, key path).
pub fn self_signed_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut subject = X509NameBuilder::new().unwrap();
    subject
        .append_entry_by_nid(Nid::COMMONNAME, "localhost")
        .unwrap();
    let subject = subject.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&subject).unwrap();
    b.set_issuer_name(&subject).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .dns("localhost")
        .ip("127.0.0.1")
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let cert = b.build();
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.to_pem().unwrap()).unwrap();
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (cert_path, key_path)
}
