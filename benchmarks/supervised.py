"""The processes of a reference cluster's member: one supervisor (Patroni, pg_autoctl)
started in its own session, and the postmaster it runs. Stopped and killed by PID.

Guarantees: a PID is signalled only after its command line names the member's data
directory (never a recycled PID); every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

STOP_TIMEOUT = 40.0
POSTMASTER_STOP_TIMEOUT = 20.0


class Supervised(Protocol):
    proc: subprocess.Popen[bytes] | None
    data_dir: Path

    def alive(self) -> bool: ...


def postmaster_pid(member: Supervised) -> int | None:
    """The member's live postmaster, or None."""
    try:
        pid = int((member.data_dir / "postmaster.pid").read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    if state == "Z" or str(member.data_dir).encode() not in cmdline:
        return None
    return pid


def kill(member: Supervised) -> None:
    """SIGKILL the process groups of the supervisor and of the postmaster, together."""
    groups: set[int] = set()
    for pid in (
        member.proc.pid if member.alive() and member.proc else None,
        postmaster_pid(member),
    ):
        if pid is not None:
            try:
                groups.add(os.getpgid(pid))
            except ProcessLookupError:
                pass
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if member.proc is not None:
        member.proc.wait(timeout=10)
        member.proc = None


def stop(members: Sequence[Supervised]) -> None:
    """SIGTERM every live supervisor (each stops its postgres), then SIGKILL whatever is
    left after STOP_TIMEOUT, then stop any postmaster that outlived its supervisor."""
    running = [m for m in members if m.alive()]
    for m in running:
        assert m.proc is not None
        m.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for m in running:
        assert m.proc is not None
        try:
            m.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            m.proc = None
        except subprocess.TimeoutExpired:
            kill(m)
    for m in members:
        pid = postmaster_pid(m)
        if pid is None:
            continue
        os.kill(pid, signal.SIGINT)
        end = time.monotonic() + POSTMASTER_STOP_TIMEOUT
        while time.monotonic() < end and postmaster_pid(m) == pid:
            time.sleep(0.1)
        if postmaster_pid(m) == pid:
            kill(m)
