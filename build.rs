//! Build-time facts for `portcullis --version`: the version of Pingora this binary links,
//! read from Cargo.lock (the one place that records what was resolved).

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let version = locked_version(&lock, "pingora").unwrap_or("unknown");
    println!("cargo:rustc-env=PORTCULLIS_PINGORA_VERSION={version}");
}

/// The `version` that follows `name = "NAME"` in a Cargo.lock.
fn locked_version<'a>(lock: &'a str, name: &str) -> Option<&'a str> {
    let wanted = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == wanted {
            let next = lines.next()?.trim();
            return next.strip_prefix("version = \"")?.strip_suffix('"');
        }
    }
    None
}
