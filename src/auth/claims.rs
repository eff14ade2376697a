//! Reading a verified token's claims (or an introspection answer's members) into an
//! [`Identity`]: where each part is found ([`ClaimMap`]), the typed readers that refuse a claim
//! of the wrong shape, and what may become a header or a log line.

use super::{AuthError, Identity};

/// Longest subject accepted; it becomes a header value.
pub const MAX_SUBJECT_LEN: usize = 256;

/// Longest value of one identity header.
pub const MAX_CLAIM_VALUE_LEN: usize = 1024;

/// Where each part of an identity is found in a token's claims (dotted paths into nested
/// objects, e.g. `realm_access.roles` for Keycloak).
#[derive(Debug, Clone)]
pub struct ClaimMap {
    pub subject: String,
    /// Where the subject is when `subject` is absent, in order (the decision protocol's
    /// `user_id`; an introspection answer's `username`, then `client_id`).
    pub subject_fallback: Vec<String>,
    pub roles: Option<String>,
    /// `None`: the standard places, `scope` (space-delimited string) then `scp` (array).
    pub scopes: Option<String>,
    pub permissions: Option<String>,
    pub tenant: Option<String>,
    pub email: Option<String>,
    pub client_id: Option<String>,
    pub headers: Vec<(http::HeaderName, String)>,
}

impl Default for ClaimMap {
    fn default() -> Self {
        Self {
            subject: "sub".into(),
            subject_fallback: Vec::new(),
            roles: None,
            scopes: None,
            permissions: None,
            tenant: None,
            email: None,
            client_id: None,
            headers: Vec::new(),
        }
    }
}

/// The claim at a dotted path. A key that itself contains dots (`cognito:groups` has none,
/// but `https://example.com/roles` does) is tried whole first.
pub fn claim_at<'a>(
    claims: &'a serde_json::Map<String, serde_json::Value>,
    path: &str,
) -> Option<&'a serde_json::Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut cur = claims.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

fn one_value(v: &str) -> Result<String, AuthError> {
    // A value becomes (part of) a header: no control characters, and no comma, which
    // separates list values.
    if is_header_safe(v, MAX_CLAIM_VALUE_LEN) && !v.contains(',') {
        Ok(v.to_string())
    } else {
        Err(AuthError::InvalidClaim)
    }
}

/// A list claim: an array of strings, or one string (split on spaces when `split`).
fn list_claim(v: Option<&serde_json::Value>, split: bool) -> Result<Vec<String>, AuthError> {
    use serde_json::Value;
    match v {
        None => Ok(Vec::new()),
        Some(Value::String(s)) if split => s
            .split(' ')
            .filter(|x| !x.is_empty())
            .map(one_value)
            .collect(),
        Some(Value::String(s)) => Ok(vec![one_value(s)?]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .ok_or(AuthError::InvalidClaim)
                    .and_then(one_value)
            })
            .collect(),
        Some(_) => Err(AuthError::InvalidClaim),
    }
}

fn string_claim(v: Option<&serde_json::Value>) -> Result<Option<String>, AuthError> {
    match v {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => one_value(s).map(Some),
        Some(_) => Err(AuthError::InvalidClaim),
    }
}

impl ClaimMap {
    /// Build the identity from verified claims; a claim of the wrong shape is a refusal,
    /// never a silently empty value (catalogue C18).
    pub fn identity(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Identity, AuthError> {
        let subject_claim = claim_at(claims, &self.subject).or_else(|| {
            self.subject_fallback
                .iter()
                .find_map(|p| claim_at(claims, p))
        });
        let subject = match subject_claim {
            Some(serde_json::Value::String(s)) if is_header_safe(s, MAX_SUBJECT_LEN) => s.clone(),
            _ => return Err(AuthError::InvalidClaim),
        };
        let scopes = match &self.scopes {
            Some(path) => list_claim(claim_at(claims, path), true)?,
            None => {
                let mut s = list_claim(claims.get("scope"), true)?;
                for extra in list_claim(claims.get("scp"), true)? {
                    if !s.contains(&extra) {
                        s.push(extra);
                    }
                }
                s
            }
        };
        let path = |p: &Option<String>| p.as_deref().and_then(|p| claim_at(claims, p));
        let mut extra = Vec::new();
        for (name, p) in &self.headers {
            if let Some(v) = string_claim(claim_at(claims, p))? {
                extra.push((name.clone(), v));
            }
        }
        Ok(Identity {
            method: "jwt",
            provider: String::new(),
            subject,
            roles: list_claim(path(&self.roles), false)?,
            scopes,
            permissions: list_claim(path(&self.permissions), false)?,
            tenant: string_claim(path(&self.tenant))?,
            email: string_claim(path(&self.email))?,
            client_id: string_claim(path(&self.client_id))?,
            extra,
            expires_at: None,
            key_id: None,
            tier: None,
            jti: match claims.get("jti") {
                None => None,
                // Opaque, compared only with the revocation list; bounded.
                Some(serde_json::Value::String(j)) if j.len() <= MAX_CLAIM_VALUE_LEN => {
                    Some(j.clone())
                }
                Some(_) => return Err(AuthError::InvalidClaim),
            },
            issued_at: numeric_date(claims, "iat")?,
            cert_thumbprint: cert_binding(claims)?,
        })
    }
}

/// A NumericDate member (`exp`, `nbf`, `iat`) of a token's claims or an introspection answer:
/// absent, or a non-negative number (a fraction is cut to the second). A negative, absurd or
/// non-numeric value is an error, never a skipped check (catalogue C1-C3).
pub fn numeric_date(
    claims: &serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<Option<u64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(serde_json::Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(f)) if (0.0..1e13).contains(&f) => Ok(Some(f as u64)),
            _ => Err(AuthError::InvalidClaim),
        },
        Some(_) => Err(AuthError::InvalidClaim),
    }
}

/// The certificate a token is bound to (RFC 8705 section 3.1): `cnf` absent is an unbound
/// token; `cnf` with `x5t#S256` (base64url of a SHA-256) is bound; anything else (another
/// confirmation method only, a wrong shape) is refused rather than read as unbound.
fn cert_binding(
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<Option<[u8; 32]>, AuthError> {
    use base64::Engine;
    let Some(cnf) = claims.get("cnf") else {
        return Ok(None);
    };
    let serde_json::Value::Object(cnf) = cnf else {
        return Err(AuthError::InvalidClaim);
    };
    match cnf.get("x5t#S256") {
        None => Err(AuthError::UnsupportedBinding),
        Some(serde_json::Value::String(t)) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(t)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(Some)
            .ok_or(AuthError::InvalidClaim),
        Some(_) => Err(AuthError::InvalidClaim),
    }
}

/// A value that may become a header: not empty, bounded, no control characters (C12/C13).
pub fn is_header_safe(s: &str, max_len: usize) -> bool {
    !s.is_empty() && s.len() <= max_len && !s.chars().any(char::is_control)
}

/// A kid or other token-supplied text, safe to put in a log line: escaped and truncated.
pub fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(64).flat_map(char::escape_default).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn keycloak_auth0_entra_and_cognito_shapes_map_to_one_identity() {
        let keycloak = ClaimMap {
            roles: Some("realm_access.roles".into()),
            ..ClaimMap::default()
        };
        let id = keycloak
            .identity(&claims(
                json!({"sub":"u1","realm_access":{"roles":["admin","user"]},"scope":"openid read"}),
            ))
            .unwrap();
        assert_eq!(id.roles, ["admin", "user"]);
        assert_eq!(id.scopes, ["openid", "read"]);

        let auth0 = ClaimMap {
            permissions: Some("permissions".into()),
            ..ClaimMap::default()
        };
        let id = auth0
            .identity(&claims(
                json!({"sub":"u2","permissions":["read:x"],"scp":["a","b"]}),
            ))
            .unwrap();
        assert_eq!(id.permissions, ["read:x"]);
        assert_eq!(id.scopes, ["a", "b"]);

        let cognito = ClaimMap {
            roles: Some("cognito:groups".into()),
            ..ClaimMap::default()
        };
        let id = cognito
            .identity(&claims(json!({"sub":"u3","cognito:groups":"ops"})))
            .unwrap();
        assert_eq!(id.roles, ["ops"]);
    }

    #[test]
    fn c18_wrongly_shaped_claims_are_refused_not_ignored() {
        let m = ClaimMap {
            roles: Some("roles".into()),
            tenant: Some("tid".into()),
            ..ClaimMap::default()
        };
        for bad in [
            json!({"sub":"u","roles":{"admin":true}}),
            json!({"sub":"u","roles":[1,2]}),
            json!({"sub":"u","roles":["a,b"]}),
            json!({"sub":"u","roles":["ok\r\nX-Evil: 1"]}),
            json!({"sub":"u","tid":7}),
            json!({"sub":"u","scope":42}),
            json!({"sub":42}),
        ] {
            assert_eq!(
                m.identity(&claims(bad.clone())),
                Err(AuthError::InvalidClaim),
                "{bad}"
            );
        }
        // Absent optional claims are simply absent.
        let id = m.identity(&claims(json!({"sub":"u"}))).unwrap();
        assert!(id.roles.is_empty() && id.tenant.is_none());
    }
}
