"""Issue 9.7 and 9.11: the agent fences on postgres's live state, and guards its API.

A replica's controller and agent die; the agent comes back (adopting a
standby) while the controller stays dead; then the standby is promoted behind
the agent's back, as a promotion that finishes while the agent restarts would
be. The agent must notice and stop this leaseless primary within seconds.

A standalone agent with ``agent.auth_token`` refuses calls without the token,
and refuses /promote and a start as primary without a valid lease.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml

from tests.helpers import poll
from tests.integration.conftest import BASE_PORT, Harness


def test_promotion_behind_a_restarted_agent_is_fenced(cluster: Harness) -> None:
    leader = cluster.leader().name
    rogue = next(n for n in cluster.c.node_names() if n != leader)
    cluster.wait_streaming_replica(rogue)
    for part in ("controller", "agent"):
        proc = cluster.c.table.get(f"{rogue}-{part}")
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)
    time.sleep(0.5)
    assert cluster.c.postmaster_pid(rogue) is not None, "postgres must outlive its agent"
    config = cluster.c.layout.node_dir(rogue) / "node.yaml"
    cluster.c.table.start(
        f"{rogue}-agent", [sys.executable, "-m", "postgres_ras", "agent", "--config", str(config)]
    )
    cluster.wait_for(
        "the restarted agent to answer",
        lambda: (
            requests.get(
                f"http://127.0.0.1:{cluster.c.layout.node(int(rogue[4:])).agent}/status", timeout=1
            ).ok
        ),
        timeout=20,
    )
    cluster.sql(rogue, "SELECT pg_promote(true, 30)")
    promoted = time.monotonic()
    assert cluster.is_writable(rogue)
    took = cluster.wait_for(
        f"the agent to fence {rogue}", lambda: not cluster.is_writable(rogue), timeout=15
    )
    print(f"{rogue} promoted behind its agent's back: fenced {time.monotonic() - promoted:.2f}s")
    assert took < 5.0
    # Not writable is seen as soon as the shutdown begins; the postmaster exits just after.
    cluster.wait_for(
        f"{rogue}'s postmaster to exit", lambda: cluster.c.postmaster_pid(rogue) is None, timeout=10
    )
    assert cluster.writable_nodes() == [leader]


def test_agent_api_token_and_lease(tmp_path: Path) -> None:
    port = BASE_PORT + 385
    data = tmp_path / "data"
    config = {
        "name": "solo",
        "data_dir": str(data),
        "agent": {"listen": "127.0.0.1", "port": port, "auth_token": "s3cret-agent-token"},
        "postgres": {"port": BASE_PORT + 386},
    }
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    with (tmp_path / "agent.log").open("wb") as log:
        agent = subprocess.Popen(
            [sys.executable, "-m", "postgres_ras", "agent", "--config", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    good = {"Authorization": "Bearer s3cret-agent-token"}
    try:
        poll(
            "the agent to start (any answer on /status)",
            lambda: requests.get(url + "/status", timeout=1).status_code > 0,
            20,
            retry_on=(requests.RequestException,),
        )
        assert requests.get(url + "/status", timeout=2).status_code == 401
        bad = {"Authorization": "Bearer nope"}
        assert requests.post(url + "/stop", json={}, headers=bad, timeout=2).status_code == 401
        assert requests.get(url + "/status", headers=good, timeout=2).status_code == 200
        resp = requests.post(url + "/promote", headers=good, timeout=2)
        assert resp.status_code == 409 and "no valid leader lease" in resp.json()["error"]
        resp = requests.post(url + "/start", json={"role": "primary"}, headers=good, timeout=2)
        assert resp.status_code == 409 and "no valid leader lease" in resp.json()["error"]
        lease = {"lease": 600}
        assert requests.post(url + "/heartbeat", json=lease, headers=good, timeout=2).ok
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=20)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(timeout=10)
