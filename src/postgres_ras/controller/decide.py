"""The HA decision: a pure function from one Observation to one Decision.

No I/O, no clock, no randomness: everything it needs is in the observation,
so every branch can be tested without a cluster. Safety rules it keeps:
- only the holder of the leader lock runs or becomes a writable primary;
  a primary without the lock demotes (once its lease is gone, if Consul is
  unreachable), and a running primary that finds the lock free may retake it;
- a replica races only if healthy, not ``nofailover``, its watchdog armable
  when required (a leader whose is not releases the lock), within
  ``maximum_lag_on_failover`` of the last primary position (published in
  Consul by the leader, so it survives a full-cluster restart), not behind
  any reachable plausible peer, not while a member is still starting (up to
  ``primary_start_timeout``, and without bound when the last primary position
  is unknown), and no former leader answers as healthy;
- a stopped former primary never starts as primary by itself: it starts
  read-only and goes through the race like everybody else.
"""

from __future__ import annotations

from postgres_ras.controller.state import Action, Decision, Observation, PeerView, Role
from postgres_ras.dcs.base import Member

# A replica cannot have received more WAL than its primary wrote; a peer that
# claims to be further ahead of the last primary position than this is lying.
PLAUSIBLE_AHEAD = 256 * 1024 * 1024
SWITCHOVER_TIMEOUT = 30.0
PENDING_INIT = "pending"
# A replica pointed at a running leader that has not streamed for this long
# (a diverged timeline, a recycled WAL segment) is rewound or re-cloned.
STUCK_REPLICA_AFTER = 12.0


def _d(
    action: Action, reason: str, upstream: Member | None = None, target: str | None = None
) -> Decision:
    return Decision(action, reason, upstream, target)


def plausible(peer: PeerView, o: Observation) -> bool:
    """Whether a peer's reported position can be compared with mine.

    Never judged against my own position: a peer far ahead of me is exactly the
    member that must win. Only a claim beyond the last primary position (plus a
    margin for WAL written since it was published) is dismissed as a lie, and
    with no known primary position nothing is dismissed.
    """
    if peer.lsn is None or peer.lsn < 0:
        return False
    if (
        o.node is not None
        and o.node.timeline
        and peer.timeline
        # An older timeline may hold WAL a promotion abandoned: not comparable. A newer
        # one is not ignored: that peer followed a promotion I missed.
        and peer.timeline < o.node.timeline
    ):
        return False
    return o.last_leader_lsn is None or peer.lsn <= o.last_leader_lsn + PLAUSIBLE_AHEAD


def unsettled(o: Observation) -> list[str]:
    """Members (live in Consul, eligible) whose position cannot be read yet.

    Starting, recovering, running a job, or not answering: such a member may hold
    more WAL than I do, so a race now could rewind its data away.
    """
    if o.cluster is None:
        return []
    sw = o.cluster.switchover
    # A source that handed the lock to me published its final position first and
    # restarts as a replica now: waiting for it would only lengthen the write outage.
    handed_over_by = (
        sw.source if sw and sw.target == o.me and o.switchover_age < o.settings.ttl else None
    )
    names = []
    for peer in o.peers:
        m = o.cluster.member(peer.name)
        if m is None or m.nofailover or peer.nofailover or peer.name in (o.me, handed_over_by):
            continue
        if peer.reachable and peer.has_data is False:
            continue  # no WAL at all: nothing to lose by racing without it
        failed = peer.reachable and not peer.running and not peer.job and peer.job_error
        if peer.reachable and peer.job == "demoting":
            continue  # a primary going away: it is rewound after the race, not waited for
        settled = failed or (
            peer.reachable
            and peer.running
            and not peer.job
            and peer.role in (Role.PRIMARY, Role.REPLICA)
            and (peer.role is Role.PRIMARY or peer.lsn is not None)
        )
        if not settled:
            names.append(peer.name)
    return names


def candidate_key(peer: PeerView) -> tuple[bool, int, str]:
    """Sort key for failover/switchover candidates: streaming first, larger LSN first."""
    return (not peer.streaming, -(peer.lsn or 0), peer.name)


def why_not_race(o: Observation) -> str | None:
    """None if this replica may race for the leader lock, else the reason it may not."""
    node, cluster = o.node, o.cluster
    assert node is not None and cluster is not None
    if o.nofailover:
        return "tagged nofailover"
    if node.watchdog_blocked:
        return node.watchdog_blocked
    sw = cluster.switchover
    if sw and sw.target and sw.target != o.me and o.switchover_age < o.settings.ttl:
        # The lock was handed to the target: it takes it within a cycle. If it died
        # meanwhile, everybody races after one ttl.
        return f"a switchover to {sw.target} is in progress"
    if o.settings.synchronous_mode and o.me not in cluster.sync_names:
        named = ", ".join(cluster.sync_names) or "none confirmed"
        return f"synchronous mode: only a synchronous standby ({named}) may be promoted"
    for peer in o.peers:
        if peer.primary_ok:
            return f"{peer.name} still answers as a healthy primary"
        if peer.reachable and peer.running and peer.role is Role.PRIMARY:
            # It retakes the free lock, or demotes within retry_timeout if it cannot.
            return f"{peer.name} still runs as a primary"
    if node.lsn is None:
        return "my WAL position is unknown"
    if o.last_leader_lsn is not None:
        lag = o.last_leader_lsn - node.lsn
        if lag > o.settings.maximum_lag_on_failover:
            return (
                f"my lag of {lag} bytes behind {o.last_leader} exceeds "
                f"maximum_lag_on_failover ({o.settings.maximum_lag_on_failover})"
            )
    waiting = unsettled(o)
    if waiting:
        names = ", ".join(waiting)
        if o.last_leader_lsn is None:
            return f"{names} not settled yet and the last primary position is unknown"
        if o.unsettled_for < o.settings.primary_start_timeout:
            return (
                f"waiting for {names} to finish starting ({o.unsettled_for:.0f}s of "
                f"{o.settings.primary_start_timeout:.0f}s): it may hold more WAL"
            )
    for peer in o.peers:
        if not peer.reachable or peer.nofailover or peer.role is not Role.REPLICA:
            continue
        if not plausible(peer, o):
            continue
        if node.timeline and peer.timeline and peer.timeline > node.timeline:
            return f"{peer.name} is on a newer timeline ({peer.timeline} > {node.timeline})"
        if o.settings.synchronous_mode and peer.name not in cluster.sync_names:
            # Every acknowledged commit is on me; its extra WAL was never acknowledged
            # (it is rewound), and it may not race: waiting for it would leave no leader.
            continue
        if (peer.lsn or 0) > node.lsn:
            return f"{peer.name} is more advanced ({peer.lsn} > {node.lsn})"
    return None


def _cannot_serve(o: Observation, what: str) -> Decision | None:
    """ABDICATE when I have led without a running primary for over primary_start_timeout."""
    bound = o.settings.primary_start_timeout
    if o.not_serving_for <= bound:
        return None
    return _d(
        Action.ABDICATE,
        f"releasing the leader lock: {what} for {o.not_serving_for:.0f}s "
        f"(primary_start_timeout {bound:.0f}s); stopping postgres so the best replica takes over",
    )


def decide(o: Observation) -> Decision:
    node, cluster = o.node, o.cluster
    leader = cluster.leader if cluster else None
    i_lead = leader is not None and o.session is not None and leader.session == o.session
    if node is None:
        if i_lead:
            gone = _cannot_serve(o, "agent unreachable")
            if gone is not None:
                return gone
            return _d(
                Action.WAIT, "agent unreachable: keeping the leader lock, postgres may still run"
            )
        return _d(Action.WAIT, "agent unreachable: cannot observe postgres")
    primary = node.running and node.role is Role.PRIMARY
    if node.job:
        if i_lead and cluster is not None:
            gone = _cannot_serve(o, f"{node.job} still not serving as primary")
            if gone is not None:
                return gone
        return _d(Action.WAIT, f"{node.job} in progress")
    if cluster is None:
        if primary and not o.lease_valid:
            return _d(Action.DEMOTE, "demoting: Consul unreachable for longer than retry_timeout")
        if primary:
            return _d(Action.WAIT, "Consul unreachable: staying primary while the lease lasts")
        return _d(Action.WAIT, "Consul unreachable: keeping the current role")
    if (
        cluster.initialize not in (None, PENDING_INIT)
        and node.sysid
        and node.sysid != cluster.initialize
    ):
        if primary and not i_lead:
            return _d(
                Action.DEMOTE,
                f"demoting: data directory belongs to another cluster (system id {node.sysid}, "
                f"cluster {cluster.initialize}) and I do not hold the leader lock",
            )
        return _d(
            Action.WAIT,
            f"data directory belongs to another cluster (system id {node.sysid}, "
            f"cluster {cluster.initialize}): refusing to join; move it away to re-clone",
        )
    if (
        leader is not None
        and not i_lead
        and leader.name == o.me
        and leader.session in o.stale_sessions
    ):
        if primary:
            return _d(
                Action.TAKE_OVER,
                "taking over the leader lock of my previous session: still primary",
            )
        if not node.running and node.has_data and not node.job_error and not node.watchdog_blocked:
            # Stopped under a lock nobody else could take (a fence while Consul elected a
            # leader): no other node can have promoted, so restart under it, as after a
            # crash, rather than start a race that may cost a timeline. A primary that
            # then fails to start abdicates after primary_start_timeout.
            return _d(
                Action.TAKE_OVER,
                "taking over the leader lock of my previous session: postgres stopped, "
                "restarting it as primary",
            )
        return _d(
            Action.DROP_STALE, "dropping my previous session's leader lock: not a running primary"
        )

    if not node.has_data:
        if i_lead:
            why = f"bootstrap failed: {node.job_error}" if node.job_error else "no data directory"
            return _d(Action.RELEASE, f"releasing the leader lock: I hold it without data ({why})")
        if leader is None and cluster.initialize in (None, PENDING_INIT):
            holders = [p.name for p in o.peers if p.reachable and p.has_data]
            if holders:
                # Consul lost its keys (wiped, new servers): a new cluster would fork the
                # data away from the members that still hold it.
                return _d(
                    Action.WAIT,
                    f"no data, but {', '.join(holders)} holds data: not initializing a new "
                    "cluster; waiting for a leader to clone from",
                )
            # "pending" without a leader: the member that started initdb died; start over.
            return _d(Action.BOOTSTRAP, "racing to initialize a new cluster")
        lm = cluster.leader_member
        if (
            leader is not None
            and not i_lead
            and lm
            and lm.role == Role.PRIMARY
            and lm.state == "running"
        ):
            return _d(Action.CLONE, f"cloning from leader {leader.name}", upstream=lm)
        return _d(Action.WAIT, "no data: waiting for a running leader to clone from")

    if i_lead:
        if primary:
            sw = cluster.switchover
            if sw and sw.source == o.me and o.switchover_age <= SWITCHOVER_TIMEOUT:
                target = switchover_target(o)
                if target is not None:
                    return _d(Action.SWITCHOVER, f"switching over to {target}", target=target)
                return _d(
                    Action.CANCEL_SWITCHOVER,
                    f"refusing the switchover: {sw.target} is not a healthy streaming replica"
                    if sw.target
                    else "refusing the switchover: no healthy streaming replica to hand over to",
                )
            return _d(Action.HOLD, "no action: I am the leader with the lock")
        if node.watchdog_blocked:
            # Its agent refuses to start or promote a primary: nothing to wait for.
            return _d(Action.RELEASE, f"releasing the leader lock: {node.watchdog_blocked}")
        what = (
            f"postgres failing to start ({node.job_error})"
            if node.job_error and not node.running
            else "postgres not running as primary"
        )
        gone = _cannot_serve(o, what)
        if gone is not None:
            return gone
        if node.running and node.role is Role.REPLICA:
            return _d(Action.PROMOTE, "promoting: I hold the leader lock")
        if not node.running:
            return _d(Action.START_PRIMARY, "starting postgres as primary: I hold the leader lock")
        return _d(Action.WAIT, "leader, but postgres is in an unknown state")

    if leader is not None:
        lm = cluster.leader_member
        if primary:
            return _d(Action.DEMOTE, f"demoting: {leader.name} holds the leader lock")
        if lm is None:
            return _d(Action.WAIT, f"leader {leader.name} has not published its address yet")
        if not node.running:
            return _d(Action.START_REPLICA, f"starting as a replica of {leader.name}", upstream=lm)
        if node.role is Role.REPLICA:
            if node.upstream != f"{lm.conn_host}:{lm.conn_port}":
                return _d(Action.FOLLOW, f"following new leader {leader.name}", upstream=lm)
            if (
                not node.streaming
                and o.not_streaming_for > STUCK_REPLICA_AFTER
                and lm.role == Role.PRIMARY
                and lm.state == "running"
            ):
                return _d(
                    Action.REWIND,
                    f"rewinding: no stream from leader {leader.name} for "
                    f"{o.not_streaming_for:.0f}s (diverged timeline or missing WAL)",
                    upstream=lm,
                )
            state = "streaming" if node.streaming else "not streaming yet"
            return _d(Action.HOLD, f"no action: replica of {leader.name} ({state})")
        return _d(Action.WAIT, "postgres is in an unknown state")

    # Nobody holds the lock.
    if primary:
        return _d(Action.ACQUIRE, "taking the free leader lock: I am the running primary")
    if not node.running:
        return _d(Action.START_REPLICA, "no leader: starting read-only to take part in the race")
    if node.role is not Role.REPLICA:
        return _d(Action.WAIT, "no leader, and postgres is in an unknown state")
    reason = why_not_race(o)
    if reason is not None:
        return _d(Action.WAIT, f"no leader; not racing: {reason}")
    return _d(
        Action.ACQUIRE_AND_PROMOTE,
        "no leader: racing for the lock as the most advanced healthy replica",
    )


def switchover_target(o: Observation) -> str | None:
    """The replica a switchover hands over to: the one named, else the best streaming one."""
    assert o.cluster is not None and o.cluster.switchover is not None
    wanted = o.cluster.switchover.target
    peers = [
        p
        for p in o.peers
        if p.reachable
        and p.role is Role.REPLICA
        and p.streaming
        and not p.nofailover
        and (wanted is None or p.name == wanted)
        # Synchronous mode: only a member that holds every acknowledged commit.
        and (not o.settings.synchronous_mode or p.name in o.cluster.sync_names)
    ]
    if not peers:
        return None
    return sorted(peers, key=candidate_key)[0].name
