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
