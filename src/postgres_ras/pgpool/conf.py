"""Render pgpool-II 4.3 configuration for the write/read endpoint topology.

Backend 0 is the write endpoint (ALWAYS_PRIMARY|DISALLOW_TO_FAILOVER), backend 1
the read endpoint (DISALLOW_TO_FAILOVER). pgpool only routes: no health checks,
no streaming-replication checks, no failover command, no failover on backend
error. The endpoints (HAProxy locally, Services in Kubernetes) follow the
primary; pgpool never needs to know which node that is.

The known traps and how this configuration closes them:
- a persisted ``pgpool_status`` keeping a backend "down" across restarts: pgpool
  is always started with ``-D`` (see :func:`pgpool_argv`), and since no failover
  can ever happen, no backend is marked down in the first place;
- pooled connections pinned to a demoted primary: ``connection_cache = off``, so
  a backend connection lives exactly as long as its client session; the endpoint
  cuts sessions to a demoted primary (HAProxy ``on-marked-down shutdown-sessions``,
  the controller terminates client connections on demotion) and the client's
  next session connects to the new primary; ``connection_life_time`` and
  ``client_idle_limit`` bound what is left;
- no reads when no replica exists: the read endpoint falls back to the primary
  (HAProxy ``default_backend write``), so backend 1 always answers.

Pure functions only; nothing here touches the file system except :func:`write_config`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from postgres_ras.errors import ConfigError

_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9._:-]{1,253}$")


@dataclass(frozen=True)
class PgpoolSettings:
    """What pgpool needs to know; everything else is fixed by design."""

    write_host: str
    write_port: int
    read_host: str
    read_port: int
    user: str
    password: str
    work_dir: Path
    port: int = 9999
    pcp_port: int = 9898
    listen_addresses: str = "*"
    num_init_children: int = 32
    max_pool: int = 1
    primary_read_weight: float = 0.0
    replica_read_weight: float = 1.0
    client_idle_limit: int = 0
    connection_life_time: int = 60
    log_statements: bool = False

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field."""
        for field in ("write_host", "read_host"):
            value = getattr(self, field)
            if not _HOST_RE.match(value):
                raise ConfigError(f"{field} must be a host name or address, got {value!r}")
        for field in ("write_port", "read_port", "port", "pcp_port"):
            value = getattr(self, field)
            if not isinstance(value, int) or not 1 <= value <= 65535:
                raise ConfigError(f"{field} must be a port number 1-65535, got {value!r}")
        if not _USER_RE.match(self.user):
            raise ConfigError(f"user must be a PostgreSQL role name, got {self.user!r}")
        if not self.password or any(c in self.password for c in "\n\r'\\"):
            raise ConfigError("password must be non-empty, without quotes, backslashes or newlines")
        if not 1 <= self.num_init_children <= 10000:
            raise ConfigError(f"num_init_children must be 1-10000, got {self.num_init_children}")
        if not 1 <= self.max_pool <= 100:
            raise ConfigError(f"max_pool must be 1-100, got {self.max_pool}")
        if self.primary_read_weight < 0 or self.replica_read_weight < 0:
            raise ConfigError("read weights must be >= 0")
        if self.primary_read_weight + self.replica_read_weight <= 0:
            raise ConfigError("read weights: at least one must be > 0")
        if self.client_idle_limit < 0 or self.connection_life_time < 0:
            raise ConfigError("client_idle_limit and connection_life_time must be >= 0")
        if not self.work_dir.is_absolute():
            raise ConfigError(f"work_dir must be an absolute path, got {self.work_dir}")
        if any(c in str(self.work_dir) for c in "'\n"):
            raise ConfigError("work_dir must not contain quotes or newlines")

    @property
    def config_file(self) -> Path:
        return self.work_dir / "pgpool.conf"

    @property
    def hba_file(self) -> Path:
        return self.work_dir / "pool_hba.conf"

    @property
    def passwd_file(self) -> Path:
        return self.work_dir / "pool_passwd"

    @property
    def pcp_file(self) -> Path:
        return self.work_dir / "pcp.conf"

    @property
    def run_dir(self) -> Path:
        return self.work_dir / "run"


def _q(value: str) -> str:
    return "'" + value + "'"


def render_pgpool_conf(s: PgpoolSettings) -> str:
    """pgpool.conf text for ``s`` (validated first)."""
    s.validate()
    run = str(s.run_dir)
    params: list[tuple[str, str]] = [
        ("backend_clustering_mode", _q("streaming_replication")),
        ("listen_addresses", _q(s.listen_addresses)),
        ("port", str(s.port)),
        ("socket_dir", _q(run)),
        ("pcp_listen_addresses", _q("localhost")),
        ("pcp_port", str(s.pcp_port)),
        ("pcp_socket_dir", _q(run)),
        ("wd_ipc_socket_dir", _q(run)),
        ("pid_file_name", _q(str(s.run_dir / "pgpool.pid"))),
        ("logdir", _q(run)),
        # Backend 0: the write endpoint, always the primary, never failed over.
        ("backend_hostname0", _q(s.write_host)),
        ("backend_port0", str(s.write_port)),
        ("backend_weight0", str(s.primary_read_weight)),
        ("backend_flag0", _q("ALWAYS_PRIMARY|DISALLOW_TO_FAILOVER")),
        ("backend_application_name0", _q("write")),
        # Backend 1: the read endpoint (replicas, or the primary when none is up).
        ("backend_hostname1", _q(s.read_host)),
        ("backend_port1", str(s.read_port)),
        ("backend_weight1", str(s.replica_read_weight)),
        ("backend_flag1", _q("DISALLOW_TO_FAILOVER")),
        ("backend_application_name1", _q("read")),
        # Authentication: clients authenticate to pgpool, pgpool to the backends.
        ("enable_pool_hba", "on"),
        ("pool_passwd", _q(str(s.passwd_file))),
        ("allow_clear_text_frontend_auth", "off"),
        ("ssl", "off"),
        # Pooling: no cached backend connections that could outlive a failover.
        ("num_init_children", str(s.num_init_children)),
        ("max_pool", str(s.max_pool)),
        ("connection_cache", "off"),
        ("connection_life_time", str(s.connection_life_time)),
        ("client_idle_limit", str(s.client_idle_limit)),
        ("child_life_time", "300"),
        ("reserved_connections", "0"),
        # Routing only: pgpool never checks, detaches, fails over or promotes.
        ("load_balance_mode", "on"),
        ("disable_load_balance_on_write", _q("transaction")),
        ("statement_level_load_balance", "off"),
        ("sr_check_period", "0"),
        ("sr_check_user", _q(s.user)),
        ("health_check_period", "0"),
        ("health_check_user", _q(s.user)),
        ("failover_command", _q("")),
        ("failback_command", _q("")),
        ("follow_primary_command", _q("")),
        ("failover_on_backend_error", "off"),
        ("failover_on_backend_shutdown", "off"),
        ("detach_false_primary", "off"),
        ("auto_failback", "off"),
        ("search_primary_node_timeout", "0"),
        ("use_watchdog", "off"),
        ("memory_cache_enabled", "off"),
        # Logging to stderr: the supervisor (ProcessTable, container runtime) keeps it.
        ("log_destination", _q("stderr")),
        ("logging_collector", "off"),
        ("log_connections", "off"),
        ("log_statement", "on" if s.log_statements else "off"),
        ("log_per_node_statement", "on" if s.log_statements else "off"),
    ]
    lines = ["# Rendered by postgres_ras.pgpool.conf; do not edit by hand."]
    lines += [f"{key} = {value}" for key, value in params]
    return "\n".join(lines) + "\n"


def render_pool_hba(s: PgpoolSettings) -> str:
    """Clients authenticate to pgpool with SCRAM (password from pool_passwd)."""
    return (
        "# TYPE  DATABASE  USER  ADDRESS  METHOD\n"
        "local   all       all            scram-sha-256\n"
        "host    all       all   0.0.0.0/0  scram-sha-256\n"
        "host    all       all   ::0/0      scram-sha-256\n"
    )


def render_pool_passwd(s: PgpoolSettings) -> str:
    """The backend credentials in clear text (``TEXT`` prefix, pgpool 4.0+).

    pgpool needs the password itself to run SCRAM against both backends; the file
    is written with mode 0600.
    """
    s.validate()
    return f"{s.user}:TEXT{s.password}\n"


def render_pcp_conf(s: PgpoolSettings) -> str:
    """No PCP users: PCP would only offer detach/attach/promote, which we never want."""
    return "# no PCP users: pgpool here only routes\n"


def pgpool_argv(s: PgpoolSettings, binary: str = "pgpool") -> list[str]:
    """Foreground pgpool that discards any saved backend status (``-D``)."""
    return [
        binary, "-n", "-D",
        "-f", str(s.config_file), "-a", str(s.hba_file), "-F", str(s.pcp_file),
    ]  # fmt: skip


def write_config(s: PgpoolSettings) -> None:
    """Write every file pgpool needs under ``s.work_dir``; remove a stale pgpool_status."""
    s.validate()
    s.work_dir.mkdir(parents=True, exist_ok=True)
    s.run_dir.mkdir(parents=True, exist_ok=True)
    s.config_file.write_text(render_pgpool_conf(s))
    s.hba_file.write_text(render_pool_hba(s))
    s.pcp_file.write_text(render_pcp_conf(s))
    s.passwd_file.touch(mode=0o600)
    s.passwd_file.chmod(0o600)
    s.passwd_file.write_text(render_pool_passwd(s))
    (s.run_dir / "pgpool_status").unlink(missing_ok=True)
