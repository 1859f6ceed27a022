"""Prometheus metrics, with Patroni's names where they fit (``patroni_x`` -> ``pgras_x``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from postgres_ras.controller.state import Role
from postgres_ras.controller.sync import is_sync_standby

if TYPE_CHECKING:
    from postgres_ras.controller.ha import HA

CONTENT_TYPE = CONTENT_TYPE_LATEST


def render(ha: HA, lag: int | None) -> bytes:
    registry = CollectorRegistry()
    labels = ["scope", "name"]
    values = [ha.config.cluster, ha.config.name]

    def gauge(name: str, doc: str, value: float) -> None:
        Gauge(name, doc, labels, registry=registry).labels(*values).set(value)

    snap = ha.snapshot
    o = snap.observation
    node = o.node if o else None
    cluster = o.cluster if o else None
    gauge("pgras_primary", "1 if this node is the writable leader", int(snap.primary_ok))
    gauge(
        "pgras_replica",
        "1 if this node runs as a replica",
        int(bool(node and node.running and node.role is Role.REPLICA)),
    )
    gauge(
        "pgras_sync_standby",
        "1 if this node is a synchronous standby (named in the sync key)",
        int(bool(o and is_sync_standby(o))),
    )
    gauge("pgras_postgres_running", "1 if postgres runs", int(bool(node and node.running)))
    gauge(
        "pgras_postgres_streaming",
        "1 if the replica streams from its primary",
        int(bool(node and node.streaming)),
    )
    gauge("pgras_postgres_timeline", "PostgreSQL timeline", (node.timeline or 0) if node else 0)
    gauge("pgras_xlog_location", "current WAL position (bytes)", (node.lsn or 0) if node else 0)
    gauge(
        "pgras_replication_lag_bytes",
        "bytes behind the leader (-1 if unknown)",
        -1 if lag is None else lag,
    )
    gauge(
        "pgras_cluster_unlocked",
        "1 if no member holds the leader lock",
        int(bool(cluster is not None and cluster.leader is None)),
    )
    gauge("pgras_dcs_reachable", "1 if Consul answered in the last cycle", int(cluster is not None))
    gauge("pgras_lease_remaining_seconds", "leader lease left", ha.lease.remaining() or 0.0)
    gauge("pgras_last_cycle_timestamp", "wall time of the last HA cycle", snap.at)
    return generate_latest(registry)
