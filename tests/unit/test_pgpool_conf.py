"""pgpool configuration rendering: the topology, the trap-closing settings, validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from postgres_ras.errors import ConfigError
from postgres_ras.pgpool import entrypoint
from postgres_ras.pgpool.conf import (
    PgpoolSettings,
    pgpool_argv,
    render_pgpool_conf,
    render_pool_hba,
    render_pool_passwd,
    write_config,
)

BASE = PgpoolSettings(
    write_host="pg-primary",
    write_port=5432,
    read_host="pg-replicas",
    read_port=5433,
    user="postgres",
    password="s3cret",
    work_dir=Path("/var/run/pgpool"),
    port=9999,
)


def params(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, value = line.split(" = ", 1)
        assert key not in out, f"{key} rendered twice"
        out[key] = value
    return out


def test_backends_are_the_write_and_read_endpoints() -> None:
    p = params(render_pgpool_conf(BASE))
    assert p["backend_clustering_mode"] == "'streaming_replication'"
    assert (p["backend_hostname0"], p["backend_port0"]) == ("'pg-primary'", "5432")
    assert p["backend_flag0"] == "'ALWAYS_PRIMARY|DISALLOW_TO_FAILOVER'"
    assert (p["backend_hostname1"], p["backend_port1"]) == ("'pg-replicas'", "5433")
    assert p["backend_flag1"] == "'DISALLOW_TO_FAILOVER'"
    assert "backend_hostname2" not in p


def test_pgpool_only_routes_never_fails_over() -> None:
    p = params(render_pgpool_conf(BASE))
    assert p["health_check_period"] == "0"
    assert p["sr_check_period"] == "0"
    assert p["failover_on_backend_error"] == "off"
    assert p["failover_on_backend_shutdown"] == "off"
    assert p["failover_command"] == "''"
    assert p["follow_primary_command"] == "''"
    assert p["auto_failback"] == "off"
    assert p["use_watchdog"] == "off"
    assert p["load_balance_mode"] == "on"


def test_traps_are_closed() -> None:
    p = params(render_pgpool_conf(BASE))
    # No cached backend connection survives its client session (demoted-primary trap).
    assert p["connection_cache"] == "off"
    assert int(p["connection_life_time"]) > 0
    # No pgpool_status memory: -D on every start, and the file lives in our run dir.
    argv = pgpool_argv(BASE)
    assert "-D" in argv and "-n" in argv
    assert p["logdir"] == "'/var/run/pgpool/run'"
    # Reads go to the read endpoint, which itself falls back to the primary.
    assert float(p["backend_weight0"]) == 0.0 and float(p["backend_weight1"]) == 1.0


def test_dirs_live_under_the_work_dir() -> None:
    p = params(render_pgpool_conf(BASE))
    for key in ("socket_dir", "pcp_socket_dir", "wd_ipc_socket_dir", "pid_file_name", "logdir"):
        assert p[key].startswith("'/var/run/pgpool/"), key
    assert p["pool_passwd"] == "'/var/run/pgpool/pool_passwd'"


def test_auth_files() -> None:
    assert render_pool_passwd(BASE) == "postgres:TEXTs3cret\n"
    hba = render_pool_hba(BASE)
    assert "scram-sha-256" in hba and "trust" not in hba


def test_write_config(tmp_path: Path) -> None:
    s = dataclasses.replace(BASE, work_dir=tmp_path / "pgpool")
    (tmp_path / "pgpool" / "run").mkdir(parents=True)
    (tmp_path / "pgpool" / "run" / "pgpool_status").write_text("up\ndown\n")
    write_config(s)
    assert not (s.run_dir / "pgpool_status").exists()
    assert s.passwd_file.stat().st_mode & 0o777 == 0o600
    assert s.config_file.read_text() == render_pgpool_conf(s)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"write_host": ""}, "write_host"),
        ({"read_host": "bad host"}, "read_host"),
        ({"write_port": 0}, "write_port"),
        ({"read_port": 70000}, "read_port"),
        ({"port": -1}, "port"),
        ({"user": "bad user"}, "user"),
        ({"password": ""}, "password"),
        ({"password": "it's"}, "password"),
        ({"num_init_children": 0}, "num_init_children"),
        ({"max_pool": 0}, "max_pool"),
        ({"primary_read_weight": 0.0, "replica_read_weight": 0.0}, "read weights"),
        ({"work_dir": Path("relative")}, "work_dir"),
    ],
)
def test_validation_names_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}"):
        render_pgpool_conf(dataclasses.replace(BASE, **change))  # type: ignore[arg-type]


ENV = {
    "PGPOOL_WRITE_HOST": "w",
    "PGPOOL_READ_HOST": "r",
    "PGPOOL_USER": "postgres",
    "PGPOOL_PASSWORD": "pw",
}


def test_entrypoint_settings_from_env(tmp_path: Path) -> None:
    env = {**ENV, "PGPOOL_WORK_DIR": str(tmp_path), "PGPOOL_NUM_INIT_CHILDREN": "8"}
    s = entrypoint.settings_from_env(env)
    assert (s.write_host, s.write_port, s.read_host, s.read_port) == ("w", 5432, "r", 5432)
    assert s.num_init_children == 8 and s.port == 5432


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"PGPOOL_WRITE_HOST": ""}, "PGPOOL_WRITE_HOST"),
        ({"PGPOOL_READ_HOST": " "}, "PGPOOL_READ_HOST"),
        ({"PGPOOL_USER": ""}, "PGPOOL_USER"),
        ({"PGPOOL_PASSWORD": ""}, "PGPOOL_PASSWORD"),
        ({"PGPOOL_WRITE_PORT": "abc"}, "PGPOOL_WRITE_PORT"),
        ({"PGPOOL_READ_PORT": "99999"}, "PGPOOL_READ_PORT"),
        ({"PGPOOL_PORT": "0"}, "PGPOOL_PORT"),
        ({"PGPOOL_NUM_INIT_CHILDREN": "many"}, "PGPOOL_NUM_INIT_CHILDREN"),
    ],
)
def test_entrypoint_rejects_bad_env(
    change: dict[str, str], variable: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env = {**ENV, "PGPOOL_WORK_DIR": str(tmp_path), "PGPOOL_BINARY": "/nonexistent", **change}
    assert entrypoint.main(env) == 2
    assert variable in capsys.readouterr().err


def test_entrypoint_execs_pgpool_in_foreground(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(entrypoint.os, "execvp", lambda f, argv: calls.append(argv))
    env = {**ENV, "PGPOOL_WORK_DIR": str(tmp_path / "w"), "PGPOOL_BINARY": "/usr/sbin/pgpool"}
    assert entrypoint.main(env) == 0
    assert calls and calls[0][:3] == ["/usr/sbin/pgpool", "-n", "-D"]
    assert (tmp_path / "w" / "pgpool.conf").exists()
