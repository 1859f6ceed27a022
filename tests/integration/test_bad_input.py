"""Issue 2.9: bad config, Consul down at start, and members that report nonsense."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from postgres_ras.dcs.consul import client as consul_client
from postgres_ras.local.procs import ProcessTable
from tests.integration.conftest import Harness


def _pgras(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postgres_ras", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_invalid_config_is_refused_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "node.yaml"
    bad.write_text("name: node1\ndata_dir: /tmp/x\npostgres:\n  port: seventy\n")
    proc = _pgras("agent", "--config", str(bad))
    assert proc.returncode == 2
    assert "postgres.port" in proc.stderr and "PGRAS_POSTGRES__PORT" in proc.stderr
    assert "Traceback" not in proc.stderr

    bad.write_text("name: node1\ndata_dir: /tmp/x\nha:\n  ttl: 2\n  retry_timeout: 5\n")
    proc = _pgras("controller", "--config", str(bad))
    assert proc.returncode == 2
    assert "retry_timeout" in proc.stderr and "Traceback" not in proc.stderr

    proc = _pgras("controller", "--config", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2 and "cannot read config file" in proc.stderr


def test_consul_unreachable_at_start_is_retried_without_crashing(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    cfg = tmp_path / "node.yaml"
    cfg.write_text(
        f"name: lonely\ndata_dir: {tmp_path}/data\nconsul:\n  url: http://127.0.0.1:26399\n"
        "controller:\n  port: 26398\n  agent_url: http://127.0.0.1:26397\n"
    )
    table = ProcessTable(tmp_path / "run", tmp_path / "logs")
    proc = table.start(
        "controller", [sys.executable, "-m", "postgres_ras", "controller", "--config", str(cfg)]
    )
    try:
        time.sleep(4.0)
        assert table.get("controller") is not None, "controller exited"
        log = table.log_file("controller").read_text()
        assert "Consul unreachable" in log and "retrying" in log
        assert "Traceback" not in log
        # Logged once (the first call is the check that no live member has our name).
        assert log.count("Consul unreachable while trying to") == 1
    finally:
        table.stop("controller", timeout=10)
    del proc


class _LyingPeer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(
            {
                "role": "replica",
                "running": True,
                "primary_ok": False,
                "timeline": 1,
                "lsn": "FFFF/FFFFFFFF",
                "streaming": True,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def lying_peer() -> tuple[str, int]:
    server = ThreadingHTTPServer(("127.0.0.1", 26390), _LyingPeer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ("127.0.0.1", 26390)
    server.shutdown()


def test_member_reporting_nonsense_is_not_promoted(
    cluster: Harness, lying_peer: tuple[str, int]
) -> None:
    kv = consul_client(cluster.c.layout.consul_url).kv
    prefix = "pgras/pgras/members/"
    # A member whose key is garbage, and one whose API claims an absurd WAL position.
    kv.put(prefix + "garbage", "{not json")
    kv.put(
        prefix + "liar",
        json.dumps(
            {
                "api_url": f"http://{lying_peer[0]}:{lying_peer[1]}",
                "conn_host": "127.0.0.1",
                "conn_port": 26391,
                "role": "replica",
                "state": "running",
                "timeline": 1,
                "lsn": "FFFF/FFFFFFFF",
                "tags": {},
            }
        ),
    )
    old = cluster.leader().name
    cluster.c.kill(old, signal.SIGKILL)
    new = cluster.wait_new_leader(old, timeout=30)
    assert new in cluster.c.node_names()
    assert cluster.writable_nodes() == [new]
