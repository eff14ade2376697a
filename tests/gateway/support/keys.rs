//! API keys minted the way an operator mints them: `portcullis keys new`, written into a
//! consumers file the gateway reads.

use std::path::Path;
use std::process::Command;

use super::process::BIN;

/// `portcullis keys new` for `consumer`, written into the consumers file `file`; the key.
pub fn new_api_key(file: &Path, consumer: &str, extra: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["keys", "new", "--consumer", consumer, "--write"])
        .arg(file)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("ptc_"), "{key}");
    key
}
