"""The leader lease: how long this controller may still act as the one primary.

Each cycle starts by proving liveness to Consul (check pass + session renew)
at t0. Consul cannot drop our lock before ``t0 + ttl``; we claim less, until
``t0 + min(retry_timeout, ttl - 1)`` (``renewed``). The claim becomes the lease
only once we know we hold the lock: the snapshot read after the keepalive shows
our session on the leader key, or we just acquired it (``confirm``). Anything
that gives the lock up ``drop``s the lease first, so the agent's fence never
sees a lease the lock no longer backs.
"""

from __future__ import annotations

from collections.abc import Callable


class Lease:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.deadline: float | None = None  # None: no lease
        self._renewed_until = 0.0

    def renewed(self, t0: float, ttl: float, retry_timeout: float) -> None:
        """The keepalive sent at ``t0`` succeeded: what a confirmation may claim."""
        self._renewed_until = t0 + min(retry_timeout, ttl - 1.0)

    def confirm(self) -> None:
        """We hold the lock (seen in Consul, or acquired this cycle)."""
        self.deadline = self._renewed_until

    def drop(self) -> None:
        self.deadline = None

    def remaining(self) -> float | None:
        """Seconds left, 0.0 once lapsed, None without a lease."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self.clock())

    @property
    def valid(self) -> bool:
        return self.deadline is not None and self.clock() < self.deadline
