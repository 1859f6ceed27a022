"""The measurements, written once against clusters.ClusterUnderTest. Figures, not tests.

- failover write outage: the leader (HA processes and postmaster group) is
  SIGKILLed under a write load; the longest gap between acknowledged writes
  that ends after the kill;
- lost writes: acknowledged writes missing on the new primary afterwards;
- rejoin: from restarting the killed member to its walreceiver streaming on
  the primary's timeline ("rejoin (lax)": to status 'streaming' alone, which a
  walreceiver the primary is about to refuse shows for an instant; "rejoin_up": to
  the member's postgres first accepting a connection, i.e. HA processes up, rewind and
  recovery to a consistent state, the rest being its walreceiver reaching the primary);
- switchover write outage: a planned switchover under the same load.

What varies between runs is a ``Scenario`` (member count, synchronous mode,
load), passed to the cluster and to the measurement: a new variant is a new
Scenario value, not a copy of this code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from clusters import BenchmarkError, ClusterUnderTest, wait
from loads import LOADS, Load

Run = dict[str, float]
STEADY = 1.0  # seconds of load before the fault, so the writer is connected and steady
FAILOVER_TIMEOUT = 120.0  # Patroni's defaults need ~30 s
REJOIN_TIMEOUT = 120.0
HEALTHY_TIMEOUT = 120.0
TIMELINE_SQL = "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"


@dataclass(frozen=True)
class Scenario:
    nodes: int = 3
    synchronous: bool = False
    load: str = "writer"

    def describe(self) -> str:
        mode = "synchronous" if self.synchronous else "async"
        return f"{self.nodes} members, {mode} replication, load: {self.load}"

    def new_load(self, dsn: str) -> Load:
        return LOADS[self.load](dsn)


def primary_timeline(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(TIMELINE_SQL).fetchone()
    assert row is not None
    return int(row[0])


class RejoinProbe:
    """True once the member's walreceiver streams on the primary's timeline.

    pg_stat_wal_receiver says 'streaming' as soon as a walreceiver connects, before
    the primary checks its start point: one the primary then refuses (its history
    diverged, before pg_rewind) shows 'streaming' for a few milliseconds every
    wal_retrieve_retry_interval. ``lax`` records when status alone first said so, ``up``
    when the member first accepted a connection at all.
    """

    def __init__(self, dsn: str, primary_tli: int) -> None:
        self.dsn = dsn
        self.primary_tli = primary_tli
        self.start = time.monotonic()
        self.lax: float | None = None
        self.up: float | None = None

    def __call__(self) -> bool:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT status, received_tli FROM pg_stat_wal_receiver"
                ).fetchone()
        except psycopg.Error:
            return False
        if self.up is None:
            self.up = time.monotonic() - self.start
        if row is None or row[0] != "streaming":
            return False
        if self.lax is None:
            self.lax = time.monotonic() - self.start
        return bool(row[1] == self.primary_tli)


def _leader(cluster: ClusterUnderTest) -> str:
    name = cluster.leader()
    if name is None:
        raise BenchmarkError(f"{cluster.name}: no leader before the run")
    return name


def failover_run(cluster: ClusterUnderTest, scenario: Scenario) -> Run:
    old = _leader(cluster)
    with scenario.new_load(cluster.writer_dsn()) as load:
        time.sleep(STEADY)
        if cluster.leader() != old:  # else the kill hits a replica: a 0 s "outage"
            raise BenchmarkError(f"{cluster.name}: leadership left {old} under load, unasked")
        t_kill = time.monotonic()
        cluster.kill(old)
        wait("new leader", lambda: cluster.leader() not in (None, old), FAILOVER_TIMEOUT)
        wait("writes after failover", lambda: load.acked_since(t_kill), 60)
        time.sleep(0.3)
    new = _leader(cluster)
    lost = load.lost_on(cluster.node_dsn(new))
    probe = RejoinProbe(cluster.node_dsn(old), primary_timeline(cluster.node_dsn(new)))
    cluster.restart(old)
    probe.start = time.monotonic()
    rejoin = wait("rejoin", probe, REJOIN_TIMEOUT)
    cluster.wait_healthy(HEALTHY_TIMEOUT)
    return {
        "outage": load.outage_after(t_kill),
        "lost": lost,
        "rejoin": rejoin,
        "rejoin_lax": probe.lax if probe.lax is not None else rejoin,
        "rejoin_up": probe.up if probe.up is not None else rejoin,
    }


def switchover_run(cluster: ClusterUnderTest, scenario: Scenario) -> Run:
    with scenario.new_load(cluster.writer_dsn()) as load:
        time.sleep(STEADY)
        t0 = time.monotonic()
        new = cluster.switchover()
        wait("writes after switchover", lambda: load.acked_since(t0), 60)
        time.sleep(1.0)
    lost = load.lost_on(cluster.node_dsn(new))
    cluster.wait_healthy(HEALTHY_TIMEOUT)
    return {"outage": load.outage_after(t0), "lost": lost}


KINDS: dict[str, Callable[[ClusterUnderTest, Scenario], Run]] = {
    "failover": failover_run,
    "switchover": switchover_run,
}


def series(
    cluster: ClusterUnderTest, scenario: Scenario, runs: int, log: Callable[[str], None] = print
) -> dict[str, list[Run]]:
    """Start the cluster, ``runs`` of each measurement, stop it (always). Figures per kind."""
    out: dict[str, list[Run]] = {kind: [] for kind in KINDS}
    try:
        t = time.monotonic()
        cluster.start(scenario.nodes, scenario.synchronous)
        log(f"{cluster.name} bootstrap: {scenario.nodes} members in {time.monotonic() - t:.2f}s")
        for kind, run in KINDS.items():
            for i in range(runs):
                out[kind].append(run(cluster, scenario))
                log(f"{cluster.name} {kind} run {i + 1}: {_fmt(out[kind][-1])}")
    finally:
        cluster.stop()
    return out


def _fmt(run: Run) -> str:
    return ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in run.items())
