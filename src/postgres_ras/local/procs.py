"""Background processes of the local cluster, tracked by PID files.

A PID file holds the PID and the process start time, so a recycled PID is
never mistaken for ours and never signalled. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Module-level: inside ProcessTable the name ``signal`` is the method below.


@dataclass(frozen=True)
class Proc:
    name: str
    pid: int
    start_time: int


def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime) counted after the parenthesised command name.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


class ProcessTable:
    """Starts, finds and stops the named processes of one work directory."""

    def __init__(self, run_dir: Path, log_dir: Path) -> None:
        self.run_dir = run_dir
        self.log_dir = log_dir

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def get(self, name: str) -> Proc | None:
        """The live process recorded under ``name``, or None."""
        try:
            data = json.loads(self.pid_file(name).read_text())
            proc = Proc(name, int(data["pid"]), int(data["start_time"]))
        except (OSError, ValueError, KeyError):
            return None
        if _start_time(proc.pid) != proc.start_time or _is_zombie(proc.pid):
            return None
        return proc

    def names(self) -> list[str]:
        if not self.run_dir.exists():
            return []
        return sorted(p.stem for p in self.run_dir.glob("*.pid"))

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Proc:
        """Start ``argv`` detached (own session), output appended to its log."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        with open(self.log_file(name), "ab") as log:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
            )
        started = _start_time(popen.pid) or 0
        self.pid_file(name).write_text(json.dumps({"pid": popen.pid, "start_time": started}))
        # The child is detached; make sure this process never keeps a zombie.
        _reap_later(popen)
        return Proc(name, popen.pid, started)

    def send_signal(self, name: str, sig: signal.Signals) -> bool:
        proc = self.get(name)
        if proc is None:
            return False
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def stop(self, name: str, timeout: float = 10.0, sig: signal.Signals = signal.SIGTERM) -> bool:
        """Signal, wait up to ``timeout``, then SIGKILL. True if it was running."""
        proc = self.get(name)
        if proc is None:
            self.pid_file(name).unlink(missing_ok=True)
            return False
        try:
            os.kill(proc.pid, signal.SIGCONT)  # a frozen process cannot act on SIGTERM
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        if not wait_gone(proc, timeout):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            wait_gone(proc, 5.0)
        self.pid_file(name).unlink(missing_ok=True)
        return True


def wait_gone(proc: Proc, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _start_time(proc.pid) != proc.start_time or _is_zombie(proc.pid):
            return True
        time.sleep(0.05)
    return False


_children: list[subprocess.Popen[bytes]] = []


def _reap_later(popen: subprocess.Popen[bytes]) -> None:
    _children.append(popen)
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)


def free_port_check(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
