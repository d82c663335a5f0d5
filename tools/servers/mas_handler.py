"""The HTTP side of the MAS contract server (mas.py): routes each request to
the fake MAS (mas_api.py), checks admin API requests and responses against
the contract (mas_contract.py) and writes the request log."""

import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mas_api import (
    OPERATIONS,
    SERVER_NAME,
    ApiError,
    State,
    authenticate_admin,
    compat_login,
    compat_login_flows,
    compat_logout,
    errors,
    homeserver_profile,
    now,
    oauth_token,
    rfc3339,
)
from mas_contract import SPEC_FILE, Contract
import mas_registration_tokens

# Registration tokens live in their own file; their siteConfig adds the registration flags.
OPERATIONS = {**OPERATIONS, **mas_registration_tokens.OPERATIONS}

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mas-contract/1"
    state: State = None
    contract: Contract = None

    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def log_message(self, *args):
        pass  # the request log replaces http.server's access log

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size + 2)[:size]
                if not size:
                    return data
                data += chunk
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def dispatch(self):
        raw = self.read_body()
        url = urllib.parse.urlsplit(self.path)
        entry = {"time": rfc3339(now()), "method": self.command, "path": url.path, "query": url.query,
                 "operation": None, "status": None, "request_valid": None, "request_violations": [],
                 "response_valid": None, "response_violations": [], "note": None}
        with self.state.lock:
            try:
                status, body, ctype, headers = self.route(url, raw, entry)
            except ApiError as e:
                status, body, ctype, headers = e.status, e.body, e.content_type, e.headers
            except Exception as e:  # a bug here must not look like a MAS answer
                print(f"MAS CONTRACT SERVER CRASH on {self.command} {url.path}: {e!r}", file=sys.stderr, flush=True)
                status, body, ctype, headers = 500, errors("Contract server crashed"), "application/json", {}
                entry["note"] = f"contract server crashed: {type(e).__name__}"
            entry["status"] = status
            template = entry.pop("_template", None)
            if template and ctype == "application/json":
                self.check_response(entry, template, status, body)
            elif template:
                entry["note"] = "plain-text rejection, as axum's Json extractor sends; not in the spec"
            self.state.log(entry)
        payload = b"" if body is None else (json.dumps(body) if ctype == "application/json" else body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", ctype + ("; charset=utf-8" if ctype == "text/plain" else ""))
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def check_response(self, entry, template, status, body):
        valid, found, note = self.contract.check_response(template, self.command.lower(), status, body)
        entry.update(response_valid=valid, response_violations=found)
        if note:
            entry["note"] = note
        if valid is False:
            print(f"MAS CONTRACT SERVER BUG: {self.command} {entry['path']} -> {status} does not match the spec: "
                  f"{found}", file=sys.stderr, flush=True)

    def route(self, url, raw, entry):
        if url.path == "/oauth2/token" and self.command == "POST":
            entry["operation"] = "oauth2Token"
            token = oauth_token(self.state, self.headers.get("Authorization"), self.headers.get("Content-Type"), raw)
            return 200, token, "application/json", {"Cache-Control": "no-store", "Pragma": "no-cache"}
        if url.path == "/_matrix/client/v3/login" and self.command in ("GET", "POST"):
            entry["operation"] = "compatLogin"
            if self.command == "GET":
                return 200, compat_login_flows(self.state), "application/json", {}
            return 200, compat_login(self.state, raw, self.client_address[0]), "application/json", {}
        if url.path == "/_matrix/client/v3/logout" and self.command == "POST":
            entry["operation"] = "compatLogout"
            return 200, compat_logout(self.state, self.headers.get("Authorization")), "application/json", {}
        if url.path.startswith("/_matrix/client/v3/profile/") and self.command == "GET":
            entry["operation"] = "homeserverProfile"
            user_id = urllib.parse.unquote(url.path[len("/_matrix/client/v3/profile/"):])
            return 200, homeserver_profile(self.state, user_id), "application/json", {}
        if url.path == mas_registration_tokens.WEB_REGISTRATION_PATH and self.command == "POST":
            entry["operation"] = "contractRegisterWithToken"
            return 200, mas_registration_tokens.register_with_token(self.state, raw), "application/json", {}
        found = self.contract.match(self.command, url.path)
        if found is None or (self.state.args.no_admin_api and url.path.startswith("/api/admin/")):
            # MAS without the `adminapi` resource in its listener (mdad's default) has no such route.
            entry["note"] = "no such route"
            raise ApiError(404, None)
        if found[0] == "405":
            entry["note"] = "method not allowed"
            raise ApiError(405, None, headers={"Allow": ", ".join(found[1])})
        template, operation, path_params = found
        entry["operation"] = operation["operationId"]
        if entry["operation"] not in OPERATIONS:
            entry["note"] = "not implemented by the contract server"
            raise ApiError(501, errors("Not implemented by the MAS contract server"))
        entry["_template"] = template
        authenticate_admin(self.state, self.headers.get("Authorization"))
        method = self.command.lower()
        query = {}
        for k, v in urllib.parse.parse_qsl(url.query, keep_blank_values=True):
            query.setdefault(k, []).append(v)
        entry["request_valid"] = True

        def reject(found, error):
            entry["request_valid"] = False
            entry["request_violations"] = found
            raise error

        # Checked in the order of MAS's extractors: path, pagination, filters, body.
        found = self.contract.check_params(template, method, operation, "path",
                                           {k: [v] for k, v in path_params.items()})
        if found:
            reject(found, ApiError(400, errors("Invalid ULID in path", *found)))
        found = self.contract.check_params(template, method, operation, "query", query)
        for group, title in (("page[", "Invalid pagination parameters"), ("count", "Invalid pagination parameters"),
                             ("filter[", "Invalid filter parameters")):
            mine = [f for f in found if f.startswith(f"query parameter {group}")]
            if mine:
                reject(found, ApiError(400, errors(title, *mine)))
        if found:
            reject(found, ApiError(400, errors("Invalid filter parameters", *found)))
        body = None
        if "requestBody" in operation:
            ctype = self.headers.get("Content-Type")
            if ctype is not None or operation["requestBody"].get("required"):
                body = self.json_body(template, method, raw, ctype, reject)
        return (*OPERATIONS[entry["operation"]](self.state, path_params, query, body or {}), "application/json", {})

    def json_body(self, template, method, raw, ctype, reject):
        # axum's Json extractor: 415 without a JSON content type, 400 on bad syntax, 422 on bad shape.
        mime = (ctype or "").split(";")[0].strip().lower()
        if not (mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))):
            reject(["body: Content-Type is not application/json"],
                   ApiError(415, "Expected request with `Content-Type: application/json`", "text/plain"))
        try:
            value = json.loads(raw)
        except ValueError as e:
            why = getattr(e, "msg", None) or "not UTF-8"
            reject([f"body: not JSON ({why})"],
                   ApiError(400, f"Failed to parse the request body as JSON: {why}", "text/plain"))
        found = self.contract.check_body(template, method, value)
        if found:
            reject(found, ApiError(422, "Failed to deserialize the JSON body into the target type: "
                                   f"contract violation: {'; '.join(found)}", "text/plain"))
        return value


def start_server(args, data_dir: str, port: int):
    """Serves in a background thread; returns the server and its JSON line."""
    Handler.state, Handler.contract = State(args, data_dir), Contract(SPEC_FILE)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    line = json.dumps({"url": f"http://127.0.0.1:{server.server_address[1]}", "server_name": SERVER_NAME,
                       "client_id": Handler.state.client_id, "client_secret": Handler.state.client_secret,
                       "client_auth_method": args.client_auth_method, "data_dir": data_dir,
                       "request_log": Handler.state.log_path})
    return server, line
