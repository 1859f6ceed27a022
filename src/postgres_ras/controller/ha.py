"""The HA loop: observe, decide (pure), apply. One logged sentence per cycle.

Each cycle renews the leader lease (controller/lease.py) before it reads the
cluster; the heartbeat thread hands the remaining lease to the agent, which
stops postgres when it runs out.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from postgres_ras.clock import boottime
from postgres_ras.config import NodeConfig
from postgres_ras.controller import probe
from postgres_ras.controller.agent_client import AgentClient
from postgres_ras.controller.decide import PENDING_INIT, decide, unsettled
from postgres_ras.controller.leader import LeaderDuties
from postgres_ras.controller.lease import Lease
from postgres_ras.controller.member import member_value
from postgres_ras.controller.publisher import RolePublisher, report_cycle
from postgres_ras.controller.state import (
    Action,
    Decision,
    NodeView,
    Observation,
    PeerView,
    Role,
    Settings,
)
from postgres_ras.controller.sync import SyncKeeper
from postgres_ras.controller.timers import (
    FirstSeen,
    Stopwatch,
    leading_without_primary,
    not_streaming,
)
from postgres_ras.dcs.base import DCS, OPTIME_KEY, REMOVED_PREFIX, Cluster
from postgres_ras.errors import AgentError, DCSError, FatalError
from postgres_ras.lsn import format_lsn

log = logging.getLogger(__name__)

# How long the first cycle waits for an agent starting beside the controller.
AGENT_START_WAIT = 2.0


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
        dcs: DCS,
        agent: AgentClient,
        publisher: RolePublisher,
        clock: Callable[[], float] = boottime,
        probe_all: Callable[[list[probe.Target]], tuple[PeerView, ...]] = probe.probe_all,
        identify: Callable[[str], tuple[str, str] | None] = probe.identity,
    ) -> None:
        self.config = config
        self.dcs = dcs
        self.agent = agent
        self.publisher = publisher
        self.clock = clock
        self.probe_all = probe_all
        self.identify = identify
        self.lease = Lease(clock)
        self.last_leader: str | None = None
        self.last_leader_api: str | None = None
        self.last_leader_lsn: int | None = None
        self.snapshot = Snapshot()
        self.duties = LeaderDuties(config, dcs, agent, clock)
        self.sync = SyncKeeper(config.name, dcs, agent)
        self.stop_event = threading.Event()
        self._last_warning = ""
        self.not_streaming = Stopwatch(clock)
        self.unsettled = Stopwatch(clock)
        self.not_serving = Stopwatch(clock)
        self.switchover_seen = FirstSeen(clock)
        self.demoting = False  # inside a demotion: the API must not say "healthy primary"
        self.instance = uuid.uuid4().hex
        self.refused: str | None = None  # why this controller refused to run, if it did
        self._name_checked = False
        self._settings = Settings.merged(config.ha, config.agent.fence_timeout, None)
        self._dynamic_seen: dict[str, Any] | None = None

    # --- settings ---------------------------------------------------------------
    def settings(self, cluster: Cluster | None) -> Settings:
        """The policy in force: Consul ``config`` over the file, if it validates.

        A bad value is logged once and ignored; the last good config stays in force.
        """
        dynamic = cluster.config if cluster else None
        if dynamic == self._dynamic_seen:
            return self._settings
        self._dynamic_seen = dynamic
        try:
            self._settings = Settings.merged(
                self.config.ha, self.config.agent.fence_timeout, dynamic
            )
        except ValueError as exc:
            log.warning(
                "ignoring invalid dynamic config in Consul (%s); keeping the last good one", exc
            )
        return self._settings

    # --- observe ---------------------------------------------------------------
    def observe(self, t0: float) -> Observation:
        cluster: Cluster | None = None
        settings = self.settings(
            self.snapshot.observation.cluster if self.snapshot.observation else None
        )
        try:
            if not self._name_checked:
                self._refuse_a_live_twin()
            self.dcs.keepalive(settings.ttl)
            kept_alive = settings
            cluster = self.dcs.get_cluster()
            settings = self.settings(cluster)
            # The keepalive's ttl, and the shorter retry_timeout should the dynamic config
            # have changed it this cycle.
            self.lease.renewed(
                t0, kept_alive.ttl, min(kept_alive.retry_timeout, settings.retry_timeout)
            )
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
                self.lease.confirm()
            else:
                self.lease.drop()
            self._remember_leader(cluster)
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
        not_serving_for = (
            self.not_serving.elapsed()  # cannot tell whether I lead: Consul loss has its rule
            if cluster is None
            else self.not_serving.held(leading_without_primary(node, cluster, self.dcs.session))
        )
        known_lsn = cluster.optime if cluster is not None else None
        o = Observation(
            me=self.config.name,
            node=node,
            cluster=cluster,
            session=self.dcs.session,
            stale_sessions=frozenset(self.dcs.stale_sessions),
            lease_valid=self.lease.valid,
            nofailover=self.config.tags.nofailover,
            settings=settings,
            last_leader=self.last_leader,
            last_leader_lsn=known_lsn if known_lsn is not None else self.last_leader_lsn,
            peers=peers,
            now_wall=time.time(),
            not_streaming_for=self.not_streaming.held(not_streaming(node, cluster)),
            not_serving_for=not_serving_for,
            switchover_age=(
                self.switchover_seen.age(cluster.switchover) if cluster is not None else 0.0
            ),
        )
        return replace(o, unsettled_for=self.unsettled.held(bool(unsettled(o))))

    def _refuse_a_live_twin(self) -> None:
        """Before our first keepalive (which re-registers the TTL check by name and takes
        sessions with our name as stale): is a live controller already using our name?

        Raises FatalError when one answers; its session, lock and member key stay intact.
        """
        me = self.dcs.get_cluster().member(self.config.name)
        if me is not None and me.session is not None:
            found = self.identify(me.api_url)
            if found is not None and found[0] == self.config.name and found[1] != self.instance:
                raise FatalError(
                    f"member name {self.config.name!r} is already in use by a live controller "
                    f"at {me.api_url} (Consul session {me.session}): refusing to start; give "
                    "every member a unique name (name / PGRAS_NAME)"
                )
        self._name_checked = True

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
            if lm.lsn is not None and lm.role == Role.PRIMARY:
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
                changed = self.sync.reconcile(o)
                return f"{d.reason}; {changed}" if changed else d.reason
            return d.reason
        if d.action is a.BOOTSTRAP:
            if o.cluster is not None and o.cluster.initialize == PENDING_INIT:
                self.dcs.delete("initialize")  # left by a member that died bootstrapping
            if not self.dcs.cas("initialize", PENDING_INIT, 0):
                return "lost the initialize race; another member bootstraps the cluster"
            if not self.dcs.acquire_leader():
                self.dcs.delete("initialize")
                return "won initialize but not the leader lock; backing off"
            self._hold_lease()
            self.agent.bootstrap()
            self.duties.history(o, "bootstrap")
            return "initializing a new cluster (initdb)"
        if d.action is a.CLONE:
            assert d.upstream is not None
            self.agent.clone(d.upstream)
            return d.reason
        if d.action is a.START_PRIMARY:
            self._heartbeat()  # the agent starts a primary only under a lease it knows
            self.agent.start_primary()
            return d.reason
        if d.action in (a.START_REPLICA, a.FOLLOW):
            self.agent.start_replica(d.upstream)
            return d.reason
        if d.action is a.REWIND:
            self.not_streaming.reset()
            self.agent.start_replica(d.upstream, rewind=True)
            return d.reason
        if d.action is a.ACQUIRE:
            if self.dcs.acquire_leader():
                self._hold_lease()
                return "re-acquired the free leader lock as the running primary"
            return "could not re-acquire the leader lock: someone else took it"
        if d.action is a.ACQUIRE_AND_PROMOTE:
            if not self.dcs.acquire_leader():
                return "lost the leader race"
            self._hold_lease()
            if not self.sync.before_promotion(o):
                return (
                    "won the leader race, not promoting: the sync key changed or does not name me"
                )
            self.agent.promote(self._slots(o))
            self.duties.after_promotion(
                o, "failover" if not o.cluster or not o.cluster.switchover else "switchover"
            )
            return "won the leader race and promoted postgres"
        if d.action is a.PROMOTE:
            self._heartbeat()
            if not self.sync.before_promotion(o):
                return "not promoting: the sync key changed meanwhile or does not name me"
            self.agent.promote(self._slots(o))
            self.duties.after_promotion(o, "promote")
            return d.reason
        if d.action is a.TAKE_OVER:
            assert o.cluster is not None and o.cluster.leader is not None
            ok = self.dcs.take_over_leader(o.cluster.leader.index)
            self.dcs.destroy_stale_sessions()
            if ok:
                self._hold_lease()
                return d.reason
            return "could not take over my previous leader lock (it changed meanwhile)"
        if d.action is a.RELEASE:
            self._release_lock()
            if o.cluster is not None and o.cluster.initialize == PENDING_INIT:
                self.dcs.delete("initialize")
            return d.reason
        if d.action is a.CANCEL_SWITCHOVER:
            self.dcs.delete("switchover")
            return d.reason
        if d.action is a.ABDICATE:
            return self._abdicate(d)
        if d.action is a.DROP_STALE:
            self.dcs.destroy_stale_sessions()
            return d.reason
        if d.action is a.DEMOTE:
            self._drop_lease()
            self.demoting = True
            try:
                self.agent.stop("fast", d.reason)
            finally:
                self.demoting = False
            return d.reason + " (postgres stopped, client connections terminated)"
        if d.action is a.SWITCHOVER:
            return self._switchover(d, o)
        raise AssertionError(f"unhandled action {d.action}")

    def _slots(self, o: Observation) -> list[str]:
        """The slots to create before promoting, while they can still reserve the WAL from
        our last restartpoint: the former primary's pg_rewind needs it, and the checkpoint
        that follows a promotion removes what no slot holds."""
        return self.duties.member_slots.wanted(o.cluster) if o.cluster is not None else []

    def _abdicate(self, d: Decision) -> str:
        """Stop postgres (best effort) and free the lock: a leader that cannot serve."""
        self._drop_lease()  # the agent's fence stops a primary that comes up late
        self.demoting = True
        try:
            self.agent.stop("fast", d.reason)
            stopped = "postgres stopped"
        except AgentError as exc:
            stopped = f"agent did not confirm the stop ({exc}); its fence stops a leaseless primary"
        finally:
            self.demoting = False
        self._release_lock()
        self.not_serving.reset()
        return f"{d.reason} ({stopped})"

    def _hold_lease(self) -> None:
        """We hold the lock (acquired just now): tell the agent at once."""
        self.lease.confirm()
        self._heartbeat()

    def _drop_lease(self) -> None:
        """Before postgres stops or the lock goes: the agent must not hold a stale lease."""
        if self.lease.deadline is not None:
            self.lease.drop()
            self._heartbeat()

    def _release_lock(self) -> None:
        self._drop_lease()
        self.dcs.release_leader()

    def _switchover(self, d: Decision, o: Observation) -> str:
        self.demoting = True
        try:
            sentence, handed_over = self.duties.switchover(d, o)
        finally:
            self.demoting = False
        if handed_over:
            self._release_lock()
        return sentence

    # --- publish -------------------------------------------------------------------
    def _publish_optime(self, lsn: int, cluster: Cluster | None) -> None:
        """Publish the leader's WAL position: outlives our session, read by every race."""
        if cluster is not None and cluster.optime == lsn:
            return
        try:
            self.dcs.put(OPTIME_KEY, format_lsn(lsn))
        except DCSError as exc:
            log.warning("could not publish the leader position: %s", exc)

    def _heartbeat(self) -> None:
        try:
            self.agent.heartbeat(self.lease.remaining(), self.lease.deadline)
        except AgentError:
            pass

    def heartbeat_loop(self, interval: float = 0.25) -> None:
        while not self.stop_event.wait(interval):
            self._heartbeat()

    # --- the cycle -------------------------------------------------------------------
    def cycle(self) -> Observation:
        t0 = self.clock()
        o = self.observe(t0)
        if o.cluster is not None:
            self.duties.member_slots.observe(o.cluster)
        d = decide(o)
        try:
            sentence = self.apply(d, o)
        except (DCSError, AgentError) as exc:
            sentence = f"{d.reason} failed: {exc}"
        primary_ok = bool(
            o.node
            and o.node.running
            and o.node.role is Role.PRIMARY
            and self.lease.remaining()
            and o.cluster is not None
            and o.cluster.leader is not None
            and o.cluster.leader.session == self.dcs.session
        )
        self.snapshot = Snapshot(o, d, primary_ok, time.time())
        if primary_ok and o.node is not None and o.node.lsn is not None:
            self._publish_optime(o.node.lsn, o.cluster)
        if o.cluster is not None:
            try:
                self.dcs.touch_member(member_value(self.config, o))
            except DCSError as exc:
                log.warning("%s", exc)
        role = (
            "primary"
            if primary_ok
            else ("replica" if o.node and o.node.role is Role.REPLICA else "none")
        )
        self.publisher.publish(role)
        report_cycle(self.publisher, d, o, sentence)  # events: promotion, fencing, ...
        # One sentence per cycle, as Patroni does: grep a line, land on its branch.
        log.info("%s (role=%s)", sentence, role)
        return o

    def _await_agent(self, timeout: float = AGENT_START_WAIT) -> None:
        """Before the first cycle, give an agent that starts beside us time to listen.

        Polled every 20 ms and quietly: a first cycle without the agent would only log
        "agent unreachable" and look again a cycle later, which a member restarting after a
        crash pays on its way back (~0.1 s of a ~1 s rejoin). Bounded: an agent that stays
        down is the cycle's business.
        """
        deadline = time.monotonic() + timeout  # real time, as the waits between polls
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            try:
                self.agent.status()
                return
            except AgentError:
                self.stop_event.wait(0.02)

    def run(self) -> None:
        heart: threading.Thread | None = None
        self._await_agent()
        while not self.stop_event.is_set():
            t0 = self.clock()
            try:
                o = self.cycle()
            except FatalError as exc:
                # Nothing of ours to clean up but our own session: shutdown() leaves the
                # member key and the check (named like a live twin's) alone.
                log.error("%s", exc)
                self.refused = str(exc)
                self.stop_event.set()
                try:
                    self.dcs.abandon()
                except DCSError:
                    pass
                return
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
            decision = self.snapshot.decision
            if remaining <= 0 or (decision is not None and decision.action is Action.SWITCHOVER):
                # After a switchover look again at once: follow the target, or restart as
                # primary if it was aborted.
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

    def shutdown(self, removed: bool = False) -> None:
        """Clean stop: a leader stops postgres and releases the lock; everyone leaves.

        ``removed``: this member leaves for good (a scale-down), so the leader drops its
        replication slot at once instead of keeping it for a return (member_slots_ttl).
        """
        self.stop_event.set()
        if self.refused is not None:
            return
        try:
            if self.snapshot.primary_ok:
                # No heartbeat first: the agent's fence would race this stop, and a stop by
                # the fence returns no final checkpoint position.
                self.lease.drop()
                result = self.agent.stop("fast", "controller shutting down")
                if result.get("checkpoint_lsn"):
                    # Final position, so no stale member can win after a full restart.
                    self.dcs.put(OPTIME_KEY, str(result["checkpoint_lsn"]))
                self.dcs.release_leader()
            self.dcs.delete_member(self.config.name)
            if removed:
                self.dcs.put(REMOVED_PREFIX + self.config.name, str(time.time()))
            self.dcs.close()
        except (DCSError, AgentError) as exc:
            log.warning("unclean shutdown: %s", exc)
