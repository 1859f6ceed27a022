"""Container entry point: ``python -m postgres_ras.pgpool.entrypoint``.

Reads the settings from PGPOOL_* environment variables, validates them (a clear
message naming the variable and exit status 2 on error), writes the pgpool
configuration and replaces this process with pgpool in the foreground (``-n``),
always discarding any saved backend status (``-D``).

Variables: PGPOOL_WRITE_HOST, PGPOOL_WRITE_PORT (5432), PGPOOL_READ_HOST,
PGPOOL_READ_PORT (5432), PGPOOL_PORT (5432), PGPOOL_PCP_PORT (9898), PGPOOL_USER,
PGPOOL_PASSWORD (or PGPOOL_PASSWORD_FILE), PGPOOL_NUM_INIT_CHILDREN (32),
PGPOOL_MAX_POOL (1), PGPOOL_PRIMARY_READ_WEIGHT (0), PGPOOL_REPLICA_READ_WEIGHT (1),
PGPOOL_CLIENT_IDLE_LIMIT (0), PGPOOL_CONNECTION_LIFE_TIME (60),
PGPOOL_LOG_STATEMENTS (false), PGPOOL_WORK_DIR (/tmp/pgpool), PGPOOL_BINARY (pgpool).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from postgres_ras.errors import ConfigError
from postgres_ras.pgpool.conf import PgpoolSettings, pgpool_argv, write_config


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is required (set it in the container environment)")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _password(env: Mapping[str, str]) -> str:
    path = env.get("PGPOOL_PASSWORD_FILE", "").strip()
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"PGPOOL_PASSWORD_FILE {path!r} unreadable: {exc}") from None
    return _required(env, "PGPOOL_PASSWORD")


_FIELD_TO_VAR = {
    "write_host": "PGPOOL_WRITE_HOST",
    "read_host": "PGPOOL_READ_HOST",
    "write_port": "PGPOOL_WRITE_PORT",
    "read_port": "PGPOOL_READ_PORT",
    "pcp_port": "PGPOOL_PCP_PORT",
    "port": "PGPOOL_PORT",
    "user": "PGPOOL_USER",
    "password": "PGPOOL_PASSWORD",
    "num_init_children": "PGPOOL_NUM_INIT_CHILDREN",
    "max_pool": "PGPOOL_MAX_POOL",
    "read weights": "PGPOOL_PRIMARY_READ_WEIGHT/PGPOOL_REPLICA_READ_WEIGHT",
    "read weight": "PGPOOL_PRIMARY_READ_WEIGHT/PGPOOL_REPLICA_READ_WEIGHT",
    "client_idle_limit": "PGPOOL_CLIENT_IDLE_LIMIT/PGPOOL_CONNECTION_LIFE_TIME",
    "work_dir": "PGPOOL_WORK_DIR",
}


def settings_from_env(env: Mapping[str, str]) -> PgpoolSettings:
    """Build and validate the settings; ConfigError names the variable to fix."""
    settings = PgpoolSettings(
        write_host=_required(env, "PGPOOL_WRITE_HOST"),
        write_port=_int(env, "PGPOOL_WRITE_PORT", 5432),
        read_host=_required(env, "PGPOOL_READ_HOST"),
        read_port=_int(env, "PGPOOL_READ_PORT", 5432),
        user=_required(env, "PGPOOL_USER"),
        password=_password(env),
        work_dir=Path(env.get("PGPOOL_WORK_DIR", "").strip() or "/tmp/pgpool"),
        port=_int(env, "PGPOOL_PORT", 5432),
        pcp_port=_int(env, "PGPOOL_PCP_PORT", 9898),
        listen_addresses=env.get("PGPOOL_LISTEN_ADDRESSES", "").strip() or "*",
        num_init_children=_int(env, "PGPOOL_NUM_INIT_CHILDREN", 32),
        max_pool=_int(env, "PGPOOL_MAX_POOL", 1),
        primary_read_weight=_float(env, "PGPOOL_PRIMARY_READ_WEIGHT", 0.0),
        replica_read_weight=_float(env, "PGPOOL_REPLICA_READ_WEIGHT", 1.0),
        client_idle_limit=_int(env, "PGPOOL_CLIENT_IDLE_LIMIT", 0),
        connection_life_time=_int(env, "PGPOOL_CONNECTION_LIFE_TIME", 60),
        log_statements=env.get("PGPOOL_LOG_STATEMENTS", "").strip().lower()
        in ("1", "true", "yes", "on"),
    )
    try:
        settings.validate()
    except ConfigError as exc:
        message = str(exc)
        for field, var in _FIELD_TO_VAR.items():
            if message.startswith(field):
                raise ConfigError(f"{var}: {message}") from None
        raise
    return settings


def main(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    try:
        settings = settings_from_env(env)
        write_config(settings)
    except ConfigError as exc:
        print(f"pgpool entrypoint: invalid configuration: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"pgpool entrypoint: cannot write the configuration: {exc}", file=sys.stderr)
        return 2
    argv = pgpool_argv(settings, env.get("PGPOOL_BINARY", "pgpool"))
    print("pgpool entrypoint: exec " + " ".join(argv), file=sys.stderr, flush=True)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        print(f"pgpool entrypoint: cannot run {argv[0]}: {exc}", file=sys.stderr)
        return 2
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
