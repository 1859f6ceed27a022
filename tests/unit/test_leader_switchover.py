"""LeaderDuties.switchover over a fake Consul, agent, probe and clock.

A switchover hands the lock over only after the target received the final WAL;
an aborted one leaves postgres stopped, and decide() (not the duty) starts it
again as primary while the lock is ours.
"""

from __future__ import annotations

from typing import Any

from tests.unit.fakes import FakeAgent, FakeClock, FakeDCS

from postgres_ras.config import NodeConfig
from postgres_ras.controller.decide import decide
from postgres_ras.controller.leader import LeaderDuties
from postgres_ras.controller.probe import Target
from postgres_ras.controller.state import (
    Action,
    Decision,
    NodeView,
    Observation,
    PeerView,
    Role,
)
from postgres_ras.dcs.base import Member, Switchover
from postgres_ras.lsn import parse_lsn

CONFIG = NodeConfig.model_validate({"name": "node1", "data_dir": "/nonexistent"})
CHECKPOINT = "0/5000028"


def setup(target_lsn: int | None) -> tuple[LeaderDuties, FakeDCS, list[Any], Observation]:
    journal: list[tuple[str, Any]] = []
    dcs = FakeDCS(journal, "node1", leader="node1")
    dcs.members["node2"] = Member(
        name="node2",
        api_url="http://127.0.0.1:1",
        conn_host="127.0.0.1",
        conn_port=5433,
        role="replica",
        state="running",
        timeline=1,
        lsn=parse_lsn("0/5000000"),
        nofailover=False,
        session="node2-s1",
    )
    dcs.keys["switchover"] = Switchover("node1", "node2", 0.0).to_json()
    agent = FakeAgent.running(journal, "primary", CHECKPOINT)

    def probe(target: Target, timeout: float, fresh: bool) -> PeerView:
        journal.append(("probe", target.name))
        return PeerView(target.name, reachable=True, role=Role.REPLICA, lsn=target_lsn)

    duties = LeaderDuties(CONFIG, dcs, agent, FakeClock(step=0.25), probe)  # type: ignore[arg-type]
    o = Observation(
        me="node1",
        node=NodeView(running=True, role=Role.PRIMARY, has_data=True, timeline=1),
        cluster=dcs.get_cluster(),
        session=dcs.session,
    )
    journal.clear()
    return duties, dcs, journal, o


def test_handed_over_once_the_target_holds_the_final_wal() -> None:
    duties, dcs, journal, o = setup(target_lsn=parse_lsn(CHECKPOINT) + 0x100)
    sentence, handed_over = duties.switchover(Decision(Action.SWITCHOVER, "", target="node2"), o)
    assert handed_over, sentence
    names = [name for name, _ in journal]
    assert names.index("agent.stop") < names.index("probe")
    assert dcs.keys["optime/leader"] == CHECKPOINT  # the race's lag check counts it
    request = Switchover.from_json(dcs.keys["switchover"])
    assert request is not None and (request.source, request.target) == ("node1", "node2")


def test_aborted_when_the_target_lags_and_decide_restarts_the_primary() -> None:
    duties, dcs, journal, o = setup(target_lsn=parse_lsn(CHECKPOINT) - 0x100)
    sentence, handed_over = duties.switchover(Decision(Action.SWITCHOVER, "", target="node2"), o)
    assert not handed_over
    assert sentence.startswith("switchover aborted: node2 did not receive the final WAL")
    assert "switchover" not in dcs.keys
    names = [name for name, _ in journal]
    assert "agent.start_primary" not in names  # the duty does not act on Consul it re-read
    assert "dcs.get_cluster" not in names
    # Next cycle: still holding the lock, postgres stopped -> decide starts it as primary.
    stopped = NodeView(running=False, role=Role.PRIMARY, has_data=True, timeline=1)
    after = Observation(me="node1", node=stopped, cluster=dcs.get_cluster(), session=dcs.session)
    assert decide(after).action is Action.START_PRIMARY
    # Had the lock lapsed meanwhile, it would start read-only and race like anyone else.
    dcs.leader_name = dcs.leader_session = None
    lapsed = Observation(me="node1", node=stopped, cluster=dcs.get_cluster(), session=dcs.session)
    assert decide(lapsed).action is Action.START_REPLICA


def test_a_vanished_target_stops_nothing() -> None:
    duties, dcs, journal, o = setup(target_lsn=None)
    dcs.members.clear()
    o = Observation(me="node1", node=o.node, cluster=dcs.get_cluster(), session=dcs.session)
    sentence, handed_over = duties.switchover(Decision(Action.SWITCHOVER, "", target="node2"), o)
    assert not handed_over and "vanished" in sentence
    assert "agent.stop" not in [name for name, _ in journal]
