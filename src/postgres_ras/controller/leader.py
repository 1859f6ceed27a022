"""What only the leader does: housekeeping of Consul keys and slots, history, switchover.

Separate from the loop so each duty reads on its own. A switchover stays
within the leader lease: the catch-up wait is shorter than retry_timeout, so
after an aborted switchover the next cycle finds the lock still ours and
decide() starts postgres as primary again (or, if it lapsed, we race like
everybody else).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from postgres_ras.config import NodeConfig
from postgres_ras.controller import probe
from postgres_ras.controller.agent_client import AgentClient
from postgres_ras.controller.decide import PENDING_INIT, SWITCHOVER_TIMEOUT
from postgres_ras.controller.slots import MemberSlots
from postgres_ras.controller.state import Decision, Observation, PeerView
from postgres_ras.dcs.base import DCS, OPTIME_KEY, REMOVED_PREFIX, Switchover
from postgres_ras.errors import AgentError, DCSError
from postgres_ras.lsn import format_lsn, parse_lsn

log = logging.getLogger(__name__)

SWITCHOVER_CATCHUP = 2.0


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


class LeaderDuties:
    def __init__(
        self,
        config: NodeConfig,
        dcs: DCS,
        agent: AgentClient,
        clock: Callable[[], float] = time.monotonic,
        probe_one: Callable[[probe.Target, float, bool], PeerView] = probe.probe_one,
    ) -> None:
        self.config = config
        self.dcs = dcs
        self.agent = agent
        self.clock = clock
        self.probe_one = probe_one
        self.slots: list[str] | None = None
        self.member_slots = MemberSlots(config.name, config.ha.member_slots_ttl, clock)

    def history(self, o: Observation, why: str) -> None:
        history = list(o.cluster.history) if o.cluster else []
        lsn = o.node.lsn if o.node else None
        history.append(
            {
                "leader": self.config.name,
                "why": why,
                "at": time.time(),
                "lsn": format_lsn(lsn) if lsn is not None else None,
                "timeline": (o.node.timeline or 0)
                + (1 if why in ("failover", "switchover", "promote") else 0)
                if o.node
                else None,
            }
        )
        try:
            self.dcs.put("history", _json(history[-100:]))
        except DCSError as exc:
            log.warning("could not record history: %s", exc)

    def after_promotion(self, o: Observation, why: str) -> None:
        """History, the switchover request done with, and slots recomputed for the new role."""
        if o.cluster is not None and o.cluster.switchover is not None:
            self.dcs.delete("switchover")
        self.history(o, why)
        self.slots = None
        self.housekeeping(o)

    def housekeeping(self, o: Observation) -> None:
        cluster, node = o.cluster, o.node
        if cluster is None or node is None or not node.running:
            return
        if node.sysid and cluster.initialize in (None, PENDING_INIT):
            self.dcs.put("initialize", node.sysid)
        if cluster.config is None:
            s = o.settings
            self.dcs.cas(
                "config",
                _json(
                    {
                        "ttl": s.ttl,
                        "loop_wait": s.loop_wait,
                        "retry_timeout": s.retry_timeout,
                        "maximum_lag_on_failover": s.maximum_lag_on_failover,
                        "synchronous_mode": s.synchronous_mode,
                        "synchronous_node_count": s.synchronous_node_count,
                        "synchronous_mode_strict": s.synchronous_mode_strict,
                        "primary_start_timeout": s.primary_start_timeout,
                    }
                ),
                0,
            )
        if cluster.switchover and o.switchover_age > SWITCHOVER_TIMEOUT:
            log.warning("dropping a stale switchover request from %s", cluster.switchover.source)
            self.dcs.delete("switchover")
        wanted = self.member_slots.wanted(cluster)
        if wanted != self.slots:
            try:
                result = self.agent.ensure_slots(wanted)
                # Slots still in use by a departed member are retried next cycle.
                self.slots = None if result.get("busy") else wanted
                if result.get("created") or result.get("dropped"):
                    log.info(
                        "replication slots: created %s, dropped %s",
                        result.get("created"),
                        result.get("dropped"),
                    )
            except AgentError as exc:
                log.warning("could not manage replication slots: %s", exc)
        if self.slots == wanted:  # the slots of removed members are gone
            for name in self.member_slots.markers_done(cluster, time.time()):
                self.dcs.delete(REMOVED_PREFIX + name)

    def switchover(self, d: Decision, o: Observation) -> tuple[str, bool]:
        """Stop postgres and wait for the target to hold all WAL; True when it may take over."""
        assert o.cluster is not None and d.target is not None
        target = o.cluster.member(d.target)
        if target is None:
            return f"switchover target {d.target} vanished", False
        result = self.agent.stop("fast", f"switchover to {d.target}")
        checkpoint = parse_lsn(result["checkpoint_lsn"]) if result.get("checkpoint_lsn") else None
        deadline = self.clock() + SWITCHOVER_CATCHUP
        caught_up = False
        while checkpoint is not None and self.clock() < deadline:
            # fresh: the target's position read now, not at its last cycle
            peer = self.probe_one(probe.Target(target.name, target.api_url), 0.5, True)
            if peer.lsn is not None and peer.lsn > checkpoint:
                caught_up = True
                break
            time.sleep(0.02)
        if not caught_up:
            self.dcs.delete("switchover")
            return (
                f"switchover aborted: {d.target} did not receive the final WAL; postgres "
                "restarts as primary next cycle if the lock is still mine",
                False,
            )
        # The final position, so the lag check of every race counts the WAL only the
        # target received; then name the target so that only it races for the lock.
        if checkpoint is not None:
            self.dcs.put(OPTIME_KEY, format_lsn(checkpoint))
        self.dcs.put("switchover", Switchover(self.config.name, d.target, time.time()).to_json())
        return f"handed the leader lock to {d.target} after it received all WAL (switchover)", True
