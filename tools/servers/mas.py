#!/usr/bin/env python3
"""A small contract server for the Matrix Authentication Service (MAS) admin API.

MAS cannot be installed here, so the module's MAS backend is tested against
this server. It implements only what the module uses, checks every admin API
request against the published OpenAPI file (tests/contract/, MAS v1.22.0) and
every response it sends back against the same file. Behaviour follows MAS's
handlers; where it cannot, tests/contract/README.md says how it differs.
This file is the command line; mas_contract.py holds the contract checks,
mas_api.py the fake MAS and mas_handler.py the HTTP side.

  mas.py --ephemeral [--token-ttl SECONDS] [--no-password-login]
         [--client-auth-method client_secret_basic|client_secret_post]
         [--reserve-username LOCALPART ...] [--default-rate-limits]

Picks a free loopback port, then prints one JSON line on stdout (url,
server_name, client_id, client_secret, client_auth_method, data_dir,
request_log) and serves until stdin closes.

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

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

from launcher import remove_data_dir, running_pid, stop_or_status, write_pid
from mas_handler import start_server


def run_ephemeral(args) -> None:
    data_dir = tempfile.mkdtemp(prefix="matrix-user-mas-")
    try:
        server, line = start_server(args, data_dir, 0)
        print(line, flush=True)
        sys.stdin.read()
        server.shutdown()
    finally:
        remove_data_dir(data_dir)


def raise_on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def serve_persistent(args, data_dir: str, info_path: str) -> None:
    """What `start` runs in the background: serves until SIGTERM."""
    signal.signal(signal.SIGTERM, raise_on_signal)
    try:
        _, line = start_server(args, data_dir, args.port)
        # It holds the client secret.
        fd = os.open(info_path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(line + "\n")
        os.replace(info_path + ".tmp", info_path)
        while True:
            signal.pause()
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
    pid_file = os.path.join(data_dir, "mas.pid")
    if stop_or_status(args.action, pid_file, data_dir):
        return
    pid = running_pid(pid_file, data_dir)
    process = None
    if not pid:
        os.makedirs(data_dir, exist_ok=True)
        if os.path.exists(info_path):
            os.remove(info_path)
        options = [f"--token-ttl={args.token_ttl}", f"--client-auth-method={args.client_auth_method}"]
        options += [f"--reserve-username={name}" for name in args.reserve_username]
        options += ["--no-password-login"] * args.no_password_login + ["--default-rate-limits"] * args.default_rate_limits
        with open(os.path.join(data_dir, "stderr.log"), "ab") as log:
            process = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), *options, "--data-dir", data_dir,
                 "--port", str(args.port), "serve"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        write_pid(pid_file, process.pid)
    deadline = time.monotonic() + 30
    while not os.path.exists(info_path):
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            raise SystemExit(f"the MAS contract server did not start; see {data_dir}/stderr.log")
        time.sleep(0.1)
    with open(info_path) as f:
        print(f.read().strip(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ephemeral", action="store_true")
    parser.add_argument("--token-ttl", type=float, default=300,
                        help="access token lifetime in seconds, fractions allowed for tests (MAS default: 300)")
    parser.add_argument("--no-password-login", action="store_true", help="as passwords.enabled: false")
    parser.add_argument("--client-auth-method", choices=["client_secret_basic", "client_secret_post"],
                        default="client_secret_basic", help="the admin client's configured client_auth_method")
    parser.add_argument("--reserve-username", action="append", default=[],
                        help="a localpart the homeserver reports as unavailable")
    parser.add_argument("--default-rate-limits", action="store_true",
                        help="MAS's default login rate limits (3 per minute per IP) instead of relaxed ones")
    parser.add_argument("--data-dir")
    parser.add_argument("--port", type=int, default=8080)
    # `serve` is what `start` runs in the background.
    parser.add_argument("action", nargs="?", choices=["start", "stop", "status", "serve"])
    args = parser.parse_args()
    if args.ephemeral:
        run_ephemeral(args)
    elif args.data_dir and args.action:
        run_persistent(args)
    else:
        parser.error("use --ephemeral, or --data-dir DIR --port PORT start|stop|status")


if __name__ == "__main__":
    main()
