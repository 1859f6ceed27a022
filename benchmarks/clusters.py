"""The cluster under test: what every benchmarked HA implementation offers the measurements.

postgres-ras (pgras_cluster.py) and Patroni (patroni_cluster.py) implement
``ClusterUnderTest``; the measurements in measure.py are written once against
it, so both are timed by the same code. A peer added later (pg_auto_failover)
implements the same protocol and nothing else changes.

Contract: every method is bounded in time and raises ``BenchmarkError`` with a
sentence saying what did not happen (never hangs, never returns a half-started
cluster); ``Unsupported`` says a scenario this implementation cannot run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol


class BenchmarkError(Exception):
    """A cluster did not do what a measurement waited for, within its bound."""


class Unsupported(BenchmarkError):
    """The implementation cannot run this scenario (e.g. synchronous mode)."""


class ClusterUnderTest(Protocol):
    name: str  # shown in tables and results files, e.g. "Patroni 4.1.5"
    slug: str  # results file prefix, e.g. "patroni"

    def settings(self) -> dict[str, Any]:
        """The HA settings in force (ttl, loop_wait, retry_timeout, ...), for the record."""
        ...

    def start(self, nodes: int, synchronous: bool = False) -> None:
        """Bootstrap ``nodes`` members and return once one primary and nodes-1 streaming
        replicas are healthy; raise Unsupported for a mode it cannot run."""
        ...

    def stop(self) -> None:
        """Stop every process ``start`` and ``restart`` started, by PID; idempotent."""
        ...

    def members(self) -> list[str]:
        """The member names, in a stable order."""
        ...

    def leader(self) -> str | None:
        """The member that holds leadership and accepts writes, or None right now."""
        ...

    def kill(self, name: str) -> None:
        """SIGKILL everything of member ``name`` at once: HA process(es) and postmaster group."""
        ...

    def restart(self, name: str) -> None:
        """Start a killed member again; returns at once (the rejoin is what is timed)."""
        ...

    def switchover(self) -> str:
        """A planned switchover from the current leader to a replica the implementation
        picks; returns the new leader's name once it leads and accepts writes."""
        ...

    def wait_healthy(self, timeout: float) -> None:
        """Return once one primary and all other members stream; else BenchmarkError."""
        ...

    def writer_dsn(self) -> str:
        """libpq DSN that always reaches the writable primary (multi-host, read-write)."""
        ...

    def node_dsn(self, name: str) -> str:
        """libpq DSN of one member's PostgreSQL, as superuser."""
        ...


def wait(what: str, check: Callable[[], bool], timeout: float, step: float = 0.02) -> float:
    """Poll ``check`` until true; seconds it took. BenchmarkError naming ``what`` on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(step)
    raise BenchmarkError(f"no {what} within {timeout:.0f}s")
