"""Which replication slots the primary keeps: one per member, and for a while after it left.

A slot holds the WAL its member still needs, and it is the only thing that does:
``wal_keep_size`` is 0, because pg_rewind copies every file in the source's pg_wal
and a rejoin would pay for all the WAL kept "just in case". So a member that goes away
without being removed (a crash, a partition, a restart) keeps its slot for
``member_slots_ttl`` and can come back from its own position; the former primary finds on
the new one the WAL its pg_rewind needs (the new leader creates the slots before it
promotes: see ``Agent.promote``). A member removed on purpose (``removed/<name>``, written
by ``pgras scale``) loses its slot at once.

Every controller tracks this, not only the leader, so a replica that wins a race knows
whom the old leader served. Pure: the clock is injected.
"""

from __future__ import annotations

from collections.abc import Callable

from postgres_ras.config import slot_name
from postgres_ras.dcs.base import Cluster

# A removal marker lives this long, so that every controller (cycling each loop_wait)
# sees it and forgets the member, not only the leader that deletes it.
REMOVED_MARKER_LIFETIME = 60.0


class MemberSlots:
    def __init__(self, me: str, ttl: float, clock: Callable[[], float]) -> None:
        self.me = me
        self.ttl = ttl
        self.clock = clock
        self.last_seen: dict[str, float] = {}

    def observe(self, cluster: Cluster) -> None:
        """Note who is a member now (and who holds the lock), and forget the removed."""
        now = self.clock()
        for member in cluster.members:
            self.last_seen[member.name] = now
        if cluster.leader is not None:
            self.last_seen[cluster.leader.name] = now
        for name in cluster.removed:
            if cluster.member(name) is None:  # not re-added since
                self.last_seen.pop(name, None)
        for name, seen in list(self.last_seen.items()):
            if now - seen > self.ttl:
                del self.last_seen[name]

    def wanted(self, cluster: Cluster) -> list[str]:
        """The slots the primary should hold: every member but me, present or recent."""
        now = self.clock()
        recent = {n for n, seen in self.last_seen.items() if now - seen <= self.ttl}
        names = {m.name for m in cluster.members} | recent
        names -= {n for n in cluster.removed if cluster.member(n) is None}
        # A name no member config allows (a stray key) must not fail everyone's slots.
        return sorted({slot_name(n) for n in names if n != self.me and 0 < len(n) <= 63})

    def markers_done(self, cluster: Cluster, now: float) -> list[str]:
        """Removal markers every controller has had time to see (epoch ``now``)."""
        return sorted(
            name for name, at in cluster.removed.items() if now - at > REMOVED_MARKER_LIFETIME
        )
