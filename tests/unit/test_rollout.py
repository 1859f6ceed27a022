"""The orchestrated rollout (controller/rollout.py): the pure planner, and the driver over a
simulated StatefulSet (OnDelete) whose members switch over the way the controllers do.

No Kubernetes here: the simulation stands in for the API server and the controllers'
GET /cluster; the planner and the driver are the real code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from postgres_ras.controller import rollout
from postgres_ras.controller.api import create_app
from postgres_ras.controller.rollout import (
    ClusterView,
    DeletePod,
    Done,
    MemberView,
    Observation,
    PodView,
    Rollout,
    Switchover,
    Wait,
    back,
    leads,
    plan,
)
from postgres_ras.dcs.base import Cluster, Leader, Member
from postgres_ras.dcs.base import Switchover as SwitchoverKey

OLD, NEW = "pg-6f7c9d", "pg-85b4d2"


def pods(revisions: dict[str, str], not_ready: Iterable[str] = ()) -> tuple[PodView, ...]:
    return tuple(
        PodView(name, int(name.rsplit("-", 1)[1]), rev, name not in set(not_ready))
        for name, rev in revisions.items()
    )


def view(
    leader: str | None,
    names: Iterable[str],
    states: dict[str, str] | None = None,
    lsn: dict[str, int] | None = None,
    sync: Iterable[str] = (),
    synchronous_mode: bool = False,
    switchover: str | None = None,
) -> ClusterView:
    members = {
        n: MemberView(
            n,
            "primary" if n == leader else "replica",
            (states or {}).get(n, "running"),
            lsn=(lsn or {}).get(n, 100),
            sync_standby=n in set(sync),
        )
        for n in names
    }
    return ClusterView(leader, members, switchover, synchronous_mode)


def obs(
    revisions: dict[str, str],
    leader: str | None = "pg-0",
    not_ready: Iterable[str] = (),
    replicas: int | None = None,
    cluster: ClusterView | str | None = "default",
    **kwargs: object,
) -> Observation:
    if cluster == "default":
        cluster = view(leader, revisions, **kwargs)  # type: ignore[arg-type]
    assert not isinstance(cluster, str)
    return Observation(
        statefulset="pg",
        update_revision=NEW,
        replicas=len(revisions) if replicas is None else replicas,
        pods=pods(revisions, not_ready),
        cluster=cluster,
        cluster_error="" if cluster else "pg-0: ConnectionError",
    )


ALL_OLD = {"pg-0": OLD, "pg-1": OLD, "pg-2": OLD}


# --- the planner --------------------------------------------------------------------------


def test_outdated_replicas_go_first_highest_ordinal_first() -> None:
    step = plan(obs(ALL_OLD, leader="pg-0"))
    assert isinstance(step, DeletePod) and step.pod == "pg-2"
    assert "replica" in step.reason and "highest ordinal first" in step.reason
    step = plan(obs({**ALL_OLD, "pg-2": NEW}, leader="pg-0"))
    assert isinstance(step, DeletePod) and step.pod == "pg-1"


def test_the_primary_is_never_deleted_while_an_outdated_replica_remains() -> None:
    # The primary has the highest ordinal: the replicas below it still go first.
    step = plan(obs(ALL_OLD, leader="pg-2"))
    assert isinstance(step, DeletePod) and step.pod == "pg-1"
    step = plan(obs({**ALL_OLD, "pg-1": NEW}, leader="pg-2"))
    assert isinstance(step, DeletePod) and step.pod == "pg-0"


def test_the_primary_goes_last_through_a_switchover_to_an_updated_replica() -> None:
    step = plan(obs({"pg-0": OLD, "pg-1": NEW, "pg-2": NEW}, leader="pg-0", lsn={"pg-1": 7}))
    assert isinstance(step, Switchover) and (step.source, step.target) == ("pg-0", "pg-2")
    assert "every replica is updated" in step.reason
    # The most WAL wins; then (after the switchover) the old primary is an outdated replica.
    step = plan(obs({"pg-0": OLD, "pg-1": NEW, "pg-2": NEW}, leader="pg-0", lsn={"pg-2": 7}))
    assert isinstance(step, Switchover) and step.target == "pg-1"
    step = plan(obs({"pg-0": OLD, "pg-1": NEW, "pg-2": NEW}, leader="pg-1"))
    assert isinstance(step, DeletePod) and step.pod == "pg-0"


def test_a_leader_already_updated_means_no_switchover_at_all() -> None:
    step = plan(obs({"pg-0": NEW, "pg-1": OLD, "pg-2": NEW}, leader="pg-0"))
    assert isinstance(step, DeletePod) and step.pod == "pg-1"


def test_the_switchover_target_must_be_updated_and_a_running_replica() -> None:
    revs = {"pg-0": OLD, "pg-1": NEW, "pg-2": NEW}
    step = plan(obs(revs, leader="pg-0", states={"pg-1": "starting", "pg-2": "stopped"}))
    assert isinstance(step, Wait) and step.pod == "pg-0"
    assert "no updated running replica" in step.reason
    # Listed as not streaming (when /cluster says so): not a target either.
    members = dict(view("pg-0", revs).members)
    members["pg-2"] = MemberView("pg-2", "replica", "running", streaming=False)
    members["pg-1"] = MemberView("pg-1", "replica", "running", streaming=True)
    step = plan(obs(revs, cluster=ClusterView("pg-0", members)))
    assert isinstance(step, Switchover) and step.target == "pg-1"


def test_synchronous_mode_switches_over_to_a_synchronous_standby_only() -> None:
    revs = {"pg-0": OLD, "pg-1": NEW, "pg-2": NEW}
    step = plan(obs(revs, synchronous_mode=True, sync=["pg-1"], lsn={"pg-2": 999}))
    assert isinstance(step, Switchover) and step.target == "pg-1"
    step = plan(obs(revs, synchronous_mode=True, sync=[]))
    assert isinstance(step, Wait) and "synchronous standby" in step.reason


def test_nothing_to_do_when_every_pod_is_updated() -> None:
    step = plan(obs({"pg-0": NEW, "pg-1": NEW, "pg-2": NEW}))
    assert isinstance(step, Done) and NEW in step.reason
    # Even with a pod not Ready or no leader: there is nothing to restart.
    assert isinstance(plan(obs({"pg-0": NEW, "pg-1": NEW}, not_ready=["pg-1"])), Done)
    assert isinstance(plan(obs({"pg-0": NEW}, leader=None)), Done)


@pytest.mark.parametrize("who", ["pg-0", "pg-1", "pg-2"])
def test_refuses_while_any_pod_is_not_ready(who: str) -> None:
    step = plan(obs(ALL_OLD, not_ready=[who]))
    assert step == Wait(who, "is not Ready")


def test_refuses_while_a_pod_terminates_is_missing_or_beyond_the_replicas() -> None:
    terminating = PodView("pg-1", 1, OLD, True, terminating=True)
    o = obs(ALL_OLD)
    o = Observation("pg", NEW, 3, (o.pods[0], terminating, o.pods[2]), o.cluster)
    assert plan(o) == Wait("pg-1", "is terminating")
    step = plan(obs({"pg-0": OLD, "pg-2": OLD}, replicas=3))
    assert isinstance(step, Wait) and step.pod == "pg-1" and "does not exist" in step.reason
    step = plan(obs(ALL_OLD, replicas=2))
    assert isinstance(step, Wait) and step.pod == "pg-2" and "scale-down" in step.reason


def test_refuses_without_a_leader_or_a_cluster_view() -> None:
    assert plan(obs(ALL_OLD, leader=None)) == Wait(None, "the cluster has no leader")
    step = plan(obs(ALL_OLD, cluster=None))
    assert isinstance(step, Wait) and "GET /cluster" in step.reason
    step = plan(obs(ALL_OLD, leader="pg-0", states={"pg-0": "stopped"}))
    assert isinstance(step, Wait) and step.pod == "pg-0"
    step = plan(obs(ALL_OLD, leader="pg-7"))
    assert isinstance(step, Wait) and "not a pod" in step.reason


def test_refuses_while_a_switchover_is_under_way() -> None:
    step = plan(obs(ALL_OLD, switchover="pg-0 -> pg-1"))
    assert isinstance(step, Wait) and "switchover is under way" in step.reason


def test_refuses_until_the_statefulset_observed_its_new_spec() -> None:
    o = obs(ALL_OLD)
    stale = Observation("pg", OLD, 3, o.pods, o.cluster, observed=False)
    step = plan(stale)
    assert isinstance(step, Wait) and "not observed yet" in step.reason
    assert isinstance(plan(Observation("pg", None, 3, o.pods, o.cluster)), Wait)


def test_one_instance_restarts_its_primary_without_a_switchover() -> None:
    """A one-instance cluster has nobody to switch over to: its pod is deleted as it is.
    No failover either (the lone controller's SIGTERM handover finds no replica, it
    stops postgres and releases the lock, and the new pod takes the lock again), but
    writes stop from the deletion until the new pod serves as primary."""
    step = plan(obs({"pg-0": OLD}, leader="pg-0"))
    assert isinstance(step, DeletePod) and step.pod == "pg-0"
    assert "only instance" in step.reason and "writes stop" in step.reason
    # Back once it leads again as a running primary.
    assert back(obs({"pg-0": NEW}, leader="pg-0"), "pg-0") is None
    assert back(obs({"pg-0": NEW}, leader=None), "pg-0") is not None


def test_back_needs_the_update_revision_readiness_and_a_running_replica() -> None:
    assert back(obs({"pg-0": NEW, "pg-2": OLD}), "pg-1") == "pod pg-1 does not exist yet"
    seen = back(obs({"pg-0": NEW, "pg-1": OLD}), "pg-1")
    assert seen is not None and "not the update revision" in seen
    assert back(obs({"pg-0": NEW, "pg-1": NEW}, not_ready=["pg-1"]), "pg-1") == (
        "pod pg-1 is not Ready yet"
    )
    seen = back(obs({"pg-0": NEW, "pg-1": NEW}, states={"pg-1": "starting"}), "pg-1")
    assert seen is not None and "not as a running replica" in seen
    assert back(obs({"pg-0": NEW, "pg-1": NEW}), "pg-1") is None


def test_leads() -> None:
    assert leads(obs(ALL_OLD, leader="pg-1"), "pg-1") is None
    assert leads(obs(ALL_OLD, leader="pg-0"), "pg-1") == "the leader is still pg-0"
    assert leads(obs(ALL_OLD, leader="pg-1", states={"pg-1": "starting"}), "pg-1") is not None


def test_cluster_view_parses_the_real_cluster_endpoint() -> None:
    """GET /cluster of the real Flask app, over a stand-in HA snapshot."""

    def member(name: str, role: str, lsn: int) -> Member:
        return Member(name, f"http://{name}:8008", name, 5432, role, "running", 1, lsn, False, "s")

    dcs_cluster = Cluster(
        leader=Leader("pg-1", "s", 1),
        members=(member("pg-0", "replica", 5 << 32), member("pg-1", "primary", 6 << 32)),
        switchover=SwitchoverKey("pg-1", "pg-0", time.time()),
        sync="pg-0",
    )
    settings = SimpleNamespace(synchronous_mode=True)
    ha = SimpleNamespace(
        config=SimpleNamespace(
            cluster="pg", controller=SimpleNamespace(allow_networks=[], auth_token=None)
        ),
        snapshot=SimpleNamespace(
            observation=SimpleNamespace(cluster=dcs_cluster, settings=settings)
        ),
    )
    body = create_app(ha).test_client().get("/cluster").get_json()  # type: ignore[arg-type]
    cv = ClusterView.from_api(body)
    assert cv.leader == "pg-1"
    assert cv.switchover == "pg-1 -> pg-0"
    assert cv.synchronous_mode
    assert cv.members["pg-1"].running_primary and cv.members["pg-0"].running_replica
    assert cv.members["pg-0"].lsn == 5 << 32 and cv.members["pg-0"].sync_standby
    with pytest.raises(ValueError):
        ClusterView.from_api({"error": "Consul unreachable: no cluster view"})


def test_pod_views_from_lightkube_pods() -> None:
    from lightkube.models.core_v1 import PodCondition, PodStatus
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import Pod

    def pod(name: str, ready: str, rev: str | None, deleting: bool = False) -> Pod:
        return Pod(
            metadata=ObjectMeta(
                name=name,
                labels={rollout.REVISION_LABEL: rev} if rev else {},
                deletionTimestamp="2026-01-01T00:00:00Z" if deleting else None,  # type: ignore[arg-type]
            ),
            status=PodStatus(conditions=[PodCondition(type="Ready", status=ready)]),
        )

    views = rollout.pod_views(
        "pg",
        [
            pod("pg-1", "False", NEW, deleting=True),
            pod("pg-0", "True", OLD),
            pod("pg-consul-0", "True", OLD),
            pod("pg-2", "True", None),
        ],
    )
    assert views == (
        PodView("pg-0", 0, OLD, True),
        PodView("pg-1", 1, NEW, False, terminating=True),
        PodView("pg-2", 2, None, True),
    )


# --- the driver over a simulated StatefulSet ---------------------------------------------


@dataclass
class SimPod:
    rev: str
    # Ticks (observations) left in the restart: 4 terminating, 3 absent, 2 created but
    # not Ready, 1 Ready but its member still starting, 0 serving.
    restarting: int = 0
    stuck: bool = False  # never comes back


@dataclass
class SimStatefulSet:
    """The API server (OnDelete: a deleted pod comes back on the update revision) and the
    controllers (a switchover request moves the lock after a few ticks)."""

    n: int
    leader: str | None = "pg-0"
    update: str = NEW
    pods: dict[str, SimPod] = field(default_factory=dict)
    switchover_ticks: int = 2
    answer: int = 202
    pending: list[tuple[str, int]] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    leader_changes: int = 0
    never_ready: str | None = None

    def __post_init__(self) -> None:
        self.pods = self.pods or {f"pg-{i}": SimPod(OLD) for i in range(self.n)}

    def _tick(self) -> None:
        for name, p in self.pods.items():
            if p.restarting and not p.stuck:
                p.restarting -= 1
                if p.restarting == 2:
                    p.rev = self.update
                if p.restarting == 0 and self.leader is None and self.n == 1:
                    self.leader = name  # the lone member takes the lock again
        if self.pending:
            target, ticks = self.pending[0]
            if ticks > 1:
                self.pending[0] = (target, ticks - 1)
            else:
                self.pending.clear()
                self.leader = target
                self.leader_changes += 1

    def observe(self) -> Observation:
        self._tick()
        return self.view()

    def view(self) -> Observation:
        views, members = [], {}
        for name, p in self.pods.items():
            if p.restarting == 3 or p.stuck:
                continue  # deleted, not created again (yet)
            i = int(name.split("-")[1])
            ready = p.restarting in (0, 1) and name != self.never_ready
            views.append(PodView(name, i, p.rev, ready, terminating=p.restarting == 4))
            if p.restarting in (4, 2):
                continue
            role = "primary" if name == self.leader else "replica"
            state = "starting" if p.restarting == 1 else "running"
            members[name] = MemberView(name, role, state, lsn=100 + i)
        sw = f"{self.leader} -> {self.pending[0][0]}" if self.pending else None
        return Observation(
            "pg", self.update, self.n, tuple(views), ClusterView(self.leader, members, sw)
        )

    def delete(self, pod: str) -> None:
        o = self.view()
        others = [p for p in o.pods if p.name != pod]
        assert self.leader is not None, f"deleted {pod} without a leader"
        assert all(p.ready for p in others) and len(o.pods) == self.n, f"deleted {pod} early"
        self.actions.append(f"delete {pod}")
        self.pods[pod].restarting = 5  # the next observation shows it terminating
        if pod == self.leader:
            if self.n > 1:
                self.leader_changes += 1  # its SIGTERM handover: a second switchover
                self.leader = max(n for n in self.pods if n != pod)
            else:
                self.leader = None

    def switchover(self, o: Observation, source: str, target: str) -> tuple[int, str]:
        self.actions.append(f"switchover {source} -> {target}")
        if self.answer == 202:
            self.pending = [(target, self.switchover_ticks)]
        return self.answer, "{}"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run(sim: SimStatefulSet, **kwargs: float) -> int:
    clock = FakeClock()
    return Rollout(sim, clock=clock, sleep=clock.sleep, **kwargs).run()


def test_rollout_of_three_restarts_replicas_then_the_primary_after_one_switchover() -> None:
    sim = SimStatefulSet(3, leader="pg-0")
    assert run(sim) == 0
    assert sim.actions == [
        "delete pg-2",
        "delete pg-1",
        "switchover pg-0 -> pg-2",
        "delete pg-0",
    ]
    assert sim.leader_changes == 1 and sim.leader == "pg-2"
    assert all(p.rev == NEW and not p.restarting for p in sim.pods.values())


def test_rollout_when_the_highest_ordinal_leads() -> None:
    sim = SimStatefulSet(3, leader="pg-2")
    assert run(sim) == 0
    assert sim.actions == ["delete pg-1", "delete pg-0", "switchover pg-2 -> pg-1", "delete pg-2"]
    assert sim.leader_changes == 1


def test_rerun_is_idempotent_and_continues_where_it_stopped() -> None:
    sim = SimStatefulSet(3, leader="pg-1")
    sim.pods["pg-2"].rev = NEW  # an earlier run restarted pg-2, then stopped
    assert run(sim) == 0
    assert sim.actions == ["delete pg-0", "switchover pg-1 -> pg-2", "delete pg-1"]
    sim.actions.clear()
    assert run(sim) == 0 and sim.actions == [], "a second run has nothing to do"


def test_one_instance_rollout_deletes_the_primary_and_waits_for_it_to_lead() -> None:
    sim = SimStatefulSet(1, leader="pg-0")
    assert run(sim) == 0
    assert sim.actions == ["delete pg-0"]
    assert sim.leader == "pg-0" and sim.leader_changes == 0


def test_a_pod_that_does_not_come_back_fails_naming_it(caplog: pytest.LogCaptureFixture) -> None:
    sim = SimStatefulSet(3, leader="pg-0")
    original = sim.delete

    def delete_and_stick(pod: str) -> None:
        original(pod)
        sim.pods[pod].stuck = True

    sim.delete = delete_and_stick  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="postgres_ras.controller.rollout"):
        assert run(sim, pod_timeout=30) == 1
    assert sim.actions == ["delete pg-2"], "nothing after the pod that did not come back"
    failed = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failed) == 1
    assert "timed out after 30s waiting for pod pg-2 to come back" in failed[0]
    assert "pod pg-2 does not exist yet" in failed[0]
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("rollout: deleting pod pg-2: replica") for line in lines)


def test_never_deletes_while_a_pod_is_not_ready(caplog: pytest.LogCaptureFixture) -> None:
    sim = SimStatefulSet(3, leader="pg-0", never_ready="pg-1")
    with caplog.at_level(logging.INFO, logger="postgres_ras.controller.rollout"):
        assert run(sim, settle_timeout=20) == 1
    assert sim.actions == []
    (failed,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "last seen: pod pg-1: is not Ready" in failed


def test_a_switchover_that_does_not_complete_fails_naming_the_target(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim = SimStatefulSet(2, leader="pg-0", switchover_ticks=10**6)
    sim.pods["pg-1"].rev = NEW
    with caplog.at_level(logging.INFO, logger="postgres_ras.controller.rollout"):
        assert run(sim, switchover_timeout=15) == 1
    assert sim.actions == ["switchover pg-0 -> pg-1"]
    (failed,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "waiting for pod pg-1 to lead after the switchover from pg-0" in failed


def test_a_switchover_not_accepted_is_planned_again_boundedly() -> None:
    sim = SimStatefulSet(2, leader="pg-0", answer=409)
    sim.pods["pg-1"].rev = NEW
    assert run(sim) == 1
    assert sim.actions == ["switchover pg-0 -> pg-1"] * 9, "3 x instances + 3 steps at most"


def test_a_refused_token_stops_at_once() -> None:
    sim = SimStatefulSet(2, leader="pg-0", answer=401)
    sim.pods["pg-1"].rev = NEW
    assert run(sim) == 1
    assert sim.actions == ["switchover pg-0 -> pg-1"]


def test_the_deadline_bounds_the_whole_run() -> None:
    sim = SimStatefulSet(3, leader="pg-0", never_ready="pg-1")
    clock = FakeClock()
    r = Rollout(sim, settle_timeout=10**6, deadline=50, clock=clock, sleep=clock.sleep)
    assert r.run() == 1
    assert clock.now - 1000.0 <= 52


def test_main_needs_a_token_and_a_pod_placeholder() -> None:
    args = ["--statefulset", "pg", "--namespace", "db"]
    assert rollout.main([*args, "--api-url", "http://{pod}.h:8008"], env={}) == 2
    assert (
        rollout.main([*args, "--api-url", "http://pg-0.h:8008"], env={"CONTROLLER_TOKEN": "t"}) == 2
    )


def test_the_declared_api_calls() -> None:
    assert {
        ("apps", "statefulsets", "get"),
        ("", "pods", "list"),
        ("", "pods", "delete"),
    } == rollout.API_CALLS
