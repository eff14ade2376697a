"""The gRPC origin of the gateway's tests: grpcio's own server (Debian's python3-grpcio, the
C-core library most gRPC users run), on an ephemeral loopback port.

Service `echo.Echo` carries raw bytes: the handlers are generic and their (de)serializers the
identity, so no protobuf code is generated. Its methods:

- `Unary`: answers a JSON document with the request (as text) and the metadata the server
  received (every pair, in order); sends initial metadata `echo-initial: yes` and trailing
  metadata `echo-trailer: kept`.
- `Fail`: ends with NOT_FOUND, details `no such thing` and trailing `echo-reason: missing`.
- `Count`: the request is a number n; answers n messages `0` .. `n-1` (server streaming).
- `Join`: answers the messages it received joined by `,` (client streaming).
- `Shout`: answers each message upper-cased as it comes (bidirectional streaming).

The same methods are also served as `orders.v1.Orders`, with `Cancel` as another `Unary`: the
service `conf/grpc.yaml` routes.

Usage: echo_server.py [--tls CERT KEY]. Prints `{"port": N}` once listening, and exits when
its stdin closes (the test holds it open).
"""

import json
import sys
from concurrent import futures

import grpc


def unary(request, context):
    context.send_initial_metadata((("echo-initial", "yes"),))
    context.set_trailing_metadata((("echo-trailer", "kept"),))
    seen = [[k, v if isinstance(v, str) else v.hex()] for k, v in context.invocation_metadata()]
    return json.dumps({"request": request.decode(), "metadata": seen}).encode()


def fail(request, context):
    context.set_trailing_metadata((("echo-reason", "missing"),))
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


def count(request, context):
    for i in range(int(request.decode())):
        yield str(i).encode()


def join(requests, context):
    return b",".join(requests)


def shout(requests, context):
    for message in requests:
        yield message.upper()


def main():
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Count": grpc.unary_stream_rpc_method_handler(count),
        "Join": grpc.stream_unary_rpc_method_handler(join),
        "Shout": grpc.stream_stream_rpc_method_handler(shout),
    }
    orders = dict(handlers, Cancel=grpc.unary_unary_rpc_method_handler(unary))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler("echo.Echo", handlers),
        grpc.method_handlers_generic_handler("orders.v1.Orders", orders),
    ))
    if len(sys.argv) == 4 and sys.argv[1] == "--tls":
        with open(sys.argv[2], "rb") as f:
            cert = f.read()
        with open(sys.argv[3], "rb") as f:
            key = f.read()
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(((key, cert),)))
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(json.dumps({"port": port}), flush=True)
    sys.stdin.read()
    server.stop(0)


if __name__ == "__main__":
    main()
