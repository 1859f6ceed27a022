"""Issue 9.5: the node API answers from live state: a node inside a demotion says so."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from postgres_ras.config import NodeConfig
from postgres_ras.controller.api import node_status
from postgres_ras.controller.ha import HA, Snapshot
from postgres_ras.controller.probe import Target, probe_one
from postgres_ras.controller.state import Action, Decision, NodeView, Observation, Role
from postgres_ras.dcs.base import Cluster, Leader


def _ha() -> HA:
    config = NodeConfig.model_validate({"name": "n1", "data_dir": "/nonexistent"})
    ha = HA(config, dcs=None, agent=None, publisher=None)  # type: ignore[arg-type]
    node = NodeView(running=True, role=Role.PRIMARY, has_data=True, timeline=1, lsn=100)
    o = Observation(me="n1", node=node, cluster=Cluster(leader=Leader("n1", "s", 1)), session="s")
    ha.snapshot = Snapshot(o, Decision(Action.HOLD, "no action"), primary_ok=True, at=1.0)
    return ha


def test_a_healthy_primary_says_so() -> None:
    status = node_status(_ha())
    assert status["primary_ok"] is True and status["role"] == "primary"


def test_inside_a_demotion_the_node_says_demoting_not_primary() -> None:
    ha = _ha()
    ha.demoting = True  # set by apply() around the stop of postgres
    status = node_status(ha)
    assert status["primary_ok"] is False
    assert status["role"] == "demoting" and status["job"] == "demoting"
    assert status["running"] is False


def test_a_demoting_peer_is_probed_as_going_away() -> None:
    """Even when a live read of its postgres (``fresh``) still says primary."""
    ha = _ha()
    ha.demoting = True
    body = node_status(ha) | {"role": "primary", "running": True}  # /status?fresh=1 overlay

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            import json

            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        peer = probe_one(Target("n1", f"http://127.0.0.1:{server.server_address[1]}"), 2.0)
    finally:
        server.shutdown()
    assert peer.reachable and not peer.primary_ok
    assert peer.role is Role.UNKNOWN and peer.job == "demoting"
