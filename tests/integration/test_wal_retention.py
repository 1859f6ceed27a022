"""WAL is retained by member slots, not by wal_keep_size (which makes every pg_rewind copy it).

- A crashed, diverged primary is rewound onto the new one with WAL from before the
  fork that only its slot kept: the new leader created that slot as a standby, before
  promoting, so it reserves from the last restartpoint, and the checkpoint after the
  promotion removed none of it.
- A crashed replica keeps its slot after its member key lapsed, and streams again from
  its own position after more WAL and a checkpoint on the primary: no rewind, no clone.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from postgres_ras.lsn import parse_lsn
from tests.integration.conftest import Harness

PAD_ROWS = 12000  # ~13 MB of WAL: more than min_wal_size, many 1 MB segments


def lsn(cluster: Harness, name: str, query: str) -> int:
    return parse_lsn(str(cluster.sql(name, query)[0][0]))


def slot(cluster: Harness, on: str, name: str) -> tuple[Any, ...] | None:
    rows = cluster.sql(
        on,
        f"SELECT restart_lsn::text, wal_status, active FROM pg_replication_slots "
        f"WHERE slot_name = '{name}'",
    )
    return rows[0] if rows else None


def pad(cluster: Harness, on: str, replica: str) -> None:
    cluster.sql(on, f"INSERT INTO pad SELECT repeat('x', 1000) FROM generate_series(1, {PAD_ROWS})")
    target = lsn(cluster, on, "SELECT pg_current_wal_lsn()")
    cluster.wait_for(
        f"{replica} to replay the padding",
        lambda: lsn(cluster, replica, "SELECT pg_last_wal_replay_lsn()") >= target,
        timeout=30,
    )


def test_a_diverged_crashed_primary_rejoins_by_rewind_with_wal_only_its_slot_kept(
    make_cluster: Any,
) -> None:
    cluster: Harness = make_cluster(nodes=2)
    old = cluster.leader().name
    (rep,) = [n for n in cluster.c.node_names() if n != old]
    assert cluster.sql(old, "SHOW wal_segment_size")[0][0] == "1MB"
    assert cluster.sql(old, "SHOW wal_keep_size")[0][0] == "0"
    cluster.sql(old, "CREATE TABLE pad (x text)")
    cluster.sql(old, "CHECKPOINT")
    common = lsn(cluster, old, "SELECT redo_lsn FROM pg_control_checkpoint()")
    pad(cluster, old, rep)
    cluster.sql(rep, "CHECKPOINT")  # a restartpoint at the last common checkpoint
    assert lsn(cluster, rep, "SELECT redo_lsn FROM pg_control_checkpoint()") == common

    cluster.cut_stream(rep)
    cluster.sql(old, "INSERT INTO pad VALUES ('only on the old timeline')")
    cluster.c.kill(old, signal.SIGKILL)
    cluster.restore_stream(rep)
    assert cluster.wait_new_leader(old, timeout=30) == rep
    cluster.sql(rep, "CHECKPOINT")  # whatever no slot holds goes now
    kept = slot(cluster, rep, old)
    assert kept is not None, f"no slot for {old} on the new leader {rep}"
    print(f"last common checkpoint redo {common:X}, slot {old} on {rep}: {kept}")
    assert parse_lsn(kept[0]) <= common
    assert kept[1] in ("reserved", "extended")

    before = cluster.log_mark(f"{old}-agent")
    cluster.c.up(access=False, wait=0)
    took = cluster.wait_streaming_replica(old, timeout=40)
    print(f"{old} rewound and streaming {took:.1f}s after its restart")
    agent_log = cluster.log_since(f"{old}-agent", before)
    assert "rewound to follow" in agent_log
    assert "pg_basebackup" not in agent_log and "clone started" not in agent_log
    cluster.wait_for(
        f"{old} to hold the new timeline's rows only",
        lambda: cluster.sql(old, "SELECT count(*) FROM pad")[0][0] == PAD_ROWS,
        timeout=10,
    )
    assert cluster.writable_nodes() == [rep]


def test_a_crashed_replica_keeps_its_slot_and_streams_from_its_own_position(
    make_cluster: Any,
) -> None:
    cluster: Harness = make_cluster(nodes=2)
    leader = cluster.leader().name
    (rep,) = [n for n in cluster.c.node_names() if n != leader]
    cluster.sql(leader, "CREATE TABLE pad (x text)")
    cluster.c.kill(rep, signal.SIGKILL)
    cluster.wait_for(
        f"{rep}'s member key to lapse",
        lambda: cluster.c.raw_cluster().member(rep) is None,
        timeout=20,
    )
    time.sleep(2.0)  # a few leader cycles with the member gone
    held = slot(cluster, leader, rep)
    assert held is not None and held[2] is False, f"slot of {rep} dropped: {held}"
    cluster.sql(
        leader, f"INSERT INTO pad SELECT repeat('x', 1000) FROM generate_series(1, {PAD_ROWS})"
    )
    cluster.sql(leader, "CHECKPOINT")
    assert slot(cluster, leader, rep) == held  # its WAL is still reserved

    before = cluster.log_mark(f"{rep}-agent")
    cluster.c.up(access=False, wait=0)
    cluster.wait_streaming_replica(rep, timeout=30)
    cluster.wait_for(
        f"{rep} to catch up",
        lambda: cluster.sql(rep, "SELECT count(*) FROM pad")[0][0] == PAD_ROWS,
        timeout=20,
    )
    agent_log = cluster.log_since(f"{rep}-agent", before)
    assert "start-replica started" in agent_log
    assert "rewind" not in agent_log and "clone started" not in agent_log
