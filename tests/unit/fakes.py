"""In-memory stand-ins for Consul and the agent, for unit tests of the controller's shell.

FakeDCS implements the DCS contract (dcs/base.py) over a dict: a leader key
held by a session, member keys, plain keys. ``fail`` names the methods that
raise DCSError (Consul unreachable mid-action); ``race_winner`` takes the lock
just before our acquire. FakeAgent answers /status from ``status_body``. Both
write every call into one ``journal``, so a test can check their order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from postgres_ras.dcs.base import (
    DCS,
    OPTIME_KEY,
    REMOVED_PREFIX,
    Cluster,
    Leader,
    Member,
    Switchover,
)
from postgres_ras.errors import AgentError, DCSError
from postgres_ras.lsn import parse_lsn


class FakeDCS(DCS):
    def __init__(
        self, journal: list[tuple[str, Any]], me: str = "node1", leader: str | None = None
    ) -> None:
        super().__init__("pgras", me)
        self.journal = journal
        self._session: str | None = f"{me}-s1"
        self.leader_session: str | None = None if leader is None else f"{leader}-s1"
        self.leader_name: str | None = leader
        self.leader_index = 7
        self.keys: dict[str, str] = {}
        self.members: dict[str, Member] = {}
        self.fail: set[str] = set()
        self.race_winner: str | None = None

    def _call(self, name: str) -> None:
        self.journal.append((f"dcs.{name}", None))
        if name in self.fail:
            raise DCSError(f"Consul at http://127.0.0.1:1 unreachable ({name})")

    @property
    def session(self) -> str | None:
        return self._session

    def keepalive(self, ttl: float) -> str:
        self._call("keepalive")
        assert self._session is not None
        return self._session

    def get_cluster(self) -> Cluster:
        self._call("get_cluster")
        leader = (
            Leader(self.leader_name, self.leader_session, self.leader_index)
            if self.leader_name is not None and self.leader_session is not None
            else None
        )
        optime = self.keys.get(OPTIME_KEY)
        return Cluster(
            initialize=self.keys.get("initialize"),
            leader=leader,
            members=tuple(self.members.values()),
            switchover=Switchover.from_json(self.keys.get("switchover")),
            optime=parse_lsn(optime) if optime else None,
            removed={
                k[len(REMOVED_PREFIX) :]: float(v)
                for k, v in self.keys.items()
                if k.startswith(REMOVED_PREFIX)
            },
        )

    def wait_for_change(self, index: int, timeout: float) -> int:
        self._call("wait_for_change")
        return index

    def acquire_leader(self) -> bool:
        self._call("acquire_leader")
        if self.race_winner is not None:
            self.leader_name, self.leader_session = self.race_winner, f"{self.race_winner}-s1"
        if self.leader_session not in (None, self._session):
            return False
        self.leader_name, self.leader_session = self.member_name, self._session
        return True

    def release_leader(self) -> None:
        self._call("release_leader")
        if self.leader_session == self._session:
            self.leader_name = self.leader_session = None

    def touch_member(self, data: dict[str, Any]) -> None:
        self._call("touch_member")

    def delete_member(self, name: str) -> None:
        self._call("delete_member")
        self.members.pop(name, None)

    def cas(self, key: str, value: str, index: int) -> bool:
        self._call("cas")
        if index == 0 and key in self.keys:
            return False
        self.keys[key] = value
        return True

    def put(self, key: str, value: str) -> None:
        self._call("put")
        self.keys[key] = value

    def delete(self, key: str) -> None:
        self._call("delete")
        self.keys.pop(key, None)

    def take_over_leader(self, index: int) -> bool:
        self._call("take_over_leader")
        if index != self.leader_index:
            return False
        self.leader_session = self._session
        return True

    def destroy_stale_sessions(self) -> None:
        self._call("destroy_stale_sessions")

    def abandon(self) -> None:
        self._call("abandon")

    def close(self) -> None:
        self._call("close")


@dataclass
class FakeAgent:
    journal: list[tuple[str, Any]]
    status_body: dict[str, Any]
    fail: set[str] = field(default_factory=set)
    stop_result: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def running(
        cls, journal: list[tuple[str, Any]], role: str, lsn: str = "0/3000000"
    ) -> FakeAgent:
        body = {"running": True, "role": role, "has_data": True, "timeline": 1, "lsn": lsn}
        return cls(journal, body, stop_result={"checkpoint_lsn": lsn})

    def _call(self, name: str, arg: Any = None) -> None:
        self.journal.append((f"agent.{name}", arg))
        if name in self.fail:
            raise AgentError(f"agent unreachable (POST /{name}): ConnectionError")

    def status(self) -> dict[str, Any]:
        self._call("status")
        return dict(self.status_body)

    def heartbeat(self, lease: float | None, deadline: float | None = None) -> dict[str, Any]:
        self._call("heartbeat", lease)
        return {}

    def bootstrap(self) -> None:
        self._call("bootstrap")

    def clone(self, upstream: Member) -> None:
        self._call("clone", upstream.name)

    def start_primary(self) -> None:
        self._call("start_primary")

    def start_replica(self, upstream: Member | None, rewind: bool = False) -> None:
        self._call("start_replica", upstream.name if upstream else None)

    def promote(self, slots: list[str] | None = None) -> None:
        self._call("promote", slots)

    def stop(self, mode: str, reason: str) -> dict[str, Any]:
        self._call("stop", reason)
        return dict(self.stop_result)

    def ensure_slots(self, names: list[str]) -> dict[str, Any]:
        self._call("ensure_slots", names)
        return {}

    def replication(self) -> dict[str, Any]:
        self._call("replication")
        return {"standbys": []}

    def set_sync(self, names: str) -> None:
        self._call("set_sync", names)


class FakeClock:
    """Monotonic seconds that move only when told (``step`` per read, 0 by default)."""

    def __init__(self, now: float = 1000.0, step: float = 0.0) -> None:
        self.now = now
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now
