"""The DCS contract and the immutable cluster snapshot read once per HA cycle.

Every method either succeeds, returns False when it lost a race (a
check-and-set or a lock held by someone else), or raises DCSError when the
store cannot be reached. Those three outcomes are never blurred: "lost the
race" and "Consul is down" lead to very different decisions.
"""

from __future__ import annotations

import abc
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from postgres_ras.lsn import parse_lsn
from postgres_ras.roles import Role


@dataclass(frozen=True)
class Member:
    """One member key as published by that member's controller."""

    name: str
    api_url: str
    conn_host: str
    conn_port: int
    role: Role
    state: str
    timeline: int | None
    lsn: int | None
    nofailover: bool
    session: str | None
    # Shown by ``pgras list`` (the controller decides on what it probes itself, not these).
    streaming: bool = False
    sync_standby: bool = False

    @classmethod
    def from_json(cls, name: str, raw: bytes | str | None, session: str | None) -> Member | None:
        """Parse a member value; None when the value is nonsense (never trusted: the
        parser lists its name in ``Cluster.invalid_members`` instead)."""
        try:
            data = json.loads(raw or b"")
            if not isinstance(data, dict):
                return None
            lsn = data.get("lsn")
            timeline = data.get("timeline")
            port = int(data["conn_port"])
            if not 0 < port < 65536:
                return None
            return cls(
                name=name,
                api_url=str(data["api_url"]),
                conn_host=str(data["conn_host"]),
                conn_port=port,
                role=Role.parse(data.get("role", "unknown")),
                state=str(data.get("state", "unknown")),
                timeline=int(timeline) if timeline is not None else None,
                lsn=parse_lsn(lsn)
                if isinstance(lsn, str)
                else (int(lsn) if lsn is not None else None),
                nofailover=bool(data.get("tags", {}).get("nofailover", False)),
                session=session,
                streaming=bool(data.get("streaming", False)),
                sync_standby=bool(data.get("sync_standby", False)),
            )
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
            return None


@dataclass(frozen=True)
class Leader:
    name: str
    session: str | None
    index: int


@dataclass(frozen=True)
class Switchover:
    """A planned switchover: leader ``source`` hands over to ``target`` (or the best replica)."""

    source: str
    target: str | None
    requested_at: float

    def to_json(self) -> str:
        return json.dumps({"from": self.source, "to": self.target, "at": self.requested_at})

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> Switchover | None:
        try:
            data = json.loads(raw or b"")
            at, to = float(data["at"]), data.get("to")
            if not math.isfinite(at) or not (to is None or isinstance(to, str)):
                return None
            return cls(str(data["from"]), to, at)
        except (ValueError, TypeError, KeyError, OverflowError):
            return None


@dataclass(frozen=True)
class Cluster:
    """Everything the DCS says about one cluster, read at one moment."""

    initialize: str | None = None
    config: dict[str, Any] | None = None
    leader: Leader | None = None
    members: tuple[Member, ...] = ()
    switchover: Switchover | None = None
    sync: str | None = None
    # The ``sync`` key's modify index (0: absent): its writers check-and-set against it, so
    # a deposed leader's late write cannot name a standby behind the new leader's back.
    sync_index: int = 0
    history: tuple[dict[str, Any], ...] = ()
    # The leader's WAL position as it last published it (``optime/leader``): outlives the
    # leader's session, so after a full-cluster restart a stale replica still knows it is
    # behind. Never deleted; a new leader overwrites it.
    optime: int | None = None
    # Member keys that did not parse: shown to operators, never trusted.
    invalid_members: tuple[str, ...] = ()
    # Members taken out of the cluster on purpose (``removed/<name>``, written by
    # ``pgras scale`` and by a pod a scale-down removes): the leader drops their slots
    # at once rather than keep them for member_slots_ttl, then deletes the marker.
    # Name -> when it was removed (epoch seconds).
    removed: dict[str, float] = field(default_factory=dict)
    index: int = 0
    read_at: float = field(default_factory=time.time)

    def member(self, name: str) -> Member | None:
        for member in self.members:
            if member.name == name:
                return member
        return None

    @property
    def sync_names(self) -> tuple[str, ...]:
        """The members named in the ``sync`` key: the only ones that may be promoted in
        synchronous mode. Empty: none (no synchronous standby confirmed)."""
        return parse_sync(self.sync)

    @property
    def leader_member(self) -> Member | None:
        return self.member(self.leader.name) if self.leader else None


OPTIME_KEY = "optime/leader"
REMOVED_PREFIX = "removed/"
SYNC_KEY = "sync"


def parse_sync(value: str | None) -> tuple[str, ...]:
    """The ``sync`` key's value: member names separated by commas ("" or None: none)."""
    return tuple(n.strip() for n in (value or "").split(",") if n.strip())


def format_sync(names: tuple[str, ...] | list[str]) -> str:
    return ",".join(sorted(names))


def parse_optime(value: str) -> int | None:
    """``optime/leader`` as written by the leader: an LSN ("0/3000060") or bytes; else None."""
    value = value.strip()
    try:
        lsn = parse_lsn(value) if "/" in value else int(value)
    except (ValueError, OverflowError):
        return None
    return lsn if 0 <= lsn < 2**64 else None


class DCS(abc.ABC):
    """The controller's view of the store, bound to one cluster and one member."""

    def __init__(self, cluster: str, member: str) -> None:
        self.cluster_name = cluster
        self.member_name = member
        # Sessions named like this member found at start: an earlier incarnation's (or,
        # if a live controller uses our name, its own: the controller checks that first).
        self.stale_sessions: set[str] = set()

    @property
    @abc.abstractmethod
    def session(self) -> str | None:
        """This member's current session id, if it has one."""

    @abc.abstractmethod
    def keepalive(self, ttl: float) -> str:
        """Prove this member is alive: pass its TTL check, renew (or create) its session.

        Returns the session id, which changes when the old session was lost.
        Raises DCSError when the store cannot be reached.
        """

    @abc.abstractmethod
    def get_cluster(self) -> Cluster:
        """Read the whole cluster prefix consistently. Raises DCSError."""

    @abc.abstractmethod
    def wait_for_change(self, index: int, timeout: float) -> int:
        """Block until the leader key changes past ``index`` or ``timeout`` passes.

        Returns the new index. Raises DCSError.
        """

    @abc.abstractmethod
    def acquire_leader(self) -> bool:
        """Atomically take the leader key with this member's session.

        True if we now hold it (or already did), False if another session
        holds it. Raises DCSError.
        """

    @abc.abstractmethod
    def release_leader(self) -> None:
        """Delete the leader key if and only if this member holds it. Raises DCSError."""

    @abc.abstractmethod
    def touch_member(self, data: dict[str, Any]) -> None:
        """Write this member's key, tied to its session. Raises DCSError."""

    @abc.abstractmethod
    def delete_member(self, name: str) -> None:
        """Remove a member key (scale-down, clean shutdown). Raises DCSError."""

    @abc.abstractmethod
    def cas(self, key: str, value: str, index: int) -> bool:
        """Write ``key`` (relative to the cluster prefix) if its modify index is ``index``.

        ``index=0`` means "create only if absent". False when someone else
        changed it first. Raises DCSError.
        """

    @abc.abstractmethod
    def put(self, key: str, value: str) -> None:
        """Write ``key`` unconditionally. Raises DCSError."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete ``key`` if present. Raises DCSError."""

    @abc.abstractmethod
    def take_over_leader(self, index: int) -> bool:
        """Move the leader key (at modify ``index``) from a stale session of ours to the
        current one in one transaction. False when it changed meanwhile. Raises DCSError."""

    @abc.abstractmethod
    def destroy_stale_sessions(self) -> None:
        """Invalidate ``stale_sessions`` (their keys go with them). Raises DCSError."""

    @abc.abstractmethod
    def abandon(self) -> None:
        """Destroy this process's own session only, leaving the member's check and keys
        (a live twin with our name keeps its lock). Raises DCSError."""

    @abc.abstractmethod
    def close(self) -> None:
        """Give up the session (its member key and any held leader key go with it)."""
