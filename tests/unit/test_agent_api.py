"""Input validation of the agent's HTTP API (Flask test client, no postgres needed)."""

from __future__ import annotations

from typing import Any

import pytest

from postgres_ras.agent.api import create_app


class RecordingAgent:
    """Just enough of Agent for the heartbeat endpoint: records what it was told."""

    def __init__(self) -> None:
        self.leases: list[float | None] = []
        self.fenced: str | None = None

    def heartbeat(self, lease: float | None) -> None:
        self.leases.append(lease)


@pytest.fixture
def client_and_agent() -> tuple[Any, RecordingAgent]:
    agent = RecordingAgent()
    return create_app(agent).test_client(), agent  # type: ignore[arg-type]


@pytest.mark.parametrize("lease", [2.5, 0, None])
def test_valid_leases_reach_the_agent(client_and_agent: Any, lease: float | None) -> None:
    client, agent = client_and_agent
    resp = client.post("/heartbeat", json={"lease": lease})
    assert resp.status_code == 200
    assert agent.leases == [lease]


@pytest.mark.parametrize(
    "raw",
    [
        '{"lease": NaN}',
        '{"lease": Infinity}',
        '{"lease": -1}',
        '{"lease": 1e9}',
        '{"lease": "3"}',
        '{"lease": true}',
        "[1, 2]",
        "not json",
    ],
)
def test_bad_leases_are_refused_and_never_reach_the_agent(client_and_agent: Any, raw: str) -> None:
    client, agent = client_and_agent
    resp = client.post("/heartbeat", data=raw, content_type="application/json")
    assert resp.status_code == 400
    assert "error" in resp.get_json()
    assert agent.leases == []


class SyncPostgres:
    def __init__(self) -> None:
        self.set: list[str] = []

    def set_sync(self, names: str) -> None:
        self.set.append(names)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"synchronous_standby_names": 'FIRST 1 ("node2")'}, 200),
        ({"synchronous_standby_names": ""}, 200),
        ({"synchronous_standby_names": 1}, 400),
        ({"synchronous_standby_names": "a'\nfsync = off"}, 400),
        ({}, 400),
    ],
)
def test_sync_endpoint_validates_its_input(
    client_and_agent: Any, body: dict[str, Any], status: int
) -> None:
    client, agent = client_and_agent
    agent.pg = SyncPostgres()
    resp = client.post("/sync", json=body)
    assert resp.status_code == status, resp.get_json()
    assert agent.pg.set == ([body["synchronous_standby_names"]] if status == 200 else [])


class PromotingAgent:
    def __init__(self) -> None:
        self.promoted: list[list[str]] = []

    def promote(self, slots: list[str]) -> Any:
        self.promoted.append(slots)
        return type("Job", (), {"to_json": lambda self: {"name": "promote"}})()


@pytest.mark.parametrize(
    ("body", "slots"), [(None, []), ({}, []), ({"slots": ["node_2"]}, ["node_2"])]
)
def test_promote_takes_optional_slot_names(body: Any, slots: list[str]) -> None:
    agent = PromotingAgent()
    client = create_app(agent).test_client()  # type: ignore[arg-type]
    resp = client.post("/promote", json=body) if body is not None else client.post("/promote")
    assert resp.status_code == 202, resp.get_json()
    assert agent.promoted == [slots]


@pytest.mark.parametrize(
    "slots", ["node2", [1], ["Node2"], ["a-b"], [""], ["x" * 64], ["ok", None], ["x"] * 1001]
)
def test_promote_refuses_bad_slot_names_and_promotes_nothing(slots: Any) -> None:
    agent = PromotingAgent()
    client = create_app(agent).test_client()  # type: ignore[arg-type]
    resp = client.post("/promote", json={"slots": slots})
    assert resp.status_code == 400
    assert "slot names" in resp.get_json()["error"]
    assert agent.promoted == []
