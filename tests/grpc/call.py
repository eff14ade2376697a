"""The gRPC client of the gateway's tests: grpcio's channel (Debian's python3-grpcio), making
the calls it is given and printing what it saw, for the test to assert on.

Usage: call.py TARGET [--ca CERT] CALLS_JSON
  TARGET      host:port of the gateway; cleartext (h2c) unless --ca is given
  --ca CERT   TLS to the gateway, trusting CERT, with `localhost` as the server name
  CALLS_JSON  a list of {"method": "/echo.Echo/Unary", "kind": "unary" | "server_stream" |
              "client_stream" | "bidi", "request": "text" or ["text", ...],
              "metadata": [["name", "value"], ...], "pause": seconds}
              (a streaming request waits `pause` seconds before each message after the first)

Prints one JSON list with, for each call: "code" (the status name, e.g. "OK",
"UNAUTHENTICATED"), "details", "responses" (the messages received, as text),
"initial_metadata" and "trailing_metadata" (pairs).
"""

import json
import sys
import time

import grpc

TIMEOUT = 10


def pairs(metadata):
    return [[k, v if isinstance(v, str) else v.hex()] for k, v in (metadata or ())]


def stream(call):
    pause = call.get("pause", 0)
    for i, message in enumerate(call["request"]):
        if i and pause:
            time.sleep(pause)
        yield message.encode()


def make(channel, call):
    method, kind = call["method"], call["kind"]
    metadata = [tuple(p) for p in call.get("metadata", [])]
    request = call.get("request", "")
    if kind == "unary":
        response, rpc = channel.unary_unary(method).with_call(
            request.encode(), metadata=metadata, timeout=TIMEOUT)
        return [response], rpc
    if kind == "client_stream":
        response, rpc = channel.stream_unary(method).with_call(
            stream(call), metadata=metadata, timeout=TIMEOUT)
        return [response], rpc
    if kind == "server_stream":
        rpc = channel.unary_stream(method)(request.encode(), metadata=metadata, timeout=TIMEOUT)
    elif kind == "bidi":
        rpc = channel.stream_stream(method)(stream(call), metadata=metadata, timeout=TIMEOUT)
    else:
        raise SystemExit(f"unknown kind {kind}")
    return list(rpc), rpc


def main():
    args = sys.argv[1:]
    target = args.pop(0)
    if args[0] == "--ca":
        with open(args[1], "rb") as f:
            ca = f.read()
        channel = grpc.secure_channel(
            target,
            grpc.ssl_channel_credentials(root_certificates=ca),
            options=(("grpc.ssl_target_name_override", "localhost"),),
        )
        args = args[2:]
    else:
        channel = grpc.insecure_channel(target)
    results = []
    for call in json.loads(args[0]):
        try:
            responses, rpc = make(channel, call)
            results.append({
                "code": rpc.code().name,
                "details": rpc.details() or "",
                "responses": [r.decode() for r in responses],
                "initial_metadata": pairs(rpc.initial_metadata()),
                "trailing_metadata": pairs(rpc.trailing_metadata()),
            })
        except grpc.RpcError as e:
            results.append({
                "code": e.code().name,
                "details": e.details() or "",
                "responses": [],
                "initial_metadata": pairs(e.initial_metadata()),
                "trailing_metadata": pairs(e.trailing_metadata()),
            })
    print(json.dumps(results))


if __name__ == "__main__":
    main()
