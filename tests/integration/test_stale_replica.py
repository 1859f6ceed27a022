"""Issue 9.1: a replica that missed a few hundred MB never leads after a full-cluster restart.

One replica is stopped cleanly while ~200 MB of acknowledged rows are written,
then the whole cluster restarts with the stale member first (it has the field
to itself for a few seconds). Variant: the up-to-date members crash (SIGKILL)
instead of stopping cleanly. Every round: the stale member never accepts a
write, another member leads, every acknowledged id is on the leader, and the
stale member ends up streaming from it.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import psycopg
import pytest

from postgres_ras.local import consul_server
from tests.integration.conftest import Harness

ROUNDS = int(os.environ.get("STALE_ROUNDS", "2"))
BATCH = 20_000  # rows of ~1 kB per committed batch
BATCHES = 10  # ~200 MB of heap, more of WAL


def _write_acked(h: Harness, leader: str, start: int) -> list[tuple[int, int]]:
    """Commit BATCHES batches of ids; return the (first, last) id ranges acknowledged."""
    acked: list[tuple[int, int]] = []
    with psycopg.connect(h.node_dsn(leader), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS acked (id bigint PRIMARY KEY, pad text)")
        for b in range(BATCHES):
            lo = start + b * BATCH
            hi = lo + BATCH - 1
            conn.execute(
                "INSERT INTO acked SELECT g, repeat(md5(g::text), 32) "
                "FROM generate_series(%s::bigint, %s::bigint) g",
                (lo, hi),
            )
            acked.append((lo, hi))
    return acked


def _missing(h: Harness, name: str, acked: list[tuple[int, int]]) -> int:
    missing = 0
    for lo, hi in acked:
        row = h.sql(name, f"SELECT count(*) FROM acked WHERE id BETWEEN {lo} AND {hi}")
        missing += (hi - lo + 1) - int(row[0][0])  # type: ignore[call-overload]
    return missing


def _wait_caught_up(h: Harness, leader: str, replica: str) -> None:
    target = h.sql(leader, "SELECT pg_current_wal_lsn()")[0][0]
    h.wait_for(
        f"{replica} to replay the writes",
        lambda: bool(
            h.sql(replica, f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")[0][0]
        ),
        timeout=120,
    )


def _no_leader_nor_members(h: Harness) -> bool:
    c = h.c.raw_cluster()
    return c.leader is None and not c.members and not c.invalid_members


def _restart_stale_first(h: Harness, stale: str) -> list[str]:
    """Start Consul and the stale node alone, then the others; report if it was ever writable."""
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if h.is_writable(stale):
                seen.append(time.strftime("%H:%M:%S"))
            time.sleep(0.05)

    consul_server.start(h.c.layout, h.c.table)
    # Until the dead leader's session has lapsed (Consul may keep one up to twice its 10 s
    # TTL), taking its leader and member keys: the stale member then finds nobody to ask.
    h.wait_for("the old leader lock to lapse", lambda: _no_leader_nor_members(h), 45)
    h.c.start_node(h.c.layout.node(int(stale.removeprefix("node"))))
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        # The stale member alone for a few seconds: time enough to race, if it would.
        time.sleep(5.0)
        h.c.up(access=False, wait=0)
        h.wait_for("a leader", lambda: h.c.leader() is not None, timeout=60)
        if h.leader().name != stale:
            h.wait_streaming_replica(stale, timeout=90)
    finally:
        stop.set()
        watcher.join()
    return seen


@pytest.mark.parametrize("crash", [False, True], ids=["clean-restart", "crash-then-restart"])
def test_stale_replica_never_leads_after_full_restart(cluster: Harness, crash: bool) -> None:
    next_id = 1
    all_acked: list[tuple[int, int]] = []
    for round_ in range(ROUNDS):
        leader = cluster.leader().name
        stale, fresh = [n for n in cluster.c.node_names() if n != leader][:2]
        cluster.c.stop_node(stale)
        acked = _write_acked(cluster, leader, next_id)
        next_id = acked[-1][1] + 1
        all_acked += acked
        _wait_caught_up(cluster, leader, fresh)
        if crash:
            # Consul stays up: the dead members' sessions lapse after ttl, taking their
            # member keys with them, so the stale member finds nobody to compare with.
            cluster.c.kill(leader, signal.SIGKILL)
            cluster.c.kill(fresh, signal.SIGKILL)
        else:
            cluster.c.down()
        seen_writable = _restart_stale_first(cluster, stale)
        new = cluster.leader().name
        print(
            f"round {round_ + 1}: stale={stale} leader={new} stale-writable={bool(seen_writable)}"
        )
        assert new != stale, f"{stale} (stale by ~200 MB) became the leader"
        assert seen_writable == [], f"{stale} (stale by ~200 MB) accepted writes at {seen_writable}"
        missing = _missing(cluster, new, all_acked)
        print(f"round {round_ + 1}: missing acknowledged ids on {new}: {missing}")
        assert missing == 0
        cluster.c.wait_healthy(3, 90)
