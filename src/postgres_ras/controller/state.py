"""The immutable inputs and outputs of one HA decision."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from postgres_ras.config import HASettings
from postgres_ras.dcs.base import Cluster, Member
from postgres_ras.lsn import parse_lsn
from postgres_ras.roles import Role as Role  # re-exported: the decision's vocabulary


class Action(enum.Enum):
    WAIT = "wait"  # nothing to do now (or cannot tell): the reason says which
    HOLD = "hold"  # healthy steady state: leader keeps its lock, replica keeps streaming
    BOOTSTRAP = "bootstrap"
    CLONE = "clone"
    START_PRIMARY = "start_primary"
    START_REPLICA = "start_replica"
    FOLLOW = "follow"
    ACQUIRE = "acquire"  # take the free lock as the already running primary
    ACQUIRE_AND_PROMOTE = "acquire_and_promote"
    PROMOTE = "promote"
    TAKE_OVER = "take_over"  # move my previous incarnation's lock to my new session
    DROP_STALE = "drop_stale"  # invalidate my previous incarnation's session
    RELEASE = "release"  # give the lock up (and a pending initialize): I lead without data
    CANCEL_SWITCHOVER = "cancel_switchover"  # its target is not a healthy streaming replica
    ABDICATE = "abdicate"  # a leader that cannot serve: make sure postgres is stopped, release
    REWIND = "rewind"  # a replica that cannot stream from its leader: rewind or re-clone
    DEMOTE = "demote"
    SWITCHOVER = "switchover"


@dataclass(frozen=True)
class NodeView:
    """What the agent says about postgres on this node."""

    running: bool
    role: Role
    has_data: bool
    sysid: str | None = None
    timeline: int | None = None
    lsn: int | None = None
    streaming: bool = False
    upstream: str | None = None
    job: str | None = None  # the running job, if any
    job_error: str | None = None
    fenced: str | None = None
    # Why this node may not lead: its watchdog is required but cannot be armed.
    watchdog_blocked: str | None = None

    @classmethod
    def from_status(cls, data: dict[str, Any]) -> NodeView:
        """Parse the agent's /status; raises ValueError on nonsense."""
        job = data.get("job") or {}
        lsn = data.get("lsn")
        role = Role.parse(data.get("role", "unknown"))
        return cls(
            running=bool(data["running"]),
            role=role,
            has_data=bool(data["has_data"]),
            sysid=data.get("sysid"),
            timeline=int(data["timeline"]) if data.get("timeline") is not None else None,
            lsn=parse_lsn(lsn) if lsn else None,
            streaming=bool(data.get("streaming")),
            upstream=data.get("upstream"),
            job=job.get("name") if job.get("running") else None,
            job_error=job.get("error"),
            fenced=data.get("fenced"),
            watchdog_blocked=_watchdog_blocked(data.get("watchdog")),
        )


def _watchdog_blocked(value: Any) -> str | None:
    blocked = value.get("blocked") if isinstance(value, dict) else None
    return str(blocked) if blocked else None


@dataclass(frozen=True)
class PeerView:
    """Another member as its own REST API describes it right now (probed before a race)."""

    name: str
    reachable: bool
    primary_ok: bool = False  # it holds the lock, its lease is valid, postgres is primary
    role: Role = Role.UNKNOWN
    timeline: int | None = None
    lsn: int | None = None
    nofailover: bool = False
    streaming: bool = False
    running: bool = False
    job: str | None = None  # a start, clone or rewind still running there
    job_error: str | None = None  # its last job failed (e.g. postgres cannot start)
    has_data: bool | None = None  # None: it did not say


def _default(name: str) -> Any:
    return HASettings.model_fields[name].default


@dataclass(frozen=True)
class Settings:
    """The HA policy in force this cycle (local config merged with Consul ``config``).

    Defaults and rules are HASettings' (config.py): one definition, for the file and
    for the dynamic config alike.
    """

    ttl: float = _default("ttl")
    loop_wait: float = _default("loop_wait")
    retry_timeout: float = _default("retry_timeout")
    maximum_lag_on_failover: int = _default("maximum_lag_on_failover")
    synchronous_mode: bool = _default("synchronous_mode")
    synchronous_node_count: int = _default("synchronous_node_count")
    synchronous_mode_strict: bool = _default("synchronous_mode_strict")
    primary_start_timeout: float = _default("primary_start_timeout")

    @classmethod
    def merged(
        cls, local: HASettings, fence_timeout: float, dynamic: Mapping[str, Any] | None
    ) -> Settings:
        """``local`` overridden by the keys of Consul ``config`` it knows, validated by the
        same model as the file (strictly: JSON numbers, no strings or booleans for numbers),
        plus the rule across sections: the agent's fence_timeout stays below ttl.

        Raises ValueError with one line naming every problem.
        """
        known = {k: v for k, v in (dynamic or {}).items() if k in HASettings.model_fields}
        try:
            ha = HASettings.model_validate({**local.model_dump(), **known}, strict=True)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ValueError(problems) from None
        if fence_timeout >= ha.ttl:
            raise ValueError(
                f"ttl ({ha.ttl}) must stay above this node's agent.fence_timeout ({fence_timeout})"
            )
        return cls(
            ttl=ha.ttl,
            loop_wait=ha.loop_wait,
            retry_timeout=ha.retry_timeout,
            maximum_lag_on_failover=ha.maximum_lag_on_failover,
            synchronous_mode=ha.synchronous_mode,
            synchronous_node_count=ha.synchronous_node_count,
            synchronous_mode_strict=ha.synchronous_mode_strict,
            primary_start_timeout=ha.primary_start_timeout,
        )


@dataclass(frozen=True)
class Observation:
    me: str
    node: NodeView | None  # None: the agent did not answer
    cluster: Cluster | None  # None: Consul did not answer
    session: str | None
    stale_sessions: frozenset[str] = frozenset()
    lease_valid: bool = False
    nofailover: bool = False
    settings: Settings = field(default_factory=Settings)
    last_leader: str | None = None
    # The last primary position known: ``optime/leader`` in Consul, else what this
    # controller saw the leader publish. None: unknown (then nobody unsettled may be skipped).
    last_leader_lsn: int | None = None
    peers: tuple[PeerView, ...] = ()
    # How long some member has been unsettled (starting, recovering, not answering)
    # while this node wanted to race: waited for up to ``primary_start_timeout``.
    unsettled_for: float = 0.0
    now_wall: float = 0.0
    # How long this running replica has pointed at the leader without streaming.
    not_streaming_for: float = 0.0
    # How long this node has seen the pending switchover request, on its own clock: no
    # decision compares wall clocks across nodes.
    switchover_age: float = 0.0
    # How long I have held the leader lock without a running primary (starting, failing
    # to start, unknown state, agent unreachable); a promotion or bootstrap is progress.
    not_serving_for: float = 0.0


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    upstream: Member | None = None
    target: str | None = None

    def sentence(self) -> str:
        return self.reason
