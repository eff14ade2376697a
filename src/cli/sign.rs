//! `portcullis sign`: sign a request for an `hmac` route (RFC 9421, hmac-sha256) the way a
//! client would, and print the headers to send with it.

use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct SignArgs {
    /// The key id (`keyid`).
    #[arg(long)]
    pub key_id: String,
    /// A file holding the key's secret as the signing keys file writes it (`base64:...`).
    #[arg(long, conflicts_with = "keys_file")]
    pub secret_file: Option<PathBuf>,
    /// The gateway's signing keys file: use the secret of `--key-id` from it.
    #[arg(long)]
    pub keys_file: Option<PathBuf>,
    #[arg(short = 'X', long, default_value = "GET")]
    pub method: String,
    /// A request header, `Name: value` (repeatable); needed when a signed component names it.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// The body: the exact bytes of this file (`-` for standard input).
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// Components to cover, comma-separated (default: `@method,@authority,@path,@query`,
    /// and `content-digest` with a body).
    #[arg(long, value_delimiter = ',')]
    pub components: Vec<String>,
    /// Print this many signatures, each with its own nonce, one per line with the headers
    /// separated by tabs (for load tests).
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// `https://host[:port]/path?query`, with the path exactly as it will be sent.
    pub url: String,
}

/// `portcullis sign`: the signature headers for one request (or `count` of them).
/// The headers to send with the request `a` describes, one per line.
pub fn run(a: &SignArgs) -> Result<String, String> {
    use crate::auth::http_sig;
    let secret = match (&a.secret_file, &a.keys_file) {
        (Some(f), None) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            http_sig::decode_secret(&text)
                .map_err(|p| format!("{}: the secret {p}", f.display()))?
        }
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            let ring = http_sig::SigningKeyring::parse(&text, &|_| true)
                .map_err(|p| format!("{}: {}", f.display(), p.join("; ")))?;
            ring.secret(&a.key_id)
                .ok_or_else(|| format!("{} has no key \"{}\"", f.display(), a.key_id))?
                .to_vec()
        }
        _ => return Err("give --secret-file or --keys-file".into()),
    };
    let url = url::Url::parse(&a.url).map_err(|e| format!("{}: {e}", a.url))?;
    let host = url.host_str().ok_or("the URL has no host")?;
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let headers = super::parse_headers(&a.headers)?;
    let body = match &a.body_file {
        None => Vec::new(),
        Some(p) if p.as_os_str() == "-" => {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            b
        }
        Some(p) => std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
    };
    let components = if a.components.is_empty() {
        http_sig::SignatureRules::default().components
    } else {
        a.components.clone()
    };
    let request = http_sig::SignedRequest {
        method: &a.method,
        scheme: url.scheme(),
        authority: &authority,
        path: url.path(),
        query: url.query(),
        headers: &headers,
        body: &body,
    };
    let created = crate::unix_now();
    let mut out = String::new();
    for _ in 0..a.count.max(1) {
        let nonce = http_sig::new_nonce()?;
        let signed = http_sig::sign(
            &request,
            &a.key_id,
            &secret,
            &components,
            created,
            &nonce,
            "sig1",
        )?;
        let fields: Vec<String> = signed
            .iter()
            .map(|(name, value)| format!("{}: {value}", display_name(name)))
            .collect();
        if a.count > 1 {
            out.push_str(&fields.join("\t"));
            out.push('\n');
        } else {
            for f in fields {
                out.push_str(&f);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

fn display_name(name: &str) -> &str {
    match name {
        "content-digest" => "Content-Digest",
        "signature-input" => "Signature-Input",
        "signature" => "Signature",
        other => other,
    }
}
