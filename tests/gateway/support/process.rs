//! The processes and ports under every part of the harness: the `portcullis` binary Cargo
//! built for this test run, free loopback ports and waiting for one to answer, and the checks
//! and kill that start and stop a child process.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// Still running a moment after it seemed ready (a process that lost a port race exits).
pub(super) fn still_running(child: &mut Child) -> bool {
    std::thread::sleep(Duration::from_millis(50));
    matches!(child.try_wait(), Ok(None))
}

pub(super) fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Start `cmd` with its stdin and stdout piped, and wait at most `timeout` for its first line
/// of output, its ready line; the rest is drained so the pipe never fills. The child, its stdin
/// (servers of the harness exit when it closes) and the line, or why none came. Panics when
/// the program cannot be started, naming it.
pub fn spawn_with_ready_line(
    cmd: &mut std::process::Command,
    timeout: Duration,
) -> (
    Child,
    Option<std::process::ChildStdin>,
    Result<String, std::sync::mpsc::RecvTimeoutError>,
) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let line = rx.recv_timeout(timeout);
    (child, stdin, line)
}
