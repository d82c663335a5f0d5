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

`path` matches as a prefix of the request's path (query string included).
"""

import argparse
import json
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from launcher import run_ephemeral

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

        def relay(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            fault = faults.take(self.command, self.path, body)
            action = fault and fault["action"]
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
