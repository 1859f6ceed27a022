"""The HA decision, branch by branch: one row per situation, the action and the words of its reason.

Every row builds one Observation from small builders whose defaults describe
a healthy three-member cluster seen from ``n1`` (a streaming replica of the
leader ``n2``); each row changes only what its situation needs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from postgres_ras.controller.decide import (
    PENDING_INIT,
    PLAUSIBLE_AHEAD,
    STUCK_REPLICA_AFTER,
    SWITCHOVER_TIMEOUT,
    candidate_key,
    decide,
    plausible,
    switchover_target,
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
from postgres_ras.dcs.base import Cluster, Leader, Member, Switchover

ME = "n1"
MY_SESSION = "s-n1"
OLD_SESSION = "s-n1-previous"
SYSID = "7301234567890123456"
OTHER_SYSID = "7309999999999999999"
NOW = 1_700_000_000.0
MB = 1024 * 1024
LSN = 0x3_0000_0000  # where the healthy cluster is
HOSTS = {"n1": "10.0.0.1", "n2": "10.0.0.2", "n3": "10.0.0.3", "n4": "10.0.0.4", "n5": "10.0.0.5"}


# --- builders -------------------------------------------------------------------------


def member(name: str, role: str = "replica", state: str = "running", **kw: Any) -> Member:
    fields: dict[str, Any] = {
        "name": name,
        "api_url": f"http://{HOSTS[name]}:8008",
        "conn_host": HOSTS[name],
        "conn_port": 5432,
        "role": role,
        "state": state,
        "timeline": 1,
        "lsn": LSN,
        "nofailover": False,
        "session": f"s-{name}",
    }
    fields.update(kw)
    return Member(**fields)


LEADER_N2 = member("n2", role="primary")
MEMBERS = (member("n1"), LEADER_N2, member("n3"))
UPSTREAM_N2 = "10.0.0.2:5432"


def cluster(
    leader: str | None = "n2",
    leader_session: str | None = None,
    members: tuple[Member, ...] = MEMBERS,
    **kw: Any,
) -> Cluster:
    lead = None
    if leader is not None:
        lead = Leader(leader, leader_session or f"s-{leader}", 42)
    fields: dict[str, Any] = {"initialize": SYSID, "leader": lead, "members": members}
    fields.update(kw)
    return Cluster(**fields)


def i_lead(**kw: Any) -> Cluster:
    """The cluster as the lock holder sees it."""
    members = (member("n1", role="primary"), member("n2"), member("n3"))
    return cluster(leader=ME, leader_session=MY_SESSION, members=kw.pop("members", members), **kw)


def no_leader(**kw: Any) -> Cluster:
    members = (member("n1"), member("n3"))
    return cluster(leader=None, members=kw.pop("members", members), **kw)


def replica(**kw: Any) -> NodeView:
    fields: dict[str, Any] = {
        "running": True,
        "role": Role.REPLICA,
        "has_data": True,
        "sysid": SYSID,
        "timeline": 1,
        "lsn": LSN,
        "streaming": True,
        "upstream": UPSTREAM_N2,
    }
    fields.update(kw)
    return NodeView(**fields)


def primary(**kw: Any) -> NodeView:
    base: dict[str, Any] = {"role": Role.PRIMARY, "streaming": False, "upstream": None}
    return replica(**{**base, **kw})


def stopped(**kw: Any) -> NodeView:
    base: dict[str, Any] = {"running": False, "role": Role.STOPPED, "streaming": False}
    return replica(**{**base, "upstream": None, **kw})


def empty(**kw: Any) -> NodeView:
    base: dict[str, Any] = {"sysid": None, "timeline": None, "lsn": None, "has_data": False}
    return stopped(**{**base, **kw})


def unknown(**kw: Any) -> NodeView:
    return replica(**{"role": Role.UNKNOWN, "streaming": False, **kw})


def peer(name: str, **kw: Any) -> PeerView:
    fields: dict[str, Any] = {
        "name": name,
        "reachable": True,
        "role": Role.REPLICA,
        "timeline": 1,
        "lsn": LSN,
        "streaming": True,
        "running": True,
    }
    fields.update(kw)
    return PeerView(**fields)


def obs(node: NodeView | None = None, cl: Cluster | None = None, **kw: Any) -> Observation:
    fields: dict[str, Any] = {
        "me": ME,
        "node": node,
        "cluster": cl,
        "session": MY_SESSION,
        "now_wall": NOW,
        "last_leader": "n2",
        "last_leader_lsn": LSN,
    }
    fields.update(kw)
    return Observation(**fields)


def stale_lock(node: NodeView) -> Observation:
    """The leader key names me but is held by my previous incarnation's session."""
    return obs(
        node,
        cluster(leader=ME, leader_session=OLD_SESSION),
        stale_sessions=frozenset({OLD_SESSION}),
    )


def race(**kw: Any) -> Observation:
    """n1, a healthy replica, finds the lock free after n2 (the leader) vanished."""
    node = kw.pop("node", replica(streaming=False))
    return obs(node, kw.pop("cl", no_leader()), **kw)


def switchover(target: str | None, source: str = ME, age: float = 1.0) -> Switchover:
    return Switchover(source, target, NOW - age)


# --- the table ------------------------------------------------------------------------

C = pytest.param
CASES = [
    # The agent does not answer.
    C(obs(None, cluster()), Action.WAIT, ["agent unreachable", "cannot observe"], id="agent-down"),
    C(
        obs(None, i_lead()),
        Action.WAIT,
        ["agent unreachable", "keeping the leader lock"],
        id="agent-down-leader",
    ),
    C(obs(None, None), Action.WAIT, ["agent unreachable"], id="agent-and-consul-down"),
    C(
        obs(None, i_lead(), not_serving_for=21.0),
        Action.ABDICATE,
        ["agent unreachable for 21s", "releasing the leader lock"],
        id="agent-down-leader-past-primary-start-timeout",
    ),
    # A failed bootstrap must free the lock so another member can initialize.
    C(
        obs(empty(job_error="initdb failed"), i_lead(initialize=PENDING_INIT)),
        Action.RELEASE,
        ["releasing the leader lock", "bootstrap failed"],
        id="failed-bootstrap-releases",
    ),
    # A long job runs: nothing else is attempted, whatever the cluster says.
    C(obs(stopped(job="clone"), cluster()), Action.WAIT, ["clone in progress"], id="job-clone"),
    C(
        obs(empty(job="bootstrap"), i_lead()),
        Action.WAIT,
        ["bootstrap in progress"],
        id="job-bootstrap",
    ),
    C(
        obs(stopped(job="start-replica"), None),
        Action.WAIT,
        ["start-replica in progress"],
        id="job-no-consul",
    ),
    # Consul does not answer.
    C(
        obs(primary(), None, lease_valid=True),
        Action.WAIT,
        ["Consul unreachable", "lease"],
        id="consul-down-lease-valid",
    ),
    C(
        obs(primary(), None, lease_valid=False),
        Action.DEMOTE,
        ["demoting", "Consul unreachable", "retry_timeout"],
        id="consul-down-lease-expired",
    ),
    C(
        obs(replica(), None, lease_valid=False),
        Action.WAIT,
        ["Consul unreachable", "keeping the current role"],
        id="consul-down-replica",
    ),
    C(
        obs(stopped(), None),
        Action.WAIT,
        ["Consul unreachable", "keeping the current role"],
        id="consul-down-stopped",
    ),
    C(obs(unknown(), None), Action.WAIT, ["Consul unreachable"], id="consul-down-unknown"),
    # The data directory belongs to another cluster.
    C(
        obs(replica(sysid=OTHER_SYSID), cluster()),
        Action.WAIT,
        ["another cluster", OTHER_SYSID, SYSID, "refusing"],
        id="sysid-mismatch-replica",
    ),
    C(
        obs(stopped(sysid=OTHER_SYSID), no_leader()),
        Action.WAIT,
        ["another cluster", "refusing"],
        id="sysid-mismatch-stopped",
    ),
    C(
        obs(replica(sysid=OTHER_SYSID), cluster(initialize=PENDING_INIT)),
        Action.HOLD,
        ["replica of n2"],
        id="sysid-unchecked-while-pending",
    ),
    C(
        obs(replica(sysid=OTHER_SYSID), cluster(initialize=None)),
        Action.HOLD,
        ["replica of n2"],
        id="sysid-unchecked-without-initialize",
    ),
    C(
        obs(replica(sysid=None), cluster()),
        Action.HOLD,
        ["replica of n2"],
        id="sysid-unknown-not-refused",
    ),
    # The lock is held by my own previous incarnation.
    C(
        stale_lock(primary()),
        Action.TAKE_OVER,
        ["taking over", "previous session", "still primary"],
        id="stale-lock-primary-takes-over",
    ),
    C(
        stale_lock(replica()),
        Action.DROP_STALE,
        ["dropping", "previous session", "not a running primary"],
        id="stale-lock-replica-drops",
    ),
    C(
        stale_lock(stopped()),
        Action.TAKE_OVER,
        ["taking over", "previous session", "restarting it as primary"],
        id="stale-lock-stopped-takes-over",
    ),
    C(
        stale_lock(stopped(job_error="could not start: No space left on device")),
        Action.DROP_STALE,
        ["dropping", "previous session"],
        id="stale-lock-stopped-failing-to-start-drops",
    ),
    C(
        stale_lock(stopped(watchdog_blocked="watchdog required but /dev/watchdog does not exist")),
        Action.DROP_STALE,
        ["dropping", "previous session"],
        id="stale-lock-stopped-watchdog-blocked-drops",
    ),
    C(
        stale_lock(empty()),
        Action.DROP_STALE,
        ["dropping"],
        id="stale-lock-no-data-drops",
    ),
    C(
        obs(primary(), cluster(leader=ME, leader_session="s-stranger")),
        Action.DEMOTE,
        ["demoting", "holds the leader lock"],
        id="my-name-but-unknown-session-demotes",
    ),
    C(
        obs(primary(), cluster(leader="n2"), stale_sessions=frozenset({"s-n2"})),
        Action.DEMOTE,
        ["demoting", "n2 holds the leader lock"],
        id="stale-session-of-another-name-is-not-mine",
    ),
    # No data yet: bootstrap race, or clone only from a running primary leader.
    C(
        obs(empty(), cluster(leader=None, initialize=None, members=())),
        Action.BOOTSTRAP,
        ["initialize a new cluster"],
        id="bootstrap-race",
    ),
    C(
        obs(empty(), no_leader(initialize=PENDING_INIT)),
        Action.BOOTSTRAP,
        ["initialize"],
        id="pending-initialize-without-leader-bootstraps-again",
    ),
    C(
        obs(
            empty(),
            cluster(
                initialize=PENDING_INIT,
                members=(member("n2", role="unknown", state="bootstrap"), member("n3")),
            ),
        ),
        Action.WAIT,
        ["no data", "running leader to clone from"],
        id="no-data-someone-bootstraps",
    ),
    C(obs(empty(), no_leader()), Action.WAIT, ["no data", "clone from"], id="no-data-no-leader"),
    C(
        obs(empty(), cluster()),
        Action.CLONE,
        ["cloning from leader n2"],
        id="clone-from-running-primary-leader",
    ),
    C(
        obs(empty(), cluster(initialize=None)),
        Action.CLONE,
        ["cloning from leader n2"],
        id="clone-before-initialize-is-written",
    ),
    C(
        obs(
            empty(), cluster(members=(member("n1"), member("n2", role="primary", state="starting")))
        ),
        Action.WAIT,
        ["no data", "clone from"],
        id="no-clone-from-starting-leader",
    ),
    C(
        obs(empty(), cluster(members=(member("n1"), member("n2", role="replica")))),
        Action.WAIT,
        ["no data"],
        id="no-clone-from-leader-still-replica",
    ),
    C(
        obs(
            empty(), cluster(members=(member("n1"), member("n2", role="primary", state="stopped")))
        ),
        Action.WAIT,
        ["no data"],
        id="no-clone-from-stopped-leader",
    ),
    C(
        obs(empty(), cluster(members=(member("n1"), member("n3")))),
        Action.WAIT,
        ["no data"],
        id="no-clone-leader-unpublished",
    ),
    # I hold the lock.
    C(
        obs(primary(), i_lead()),
        Action.HOLD,
        ["no action", "leader with the lock"],
        id="leader-holds",
    ),
    C(
        obs(replica(), i_lead()),
        Action.PROMOTE,
        ["promoting", "leader lock"],
        id="leader-is-replica-promotes",
    ),
    C(
        obs(stopped(), i_lead()),
        Action.START_PRIMARY,
        ["starting postgres as primary", "leader lock"],
        id="leader-stopped-starts-primary",
    ),
    C(
        obs(stopped(fenced="no heartbeat"), i_lead()),
        Action.START_PRIMARY,
        ["as primary"],
        id="leader-fenced-restarts-primary",
    ),
    C(
        obs(unknown(), i_lead()),
        Action.WAIT,
        ["leader", "unknown state"],
        id="leader-unknown-state",
    ),
    C(
        obs(replica(sysid=OTHER_SYSID), i_lead(initialize=None)),
        Action.PROMOTE,
        ["promoting"],
        id="leader-sysid-unchecked-without-initialize",
    ),
    # Switchover requested from me, the leader.
    C(
        obs(primary(), i_lead(switchover=switchover("n3")), peers=(peer("n3"),)),
        Action.SWITCHOVER,
        ["switching over to n3"],
        id="switchover-named",
    ),
    C(
        obs(
            primary(),
            i_lead(switchover=switchover(None)),
            peers=(peer("n2", lsn=LSN - 10), peer("n3")),
        ),
        Action.SWITCHOVER,
        ["switching over to n3"],
        id="switchover-best-replica",
    ),
    C(
        obs(primary(), i_lead(switchover=switchover("n3")), peers=(peer("n3", reachable=False),)),
        Action.CANCEL_SWITCHOVER,
        ["refusing the switchover: n3 is not a healthy streaming replica"],
        id="switchover-target-unreachable",
    ),
    C(
        obs(primary(), i_lead(switchover=switchover("n3")), peers=(peer("n3", streaming=False),)),
        Action.CANCEL_SWITCHOVER,
        ["refusing the switchover: n3 is not a healthy"],
        id="switchover-target-not-streaming",
    ),
    C(
        obs(primary(), i_lead(switchover=switchover("n3")), peers=(peer("n3", nofailover=True),)),
        Action.CANCEL_SWITCHOVER,
        ["refusing the switchover: n3 is not a healthy"],
        id="switchover-target-nofailover",
    ),
    C(
        obs(primary(), i_lead(switchover=switchover("n3")), peers=(peer("n3", role=Role.STOPPED),)),
        Action.CANCEL_SWITCHOVER,
        ["refusing the switchover: n3 is not a healthy"],
        id="switchover-target-stopped",
    ),
    C(
        obs(primary(), i_lead(switchover=switchover("n4")), peers=(peer("n3"),)),
        Action.CANCEL_SWITCHOVER,
        ["n4 is not a healthy streaming replica"],
        id="switchover-target-absent",
    ),
    C(
        obs(primary(), i_lead(switchover=switchover(None)), peers=()),
        Action.CANCEL_SWITCHOVER,
        ["no healthy streaming replica to hand over to"],
        id="switchover-none-available",
    ),
    C(
        obs(
            primary(),
            i_lead(switchover=switchover(None)),
            peers=(peer("n2", streaming=False), peer("n3", reachable=False)),
        ),
        Action.CANCEL_SWITCHOVER,
        ["no healthy streaming replica"],
        id="switchover-no-streaming-replica",
    ),
    C(
        obs(
            primary(),
            i_lead(switchover=switchover("n3")),
            peers=(peer("n3"),),
            switchover_age=SWITCHOVER_TIMEOUT + 1,
        ),
        Action.HOLD,
        ["leader"],
        id="switchover-stale",
    ),
    C(
        obs(
            primary(),
            i_lead(switchover=switchover("n3")),
            peers=(peer("n3"),),
            switchover_age=SWITCHOVER_TIMEOUT,
        ),
        Action.SWITCHOVER,
        ["n3"],
        id="switchover-at-timeout-still-valid",
    ),
    C(
        obs(primary(), i_lead(switchover=switchover("n3", source="n2")), peers=(peer("n3"),)),
        Action.HOLD,
        ["leader"],
        id="switchover-from-someone-else",
    ),
    C(
        obs(replica(), i_lead(switchover=switchover("n3")), peers=(peer("n3"),)),
        Action.PROMOTE,
        ["promoting"],
        id="switchover-ignored-until-primary",
    ),
    # Somebody else holds the lock.
    C(
        obs(primary(), cluster()),
        Action.DEMOTE,
        ["demoting", "n2 holds the leader lock"],
        id="primary-without-lock-demotes",
    ),
    C(
        obs(primary(), cluster(members=(member("n1"),))),
        Action.DEMOTE,
        ["demoting", "n2"],
        id="primary-demotes-even-if-leader-unpublished",
    ),
    C(
        obs(primary(), cluster(), session=None),
        Action.DEMOTE,
        ["demoting"],
        id="primary-without-session-demotes",
    ),
    C(
        obs(primary(), cluster(), lease_valid=True),
        Action.DEMOTE,
        ["demoting"],
        id="primary-demotes-whatever-its-lease",
    ),
    C(
        obs(stopped(), cluster(members=(member("n1"), member("n3")))),
        Action.WAIT,
        ["n2", "not published its address"],
        id="leader-unpublished",
    ),
    C(
        obs(stopped(), cluster()),
        Action.START_REPLICA,
        ["starting as a replica of n2"],
        id="stopped-starts-replica-of-leader",
    ),
    C(
        obs(stopped(fenced="no heartbeat"), cluster()),
        Action.START_REPLICA,
        ["replica of n2"],
        id="fenced-former-primary-starts-replica",
    ),
    C(
        obs(replica(), cluster()),
        Action.HOLD,
        ["no action", "replica of n2", "(streaming)"],
        id="replica-streaming-holds",
    ),
    C(
        obs(replica(streaming=False), cluster()),
        Action.HOLD,
        ["replica of n2", "not streaming yet"],
        id="replica-not-streaming-yet-holds",
    ),
    C(
        obs(replica(streaming=False), cluster(), not_streaming_for=STUCK_REPLICA_AFTER - 1),
        Action.HOLD,
        ["not streaming yet"],
        id="replica-briefly-not-streaming-holds",
    ),
    C(
        obs(replica(streaming=False), cluster(), not_streaming_for=STUCK_REPLICA_AFTER + 1),
        Action.REWIND,
        ["rewinding", "no stream from leader n2"],
        id="stuck-replica-rewinds",
    ),
    C(
        obs(replica(upstream="10.0.0.3:5432"), cluster()),
        Action.FOLLOW,
        ["following new leader n2"],
        id="replica-follows-new-leader",
    ),
    C(
        obs(replica(upstream="10.0.0.2:5433"), cluster()),
        Action.FOLLOW,
        ["following", "n2"],
        id="replica-follows-new-port",
    ),
    C(
        obs(replica(upstream=None), cluster()),
        Action.FOLLOW,
        ["following", "n2"],
        id="replica-without-upstream-follows",
    ),
    C(obs(unknown(), cluster()), Action.WAIT, ["unknown state"], id="unknown-state-with-leader"),
    # Nobody holds the lock.
    C(
        obs(primary(), no_leader()),
        Action.ACQUIRE,
        ["taking the free leader lock", "running primary"],
        id="free-lock-running-primary-acquires",
    ),
    C(
        obs(primary(), no_leader(), nofailover=True),
        Action.ACQUIRE,
        ["free leader lock"],
        id="free-lock-primary-acquires-even-if-nofailover",
    ),
    C(
        obs(stopped(), no_leader()),
        Action.START_REPLICA,
        ["no leader", "read-only"],
        id="free-lock-stopped-starts-read-only",
    ),
    C(
        obs(stopped(fenced="no valid lease"), no_leader()),
        Action.START_REPLICA,
        ["no leader", "read-only"],
        id="free-lock-former-primary-starts-read-only",
    ),
    C(
        obs(unknown(), no_leader()),
        Action.WAIT,
        ["no leader", "unknown state"],
        id="free-lock-unknown-state",
    ),
    C(race(), Action.ACQUIRE_AND_PROMOTE, ["racing", "most advanced healthy replica"], id="race"),
    C(
        race(node=replica(watchdog_blocked="watchdog required but /dev/watchdog does not exist")),
        Action.WAIT,
        ["not racing", "watchdog required", "/dev/watchdog"],
        id="race-refused-watchdog-required-but-missing",
    ),
    C(
        obs(stopped(watchdog_blocked="watchdog required but x"), i_lead()),
        Action.RELEASE,
        ["releasing the leader lock", "watchdog required"],
        id="leader-releases-when-its-watchdog-cannot-be-armed",
    ),
]


@pytest.mark.parametrize(("o", "action", "words"), CASES)
def test_decide(o: Observation, action: Action, words: list[str]) -> None:
    d = decide(o)
    assert isinstance(d, Decision)
    assert d.action is action, d.reason
    for word in words:
        assert word in d.reason, f"{word!r} not in {d.reason!r}"
    assert d.sentence() == d.reason


# --- replica eligibility for the race -------------------------------------------------

RACE_CASES = [
    C(race(nofailover=True), ["tagged nofailover"], id="nofailover"),
    C(
        race(cl=no_leader(switchover=switchover("n3", source="n2"))),
        ["switchover to n3 is in progress"],
        id="switchover-to-someone-else",
    ),
    C(
        race(cl=no_leader(sync="n3"), settings=Settings(synchronous_mode=True)),
        ["synchronous mode", "(n3)"],
        id="sync-mode-not-the-standby",
    ),
    C(
        race(cl=no_leader(sync=None), settings=Settings(synchronous_mode=True)),
        ["synchronous mode", "(none confirmed)"],
        id="sync-mode-no-standby-known",
    ),
    C(
        race(cl=no_leader(sync=""), settings=Settings(synchronous_mode=True)),
        ["synchronous mode", "(none confirmed)"],
        id="sync-mode-key-cleared-async-leader",
    ),
    C(
        race(cl=no_leader(sync="n3,n4"), settings=Settings(synchronous_mode=True)),
        ["synchronous mode", "(n3, n4)"],
        id="sync-mode-two-standbys-not-me",
    ),
    C(
        race(
            cl=no_leader(sync=f"n3,{ME}"),
            settings=Settings(synchronous_mode=True, synchronous_node_count=2),
            peers=(peer("n3", lsn=LSN + 99),),
        ),
        ["n3 is more advanced"],
        id="sync-mode-more-advanced-sync-peer-wins",
    ),
    C(
        race(
            cl=no_leader(sync=ME),
            settings=Settings(synchronous_mode=True),
            node=replica(timeline=1),
            peers=(peer("n3", timeline=2),),
        ),
        ["newer timeline"],
        id="sync-mode-newer-timeline-async-peer-still-stops-me",
    ),
    C(
        race(peers=(peer("n2", primary_ok=True, role=Role.PRIMARY),)),
        ["n2 still answers as a healthy primary"],
        id="peer-answers-primary-ok",
    ),
    C(
        race(peers=(peer("n3", primary_ok=True, reachable=True, role=Role.UNKNOWN),)),
        ["n3 still answers"],
        id="any-peer-answering-primary-ok",
    ),
    C(
        race(node=replica(lsn=None, streaming=False)),
        ["my WAL position is unknown"],
        id="unknown-lsn",
    ),
    C(
        race(last_leader_lsn=LSN + MB + 1),
        ["lag of 1048577 bytes", "behind n2", "maximum_lag_on_failover (1048576)"],
        id="lag-beyond-maximum",
    ),
    C(
        race(last_leader_lsn=LSN + 10, settings=Settings(maximum_lag_on_failover=9)),
        ["lag of 10 bytes", "maximum_lag_on_failover (9)"],
        id="lag-beyond-custom-maximum",
    ),
    C(
        race(peers=(peer("n3", lsn=LSN + 1),)),
        ["n3 is more advanced", f"{LSN + 1} > {LSN}"],
        id="more-advanced-peer",
    ),
    C(
        race(peers=(peer("n3", lsn=LSN + 1, streaming=False),)),
        ["n3 is more advanced"],
        id="more-advanced-peer-not-streaming",
    ),
    C(
        race(peers=(peer("n3", lsn=LSN + 1, timeline=None),)),
        ["n3 is more advanced"],
        id="more-advanced-peer-timeline-unknown",
    ),
    C(
        race(peers=(peer("n3", lsn=LSN + PLAUSIBLE_AHEAD),)),
        ["n3 is more advanced"],
        id="peer-far-ahead-but-plausible",
    ),
    C(
        race(node=replica(lsn=LSN, timeline=None), peers=(peer("n3", lsn=LSN + 1, timeline=2),)),
        ["n3 is more advanced"],
        id="my-timeline-unknown-peer-counts",
    ),
    C(
        race(last_leader_lsn=None, peers=(peer("n3", lsn=LSN + 1),)),
        ["n3 is more advanced"],
        id="more-advanced-without-last-leader-lsn",
    ),
    C(
        race(peers=(peer("n4", reachable=False), peer("n3", lsn=LSN + 5), peer("n5", lsn=LSN + 9))),
        ["is more advanced"],
        id="several-peers-one-ahead",
    ),
    # Issue 9.1: a peer far ahead of me is the one that must win, never a "liar".
    C(
        race(last_leader_lsn=None, peers=(peer("n3", lsn=LSN + PLAUSIBLE_AHEAD + 1),)),
        ["n3 is more advanced"],
        id="peer-far-ahead-of-me-counts-without-primary-position",
    ),
    C(
        race(last_leader_lsn=LSN + 400 * MB, node=replica(lsn=LSN, streaming=False)),
        ["lag of 419430400 bytes", "maximum_lag_on_failover"],
        id="stale-by-400MB-after-full-restart",
    ),
    # Members still starting or not answering are waited for, within a bound.
    C(
        race(peers=(peer("n3", lsn=None),)),
        ["waiting for n3 to finish starting", "(0s of 20s)"],
        id="peer-lsn-unknown-waited-for",
    ),
    C(
        race(peers=(peer("n3", reachable=False),), unsettled_for=19.9),
        ["waiting for n3"],
        id="unreachable-member-waited-for",
    ),
    C(
        race(peers=(peer("n3", role=Role.STOPPED, running=False, lsn=None),), unsettled_for=3),
        ["waiting for n3", "(3s of 20s)"],
        id="stopped-member-waited-for",
    ),
    C(
        race(peers=(peer("n3", job="start-replica"),)),
        ["waiting for n3"],
        id="member-running-a-job-waited-for",
    ),
    C(
        race(peers=(peer("n3", role=Role.UNKNOWN),)),
        ["waiting for n3"],
        id="member-recovering-waited-for",
    ),
    C(
        race(
            last_leader_lsn=None,
            peers=(peer("n3", role=Role.UNKNOWN, running=False),),
            unsettled_for=1000.0,
        ),
        ["n3 not settled yet", "last primary position is unknown"],
        id="unsettled-member-and-no-primary-position-no-bound",
    ),
    C(
        race(
            cl=no_leader(switchover=switchover(ME, source="n3")),
            peers=(peer("n3", role=Role.UNKNOWN, running=False, lsn=None),),
            switchover_age=5.0,
        ),
        ["waiting for n3"],
        id="stale-switchover-source-waited-for",
    ),
]


@pytest.mark.parametrize(("o", "words"), RACE_CASES)
def test_replica_does_not_race(o: Observation, words: list[str]) -> None:
    d = decide(o)
    assert d.action is Action.WAIT, d.reason
    assert d.reason.startswith("no leader; not racing: ")
    for word in words:
        assert word in d.reason, f"{word!r} not in {d.reason!r}"


RACING = [
    C(race(), id="healthy"),
    C(race(node=replica(streaming=True)), id="still-marked-streaming"),
    C(race(last_leader_lsn=LSN + MB), id="lag-exactly-maximum"),
    C(race(last_leader_lsn=None), id="no-last-leader-lsn-no-lag-check"),
    C(race(last_leader_lsn=LSN - 5), id="ahead-of-last-leader"),
    C(race(cl=no_leader(switchover=switchover(ME, source="n2"))), id="switchover-to-me"),
    # The source that handed the lock to me is restarting as a replica: not waited for.
    C(
        race(
            cl=no_leader(switchover=switchover(ME, source="n3")),
            peers=(peer("n3", role=Role.UNKNOWN, running=False, lsn=None),),
        ),
        id="switchover-to-me-source-restarting",
    ),
    C(race(cl=no_leader(switchover=switchover(None, source="n2"))), id="switchover-to-anyone"),
    C(
        race(cl=no_leader(switchover=switchover("n3", source="n2")), switchover_age=4.0),
        id="switchover-to-other-not-taken-within-ttl",
    ),
    C(
        race(cl=no_leader(sync=ME), settings=Settings(synchronous_mode=True)),
        id="sync-mode-i-am-the-standby",
    ),
    C(
        race(
            cl=no_leader(sync=f"n3,{ME}"),
            settings=Settings(synchronous_mode=True, synchronous_node_count=2),
        ),
        id="sync-mode-one-of-two-standbys",
    ),
    C(race(cl=no_leader(sync="n3")), id="sync-key-ignored-outside-sync-mode"),
    C(
        race(
            cl=no_leader(sync=ME),
            settings=Settings(synchronous_mode=True),
            peers=(peer("n3", lsn=LSN + 99),),
        ),
        id="sync-mode-more-advanced-async-peer-ignored",
    ),
    C(race(peers=(peer("n3"),)), id="equal-peer-both-race"),
    C(race(peers=(peer("n3", lsn=LSN - 1),)), id="less-advanced-peer"),
    C(
        race(peers=(peer("n3", lsn=LSN + PLAUSIBLE_AHEAD + 1),)),
        id="lying-peer-absurdly-ahead-ignored",
    ),
    C(race(peers=(peer("n3", lsn=-1),)), id="negative-lsn-peer-ignored"),
    # A member that cannot be read is waited for up to primary_start_timeout, then skipped.
    C(race(peers=(peer("n3", lsn=None),), unsettled_for=20.0), id="peer-lsn-unknown-past-bound"),
    C(
        race(peers=(peer("n3", reachable=False, lsn=LSN + 1),), unsettled_for=21.0),
        id="unreachable-member-past-bound",
    ),
    C(
        race(peers=(PeerView("n3", reachable=False),), unsettled_for=20.0),
        id="unreachable-member-as-probed-past-bound",
    ),
    C(
        race(peers=(PeerView("n4", reachable=False),)),
        id="unreachable-non-member-ignored-at-once",  # e.g. the dead leader, key gone
    ),
    C(race(peers=(peer("n3", lsn=LSN + 1, nofailover=True),)), id="nofailover-peer-ignored"),
    C(
        race(peers=(peer("n3", lsn=LSN + 1, role=Role.STOPPED, running=False),), unsettled_for=25),
        id="stopped-peer-past-bound",
    ),
    C(
        race(peers=(peer("n3", lsn=LSN + 1, role=Role.UNKNOWN),), unsettled_for=20.0),
        id="unknown-role-peer-past-bound",
    ),
    C(
        race(
            peers=(peer("n3", lsn=LSN + 1, role=Role.UNKNOWN),),
            unsettled_for=5.0,
            settings=Settings(primary_start_timeout=5.0),
        ),
        id="unknown-role-peer-past-custom-bound",
    ),
    C(
        race(
            node=replica(timeline=2, streaming=False), peers=(peer("n3", lsn=LSN + MB, timeline=1),)
        ),
        id="peer-on-older-timeline-ignored",
    ),
    C(
        race(
            peers=(peer("n3", role=Role.PRIMARY, running=False, lsn=LSN + 1),),
            unsettled_for=20.0,
        ),
        id="stopped-primary-peer-not-compared-past-bound",
    ),
]


@pytest.mark.parametrize("o", RACING)
def test_replica_races(o: Observation) -> None:
    d = decide(o)
    assert d.action is Action.ACQUIRE_AND_PROMOTE, d.reason
    assert "racing" in d.reason


def test_peer_on_newer_timeline_disqualifies_me() -> None:
    o = race(
        node=replica(timeline=1, streaming=False), peers=(peer("n3", lsn=LSN + 1, timeline=2),)
    )
    assert decide(o).action is Action.WAIT


# --- decisions carry what apply() needs -----------------------------------------------


def test_clone_carries_the_leader_member() -> None:
    d = decide(obs(empty(), cluster()))
    assert d.upstream == LEADER_N2


def test_no_clone_from_myself() -> None:
    """The lock holder without data has nobody to clone from (what it should do instead:
    test_failed_bootstrap_gives_the_lock_up)."""
    d = decide(obs(empty(), i_lead(initialize=PENDING_INIT)))
    assert d.action is not Action.CLONE
    assert d.upstream is None


def test_start_replica_and_follow_carry_the_leader_member() -> None:
    assert decide(obs(stopped(), cluster())).upstream == LEADER_N2
    assert decide(obs(replica(upstream=None), cluster())).upstream == LEADER_N2


def test_start_read_only_without_leader_has_no_upstream() -> None:
    d = decide(obs(stopped(), no_leader()))
    assert d.action is Action.START_REPLICA
    assert d.upstream is None


def test_switchover_carries_its_target() -> None:
    d = decide(obs(primary(), i_lead(switchover=switchover("n3")), peers=(peer("n3"),)))
    assert d.target == "n3"
    assert d.upstream is None


@pytest.mark.parametrize(
    "o",
    [
        C(obs(primary(), i_lead()), id="hold"),
        C(obs(primary(), cluster()), id="demote"),
        C(race(), id="race"),
        C(obs(replica(), cluster()), id="replica-hold"),
    ],
)
def test_no_target_outside_switchover(o: Observation) -> None:
    assert decide(o).target is None


@pytest.mark.parametrize("o", [p.values[0] for p in CASES + RACE_CASES + RACING])
def test_decide_is_deterministic(o: Observation) -> None:
    """No clock, no randomness: an equal observation gets an equal decision."""
    assert decide(o) == decide(dataclasses.replace(o))


# --- switchover target and candidate order --------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "peers", "expected"),
    [
        C("n3", (peer("n3"), peer("n4", lsn=LSN + 99)), "n3", id="named-even-if-behind"),
        C(None, (peer("n3"), peer("n4", lsn=LSN + 99)), "n4", id="most-advanced"),
        C(None, (peer("n4"), peer("n3")), "n3", id="tie-by-name"),
        C(None, (peer("n3", lsn=LSN + 99, streaming=False), peer("n4")), "n4", id="streaming-only"),
        C(None, (peer("n3", lsn=LSN + 99, reachable=False), peer("n4")), "n4", id="reachable-only"),
        C(None, (peer("n3", lsn=LSN + 99, nofailover=True), peer("n4")), "n4", id="no-nofailover"),
        C(
            None,
            (peer("n3", lsn=LSN + 99, role=Role.PRIMARY), peer("n4")),
            "n4",
            id="replicas-only",
        ),
        C(
            None,
            (peer("n3", streaming=False), peer("n4", reachable=False)),
            None,
            id="none-available",
        ),
        C("n5", (peer("n3"), peer("n4")), None, id="named-absent"),
        C(None, (), None, id="no-peers"),
    ],
)
def test_switchover_target(
    wanted: str | None, peers: tuple[PeerView, ...], expected: str | None
) -> None:
    o = obs(primary(), i_lead(switchover=switchover(wanted)), peers=peers)
    assert switchover_target(o) == expected


@pytest.mark.parametrize(
    ("wanted", "sync", "expected"),
    [
        C(None, "n3", "n3", id="sync-standby-even-if-behind"),
        C("n4", "n3", None, id="named-async-standby-refused"),
        C("n3", "n3,n4", "n3", id="named-one-of-two"),
        C(None, None, None, id="no-sync-standby-no-switchover"),
    ],
)
def test_switchover_target_in_synchronous_mode(
    wanted: str | None, sync: str | None, expected: str | None
) -> None:
    """Only a member named in the sync key holds every acknowledged commit."""
    o = obs(
        primary(),
        i_lead(switchover=switchover(wanted), sync=sync),
        peers=(peer("n3"), peer("n4", lsn=LSN + 99)),
        settings=Settings(synchronous_mode=True),
    )
    assert switchover_target(o) == expected


@pytest.mark.parametrize(
    ("peers", "order"),
    [
        C(
            [peer("a", lsn=10), peer("b", lsn=30), peer("c", lsn=20)],
            ["b", "c", "a"],
            id="larger-lsn-first",
        ),
        C(
            [peer("a", lsn=99, streaming=False), peer("b", lsn=1)],
            ["b", "a"],
            id="streaming-before-lsn",
        ),
        C(
            [peer("c", lsn=5), peer("a", lsn=5), peer("b", lsn=5)],
            ["a", "b", "c"],
            id="ties-by-name",
        ),
        C([peer("a", lsn=None), peer("b", lsn=1)], ["b", "a"], id="unknown-lsn-after-known"),
        C(
            [
                peer("a", lsn=1, streaming=False),
                peer("b", lsn=2, streaming=False),
                peer("c", lsn=0),
                peer("d", lsn=3),
            ],
            ["d", "c", "b", "a"],
            id="mixed",
        ),
    ],
)
def test_candidate_order(peers: list[PeerView], order: list[str]) -> None:
    assert [p.name for p in sorted(peers, key=candidate_key)] == order


@pytest.mark.parametrize(
    ("p", "key"),
    [
        C(peer("x", lsn=7, streaming=True), (False, -7, "x"), id="streaming"),
        C(peer("x", lsn=7, streaming=False), (True, -7, "x"), id="not-streaming"),
        C(peer("x", lsn=None, streaming=True), (False, 0, "x"), id="unknown-lsn"),
    ],
)
def test_candidate_key(p: PeerView, key: tuple[bool, int, str]) -> None:
    assert candidate_key(p) == key


# --- plausibility of a peer's claim -----------------------------------------------------


@pytest.mark.parametrize(
    ("p", "o", "expected"),
    [
        C(peer("n3", lsn=LSN), race(), True, id="same-position"),
        C(peer("n3", lsn=None), race(), False, id="no-lsn"),
        C(peer("n3", lsn=-1), race(), False, id="negative"),
        C(peer("n3", lsn=LSN + PLAUSIBLE_AHEAD), race(), True, id="at-ceiling"),
        C(peer("n3", lsn=LSN + PLAUSIBLE_AHEAD + 1), race(), False, id="beyond-ceiling"),
        C(
            peer("n3", lsn=LSN + PLAUSIBLE_AHEAD + 1),
            race(last_leader_lsn=LSN + 1),
            True,
            id="ceiling-from-last-leader",
        ),
        C(
            peer("n3", lsn=LSN + 2 * PLAUSIBLE_AHEAD),
            race(last_leader_lsn=None, node=replica(lsn=LSN)),
            True,
            id="my-own-lsn-is-never-a-ceiling",
        ),
        C(
            peer("n3", lsn=2**60),
            race(last_leader_lsn=None, node=replica(lsn=None)),
            True,
            id="no-ceiling-known",
        ),
        C(peer("n3", timeline=1), race(node=replica(timeline=2)), False, id="older-timeline"),
        C(
            peer("n3", timeline=None),
            race(node=replica(timeline=2)),
            True,
            id="peer-timeline-unknown",
        ),
    ],
)
def test_plausible(p: PeerView, o: Observation, expected: bool) -> None:
    assert plausible(p, o) is expected


# --- safety rules around the stored state ---------------------------------------------


def test_foreign_primary_without_lock_demotes() -> None:
    assert decide(obs(primary(sysid=OTHER_SYSID), cluster())).action is Action.DEMOTE


def test_failed_bootstrap_gives_the_lock_up() -> None:
    o = obs(empty(job_error="initdb failed: exit status 1"), i_lead(initialize=PENDING_INIT))
    assert decide(o).action is not Action.WAIT


def test_the_table_reaches_every_action() -> None:
    reached = {decide(p.values[0]).action for p in CASES}
    assert reached == set(Action)


# --- issue 9.4: a leader that cannot serve gives the lock up -----------------------------

PAST = Settings().primary_start_timeout + 0.1


@pytest.mark.parametrize(
    ("o", "words"),
    [
        C(
            obs(
                stopped(job_error="postgres exited while starting"), i_lead(), not_serving_for=PAST
            ),
            ["postgres failing to start (postgres exited while starting)", "primary_start_timeout"],
            id="postgres-fails-to-start",
        ),
        C(
            obs(stopped(), i_lead(), not_serving_for=PAST),
            ["postgres not running as primary"],
            id="postgres-stopped",
        ),
        C(obs(unknown(), i_lead(), not_serving_for=PAST), ["not running as primary"], id="unknown"),
        C(obs(None, i_lead(), not_serving_for=PAST), ["agent unreachable"], id="agent-gone"),
        C(
            obs(stopped(job="start-primary"), i_lead(), not_serving_for=PAST),
            ["start-primary still not serving"],
            id="start-job-hangs",
        ),
        C(
            obs(
                stopped(), i_lead(), not_serving_for=5.1, settings=Settings(primary_start_timeout=5)
            ),
            ["(primary_start_timeout 5s)"],
            id="custom-timeout",
        ),
    ],
)
def test_leader_that_cannot_serve_abdicates(o: Observation, words: list[str]) -> None:
    d = decide(o)
    assert d.action is Action.ABDICATE, d.reason
    for word in words:
        assert word in d.reason, f"{word!r} not in {d.reason!r}"


@pytest.mark.parametrize(
    ("o", "action"),
    [
        C(obs(stopped(), i_lead(), not_serving_for=19.9), Action.START_PRIMARY, id="within-bound"),
        C(obs(None, i_lead(), not_serving_for=20.0), Action.WAIT, id="agent-gone-at-bound"),
        C(obs(replica(), i_lead(), not_serving_for=3), Action.PROMOTE, id="promote-within"),
        C(obs(primary(), i_lead(), not_serving_for=PAST), Action.HOLD, id="serving-primary"),
        C(obs(stopped(), cluster(), not_serving_for=PAST), Action.START_REPLICA, id="not-leader"),
    ],
)
def test_leader_within_primary_start_timeout_keeps_trying(o: Observation, action: Action) -> None:
    assert decide(o).action is action


def test_failed_member_is_not_waited_for() -> None:
    """The member that abdicated (its postgres cannot start) does not hold the race up."""
    failed = peer("n3", running=False, role=Role.STOPPED, lsn=None, job_error="exited")
    assert decide(race(peers=(failed,))).action is Action.ACQUIRE_AND_PROMOTE
    starting = peer("n3", running=False, role=Role.STOPPED, lsn=None)
    assert decide(race(peers=(starting,))).action is Action.WAIT


# --- issue 9.2: an empty member never forks a new cluster off members with data -------------


def test_empty_member_waits_while_a_reachable_member_has_data() -> None:
    wiped = cluster(leader=None, initialize=None)
    holder = peer("n3", running=False, role=Role.STOPPED, has_data=True)
    d = decide(obs(empty(), wiped, peers=(holder,)))
    assert d.action is Action.WAIT, d.reason
    assert "n3 holds data: not initializing a new cluster" in d.reason


@pytest.mark.parametrize(
    "peers",
    [
        C((), id="alone"),
        C((peer("n3", has_data=False, running=False, role=Role.STOPPED),), id="peer-empty-too"),
        C((peer("n3", reachable=False, has_data=True),), id="holder-unreachable"),
        C((peer("n3", has_data=None),), id="peer-did-not-say"),
    ],
)
def test_empty_member_bootstraps_when_no_reachable_member_has_data(
    peers: tuple[PeerView, ...],
) -> None:
    d = decide(obs(empty(), cluster(leader=None, initialize=None), peers=peers))
    assert d.action is Action.BOOTSTRAP, d.reason


def test_empty_member_is_not_waited_for_in_a_race() -> None:
    """An empty member has no WAL to lose: it never holds a race up (else a deadlock)."""
    blank = peer("n3", running=False, role=Role.STOPPED, lsn=None, has_data=False)
    assert decide(race(last_leader_lsn=None, peers=(blank,))).action is Action.ACQUIRE_AND_PROMOTE


# --- issue 9.6: switchover on local clocks only ---------------------------------------------


def test_switchover_decisions_ignore_the_wall_clock_it_was_written_with() -> None:
    """A request stamped far in the past or future by another node's clock still counts."""
    for age in (-1e6, 1e6):
        o = obs(primary(), i_lead(switchover=switchover("n3", age=age)), peers=(peer("n3"),))
        assert decide(o).action is Action.SWITCHOVER
        blocked = race(cl=no_leader(switchover=switchover("n3", source="n2", age=age)))
        assert "switchover to n3 is in progress" in decide(blocked).reason


def test_others_race_one_ttl_after_the_lock_was_handed_over() -> None:
    cl = no_leader(switchover=switchover("n3", source="n2"))
    assert decide(race(cl=cl, switchover_age=3.9)).action is Action.WAIT
    assert decide(race(cl=cl, switchover_age=4.0)).action is Action.ACQUIRE_AND_PROMOTE


def test_a_demoting_peer_is_not_deferred_to_nor_waited_for() -> None:
    going = PeerView("n2", True, job="demoting", has_data=True)
    assert decide(race(peers=(going,))).action is Action.ACQUIRE_AND_PROMOTE
