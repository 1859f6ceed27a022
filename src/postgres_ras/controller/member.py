"""What this member publishes in its Consul key every cycle.

Peers race on it, HAProxy and `pgras list` read it, and dcs/base.py's
``Member.from_json`` parses it back: change both together.
"""

from __future__ import annotations

from typing import Any

from postgres_ras.config import NodeConfig
from postgres_ras.controller.state import Observation
from postgres_ras.controller.sync import is_sync_standby
from postgres_ras.lsn import format_lsn


def member_value(config: NodeConfig, o: Observation) -> dict[str, Any]:
    node = o.node
    role = node.role.value if node else "unknown"
    state = "unknown"
    if node is not None:
        state = node.job or (
            "fenced"
            if node.fenced and not node.running
            else "running"
            if node.running
            else "stopped"
        )
    c = config
    return {
        "api_url": f"{c.controller.scheme}://{c.controller.host}:{c.controller.port}",
        "conn_host": c.postgres.host,
        "conn_port": c.postgres.port,
        "role": role,
        "state": state,
        "timeline": node.timeline if node else None,
        "lsn": format_lsn(node.lsn) if node and node.lsn is not None else None,
        "streaming": bool(node and node.streaming),
        "sync_standby": is_sync_standby(o),
        "tags": {"nofailover": c.tags.nofailover, "noloadbalance": c.tags.noloadbalance},
    }
