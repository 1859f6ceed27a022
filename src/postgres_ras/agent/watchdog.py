"""The Linux watchdog device: a hung agent cannot leave a writable primary running.

The agent's fence stops a primary whose lease has run out, but only while the agent
itself runs. Where ``/dev/watchdog`` exists (a hardware timer, or the ``softdog``
module), the agent arms it before postgres becomes a primary and pets it from the
fence loop: if the agent hangs or the fence cannot stop postgres, the kernel resets
the node before a replica can be promoted (the timeout is ``ttl - safety_margin``).
When postgres stops being a primary the device is disarmed (magic close, "V").

Modes, as in Patroni: ``off`` (the default); ``automatic`` (use the device when it can
be armed, else run without it and say so once); ``required`` (a node that cannot arm
it does not lead: the agent refuses to promote or start a primary, and the controller
does not race).

Guarantees: the device is only opened when a primary is about to run or runs (opening
starts the timer); an arming failure names the device and the cause. Not guaranteed:
a device built with ``nowayout`` keeps counting after the magic close and resets the
node unless it is petted; a device whose timeout cannot be lowered keeps its own.
"""

from __future__ import annotations

import array
import errno
import fcntl
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from postgres_ras.config import WatchdogSettings
from postgres_ras.errors import PgrasError

log = logging.getLogger(__name__)

# <linux/watchdog.h>: _IOWR('W', 6, int) and _IOR('W', 7, int).
WDIOC_SETTIMEOUT = 0xC0045706
WDIOC_GETTIMEOUT = 0x80045707

Ioctl = Callable[[int, int, Any, bool], Any]


class WatchdogError(PgrasError):
    """The watchdog is required but cannot be armed."""


class Watchdog:
    def __init__(self, settings: WatchdogSettings, ttl: float, ioctl: Ioctl = fcntl.ioctl):
        self.mode = settings.mode
        self.device = Path(settings.device)
        # Whole seconds (the device counts in seconds), at least 1, and short of the ttl
        # after which a replica may take the leader key.
        self.timeout = max(1, int(ttl - settings.safety_margin))
        self._ioctl = ioctl
        self._fd: int | None = None
        # The fence loop pets while API threads arm and shutdown disarms: never write to
        # a descriptor another thread has just closed (its number may be reused).
        self._lock = threading.Lock()
        self.error: str | None = None  # why the last arming failed

    @property
    def armed(self) -> bool:
        return self._fd is not None

    def blocked(self) -> str | None:
        """Why this node must not lead, or None: only in ``required`` mode, before arming."""
        if self.mode != "required" or self.armed:
            return None
        if not self.device.exists():
            return f"watchdog required but {self.device} does not exist"
        if not os.access(self.device, os.W_OK):
            return f"watchdog required but {self.device} is not writable by uid {os.getuid()}"
        if self.error is not None:
            return f"watchdog required but {self.error}"
        return None

    def arm(self) -> None:
        """Open and arm the device unless off or armed. Raises WatchdogError in ``required``
        mode when it cannot; in ``automatic`` mode logs the cause once and goes on."""
        with self._lock:
            if self.mode == "off" or self.armed:
                return
            try:
                self._fd = self._open()
                self.error = None
            except WatchdogError as exc:
                if self.mode == "required":
                    self.error = str(exc)
                    raise
                if self.error != str(exc):
                    log.warning("watchdog not used (mode automatic): %s", exc)
                self.error = str(exc)

    def _open(self) -> int:
        try:
            fd = os.open(self.device, os.O_WRONLY)
        except OSError as exc:
            raise WatchdogError(f"cannot open {self.device}: {exc.strerror}") from None
        timeout = self._set_timeout(fd)
        if timeout is None or timeout > self.timeout:
            shown = "unknown" if timeout is None else f"{timeout}s"
            message = (
                f"{self.device} keeps a timeout of {shown}, longer than the "
                f"{self.timeout}s the leader lease allows (ttl - safety_margin)"
            )
            if self.mode == "required":
                self._close(fd)
                raise WatchdogError(message)
            log.warning("watchdog armed anyway: %s", message)
        log.info(
            "watchdog %s armed: the node resets unless the agent pets it every %ss",
            self.device,
            timeout if timeout is not None else "?",
        )
        return fd

    def _set_timeout(self, fd: int) -> int | None:
        """The timeout the device runs with after asking for ours; None when unknown."""
        buf = array.array("i", [self.timeout])
        try:
            self._ioctl(fd, WDIOC_SETTIMEOUT, buf, True)
            return int(buf[0])
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOTTY, errno.EOPNOTSUPP):
                raise WatchdogError(f"cannot set the timeout of {self.device}: {exc}") from None
        try:
            self._ioctl(fd, WDIOC_GETTIMEOUT, buf, True)
            return int(buf[0])
        except OSError:
            return None

    def pet(self) -> None:
        with self._lock:
            if self._fd is None:
                return
            try:
                os.write(self._fd, b"1")
            except OSError as exc:
                log.error("watchdog %s: petting failed: %s", self.device, exc.strerror)

    def disarm(self) -> None:
        """Magic close: the device stops counting (unless built with nowayout)."""
        with self._lock:
            if self._fd is None:
                return
            fd, self._fd = self._fd, None
            self._close(fd)
        log.info("watchdog %s disarmed: postgres no longer runs as a primary", self.device)

    def _close(self, fd: int) -> None:
        try:
            os.write(fd, b"V")
        except OSError as exc:
            log.error("watchdog %s: magic close failed: %s", self.device, exc.strerror)
        finally:
            os.close(fd)

    def status(self) -> dict[str, Any]:
        return {"mode": self.mode, "armed": self.armed, "blocked": self.blocked()}
