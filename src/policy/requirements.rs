//! Requirements: what an authenticated identity must hold on a route (roles: any of;
//! scopes and permissions: all of; the permission the method needs), checked after a
//! credential verified. A shortfall is a 403 with an `insufficient_scope` challenge.

use super::{Denial, Facts, Requirements, Trace, REALM};
use crate::auth::Identity;

fn list(values: &[impl AsRef<str>]) -> String {
    let mut s = String::from("[");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(v.as_ref());
    }
    s.push(']');
    s
}

fn insufficient(code: &'static str, message: String, scope: Option<&[String]>) -> Denial {
    let mut d = Denial::new(403, code, message);
    let scope = scope.map_or(String::new(), |s| format!(r#", scope="{}""#, s.join(" ")));
    d.challenge = Some(format!(
        r#"Bearer realm="{REALM}", error="insufficient_scope"{scope}"#
    ));
    d
}

/// The first requirement `id` falls short of, as a 403; `None` when it meets them all.
pub(super) fn check_requirements(
    req: &Requirements,
    id: &Identity,
    facts: &Facts<'_>,
    trace: &mut Trace,
) -> Option<Denial> {
    if !req.roles.is_empty() {
        let ok = req.roles.iter().any(|r| id.roles.contains(r));
        trace.note(
            || format!("roles: any of {}", list(&req.roles)),
            || format!("{} (have {})", pass(ok), list(&id.roles)),
        );
        if !ok {
            return Some(insufficient(
                "insufficient_role",
                format!(
                    "Insufficient roles: required one of {}, have {}",
                    list(&req.roles),
                    list(&id.roles)
                ),
                None,
            ));
        }
    }
    if !req.scopes.is_empty() {
        let ok = req.scopes.iter().all(|s| id.scopes.contains(s));
        trace.note(
            || format!("scopes: all of {}", list(&req.scopes)),
            || format!("{} (have {})", pass(ok), list(&id.scopes)),
        );
        if !ok {
            return Some(insufficient(
                "insufficient_scope",
                format!(
                    "Insufficient scopes: required {}, have {}",
                    list(&req.scopes),
                    list(&id.scopes)
                ),
                Some(&req.scopes),
            ));
        }
    }
    let mut needed: Vec<&str> = req.permissions.iter().map(String::as_str).collect();
    for (method, permission) in &req.method_permissions {
        if method == facts.method && !needed.contains(&permission.as_str()) {
            needed.push(permission);
        }
    }
    if let Some(p) = facts.extra_permission {
        if !needed.contains(&p) {
            needed.push(p);
        }
    }
    if !needed.is_empty() {
        let ok = needed.iter().all(|p| id.permissions.iter().any(|h| h == p));
        trace.note(
            || format!("permissions: all of {}", list(&needed)),
            || format!("{} (have {})", pass(ok), list(&id.permissions)),
        );
        if !ok {
            return Some(insufficient(
                "insufficient_permissions",
                format!(
                    "Insufficient permissions: required {}, have {}",
                    list(&needed),
                    list(&id.permissions)
                ),
                None,
            ));
        }
    }
    None
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "satisfied"
    } else {
        "not satisfied"
    }
}
