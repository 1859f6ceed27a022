"""The immutable inputs and outputs of one HA decision."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from postgres_ras.dcs.base import Cluster, Member
from postgres_ras.lsn import parse_lsn


class Role(enum.Enum):
    PRIMARY = "primary"
    REPLICA = "replica"
    STOPPED = "stopped"
    UNKNOWN = "unknown"


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

    @classmethod
    def from_status(cls, data: dict[str, Any]) -> NodeView:
        """Parse the agent's /status; raises ValueError on nonsense."""
        job = data.get("job") or {}
        lsn = data.get("lsn")
        try:
            role = Role(data.get("role", "unknown"))
        except ValueError:
            role = Role.UNKNOWN
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
        )


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


@dataclass(frozen=True)
class Settings:
    """The HA policy in force this cycle (local config merged with Consul ``config``)."""

    ttl: float = 4.0
    loop_wait: float = 1.0
    retry_timeout: float = 3.0
    maximum_lag_on_failover: int = 1048576
    synchronous_mode: bool = False


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
    last_leader_lsn: int | None = None
    peers: tuple[PeerView, ...] = ()
    now_wall: float = 0.0
    # How long this running replica has pointed at the leader without streaming.
    not_streaming_for: float = 0.0


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    upstream: Member | None = None
    target: str | None = None

    def sentence(self) -> str:
        return self.reason
