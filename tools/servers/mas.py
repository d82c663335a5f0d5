#!/usr/bin/env python3
"""A small contract server for the Matrix Authentication Service (MAS) admin API.

MAS cannot be installed here, so the module's MAS backend is tested against
this server. It implements only what the module uses, checks every admin API
request against the published OpenAPI file (tests/contract/, MAS v1.22.0) and
every response it sends back against the same file. Behaviour follows MAS's
handlers; where it cannot, tests/contract/README.md says how it differs.
This file is the command line; mas_contract.py holds the contract checks,
mas_api.py the fake MAS and mas_handler.py the HTTP side.

  mas.py --ephemeral [--token-uses N] [--no-password-login] [--not-admin-client]
         [--client-auth-method client_secret_basic|client_secret_post]
         [--reserve-username LOCALPART ...] [--default-rate-limits] [--mas-version VERSION]
         [--upstream-provider HUMAN_NAME ...] [--no-admin-api]
         [--password-registration] [--registration-token-required]
         [--client-id ULID --client-secret-file PATH]

Picks a free loopback port, then prints one JSON line on stdout (url,
server_name, client_id, client_secret, client_auth_method, data_dir,
request_log) and serves until stdin closes.

POST /_contract/register-with-token {"token": "..."} is not MAS's: it stands
in for a password registration finishing in MAS's web UI with that token
(mas_registration_tokens.py), so that a test can spend a token's uses.

  mas.py [the options above] --data-dir DIR --port PORT start|stop|status
      For callers that cannot hold stdin open (Molecule's steps): `start`
      runs the same server in the background on PORT, its pid in DIR/mas.pid
      and its JSON line in DIR/server.json, and prints that line; while it
      runs, `start` again only prints it. The state stays in the server's
      memory, so `stop` forgets every user; the request log stays in DIR.

The request log is JSON lines, one per request: method, path, query,
operation, status, request_valid, request_violations, response_valid,
response_violations, note. It never holds a request body, a response body or
an Authorization header, and violation messages never quote a value.
"""

import functools
import os
import time

import launcher
from mas_handler import start_server


def start_ephemeral(args, data_dir: str, cleanup) -> str:
    server, line = start_server(args, data_dir, 0)
    cleanup.callback(server.shutdown)
    return line


def run_ephemeral(args) -> None:
    launcher.run_ephemeral(functools.partial(start_ephemeral, args), "matrix-user-mas-")


def serve_persistent(args, data_dir: str, info_path: str) -> None:
    """What `start` runs in the background: serves until SIGTERM."""

    def start():
        _, line = start_server(args, data_dir, args.port)
        # It holds the client secret.
        fd = os.open(info_path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(line + "\n")
        os.replace(info_path + ".tmp", info_path)

    try:
        launcher.serve_until_terminated(start)
    finally:
        for path in (info_path, os.path.join(data_dir, "mas.pid")):
            if os.path.exists(path):
                os.remove(path)


def run_persistent(args) -> None:
    data_dir = os.path.abspath(args.data_dir)
    info_path = os.path.join(data_dir, "server.json")
    if args.action == "serve":
        serve_persistent(args, data_dir, info_path)
        return

    def start():
        if os.path.exists(info_path):
            os.remove(info_path)
        options = [f"--token-uses={args.token_uses}", f"--client-auth-method={args.client_auth_method}",
                   f"--mas-version={args.mas_version}"]
        options += [f"--reserve-username={name}" for name in args.reserve_username]
        options += [f"--upstream-provider={name}" for name in args.upstream_provider]
        options += ["--no-password-login"] * args.no_password_login + ["--not-admin-client"] * args.not_admin_client
        options += ["--default-rate-limits"] * args.default_rate_limits
        options += ["--no-admin-api"] * args.no_admin_api
        options += ["--password-registration"] * args.password_registration
        options += ["--registration-token-required"] * args.registration_token_required
        if args.client_id:
            options += [f"--client-id={args.client_id}", f"--client-secret-file={args.client_secret_file}"]
        return launcher.start_in_background(__file__, options, data_dir, args.port)

    def ready(process):
        deadline = time.monotonic() + 30
        while not os.path.exists(info_path):
            if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
                raise SystemExit(f"the MAS contract server did not start; see {data_dir}/stderr.log")
            time.sleep(0.1)
        with open(info_path) as f:
            return f.read().strip()

    launcher.run_persistent(args.action, data_dir, os.path.join(data_dir, "mas.pid"), args.port, start, ready)


def main() -> None:
    parser = launcher.command_line(__doc__, port=8080, in_process=True)
    parser.add_argument("--token-uses", type=int, default=-1,
                        help="admin requests an access token answers before it expires (default: no limit; "
                             "tokens also expire after MAS's 300 seconds)")
    parser.add_argument("--no-password-login", action="store_true", help="as passwords.enabled: false")
    parser.add_argument("--not-admin-client", action="store_true",
                        help="the client is not in policy.data.admin_clients: urn:mas:admin is denied")
    parser.add_argument("--client-auth-method", choices=["client_secret_basic", "client_secret_post"],
                        default="client_secret_basic", help="the admin client's configured client_auth_method")
    parser.add_argument("--reserve-username", action="append", default=[],
                        help="a localpart the homeserver reports as unavailable")
    parser.add_argument("--default-rate-limits", action="store_true",
                        help="MAS's default login rate limits (3 per minute per IP) instead of relaxed ones")
    parser.add_argument("--upstream-provider", action="append", default=[],
                        help="an upstream OAuth 2.0 provider MAS lists, by its human name (repeatable)")
    parser.add_argument("--no-admin-api", action="store_true",
                        help="without the adminapi resource in the listener (MAS's and mdad's default): "
                             "/api/admin/v1 answers 404")
    parser.add_argument("--password-registration", action="store_true",
                        help="as account.password_registration_enabled: true (site-config shows it unless "
                             "--no-password-login)")
    parser.add_argument("--registration-token-required", action="store_true",
                        help="as account.password_registration_token_required: true")
    parser.add_argument("--client-id", help="the admin client's ID, a ULID, as the configuration's clients list it "
                                            "(default: a new one)")
    parser.add_argument("--client-secret-file", help="a file holding that client's secret (with --client-id)")
    parser.add_argument("--mas-version", default="v1.22.0+contract",
                        help="what GET /api/admin/v1/version answers; before 1.18 display names are ignored at creation")
    args = parser.parse_args()
    if bool(args.client_id) != bool(args.client_secret_file):
        parser.error("--client-id and --client-secret-file go together")
    if args.client_secret_file:
        args.client_secret_file = os.path.abspath(args.client_secret_file)
    launcher.run(parser, args, run_ephemeral, run_persistent)


if __name__ == "__main__":
    main()
