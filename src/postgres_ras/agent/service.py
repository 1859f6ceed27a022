"""``pgras agent``: run the agent until SIGTERM, then stop postgres (fast) and exit."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from postgres_ras.agent.api import create_app
from postgres_ras.agent.node import Agent
from postgres_ras.agent.postgres import Postgres
from postgres_ras.config import NodeConfig
from postgres_ras.httpserver import Server

log = logging.getLogger(__name__)


def run(config: NodeConfig) -> int:
    pg = Postgres(config)
    agent = Agent(config, pg)
    token = config.agent.auth_token.get_secret_value() if config.agent.auth_token else None
    server = Server(create_app(agent, token), config.agent.listen, config.agent.port, "agent")
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    fence = threading.Thread(target=agent.fence_loop, name="fence", daemon=True)
    fence.start()
    log.info(
        "agent listening on %s:%d, data %s, postgres %s",
        config.agent.listen,
        config.agent.port,
        config.data_dir,
        pg.bin_dir,
    )
    stop.wait()
    agent.close()
    server.stop()
    if pg.is_running():
        pg.stop("fast", timeout=20)
        log.info("postgres stopped (fast) on agent shutdown")
    return 0
