#!/usr/bin/env python3
"""A reverse proxy shaped like matrix-docker-ansible-deploy's default Traefik
in front of Synapse: it forwards only /_matrix and /_synapse/client (mdad's
matrix_synapse_container_labels_client_api_* and
matrix_synapse_container_labels_client_synapse_client_api_* routers; the
/_synapse/admin router, matrix_synapse_container_labels_client_synapse_admin_api_enabled,
is off by default) and answers anything else as Traefik does when no router
matches: 404, `text/plain`, body "404 page not found".

Two ways to run it:

  proxy.py --ephemeral --upstream URL
      On a free loopback port; one JSON line goes to stdout ({"url": ...}).
      It lives until stdin closes, so it dies with the test that started it.

  proxy.py --data-dir DIR --port PORT --upstream URL start|stop|status
      A persistent proxy for a Molecule scenario; `start` returns once it
      answers and prints the same JSON line.
"""

import functools
import http.client
import http.server
import json
import os
import threading
import time
import urllib.parse

import launcher
from launcher import free_port, wait_until_answering

FORWARDED_PREFIXES = ("/_matrix/", "/_synapse/client/")
# Traefik's answer when no router matches the request.
NOT_FOUND_BODY = b"404 page not found\n"
# Hop-by-hop headers (RFC 9110 section 7.6.1) stay with each connection.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}


def make_handler(upstream: urllib.parse.SplitResult):
    class Proxy(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args):
            pass

        def forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            path = urllib.parse.urlsplit(self.path).path
            if not path.startswith(FORWARDED_PREFIXES):
                self.answer(404, [("Content-Type", "text/plain; charset=utf-8")], NOT_FOUND_BODY)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
            headers["Host"] = upstream.netloc
            headers["X-Forwarded-For"] = self.client_address[0]
            connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                reply = connection.getresponse()
                payload = reply.read()
                kept = [(k, v) for k, v in reply.getheaders() if k.lower() not in HOP_BY_HOP | {"content-length"}]
                self.answer(reply.status, kept, payload)
            except OSError:
                # As Traefik does when the service behind a router is down.
                self.answer(502, [("Content-Type", "text/plain; charset=utf-8")], b"Bad Gateway")
            finally:
                connection.close()

        def answer(self, status, headers, payload):
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = forward

    return Proxy


def serve(port: int, upstream_url: str) -> http.server.ThreadingHTTPServer:
    upstream = urllib.parse.urlsplit(upstream_url)
    if upstream.scheme != "http" or not upstream.hostname or not upstream.port:
        raise SystemExit(f"--upstream must be http://HOST:PORT, not {upstream_url!r}")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), make_handler(upstream))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def describe(port: int) -> str:
    return json.dumps({"url": f"http://127.0.0.1:{port}"})


def start_ephemeral(args, _data_dir, cleanup) -> str:
    server = serve(free_port(), args.upstream)
    cleanup.callback(server.shutdown)
    return describe(server.server_address[1])


def run_ephemeral(args) -> None:
    launcher.run_ephemeral(functools.partial(start_ephemeral, args))


def run_persistent(args) -> None:
    data_dir = os.path.abspath(args.data_dir)
    if args.action == "serve":
        launcher.serve_until_terminated(lambda: serve(args.port, args.upstream))

    def start():
        return launcher.start_in_background(__file__, ["--upstream", args.upstream], data_dir, args.port)

    def ready(process):
        url = f"http://127.0.0.1:{args.port}"
        wait_until_answering(f"{url}/_matrix/client/versions", process, "proxy", f"{data_dir}/stderr.log",
                             time.monotonic() + 30)
        return describe(args.port)

    launcher.run_persistent(args.action, data_dir, os.path.join(data_dir, "proxy.pid"), start, ready)


def main() -> None:
    parser = launcher.command_line(__doc__, port=8080, in_process=True)
    parser.add_argument("--upstream", help="the homeserver's own URL, http://HOST:PORT (not needed by stop, status)")
    args = parser.parse_args()
    if not args.upstream and (args.ephemeral or args.action in ("start", "serve")):
        parser.error("--upstream is required")
    launcher.run(parser, args, run_ephemeral, run_persistent)


if __name__ == "__main__":
    main()
