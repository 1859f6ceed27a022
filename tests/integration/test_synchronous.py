"""Issue 11, synchronous mode on the real local cluster: kill -9 the primary several times
under a writer, lose no acknowledged write, and the new primary was always the member the
``sync`` key named; strict mode blocks writes with no standby (bounded check); switching
modes is a reload."""

from __future__ import annotations

import signal
import threading
import time

import psycopg

from postgres_ras.dcs.base import parse_sync
from postgres_ras.dcs.consul import client as consul_client
from postgres_ras.dcs.consul import cluster_prefix
from postgres_ras.local.workload import Writer, lost_writes
from tests.helpers import poll_value
from tests.integration.conftest import Harness


def sync_names(h: Harness) -> tuple[str, ...]:
    c = consul_client(h.c.layout.consul_url, timeout=2)
    _, item = c.kv.get(cluster_prefix(h.c.layout.cluster) + "sync")
    return parse_sync((item.get("Value") or b"").decode() if item else None)


def ssn(h: Harness, name: str) -> str:
    return str(h.sql(name, "SHOW synchronous_standby_names")[0][0])


def wait_sync_standby(h: Harness, timeout: float = 30.0) -> str:
    """Wait until the key names a streaming replica that the leader requires; its name."""

    def named() -> str | None:
        leader = h.leader()
        names = sync_names(h)
        rows = {r.name: r for r in h.c.members()}
        if (
            len(names) == 1
            and names[0] != leader.name
            and names[0] in ssn(h, leader.name)
            and rows[names[0]].sync_standby  # pgras list shows it too
        ):
            return names[0]
        return None

    return poll_value("a confirmed synchronous standby", named, timeout)


def test_kill_primary_in_synchronous_mode_loses_no_acknowledged_write(cluster: Harness) -> None:
    cluster.c.set_dynamic({"synchronous_mode": True})
    standby = wait_sync_standby(cluster)
    print(f"synchronous standby: {standby}")
    with Writer(cluster.writer_dsn(), max_seconds=300) as writer:
        for round_ in range(3):
            time.sleep(1.5)
            old = cluster.leader().name
            named = sync_names(cluster)
            assert named and old not in named
            cluster.c.kill(old, signal.SIGKILL)
            new = cluster.wait_new_leader(old, timeout=40)
            print(f"round {round_}: killed {old}, sync key named {named}, new primary {new}")
            assert new in named, f"{new} was promoted, but the sync key named {named}"
            cluster.c.up(access=False, wait=0)
            cluster.wait_streaming_replica(old, timeout=40)
            wait_sync_standby(cluster, timeout=40)
        time.sleep(1.0)
    acked = writer.result.acked
    missing = lost_writes(cluster.node_dsn(cluster.leader().name), acked)
    print(f"{len(acked)} acknowledged writes, {len(missing)} lost")
    assert len(acked) > 50
    assert missing == []


def _insert_in_thread(h: Harness, name: str) -> tuple[threading.Thread, list[float]]:
    done: list[float] = []

    def run() -> None:
        with psycopg.connect(h.node_dsn(name), autocommit=True) as conn:
            conn.execute("INSERT INTO strict_probe VALUES (1)")
        done.append(time.monotonic())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, done


def test_strict_mode_blocks_writes_without_a_standby_and_async_mode_does_not(
    cluster: Harness,
) -> None:
    leader = cluster.leader().name
    cluster.sql(leader, "CREATE TABLE strict_probe (x int)")
    cluster.c.set_dynamic({"synchronous_mode": True, "synchronous_mode_strict": True})
    wait_sync_standby(cluster)
    replicas = [n for n in cluster.c.node_names() if n != leader]
    for name in replicas:
        cluster.c.stop_node(name)
    cluster.wait_for(
        "the sync key to name the primary alone", lambda: sync_names(cluster) == (leader,), 20
    )
    cluster.wait_for("synchronous_standby_names = '*'", lambda: ssn(cluster, leader) == "*", 20)
    t, done = _insert_in_thread(cluster, leader)
    t.join(timeout=4.0)
    assert done == [], "strict mode acknowledged a write with no synchronous standby"
    started = time.monotonic()
    cluster.c.up(access=False, wait=0)  # a standby comes back: the blocked write completes
    t.join(timeout=60.0)
    assert done, "the blocked write did not complete once a standby streamed again"
    print(f"strict: write blocked until a standby streamed ({done[0] - started:.1f}s)")

    # Not strict, no standby: the key names the primary alone, then writes go on
    # asynchronously.
    cluster.c.set_dynamic({"synchronous_mode_strict": False})
    wait_sync_standby(cluster)
    for name in replicas:
        cluster.c.stop_node(name)
    cluster.wait_for("asynchronous fallback", lambda: ssn(cluster, leader) == "", 20)
    assert sync_names(cluster) == (leader,)
    t, done = _insert_in_thread(cluster, leader)
    t.join(timeout=10.0)
    assert done, "non-strict synchronous mode blocked a write with no standby"
    cluster.wait_log(f"{leader}-controller", "synchronous_standby_names = '' (asynchronous)")

    # Off again at run time: a reload, the key removed.
    cluster.c.up(access=False, wait=0)
    wait_sync_standby(cluster)
    cluster.c.set_dynamic({"synchronous_mode": False})
    cluster.wait_for("synchronous mode off", lambda: ssn(cluster, leader) == "", 20)
    cluster.wait_for("the sync key removed", lambda: sync_names(cluster) == (), 20)
    assert cluster.writable_nodes() == [leader]
