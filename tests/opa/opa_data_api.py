"""An OPA-compatible decision server for the tests: OPA's Data API, as OPA documents it, over
the policies and data it is given, evaluated by rego-cpp (Microsoft's other Rego interpreter,
PyPI's `regopy`, pinned in tests/opa/requirements.txt and installed by `make test-deps`).
So the gateway's OPA mode is tested against another implementation of Rego than the one it
embeds (regorus).

No OPA binary can be fetched here; this serves the part of OPA's REST API the gateway uses:

    POST /v1/data/<path>   {"input": ...}  ->  200 {"result": <value>}, or 200 {} when the
                                               document is undefined
    an evaluation error                    ->  500 {"code": "internal_error", "message": ...}
    a body that is not {"input": ...}       ->  400 {"code": "invalid_parameter", ...}

and, for the tests only:

    GET  /_asked     every POST received so far: [{"path", "headers", "body"}]
    POST /_control   {"delay_ms": N, "status": N}: wait before answering; answer this status
                     (with an empty body) instead of deciding, 0 to decide again

Usage: opa_data_api.py --policy FILE [--policy FILE ...] [--data FILE] [--port N]
Prints {"port": N} on its first line once it listens; exits when its stdin closes.
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from regopy import Interpreter, RegoError


class Decider:
    """One interpreter, used by one request at a time (rego-cpp's is not thread-safe)."""

    def __init__(self, policies, data):
        self.lock = threading.Lock()
        self.rego = Interpreter()
        for path in policies:
            with open(path) as f:
                self.rego.add_module(path, f.read())
        if data:
            with open(data) as f:
                self.rego.add_data_json(f.read())

    def decide(self, path, input_doc):
        """(True, value) or (True, None) when undefined; (False, message) on an error."""
        ref = "data" + "".join(f'["{part}"]' for part in path if part)
        with self.lock:
            self.rego.set_input_term(json.dumps(input_doc))
            try:
                # Bound to a variable: a bare `false` query would read as undefined.
                out = self.rego.query(f"decision := {ref}")
            except RegoError as e:
                return False, str(e)
            text = str(out)
        if text == "undefined":
            return True, None
        try:
            return True, json.loads(text)["bindings"]["decision"]
        except (ValueError, KeyError, TypeError):
            return False, text


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.asked = []
        self.delay_ms = 0
        self.status = 0


def handler(decider, state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self, status, doc):
            body = b"" if doc is None else json.dumps(doc).encode()
            self.send_response(status)
            if doc is not None:
                self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def body(self):
            n = int(self.headers.get("content-length") or 0)
            return self.rfile.read(n)

        def do_GET(self):
            if self.path == "/_asked":
                with state.lock:
                    return self.answer(200, list(state.asked))
            self.answer(404, {"code": "resource_not_found", "message": self.path})

        def do_POST(self):
            raw = self.body()
            if self.path == "/_control":
                control = json.loads(raw)
                with state.lock:
                    state.delay_ms = control.get("delay_ms", state.delay_ms)
                    state.status = control.get("status", state.status)
                return self.answer(200, {})
            with state.lock:
                state.asked.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": raw.decode("utf-8", "replace"),
                    }
                )
                delay, status = state.delay_ms, state.status
            if delay:
                time.sleep(delay / 1000)
            if status:
                return self.answer(status, None)
            if not self.path.startswith("/v1/data"):
                return self.answer(404, {"code": "resource_not_found", "message": self.path})
            try:
                doc = json.loads(raw)
                if not isinstance(doc, dict) or set(doc) - {"input"}:
                    raise ValueError("the body must be {\"input\": ...}")
            except ValueError as e:
                return self.answer(400, {"code": "invalid_parameter", "message": str(e)})
            path = self.path[len("/v1/data"):].split("?")[0].split("/")
            ok, value = decider.decide(path, doc.get("input"))
            if not ok:
                return self.answer(500, {"code": "internal_error", "message": value})
            self.answer(200, {} if value is None else {"result": value})

    return Handler


def main():
    args = argparse.ArgumentParser()
    args.add_argument("--policy", action="append", required=True)
    args.add_argument("--data")
    args.add_argument("--port", type=int, default=0)
    opts = args.parse_args()
    server = ThreadingHTTPServer(
        ("127.0.0.1", opts.port), handler(Decider(opts.policy, opts.data), State())
    )
    server.daemon_threads = True
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
