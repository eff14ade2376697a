//! Files the gateway keeps in force while it runs (the consumers file, signing keys, client
//! CRLs): each is read again when its size or modification time changes, and on `SIGHUP`.
//! A file with any problem is refused whole and what is in force stays.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Size and modification time of a file, to notice changes.
pub fn file_stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// A file read into memory and swapped whole on reload.
pub trait Reloadable: Send + Sync {
    /// What the file is, for logs: "consumers file".
    fn what(&self) -> &'static str;
    fn path(&self) -> &Path;
    /// The stamp of the file last read.
    fn stamp(&self) -> &Mutex<Option<(u64, SystemTime)>>;
    /// Read the file and put it in force; how many entries it holds, or what was wrong.
    fn read_and_swap(&self) -> Result<usize, Vec<String>>;
    /// Count a reload's outcome (metrics).
    fn record(&self, _outcome: Result<usize, ()>) {}

    /// The stamp of what is on disk now (a policy and its data file: both together).
    fn stamp_now(&self) -> Option<(u64, SystemTime)> {
        file_stamp(self.path())
    }

    /// Read the file again now.
    fn reload(&self) -> Result<usize, Vec<String>> {
        let stamp = self.stamp_now();
        if let Ok(mut s) = self.stamp().lock() {
            *s = stamp;
        }
        self.read_and_swap()
    }

    /// `reload` when the file's size or modification time changed since the last read.
    fn reload_if_changed(&self) -> Option<Result<usize, Vec<String>>> {
        let now = self.stamp_now();
        let changed = self.stamp().lock().map(|s| *s != now).unwrap_or(true);
        changed.then(|| self.reload())
    }
}

/// Keeps files in force: polls every `interval`, and reloads every file on `SIGHUP`.
pub struct Reloader {
    pub files: Vec<Arc<dyn Reloadable>>,
    pub interval: Duration,
}

fn apply(file: &dyn Reloadable, outcome: Option<Result<usize, Vec<String>>>, why: &str) {
    match outcome {
        None => {}
        Some(Ok(n)) => {
            file.record(Ok(n));
            tracing::info!(entries = n, reason = why, file = %file.path().display(), "{} reloaded", file.what());
        }
        Some(Err(problems)) => {
            file.record(Err(()));
            tracing::error!(
                file = %file.path().display(),
                problems = %problems.join("; "),
                "{} refused; what is in force stays",
                file.what()
            );
        }
    }
}

impl Reloader {
    /// Poll and reload until `shutdown` changes.
    pub async fn run(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler; files are still polled");
                None
            }
        };
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {
                    for f in &self.files {
                        apply(f.as_ref(), f.reload_if_changed(), "changed");
                    }
                }
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    for f in &self.files {
                        apply(f.as_ref(), Some(f.reload()), "SIGHUP");
                    }
                }
            }
        }
    }
}
