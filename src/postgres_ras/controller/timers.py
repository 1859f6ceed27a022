"""How long things have held, as the HA loop measures them on its own clock.

Each figure goes into the Observation, so decide() stays pure. All run on the
loop's injected clock (CLOCK_BOOTTIME in production); none compares a wall
clock written by another node.
"""

from __future__ import annotations

from collections.abc import Callable

from postgres_ras.controller.state import NodeView, Role
from postgres_ras.dcs.base import Cluster


class Stopwatch:
    """Seconds a condition has held without a break."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.since: float | None = None

    def held(self, condition: bool) -> float:
        """Report the condition now; returns how long it has held (0 when it does not)."""
        if not condition:
            self.since = None
            return 0.0
        if self.since is None:
            self.since = self.clock()
        return self.clock() - self.since

    def elapsed(self) -> float:
        """How long it has held, without reporting anything new."""
        return 0.0 if self.since is None else self.clock() - self.since

    def reset(self) -> None:
        self.since = None


class FirstSeen:
    """Seconds since a value was first seen unchanged (a switchover request, say)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.seen: tuple[object, float] | None = None

    def age(self, value: object | None) -> float:
        if value is None:
            self.seen = None
            return 0.0
        if self.seen is None or self.seen[0] != value:
            self.seen = (value, self.clock())
        return self.clock() - self.seen[1]


def not_streaming(node: NodeView | None, cluster: Cluster | None) -> bool:
    """A running replica pointed at the leader that does not stream from it."""
    lm = cluster.leader_member if cluster else None
    return (
        node is not None
        and node.running
        and node.role is Role.REPLICA
        and not node.job
        and not node.streaming
        and lm is not None
        and node.upstream == f"{lm.conn_host}:{lm.conn_port}"
    )


def leading_without_primary(node: NodeView | None, cluster: Cluster, session: str | None) -> bool:
    """I hold the leader lock, yet postgres is not a running primary (a promotion or a
    bootstrap in progress counts as serving: they are progress, not failure)."""
    leader = cluster.leader
    if leader is None or session is None or leader.session != session:
        return False
    serving = node is not None and (
        (node.running and node.role is Role.PRIMARY) or node.job in ("promote", "bootstrap")
    )
    return not serving
