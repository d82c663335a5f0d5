"""What every server script in tools/servers/ shares: the command line
(`--ephemeral`, or `--data-dir DIR --port PORT start|stop|status`; only
`--ephemeral` for a server that has no persistent run), the throw-away run
that lives until stdin closes, the persistent run with its pid file, a free
loopback port, starting a server's process with its log, the JSON line a
homeserver describes itself with, waiting for a server to answer, and
stopping a server and removing its folder."""

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_sockets(port: int) -> set[str]:
    """The inodes of the sockets listening on loopback or any address at `port`."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == "0A":  # 0A: LISTEN
                    inodes.add(fields[9])
    return inodes


def holds_port(pid: int, port: int) -> bool:
    """Whether process `pid` or one of its descendants listens at `port`."""
    wanted = {f"socket:[{inode}]" for inode in listening_sockets(port)}
    pids = [pid]
    while pids:
        current = pids.pop()
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{current}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{current}/fd/{fd}") in wanted:
                        return True
        for task in os.listdir(f"/proc/{current}/task") if os.path.isdir(f"/proc/{current}/task") else []:
            with contextlib.suppress(OSError), open(f"/proc/{current}/task/{task}/children") as f:
                pids.extend(int(child) for child in f.read().split())
    return False


def wait_until_answering(url: str, process, name: str, logs: str, deadline: float) -> None:
    """Waits until `url` answers; fails early if `process` (when given) exits,
    and when what answers is not `process`: a free port picked earlier may be
    taken by another server meanwhile, whose answers would pass for ours."""
    port = urllib.parse.urlsplit(url).port
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"{name} exited with {process.returncode}; see {logs}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                pass
        except OSError:
            time.sleep(0.2)
            continue
        if process is not None and not holds_port(process.pid, port):
            raise SystemExit(f"another program than {name} answers at {url} (port {port} was taken meanwhile); see {logs}")
        return
    raise SystemExit(f"{name} did not answer at {url} in time; see {logs}")


def new_shared_secret(data_dir: str) -> str:
    """A fresh registration shared secret, also kept in DATA_DIR/registration_shared_secret
    (mode 0600), where the role and the Molecule scenarios read it."""
    shared_secret = secrets.token_urlsafe(32)
    path = os.path.join(data_dir, "registration_shared_secret")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(shared_secret)
    return shared_secret


def kept_shared_secret(data_dir: str) -> str:
    """The shared secret of a server configured earlier in DATA_DIR."""
    with open(os.path.join(data_dir, "registration_shared_secret")) as f:
        return f.read().strip()


def write_pid(pid_file: str, pid: int) -> None:
    with open(pid_file, "w") as f:
        f.write(str(pid))


def running_pid(pid_file: str, marker: str):
    """The pid in `pid_file` if that process still runs and its command line
    contains `marker` (a reused pid belongs to something else)."""
    try:
        with open(pid_file) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if marker.encode() not in f.read():
                return None
        return pid
    except (OSError, ValueError):
        return None


def stop_pid(pid_file: str, marker: str, timeout: float = 20) -> None:
    """Stops the persistent server of `pid_file`, waiting until it is gone."""
    pid = running_pid(pid_file, marker)
    if not pid:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running_pid(pid_file, marker) and time.monotonic() < deadline:
        time.sleep(0.1)


def stop_process(process, sig=signal.SIGTERM, timeout: float = 20) -> None:
    """Stops a child server, killing it when it does not stop in time."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def remove_data_dir(data_dir: str) -> None:
    """Removes a throw-away server's folder, unless MATRIX_USER_KEEP_SERVERS
    asks to keep it for a look at its logs."""
    if os.environ.get("MATRIX_USER_KEEP_SERVERS") is None:
        shutil.rmtree(data_dir, ignore_errors=True)


def stop_or_status(action: str, pid_file: str, marker: str) -> bool:
    """Carries out `stop` and `status` of a persistent server (status exits 0
    when it runs, 3 when not); returns False for any other action."""
    if action == "stop":
        stop_pid(pid_file, marker)
        return True
    if action == "status":
        raise SystemExit(0 if running_pid(pid_file, marker) else 3)
    return False


def command_line(description: str, port: int | None = None, in_process: bool = False) -> argparse.ArgumentParser:
    """The options every server script takes; a script adds its own before
    parsing. A server without a default `port` runs only `--ephemeral`. A
    server that runs inside its launcher's process (`in_process`) also takes
    `serve`, which is what `start` runs in the background."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if port is None:
        parser.add_argument("--ephemeral", action="store_true", required=True)
        return parser
    parser.add_argument("--ephemeral", action="store_true")
    parser.add_argument("--data-dir")
    parser.add_argument("--port", type=int, default=port)
    actions = ["start", "stop", "status"] + (["serve"] if in_process else [])
    parser.add_argument("action", nargs="?", choices=actions)
    return parser


def homeserver_command_line(description: str) -> argparse.ArgumentParser:
    """The command line of a homeserver script (synapse.py, dendrite.py):
    the one every server takes, and the options both homeservers take."""
    parser = command_line(description, port=8008)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--default-rate-limits", action="store_true")
    parser.add_argument("--registration-requires-token", action="store_true")
    parser.add_argument("--open-registration", action="store_true")
    return parser


def run(parser: argparse.ArgumentParser, args, ephemeral, persistent) -> None:
    """Calls `ephemeral(args)` or `persistent(args)`, as the command line asks."""
    if args.ephemeral:
        ephemeral(args)
    elif args.data_dir and args.action:
        persistent(args)
    else:
        parser.error("use --ephemeral, or --data-dir DIR --port PORT start|stop|status")


def raise_on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def run_ephemeral(start, folder_prefix=None, clean_up_on_signal: bool = False) -> None:
    """A throw-away server: `start(data_dir, cleanup)` starts it (in a fresh
    temporary folder when `folder_prefix` is given, else data_dir is None),
    registers on `cleanup` (an ExitStack) how to stop what it started, and
    returns its JSON line. The line goes to stdout and the server lives until
    stdin closes, so it dies with the test process that started it.
    `clean_up_on_signal` makes a SIGTERM or SIGHUP stop it cleanly too."""
    if clean_up_on_signal:
        signal.signal(signal.SIGTERM, raise_on_signal)
        signal.signal(signal.SIGHUP, raise_on_signal)
    with contextlib.ExitStack() as cleanup:
        data_dir = None
        if folder_prefix:
            data_dir = tempfile.mkdtemp(prefix=folder_prefix)
            cleanup.callback(remove_data_dir, data_dir)
        try:
            print(start(data_dir, cleanup), flush=True)
            sys.stdin.read()
        finally:
            if clean_up_on_signal:
                # A second signal must not cut the cleanup short.
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)


def run_persistent(action: str, data_dir: str, pid_file: str, port: int, start, ready) -> None:
    """`start`, `stop` or `status` of the persistent server in `data_dir`.
    `start()` launches it in the background and returns its process (only
    when it does not run yet); `ready(process)` waits until it answers
    (process is None when it ran already) and returns its JSON line, which
    goes to stdout. So `start` is idempotent. A `port` another program
    listens on is refused before anything starts: that program's answers
    would pass for the server's."""
    if stop_or_status(action, pid_file, data_dir):
        return
    process = None
    if not running_pid(pid_file, data_dir):
        if listening_sockets(port):
            raise SystemExit(f"port {port} is taken by another program (not the server of {data_dir}); "
                             "stop that program, or choose another port")
        os.makedirs(data_dir, exist_ok=True)
        process = start()
        write_pid(pid_file, process.pid)
    print(ready(process), flush=True)


def spawn(command: list, data_dir: str, detach: bool) -> subprocess.Popen:
    """Runs a server's `command` in `data_dir`, its output in DATA_DIR/stderr.log;
    `detach` gives it a session of its own, so a persistent server outlives its launcher."""
    with open(os.path.join(data_dir, "stderr.log"), "ab") as log:
        return subprocess.Popen(command, cwd=data_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=detach)


def homeserver_line(url: str, server_name: str, data_dir: str, secret: str, database: str, **extra) -> str:
    """The JSON line a homeserver script prints when its server answers."""
    return json.dumps({"url": url, "server_name": server_name, "registration_shared_secret": secret,
                       "data_dir": data_dir, "database": database, **extra})


def start_in_background(script: str, options: list, data_dir: str, port: int) -> subprocess.Popen:
    """Runs `script [options] --data-dir DIR --port PORT serve` in a session of
    its own, its output in DIR/stderr.log: how `start` puts a server that lives
    in its launcher's process into the background."""
    with open(os.path.join(data_dir, "stderr.log"), "ab") as log:
        return subprocess.Popen(
            [sys.executable, os.path.abspath(script), *options, "--data-dir", data_dir, "--port", str(port), "serve"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )


def serve_until_terminated(start) -> None:
    """What `serve` runs: `start()` starts the server's threads, which then
    serve until SIGTERM."""
    signal.signal(signal.SIGTERM, raise_on_signal)
    start()
    while True:
        signal.pause()
