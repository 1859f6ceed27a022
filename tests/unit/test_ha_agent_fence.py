"""The agent's fence and lease (issue 9.7, 9.8, 9.11), over a fake postgres and clock.

Pure logic of ``Agent``: the real postgres side is in tests/integration.
"""

from __future__ import annotations

from typing import Any

import pytest

from postgres_ras.agent.api import create_app
from postgres_ras.agent.node import ROLE_RECHECK, Agent, NoLease
from postgres_ras.config import NodeConfig
from postgres_ras.errors import PostgresError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakePostgres:
    """Running or not, in recovery or not; records stops."""

    def __init__(self, running: bool = True, in_recovery: bool = True) -> None:
        self.running = running
        self.recovery: bool | None = in_recovery  # None: does not accept connections
        self.stops = 0
        self.queries = 0

    def is_running(self) -> bool:
        return self.running

    def in_recovery(self) -> bool:
        self.queries += 1
        if self.recovery is None:
            raise PostgresError("not accepting connections")
        return self.recovery

    def query_state(self) -> dict[str, Any]:
        if self.recovery is None:
            raise PostgresError("not accepting connections")
        return {"role": "replica" if self.recovery else "primary"}

    def stop(self, mode: str, timeout: float = 60) -> bool:
        self.stops += 1
        self.running = False
        return True


CONFIG = NodeConfig.model_validate({"name": "n1", "data_dir": "/nonexistent"})


def agent(pg: FakePostgres, clock: Clock) -> Agent:
    return Agent(CONFIG, pg, clock)  # type: ignore[arg-type]


def test_promotion_finished_after_adoption_is_fenced() -> None:
    """Adopted as a replica; the promotion completes later; no controller: fenced."""
    clock, pg = Clock(), FakePostgres(in_recovery=True)
    a = agent(pg, clock)
    assert a.is_primary is False
    pg.recovery = False  # promoted while the agent remembered a replica
    clock.now += CONFIG.agent.fence_timeout + 0.1
    assert a.fence_once() is not None
    assert pg.stops == 1 and not pg.running
    assert "no heartbeat" in (a.fenced or "")


def test_replica_is_checked_live_at_most_every_role_recheck() -> None:
    clock, pg = Clock(), FakePostgres(in_recovery=True)
    a = agent(pg, clock)
    clock.now += 5
    for _ in range(10):
        assert a.fence_once() is None
    assert pg.queries == 1
    clock.now += ROLE_RECHECK
    assert a.fence_once() is None
    assert pg.queries == 2 and pg.stops == 0


def test_replica_not_accepting_connections_is_not_stopped() -> None:
    clock, pg = Clock(), FakePostgres(in_recovery=True)
    a = agent(pg, clock)
    pg.recovery = None
    clock.now += 5
    assert a.fence_once() is None and pg.stops == 0


def test_lease_is_capped_at_ttl() -> None:
    clock, pg = Clock(), FakePostgres(in_recovery=False)
    a = agent(pg, clock)
    a.heartbeat(600.0)
    assert a.lease_deadline == clock.now + CONFIG.ha.ttl


def test_late_heartbeat_cannot_stretch_the_lease() -> None:
    """The controller confirmed the lease until T; the agent processes the heartbeat late."""
    clock, pg = Clock(), FakePostgres(in_recovery=False)
    a = agent(pg, clock)
    confirmed_until = clock.now + 2.0
    clock.now += 1.5  # the heartbeat (lease=2.0 when sent) arrives 1.5 s late
    a.heartbeat(2.0, confirmed_until)
    assert a.lease_deadline == confirmed_until
    clock.now = confirmed_until + 0.01
    assert a.fence_once() == "the controller holds no valid leader lease"


@pytest.mark.parametrize("action", ["promote", "start_primary"])
def test_primary_refused_without_a_valid_lease(action: str) -> None:
    clock, pg = Clock(), FakePostgres(running=False)
    a = agent(pg, clock)
    with pytest.raises(NoLease, match="holds no valid leader lease"):
        getattr(a, action)()
    a.heartbeat(2.0)
    clock.now += 2.1
    with pytest.raises(NoLease):
        getattr(a, action)()


def test_agent_api_requires_the_token_when_set() -> None:
    clock, pg = Clock(), FakePostgres(running=False)
    client = create_app(agent(pg, clock), "s3cret").test_client()
    assert client.post("/heartbeat", json={"lease": None}).status_code == 401
    bad = {"Authorization": "Bearer wrong"}
    assert client.post("/heartbeat", json={"lease": None}, headers=bad).status_code == 401
    good = {"Authorization": "Bearer s3cret"}
    assert client.post("/heartbeat", json={"lease": None}, headers=good).status_code == 200
    resp = client.post("/promote", headers=good)
    assert resp.status_code == 409 and "no valid leader lease" in resp.get_json()["error"]
