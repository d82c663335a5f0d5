#!/usr/bin/env python3
"""Start a real Synapse on loopback, for the tests and for the local homeserver.

Two ways to run it:

  synapse.py --ephemeral [--database sqlite|postgres] [--default-rate-limits] [--no-shared-secret]
                        [--appservice-and-notices] [--extra-user-type NAME]...
                        [--require-auth-for-profile-requests] [--registration-requires-token]
                        [--open-registration]
      A throw-away server in a temporary folder on a free port. When it is
      ready, one JSON line goes to stdout (url, server_name,
      registration_shared_secret, data_dir, database). The server lives
      until stdin closes, so it dies with the test process that started it.
      Its database is SQLite (homeserver.db in data_dir) or, with
      --database postgres, a private PostgreSQL cluster started in data_dir
      (tools/servers/postgres.py); `database` in the JSON line is what
      synapse_database takes: the file's path or a postgres:// URL.
      --no-shared-secret leaves registration_shared_secret out of its
      configuration (the secret in the JSON line is then empty).
      --extra-user-type adds a user type to user_types.extra_user_types
      (repeat it for several).
      --appservice-and-notices registers an application service that owns
      the users @_bridge_*:localhost (its as_token goes in the JSON line)
      and enables server notices from @notices:localhost: the accounts
      `undeclared` must spare.
      --require-auth-for-profile-requests sets Synapse's option of that
      name: profiles are shown only to a request with an access token.
      --registration-requires-token opens registration through the client
      API to whoever has a registration token (enable_registration and
      registration_requires_token), for matrix_registration_token's tests.
      --open-registration lets anyone register without a token
      (enable_registration and enable_registration_without_verification).

  synapse.py --data-dir DIR --port PORT [--registration-shared-secret-file PATH] [--registration-requires-token]
             start|stop|status
      The persistent local homeserver that `just register-user` uses when no
      homeserver is configured. `start` is idempotent and prints the same JSON
      line. With --registration-requires-token (playbooks/local_homeserver.yml
      passes it) its registration through the client API is open to whoever
      has a registration token (`just registration-token` makes one), and to
      nobody else; without it, closed. Only the first start writes the
      configuration: a server made before keeps what it was made with.

Synapse comes from the project's virtualenv (tools/requirements.txt).
"""

import functools
import json
import os
import secrets
import sqlite3
import subprocess
import time

import launcher
from postgres import Postgres
from launcher import free_port, kept_shared_secret, new_shared_secret, stop_process, wait_until_answering

SERVER_NAME = "localhost"
VENV_PYTHON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".venv", "bin", "python")


def write_appservice(data_dir: str) -> dict:
    """An application service with no URL (Synapse sends it nothing) that
    owns the users @_bridge_*; returns the config keys that enable it."""
    registration = {
        "id": "test-bridge",
        "url": None,
        "as_token": secrets.token_urlsafe(24),
        "hs_token": secrets.token_urlsafe(24),
        "sender_localpart": "_bridge_bot",
        "namespaces": {"users": [{"exclusive": True, "regex": f"@_bridge_.*:{SERVER_NAME}"}], "aliases": [], "rooms": []},
        "rate_limited": False,
    }
    path = os.path.join(data_dir, "appservice.yaml")
    with open(path, "w") as f:
        json.dump(registration, f)
    return {
        "app_service_config_files": [path],
        "server_notices": {"system_mxid_localpart": "notices", "system_mxid_display_name": "Server notices"},
    }


def write_config(
    data_dir: str,
    port: int,
    default_rate_limits: bool,
    shared_secret_enabled: bool = True,
    extra_user_types: list[str] | None = None,
    appservice_and_notices: bool = False,
    require_auth_for_profile_requests: bool = False,
    given_shared_secret: str | None = None,
    postgres: Postgres | None = None,
    registration_requires_token: bool = False,
    open_registration: bool = False,
) -> dict:
    os.makedirs(data_dir, exist_ok=True)
    config_path = os.path.join(data_dir, "homeserver.yaml")
    if os.path.exists(config_path):
        return {"config": config_path, "secret": kept_shared_secret(data_dir)}

    shared_secret = (given_shared_secret or new_shared_secret(data_dir)) if shared_secret_enabled else ""
    if given_shared_secret:
        with open(os.open(os.path.join(data_dir, "registration_shared_secret"), os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(given_shared_secret)
    subprocess.run(
        [VENV_PYTHON, "-m", "synapse._scripts.generate_signing_key", "-o", os.path.join(data_dir, "signing.key")],
        check=True,
    )
    log_config = os.path.join(data_dir, "log.yaml")
    with open(log_config, "w") as f:
        json.dump(
            {
                "version": 1,
                "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
                "handlers": {
                    "file": {
                        "class": "logging.FileHandler",
                        "formatter": "plain",
                        "filename": os.path.join(data_dir, "homeserver.log"),
                    }
                },
                "root": {"level": "WARNING", "handlers": ["file"]},
                "disable_existing_loggers": False,
            },
            f,
        )
    config = {
        "server_name": SERVER_NAME,
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "pid_file": os.path.join(data_dir, "homeserver.pid"),
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client", "federation"], "compress": False}],
            }
        ],
        "database": database_config(data_dir, postgres),
        "log_config": log_config,
        "media_store_path": os.path.join(data_dir, "media"),
        "signing_key_path": os.path.join(data_dir, "signing.key"),
        "macaroon_secret_key": secrets.token_urlsafe(32),
        "form_secret": secrets.token_urlsafe(32),
        "report_stats": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "enable_metrics": False,
        # A fresh database finishes its schema in throttled background
        # updates (about a minute); unthrottled they take a few seconds.
        "background_updates": {"sleep_enabled": False, "background_update_duration_ms": 1000},
    }
    if shared_secret_enabled:
        config["registration_shared_secret"] = shared_secret
    if extra_user_types:
        config["user_types"] = {"extra_user_types": extra_user_types}
    if appservice_and_notices:
        config.update(write_appservice(data_dir))
    if require_auth_for_profile_requests:
        config["require_auth_for_profile_requests"] = True
    if open_registration:
        config["enable_registration"] = True
        config["enable_registration_without_verification"] = True
    if registration_requires_token:
        config["enable_registration"] = True
        config["registration_requires_token"] = True
        # Synapse lets one address register 3 accounts, then one per 6 s;
        # a test registers several people in a row from 127.0.0.1.
        config["rc_registration"] = {"per_second": 1000, "burst_count": 1000}
    if not default_rate_limits:
        # Every test login comes from 127.0.0.1, so the per-address login
        # limit (5 logins, then one per 5 minutes) would throttle the tests'
        # own proofs. The per-account limits stay at Synapse's defaults.
        config["rc_login"] = {"address": {"per_second": 1000, "burst_count": 1000}}
        # The tests' rooms are all made by the harness's one admin, and
        # Synapse lets one account make 10 rooms, then one a minute.
        config["rc_room_creation"] = {"per_second": 1000, "burst_count": 1000}
    # JSON is YAML, and needs no YAML library here.
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
    return {"config": config_path, "secret": shared_secret}


def database_config(data_dir: str, postgres: Postgres | None) -> dict:
    if postgres is None:
        return {"name": "sqlite3", "args": {"database": os.path.join(data_dir, "homeserver.db")}}
    return {
        "name": "psycopg2",
        "args": {
            "user": postgres.role,
            "password": postgres.password,
            "database": postgres.database,
            "host": "127.0.0.1",
            "port": postgres.port,
            "cp_min": 1,
            "cp_max": 5,
        },
    }


def wait_until_ready(url: str, process, data_dir: str, postgres: Postgres | None = None) -> None:
    """Until Synapse answers and has finished its background updates."""
    deadline = time.monotonic() + 120
    logs = f"{data_dir}/homeserver.log and {data_dir}/stderr.log"
    wait_until_answering(f"{url}/_matrix/client/versions", process, "synapse", logs, deadline)
    wait_for_background_updates(data_dir, deadline, postgres)


def pending_background_updates(data_dir: str, postgres: Postgres | None) -> int:
    query = "SELECT COUNT(*) FROM background_updates"
    if postgres is None:
        with sqlite3.connect(os.path.join(data_dir, "homeserver.db")) as connection:
            return connection.execute(query).fetchone()[0]
    # psycopg2 is in the virtualenv (tools/requirements.txt) for Synapse itself.
    import psycopg2

    with psycopg2.connect(postgres.url) as connection, connection.cursor() as cursor:
        cursor.execute(query)
        return cursor.fetchone()[0]


def wait_for_background_updates(data_dir: str, deadline: float, postgres: Postgres | None) -> None:
    """A fresh database finishes its schema in background updates; until they
    are done some admin calls fail (e.g. reactivating a user). A real server
    has long finished them, so the tests wait for the same state."""
    while time.monotonic() < deadline:
        if pending_background_updates(data_dir, postgres) == 0:
            return
        time.sleep(0.2)
    raise SystemExit(f"synapse's background updates did not finish; see {data_dir}/homeserver.log")


def spawn(config_path: str, data_dir: str, detach: bool) -> subprocess.Popen:
    return launcher.spawn([VENV_PYTHON, "-m", "synapse.app.homeserver", "-c", config_path], data_dir, detach)


def describe(url: str, data_dir: str, secret: str, database: str) -> str:
    extra = {}
    appservice = os.path.join(data_dir, "appservice.yaml")
    if os.path.exists(appservice):
        with open(appservice) as f:
            extra["appservice_token"] = json.load(f)["as_token"]
    return launcher.homeserver_line(url, SERVER_NAME, data_dir, secret, database, **extra)


def start_ephemeral(args, data_dir: str, cleanup) -> str:
    port = free_port()
    postgres = None
    if args.database == "postgres":
        # Synapse refuses a database whose collation and ctype are not C.
        postgres = Postgres(data_dir, "synapse", ("--encoding=UTF8", "--locale=C", "--template=template0"))
        cleanup.callback(postgres.stop)
        postgres.start()
    paths = write_config(
        data_dir,
        port,
        args.default_rate_limits,
        shared_secret_enabled=not args.no_shared_secret,
        extra_user_types=args.extra_user_type,
        appservice_and_notices=args.appservice_and_notices,
        require_auth_for_profile_requests=args.require_auth_for_profile_requests,
        postgres=postgres,
        registration_requires_token=args.registration_requires_token,
        open_registration=args.open_registration,
    )
    url = f"http://127.0.0.1:{port}"
    process = spawn(paths["config"], data_dir, detach=False)
    cleanup.callback(stop_process, process)
    wait_until_ready(url, process, data_dir, postgres)
    database = postgres.url if postgres else os.path.join(data_dir, "homeserver.db")
    return describe(url, data_dir, paths["secret"], database)


def run_ephemeral(args) -> None:
    launcher.run_ephemeral(functools.partial(start_ephemeral, args), "matrix-user-synapse-")


def run_persistent(args) -> None:
    data_dir = os.path.abspath(args.data_dir)
    url = f"http://127.0.0.1:{args.port}"

    def start():
        given = None
        if args.registration_shared_secret_file:
            with open(args.registration_shared_secret_file) as f:
                given = f.read().strip()
        paths = write_config(
            data_dir,
            args.port,
            default_rate_limits=False,
            given_shared_secret=given,
            registration_requires_token=args.registration_requires_token,
        )
        return spawn(paths["config"], data_dir, detach=True)

    def ready(process):
        wait_until_ready(url, process, data_dir)
        return describe(url, data_dir, kept_shared_secret(data_dir), os.path.join(data_dir, "homeserver.db"))

    # The launcher writes homeserver.pid: Synapse does only when it daemonizes itself, which it does not here.
    launcher.run_persistent(args.action, data_dir, os.path.join(data_dir, "homeserver.pid"), args.port, start, ready)


def main() -> None:
    parser = launcher.homeserver_command_line(__doc__)
    parser.add_argument("--no-shared-secret", action="store_true")
    parser.add_argument("--extra-user-type", action="append", default=[], metavar="NAME")
    parser.add_argument("--appservice-and-notices", action="store_true")
    parser.add_argument("--require-auth-for-profile-requests", action="store_true")
    parser.add_argument("--registration-shared-secret-file", metavar="PATH",
                        help="start (persistent only): the registration shared secret to configure, as a host's "
                             "configuration management derives it (mdad's), instead of a new one")
    args = parser.parse_args()
    launcher.run(parser, args, run_ephemeral, run_persistent)


if __name__ == "__main__":
    main()
