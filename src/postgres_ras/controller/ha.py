"""The HA loop: observe, decide (pure), apply. One logged sentence per cycle.

The lease: each cycle starts by proving liveness to Consul (check pass +
session renew). When the snapshot read right after shows our session on the
leader key, we are confirmed leader until ``t0 + min(retry_timeout, ttl - 1)``
where t0 is the time before the keepalive was sent; Consul cannot drop the
lock before ``t0 + ttl``, which is later. The heartbeat thread hands the remaining lease to the
agent, which stops postgres when it runs out.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from postgres_ras.config import NodeConfig
from postgres_ras.controller import probe
from postgres_ras.controller.agent_client import AgentClient
from postgres_ras.controller.decide import PENDING_INIT, decide
from postgres_ras.controller.leader import LeaderDuties
from postgres_ras.controller.publisher import RolePublisher
from postgres_ras.controller.state import (
    Action,
    Decision,
    NodeView,
    Observation,
    PeerView,
    Role,
    Settings,
)
from postgres_ras.dcs.base import Cluster
from postgres_ras.dcs.consul import ConsulDCS
from postgres_ras.errors import AgentError, DCSError
from postgres_ras.lsn import format_lsn

log = logging.getLogger("pgras.controller")


@dataclass(frozen=True)
class Snapshot:
    """What the REST API serves: the last observation and decision, replaced whole."""

    observation: Observation | None = None
    decision: Decision | None = None
    primary_ok: bool = False
    at: float = 0.0


class HA:
    def __init__(
        self,
        config: NodeConfig,
        dcs: ConsulDCS,
        agent: AgentClient,
        publisher: RolePublisher,
        clock: Callable[[], float] = time.monotonic,
        probe_all: Callable[[list[probe.Target]], tuple[PeerView, ...]] = probe.probe_all,
    ) -> None:
        self.config = config
        self.dcs = dcs
        self.agent = agent
        self.publisher = publisher
        self.clock = clock
        self.probe_all = probe_all
        self.lease_deadline: float | None = None
        self.last_leader: str | None = None
        self.last_leader_api: str | None = None
        self.last_leader_lsn: int | None = None
        self.snapshot = Snapshot()
        self.duties = LeaderDuties(config, dcs, agent, clock)
        self.stop_event = threading.Event()
        self._last_warning = ""
        self.not_streaming_since: float | None = None
        self._lease_until = 0.0

    # --- settings ---------------------------------------------------------------
    def settings(self, cluster: Cluster | None) -> Settings:
        ha = self.config.ha
        base = Settings(
            ha.ttl, ha.loop_wait, ha.retry_timeout, ha.maximum_lag_on_failover, ha.synchronous_mode
        )
        dynamic = (cluster.config if cluster else None) or {}
        try:
            merged = replace(
                base, **{k: v for k, v in dynamic.items() if k in Settings.__dataclass_fields__}
            )
            numbers = (
                merged.ttl,
                merged.loop_wait,
                merged.retry_timeout,
                merged.maximum_lag_on_failover,
            )
            if not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in numbers
            ):
                raise ValueError("timing values must be finite numbers")
            if not (0 < merged.loop_wait < merged.retry_timeout < merged.ttl <= 600):
                raise ValueError("need 0 < loop_wait < retry_timeout < ttl <= 600")
            if merged.synchronous_mode:
                raise ValueError("synchronous_mode is not available in this release")
            return Settings(
                float(merged.ttl),
                float(merged.loop_wait),
                float(merged.retry_timeout),
                int(merged.maximum_lag_on_failover),
                bool(merged.synchronous_mode),
            )
        except (TypeError, ValueError, OverflowError) as exc:
            log.warning("ignoring invalid dynamic config in Consul (%s); using local values", exc)
            return base

    def lease_remaining(self) -> float | None:
        if self.lease_deadline is None:
            return None
        return max(0.0, self.lease_deadline - self.clock())

    # --- observe ---------------------------------------------------------------
    def observe(self, t0: float) -> Observation:
        cluster: Cluster | None = None
        settings = self.settings(
            self.snapshot.observation.cluster if self.snapshot.observation else None
        )
        try:
            self.dcs.keepalive(settings.ttl)
            # Consul holds our lock at least ttl past t0 with the check just passed; the
            # lease must end before that even if the dynamic config changes this cycle.
            protected = min(settings.retry_timeout, settings.ttl - 1.0)
            cluster = self.dcs.get_cluster()
            settings = self.settings(cluster)
            protected = min(protected, settings.retry_timeout)
            self._lease_until = t0 + protected
        except DCSError as exc:
            self._warn_once(str(exc))
        node: NodeView | None = None
        try:
            node = NodeView.from_status(self.agent.status())
        except (AgentError, ValueError, KeyError, TypeError) as exc:
            log.warning("cannot read the agent's status: %s", exc)
        if cluster is not None:
            self._last_warning = ""
            leader = cluster.leader
            if leader is not None and leader.session == self.dcs.session:
                self.lease_deadline = self._lease_until
            else:
                self.lease_deadline = None
            self._remember_leader(cluster)
        lease_valid = self.lease_deadline is not None and self.clock() < self.lease_deadline
        peers: tuple[PeerView, ...] = ()
        i_run_primary = node is not None and node.running and node.role is Role.PRIMARY
        if (
            cluster is not None
            and node is not None
            and (
                (cluster.leader is None and not i_run_primary)  # a primary re-acquires at once
                or (cluster.switchover and cluster.switchover.source == self.config.name)
            )
        ):
            peers = self.probe_all(self._probe_targets(cluster))
        not_streaming_for = self._track_streaming(node, cluster)
        return Observation(
            me=self.config.name,
            node=node,
            cluster=cluster,
            session=self.dcs.session,
            stale_sessions=frozenset(self.dcs.stale_sessions),
            lease_valid=lease_valid,
            nofailover=self.config.tags.nofailover,
            settings=settings,
            last_leader=self.last_leader,
            last_leader_lsn=self.last_leader_lsn,
            peers=peers,
            now_wall=time.time(),
            not_streaming_for=not_streaming_for,
        )

    def _track_streaming(self, node: NodeView | None, cluster: Cluster | None) -> float:
        """Seconds this replica has pointed at the leader without streaming from it."""
        lm = cluster.leader_member if cluster else None
        pointed = (
            node is not None
            and node.running
            and node.role is Role.REPLICA
            and not node.job
            and lm is not None
            and node.upstream == f"{lm.conn_host}:{lm.conn_port}"
        )
        if not pointed or (node is not None and node.streaming):
            self.not_streaming_since = None
            return 0.0
        if self.not_streaming_since is None:
            self.not_streaming_since = self.clock()
        return self.clock() - self.not_streaming_since

    def _warn_once(self, message: str) -> None:
        if message != self._last_warning:
            log.warning("%s; retrying every cycle", message)
            self._last_warning = message

    def _remember_leader(self, cluster: Cluster) -> None:
        lm = cluster.leader_member
        if cluster.leader is not None:
            self.last_leader = cluster.leader.name
        if lm is not None:
            self.last_leader_api = lm.api_url
            if lm.lsn is not None and lm.role == "primary":
                self.last_leader_lsn = lm.lsn

    def _probe_targets(self, cluster: Cluster) -> list[probe.Target]:
        targets = {m.name: m.api_url for m in cluster.members if m.name != self.config.name}
        if self.last_leader and self.last_leader != self.config.name and self.last_leader_api:
            targets.setdefault(self.last_leader, self.last_leader_api)
        return [probe.Target(n, u) for n, u in sorted(targets.items())]

    # --- act ---------------------------------------------------------------------
    def apply(self, d: Decision, o: Observation) -> str:
        a = Action
        if d.action in (a.WAIT, a.HOLD):
            if d.action is a.HOLD and o.node and o.node.role is Role.PRIMARY:
                self.duties.housekeeping(o)
            return d.reason
        if d.action is a.BOOTSTRAP:
            if o.cluster is not None and o.cluster.initialize == PENDING_INIT:
                self.dcs.delete("initialize")  # left by a member that died bootstrapping
            if not self.dcs.cas("initialize", PENDING_INIT, 0):
                return "lost the initialize race; another member bootstraps the cluster"
            if not self.dcs.acquire_leader():
                self.dcs.delete("initialize")
                return "won initialize but not the leader lock; backing off"
            self._confirm_lease(o)
            self.agent.bootstrap()
            self.duties.history(o, "bootstrap")
            return "initializing a new cluster (initdb)"
        if d.action is a.CLONE:
            assert d.upstream is not None
            self.agent.clone(d.upstream)
            return d.reason
        if d.action is a.START_PRIMARY:
            self.agent.start_primary()
            return d.reason
        if d.action in (a.START_REPLICA, a.FOLLOW):
            self.agent.start_replica(d.upstream)
            return d.reason
        if d.action is a.REWIND:
            self.not_streaming_since = None
            self.agent.start_replica(d.upstream, rewind=True)
            return d.reason
        if d.action is a.ACQUIRE:
            if self.dcs.acquire_leader():
                self._confirm_lease(o)
                return "re-acquired the free leader lock as the running primary"
            return "could not re-acquire the leader lock: someone else took it"
        if d.action is a.ACQUIRE_AND_PROMOTE:
            if not self.dcs.acquire_leader():
                return "lost the leader race"
            self._confirm_lease(o)
            self.agent.promote()
            self._after_promotion(
                o, "failover" if not o.cluster or not o.cluster.switchover else "switchover"
            )
            return "won the leader race and promoted postgres"
        if d.action is a.PROMOTE:
            self.agent.promote()
            self._after_promotion(o, "promote")
            return d.reason
        if d.action is a.TAKE_OVER:
            assert o.cluster is not None and o.cluster.leader is not None
            ok = self.dcs.take_over_leader(o.cluster.leader.index)
            self.dcs.destroy_stale_sessions()
            if ok:
                self._confirm_lease(o)
                return d.reason
            return "could not take over my previous leader lock (it changed meanwhile)"
        if d.action is a.RELEASE:
            self.lease_deadline = None
            self.dcs.release_leader()
            if o.cluster is not None and o.cluster.initialize == PENDING_INIT:
                self.dcs.delete("initialize")
            return d.reason
        if d.action is a.DROP_STALE:
            self.dcs.destroy_stale_sessions()
            return d.reason
        if d.action is a.DEMOTE:
            self.lease_deadline = None
            self._heartbeat()
            self.agent.stop("fast", d.reason)
            return d.reason + " (postgres stopped, client connections terminated)"
        if d.action is a.SWITCHOVER:
            return self._switchover(d, o)
        raise AssertionError(f"unhandled action {d.action}")

    def _confirm_lease(self, o: Observation) -> None:
        # Acquired just now: Consul keeps it at least ttl past this cycle's keepalive (t0).
        self.lease_deadline = self._lease_until
        self._heartbeat()

    def _after_promotion(self, o: Observation, why: str) -> None:
        if o.cluster is not None and o.cluster.switchover is not None:
            self.dcs.delete("switchover")
        self.duties.history(o, why)
        self.duties.slots = None
        self.duties.housekeeping(o)

    def _switchover(self, d: Decision, o: Observation) -> str:
        sentence, handed_over = self.duties.switchover(d, o)
        if handed_over:
            self.lease_deadline = None
            self._heartbeat()
            self.dcs.release_leader()
        return sentence

    # --- publish -------------------------------------------------------------------
    def member_data(self, o: Observation) -> dict[str, Any]:
        node = o.node
        role = node.role.value if node else "unknown"
        state = "unknown"
        if node is not None:
            state = node.job or (
                "fenced"
                if node.fenced and not node.running
                else "running"
                if node.running
                else "stopped"
            )
        c = self.config
        return {
            "api_url": f"http://{c.controller.host}:{c.controller.port}",
            "conn_host": c.postgres.host,
            "conn_port": c.postgres.port,
            "role": role,
            "state": state,
            "timeline": node.timeline if node else None,
            "lsn": format_lsn(node.lsn) if node and node.lsn is not None else None,
            "streaming": bool(node and node.streaming),
            "tags": {"nofailover": c.tags.nofailover, "noloadbalance": c.tags.noloadbalance},
        }

    def _heartbeat(self) -> None:
        try:
            self.agent.heartbeat(self.lease_remaining())
        except AgentError:
            pass

    def heartbeat_loop(self, interval: float = 0.25) -> None:
        while not self.stop_event.wait(interval):
            self._heartbeat()

    # --- the cycle -------------------------------------------------------------------
    def cycle(self) -> Observation:
        t0 = self.clock()
        o = self.observe(t0)
        d = decide(o)
        try:
            sentence = self.apply(d, o)
        except (DCSError, AgentError) as exc:
            sentence = f"{d.reason} failed: {exc}"
        primary_ok = bool(
            o.node
            and o.node.running
            and o.node.role is Role.PRIMARY
            and self.lease_remaining()
            and o.cluster is not None
            and o.cluster.leader is not None
            and o.cluster.leader.session == self.dcs.session
        )
        self.snapshot = Snapshot(o, d, primary_ok, time.time())
        if o.cluster is not None:
            try:
                self.dcs.touch_member(self.member_data(o))
            except DCSError as exc:
                log.warning("%s", exc)
        role = (
            "primary"
            if primary_ok
            else ("replica" if o.node and o.node.role is Role.REPLICA else "none")
        )
        self.publisher.publish(role)
        # One sentence per cycle, as Patroni does: grep a line, land on its branch.
        log.info("%s (role=%s)", sentence, role)
        return o

    def run(self) -> None:
        heart: threading.Thread | None = None
        while not self.stop_event.is_set():
            t0 = self.clock()
            try:
                o = self.cycle()
            except Exception:  # the one top-level handler: a bug must not stop the HA loop
                log.exception("HA cycle failed unexpectedly; retrying in loop_wait")
                self.stop_event.wait(self.config.ha.loop_wait)
                continue
            if heart is None:
                # Heart-beat only after the first cycle, so a restarted controller does
                # not tell the agent "no lease" before it could take over its own lock.
                heart = threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True)
                heart.start()
            remaining = o.settings.loop_wait - (self.clock() - t0)
            if remaining <= 0:
                continue
            if o.node is None or o.node.job:
                # Waiting on the agent (starting up, or a job running): look again soon.
                self.stop_event.wait(min(remaining, 0.1))
                continue
            leading = self.snapshot.primary_ok
            if o.cluster is None or leading:
                self.stop_event.wait(remaining)
                continue
            try:
                self.dcs.wait_for_change(o.cluster.index, remaining)
            except DCSError:
                self.stop_event.wait(min(remaining, 0.5))
            # A blocking query that returns at once (index reset) must not spin.
            spent = self.clock() - t0
            if spent < 0.05:
                self.stop_event.wait(0.05 - spent)

    def shutdown(self) -> None:
        """Clean stop: a leader stops postgres and releases the lock; everyone leaves."""
        self.stop_event.set()
        try:
            if self.snapshot.primary_ok:
                self.lease_deadline = None
                self.agent.stop("fast", "controller shutting down")
                self.dcs.release_leader()
            self.dcs.delete_member(self.config.name)
            self.dcs.close()
        except (DCSError, AgentError) as exc:
            log.warning("unclean shutdown: %s", exc)
