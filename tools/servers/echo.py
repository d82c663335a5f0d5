#!/usr/bin/env python3
"""A misbehaving Synapse stand-in that echoes what it is sent, for the tests
that prove no secret leaks from the module's output in any encoding.

  echo.py --ephemeral
      Listens on a free loopback port. When ready, one JSON line goes to
      stdout (url, server_name, data_dir); it lives until stdin closes.

It answers just enough of Synapse's API for a run with `admin_token`: `whoami`
names an admin, every managed user is missing, and the creation of user
`@<mode>:echo.test` (the PUT that carries its password, after an empty PUT
that creates it) fails with an error that quotes the request (its JSON
body and its Authorization header) in the encoding `<mode>` names:

  double-escaped   the body as JSON inside a JSON string inside the `error`
                   field: `\\\"password\\\": \\\"...\\\"` once the answer is parsed
  u-escaped        every character of the body as a `\\uXXXX` escape in `error`
  percent-encoded  the body form-encoded (`%XX`, `+` for a space) in `error`
  html             a long HTML page (no JSON) with the password at character 150
  plain            the raw body as text/plain

The creation of a registration token (`POST /_synapse/admin/v1/registration_tokens/new`)
fails the same way, in the mode its token starts with (`html.` and anything), after a list
of no tokens.

A token that starts with `overflow` gets a 429 on `whoami` asking to wait one
second, then, on the retry, 2^64-1 seconds (Retry-After): more than the
module's clock arithmetic can add, which once made it panic.
"""

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import launcher
from launcher import free_port, run_ephemeral

SERVER_NAME = "echo.test"
ADMIN = f"@admin:{SERVER_NAME}"
REGISTRATION_TOKENS = "/_synapse/admin/v1/registration_tokens"
# The `overflow` tokens already asked to wait once.
RATE_LIMITED = set()
# The user paths an empty PUT has created.
CREATED = set()


def quoted(mode: str, body: str, authorization: str) -> tuple:
    """(status, content type, answer) of a failed creation in `mode`."""
    request = f"{authorization}\n{body}"
    if mode == "double-escaped":
        error = json.dumps({"request": json.dumps(json.loads(body)), "authorization": authorization})
        return 400, "application/json", json.dumps({"errcode": "M_UNKNOWN", "error": f"bad request {error}"})
    if mode == "u-escaped":
        units = request.encode("utf-16-be")
        escaped = "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))
        # The escapes stay escapes once the answer is parsed: `\\u` in the JSON text.
        return 400, "application/json", '{"errcode": "M_UNKNOWN", "error": "bad request ' + escaped.replace("\\", "\\\\") + '"}'
    if mode == "percent-encoded":
        encoded = urllib.parse.urlencode({"request": request})
        return 400, "application/json", json.dumps({"errcode": "M_UNKNOWN", "error": f"bad request {encoded}"})
    if mode == "html":
        fields = json.loads(body)
        password = fields.get("password") or fields["token"]
        page = "<html><head><title>400 Bad Request</title></head><body><p>"
        page += "x" * (150 - len(page)) + password + "</p>" + "<p>padding</p>" * 100 + "</body></html>"
        return 400, "text/html", page
    return 400, "text/plain", request


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def answer(self, status: int, content_type: str, text: str, headers: dict = {}) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        authorization = self.headers.get("Authorization", "")
        path = urllib.parse.unquote(self.path)
        if path.startswith("/_matrix/client/v3/account/whoami"):
            if authorization.startswith("Bearer overflow"):
                wait = 2**64 - 1 if authorization in RATE_LIMITED else 1
                RATE_LIMITED.add(authorization)
                return self.answer(429, "application/json", json.dumps({"errcode": "M_LIMIT_EXCEEDED"}), {"Retry-After": str(wait)})
            return self.answer(200, "application/json", json.dumps({"user_id": ADMIN}))
        if path == f"/_synapse/admin/v2/users/{ADMIN}":
            return self.answer(200, "application/json", json.dumps({"name": ADMIN, "admin": True, "deactivated": False}))
        if path == REGISTRATION_TOKENS:
            return self.answer(200, "application/json", json.dumps({"registration_tokens": []}))
        if path.startswith("/_synapse/admin/v2/users/@"):
            return self.answer(404, "application/json", json.dumps({"errcode": "M_NOT_FOUND", "error": "User not found"}))
        self.answer(404, "application/json", json.dumps({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}))

    def do_PUT(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        if self.path == f"{REGISTRATION_TOKENS}/new":
            mode = json.loads(body)["token"].split(".")[0]
            return self.answer(*quoted(mode, body, self.headers.get("Authorization", "")))
        if self.command == "PUT" and "password" not in json.loads(body or "{}"):
            # The module's first, empty PUT creates the account (201), and a
            # later one without a password (deactivating it) succeeds; the PUT
            # that carries the password is the one echoed.
            status = 200 if self.path in CREATED else 201
            CREATED.add(self.path)
            return self.answer(status, "application/json", json.dumps({"name": "created"}))
        user = urllib.parse.unquote(self.path).rsplit("/", 1)[-1]
        mode = user.removeprefix("@").split(":")[0]
        self.answer(*quoted(mode, body, self.headers.get("Authorization", "")))

    do_POST = do_PUT


def start_ephemeral(data_dir: str, cleanup) -> str:
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cleanup.callback(server.shutdown)
    return json.dumps({"url": f"http://127.0.0.1:{port}", "server_name": SERVER_NAME, "data_dir": data_dir})


def main() -> None:
    launcher.command_line(__doc__).parse_args()
    run_ephemeral(start_ephemeral, "matrix-user-echo-")


if __name__ == "__main__":
    main()
