"""A private PostgreSQL cluster on loopback, for the tests that run Dendrite
or Synapse on PostgreSQL (dendrite.py / synapse.py --database postgres), or
alone for the tests that ask PostgreSQL itself (postgres.py --ephemeral: one
JSON line {"url": ...} of a database owned by its superuser, until stdin
closes).
PostgreSQL comes from Debian's postgresql package (installed by
tools/install-dendrite, which `just test` runs before the tests)."""

import glob
import json
import os
import pwd
import secrets
import signal
import subprocess
import time

import launcher
from launcher import free_port, stop_process

PG_SUPERUSER = "postgres"  # the Debian system user that owns the cluster


class Postgres:
    """A private PostgreSQL cluster in DIR/postgres, on a free loopback port,
    with one database `name` owned by the role `name`; `createdb_args` are
    passed to createdb (Synapse wants the C locale).

    initdb refuses to run as root, so the cluster belongs to Debian's
    `postgres` system user; the server runs as our direct child (not
    daemonised by pg_ctl), so it stays in our process group.
    """

    def __init__(self, data_dir: str, name: str = "dendrite", createdb_args: tuple = ()):
        candidates = sorted(
            glob.glob("/usr/lib/postgresql/*/bin/initdb"),
            key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
        )
        if not candidates:
            raise SystemExit("no /usr/lib/postgresql/*/bin/initdb; run tools/install-dendrite")
        self.bin = os.path.dirname(candidates[-1])
        self.dir = os.path.join(data_dir, "postgres")
        self.pgdata = os.path.join(self.dir, "data")
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.process = None
        self.role = self.database = name
        self.createdb_args = list(createdb_args)
        self.url = (
            f"postgres://{name}:{self.password}@127.0.0.1:{self.port}/{name}?sslmode=disable"
        )

    def _as_postgres(self) -> dict:
        if os.geteuid() != 0:
            return {}
        entry = pwd.getpwnam(PG_SUPERUSER)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def start(self) -> None:
        as_pg = self._as_postgres()
        os.makedirs(self.dir)
        if as_pg:
            # The cluster's owner must reach DIR/postgres: the temporary
            # folder is 0700 root's, so open it for traversal only.
            os.chmod(os.path.dirname(self.dir), 0o711)
            os.chown(self.dir, as_pg["user"], as_pg["group"])
        pwfile = os.path.join(self.dir, "pwfile")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        if as_pg:
            os.chown(pwfile, as_pg["user"], as_pg["group"])
        os.chmod(pwfile, 0o600)
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        if as_pg and subprocess.run(["test", "-w", self.dir], env=env, **as_pg).returncode != 0:
            raise SystemExit(
                f"the {PG_SUPERUSER} user cannot write to {self.dir}: a parent folder is private; "
                "point TMPDIR at a folder it can reach (such as /tmp)"
            )
        log_path = os.path.join(self.dir, "postgres.log")
        log = open(log_path, "ab")
        initdb = subprocess.run(
            [
                os.path.join(self.bin, "initdb"),
                "-D", self.pgdata,
                "-U", self.role,
                "--pwfile", pwfile,
                "--auth-host", "scram-sha-256",
                "--auth-local", "scram-sha-256",
                "-E", "UTF8",
                "--no-sync",
            ],
            cwd=self.dir,
            env=env,
            stdout=log,
            stderr=log,
            **as_pg,
        )
        if initdb.returncode != 0:
            raise SystemExit(f"initdb failed; see {log_path}")
        os.remove(pwfile)
        self.process = subprocess.Popen(
            [
                os.path.join(self.bin, "postgres"),
                "-D", self.pgdata,
                "-c", "listen_addresses=127.0.0.1",
                "-c", f"port={self.port}",
                "-c", f"unix_socket_directories={self.dir}",
                "-c", "max_connections=200",
                # A throw-away cluster: durability buys nothing here.
                "-c", "fsync=off",
                "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off",
            ],
            cwd=self.dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            **as_pg,
        )
        env_pw = dict(env, PGPASSWORD=self.password)
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"postgres exited with {self.process.returncode}; see {self.dir}/postgres.log")
            ready = subprocess.run(
                [os.path.join(self.bin, "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                env=env,
            )
            if ready.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"postgres did not start in time; see {self.dir}/postgres.log")
            time.sleep(0.1)
        subprocess.run(
            [
                os.path.join(self.bin, "createdb"),
                "-h", "127.0.0.1", "-p", str(self.port), "-U", self.role,
                *self.createdb_args, self.database,
            ],
            check=True,
            env=env_pw,
            stdout=log,
            stderr=log,
        )

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown.
        stop_process(self.process, signal.SIGINT, timeout=30)


def start_ephemeral(data_dir: str, cleanup) -> str:
    postgres = Postgres(data_dir, name="matrix_user")
    cleanup.callback(postgres.stop)
    postgres.start()
    return json.dumps({"url": postgres.url})


if __name__ == "__main__":
    # Only --ephemeral: the cluster lives until stdin closes.
    launcher.command_line(__doc__).parse_args()
    # It runs as another user: a killed launcher would leave it behind.
    launcher.run_ephemeral(start_ephemeral, "matrix-user-postgres-", clean_up_on_signal=True)
