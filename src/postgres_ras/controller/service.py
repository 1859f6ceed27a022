"""``pgras controller``: the HA loop, the heartbeat to the agent, the REST API.

SIGTERM/SIGINT: a leader first hands leadership to a replica
(``controller/handover.py``, bounded by ``HANDOVER_TIMEOUT``) while the HA
loop keeps running to carry the switchover out; then the loop stops and the
normal shutdown runs (stop postgres if still primary, release the lock,
leave the cluster). A second signal skips the handover.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from postgres_ras.config import NodeConfig
from postgres_ras.controller.agent_client import AgentClient
from postgres_ras.controller.api import create_app
from postgres_ras.controller.ha import HA
from postgres_ras.controller.handover import Handover
from postgres_ras.controller.publisher import make_publisher
from postgres_ras.controller.sweep import LeaderView
from postgres_ras.dcs.consul import ConsulDCS
from postgres_ras.errors import DCSError
from postgres_ras.httpserver import Server

log = logging.getLogger(__name__)

# Stop + final WAL catch-up (2 s) + promotion take ~1-3 s; Kubernetes'
# terminationGracePeriodSeconds must exceed this plus the postgres stop.
HANDOVER_TIMEOUT = 10.0


def leader_view(ha: HA) -> LeaderView:
    snap = ha.snapshot
    cluster = snap.observation.cluster if snap.observation else None
    members = frozenset(m.name for m in cluster.members) if cluster is not None else None
    return LeaderView(leading=snap.primary_ok, members=members)


def run(config: NodeConfig) -> int:
    dcs = ConsulDCS(
        config.cluster,
        config.name,
        config.consul.url,
        config.consul.token.get_secret_value() if config.consul.token else None,
        ca_file=str(config.consul.ca_file) if config.consul.ca_file else None,
        fallback_urls=tuple(config.consul.fallback_urls),
    )
    publisher = make_publisher(config)
    token = config.agent.auth_token.get_secret_value() if config.agent.auth_token else None
    ha = HA(config, dcs, AgentClient(config.controller.agent_url, token=token), publisher)
    staying: Callable[[list[str]], list[str]] | None = None
    if config.publisher.kind == "kubernetes":
        from postgres_ras.controller.kubernetes import KubernetesPublisher

        assert isinstance(publisher, KubernetesPublisher)
        publisher.view = lambda: leader_view(ha)
        staying = publisher.staying_members
    server = Server(
        create_app(ha),
        config.controller.listen,
        config.controller.port,
        "controller",
        tls_cert=config.controller.tls_cert,
        tls_key=config.controller.tls_key,
    )
    handover = Handover(config.name, dcs.get_cluster, dcs.put, staying)
    stopping = threading.Event()

    def hand_over_then_stop() -> None:
        # Runs beside the HA loop, which carries out the switchover it requests; the loop
        # stops as soon as the lock is released, the final sentence comes after.
        if ha.snapshot.primary_ok:
            log.info("%s", handover.run(HANDOVER_TIMEOUT, on_released=ha.stop_event.set))
        ha.stop_event.set()

    handing_over = threading.Thread(target=hand_over_then_stop, name="handover", daemon=True)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stopping.is_set():
            log.info("received %s again: stopping without handover", name)
            ha.stop_event.set()
            return
        stopping.set()
        log.info("received %s: leaving the cluster", name)
        handing_over.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    log.info(
        "controller of %s in cluster %s, API on %s://%s:%d, Consul %s",
        config.name,
        config.cluster,
        "https" if server.tls else "http",
        config.controller.listen,
        config.controller.port,
        config.consul.url,
    )
    while not ha.stop_event.is_set():
        try:
            ha.run()
        except DCSError as exc:  # the loop handles these; this is a last resort
            log.error("HA loop error: %s", exc)
    # Leaves the cluster (the new leader does not wait for this member); for good when a
    # StatefulSet scale-down removes this pod.
    ha.shutdown(removed=staying is not None and not staying([config.name]))
    if handing_over.is_alive():
        handing_over.join(HANDOVER_TIMEOUT)
    publisher.close()
    server.stop()
    log.info("controller stopped")
    return 2 if ha.refused else 0
