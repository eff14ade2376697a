#!/usr/bin/env python3
"""Memory a client connection costs the gateway, and whether it is returned when the
connection closes. Starts `portcullis echo` and the gateway (release build) on loopback,
then, reading the gateway's VmRSS from /proc:

  idle      N connections that each sent one request and stay idle (keep-alive);
  silent    N connections that never send a byte;
  partial   N connections each holding an unterminated head of HEAD bytes (under the limit).

After each phase the connections are closed and the RSS read again a few seconds later.
Bounded: N connections, one request each, everything stopped by pid at the end.
Usage: load-tests/idle_connections.py [N] [HEAD] [READ_BUFFER]
(READ_BUFFER: the listener's `read_buffer_size`; the gateway's default when left out.)
"""
import os
import socket
import subprocess
import sys
import tempfile
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 500
HEAD = int(sys.argv[2]) if len(sys.argv) > 2 else 60 * 1024
READ_BUFFER = sys.argv[3] if len(sys.argv) > 3 else None
BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "portcullis")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_port(port, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def main():
    d = tempfile.mkdtemp()
    origin, listen, admin = free_port(), free_port(), free_port()
    conf = os.path.join(d, "c.yaml")
    with open(conf, "w") as f:
        f.write(
            f"server:\n  pid_file: {d}/p.pid\n  upgrade_sock: {d}/u.sock\n"
            f"  request_header_timeout: 60s\n  keepalive_timeout: 120s\n"
            f"listeners:\n  - address: 127.0.0.1:{listen}\n"
            + (f"    read_buffer_size: {READ_BUFFER}\n" if READ_BUFFER else "")
            + 
            f"admin:\n  address: 127.0.0.1:{admin}\naccess_log:\n  enabled: false\n"
            f"upstreams:\n  o:\n    backends: [\"127.0.0.1:{origin}\"]\n"
            f"routes:\n  - name: r\n    match: {{ path_prefix: / }}\n    upstream: o\n    auth: public\n"
        )
    echo = subprocess.Popen([BIN, "echo", "--listen", f"127.0.0.1:{origin}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gw = subprocess.Popen([BIN, "run", "-c", conf],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(origin)
        wait_port(listen)
        # Warm up: one request so that lazily built state exists before the baseline.
        c = socket.create_connection(("127.0.0.1", listen))
        c.sendall(b"GET /warm HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        while c.recv(65536):
            pass
        c.close()
        time.sleep(1)
        base = rss_kib(gw.pid)
        print(f"baseline RSS {base / 1024:.1f} MiB (N={N}, partial head {HEAD} bytes, "
              f"read buffer {READ_BUFFER or 'default'})")
        for phase in ("idle", "silent", "partial"):
            conns = []
            for _ in range(N):
                c = socket.create_connection(("127.0.0.1", listen))
                if phase == "idle":
                    c.sendall(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
                    got = b""
                    while b"\r\n\r\n" not in got:
                        got += c.recv(65536)
                elif phase == "partial":
                    c.sendall(b"GET /p HTTP/1.1\r\nHost: a\r\n")
                    line = b"X-Pad: " + b"p" * 8000 + b"\r\n"
                    sent = 0
                    while sent + len(line) < HEAD:
                        c.sendall(line)
                        sent += len(line)
                conns.append(c)
            time.sleep(2)
            held = rss_kib(gw.pid)
            for c in conns:
                c.close()
            # The allocator returns freed pages lazily, when its threads next allocate:
            # a few requests after the close let it.
            time.sleep(1)
            for _ in range(50):
                c = socket.create_connection(("127.0.0.1", listen))
                c.sendall(b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                while c.recv(65536):
                    pass
                c.close()
            time.sleep(2)
            after = rss_kib(gw.pid)
            print(f"{phase:8s} held {held / 1024:7.1f} MiB  (+{(held - base) / N:6.1f} KiB each)"
                  f"   after close {after / 1024:7.1f} MiB  (+{(after - base) / 1024:5.1f} MiB over baseline)")
    finally:
        for p in (gw, echo):
            p.terminate()
        for p in (gw, echo):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
