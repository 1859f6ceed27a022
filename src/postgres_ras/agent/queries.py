"""The SQL the agent runs against its own postgres: role and WAL positions, slots.

Pure functions over an open connection, so the SQL sits in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from postgres_ras.lsn import parse_lsn


def ensure_slots(conn: psycopg.Connection[Any], names: Sequence[str]) -> dict[str, list[str]]:
    """Create the physical slots named, drop the other physical slots once inactive."""
    wanted = set(names)
    created: list[str] = []
    dropped: list[str] = []
    busy: list[str] = []
    rows = conn.execute(
        "SELECT slot_name, active FROM pg_replication_slots WHERE slot_type = 'physical'"
    ).fetchall()
    existing = {name: active for name, active in rows}
    for name in sorted(wanted - existing.keys()):
        conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (name,))
        created.append(name)
    for name, active in existing.items():
        if name in wanted:
            continue
        if active:  # its walsender has not noticed the member left yet
            busy.append(name)
        else:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
            dropped.append(name)
    return {"created": created, "dropped": dropped, "busy": busy}


def in_recovery(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    assert row is not None
    return bool(row[0])


def query_state(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Role and WAL positions of the running server."""
    in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    assert in_recovery is not None
    if not in_recovery[0]:
        row = conn.execute(
            "SELECT pg_current_wal_lsn()::text, "
            "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
        ).fetchone()
        assert row is not None
        return {
            "role": "primary",
            "lsn": parse_lsn(row[0]),
            "timeline": row[1],
            "receive_lsn": None,
            "replay_lsn": None,
            "streaming": False,
            "sender": None,
        }
    row = conn.execute(
        "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, "
        "greatest((SELECT timeline_id FROM pg_control_checkpoint()), "
        # The checkpoint's timeline lags a timeline switch until the next
        # restartpoint; the newest history file fetched does not.
        "(SELECT max(('x' || substr(name, 1, 8))::bit(32)::int) FROM pg_ls_waldir() "
        "WHERE name ~ '^[0-9A-F]{8}[.]history$'))"
    ).fetchone()
    assert row is not None
    wr = conn.execute(
        "SELECT status, received_tli, sender_host, sender_port FROM pg_stat_wal_receiver"
    ).fetchone()
    receive = parse_lsn(row[0]) if row[0] else None
    replay = parse_lsn(row[1]) if row[1] else None
    timeline = row[2]
    streaming = bool(wr and wr[0] == "streaming")
    if wr and wr[1]:
        timeline = max(int(timeline or 0), int(wr[1]))
    return {
        "role": "replica",
        "lsn": max(x for x in (receive, replay, 0) if x is not None),
        "receive_lsn": receive,
        "replay_lsn": replay,
        "timeline": timeline,
        "streaming": streaming,
        "sender": f"{wr[2]}:{wr[3]}" if wr and wr[2] else None,
    }


def replication(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """A primary's synchronous replication: the active synchronous_standby_names, its
    current WAL position and every walsender's standby (application_name, state,
    sync_state, flush position)."""
    row = conn.execute(
        "SELECT current_setting('synchronous_standby_names'), pg_is_in_recovery(), "
        "CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END"
    ).fetchone()
    assert row is not None
    rows = conn.execute(
        "SELECT application_name, state, sync_state, flush_lsn::text FROM pg_stat_replication"
    ).fetchall()
    return {
        "active": row[0],
        "in_recovery": bool(row[1]),
        "lsn": row[2],
        "standbys": [
            {"name": r[0], "state": r[1], "sync_state": r[2], "flush_lsn": r[3]} for r in rows
        ],
    }


def checkpointed_on_current_timeline(conn: psycopg.Connection[Any]) -> bool:
    """Whether a primary's pg_control already records a checkpoint on its current timeline.

    pg_rewind (PostgreSQL 15) takes the source's timeline from that checkpoint, which a
    promotion updates only at its first checkpoint. False for a standby or when unsure:
    the caller then checkpoints.
    """
    row = conn.execute(
        "SELECT (SELECT timeline_id FROM pg_control_checkpoint()), "
        "CASE WHEN pg_is_in_recovery() THEN NULL "
        "ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END"
    ).fetchone()
    return row is not None and row[1] is not None and row[0] == row[1]


def create_slot_if_missing(conn: psycopg.Connection[Any], name: str) -> bool:
    """Create the physical slot ``name`` (reserving WAL now) unless it exists; True if created.

    A concurrent creation of the same slot (the leader's housekeeping) counts as existing.
    """
    try:
        row = conn.execute(
            "SELECT pg_create_physical_replication_slot(%s, true) WHERE NOT EXISTS "
            "(SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)",
            (name, name),
        ).fetchone()
    except psycopg.errors.DuplicateObject:
        return False
    return row is not None
