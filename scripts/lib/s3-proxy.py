#!/usr/bin/env python3
"""An HTTP proxy in front of an S3-compatible server, for the tests.

It forwards every request as it is, so that a test can cut the store off
(kill the proxy) and bring it back (start it again on the same port) while
the objects stay on the server behind it; with --drop-conditions it also
removes If-None-Match and If-Match from writes, to play a store gateway
that ignores conditional writes; with --lose-replies N it forwards the first
N conditional writes of an object named `latest` (or whose path contains
--lose-on SUBSTR) and then drops the connection instead of replying, as a
network that loses the reply after the store applied the write (each loss is
said on stderr); with --slow-down it
forwards nothing and answers every request 503 SlowDown, as a store under
strain, saying each on stderr ("s3-proxy: 503 METHOD PATH") before it
answers, so a test can count what was sent; with --hang it reads each
request and never answers (saying "s3-proxy: hung METHOD PATH"), as a store
that has stopped responding; with --delay MS it holds each request that long
before forwarding it, as a distant or overloaded store; with --fail-get
SUBSTR N it answers 500 to the first N GETs of the first object whose path
contains SUBSTR (saying "s3-proxy: 500 GET PATH"), as a store that keeps
failing one object.

Usage: s3-proxy.py --port PORT --upstream HOST:PORT [--drop-conditions]
                   [--lose-replies N [--lose-on SUBSTR]] [--slow-down | --hang]
                   [--delay MS]
                   [--fail-get SUBSTR N]
Prints "listening on PORT" once it accepts connections.
"""

import argparse
import http.client
import http.server
import sys
import threading


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--drop-conditions", action="store_true")
    parser.add_argument("--lose-replies", type=int, default=0)
    parser.add_argument("--lose-on")
    parser.add_argument("--slow-down", action="store_true")
    parser.add_argument("--hang", action="store_true")
    parser.add_argument("--delay", type=int, default=0)
    parser.add_argument("--fail-get", nargs=2, metavar=("SUBSTR", "N"))
    args = parser.parse_args()
    host, port = args.upstream.rsplit(":", 1)
    to_lose = [args.lose_replies]
    lock = threading.Lock()
    failing = {"path": None, "left": int(args.fail_get[1]) if args.fail_get else 0}

    def fail(command, path):
        """Whether to answer this GET 500 (counting it)."""
        if command != "GET" or not args.fail_get or args.fail_get[0] not in path:
            return False
        with lock:
            if failing["path"] is None:
                failing["path"] = path
            if failing["path"] != path or failing["left"] <= 0:
                return False
            failing["left"] -= 1
            return True

    def lose(command, path, headers):
        """Whether to lose the reply to this request (counting it)."""
        conditional = any(n.lower() in ("if-match", "if-none-match") for n in headers)
        key = path.split("?")[0]
        target = args.lose_on in key if args.lose_on else key.endswith("/latest")
        if command != "PUT" or not conditional or not target:
            return False
        with lock:
            if to_lose[0] <= 0:
                return False
            to_lose[0] -= 1
            return True

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if fail(self.command, self.path):
                print(f"s3-proxy: 500 GET {self.path}", file=sys.stderr, flush=True)
                reply = b"<Error><Code>InternalError</Code></Error>"
                self.send_response(500)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
                return
            if args.delay:
                threading.Event().wait(args.delay / 1000)
            if args.hang:
                print(f"s3-proxy: hung {self.command} {self.path}", file=sys.stderr, flush=True)
                threading.Event().wait()
            if args.slow_down:
                print(f"s3-proxy: 503 {self.command} {self.path}", file=sys.stderr, flush=True)
                reply = (
                    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
                    b"<Message>Please reduce your request rate.</Message></Error>"
                )
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply)
                return
            headers = {k: v for k, v in self.headers.items()}
            if args.drop_conditions and self.command == "PUT":
                for name in list(headers):
                    if name.lower() in ("if-none-match", "if-match"):
                        del headers[name]
            upstream = http.client.HTTPConnection(host, int(port), timeout=60)
            upstream.request(self.command, self.path, body=body, headers=headers)
            reply = upstream.getresponse()
            data = reply.read()
            if lose(self.command, self.path, headers):
                # The store applied it; the client never hears so.
                print(
                    f"s3-proxy: lost the reply to PUT {self.path} ({reply.status})",
                    file=sys.stderr,
                    flush=True,
                )
                upstream.close()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.send_response(reply.status)
            for name, value in reply.getheaders():
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            upstream.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

        def log_message(self, *_):
            pass

    http.server.ThreadingHTTPServer.daemon_threads = True
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
