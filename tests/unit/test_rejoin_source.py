"""The rewind source as a former primary's rejoin uses it: the connection pg_rewind gets,
and the CHECKPOINT done only when the source's control file lacks its current timeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from postgres_ras.agent import queries
from postgres_ras.agent.pgconf import BASE_PARAMETERS, Upstream
from postgres_ras.agent.postgres import Postgres
from postgres_ras.config import NodeConfig
from postgres_ras.errors import PostgresError

UPSTREAM = Upstream("10.0.0.2", 5433)


def make_pg(tmp_path: Path) -> Postgres:
    """A Postgres for its pure parts: no binaries, no OS user looked up."""
    pg = object.__new__(Postgres)
    pg.config = NodeConfig(name="node1", data_dir=tmp_path / "data")
    return pg


class FakeConn:
    """Answers the timeline query with ``row`` and the slot creation with ``slot`` (a row,
    None when it exists, or an exception to raise); records every statement."""

    def __init__(
        self, row: tuple[Any, ...] | None, slot: tuple[Any, ...] | Exception | None = None
    ) -> None:
        self.row = row
        self.slot = slot
        self.sql: list[str] = []
        self.params: list[Any] = []
        self._next: tuple[Any, ...] | None = None

    def __enter__(self) -> FakeConn:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, query: str, params: Any = None) -> FakeConn:
        self.sql.append(query)
        self.params.append(params)
        if "pg_create_physical_replication_slot" in query:
            if isinstance(self.slot, Exception):
                raise self.slot
            self._next = self.slot
        else:
            self._next = self.row
        return self

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._next


def test_pg_rewind_source_disables_jit_and_names_the_upstream(tmp_path: Path) -> None:
    # The file-list query pg_rewind runs is costed at millions of rows: JIT compiles
    # it for about a second before running it in milliseconds.
    parts = conninfo_to_dict(make_pg(tmp_path)._source(UPSTREAM))
    assert parts["options"] == "-c jit=off"
    assert (parts["host"], parts["port"], parts["user"]) == ("10.0.0.2", "5433", "postgres")
    assert "password" not in parts  # passed through PGPASSWORD, never on a command line


@pytest.mark.parametrize(
    ("row", "done"),
    [
        ((3, 3), True),  # promoted and checkpointed since: pg_rewind sees timeline 3
        ((2, 3), False),  # promoted, no checkpoint yet: pg_rewind would see timeline 2
        ((3, None), False),  # a standby: cannot tell from here, checkpoint
        (None, False),
    ],
)
def test_checkpointed_on_current_timeline(row: tuple[Any, ...] | None, done: bool) -> None:
    conn = FakeConn(row)
    assert queries.checkpointed_on_current_timeline(conn) is done  # type: ignore[arg-type]
    assert "pg_control_checkpoint()" in conn.sql[0]
    assert "WHEN pg_is_in_recovery() THEN NULL" in conn.sql[0]  # no error on a standby


@pytest.mark.parametrize(("row", "checkpoints"), [((4, 4), False), ((3, 4), True)])
def test_checkpoint_source_only_when_the_control_file_lags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, row: tuple[int, int], checkpoints: bool
) -> None:
    conn = FakeConn(row)
    seen: dict[str, Any] = {}

    def connect(dsn: str, **kwargs: Any) -> FakeConn:
        seen.update(conninfo_to_dict(dsn), **kwargs)
        return conn

    monkeypatch.setattr(psycopg, "connect", connect)  # as postgres.py calls it
    make_pg(tmp_path).checkpoint_source(UPSTREAM)
    assert ("CHECKPOINT" in conn.sql) is checkpoints
    assert seen["host"] == "10.0.0.2" and seen["autocommit"] is True


def test_unreachable_source_still_fails_the_rewind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The caller keeps its data when the leader cannot be reached: it must still hear so.
    def connect(dsn: str, **kwargs: Any) -> FakeConn:
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(psycopg, "connect", connect)  # as postgres.py calls it
    with pytest.raises(PostgresError, match="cannot checkpoint the rewind source"):
        make_pg(tmp_path).checkpoint_source(UPSTREAM)


@pytest.mark.parametrize(
    ("slot", "created"),
    [
        (("(node1,)",), True),
        (None, False),  # exists already: the leader recreated it first
        (psycopg.errors.DuplicateObject("exists"), False),  # the leader, at the same instant
    ],
)
def test_create_slot_if_missing(slot: Any, created: bool) -> None:
    conn = FakeConn(None, slot)
    assert queries.create_slot_if_missing(conn, "node1") is created  # type: ignore[arg-type]
    assert conn.params == [("node1", "node1")]
    assert "WHERE NOT EXISTS" in conn.sql[0]


@pytest.mark.parametrize(
    "slot", [("(node1,)",), None, psycopg.errors.InsufficientPrivilege("no"), psycopg.Error("x")]
)
def test_own_slot_on_the_source_is_best_effort(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slot: Any
) -> None:
    # Created (or found) with the node's own slot name; a failure never fails the rewind.
    conn = FakeConn((5, 5), slot)
    monkeypatch.setattr(psycopg, "connect", lambda dsn, **kw: conn)  # as postgres.py calls it
    pg = make_pg(tmp_path)
    pg.checkpoint_source(UPSTREAM)
    assert conn.params[-1] == (pg.config.slot_name, pg.config.slot_name)
    assert "CHECKPOINT" not in conn.sql


def test_a_refused_walreceiver_retries_within_a_fraction_of_a_second() -> None:
    # A rejoining member may ask its new leader for its slot before the leader's next
    # cycle recreated it: the retry interval is then added to the rejoin.
    value = str(BASE_PARAMETERS["wal_retrieve_retry_interval"])
    assert value.endswith("ms") and int(value[:-2]) <= 250
