"""HAProxy configuration of the local endpoints: routing, fast checks, validation."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from postgres_ras.errors import ConfigError
from postgres_ras.local.haproxy import CheckTiming, render_haproxy_cfg
from postgres_ras.local.layout import Layout, NodePorts

LAYOUT = Layout(work_dir=Path("/tmp/pgras-unit"), base_port=27400)
NODES = [LAYOUT.node(1), LAYOUT.node(2), LAYOUT.node(3)]


def section(cfg: str, header: str) -> list[str]:
    lines = cfg.splitlines()
    start = lines.index(header)
    out: list[str] = []
    for line in lines[start + 1 :]:
        if line and not line.startswith(" "):
            break
        if line.strip():
            out.append(line.strip())
    return out


def test_write_backend_checks_primary_on_the_api_port() -> None:
    cfg = render_haproxy_cfg(LAYOUT, NODES)
    write = section(cfg, "backend write")
    assert "http-check send meth GET uri /primary" in write
    assert "http-check expect status 200" in write
    for n in NODES:
        assert f"server {n.name} 127.0.0.1:{n.postgres} check port {n.api}" in write


def test_read_backend_checks_replica_and_falls_back_to_write_then_any_node() -> None:
    cfg = render_haproxy_cfg(LAYOUT, NODES)
    assert "http-check send meth GET uri /replica" in section(cfg, "backend read")
    front = section(cfg, "frontend read")
    assert f"bind 127.0.0.1:{LAYOUT.haproxy_read}" in front
    assert front.index("use_backend read if { nbsrv(read) gt 0 }") < front.index(
        "use_backend write if { nbsrv(write) gt 0 }"
    )
    # Neither a streaming replica nor a primary (an election): any running node reads.
    assert "default_backend any" in front
    any_backend = section(cfg, "backend any")
    assert "http-check send meth GET uri /health" in any_backend
    for n in NODES:
        assert f"server {n.name} 127.0.0.1:{n.postgres} check port {n.api}" in any_backend
    assert f"bind 127.0.0.1:{LAYOUT.haproxy_write}" in section(cfg, "frontend write")
    assert f"bind 127.0.0.1:{LAYOUT.haproxy_stats}" in section(cfg, "listen stats")


def test_fast_checks_and_sessions_cut_on_mark_down() -> None:
    defaults = section(render_haproxy_cfg(LAYOUT, NODES), "defaults")
    assert "mode tcp" in defaults
    server_defaults = next(line for line in defaults if line.startswith("default-server"))
    assert "inter 300ms" in server_defaults
    assert "fall 2" in server_defaults and "rise 1" in server_defaults
    assert "on-marked-down shutdown-sessions" in server_defaults


@pytest.mark.parametrize(
    ("timing", "message"),
    [
        (CheckTiming(inter_ms=10), "inter_ms"),
        (CheckTiming(fall=0), "fall"),
        (CheckTiming(rise=11), "fall and rise"),
        (CheckTiming(timeout_ms=0), "timeout_ms"),
    ],
)
def test_timing_validation(timing: CheckTiming, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        render_haproxy_cfg(LAYOUT, NODES, timing)


def test_node_validation() -> None:
    with pytest.raises(ConfigError, match="unique"):
        render_haproxy_cfg(LAYOUT, [NODES[0], NODES[0]])
    with pytest.raises(ConfigError, match="api"):
        render_haproxy_cfg(LAYOUT, [dataclasses.replace(NODES[0], api=0)])
    with pytest.raises(ConfigError, match="name"):
        render_haproxy_cfg(LAYOUT, [NodePorts("bad name", 1, 27401, 27402, 27403)])


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")
@pytest.mark.parametrize("count", [0, 1, 3])
def test_haproxy_accepts_the_config(tmp_path: Path, count: int) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(render_haproxy_cfg(LAYOUT, NODES[:count], pid_file=str(tmp_path / "pid")))
    result = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
