#!/usr/bin/env python3
"""Exactly N GET requests over C keep-alive connections, one thread per connection, to
127.0.0.1:PORT (over TLS with --tls, the certificate not checked: loopback only). Each
response is read whole (Content-Length) before the next request on its connection. Prints the
number of responses. Used by callgrind.sh, whose counts need an exact number of requests.

  load-tests/keepalive_requests.py PORT N [--connections C] [--tls] [--path /p] [--header 'K: V']

Bounded: every socket operation under a 10 s timeout; exits non-zero if a connection closes.
"""
import argparse
import socket
import ssl
import sys
import threading


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("n", type=int)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--path", default="/pass")
    ap.add_argument("--header", action="append", default=[], help="an extra request header")
    a = ap.parse_args()
    ctx = None
    if a.tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
    extra = "".join(f"{h}\r\n" for h in a.header)
    request = f"GET {a.path} HTTP/1.1\r\nHost: bench\r\n{extra}\r\n".encode()
    share = [a.n // a.connections + (i < a.n % a.connections) for i in range(a.connections)]
    done, failed = [0] * a.connections, []

    def worker(i):
        try:
            s = socket.create_connection(("127.0.0.1", a.port), timeout=10)
            if ctx:
                s = ctx.wrap_socket(s)
            buf = b""
            for _ in range(share[i]):
                s.sendall(request)
                while True:
                    end = buf.find(b"\r\n\r\n")
                    if end >= 0:
                        length = 0
                        for line in buf[:end].lower().split(b"\r\n"):
                            if line.startswith(b"content-length:"):
                                length = int(line.split(b":")[1])
                        if len(buf) >= end + 4 + length:
                            buf = buf[end + 4 + length:]
                            break
                    chunk = s.recv(65536)
                    if not chunk:
                        raise ConnectionError("the server closed the connection")
                    buf += chunk
                done[i] += 1
            s.close()
        except Exception as e:  # reported below, as the exit status
            failed.append(f"connection {i}: {e}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(a.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(sum(done))
    if failed:
        sys.exit("; ".join(failed))


if __name__ == "__main__":
    main()
