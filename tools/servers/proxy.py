#!/usr/bin/env python3
"""A reverse proxy that routes as matrix-docker-ansible-deploy's (mdad's)
default Traefik does on the matrix FQN: one router per label mdad puts on
its containers, the longest rule first (Traefik's default priority is the
length of the rule). Read from mdad's source (commit c0681e4b, in
tools/mdad-names.txt): roles/custom/matrix-synapse/defaults/main.yml, the
matrix_synapse_container_labels_public_client_{root,api,synapse_client_api,
synapse_admin_api}_* routers of templates/labels.j2; and, for Matrix
Authentication Service, group_vars/matrix_servers (hostname the matrix FQN,
path prefix /auth) with roles/custom/matrix-authentication-service
(matrix_authentication_service_container_labels_public_main_* and
_public_compatibility_layer_*). A request no router matches gets what
Traefik answers then: 404, `text/plain`, body "404 page not found".

  Synapse   Path(`/`), PathPrefix(`/_matrix`), PathPrefix(`/_synapse/client`);
            PathPrefix(`/_synapse/admin`) only with --synapse-admin-api
            (matrix_synapse_container_labels_public_client_synapse_admin_api_enabled,
            false unless Ketesa or Element Admin is enabled)
  MAS       with --mas-upstream: PathPrefix(`/auth`), and the compatibility
            layer PathRegexp(`^/_matrix/client/(?P<version>([^/]+))/(?P<endpoint>(login|logout|refresh))`)

Traefik passes /auth/... on unchanged and MAS's listener (`prefix: /auth` in
mdad's config.yaml.j2) serves under it; the MAS contract server has no
prefix, so the proxy takes it off, which is what MAS sees behind its listener.

Two ways to run it:

  proxy.py --ephemeral --upstream URL [--mas-upstream URL] [--synapse-admin-api]
      On a free loopback port; one JSON line goes to stdout ({"url": ...}).
      It lives until stdin closes, so it dies with the test that started it.

  proxy.py --data-dir DIR --port PORT --upstream URL [...] start|stop|status
      A persistent proxy for a Molecule scenario; `start` returns once it
      answers and prints the same JSON line.
"""

import functools
import http.client
import http.server
import json
import os
import re
import threading
import time
import urllib.parse

import launcher
from launcher import free_port, wait_until_answering

MAS_PREFIX = "/auth"
MAS_COMPATIBILITY_LAYER = re.compile(r"^/_matrix/client/(?P<version>([^/]+))/(?P<endpoint>(login|logout|refresh))")


def routers(synapse_admin_api: bool, mas: bool) -> list:
    """(rule, matches(path), service, path prefix to take off), by Traefik's priority."""
    found = [
        ("Path(`/`)", lambda p: p == "/", "synapse", ""),
        ("PathPrefix(`/_matrix`)", lambda p: p.startswith("/_matrix"), "synapse", ""),
        ("PathPrefix(`/_synapse/client`)", lambda p: p.startswith("/_synapse/client"), "synapse", ""),
    ]
    if synapse_admin_api:
        found.append(("PathPrefix(`/_synapse/admin`)", lambda p: p.startswith("/_synapse/admin"), "synapse", ""))
    if mas:
        found.append((f"PathPrefix(`{MAS_PREFIX}`)",
                      lambda p: p == MAS_PREFIX or p.startswith(MAS_PREFIX + "/"), "mas", MAS_PREFIX))
        found.append((f"PathRegexp(`{MAS_COMPATIBILITY_LAYER.pattern}`)",
                      lambda p: MAS_COMPATIBILITY_LAYER.match(p) is not None, "mas", ""))
    return sorted(found, key=lambda router: len(router[0]), reverse=True)


# Traefik's answer when no router matches the request.
NOT_FOUND_BODY = b"404 page not found\n"
# Hop-by-hop headers (RFC 9110 section 7.6.1) stay with each connection.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}


def make_handler(upstreams: dict, table: list):
    class Proxy(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args):
            pass

        def forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            path = urllib.parse.urlsplit(self.path).path
            router = next((r for r in table if r[1](path)), None)
            if router is None:
                self.answer(404, [("Content-Type", "text/plain; charset=utf-8")], NOT_FOUND_BODY)
                return
            upstream, strip = upstreams[router[2]], router[3]
            target = self.path[len(strip):] or "/"
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
            headers["Host"] = upstream.netloc
            headers["X-Forwarded-For"] = self.client_address[0]
            connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
            try:
                connection.request(self.command, target, body=body, headers=headers)
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


def serve(port: int, args) -> http.server.ThreadingHTTPServer:
    upstreams = {"synapse": args.upstream, "mas": args.mas_upstream}
    for name, url in list(upstreams.items()):
        if url is None:
            del upstreams[name]
            continue
        upstreams[name] = urllib.parse.urlsplit(url)
        if upstreams[name].scheme != "http" or not upstreams[name].hostname or not upstreams[name].port:
            raise SystemExit(f"--upstream and --mas-upstream must be http://HOST:PORT, not {url!r}")
    table = routers(args.synapse_admin_api, "mas" in upstreams)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), make_handler(upstreams, table))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def describe(port: int) -> str:
    return json.dumps({"url": f"http://127.0.0.1:{port}"})


def start_ephemeral(args, _data_dir, cleanup) -> str:
    server = serve(free_port(), args)
    cleanup.callback(server.shutdown)
    return describe(server.server_address[1])


def run_ephemeral(args) -> None:
    launcher.run_ephemeral(functools.partial(start_ephemeral, args))


def run_persistent(args) -> None:
    data_dir = os.path.abspath(args.data_dir)
    if args.action == "serve":
        launcher.serve_until_terminated(lambda: serve(args.port, args))

    def start():
        options = ["--upstream", args.upstream] + ["--synapse-admin-api"] * args.synapse_admin_api
        options += ["--mas-upstream", args.mas_upstream] if args.mas_upstream else []
        return launcher.start_in_background(__file__, options, data_dir, args.port)

    def ready(process):
        url = f"http://127.0.0.1:{args.port}"
        wait_until_answering(f"{url}/_matrix/client/versions", process, "proxy", f"{data_dir}/stderr.log",
                             time.monotonic() + 30)
        return describe(args.port)

    launcher.run_persistent(args.action, data_dir, os.path.join(data_dir, "proxy.pid"), start, ready)


def main() -> None:
    parser = launcher.command_line(__doc__, port=8080, in_process=True)
    parser.add_argument("--upstream", help="the homeserver's own URL, http://HOST:PORT (not needed by stop, status)")
    parser.add_argument("--mas-upstream", help="Matrix Authentication Service's own URL, http://HOST:PORT: "
                                              "adds mdad's MAS routers")
    parser.add_argument("--synapse-admin-api", action="store_true",
                        help="as matrix_synapse_container_labels_public_client_synapse_admin_api_enabled: true")
    args = parser.parse_args()
    if not args.upstream and (args.ephemeral or args.action in ("start", "serve")):
        parser.error("--upstream is required")
    launcher.run(parser, args, run_ephemeral, run_persistent)


if __name__ == "__main__":
    main()
