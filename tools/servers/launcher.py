"""What the server launchers (synapse.py, dendrite.py, mas.py) share: a free
loopback port, waiting for a server to answer, stopping a server and
removing its folder, and the pid file of a persistent server."""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_answering(url: str, process, name: str, logs: str, deadline: float) -> None:
    """Waits until `url` answers; fails early if `process` (when given) exits."""
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"{name} exited with {process.returncode}; see {logs}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
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
