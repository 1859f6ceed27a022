"""Issue 2.2 and 2.3: unplanned failover to the most advanced replica, then rejoin as a replica."""

from __future__ import annotations

import signal
import threading
import time

from postgres_ras.local.workload import Writer, lost_writes
from tests.integration.conftest import Harness


def test_kill_primary_fails_over_and_old_primary_rejoins_as_replica(cluster: Harness) -> None:
    old = cluster.leader().name
    with Writer(cluster.writer_dsn()) as writer:
        time.sleep(1.0)
        killed_at = time.monotonic()
        cluster.c.kill(old, signal.SIGKILL)
        new = cluster.wait_new_leader(old, timeout=30)
        cluster.wait_for(
            "writes to resume",
            lambda: (
                writer.result.acked[-1:] != []
                and writer.result.gaps[-1:] != []
                and writer.result.gaps[-1][0] >= killed_at - 1
            ),
            timeout=30,
        )
        time.sleep(0.5)
    outage = writer.result.outage_after(killed_at)
    print(
        f"failover: {old} -> {new}, write outage {outage:.2f}s, {len(writer.result.acked)} writes"
    )
    assert outage < 30
    others = [n for n in cluster.c.node_names() if n not in (old, new)]
    for name in others:
        cluster.wait_streaming_replica(name, timeout=20)
    assert cluster.writable_nodes() == [new]

    # Rejoin: restart the killed node; it must never be writable, and must stream.
    seen_writable: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if cluster.is_writable(old):
                seen_writable.append(old)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    cluster.c.up(access=False, wait=0)
    took = cluster.wait_streaming_replica(old, timeout=30)
    stop.set()
    watcher.join()
    print(f"rejoin: {old} streaming {time.monotonic() - started:.2f}s after restart ({took:.2f}s)")
    assert seen_writable == []
    assert cluster.writable_nodes() == [new]
    # Async replication: acknowledged writes after the kill may be lost; before it, none.
    missing = lost_writes(cluster.node_dsn(new), writer.result.acked)
    print(f"lost acknowledged writes (async mode): {len(missing)}")
    timeline = cluster.sql(old, "SELECT received_tli FROM pg_stat_wal_receiver")[0][0]
    assert timeline == cluster.leader().timeline


def test_failover_picks_the_most_advanced_replica(cluster: Harness) -> None:
    """Cut one replica off its stream, write more, kill the primary: the other must win."""
    old = cluster.leader().name
    lagging, ahead = [n for n in cluster.c.node_names() if n != old]
    cluster.sql(old, "CREATE TABLE filler (x int)")
    cluster.cut_stream(lagging)
    cluster.sql(old, "INSERT INTO filler SELECT generate_series(1, 20000)")
    cluster.wait_for(
        f"{ahead} to receive the filler",
        lambda: cluster.sql(ahead, "SELECT count(*) FROM filler")[0][0] == 20000,
        timeout=20,
    )
    assert cluster.sql(lagging, "SELECT count(*) FROM filler")[0][0] == 0
    cluster.c.kill(old, signal.SIGKILL)
    cluster.restore_stream(lagging)
    new = cluster.wait_new_leader(old, timeout=30)
    assert new == ahead
    cluster.wait_for(
        f"{lagging} to follow {new} and catch up",
        lambda: cluster.sql(lagging, "SELECT count(*) FROM filler")[0][0] == 20000,
        timeout=30,
    )
