//! The file store: the whole list as one JSON file, replaced atomically (a temporary file in
//! the same directory, fsynced, renamed over the old one, mode 0600), so a crash leaves the old
//! list or the new one.

use super::state::State;
use super::{Entry, Kind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The state file: `{"version":1,"jti":{…},"subjects":{…},"tokens":{"<hex>":N}}`.
#[derive(Default, Serialize, Deserialize)]
struct FileState {
    version: u32,
    #[serde(default)]
    jti: BTreeMap<String, u64>,
    #[serde(default)]
    subjects: BTreeMap<String, u64>,
    #[serde(default)]
    tokens: BTreeMap<String, u64>,
}

pub(super) fn load_file(path: &Path, now: u64) -> Result<State, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(e) => {
            return Err(format!(
                "revocation list {}: cannot read: {e}",
                path.display()
            ))
        }
    };
    let corrupt = |why: String| format!("revocation list {}: corrupt: {why}", path.display());
    let file: FileState = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    if file.version != 1 {
        return Err(corrupt(format!("unsupported version {}", file.version)));
    }
    let mut state = State::default();
    let all = [
        (Kind::Jti, &file.jti),
        (Kind::Subject, &file.subjects),
        (Kind::Token, &file.tokens),
    ];
    for (kind, map) in all {
        for (k, &t) in map {
            let e = Entry::from_parts(kind, k, t).map_err(corrupt)?;
            state.merge(&e);
        }
    }
    state.prune(now);
    Ok(state)
}

/// The state file's bytes: the current entries, in key order.
fn encode_file(state: &State, now: u64) -> Result<Vec<u8>, String> {
    let mut file = FileState {
        version: 1,
        ..FileState::default()
    };
    for e in state.entries(now) {
        let map = match e.kind() {
            Kind::Jti => &mut file.jti,
            Kind::Subject => &mut file.subjects,
            Kind::Token => &mut file.tokens,
        };
        map.insert(e.key(), e.instant());
    }
    let mut bytes = serde_json::to_vec(&file).map_err(|e| format!("revocation list: {e}"))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Serial numbers of temporary files, so that two writers in one process never share one.
static TMP_SERIAL: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` by a file holding `bytes` (mode 0600): written to a temporary file in the
/// same directory, fsynced, renamed over `path`; the directory is fsynced where possible.
/// Blocking; run it off the async workers.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| {
        format!("revocation list {}: cannot write: {e}", path.display())
    };
    let name = path.file_name().ok_or_else(|| fail(&"not a file name"))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let serial = TMP_SERIAL.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let tmp = dir.join(format!(".{}.{pid}.{serial}.tmp", name.to_string_lossy()));
    let written = (|| -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(|e| fail(&e))
}

/// [`encode_file`] then [`write_atomic`] on the blocking pool.
pub(super) async fn save_file(path: &Path, state: &State, now: u64) -> Result<(), String> {
    let bytes = encode_file(state, now)?;
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
        .await
        .map_err(|e| format!("revocation list: writer failed: {e}"))?
}
