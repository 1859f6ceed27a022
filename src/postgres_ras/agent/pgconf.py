"""Rendering of the files the agent owns inside PGDATA (pure functions).

postgresql.conf gets one ``include`` of ``pgras.conf``, which the agent
rewrites whenever the role or upstream changes; primary_conninfo and
primary_slot_name are reloadable since PostgreSQL 13, so following a new
primary needs no restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from postgres_ras.config import NodeConfig

# Settings every member needs for streaming replication, pg_rewind and fast failover.
BASE_PARAMETERS: dict[str, str | int | float | bool] = {
    "wal_level": "replica",
    "hot_standby": True,
    "wal_log_hints": True,  # pg_rewind needs it without data checksums
    "max_wal_senders": 20,
    "max_replication_slots": 20,
    # WAL is kept for members by their slots (controller/slots.py), not "just in case":
    # pg_rewind copies every file in the source's pg_wal, so each MB kept here would be
    # copied by every rejoin. A slot of a member that never comes back is capped.
    "wal_keep_size": 0,
    "max_slot_wal_keep_size": "2GB",
    "hot_standby_feedback": True,
    "wal_receiver_status_interval": "1s",
    # A walreceiver that lost its primary, or was refused by it (its slot not created
    # yet, as for a member rejoining a new leader), retries after 200 ms, not 5 s.
    "wal_retrieve_retry_interval": "200ms",
    "wal_sender_timeout": "10s",
    "wal_receiver_timeout": "10s",
    "max_connections": 100,
    "shared_buffers": "64MB",
    "password_encryption": "scram-sha-256",
    "logging_collector": False,
    "log_line_prefix": "%m [%p] ",
    "unix_socket_directories": "",
}


@dataclass(frozen=True)
class Upstream:
    host: str
    port: int


def quote(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


def conninfo(**parts: str | int) -> str:
    """A libpq key=value string with values quoted as libpq expects."""

    def q(v: str | int) -> str:
        s = str(v)
        return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return " ".join(f"{k}={q(v)}" for k, v in parts.items())


def render_pgras_conf(
    config: NodeConfig,
    upstream: Upstream | None,
    extra: dict[str, str | int | float | bool] | None = None,
) -> str:
    params: dict[str, str | int | float | bool] = dict(BASE_PARAMETERS)
    params.update(config.postgres.parameters)
    params.update(extra or {})
    params["listen_addresses"] = config.postgres.listen
    params["port"] = config.postgres.port
    params["cluster_name"] = f"{config.cluster}-{config.name}"
    if upstream is not None:
        rep = config.postgres.replication
        params["primary_conninfo"] = conninfo(
            host=upstream.host,
            port=upstream.port,
            user=rep.username,
            password=rep.password,
            application_name=config.name,
            connect_timeout=2,
            keepalives_idle=2,
            keepalives_interval=1,
            keepalives_count=3,
        )
        params["primary_slot_name"] = config.slot_name
    else:
        params["primary_conninfo"] = ""
        params["primary_slot_name"] = ""
    lines = ["# Written by the pgras agent; changes are overwritten."]
    lines += [f"{key} = {quote(value)}" for key, value in sorted(params.items())]
    return "\n".join(lines) + "\n"


def render_pg_hba(config: NodeConfig) -> str:
    rep = config.postgres.replication.username
    nets = list(dict.fromkeys(["127.0.0.1/32", "::1/128", *config.postgres.allow_networks]))
    lines = [
        "# Written by the pgras agent; changes are overwritten.",
        "# TYPE DB USER ADDRESS METHOD",
    ]
    for net in nets:
        lines.append(f"host replication {rep} {net} scram-sha-256")
        lines.append(f"host all all {net} scram-sha-256")
    return "\n".join(lines) + "\n"
