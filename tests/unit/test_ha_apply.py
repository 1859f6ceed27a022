"""The HA loop's imperative shell (observe + apply) over a fake Consul, agent and clock.

decide() is tested on its own (test_decide*.py); here: what a cycle does with
the lease and the store when an action wins, loses its race, or meets a Consul
error half way.
"""

from __future__ import annotations

import time
from typing import Any

from tests.unit.fakes import FakeAgent, FakeClock, FakeDCS

from postgres_ras.config import NodeConfig
from postgres_ras.controller.ha import HA
from postgres_ras.controller.publisher import NullPublisher
from postgres_ras.controller.state import Action

CONFIG = NodeConfig.model_validate({"name": "node1", "data_dir": "/nonexistent"})
TTL, RETRY = CONFIG.ha.ttl, CONFIG.ha.retry_timeout


def make(role: str, leader: str | None) -> tuple[HA, FakeDCS, FakeAgent, FakeClock, list[Any]]:
    journal: list[tuple[str, Any]] = []
    dcs = FakeDCS(journal, "node1", leader)
    agent = FakeAgent.running(journal, role)
    clock = FakeClock(1000.0)
    ha = HA(
        CONFIG,
        dcs,
        agent,  # type: ignore[arg-type]  # the AgentClient's methods, without HTTP
        NullPublisher(),
        clock=clock,
        probe_all=lambda targets: (),
        identify=lambda url: None,
    )
    return ha, dcs, agent, clock, journal


def called(journal: list[tuple[str, Any]]) -> list[str]:
    return [name for name, _ in journal]


def heartbeats(journal: list[tuple[str, Any]]) -> list[Any]:
    return [arg for name, arg in journal if name == "agent.heartbeat"]


def test_the_leader_is_leased_from_its_keepalive_time() -> None:
    ha, _, _, _, _ = make("primary", leader="node1")
    ha.cycle()
    assert ha.snapshot.decision is not None and ha.snapshot.decision.action is Action.HOLD
    assert ha.lease.deadline == 1000.0 + min(RETRY, TTL - 1.0)
    assert ha.snapshot.primary_ok


def test_no_lease_while_another_session_holds_the_lock() -> None:
    ha, _, _, _, _ = make("replica", leader="node2")
    ha.cycle()
    assert ha.lease.deadline is None and not ha.snapshot.primary_ok


def test_consul_down_the_primary_keeps_its_lease_only_until_it_lapses() -> None:
    ha, dcs, _, clock, journal = make("primary", leader="node1")
    ha.cycle()
    deadline = ha.lease.deadline
    assert deadline is not None
    dcs.fail = {"keepalive", "get_cluster", "touch_member"}
    clock.now = deadline - 0.5
    ha.cycle()
    assert ha.lease.deadline == deadline, "a failed keepalive must not extend the lease"
    assert ha.snapshot.decision is not None
    assert ha.snapshot.decision.action is Action.WAIT
    clock.now = deadline + 0.1
    journal.clear()
    ha.cycle()
    assert ha.snapshot.decision is not None and ha.snapshot.decision.action is Action.DEMOTE
    names = called(journal)
    # The agent learns "no lease" before postgres is stopped: its fence covers a stop
    # that does not get through.
    assert heartbeats(journal) == [None]
    assert names.index("agent.heartbeat") < names.index("agent.stop")
    assert ha.lease.deadline is None


def test_a_lost_race_promotes_nothing_and_holds_no_lease() -> None:
    ha, dcs, _, _, journal = make("replica", leader=None)
    dcs.race_winner = "node2"
    ha.cycle()
    d = ha.snapshot.decision
    assert d is not None and d.action is Action.ACQUIRE_AND_PROMOTE
    assert "agent.promote" not in called(journal)
    assert ha.lease.deadline is None
    assert dcs.leader_name == "node2"


def test_a_won_race_leases_before_it_promotes() -> None:
    ha, dcs, _, _, journal = make("replica", leader=None)
    ha.cycle()
    names = called(journal)
    assert dcs.leader_name == "node1"
    assert names.index("agent.heartbeat") < names.index("agent.promote")
    assert heartbeats(journal)[0] == min(RETRY, TTL - 1.0)  # the agent knows the lease


def test_the_winner_promotes_with_the_slots_of_the_members_it_saw() -> None:
    # Created by the agent before promoting, so the former primary (node2, whose lock and
    # key are gone) finds the WAL its pg_rewind needs on us.
    ha, dcs, _, _, journal = make("replica", leader="node2")
    ha.cycle()
    assert "agent.promote" not in called(journal)
    dcs.leader_name = dcs.leader_session = None
    ha.cycle()
    assert [arg for name, arg in journal if name == "agent.promote"] == [["node2"]]


def test_consul_error_mid_action_is_reported_and_promotes_nothing(caplog: Any) -> None:
    ha, dcs, _, _, journal = make("replica", leader=None)
    dcs.fail = {"acquire_leader"}
    caplog.set_level("INFO")
    ha.cycle()
    assert "agent.promote" not in called(journal)
    assert ha.lease.deadline is None
    line = next(r.getMessage() for r in caplog.records if "racing for the lock" in r.getMessage())
    assert "failed: Consul at http://127.0.0.1:1 unreachable (acquire_leader)" in line


def test_release_drops_the_lease_before_the_lock() -> None:
    """A leader whose data directory is gone gives the lock up (RELEASE)."""
    ha, dcs, agent, _, journal = make("primary", leader="node1")
    ha.cycle()
    agent.status_body = {"running": False, "role": "stopped", "has_data": False}
    journal.clear()
    ha.cycle()
    assert ha.snapshot.decision is not None and ha.snapshot.decision.action is Action.RELEASE
    names = called(journal)
    assert heartbeats(journal) == [None]
    assert names.index("agent.heartbeat") < names.index("dcs.release_leader")
    assert dcs.leader_name is None


def test_shutdown_of_the_leader_publishes_its_final_position_then_releases() -> None:
    ha, dcs, agent, _, journal = make("primary", leader="node1")
    ha.cycle()
    agent.stop_result = {"checkpoint_lsn": "0/3000100"}
    journal.clear()
    ha.shutdown()
    names = called(journal)
    assert names.index("agent.stop") < names.index("dcs.put") < names.index("dcs.release_leader")
    assert dcs.keys["optime/leader"] == "0/3000100"
    assert "agent.heartbeat" not in names  # the fence must not race the clean stop
    assert dcs.leader_name is None and ha.lease.deadline is None


def test_the_first_cycle_waits_briefly_for_a_starting_agent() -> None:
    ha, _, agent, _, journal = make("replica", leader="node2")
    agent.fail.add("status")
    started = time.monotonic()
    ha._await_agent(0.3)  # an agent that stays down: bounded
    assert 0.3 <= time.monotonic() - started < 1.0
    polls = called(journal).count("agent.status")
    assert polls >= 5  # every 20 ms, not once a cycle
    agent.fail.clear()
    journal.clear()
    ha._await_agent(5.0)  # an agent that answers: at once
    assert called(journal) == ["agent.status"]
