"""``pgras controller``: the HA loop, the heartbeat to the agent, the REST API."""

from __future__ import annotations

import logging
import signal
from types import FrameType

from postgres_ras.config import NodeConfig
from postgres_ras.controller.agent_client import AgentClient
from postgres_ras.controller.api import create_app
from postgres_ras.controller.ha import HA
from postgres_ras.controller.publisher import make_publisher
from postgres_ras.dcs.consul import ConsulDCS
from postgres_ras.errors import DCSError
from postgres_ras.httpserver import Server

log = logging.getLogger("pgras.controller")


def run(config: NodeConfig) -> int:
    dcs = ConsulDCS(
        config.cluster,
        config.name,
        config.consul.url,
        config.consul.token.get_secret_value() if config.consul.token else None,
    )
    ha = HA(config, dcs, AgentClient(config.controller.agent_url), make_publisher(config.publisher))
    server = Server(create_app(ha), config.controller.listen, config.controller.port, "controller")

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: leaving the cluster", signal.Signals(signum).name)
        ha.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    log.info(
        "controller of %s in cluster %s, API on %s:%d, Consul %s",
        config.name,
        config.cluster,
        config.controller.listen,
        config.controller.port,
        config.consul.url,
    )
    while not ha.stop_event.is_set():
        try:
            ha.run()
        except DCSError as exc:  # the loop handles these; this is a last resort
            log.error("HA loop error: %s", exc)
    ha.shutdown()
    server.stop()
    log.info("controller stopped")
    return 0
