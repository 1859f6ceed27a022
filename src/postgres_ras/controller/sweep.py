"""Which pods of lost members the leader may delete (opt-in). Pure: no I/O.

A member's Consul key is tied to its session, which lapses within ``ttl``
once its controller stops passing its check. So a pod whose member has had
no key for ``after`` seconds, while *we* hold the leader lock with a valid
lease, belongs to a node that cannot be the primary: it lost (or never had)
the lock, and its agent fenced any primary when its lease ran out. Deleting
such a pod lets the StatefulSet recreate it at once instead of after the
node controller's ~5 minute eviction.

Never deleted: our own pod, a pod already terminating, any pod while the
membership is unknown (Consul unreachable) or while we do not lead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LeaderView:
    """What the sweep needs from the HA loop's last snapshot."""

    leading: bool  # we hold the leader lock with a valid lease and run the primary
    members: frozenset[str] | None  # names with a member key in Consul; None = unknown


class Sweeper:
    def __init__(self, me: str, after: float, clock: Callable[[], float]) -> None:
        self.me = me
        self.after = after
        self.clock = clock
        self.absent_since: dict[str, float] = {}

    def due(self, view: LeaderView | None, pods: Iterable[Any]) -> list[str]:
        """Names of pods to delete now; ``pods`` are lightkube Pods (metadata.name, ...)."""
        if view is None or not view.leading or view.members is None or self.after <= 0:
            self.absent_since.clear()  # the clock restarts whenever we are not sure
            return []
        now = self.clock()
        seen: set[str] = set()
        result: list[str] = []
        for pod in pods:
            meta = getattr(pod, "metadata", None)
            name = getattr(meta, "name", None)
            if not name or name == self.me:
                continue
            seen.add(name)
            if getattr(meta, "deletionTimestamp", None) is not None or name in view.members:
                self.absent_since.pop(name, None)
                continue
            since = self.absent_since.setdefault(name, now)
            if now - since >= self.after:
                result.append(name)
        for gone in set(self.absent_since) - seen:
            del self.absent_since[gone]
        return sorted(result)

    def deleted(self, name: str) -> None:
        # The replacement pod gets a fresh allowance to join.
        self.absent_since.pop(name, None)
