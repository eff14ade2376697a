//! `server` (threads, pid file, upgrade socket, shutdown timings) and `access_log`.

use super::check::Check;
use super::file::{AccessLogSection, ServerSection};
use super::ServerSettings;
use std::env;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// nginx's `keepalive_timeout` is 75 s, Envoy's HTTP idle timeout 1 h; a minute frees an idle
/// client's memory sooner and is longer than browsers keep idle connections.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `keepalive_requests` default: closing now and then frees per-connection memory.
pub const DEFAULT_MAX_REQUESTS_PER_CONNECTION: u32 = 1000;

pub(super) fn compile(s: &ServerSection, c: &mut Check<'_>) -> ServerSettings {
    let threads = s.threads.unwrap_or(2);
    c.range("threads", threads, 1..=1024, "must be between 1 and 1024");
    let dir = default_runtime_dir();
    let pid_file = s
        .pid_file
        .clone()
        .unwrap_or_else(|| dir.join("portcullis.pid").display().to_string());
    let upgrade_sock = s
        .upgrade_sock
        .clone()
        .unwrap_or_else(|| dir.join("upgrade.sock").display().to_string());
    for (key, v) in [("pid_file", &pid_file), ("upgrade_sock", &upgrade_sock)] {
        if !Path::new(v).is_absolute() {
            c.problem(key, "must be an absolute path");
        }
    }
    let keepalive_timeout = s.keepalive_timeout.unwrap_or(DEFAULT_KEEPALIVE_TIMEOUT);
    if keepalive_timeout < Duration::from_secs(1) || keepalive_timeout > Duration::from_secs(3600) {
        c.problem("keepalive_timeout", "between 1s and 1h");
    }
    let max_requests_per_connection = s
        .max_requests_per_connection
        .unwrap_or(DEFAULT_MAX_REQUESTS_PER_CONNECTION);
    c.range(
        "max_requests_per_connection",
        max_requests_per_connection,
        1..=1_000_000,
        "between 1 and 1000000",
    );
    ServerSettings {
        keepalive_timeout,
        max_requests_per_connection,
        threads,
        work_stealing: s.work_stealing.unwrap_or(true),
        pid_file,
        upgrade_sock,
        error_log: s.error_log.clone(),
        grace_period: s.grace_period.unwrap_or(Duration::from_secs(5)),
        graceful_shutdown_timeout: s
            .graceful_shutdown_timeout
            .unwrap_or(Duration::from_secs(10)),
    }
}

/// `None` when access logging is off; `Some("-")` for standard output.
pub(super) fn access_log(a: &AccessLogSection, c: &mut Check<'_>) -> Option<String> {
    if !a.enabled {
        return None;
    }
    if a.path.trim().is_empty() {
        c.problem("path", "must be `-` (standard output) or a file path");
    }
    Some(a.path.clone())
}

/// Where the pid file and upgrade socket go when the file does not say: systemd's
/// `RuntimeDirectory` when run as a service, else the user's own runtime directory, else a
/// per-user directory under the home directory. Never a shared `/tmp` path.
pub fn default_runtime_dir() -> PathBuf {
    if let Some(d) = env::var_os("RUNTIME_DIRECTORY") {
        // systemd may list several directories separated by ':'; the first is ours.
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        if !first.is_empty() {
            return PathBuf::from(first);
        }
    }
    if let Some(d) = env::var_os("XDG_RUNTIME_DIR") {
        if !d.is_empty() {
            return PathBuf::from(d).join("portcullis");
        }
    }
    match env::var_os("HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h).join(".local/state/portcullis"),
        _ => env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join("run"),
    }
}
