"""Shutdown handover: a primary asked to stop hands leadership to a replica first.

On SIGTERM (a pod deletion, a rolling upgrade, a scale-down, `pgras down` of
one node) the leader writes the ``switchover`` key exactly as
``POST /switchover`` does and lets its still-running HA loop carry the
switchover out (stop postgres, wait until the target has all WAL, hand the
lock over). The caller waits, bounded, until another member leads, then
shuts down as usual. Clients see a switchover (well under a second), not a
lost lock (``ttl``).

Guarantees: at most one switchover request is written; the wait is bounded
by ``timeout``; if no replica qualifies, or the handover does not finish in
time, the normal shutdown runs (stop postgres, release the lock) and the
replicas race at once. Not guaranteed: that the chosen target still stays
healthy; the HA loop aborts the switchover then, as for any switchover.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from postgres_ras.dcs.base import Cluster, Member, Switchover
from postgres_ras.errors import DCSError
from postgres_ras.roles import Role

log = logging.getLogger(__name__)


def choose_target(
    cluster: Cluster, me: str, staying: Callable[[list[str]], list[str]] | None = None
) -> str | None:
    """The running replica with the most WAL that is allowed to lead and stays. Pure but for
    ``staying`` (which may ask Kubernetes which members survive a scale-down)."""
    candidates: Sequence[Member] = [
        m
        for m in cluster.members
        if m.name != me and m.role == Role.REPLICA and m.state == "running" and not m.nofailover
    ]
    if staying is not None and candidates:
        keep = set(staying([m.name for m in candidates]))
        candidates = [m for m in candidates if m.name in keep]
    if not candidates:
        return None
    best = max(candidates, key=lambda m: (m.lsn if m.lsn is not None else -1, m.name))
    return best.name


class Handover:
    """Writes the switchover request and waits for another leader (the HA loop does the rest)."""

    def __init__(
        self,
        me: str,
        get_cluster: Callable[[], Cluster],
        put: Callable[[str, str], object],
        staying: Callable[[list[str]], list[str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.me = me
        self.get_cluster = get_cluster
        self.put = put
        self.staying = staying
        self.clock = clock
        self.sleep = sleep

    def run(self, timeout: float, on_released: Callable[[], object] | None = None) -> str:
        """Hand over if we lead; returns one sentence saying what happened.

        ``on_released`` is called once the lock is no longer ours: the caller stops its
        HA loop then, so this node neither restarts postgres read-only nor lingers as a
        member the new leader would wait for.
        """
        try:
            cluster = self.get_cluster()
        except DCSError as exc:
            return f"no handover: Consul unreachable ({exc})"
        if cluster.leader is None or cluster.leader.name != self.me:
            return "no handover: not the leader"
        target = choose_target(cluster, self.me, self.staying)
        if target is None:
            return "no handover: no running replica to hand over to"
        try:
            self.put("switchover", Switchover(self.me, target, time.time()).to_json())
        except DCSError as exc:
            return f"no handover: cannot write the switchover request ({exc})"
        log.info("shutting down as leader: handing over to %s (at most %.0fs)", target, timeout)
        started = self.clock()
        deadline = started + timeout
        while self.clock() < deadline:
            try:
                leader = self.get_cluster().leader
            except DCSError:
                leader = None  # keep waiting: Consul may be back within the bound
            else:
                if on_released is not None and (leader is None or leader.name != self.me):
                    on_released()
                    on_released = None
                if leader is not None and leader.name != self.me:
                    return (
                        f"handed leadership to {leader.name} in "
                        f"{self.clock() - started:.2f}s before shutting down"
                    )
            self.sleep(0.05)
        return f"handover to {target} did not finish within {timeout:.0f}s; shutting down anyway"
