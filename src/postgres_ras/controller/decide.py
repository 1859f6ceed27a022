"""The HA decision: a pure function from one Observation to one Decision.

No I/O, no clock, no randomness: everything it needs is in the observation,
so every branch can be tested without a cluster. Safety rules it keeps:
- only the holder of the leader lock runs or becomes a writable primary;
  a primary without the lock demotes (once its lease is gone, if Consul is
  unreachable), and a running primary that finds the lock free may retake it;
- a replica races only if healthy, not ``nofailover``, within
  ``maximum_lag_on_failover`` of the last known primary, not behind any
  reachable plausible peer, and no former leader answers as healthy;
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
    ceiling = (
        o.last_leader_lsn if o.last_leader_lsn is not None else (o.node.lsn if o.node else None)
    )
    return ceiling is None or peer.lsn <= ceiling + PLAUSIBLE_AHEAD


def candidate_key(peer: PeerView) -> tuple[bool, int, str]:
    """Sort key for failover/switchover candidates: streaming first, larger LSN first."""
    return (not peer.streaming, -(peer.lsn or 0), peer.name)


def why_not_race(o: Observation) -> str | None:
    """None if this replica may race for the leader lock, else the reason it may not."""
    node, cluster = o.node, o.cluster
    assert node is not None and cluster is not None
    if o.nofailover:
        return "tagged nofailover"
    sw = cluster.switchover
    if sw and sw.target and sw.target != o.me and not sw.stale(o.now_wall, SWITCHOVER_TIMEOUT):
        return f"a switchover to {sw.target} is in progress"
    if o.settings.synchronous_mode and cluster.sync != o.me:
        return f"synchronous mode: only the synchronous standby ({cluster.sync}) may be promoted"
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
    for peer in o.peers:
        if not peer.reachable or peer.nofailover or peer.role is not Role.REPLICA:
            continue
        if not plausible(peer, o):
            continue
        if node.timeline and peer.timeline and peer.timeline > node.timeline:
            return f"{peer.name} is on a newer timeline ({peer.timeline} > {node.timeline})"
        if (peer.lsn or 0) > node.lsn:
            return f"{peer.name} is more advanced ({peer.lsn} > {node.lsn})"
    return None


def decide(o: Observation) -> Decision:
    node, cluster = o.node, o.cluster
    leader = cluster.leader if cluster else None
    i_lead = leader is not None and o.session is not None and leader.session == o.session
    if node is None:
        if i_lead:
            return _d(
                Action.WAIT, "agent unreachable: keeping the leader lock, postgres may still run"
            )
        return _d(Action.WAIT, "agent unreachable: cannot observe postgres")
    primary = node.running and node.role is Role.PRIMARY
    if node.job:
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
        return _d(
            Action.DROP_STALE, "dropping my previous session's leader lock: not a running primary"
        )

    if not node.has_data:
        if i_lead:
            why = f"bootstrap failed: {node.job_error}" if node.job_error else "no data directory"
            return _d(Action.RELEASE, f"releasing the leader lock: I hold it without data ({why})")
        if leader is None and cluster.initialize in (None, PENDING_INIT):
            # "pending" without a leader: the member that started initdb died; start over.
            return _d(Action.BOOTSTRAP, "racing to initialize a new cluster")
        lm = cluster.leader_member
        if (
            leader is not None
            and not i_lead
            and lm
            and lm.role == "primary"
            and lm.state == "running"
        ):
            return _d(Action.CLONE, f"cloning from leader {leader.name}", upstream=lm)
        return _d(Action.WAIT, "no data: waiting for a running leader to clone from")

    if i_lead:
        if primary:
            sw = cluster.switchover
            if sw and sw.source == o.me and not sw.stale(o.now_wall, SWITCHOVER_TIMEOUT):
                target = switchover_target(o)
                if target is not None:
                    return _d(Action.SWITCHOVER, f"switching over to {target}", target=target)
            return _d(Action.HOLD, "no action: I am the leader with the lock")
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
                and lm.role == "primary"
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
    ]
    if not peers:
        return None
    return sorted(peers, key=candidate_key)[0].name
