#!/usr/bin/env python3
"""Start a real Dendrite on loopback, for the tests and for local use.

Two ways to run it:

  dendrite.py --ephemeral --database sqlite|postgres [--default-rate-limits] [--registration-requires-token]
              [--open-registration]
      A throw-away server in a temporary folder on a free port. With
      `--database postgres` a private PostgreSQL cluster is started in that
      folder too, on another free loopback port. When it is ready, one JSON
      line goes to stdout (url, server_name, registration_shared_secret,
      data_dir, database). The servers live until stdin closes, so they die
      with the test process that started them.
      --registration-requires-token sets client_api.registration_requires_token,
      without which Dendrite refuses to create registration tokens
      (registration itself stays disabled).
      --open-registration lets anyone register through the client API
      (registration_disabled: false, and the flag
      --really-enable-open-registration Dendrite wants for that without a
      captcha). v0.13.8 never asks for a token, even with both options.

  dendrite.py --data-dir DIR --port PORT start|stop|status
      A persistent server (SQLite) in DIR. `start` is idempotent and prints
      the same JSON line.

`database` in the JSON line is what a client needs to open Dendrite's user
API accounts database (table userapi_accounts) directly: the SQLite file's
path, or a postgres://user:password@127.0.0.1:PORT/dbname?sslmode=disable URL.

Dendrite (github.com/matrix-org/dendrite) is built by tools/install-dendrite,
which prints the folder holding its binaries. PostgreSQL comes from Debian's
postgresql package (installed by the same script).
"""

import functools
import json
import os
import subprocess
import time

import launcher
from launcher import free_port, kept_shared_secret, new_shared_secret, stop_process, wait_until_answering
from postgres import Postgres

SERVER_NAME = "localhost"
HERE = os.path.dirname(os.path.abspath(__file__))
INSTALL_DENDRITE = os.path.join(HERE, "..", "install-dendrite")
# Component databases, named as Dendrite's own generate-config names them.
SQLITE_COMPONENTS = {
    "federation_api": "federationapi",
    "key_server": "keyserver",
    "media_api": "mediaapi",
    "mscs": "mscs",
    "relay_api": "relayapi",
    "room_server": "roomserver",
    "sync_api": "syncapi",
    "user_api": "userapi",
}


def dendrite_bin() -> str:
    out = subprocess.run([INSTALL_DENDRITE], check=True, stdout=subprocess.PIPE, text=True).stdout
    return out.strip().splitlines()[-1]


def sqlite_path(data_dir: str, component: str) -> str:
    return os.path.join(data_dir, f"dendrite_{component}.db")


def write_config(bin_dir: str, data_dir: str, database: str, default_rate_limits: bool,
                 registration_requires_token: bool = False, open_registration: bool = False) -> dict:
    """Writes dendrite.yaml (if missing) and returns its path and secret.

    `database` is "sqlite" or a postgres:// URL shared by all components.
    """
    os.makedirs(data_dir, exist_ok=True)
    config_path = os.path.join(data_dir, "dendrite.yaml")
    if os.path.exists(config_path):
        return {"config": config_path, "secret": kept_shared_secret(data_dir)}

    shared_secret = new_shared_secret(data_dir)
    key_path = os.path.join(data_dir, "matrix_key.pem")
    subprocess.run(
        [os.path.join(bin_dir, "generate-keys"), "--private-key", key_path],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    # Only what differs from Dendrite's defaults: config.Load fills in the
    # rest (setup/config/config.go, loadConfig calls Defaults first).
    config = {
        "version": 2,
        "global": {
            "server_name": SERVER_NAME,
            "private_key": key_path,
            # Nothing outside this machine is reachable, nor wanted.
            "disable_federation": True,
            "trusted_third_party_id_servers": [],
            "jetstream": {"storage_path": data_dir, "in_memory": False},
        },
        "client_api": {
            # Shared-secret registration works even with registration off
            # (clientapi/routing/routing.go registers the handler whenever
            # the secret is set).
            "registration_disabled": True,
            "registration_shared_secret": shared_secret,
        },
        "federation_api": {"key_perspectives": []},
        "media_api": {"base_path": os.path.join(data_dir, "media")},
        "sync_api": {"search": {"enabled": False, "index_path": os.path.join(data_dir, "searchindex")}},
        "logging": [{"type": "file", "level": "info", "params": {"path": os.path.join(data_dir, "log")}}],
    }
    if database == "sqlite":
        for section, component in SQLITE_COMPONENTS.items():
            key = "account_database" if section == "user_api" else "database"
            config.setdefault(section, {})[key] = {
                "connection_string": "file:" + sqlite_path(data_dir, component)
            }
    else:
        # One database for every component, as Dendrite's monolith allows;
        # the userapi_* tables live in it next to the others.
        config["global"]["database"] = {"connection_string": database, "max_open_conns": 50}
    if registration_requires_token:
        config["client_api"]["registration_requires_token"] = True
    if open_registration:
        config["client_api"]["registration_disabled"] = False
    if not default_rate_limits:
        # Every test request comes from 127.0.0.1, and Dendrite's limiter
        # allows only 5 requests in flight per caller (device, or remote
        # address when unauthenticated) per 500 ms before answering 429
        # M_LIMIT_EXCEEDED (internal/httputil/rate_limiting.go). Tests that
        # log in and probe in quick succession would trip it, so it is off
        # here; --default-rate-limits keeps Dendrite's defaults for the tests
        # that are about rate limiting.
        config["client_api"]["rate_limiting"] = {"enabled": False}
    # JSON is YAML, and needs no YAML library here.
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
    return {"config": config_path, "secret": shared_secret}


def wait_until_ready(url: str, process, data_dir: str, deadline: float) -> None:
    logs = f"{data_dir}/stderr.log and {data_dir}/log/"
    wait_until_answering(f"{url}/_matrix/client/versions", process, "dendrite", logs, deadline)


def spawn(bin_dir: str, config_path: str, data_dir: str, port: int, detach: bool,
          open_registration: bool = False) -> subprocess.Popen:
    # No --tls-cert/--tls-key, so no HTTPS listener on :8448
    # (cmd/dendrite/main.go serves HTTPS only when both are given).
    command = [os.path.join(bin_dir, "dendrite"), "--config", config_path, "--http-bind-address", f"127.0.0.1:{port}"]
    if open_registration:
        # Without it, Dendrite refuses to start with registration open and
        # no captcha (setup/config/config_clientapi.go).
        command.append("--really-enable-open-registration")
    return launcher.spawn(command, data_dir, detach)


def describe(url: str, data_dir: str, secret: str, database: str) -> str:
    return launcher.homeserver_line(url, SERVER_NAME, data_dir, secret, database)


def start_ephemeral(args, data_dir: str, cleanup) -> str:
    bin_dir = dendrite_bin()
    if args.database == "postgres":
        postgres = Postgres(data_dir)
        cleanup.callback(postgres.stop)
        postgres.start()
        connection = postgres.url
        accounts_db = postgres.url
    else:
        connection = "sqlite"
        accounts_db = sqlite_path(data_dir, "userapi")
    port = free_port()
    paths = write_config(bin_dir, data_dir, connection, args.default_rate_limits, args.registration_requires_token,
                         args.open_registration)
    url = f"http://127.0.0.1:{port}"
    process = spawn(bin_dir, paths["config"], data_dir, port, detach=False, open_registration=args.open_registration)
    cleanup.callback(stop_process, process)
    wait_until_ready(url, process, data_dir, time.monotonic() + 120)
    return describe(url, data_dir, paths["secret"], accounts_db)


def run_ephemeral(args) -> None:
    # PostgreSQL runs as another user: a killed launcher would leave it behind.
    launcher.run_ephemeral(functools.partial(start_ephemeral, args), "matrix-user-dendrite-", clean_up_on_signal=True)


def run_persistent(args) -> None:
    data_dir = os.path.abspath(args.data_dir)
    url = f"http://127.0.0.1:{args.port}"

    def start():
        bin_dir = dendrite_bin()
        paths = write_config(bin_dir, data_dir, "sqlite", default_rate_limits=False)
        return spawn(bin_dir, paths["config"], data_dir, args.port, detach=True)

    def ready(process):
        wait_until_ready(url, process, data_dir, time.monotonic() + 120)
        return describe(url, data_dir, kept_shared_secret(data_dir), sqlite_path(data_dir, "userapi"))

    launcher.run_persistent(args.action, data_dir, os.path.join(data_dir, "dendrite.pid"), args.port, start, ready)


def main() -> None:
    parser = launcher.homeserver_command_line(__doc__)
    args = parser.parse_args()
    if not args.ephemeral and args.data_dir and args.action and args.database != "sqlite":
        parser.error("the persistent server uses SQLite only")
    launcher.run(parser, args, run_ephemeral, run_persistent)


if __name__ == "__main__":
    main()
