#!/usr/bin/env python3
"""Memory a client connection costs a server, and whether it is returned when the
connection closes, read from the server's VmRSS (and Pss) in /proc.

Two ways to run it:

  load-tests/idle_connections.py [N] [HEAD] [READ_BUFFER]
      Starts `portcullis echo` and the gateway (release build) on loopback itself, then runs
      three phases, each closed again and RSS read a few seconds later:
        idle      N connections that each completed one request and stay idle (keep-alive);
        silent    N connections that never send a byte;
        partial   N connections each holding an unterminated head of HEAD bytes (under the
                  limit).
      READ_BUFFER: the listener's `read_buffer_size`; the gateway's default when left out.

  load-tests/idle_connections.py --port PORT --pid PID [--tls-ca CA] [--json FILE] N
      Measures a server that is already running (run.sh's MEMORY=N mode: nginx, HAProxy, bare
      Pingora, Portcullis): PORT is where it listens on 127.0.0.1 (TLS with --tls-ca, the CA
      its certificate is checked against), PID its process (its children are counted with it:
      nginx's master and worker). Baseline; N idle keep-alive connections, each after one
      completed request; closed, then a few short requests; a second wave of N the same way, to
      show memory is reused rather than grown. One line per wave on stdout; --json FILE writes
      every reading (KiB) for run.sh's table.

Bounded: at most 10000 connections, one request each, every socket operation under a 10 s
timeout; in the first form everything it started is stopped by pid at the end.
"""
import argparse
import json
import os
import resource
import select
import socket
import ssl
import subprocess
import sys
import tempfile
import time

BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "portcullis")
MAX_CONNECTIONS = 10000
SOCKET_TIMEOUT = 10
# Short requests after a close: the allocator (mimalloc) returns freed pages lazily, when its
# threads next allocate.
AFTER_CLOSE_REQUESTS = 50
HELD_SETTLE = 2
AFTER_CLOSE_SETTLE = 2


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def tree(pid):
    """The process and its descendants (nginx: master and worker)."""
    pids = [pid]
    for p in pids:
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    pids.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return pids


def proc_field(path, name):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(name):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid):
    """VmRSS of the process and its children, KiB."""
    return sum(proc_field(f"/proc/{p}/status", "VmRSS:") for p in tree(pid))


def pss_kib(pid):
    """Pss of the process and its children (shared pages counted once), KiB."""
    return sum(proc_field(f"/proc/{p}/smaps_rollup", "Pss:") for p in tree(pid))


def raise_open_files(n):
    """Room for n sockets of our own (the soft limit up to the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = n + 256
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise SystemExit(f"{n} connections need {need} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def wait_port(port, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def read_until(c, got, done, what):
    """Read from c onto `got` until done(got); an early close is an error naming `what`."""
    while not done(got):
        more = c.recv(65536)
        if not more:
            raise OSError(f"connection closed before {what} was complete")
        got += more
    return got


class Target:
    """Where the connections go: 127.0.0.1:port, over TLS when a context is given."""

    def __init__(self, port, tls=None):
        self.port = port
        self.tls = tls

    def connect(self):
        c = socket.create_connection(("127.0.0.1", self.port), timeout=SOCKET_TIMEOUT)
        if self.tls:
            c = self.tls.wrap_socket(c, server_hostname="127.0.0.1")
        return c

    def request(self, c, path, close=False):
        """One GET on c, its whole response read (Content-Length or chunked)."""
        c.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n".encode()
                  + (b"Connection: close\r\n" if close else b"") + b"\r\n")
        got = read_until(c, b"", lambda b: b"\r\n\r\n" in b, "the response's head")
        head, body = got.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1.1 200"):
            raise OSError(f"answered {lines[0]!r}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(b":") for l in lines[1:])}
        if close:
            while c.recv(65536):
                pass
        elif b"content-length" in headers:
            want = int(headers[b"content-length"])
            read_until(c, body, lambda b: len(b) >= want, "the response's body")
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            read_until(c, body, lambda b: b.endswith(b"0\r\n\r\n"), "the response's body")

    def short_requests(self, count, path="/after"):
        for _ in range(count):
            c = self.connect()
            try:
                self.request(c, path, close=True)
            finally:
                c.close()


def still_open(conns):
    """How many of the connections the server has not closed (nothing to read, no EOF)."""
    poller = select.poll()  # (not select(): file descriptors above 1024)
    for c in conns:
        poller.register(c.fileno(), select.POLLIN)
    readable = {fd for fd, _ in poller.poll(0)}
    n = 0
    for c in conns:
        pending = isinstance(c, ssl.SSLSocket) and c.pending() > 0
        if c.fileno() not in readable and not pending:
            n += 1
            continue
        c.setblocking(False)
        try:
            if c.recv(1):
                n += 1  # data, not a close (not expected on an idle connection)
        except (ssl.SSLWantReadError, BlockingIOError):
            n += 1  # a TLS record with no application data (a session ticket)
        except OSError:
            pass
        finally:
            c.setblocking(True)
    return n


def open_connections(target, n, phase="idle", head=0):
    """n connections held open: `idle` after one completed request, `silent` with nothing
    sent, `partial` holding an unterminated head of about `head` bytes."""
    conns = []
    try:
        for _ in range(n):
            c = target.connect()
            conns.append(c)
            if phase == "idle":
                target.request(c, "/one")
            elif phase == "partial":
                c.sendall(b"GET /p HTTP/1.1\r\nHost: a\r\n")
                line = b"X-Pad: " + b"p" * 8000 + b"\r\n"
                sent = 0
                while sent + len(line) < head:
                    c.sendall(line)
                    sent += len(line)
    except BaseException:
        close_all(conns)
        raise
    return conns


def close_all(conns):
    for c in conns:
        try:
            c.close()
        except OSError:
            pass


def after_close(target, pid):
    """RSS and PSS once closed connections' memory had the chance to go back."""
    time.sleep(1)
    target.short_requests(AFTER_CLOSE_REQUESTS)
    time.sleep(AFTER_CLOSE_SETTLE)
    return rss_kib(pid), pss_kib(pid)


def wave(target, pid, n, phase="idle", head=0):
    """One wave: n connections held, read, closed, read again. KiB and the open count."""
    conns = open_connections(target, n, phase, head)
    try:
        time.sleep(HELD_SETTLE)
        held_rss, held_pss = rss_kib(pid), pss_kib(pid)
        still = still_open(conns)
    finally:
        close_all(conns)
    after_rss, after_pss = after_close(target, pid)
    return {"held_rss": held_rss, "held_pss": held_pss, "open": still,
            "after_rss": after_rss, "after_pss": after_pss}


def measure(args):
    """MEMORY=N mode: a running server, two waves of idle keep-alive connections."""
    tls = ssl.create_default_context(cafile=args.tls_ca) if args.tls_ca else None
    target = Target(args.port, tls)
    # Warm up: lazily built state (and the origin connection pool) exists before the baseline.
    target.short_requests(20, "/warm")
    time.sleep(1)
    r = {"n": args.n, "base_rss": rss_kib(args.pid), "base_pss": pss_kib(args.pid)}
    label = args.label or f"127.0.0.1:{args.port}"
    print(f"{label}: baseline RSS {r['base_rss'] / 1024:.1f} MiB, PSS {r['base_pss'] / 1024:.1f} MiB"
          f" (N={args.n}{', TLS' if tls else ''})", flush=True)
    for i in (1, 2):
        w = wave(target, args.pid, args.n)
        for k, v in w.items():
            r[f"{k}{i}"] = v
        print(f"{label}: wave {i}: held {w['held_rss'] / 1024:.1f} MiB"
              f" (+{(w['held_rss'] - r['base_rss']) / args.n:.1f} KiB each, {w['open']}/{args.n} still open),"
              f" after close {w['after_rss'] / 1024:.1f} MiB", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f)


def standalone(args):
    """The first form: a gateway of our own, the three phases."""
    d = tempfile.mkdtemp()
    origin, listen, admin = free_port(), free_port(), free_port()
    conf = os.path.join(d, "c.yaml")
    with open(conf, "w") as f:
        f.write(
            f"server:\n  pid_file: {d}/p.pid\n  upgrade_sock: {d}/u.sock\n"
            f"  request_header_timeout: 60s\n  keepalive_timeout: 120s\n"
            f"listeners:\n  - address: 127.0.0.1:{listen}\n"
            + (f"    read_buffer_size: {args.read_buffer}\n" if args.read_buffer else "")
            + f"admin:\n  address: 127.0.0.1:{admin}\naccess_log:\n  enabled: false\n"
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
        target = Target(listen)
        # Warm up: one request so that lazily built state exists before the baseline.
        target.short_requests(1, "/warm")
        time.sleep(1)
        base = rss_kib(gw.pid)
        print(f"baseline RSS {base / 1024:.1f} MiB (N={args.n}, partial head {args.head} bytes, "
              f"read buffer {args.read_buffer or 'default'})")
        for phase in ("idle", "silent", "partial"):
            w = wave(target, gw.pid, args.n, phase, args.head)
            held, after = w["held_rss"], w["after_rss"]
            print(f"{phase:8s} held {held / 1024:7.1f} MiB  (+{(held - base) / args.n:6.1f} KiB each)"
                  f"   after close {after / 1024:7.1f} MiB  (+{(after - base) / 1024:5.1f} MiB over baseline)")
    finally:
        for p in (gw, echo):
            p.terminate()
        for p in (gw, echo):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("n", nargs="?", type=int, default=500, help="connections per phase (500)")
    p.add_argument("head", nargs="?", type=int, default=60 * 1024,
                   help="bytes of the partial phase's unterminated head (61440; own gateway only)")
    p.add_argument("read_buffer", nargs="?", default=None,
                   help="the listener's read_buffer_size (own gateway only)")
    p.add_argument("--port", type=int, help="measure the server listening on 127.0.0.1:PORT")
    p.add_argument("--pid", type=int, help="that server's process (with --port)")
    p.add_argument("--tls-ca", help="connect over TLS, checking the server against this CA")
    p.add_argument("--json", help="write the readings (KiB) to this file (with --port)")
    p.add_argument("--label", help="the name printed before each line (with --port)")
    args = p.parse_args()
    if not 1 <= args.n <= MAX_CONNECTIONS:
        p.error(f"N must be between 1 and {MAX_CONNECTIONS}")
    raise_open_files(args.n)
    if args.port is None:
        if args.pid or args.tls_ca or args.json:
            p.error("--pid, --tls-ca and --json go with --port")
        standalone(args)
    else:
        if not args.pid:
            p.error("--port needs --pid, the server's process")
        if not os.path.exists(f"/proc/{args.pid}"):
            p.error(f"no process {args.pid}")
        measure(args)


if __name__ == "__main__":
    sys.exit(main())
