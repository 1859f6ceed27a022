"""Issue 9.3: a second controller with a live member's name refuses to start, and harms nothing.

The worst case: a copy of the leader's own config (same name, same agent), only
its API on another port. It must exit with a clear message, and the live
leader's session, lock and member key must stay exactly as they were.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import yaml

from postgres_ras.dcs.consul import client as consul_client
from tests.integration.conftest import BASE_PORT, Harness


def _sessions(h: Harness, name: str) -> tuple[str | None, str | None]:
    kv = consul_client(h.c.layout.consul_url).kv
    prefix = f"pgras/{h.c.layout.cluster}/"
    _, leader = kv.get(prefix + "leader")
    _, member = kv.get(prefix + f"members/{name}")
    return (leader or {}).get("Session"), (member or {}).get("Session")


def test_second_controller_with_a_live_name_refuses_to_start(
    cluster: Harness, tmp_path: Path
) -> None:
    leader = cluster.leader().name
    before = _sessions(cluster, leader)
    assert before[0] is not None and before[0] == before[1]
    config = yaml.safe_load((cluster.c.layout.node_dir(leader) / "node.yaml").read_text())
    config["controller"]["port"] = BASE_PORT + 380
    twin_config = tmp_path / "twin.yaml"
    twin_config.write_text(yaml.safe_dump(config))
    twin_config.chmod(0o600)
    out = tmp_path / "twin.log"
    with out.open("wb") as log:
        twin = subprocess.Popen(
            [sys.executable, "-m", "postgres_ras", "controller", "--config", str(twin_config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            code: int | None = twin.wait(timeout=20)
        except subprocess.TimeoutExpired:
            code = None
        time.sleep(2.0)  # anything the twin did to Consul has had time to show
        after = _sessions(cluster, leader)
        text = out.read_text(errors="replace")
        print(f"twin of {leader}: exit code {code}; sessions before {before}, after {after}")
        print("\n".join(text.splitlines()[-5:]))
        assert after == before, "the twin touched the live leader's session or member key"
        assert cluster.leader().name == leader
        assert cluster.writable_nodes() == [leader]
        assert code is not None and code != 0, "the twin kept running"
        assert f"member name '{leader}' is already in use by a live controller" in text
    finally:
        if twin.poll() is None:
            twin.kill()
            twin.wait(timeout=10)
