"""What ``pgras verify`` runs against: a *target*, the cluster seen from outside.

A target names its members and their direct postgres DSNs, the endpoints the
workload writes and reads through, which member leads, whether the cluster is
at full strength, and injects the faults it supports, then restores whatever a
fault took away (a killed process or container started again). The run loop
(``run.py``) and the per-fault bookkeeping (``faults.run_fault``) only talk to
this interface, so one checker serves every tier:

- ``LocalTarget``: the cluster of ``pgras up`` (``local.LocalCluster``); faults
  by PID through ``faults.Injector``, exactly as before targets existed;
- ``docker_target.DockerTarget``: database pods running as Docker containers
  (the images tier), faults through the docker CLI.

Guarantees: a target signals, pauses or disconnects only what it was given
(the local cluster's own processes; the named containers); ``restore`` brings
every member back to running and connected, or raises ``PgrasError``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from postgres_ras.errors import FatalError, PgrasError

if TYPE_CHECKING:
    from postgres_ras.verify.run import DynamicConfig


class Target(Protocol):
    """The cluster under test, as verify needs it."""

    kind: str  # "local", "docker"
    # Faults this target can inject (parse_faults checks names against them).
    faults: tuple[str, ...]

    def describe(self) -> str:
        """One line naming the cluster (for progress and error messages)."""
        ...

    def start(self, clock: Callable[[], float], ttl: float, fault_timeout: float) -> None:
        """Called once before the run: the run's clock, the cluster's leader TTL (how long
        a frozen primary stays frozen) and the per-fault recovery timeout."""
        ...

    def dsns(self) -> dict[str, str]:
        """Member name -> a DSN reaching that member's postgres directly."""
        ...

    def ack_ports(self) -> dict[int, str]:
        """``inet_server_port()`` -> member, to tell which member acknowledged a write;
        empty when ports do not tell members apart (containers all listen on 5432)."""
        ...

    def endpoints(self) -> dict[str, str]:
        """``write`` (required), and when the cluster has them ``read`` and ``pgpool``.
        Raises ``FatalError`` when there is no write endpoint to use."""
        ...

    def check_faults(self, faults: tuple[tuple[str, str], ...]) -> None:
        """Refuse, before anything starts, a fault this cluster cannot take."""
        ...

    def dynamic_config(self) -> DynamicConfig | None:
        """The cluster's dynamic ``config`` key in Consul, or None when unknown."""
        ...

    def sync_refusal_watch(self) -> Callable[[], str]:
        """From now on: a callable returning the first controller line that refuses
        ``synchronous_mode``, or ''."""
        ...

    def leader(self) -> str | None:
        """The member holding the leader key now (None: none, or unknown)."""
        ...

    def full_strength(self) -> bool:
        """One running primary, every other member a streaming replica, every piece
        alive (and a confirmed synchronous standby in synchronous mode)."""
        ...

    def inject(self, name: str, leader: str | None) -> tuple[str | None, str]:
        """Inject fault ``name`` (bounded; the cluster may still be reacting after);
        return (what was hit, a note). Raises ``PgrasError`` or ``OSError``."""
        ...

    def restore(self) -> None:
        """Bring back whatever a fault took away; raises ``PgrasError``."""
        ...


class LocalTarget:
    """``pgras up``'s cluster: ``faults.Injector`` does the work, unchanged."""

    kind = "local"

    def __init__(self, cluster: Any) -> None:
        from postgres_ras.verify.faults import FAULTS

        self.cluster = cluster  # local.cluster.LocalCluster
        self.faults = tuple(f for f in FAULTS if f != "repeat")
        self._injector: Any = None

    def start(self, clock: Callable[[], float], ttl: float, fault_timeout: float) -> None:
        from postgres_ras.verify.faults import Injector

        self._injector = Injector(self.cluster, clock, ttl, fault_timeout)

    def _need_injector(self) -> Any:
        if self._injector is None:
            raise PgrasError("LocalTarget.start() was not called")
        return self._injector

    def describe(self) -> str:
        return f"the local cluster in {self.cluster.layout.work_dir}"

    def dsns(self) -> dict[str, str]:
        layout = self.cluster.layout
        user, password = self.cluster.superuser
        return {
            n: f"host={layout.host} port={p} user={user} password={password} dbname=postgres"
            for p, n in self.ack_ports().items()
        }

    def ack_ports(self) -> dict[int, str]:
        layout = self.cluster.layout
        return {layout.node(int(n[4:])).postgres: n for n in self.cluster.node_names()}

    def endpoints(self) -> dict[str, str]:
        from postgres_ras.local import access

        table = self.cluster.table
        if table.get("haproxy") is None:
            raise FatalError(
                "pgras verify writes through the write endpoint: HAProxy is not running; start "
                "the cluster with its access layer (`pgras up`, without --no-access)"
            )
        ends = dict(access.endpoints(self.cluster.layout, self.cluster.superuser))
        if table.get("pgpool") is None:
            ends.pop("pgpool", None)
        return ends

    def check_faults(self, faults: tuple[tuple[str, str], ...]) -> None:
        from postgres_ras.verify.run import check_consul_servers

        check_consul_servers(self.cluster, faults)

    def dynamic_config(self) -> DynamicConfig:
        from postgres_ras.verify.run import DynamicConfig

        return DynamicConfig(self.cluster.layout.consul_url, self.cluster.layout.cluster)

    def sync_refusal_watch(self) -> Callable[[], str]:
        from postgres_ras.verify.run import ControllerLogs

        return ControllerLogs(Path(self.cluster.layout.logs)).refusal

    def leader(self) -> str | None:
        from postgres_ras.verify.faults import leader_name

        return leader_name(self.cluster)

    def full_strength(self) -> bool:
        return bool(self._need_injector().full_strength())

    def inject(self, name: str, leader: str | None) -> tuple[str | None, str]:
        result: tuple[str | None, str] = self._need_injector().act(name, leader)
        return result

    def restore(self) -> None:
        self.cluster.up(wait=0)
