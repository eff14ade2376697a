//! `server` (threads, pid file, upgrade socket, shutdown timings) and `access_log`.

use super::check::Check;
use super::file::{AccessLogSection, ServerSection};
use super::{ConnectionLimits, ServerSettings};
use std::env;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// nginx's `keepalive_timeout` is 75 s, Envoy's HTTP idle timeout 1 h; a minute frees an idle
/// client's memory sooner and is longer than browsers keep idle connections.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `keepalive_requests` default: closing now and then frees per-connection memory.
pub const DEFAULT_MAX_REQUESTS_PER_CONNECTION: u32 = 1000;

/// The defaults a connection is held to, chosen to be safe on the internet; the README's
/// "Connections" table compares each with nginx and Envoy.
pub const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = ConnectionLimits {
    // nginx allows 60 s (`client_header_timeout` also covers the handshake); a TLS handshake
    // is a few round trips, and every pending one holds a socket.
    tls_handshake_timeout: Duration::from_secs(10),
    // Apache's mod_reqtimeout allows 20 s for a head; nginx 60 s; Envoy none by default.
    request_header_timeout: Duration::from_secs(20),
    // Envoy's `max_request_headers_kb` is 60 KiB; nginx's 4 × 8 KiB buffers allow ~32 KiB.
    max_request_head_size: 64 * 1024,
    // nginx's `large_client_header_buffers` line is 8 KiB; large JWTs and cookies need more.
    max_request_line_size: 16 * 1024,
    // mod_reqtimeout's `body=20,MinRate=500`; nginx's `client_body_timeout` is 60 s per read.
    request_body_timeout: Duration::from_secs(20),
    request_body_min_rate: 500,
};

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
    let connections = connection_limits(s, c);
    ServerSettings {
        connections,
        keepalive_timeout,
        max_requests_per_connection,
        threads,
        // At one thread there is nobody to steal from, and Pingora's single-thread runtime is
        // the lighter one (measured in load-tests/RESULTS.md, "Issue 15 run").
        work_stealing: s.work_stealing.unwrap_or(threads > 1),
        pid_file,
        upgrade_sock,
        error_log: s.error_log.clone(),
        grace_period: s.grace_period.unwrap_or(Duration::from_secs(5)),
        graceful_shutdown_timeout: s
            .graceful_shutdown_timeout
            .unwrap_or(Duration::from_secs(10)),
    }
}

fn connection_limits(s: &ServerSection, c: &mut Check<'_>) -> ConnectionLimits {
    let d = DEFAULT_CONNECTION_LIMITS;
    let limits = ConnectionLimits {
        tls_handshake_timeout: s.tls_handshake_timeout.unwrap_or(d.tls_handshake_timeout),
        request_header_timeout: s.request_header_timeout.unwrap_or(d.request_header_timeout),
        max_request_head_size: s.max_request_head_size.unwrap_or(d.max_request_head_size),
        // A smaller head than the default line makes the default line that small too.
        max_request_line_size: s.max_request_line_size.unwrap_or(
            d.max_request_line_size
                .min(s.max_request_head_size.unwrap_or(usize::MAX)),
        ),
        request_body_timeout: s.request_body_timeout.unwrap_or(d.request_body_timeout),
        request_body_min_rate: s.request_body_min_rate.unwrap_or(d.request_body_min_rate),
    };
    let seconds = Duration::from_secs(1)..=Duration::from_secs(3600);
    for (key, v) in [
        ("tls_handshake_timeout", limits.tls_handshake_timeout),
        ("request_header_timeout", limits.request_header_timeout),
        ("request_body_timeout", limits.request_body_timeout),
    ] {
        c.range(key, v, seconds.clone(), "between 1s and 1h");
    }
    // Pingora itself reads at most 1 MiB of head; a line cannot be longer than the head.
    c.range(
        "max_request_head_size",
        limits.max_request_head_size,
        1024..=1024 * 1024,
        "between 1024 and 1048576 bytes",
    );
    c.range(
        "max_request_line_size",
        limits.max_request_line_size,
        256..=limits.max_request_head_size.max(256),
        "between 256 bytes and max_request_head_size",
    );
    c.range(
        "request_body_min_rate",
        limits.request_body_min_rate,
        0..=1 << 30,
        "between 0 (no minimum) and 1073741824 bytes per second",
    );
    limits
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
