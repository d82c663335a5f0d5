"""What the server launchers (synapse.py, dendrite.py, mas.py) share: a free
loopback port, waiting for a server to answer, and the pid file of a
persistent server."""

import os
import signal
import socket
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
