"""The agent's synchronous_standby_names file: set on a primary, read back, quoted safely,
cleared whenever the node is configured as a standby (no former primary's standbys carried
into a later promotion)."""

from __future__ import annotations

from pathlib import Path

from postgres_ras.agent.postgres import SYNC_FILE, SYNC_INCLUDE_LINE, Postgres
from postgres_ras.config import NodeConfig


def postgres(tmp_path: Path) -> Postgres:
    config = NodeConfig.model_validate({"name": "n1", "data_dir": str(tmp_path / "data")})
    pg = Postgres.__new__(Postgres)
    pg.config = config
    pg.data_dir = tmp_path / "data"
    pg.data_dir.mkdir()
    pg.reload = lambda: None  # type: ignore[method-assign]
    pg.chown = lambda path: None  # type: ignore[method-assign]
    pg.configured_upstream = None
    return pg


def test_sync_file_round_trip_and_cleared_as_standby(tmp_path: Path) -> None:
    pg = postgres(tmp_path)
    assert pg.configured_sync() == ""
    pg.set_sync('FIRST 1 ("it\'s")')
    assert pg.configured_sync() == 'FIRST 1 ("it\'s")'
    assert (
        "synchronous_standby_names = 'FIRST 1 (\"it''s\")'" in (pg.data_dir / SYNC_FILE).read_text()
    )
    pg.write_config(None, standby=False)  # a primary (re)start keeps its promise
    assert pg.configured_sync() == 'FIRST 1 ("it\'s")'
    assert SYNC_INCLUDE_LINE in (pg.data_dir / "postgresql.conf").read_text()
    pg.write_config(None, standby=True)
    assert pg.configured_sync() == ""
