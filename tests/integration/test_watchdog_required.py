"""Issue 9.9: a node whose watchdog is required but cannot be armed never leads.

There is no watchdog device on these machines, which is the case under test: the
replica that would win the race (same position, lowest name) is restarted with
``watchdog.mode: required`` and a device that does not exist (through the
environment, as a pod's env would set it). The primary is then SIGKILLed: the
other replica must be promoted, and the blocked one must say why it did not race.
"""

from __future__ import annotations

import signal

import pytest

from tests.helpers import poll
from tests.integration.conftest import Harness

DEVICE = "/nonexistent/watchdog"


def test_a_node_that_cannot_arm_a_required_watchdog_never_leads(
    cluster: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = cluster
    old = h.leader().name
    blocked, other = sorted(n for n in h.c.node_names() if n != old)
    h.c.stop_node(blocked)
    monkeypatch.setenv("PGRAS_WATCHDOG__MODE", "required")
    monkeypatch.setenv("PGRAS_WATCHDOG__DEVICE", DEVICE)
    h.c.up(access=False, wait=60)  # starts only the stopped node, with this environment
    monkeypatch.delenv("PGRAS_WATCHDOG__MODE")
    monkeypatch.delenv("PGRAS_WATCHDOG__DEVICE")
    h.wait_streaming_replica(blocked)
    poll(f"{other} streaming", lambda: h.c.is_healthy(3), 30)

    h.c.kill(old, signal.SIGKILL)
    new = h.wait_new_leader(old, timeout=30)
    said = f"not racing: watchdog required but {DEVICE} does not exist"
    log = h.wait_log(f"{blocked}-controller", said)
    line = next(line for line in log.splitlines() if said in line)
    print(f"\n{old} killed; {new} promoted; {blocked} logged: {line[-160:]}")
    assert new == other, f"{new} was promoted although its watchdog cannot be armed"
    assert h.writable_nodes() == [other]
