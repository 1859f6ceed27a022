"""Fault injection, one fault at a time: ``run_fault`` (any target: note the leader,
inject, restore, wait for full strength) and ``Injector``, the local cluster's faults.

Each fault: note the leader, inject, let the cluster react (bounded), bring
back whatever was killed (``LocalCluster.up``, which starts only what is
missing, as a restarted pod would), then wait for full strength: one
running primary, every other member streaming, every process of every node
and of the access layer alive, held for a few polls in a row.

Faults: ``kill-primary`` (SIGKILL controller, agent, postmaster), ``kill-controller``
and ``kill-agent`` (the primary's; a killed agent comes back after
RESTART_DELAY), ``stop-primary`` (the whole node SIGSTOPped for ttl + 2 s),
``kill-replica``, ``restart-consul`` (Consul server 0), ``kill-consul-leader``
(SIGKILL the raft leader of a cluster made with ``--consul-servers 3`` or 5;
the survivors elect another, it comes back with ``up``), ``double`` (the
primary, then the new primary before the old one is back), ``restart-pgpool``
and, as root, ``partition-primary`` (see ``partition.py``).

Guarantees: every wait is bounded; a frozen node is always resumed (SIGCONT
in ``finally``) and a partition always healed (``finally``); only processes
of the cluster's own process table, the postmasters they started and those
postmasters' children are signalled, by PID. Does not guarantee that the
cluster recovers: a fault not back at full strength within the timeout is
recorded with ``recovered=None`` and the caller stops injecting.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any, Protocol

from postgres_ras.errors import DCSError, PgrasError
from postgres_ras.local import consul_server
from postgres_ras.local.cluster import healthy
from postgres_ras.verify import partition
from postgres_ras.verify.events import FaultRecord

log = logging.getLogger(__name__)

FAULTS = (
    "kill-primary",
    "kill-controller",
    "kill-agent",
    "stop-primary",
    "kill-replica",
    "restart-consul",
    "kill-consul-leader",
    "double",
    "repeat",
    "restart-pgpool",
    "partition-primary",
)
# Faults that need more than one Consul server: a lone server's loss is an outage of the
# whole DCS, not an election among survivors.
NEEDS_CONSUL_QUORUM = {
    "kill-consul-leader": "kill-consul-leader needs a cluster started with --consul-servers 3",
}
REPEAT_DEFAULT = 10
# How long a killed agent stays dead before it is started again (a container restart).
RESTART_DELAY = 2.0
POLL = 0.2
STEADY_POLLS = 3


def _signal(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


class FaultError(PgrasError):
    """A fault could not be injected (no primary, no replica to kill...)."""


class FaultTarget(Protocol):
    """What ``run_fault`` needs of a cluster (``Injector``, ``target.Target``)."""

    def leader(self) -> str | None: ...

    def full_strength(self) -> bool: ...

    def restore(self) -> None: ...


def wait_full_strength(
    full_strength: Callable[[], bool], clock: Callable[[], float], timeout: float
) -> float | None:
    """The time (``clock``) full strength began, held for STEADY_POLLS polls in a row;
    None after ``timeout``."""
    deadline = time.monotonic() + timeout
    since: float | None = None
    streak = 0
    while time.monotonic() < deadline:
        if full_strength():
            since = since if since is not None else clock()
            streak += 1
            if streak >= STEADY_POLLS:
                return since
        else:
            since, streak = None, 0
        time.sleep(POLL)
    return None


def run_fault(
    target: FaultTarget,
    act: Callable[[str, str | None], tuple[str | None, str]],
    clock: Callable[[], float],
    timeout: float,
    run: int,
    name: str,
    label: str,
) -> FaultRecord:
    """One fault from start to full strength: note the leader, inject (``act(name,
    leader)``), restore what was taken away, wait (bounded) for full strength, note the
    leader again. A failed injection or restore is recorded as a note."""
    before = target.leader()
    started = clock()
    log.info("%s: injecting (leader %s)", label, before)
    try:
        hit, note = act(name, before)
    except (PgrasError, OSError) as exc:
        hit, note = None, f"injection failed: {exc}"
    injected = clock()
    try:
        target.restore()
    except PgrasError as exc:
        note = (note + "; " if note else "") + f"restart failed: {exc}"
    recovered = wait_full_strength(target.full_strength, clock, timeout)
    after = target.leader()
    log.info("%s: %s", label, "back at full strength" if recovered else "NOT recovered")
    return FaultRecord(run, name, label, hit, started, injected, recovered, before, after, note)


def leader_name(cluster: Any) -> str | None:
    """The leader key's holder in the local cluster, or None (none, or Consul unreachable)."""
    try:
        row = cluster.leader()
    except DCSError:
        return None
    return str(row.name) if row is not None else None


class Injector:
    def __init__(
        self,
        cluster: Any,  # local.cluster.LocalCluster (typed loosely: verify never changes it)
        clock: Callable[[], float],
        ttl: float,
        timeout: float = 90.0,
    ) -> None:
        self.cluster = cluster
        self.clock = clock
        self.ttl = ttl
        self.timeout = timeout
        self.nodes = list(cluster.node_names())

    # --- observation ------------------------------------------------------------------
    def leader(self) -> str | None:
        return leader_name(self.cluster)

    def _wait_leader(self, not_in: set[str], timeout: float) -> str | None:
        """A running primary whose name is not in ``not_in``, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                row = self.cluster.leader()
            except DCSError:
                row = None
            if (
                row is not None
                and row.name not in not_in
                and row.role == "primary"
                and row.state == "running"
            ):
                return str(row.name)
            time.sleep(POLL)
        return None

    def full_strength(self) -> bool:
        table = self.cluster.table
        procs = [*self.cluster.consul_names(), "haproxy", "pgpool"]
        procs += [f"{n}-{c}" for n in self.nodes for c in ("agent", "controller")]
        if any(table.get(p) is None for p in procs):
            return False
        try:
            c = self.cluster.raw_cluster()  # read once: the rows and the sync key agree
        except DCSError:
            return False
        if not healthy(self.cluster.members(cluster=c), len(self.nodes)):
            return False
        if c.config and c.config.get("synchronous_mode") is True:
            # Full strength in synchronous mode includes a confirmed standby: until one is
            # named, only the primary may lead, and the next fault would measure that wait.
            leader = c.leader.name if c.leader else None
            return any(n != leader for n in c.sync_names)
        return True

    def wait_full_strength(self, timeout: float) -> float | None:
        """The time full strength began, held for STEADY_POLLS polls; None after ``timeout``."""
        return wait_full_strength(self.full_strength, self.clock, timeout)

    # --- injection --------------------------------------------------------------------
    def actions(self) -> dict[str, Callable[[str | None], tuple[str | None, str]]]:
        return {
            "kill-primary": self._kill_primary,
            "kill-controller": lambda leader: self._kill_component(leader, "controller"),
            "kill-agent": lambda leader: self._kill_component(leader, "agent"),
            "stop-primary": self._stop_primary,
            "kill-replica": self._kill_replica,
            "restart-consul": self._restart_consul,
            "kill-consul-leader": self._kill_consul_leader,
            "double": self._double,
            "restart-pgpool": self._restart_pgpool,
            "partition-primary": self._partition_primary,
        }

    def act(self, name: str, leader: str | None) -> tuple[str | None, str]:
        """Inject ``name`` only (no restart, no wait for full strength)."""
        action = self.actions().get(name)
        if action is None:
            raise FaultError(f"unknown fault {name!r}")
        return action(leader)

    def restore(self) -> None:
        self.cluster.up(wait=0)

    def inject(self, run: int, name: str, label: str) -> FaultRecord:
        if name not in self.actions():
            raise FaultError(f"unknown fault {name!r}")
        if name in NEEDS_CONSUL_QUORUM and self.cluster.consul_servers < 3:
            raise FaultError(NEEDS_CONSUL_QUORUM[name])
        return run_fault(self, self.act, self.clock, self.timeout, run, name, label)

    def _need_leader(self, leader: str | None) -> str:
        if leader is None:
            raise FaultError("no primary to hit")
        return leader

    def _failover_window(self) -> float:
        return self.ttl * 3 + 10

    def _kill_primary(self, leader: str | None) -> tuple[str | None, str]:
        name = self._need_leader(leader)
        self.cluster.kill(name, signal.SIGKILL)
        new = self._wait_leader({name}, self._failover_window())
        return name, f"{new} took over" if new else "no new primary in time"

    def _kill_component(self, leader: str | None, component: str) -> tuple[str | None, str]:
        """SIGKILL the primary's controller (restarted once a replica took over, or after
        the failover window) or its agent (restarted after RESTART_DELAY, as a container
        runtime would: a dead agent leaves postgres running, so no failover is due)."""
        name = self._need_leader(leader)
        proc = self.cluster.table.get(f"{name}-{component}")
        if proc is None:
            raise FaultError(f"{name}-{component} is not running")
        os.kill(proc.pid, signal.SIGKILL)
        wait = self._failover_window() if component == "controller" else RESTART_DELAY
        new = self._wait_leader({name}, wait)
        return name, f"{new} took over" if new else f"no failover in {wait:.0f}s"

    def _stop_primary(self, leader: str | None) -> tuple[str | None, str]:
        """Freeze the whole node past the TTL: controller, agent, postmaster *and* every
        postgres child (LocalCluster.kill), so no open session keeps committing."""
        name = self._need_leader(leader)
        frozen: list[int] = []
        try:
            frozen = self.cluster.kill(name, signal.SIGSTOP)
            time.sleep(self.ttl + 2)
        finally:
            for pid in frozen:
                _signal(pid, signal.SIGCONT)
        new = self._wait_leader(set(), 5)
        return name, f"{len(frozen)} processes frozen {self.ttl + 2:.0f}s; leader now {new}"

    def _ports(self, name: str) -> list[int]:
        node = self.cluster.layout.node(int(name.removeprefix("node")))
        return [node.postgres, node.agent, node.api]

    def _partition_primary(self, leader: str | None) -> tuple[str | None, str]:
        """Cut the primary off from Consul and the other nodes (clients still reach it)
        until another member leads (bounded), plus two seconds; then heal."""
        reason = partition.unavailable()
        if reason:
            raise FaultError(reason)
        name = self._need_leader(leader)
        layout = self.cluster.layout
        others = [n for n in self.nodes if n != name]
        cut = partition.Partition(f"pgras-verify-{layout.base_port}")
        try:
            cut.cut(
                self.cluster.node_pids(name),
                [p for n in others for p in self.cluster.node_pids(n)],
                self._ports(name),
                [p for n in others for p in self._ports(n)],
                [
                    port
                    for server in layout.consul_servers(self.cluster.consul_servers)
                    for port in (server.http, server.server, server.serf)
                ],
            )
            new = self._wait_leader({name}, self._failover_window())
            time.sleep(2)
        finally:
            cut.heal()
        return name, f"{new} took over" if new else "no new primary while cut off"

    def _kill_replica(self, leader: str | None) -> tuple[str | None, str]:
        replicas = [
            r.name
            for r in self.cluster.members()
            if r.name != leader and r.role == "replica" and r.streaming
        ]
        if not replicas:
            raise FaultError("no streaming replica to kill")
        name = str(replicas[0])
        self.cluster.kill(name, signal.SIGKILL)
        # Let its member key lapse, as a lost pod's would, before it comes back.
        deadline = time.monotonic() + self.ttl + 5
        while time.monotonic() < deadline:
            if not any(r.name == name and r.streaming for r in self.cluster.members()):
                break
            time.sleep(POLL)
        return name, ""

    def _restart_consul(self, leader: str | None) -> tuple[str | None, str]:
        table, layout = self.cluster.table, self.cluster.layout
        table.stop(consul_server.NAME, timeout=10)
        consul_server.start(layout, table, servers=self.cluster.consul_servers)
        return consul_server.NAME, ""

    def _kill_consul_leader(self, leader: str | None) -> tuple[str | None, str]:
        """SIGKILL the Consul raft leader and wait (bounded) until the survivors agree on
        another; ``inject`` then restarts it through ``up``, which waits until it is back
        among the peers. No failover is due: the survivors keep a quorum."""
        table, layout = self.cluster.table, self.cluster.layout
        servers = self.cluster.consul_servers
        killed = consul_server.kill_leader(layout, table, servers)
        t0 = time.monotonic()
        new = consul_server.wait_new_leader(layout, servers, killed, self._failover_window())
        took = time.monotonic() - t0
        elected = f"{new.name} elected in {took:.1f}s" if new else f"no new leader in {took:.0f}s"
        return killed.name, f"Consul leader {killed.name} killed; {elected}"

    def _restart_pgpool(self, leader: str | None) -> tuple[str | None, str]:
        # SIGINT is pgpool's fast shutdown, as local/access.py stops it.
        self.cluster.table.stop("pgpool", timeout=10, sig=signal.SIGINT)
        return "pgpool", ""

    def _double(self, leader: str | None) -> tuple[str | None, str]:
        first = self._need_leader(leader)
        self.cluster.kill(first, signal.SIGKILL)
        second = self._wait_leader({first}, self._failover_window())
        if second is None:
            return first, "no new primary after the first kill"
        self.cluster.kill(second, signal.SIGKILL)
        third = self._wait_leader({first, second}, self._failover_window())
        return f"{first},{second}", f"{second} then {third} took over"
