"""The watchdog (issue 9.9): arming, petting, magic close, and what the agent and the
decision do when it is required but cannot be armed.

There is no watchdog device on the build machines (no /dev/watchdog, no softdog), so
the device is a regular file here: writes land in it, and the timeout ioctls either
fail as the kernel fails them on a regular file (ENOTTY) or are replaced by a fake
that answers as a driver would.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any

import pytest
from tests.unit.test_ha_agent_fence import Clock, FakePostgres

from postgres_ras.agent.node import Agent, NoLease
from postgres_ras.agent.watchdog import WDIOC_GETTIMEOUT, WDIOC_SETTIMEOUT, Watchdog, WatchdogError
from postgres_ras.config import NodeConfig, WatchdogSettings
from postgres_ras.controller.state import NodeView


class Driver:
    """Answers the timeout ioctls as a driver would: ``settable`` or stuck at ``fixed``."""

    def __init__(self, settable: bool = True, fixed: int | None = 60) -> None:
        self.settable = settable
        self.fixed = fixed
        self.calls: list[int] = []

    def __call__(self, fd: int, request: int, buf: Any, mutate: bool) -> int:
        self.calls.append(request)
        if request == WDIOC_SETTIMEOUT and self.settable:
            return 0  # buf keeps the requested value: the driver took it
        if request == WDIOC_GETTIMEOUT and self.fixed is not None:
            buf[0] = self.fixed
            return 0
        raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")


def device(tmp_path: Path) -> Path:
    path = tmp_path / "watchdog"
    path.write_bytes(b"")
    return path


def dog(path: Path, mode: str, ttl: float = 4.0, **kw: Any) -> Watchdog:
    return Watchdog(WatchdogSettings(mode=mode, device=path), ttl, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("ttl", "margin", "timeout"), [(4, 1, 3), (30, 5, 25), (2, 5, 1)])
def test_timeout_is_short_of_the_ttl_in_whole_seconds(
    ttl: float, margin: float, timeout: int
) -> None:
    settings = WatchdogSettings(mode="automatic", safety_margin=margin)
    assert Watchdog(settings, ttl).timeout == timeout


def test_armed_device_is_petted_then_closed_with_the_magic_character(tmp_path: Path) -> None:
    path, driver = device(tmp_path), Driver()
    wd = dog(path, "required", ioctl=driver)
    assert wd.blocked() is None
    wd.arm()
    assert wd.armed and driver.calls == [WDIOC_SETTIMEOUT]
    wd.pet()
    wd.pet()
    wd.disarm()
    wd.pet()  # after the close: nothing written
    assert path.read_bytes() == b"11V"
    assert not wd.armed


def test_off_never_opens_the_device(tmp_path: Path) -> None:
    wd = dog(tmp_path / "absent", "off")
    wd.arm()
    wd.pet()
    assert not wd.armed and wd.blocked() is None


def test_required_missing_device_blocks_and_refuses(tmp_path: Path) -> None:
    wd = dog(tmp_path / "absent", "required")
    assert wd.blocked() == f"watchdog required but {tmp_path / 'absent'} does not exist"
    with pytest.raises(WatchdogError, match=r"cannot open .*absent: No such file"):
        wd.arm()
    assert not wd.armed


def test_automatic_missing_device_runs_without_it_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wd = dog(tmp_path / "absent", "automatic")
    with caplog.at_level(logging.WARNING):
        wd.arm()
        wd.arm()
    assert not wd.armed and wd.blocked() is None
    warnings = [r for r in caplog.records if "watchdog not used" in r.getMessage()]
    assert len(warnings) == 1


def test_required_refuses_a_device_stuck_at_a_longer_timeout(tmp_path: Path) -> None:
    path = device(tmp_path)
    wd = dog(path, "required", ioctl=Driver(settable=False, fixed=60))
    with pytest.raises(WatchdogError, match="keeps a timeout of 60s, longer than the 3s"):
        wd.arm()
    assert path.read_bytes() == b"V"  # opened (which starts the timer), so closed properly
    assert "longer than the 3s" in (wd.blocked() or "")


def test_automatic_keeps_a_device_stuck_at_a_longer_timeout(tmp_path: Path) -> None:
    wd = dog(device(tmp_path), "automatic", ioctl=Driver(settable=False, fixed=60))
    wd.arm()
    assert wd.armed


def test_a_regular_file_has_no_timeout_to_set(tmp_path: Path) -> None:
    """The real ioctl on a regular file: ENOTTY for both; the timeout is unknown."""
    with pytest.raises(WatchdogError, match="keeps a timeout of unknown"):
        dog(device(tmp_path), "required").arm()


def test_unexpected_ioctl_error_is_named(tmp_path: Path) -> None:
    def broken(fd: int, request: int, buf: Any, mutate: bool) -> int:
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(WatchdogError, match=r"cannot set the timeout .*Input/output error"):
        dog(device(tmp_path), "required", ioctl=broken).arm()


# --- the agent ---------------------------------------------------------------------------
def agent(tmp_path: Path, mode: str, pg: FakePostgres, clock: Clock, present: bool = True) -> Agent:
    path = device(tmp_path) if present else tmp_path / "absent"
    config = NodeConfig.model_validate(
        {"name": "n1", "data_dir": "/nonexistent", "watchdog": {"mode": mode, "device": path}}
    )
    wd = Watchdog(config.watchdog, config.ha.ttl, ioctl=Driver())
    return Agent(config, pg, clock, watchdog=wd)  # type: ignore[arg-type]


@pytest.mark.parametrize("action", ["promote", "start_primary"])
def test_agent_refuses_a_primary_when_the_required_watchdog_cannot_be_armed(
    tmp_path: Path, action: str
) -> None:
    clock, pg = Clock(), FakePostgres(running=False)
    a = agent(tmp_path, "required", pg, clock, present=False)
    a.heartbeat(2.0)
    with pytest.raises(NoLease, match="the watchdog is required but cannot open"):
        getattr(a, action)()
    assert a.watchdog.status() == {
        "mode": "required",
        "armed": False,
        "blocked": f"watchdog required but {tmp_path / 'absent'} does not exist",
    }


def test_fence_loop_pets_a_primary_under_its_lease_and_disarms_when_fenced(
    tmp_path: Path,
) -> None:
    clock, pg = Clock(), FakePostgres(in_recovery=False)  # adopted: a running primary
    a = agent(tmp_path, "automatic", pg, clock)
    a.heartbeat(2.0)
    assert a.fence_once() is None
    assert a.fence_once() is None
    assert a.watchdog.armed  # adopted primaries get it too, once a lease is seen
    clock.now += 2.1  # the controller goes silent: fenced, and the device closed
    assert a.fence_once() is not None
    assert not a.watchdog.armed
    assert (tmp_path / "watchdog").read_bytes() == b"11V"


def test_fence_does_not_pet_when_the_stop_fails(tmp_path: Path) -> None:
    """A primary that must stop but cannot: the watchdog is left to reset the node."""

    class Stuck(FakePostgres):
        def stop(self, mode: str, timeout: float = 60) -> bool:
            raise OSError("stop hung")

    clock, pg = Clock(), Stuck(in_recovery=False)
    a = agent(tmp_path, "required", pg, clock)
    a.heartbeat(2.0)
    a.fence_once()
    written = (tmp_path / "watchdog").read_bytes()
    clock.now += 2.1
    for _ in range(3):
        assert a.fence_once() is None  # the stop failed
    assert a.watchdog.armed
    assert (tmp_path / "watchdog").read_bytes() == written


def test_required_watchdog_lost_on_a_running_primary_fences_it(tmp_path: Path) -> None:
    clock, pg = Clock(), FakePostgres(in_recovery=False)
    a = agent(tmp_path, "required", pg, clock, present=False)
    a.heartbeat(2.0)
    assert a.fence_once() is None  # the attempt to arm fails and is remembered
    reason = a.fence_once()
    assert reason is not None and reason.startswith("the watchdog is required but cannot open")
    assert pg.stops == 1


def test_controller_reads_the_blocked_reason_from_the_agent_status() -> None:
    base = {"running": True, "role": "replica", "has_data": True}
    blocked = {"mode": "required", "armed": False, "blocked": "watchdog required but x"}
    assert NodeView.from_status(base | {"watchdog": blocked}).watchdog_blocked == (
        "watchdog required but x"
    )
    assert NodeView.from_status(base).watchdog_blocked is None
    assert NodeView.from_status(base | {"watchdog": "nonsense"}).watchdog_blocked is None
