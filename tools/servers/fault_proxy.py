"""A reverse proxy on loopback that forwards everything to a real homeserver
and misbehaves once, on the request a test names, so that the tests can
force the failures a real network or a real race produces: an answer lost
after the server acted, a request that fails, another client acting between
the module's read and its write.

    fault_proxy.py --upstream URL --faults JSON

prints one JSON line, {"url": ...}, and serves until its stdin closes (the
test process exits). JSON is a list of faults, each applied once, to the
first request that matches it:

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
"""

import argparse
import json
import sys
import threading
import urllib.error
import urllib.request
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from launcher import run_ephemeral

CONTROL = "/_fault_proxy/"
HOLD_TIMEOUT = 60
HOP_BY_HOP = {"connection", "transfer-encoding", "keep-alive", "content-length", "host"}


def upstream_request(upstream, method, path, headers, body):
    """(status, headers, body) of one request to the real server."""
    request = urllib.request.Request(upstream + path, data=body, method=method)
    for name, value in headers.items():
        if name.lower() not in HOP_BY_HOP:
            request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


class Faults:
    def __init__(self, faults):
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


def handler(upstream, faults):
    class Proxy(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def control(self):
            verb, _, name = self.path[len(CONTROL):].partition("/")
            if (self.command, verb) == ("GET", "held"):
                if faults.held[name].wait(HOLD_TIMEOUT):
                    return self.answer(200, {}, b"{}")
                return self.answer(504, {}, f'{{"error":"{name} was never held"}}'.encode())
            if (self.command, verb) == ("POST", "release"):
                faults.released[name].set()
                return self.answer(200, {}, b"{}")
            if (self.command, verb) == ("GET", "requests"):
                with faults.lock:
                    seen = list(faults.seen)
                return self.answer(200, {}, json.dumps({"requests": seen}).encode())
            self.answer(404, {}, b'{"error":"fault_proxy: no such control"}')

        def relay(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if self.path.startswith(CONTROL):
                return self.control()
            faults.record(self.command, self.path)
            fault = faults.take(self.command, self.path, body)
            action = fault and fault["action"]
            if action == "hold":
                faults.held[fault["name"]].set()
                if not faults.released[fault["name"]].wait(HOLD_TIMEOUT):
                    print(f"fault_proxy: {fault['name']} was never released", file=sys.stderr)
            if action == "answer_429":
                return self.answer(429, {"Content-Type": "application/json"}, json.dumps(
                    {"errcode": "M_LIMIT_EXCEEDED", "error": "fault_proxy: too many requests",
                     "retry_after_ms": fault["retry_after_ms"]}).encode())
            if action == "fail_500":
                return self.answer(500, {}, b'{"errcode":"M_UNKNOWN","error":"fault_proxy: injected failure"}')
            if action == "before":
                extra = fault["request"]
                headers = {"Content-Type": "application/json"}
                if extra.get("token"):
                    headers["Authorization"] = "Bearer " + extra["token"]
                status, _, answer = upstream_request(
                    upstream, extra["method"], extra["path"], headers,
                    json.dumps(extra.get("body", {})).encode(),
                )
                if status >= 300:
                    print(f"fault_proxy: the request before {self.path} got {status}: {answer!r}",
                          file=sys.stderr)
            status, headers, answer = upstream_request(
                upstream, self.command, self.path, dict(self.headers), body
            )
            if action == "forward_then_502":
                return self.answer(502, {"Content-Type": "text/html"}, b"<html>502 Bad Gateway</html>")
            self.answer(status, headers, answer)

        def answer(self, status, headers, body):
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() not in HOP_BY_HOP and name.lower() not in {"server", "date"}:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = relay

    return Proxy


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="the real server's URL")
    parser.add_argument("--faults", required=True, help="a JSON list of faults (see above)")
    args = parser.parse_args()
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), handler(args.upstream.rstrip("/"), Faults(json.loads(args.faults)))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # Serve until the test process (holding our stdin) exits.
    run_ephemeral(lambda _data_dir, _cleanup: json.dumps({"url": f"http://127.0.0.1:{server.server_address[1]}"}))
    server.shutdown()


if __name__ == "__main__":
    main()
