"""Render the HAProxy configuration of the local write and read endpoints.

The write frontend sends TCP connections to the one node whose controller answers
``GET /primary`` with 200; the read frontend balances over nodes answering
``GET /replica`` and falls back to the write backend while no replica is up, so
reads (and pgpool's backend 1) are still served by the primary. While neither
exists (an election: a dead primary stops every replica's streaming, so all of
them fail ``/replica`` until the new primary is up) reads go to any node whose
postgres runs (``GET /health``): briefly stale reads rather than no reads. Checks are fast
(``inter`` 300 ms, ``fall`` 2, ``rise`` 1) and ``on-marked-down shutdown-sessions``
cuts every connection to a server as soon as it stops being what its backend
needs: no session stays on a demoted primary.

Pure rendering; no file or process is touched here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from postgres_ras.errors import ConfigError
from postgres_ras.local.layout import Layout, NodePorts


@dataclass(frozen=True)
class CheckTiming:
    """Health-check pacing; the defaults detect a role change in ~0.6 s."""

    inter_ms: int = 300
    fall: int = 2
    rise: int = 1
    timeout_ms: int = 1000

    def validate(self) -> None:
        if not 50 <= self.inter_ms <= 60_000:
            raise ConfigError(f"inter_ms must be 50-60000, got {self.inter_ms}")
        if not 1 <= self.fall <= 10 or not 1 <= self.rise <= 10:
            raise ConfigError(f"fall and rise must be 1-10, got {self.fall}/{self.rise}")
        if not 50 <= self.timeout_ms <= 60_000:
            raise ConfigError(f"timeout_ms must be 50-60000, got {self.timeout_ms}")


def _server_lines(nodes: Sequence[NodePorts], host: str) -> list[str]:
    return [f"    server {n.name} {n.host or host}:{n.postgres} check port {n.api}" for n in nodes]


def _check_nodes(nodes: Sequence[NodePorts]) -> None:
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise ConfigError(f"node names must be unique, got {names}")
    for n in nodes:
        for field in ("postgres", "api"):
            port = getattr(n, field)
            if not 1 <= port <= 65535:
                raise ConfigError(f"{n.name}.{field} must be a port 1-65535, got {port}")
        if not n.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"node name must be alphanumeric (- and _ allowed), got {n.name!r}")


def render_haproxy_cfg(
    layout: Layout,
    nodes: Sequence[NodePorts],
    timing: CheckTiming | None = None,
    pid_file: str | None = None,
) -> str:
    """haproxy.cfg for ``nodes`` (may be empty: the frontends then refuse nothing
    but have no server, and connections wait for one up to ``timeout connect``)."""
    timing = timing or CheckTiming()
    timing.validate()
    _check_nodes(nodes)
    host = layout.host
    out = [
        "# Rendered by postgres_ras.local.haproxy; do not edit by hand.",
        "global",
        "    maxconn 2000",
        "    hard-stop-after 10s",
    ]
    if pid_file:
        out.append(f"    pidfile {pid_file}")
    out += [
        "",
        "defaults",
        "    mode tcp",
        "    log global",
        "    option dontlognull",
        "    retries 2",
        "    timeout connect 2s",
        "    timeout client 30m",
        "    timeout server 30m",
        f"    timeout check {timing.timeout_ms}ms",
        f"    default-server inter {timing.inter_ms}ms fastinter {timing.inter_ms}ms"
        f" downinter {timing.inter_ms}ms fall {timing.fall} rise {timing.rise}"
        " on-marked-down shutdown-sessions",
        "",
        "frontend write",
        f"    bind {host}:{layout.haproxy_write}",
        "    default_backend write",
        "",
        "frontend read",
        f"    bind {host}:{layout.haproxy_read}",
        "    # No replica up (one node, or all replicas down): the primary serves reads.",
        "    use_backend read if { nbsrv(read) gt 0 }",
        "    use_backend write if { nbsrv(write) gt 0 }",
        "    # Neither (an election in progress): any running node serves (stale) reads.",
        "    default_backend any",
        "",
        "backend write",
        "    option httpchk",
        "    http-check send meth GET uri /primary",
        "    http-check expect status 200",
        *_server_lines(nodes, host),
        "",
        "backend read",
        "    balance roundrobin",
        "    option httpchk",
        "    http-check send meth GET uri /replica",
        "    http-check expect status 200",
        *_server_lines(nodes, host),
        "",
        "backend any",
        "    balance roundrobin",
        "    option httpchk",
        "    http-check send meth GET uri /health",
        "    http-check expect status 200",
        *_server_lines(nodes, host),
        "",
        "listen stats",
        "    mode http",
        f"    bind {host}:{layout.haproxy_stats}",
        "    stats enable",
        "    stats uri /",
        "    stats refresh 2s",
        "    timeout client 30s",
        "    timeout server 30s",
        "",
    ]
    return "\n".join(out)
