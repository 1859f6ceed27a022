"""Safety properties of ``decide`` over generated observations (hypothesis).

The strategies keep names, sessions, system ids and LSNs in small pools so
that the interesting coincidences (my session holds the lock, my LSN equals
a peer's, my sysid differs from ``initialize``) happen often.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from postgres_ras.controller.decide import (
    PENDING_INIT,
    SWITCHOVER_TIMEOUT,
    decide,
    plausible,
    unsettled,
)
from postgres_ras.controller.state import (
    Action,
    Decision,
    NodeView,
    Observation,
    PeerView,
    Role,
    Settings,
)
from postgres_ras.dcs.base import Cluster, Leader, Member, Switchover, format_sync

NAMES = ("n1", "n2", "n3", "n4")
NOW = 1_700_000_000.0
MB = 1024 * 1024
BASE = 0x3_0000_0000
SYSIDS = ("7301", "7302")

FAST = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

WRITER_ACTIONS = {
    Action.PROMOTE,
    Action.START_PRIMARY,
    Action.ACQUIRE,
    Action.ACQUIRE_AND_PROMOTE,
    Action.BOOTSTRAP,
    Action.TAKE_OVER,
}


def session_of(name: str) -> str:
    return f"s-{name}"


def old_session_of(name: str) -> str:
    return f"s-{name}-old"


SESSIONS = (
    tuple(session_of(n) for n in NAMES) + tuple(old_session_of(n) for n in NAMES) + ("s-gone",)
)

# --- strategies -----------------------------------------------------------------------

lsns = st.one_of(
    st.none(),
    st.integers(BASE - 4 * MB, BASE + 4 * MB),
    st.sampled_from([0, -1, BASE + 2**40, 2**63]),
)
timelines = st.sampled_from([None, 1, 2, 3])
names = st.sampled_from(NAMES)
maybe_name = st.one_of(st.none(), names)
upstreams = st.sampled_from([None, *(f"10.0.0.{i}:5432" for i in range(1, 5)), "10.0.0.2:5433"])

node_views = st.builds(
    NodeView,
    running=st.booleans(),
    role=st.sampled_from(Role),
    has_data=st.booleans(),
    sysid=st.sampled_from([None, *SYSIDS]),
    timeline=timelines,
    lsn=lsns,
    streaming=st.booleans(),
    upstream=upstreams,
    job=st.sampled_from([None, None, None, "clone", "start-replica"]),
    job_error=st.sampled_from([None, "initdb failed"]),
    fenced=st.sampled_from([None, "no heartbeat"]),
)


def members(name: str) -> st.SearchStrategy[Member]:
    """A published member key; decide looks only at the leader's address, role and state."""
    i = NAMES.index(name) + 1
    return st.builds(
        Member,
        name=st.just(name),
        api_url=st.just(f"http://10.0.0.{i}:8008"),
        conn_host=st.just(f"10.0.0.{i}"),
        conn_port=st.sampled_from([5432, 5433]),
        role=st.sampled_from(["primary", "replica", "stopped", "unknown"]),
        state=st.sampled_from(["running", "stopped", "starting"]),
        timeline=st.just(1),
        lsn=st.just(BASE),
        nofailover=st.just(False),
        session=st.just(session_of(name)),
    )


member_lists = st.tuples(*(st.one_of(st.none(), members(n)) for n in NAMES)).map(
    lambda ms: tuple(m for m in ms if m is not None)
)


leaders = st.builds(
    Leader, name=names, session=st.sampled_from([*SESSIONS, None]), index=st.integers(1, 99)
)
switchovers = st.builds(
    Switchover,
    source=names,
    target=maybe_name,
    requested_at=st.floats(0, 2 * SWITCHOVER_TIMEOUT).map(lambda age: NOW - age),
)


def clusters(leader: st.SearchStrategy[Leader | None] | None = None) -> st.SearchStrategy[Cluster]:
    return st.builds(
        Cluster,
        initialize=st.sampled_from([None, PENDING_INIT, *SYSIDS]),
        config=st.none(),
        leader=st.one_of(st.none(), leaders) if leader is None else leader,
        members=member_lists,
        switchover=st.one_of(st.none(), switchovers),
        # None, one name, or several (synchronous_node_count > 1), "" when cleared.
        sync=st.one_of(maybe_name, st.lists(maybe_name.filter(bool), max_size=3).map(",".join)),
        read_at=st.just(NOW),
    )


peer_views = st.builds(
    PeerView,
    name=names,
    reachable=st.booleans(),
    primary_ok=st.integers(0, 9).map(lambda n: n == 0),  # rarely: it blocks every race
    role=st.sampled_from(Role),
    timeline=timelines,
    lsn=lsns,
    nofailover=st.booleans(),
    streaming=st.booleans(),
    running=st.booleans(),
    job=st.sampled_from([None, None, "start-replica"]),
)
ha_settings = st.builds(
    Settings,
    maximum_lag_on_failover=st.sampled_from([0, 1, MB, 16 * MB]),
    synchronous_mode=st.booleans(),
)


def observations(
    node: st.SearchStrategy[NodeView | None] | None = None,
    cluster: st.SearchStrategy[Cluster | None] | None = None,
    me: st.SearchStrategy[str] = names,
) -> st.SearchStrategy[Observation]:
    return st.builds(
        Observation,
        me=me,
        node=st.one_of(st.none(), node_views) if node is None else node,
        cluster=st.one_of(st.none(), clusters()) if cluster is None else cluster,
        session=st.sampled_from([*SESSIONS, None]),
        stale_sessions=st.frozensets(st.sampled_from(SESSIONS), max_size=2),
        lease_valid=st.booleans(),
        nofailover=st.booleans(),
        settings=ha_settings,
        last_leader=maybe_name,
        last_leader_lsn=lsns,
        peers=st.lists(peer_views, max_size=4).map(tuple),
        unsettled_for=st.sampled_from([0.0, 5.0, 25.0]),
        switchover_age=st.sampled_from([0.0, 3.0, 5.0, 40.0]),
        now_wall=st.just(NOW),
    )


def i_lead(o: Observation) -> bool:
    leader = o.cluster.leader if o.cluster else None
    return leader is not None and o.session is not None and leader.session == o.session


def running_primary(o: Observation) -> bool:
    return o.node is not None and o.node.running and o.node.role is Role.PRIMARY


def foreign_data(o: Observation) -> bool:
    c, n = o.cluster, o.node
    return bool(
        c and n and c.initialize not in (None, PENDING_INIT) and n.sysid and n.sysid != c.initialize
    )


def my_stale_lock(o: Observation) -> bool:
    leader = o.cluster.leader if o.cluster else None
    return (
        leader is not None
        and not i_lead(o)
        and leader.name == o.me
        and leader.session in o.stale_sessions
    )


# --- (1) total: never raises, always a Decision with a reason ---------------------------


@FAST
@given(observations())
def test_decide_is_total(o: Observation) -> None:
    d = decide(o)
    assert isinstance(d, Decision)
    assert isinstance(d.action, Action)
    assert d.reason.strip()
    assert d.sentence() == d.reason


@FAST
@given(observations())
def test_decisions_carry_what_apply_needs(o: Observation) -> None:
    d = decide(o)
    if d.action in (Action.CLONE, Action.FOLLOW):
        assert d.upstream is not None
    if d.action is Action.CLONE:
        assert d.upstream.role == "primary" and d.upstream.state == "running"
    if d.upstream is not None:
        assert o.cluster is not None and o.cluster.leader is not None
        assert d.upstream == o.cluster.leader_member
        # A lock under my name held by a session neither mine nor known stale cannot arise
        # (Consul deletes a lapsed session's lock); decide would then follow itself.
        if o.cluster.leader.name != o.me:
            assert d.upstream.name != o.me
    if d.action is Action.SWITCHOVER:
        assert d.target is not None and d.target != o.me
    else:
        assert d.target is None


@FAST
@given(observations(cluster=st.none()))
def test_without_consul_only_wait_or_demote(o: Observation) -> None:
    d = decide(o)
    assert d.action in (Action.WAIT, Action.DEMOTE)
    if d.action is Action.DEMOTE:
        assert running_primary(o) and not o.lease_valid


@FAST
@given(observations())
def test_demote_only_a_running_primary(o: Observation) -> None:
    if decide(o).action is Action.DEMOTE:
        assert running_primary(o)
        assert not i_lead(o)


@FAST
@given(observations(node=node_views.filter(lambda n: n.job is not None)))
def test_nothing_happens_during_a_job(o: Observation) -> None:
    assert decide(o).action is Action.WAIT


# --- (2) who may race for the lock ------------------------------------------------------


@FAST
@given(observations())
def test_race_only_when_every_condition_holds(o: Observation) -> None:
    d = decide(o)
    if d.action is not Action.ACQUIRE_AND_PROMOTE:
        return
    node, cluster = o.node, o.cluster
    assert node is not None and cluster is not None
    assert cluster.leader is None, "raced while a member holds the lock"
    assert not o.nofailover
    assert node.running and node.role is Role.REPLICA and node.has_data and not node.job
    assert node.lsn is not None
    if o.last_leader_lsn is not None:
        assert o.last_leader_lsn - node.lsn <= o.settings.maximum_lag_on_failover
    assert not any(p.primary_ok for p in o.peers)
    if o.settings.synchronous_mode:
        assert o.me in cluster.sync_names
    sw = cluster.switchover
    if sw and sw.target and o.switchover_age < o.settings.ttl:
        assert sw.target == o.me
    assert not foreign_data(o)
    for p in o.peers:
        if p.reachable and not p.nofailover and p.role is Role.REPLICA and plausible(p, o):
            assert p.lsn is not None and p.lsn <= node.lsn, f"{p.name} is more advanced"
    # A live member that cannot be read yet is waited for: without bound when the last
    # primary position is unknown, else for primary_start_timeout.
    if unsettled(o):
        assert o.last_leader_lsn is not None
        assert o.unsettled_for >= o.settings.primary_start_timeout


# Racing observations: nobody holds the lock and I am a running replica with my own data.
racing_nodes = st.builds(
    NodeView,
    running=st.just(True),
    role=st.just(Role.REPLICA),
    has_data=st.just(True),
    sysid=st.sampled_from([None, SYSIDS[0]]),
    timeline=timelines,
    lsn=st.integers(BASE - 2 * MB, BASE + 2 * MB),
    streaming=st.booleans(),
    upstream=upstreams,
)
racing_clusters = clusters(leader=st.none()).map(
    lambda c: dataclasses.replace(c, initialize=SYSIDS[0])
)
racing = observations(node=racing_nodes, cluster=racing_clusters, me=st.just("n1"))


def _clean(o: Observation) -> Observation:
    """Remove every reason not to race."""
    assert o.cluster is not None and o.node is not None
    return dataclasses.replace(
        o,
        nofailover=False,
        settings=dataclasses.replace(o.settings, synchronous_mode=False),
        cluster=dataclasses.replace(o.cluster, switchover=None),
        last_leader_lsn=o.node.lsn,
        peers=tuple(dataclasses.replace(p, reachable=False, primary_ok=False) for p in o.peers),
        # Members that never answered have been waited for long enough.
        unsettled_for=o.settings.primary_start_timeout,
    )


def _other_holds_lock(o: Observation) -> Observation:
    assert o.cluster is not None
    return dataclasses.replace(
        o, cluster=dataclasses.replace(o.cluster, leader=Leader("n3", "s-n3", 7))
    )


def _my_name_other_session(o: Observation) -> Observation:
    assert o.cluster is not None
    lead = Leader(o.me, "s-stranger", 7)
    return dataclasses.replace(o, cluster=dataclasses.replace(o.cluster, leader=lead))


def _lagging(o: Observation) -> Observation:
    assert o.node is not None and o.node.lsn is not None
    return dataclasses.replace(
        o, last_leader_lsn=o.node.lsn + o.settings.maximum_lag_on_failover + 1
    )


def _more_advanced_peer(o: Observation) -> Observation:
    assert o.node is not None and o.node.lsn is not None
    better = PeerView(
        "n3", True, role=Role.REPLICA, timeline=o.node.timeline, lsn=o.node.lsn + 1, running=True
    )
    spoiled = dataclasses.replace(o, peers=(*o.peers, better))
    if o.settings.synchronous_mode and o.cluster is not None:
        # A peer outside the sync key may not race and is rightly not waited for: make the
        # better peer a synchronous standby too, the case where it must win.
        names = (*o.cluster.sync_names, "n3")
        spoiled = dataclasses.replace(
            spoiled, cluster=dataclasses.replace(o.cluster, sync=format_sync(names))
        )
    # A last leader LSN far behind makes the better peer look like a liar: not this case.
    assume(plausible(better, spoiled))
    return spoiled


def _unsettled_member(
    unsettled_for: float, last_leader_lsn: bool
) -> Callable[[Observation], Observation]:
    """A live member (key in Consul) still starting: waited for, within the bound only when
    the last primary position is known."""

    def spoil(o: Observation) -> Observation:
        assert o.cluster is not None and o.node is not None
        name = next(n for n in NAMES if n != o.me)
        i = NAMES.index(name) + 1
        m = Member(
            name,
            f"http://10.0.0.{i}:8008",
            f"10.0.0.{i}",
            5432,
            "replica",
            "starting",
            1,
            None,
            False,
            session_of(name),
        )
        others = tuple(x for x in o.cluster.members if x.name != name)
        return dataclasses.replace(
            o,
            cluster=dataclasses.replace(o.cluster, members=(*others, m)),
            peers=(
                *(p for p in o.peers if p.name != name),
                PeerView(name, True, role=Role.UNKNOWN, running=True),
            ),
            unsettled_for=unsettled_for,
            last_leader_lsn=o.node.lsn if last_leader_lsn else None,
        )

    return spoil


def _sync_not_me(sync: str | None) -> Callable[[Observation], Observation]:
    def spoil(o: Observation) -> Observation:
        assert o.cluster is not None
        return dataclasses.replace(
            o,
            settings=dataclasses.replace(o.settings, synchronous_mode=True),
            cluster=dataclasses.replace(o.cluster, sync=sync),
        )

    return spoil


def _node(**changes: object) -> Callable[[Observation], Observation]:
    def spoil(o: Observation) -> Observation:
        assert o.node is not None
        return dataclasses.replace(o, node=dataclasses.replace(o.node, **changes))

    return spoil


SPOILERS: dict[str, Callable[[Observation], Observation]] = {
    "nofailover": lambda o: dataclasses.replace(o, nofailover=True),
    "stopped": _node(running=False, role=Role.STOPPED),
    "not-running-replica-role": _node(running=False),
    "primary": _node(role=Role.PRIMARY),
    "unknown-role": _node(role=Role.UNKNOWN),
    "stopped-role": _node(role=Role.STOPPED),
    "no-data": _node(has_data=False),
    "lsn-unknown": _node(lsn=None),
    "job-running": _node(job="clone"),
    "foreign-data": _node(sysid=SYSIDS[1]),
    "lags-too-much": _lagging,
    "peer-primary-ok": lambda o: dataclasses.replace(
        o, peers=(*o.peers, PeerView("n2", True, primary_ok=True, role=Role.PRIMARY))
    ),
    "unreachable-peer-primary-ok": lambda o: dataclasses.replace(
        o, peers=(*o.peers, PeerView("n2", False, primary_ok=True))
    ),
    "sync-mode-other-standby": _sync_not_me("n2"),
    "sync-mode-no-standby": _sync_not_me(None),
    "sync-mode-key-cleared": _sync_not_me(""),
    "sync-mode-two-others": _sync_not_me("n2,n3"),
    "switchover-to-other": lambda o: dataclasses.replace(
        o,
        cluster=dataclasses.replace(o.cluster, switchover=Switchover("n2", "n3", NOW - 1)),  # type: ignore[arg-type]
        switchover_age=0.5,  # handed over just now: the target takes the lock
    ),
    "more-advanced-peer": _more_advanced_peer,
    "member-starting-within-bound": _unsettled_member(19.9, last_leader_lsn=True),
    "member-starting-position-unknown": _unsettled_member(1e6, last_leader_lsn=False),
    "another-member-holds-lock": _other_holds_lock,
    "lock-under-my-name-other-session": _my_name_other_session,
    "consul-down": lambda o: dataclasses.replace(o, cluster=None),
    "agent-down": lambda o: dataclasses.replace(o, node=None),
}


@FAST
@given(racing)
def test_a_clean_racing_replica_races(o: Observation) -> None:
    """Liveness: with every obstacle removed, the replica does race (so the spoilers bite)."""
    d = decide(_clean(o))
    assert d.action is Action.ACQUIRE_AND_PROMOTE, d.reason


@pytest.mark.parametrize("spoil", list(SPOILERS.values()), ids=list(SPOILERS))
@settings(max_examples=20, deadline=None, database=None)
@given(o=racing, clean=st.booleans())
def test_no_race_when_a_condition_fails(
    spoil: Callable[[Observation], Observation], o: Observation, clean: bool
) -> None:
    base = _clean(o) if clean else o
    spoiled = spoil(base)
    d = decide(spoiled)
    assert d.action is not Action.ACQUIRE_AND_PROMOTE, d.reason
    if spoil is SPOILERS["more-advanced-peer"] and clean:
        assert "more advanced" in d.reason


# --- (3) while a leader exists, nobody but the lock holder may write -------------------


@st.composite
def shared_snapshots(draw: st.DrawFn) -> list[Observation]:
    """Every member's observation of one and the same cluster snapshot with a leader."""
    leader_name = draw(names)
    leader_session = draw(
        st.sampled_from([*(session_of(n) for n in NAMES), old_session_of(leader_name), "s-gone"])
    )
    cluster = draw(clusters(leader=st.just(Leader(leader_name, leader_session, 9))))
    common = {
        "cluster": cluster,
        "settings": draw(ha_settings),
        "last_leader": leader_name,
        "last_leader_lsn": draw(lsns),
        "now_wall": NOW,
    }
    out = []
    for name in NAMES:
        stale = draw(st.sampled_from([frozenset(), frozenset({old_session_of(name)})]))
        out.append(
            Observation(
                me=name,
                node=draw(st.one_of(st.none(), node_views)),
                session=session_of(name),
                stale_sessions=stale,
                lease_valid=draw(st.booleans()),
                nofailover=draw(st.booleans()),
                peers=tuple(draw(st.lists(peer_views, max_size=3))),
                **common,
            )
        )
    return out


@FAST
@given(shared_snapshots())
def test_only_the_lock_holder_becomes_primary(group: list[Observation]) -> None:
    leader = group[0].cluster.leader  # type: ignore[union-attr]
    assert leader is not None
    writers = []
    for o in group:
        d = decide(o)
        assert d.action not in (Action.ACQUIRE, Action.ACQUIRE_AND_PROMOTE, Action.BOOTSTRAP), (
            f"{o.me}: {d.reason} while {leader.name} holds the lock"
        )
        if d.action in (Action.PROMOTE, Action.START_PRIMARY):
            assert o.session == leader.session, f"{o.me} is not the lock holder: {d.reason}"
        if d.action is Action.TAKE_OVER:
            assert o.me == leader.name and leader.session in o.stale_sessions
        if d.action in WRITER_ACTIONS:
            writers.append(o.me)
        if d.action in (Action.HOLD, Action.SWITCHOVER) and running_primary(o):
            assert o.session == leader.session
    assert len(writers) <= 1, writers
    if writers:
        assert writers == [leader.name] or group[NAMES.index(writers[0])].session == leader.session


@FAST
@given(observations())
def test_promote_and_start_primary_only_for_the_holder(o: Observation) -> None:
    if decide(o).action in (Action.PROMOTE, Action.START_PRIMARY):
        assert i_lead(o)


# --- (4) a running primary facing someone else's lock demotes ---------------------------


# A running postgres has a data directory.
primary_nodes = node_views.map(
    lambda n: dataclasses.replace(n, running=True, role=Role.PRIMARY, has_data=True, job=None)
)


@FAST
@given(observations(node=primary_nodes, cluster=clusters(leader=leaders)))
def test_primary_facing_another_lock_demotes(o: Observation) -> None:
    # Not covered: a job in progress (the agent refuses a stop during a job, so the
    # decision waits) and my previous session's lock (TAKE_OVER instead).
    assume(not i_lead(o) and not my_stale_lock(o))
    d = decide(o)
    assert d.action is Action.DEMOTE, d.reason
    assert "demoting" in d.reason


# --- (5) a stopped node starts as primary only with the lock ----------------------------


@FAST
@given(observations(node=node_views.map(lambda n: dataclasses.replace(n, running=False))))
def test_stopped_node_starts_primary_only_with_the_lock(o: Observation) -> None:
    d = decide(o)
    if not i_lead(o):
        assert d.action is not Action.START_PRIMARY, d.reason
    assert d.action not in (Action.PROMOTE, Action.ACQUIRE, Action.ACQUIRE_AND_PROMOTE)
