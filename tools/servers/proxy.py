#!/usr/bin/env python3
"""A reverse proxy on loopback for the tests and the Molecule scenarios, with
two jobs that share one forwarding: routing as matrix-docker-ansible-deploy's
(mdad's) default Traefik does, and misbehaving on purpose for the tests.

Routing. By default it routes as mdad's Traefik does on the matrix FQN: one
router per label mdad puts on its containers, the longest rule first
(Traefik's default priority is the length of the rule). Read from mdad's
source (commit c0681e4b, in tools/mdad-names.txt):
roles/custom/matrix-synapse/defaults/main.yml, the
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

--forward-all replaces those routers with one that sends every path to
--upstream: a plain proxy in front of a real server.

Faults. --faults JSON makes it misbehave once, on the request a test names,
so that the tests can force the failures a real network or a real race
produces: an answer lost after the server acted, a request that fails,
another client acting between the module's read and its write. JSON is a
list of faults, each applied once, to the first request that matches it:

    {"method": "POST", "path": "/_synapse/admin/v1/register",
     "body_has": {"username": "alice"},            # optional
     "action": "forward_then_502"}                 # the server acts, the answer is lost
    {"action": "fail_500", ...}                    # not forwarded: the server never sees it
    {"action": "before", "request": {"method": "PUT", "path": "...",
     "token": "...", "body": {...}}, ...}          # another client acts first, then forward
    {"action": "hold", "name": "first", ...}       # wait until the test releases it, then forward
    {"action": "answer_429", "retry_after_ms": 1500, ...}  # rate-limited, not forwarded

`path` matches as a prefix of the request's path (query string included).

A held request waits until the test releases it, so that two clients can be
made to stand provably at the same point (both read, neither written yet).
The test steers held requests through the proxy itself:

    GET  /_fault_proxy/held/NAME       answers 200 once the request NAME is held
                                       (504 after 60 s)
    POST /_fault_proxy/release/NAME    lets NAME go on to the server

and may ask which requests the proxy has relayed, so that a test can count
what the module asked the server:

    GET  /_fault_proxy/requests        {"requests": ["GET /_synapse/admin/v2/users?from=0...", ...]}

Two ways to run it:

  proxy.py --ephemeral --upstream URL [--mas-upstream URL] [--synapse-admin-api]
           [--forward-all] [--faults JSON]
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
import sys
import threading
import time
import urllib.parse
from collections import defaultdict

import launcher
from launcher import free_port, wait_until_answering

MAS_PREFIX = "/auth"
MAS_COMPATIBILITY_LAYER = re.compile(r"^/_matrix/client/(?P<version>([^/]+))/(?P<endpoint>(login|logout|refresh))")
CONTROL = "/_fault_proxy/"
HOLD_TIMEOUT = 60


def routers(synapse_admin_api: bool, mas: bool, forward_all: bool) -> list:
    """(rule, matches(path), service, path prefix to take off), by Traefik's priority."""
    if forward_all:
        return [("PathPrefix(`/`)", lambda p: True, "synapse", "")]
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
JSON = [("Content-Type", "application/json")]


def forward(upstream, method: str, target: str, headers: dict, body, client: str):
    """(status, headers, payload) of one request sent on to `upstream`, or a
    502 as Traefik answers when the service behind a router is down."""
    headers = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
    headers["Host"] = upstream.netloc
    headers["X-Forwarded-For"] = client
    connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
    try:
        connection.request(method, target, body=body, headers=headers)
        reply = connection.getresponse()
        payload = reply.read()
        kept = [(k, v) for k, v in reply.getheaders() if k.lower() not in HOP_BY_HOP | {"content-length"}]
        return reply.status, kept, payload
    except OSError:
        return 502, [("Content-Type", "text/plain; charset=utf-8")], b"Bad Gateway"
    finally:
        connection.close()


class Faults:
    """The faults still to apply, the holds, and every request relayed."""

    def __init__(self, faults: list):
        self.pending = list(faults)
        self.lock = threading.Lock()
        # Per hold name: set when the request arrives, and when the test releases it.
        self.held = defaultdict(threading.Event)
        self.released = defaultdict(threading.Event)
        # "METHOD path" of every request relayed, in arrival order.
        self.seen = []

    def record(self, method, path):
        with self.lock:
            self.seen.append(f"{method} {path}")

    def take(self, method, path, body):
        """The first pending fault this request matches, removed from the list."""
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        with self.lock:
            for fault in self.pending:
                if fault["method"] != method or not path.startswith(fault["path"]):
                    continue
                wanted = fault.get("body_has", {})
                if wanted and not (
                    isinstance(parsed, dict)
                    and all(parsed.get(k) == v for k, v in wanted.items())
                ):
                    continue
                self.pending.remove(fault)
                return fault
        return None

    def control(self, method: str, path: str):
        """(status, headers, payload) of a request to /_fault_proxy/."""
        verb, _, name = path[len(CONTROL):].partition("/")
        if (method, verb) == ("GET", "held"):
            if self.held[name].wait(HOLD_TIMEOUT):
                return 200, JSON, b"{}"
            return 504, JSON, f'{{"error":"{name} was never held"}}'.encode()
        if (method, verb) == ("POST", "release"):
            self.released[name].set()
            return 200, JSON, b"{}"
        if (method, verb) == ("GET", "requests"):
            with self.lock:
                seen = list(self.seen)
            return 200, JSON, json.dumps({"requests": seen}).encode()
        return 404, JSON, b'{"error":"fault_proxy: no such control"}'


def make_handler(upstreams: dict, table: list, faults: Faults):
    class Proxy(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args):
            pass

        def relay(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if self.path.startswith(CONTROL):
                return self.answer(*faults.control(self.command, self.path))
            path = urllib.parse.urlsplit(self.path).path
            router = next((r for r in table if r[1](path)), None)
            if router is None:
                return self.answer(404, [("Content-Type", "text/plain; charset=utf-8")], NOT_FOUND_BODY)
            faults.record(self.command, self.path)
            fault = faults.take(self.command, self.path, body)
            action = fault and fault["action"]
            if action == "hold":
                faults.held[fault["name"]].set()
                if not faults.released[fault["name"]].wait(HOLD_TIMEOUT):
                    print(f"proxy: {fault['name']} was never released", file=sys.stderr)
            if action == "answer_429":
                return self.answer(429, JSON, json.dumps(
                    {"errcode": "M_LIMIT_EXCEEDED", "error": "fault_proxy: too many requests",
                     "retry_after_ms": fault["retry_after_ms"]}).encode())
            if action == "fail_500":
                return self.answer(500, JSON, b'{"errcode":"M_UNKNOWN","error":"fault_proxy: injected failure"}')
            upstream, strip = upstreams[router[2]], router[3]
            if action == "before":
                self.another_client_first(upstream, fault["request"])
            reply = forward(upstream, self.command, self.path[len(strip):] or "/", dict(self.headers), body,
                            self.client_address[0])
            if action == "forward_then_502":
                return self.answer(502, [("Content-Type", "text/html")], b"<html>502 Bad Gateway</html>")
            self.answer(*reply)

        def another_client_first(self, upstream, extra: dict):
            headers = {"Content-Type": "application/json"}
            if extra.get("token"):
                headers["Authorization"] = "Bearer " + extra["token"]
            status, _, answer = forward(upstream, extra["method"], extra["path"], headers,
                                        json.dumps(extra.get("body", {})).encode(), self.client_address[0])
            if status >= 300:
                print(f"proxy: the request before {self.path} got {status}: {answer!r}", file=sys.stderr)

        def answer(self, status, headers, payload):
            self.send_response(status)
            for key, value in headers:
                # The proxy's own Server and Date stand, once each.
                if key.lower() not in {"server", "date"}:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = relay

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
    table = routers(args.synapse_admin_api, "mas" in upstreams, args.forward_all)
    handler = make_handler(upstreams, table, Faults(json.loads(args.faults)))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
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
        options += ["--forward-all"] * args.forward_all + ["--faults", args.faults]
        return launcher.start_in_background(__file__, options, data_dir, args.port)

    def ready(process):
        url = f"http://127.0.0.1:{args.port}"
        wait_until_answering(f"{url}/_matrix/client/versions", process, "proxy", f"{data_dir}/stderr.log",
                             time.monotonic() + 30)
        return describe(args.port)

    launcher.run_persistent(args.action, data_dir, os.path.join(data_dir, "proxy.pid"), args.port, start, ready)


def main() -> None:
    parser = launcher.command_line(__doc__, port=8080, in_process=True)
    parser.add_argument("--upstream", help="the homeserver's own URL, http://HOST:PORT (not needed by stop, status)")
    parser.add_argument("--mas-upstream", help="Matrix Authentication Service's own URL, http://HOST:PORT: "
                                              "adds mdad's MAS routers")
    parser.add_argument("--synapse-admin-api", action="store_true",
                        help="as matrix_synapse_container_labels_public_client_synapse_admin_api_enabled: true")
    parser.add_argument("--forward-all", action="store_true",
                        help="send every path to --upstream instead of routing as mdad's Traefik does")
    parser.add_argument("--faults", default="[]", help="a JSON list of faults to apply (see above)")
    args = parser.parse_args()
    if not args.upstream and (args.ephemeral or args.action in ("start", "serve")):
        parser.error("--upstream is required")
    launcher.run(parser, args, run_ephemeral, run_persistent)


if __name__ == "__main__":
    main()
