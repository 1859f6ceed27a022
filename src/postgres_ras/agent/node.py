"""The agent's state machine: long actions as background jobs, plus the dead-man fence.

Guarantees:
- at most one action runs at a time; a second request is refused (busy),
  never queued behind a clone;
- while postgres runs as a primary, it stays running only as long as the
  controller heart-beats (``fence_timeout``) and the leader lease the
  controller last reported has not run out. Otherwise the agent stops
  postgres itself: a dead, hung or partitioned controller cannot leave a
  writable primary behind. Whether postgres is a primary is read live
  (``pg_is_in_recovery()``, at least every second), not only remembered,
  so a promotion that finished while the agent restarted is fenced too;
- lease times are on CLOCK_BOOTTIME (it counts through a suspend), a lease
  is capped at ``ttl``, and it never ends later than the deadline the
  controller confirmed, however late the heartbeat is processed;
- promotion and a start as primary are refused without a valid lease, and
  without an armed watchdog when ``watchdog.mode`` is ``required``; the fence
  loop pets an armed watchdog, so a hung agent resets the node (watchdog.py).
Not guaranteed: anything about the cluster; the agent knows only its node.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from postgres_ras.agent.pgconf import Upstream
from postgres_ras.agent.postgres import Postgres
from postgres_ras.agent.watchdog import Watchdog, WatchdogError
from postgres_ras.clock import boottime
from postgres_ras.config import NodeConfig
from postgres_ras.errors import PostgresError
from postgres_ras.lsn import format_lsn

log = logging.getLogger(__name__)


@dataclass
class Job:
    name: str
    started: float
    finished: float | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "running": self.finished is None,
            "error": self.error,
            "seconds": round((self.finished or boottime()) - self.started, 3),
        }


class Busy(Exception):
    pass


class NoLease(Exception):
    """A primary was asked for without a valid leader lease (or a required watchdog)."""


# A replica is checked live for a finished promotion at most this often (seconds).
ROLE_RECHECK = 1.0


class Agent:
    def __init__(
        self,
        config: NodeConfig,
        pg: Postgres,
        clock: Callable[[], float] = boottime,
        watchdog: Watchdog | None = None,
    ):
        self.config = config
        self.pg = pg
        self.clock = clock
        self.watchdog = watchdog or Watchdog(config.watchdog, config.ha.ttl)
        self.lock = threading.RLock()
        self.job: Job | None = None
        self.started_at = clock()
        self.last_heartbeat: float | None = None
        self.lease_deadline: float | None = None
        self.fenced: str | None = None
        self.is_primary = False
        self._role_checked_at = float("-inf")
        self._stop = threading.Event()
        if pg.is_running():
            try:
                self.is_primary = pg.query_state()["role"] == "primary"
            except PostgresError:
                self.is_primary = True  # cannot tell: assume the dangerous case, fence applies
            log.info("adopted running postgres (%s)", "primary" if self.is_primary else "replica")

    # --- jobs -----------------------------------------------------------------
    def busy(self) -> bool:
        return self.job is not None and self.job.finished is None

    def submit(self, name: str, fn: Callable[[], None]) -> Job:
        with self.lock:
            if self.busy():
                assert self.job is not None
                raise Busy(f"{self.job.name} in progress")
            job = Job(name, self.clock())
            self.job = job

        def run() -> None:
            log.info("%s started", name)
            try:
                fn()
                log.info("%s finished in %.2fs", name, self.clock() - job.started)
            except Exception as exc:  # one handler for every job: the error is reported
                job.error = str(exc) or type(exc).__name__
                log.error("%s failed: %s", name, job.error)
            finally:
                job.finished = self.clock()

        threading.Thread(target=run, name=f"job-{name}", daemon=True).start()
        return job

    def run_now(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run a short action synchronously, still excluding concurrent jobs."""
        with self.lock:
            if self.busy():
                assert self.job is not None
                raise Busy(f"{self.job.name} in progress")
            return fn()

    # --- actions --------------------------------------------------------------
    def bootstrap(self) -> Job:
        def work() -> None:
            self.watchdog.arm()
            self.pg.initdb()
            self.pg.write_config(None, standby=False)
            self._start(primary=True)
            self.pg.create_replication_user()

        return self.submit("bootstrap", work)

    def clone(self, upstream: Upstream) -> Job:
        def work() -> None:
            self.pg.basebackup(upstream)
            self.pg.write_config(upstream, standby=True)
            self._start(primary=False)

        return self.submit("clone", work)

    def start_replica(self, upstream: Upstream | None, rewind: bool = False) -> Job:
        """Start (or re-point) a replica; ``rewind`` first stops it and rewinds it to upstream."""

        def work() -> None:
            if rewind and upstream is not None and self.pg.is_running() and not self.is_primary:
                self.pg.checkpoint_source(upstream)  # unreachable leader: keep running as is
                self.pg.stop("fast")
            if self.pg.is_running():
                if self.is_primary:
                    raise PostgresError("postgres runs as a primary: demote it first")
                self.pg.write_config(upstream, standby=True)
                self.pg.reload()
                return
            control = self.pg.controldata()
            if control is None:
                raise PostgresError("no data directory: clone first")
            if upstream is not None and (control.was_primary or rewind):
                # Unreachable: fail the job and retry later, never set the data aside.
                self.pg.checkpoint_source(upstream)
                try:
                    out = self.pg.rewind(upstream)
                    if rewind and "no rewind required" in out:
                        raise PostgresError("nothing to rewind, yet it could not stream")
                    log.info(
                        "rewound to follow %s:%s: %s",
                        upstream.host,
                        upstream.port,
                        out,
                    )
                except PostgresError as exc:
                    moved = self.pg.set_aside()
                    log.warning(
                        "rewind failed (%s); data set aside at %s, cloning afresh", exc, moved
                    )
                    self.pg.basebackup(upstream)
            self.pg.write_config(upstream, standby=True)
            self._start(primary=False)

        return self.submit("rewind" if rewind else "start-replica", work)

    def require_lease(self, what: str) -> None:
        if not self.lease_valid():
            raise NoLease(f"refusing to {what}: the controller holds no valid leader lease")
        try:
            self.watchdog.arm()
        except WatchdogError as exc:
            raise NoLease(f"refusing to {what}: the watchdog is required but {exc}") from None

    def start_primary(self) -> Job:
        self.require_lease("start postgres as primary")

        def work() -> None:
            control = self.pg.controldata()
            if control is not None and not control.was_primary:
                # Standby data (a promotion cut short): starting it without standby.signal
                # would continue the OLD timeline and defeat pg_rewind later. Promote it.
                # Keeps synchronous_standby_names: set by the controller before promoting.
                self.pg.write_config(None, standby=True, clear_sync=False)
                self._start(primary=True)
                self._promote()
                return
            self.pg.write_config(None, standby=False)
            self._start(primary=True)

        return self.submit("start-primary", work)

    def _start(self, primary: bool) -> None:
        self.fenced = None
        self.is_primary = primary
        try:
            self.pg.start()
        except PostgresError:
            # A postmaster still recovering after a start timeout stays under the fence.
            self.is_primary = primary and self.pg.is_running()
            raise

    def _promote(self) -> None:
        self.fenced = None
        self.is_primary = True
        self.pg.promote()
        self.pg.write_config(None, standby=False)
        self.pg.reload()
        log.info("promoted to primary")

    def promote(self, slots: Sequence[str] = ()) -> Job:
        self.require_lease("promote")
        if slots:
            # Before promoting, as a standby: a slot made now reserves WAL from our last
            # restartpoint, older than the last checkpoint the former primary shares with
            # us, so the checkpoint that follows the promotion keeps what its pg_rewind
            # needs. A slot made after would reserve from that checkpoint on. Best effort:
            # without the slots the rejoin may need a re-clone, which is no reason not to
            # promote.
            try:
                created = self.pg.create_slots(slots)
            except PostgresError as exc:
                log.warning("could not create replication slots before promoting: %s", exc)
            else:
                if created:
                    log.info("created replication slots %s before promoting", created)
        # A job: promotion replays the received backlog first, which may take longer
        # than a lease; the controller keeps renewing meanwhile and the fence waits.
        return self.submit("promote", self._promote)

    def stop(self, mode: str, reason: str) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            was_running = self.pg.stop(mode)
            self.is_primary = False
            control = self.pg.controldata()
            log.info("postgres stopped (%s): %s", mode, reason)
            return {
                "was_running": was_running,
                "checkpoint_lsn": format_lsn(control.checkpoint_lsn) if control else None,
                "clean": control.clean if control else None,
            }

        result: dict[str, Any] = self.run_now("stop", work)
        return result

    # --- heartbeat and fence ----------------------------------------------------
    def heartbeat(self, lease: float | None, deadline: float | None = None) -> None:
        """``lease``: seconds left; ``deadline``: when it ends on the shared boot clock.

        The lease never ends later than ``deadline`` (a heartbeat processed late cannot
        stretch it) nor more than ``ttl`` from now.
        """
        now = self.clock()
        self.last_heartbeat = now
        if lease is None:
            self.lease_deadline = None
            return
        until = now + min(lease, self.config.ha.ttl)
        self.lease_deadline = until if deadline is None else min(until, deadline)

    def lease_valid(self) -> bool:
        return self.lease_deadline is not None and self.clock() < self.lease_deadline

    def fence_reason(self) -> str | None:
        """Why a running primary must be stopped now, or None (pure over the agent's state)."""
        now = self.clock()
        silent_since = self.last_heartbeat if self.last_heartbeat is not None else self.started_at
        if now - silent_since > self.config.agent.fence_timeout:
            return f"no heartbeat from the controller for {now - silent_since:.1f}s"
        if self.last_heartbeat is not None and (
            self.lease_deadline is None or now > self.lease_deadline
        ):
            return "the controller holds no valid leader lease"
        wd = self.watchdog
        if wd.mode == "required" and not wd.armed and wd.error is not None:
            return f"the watchdog is required but {wd.error}"
        return None

    def _primary_now(self) -> bool:
        """Whether postgres runs as a primary: remembered, and for a remembered replica read
        live at most every ROLE_RECHECK seconds (a promotion may have finished unseen)."""
        if self.is_primary:
            return True
        now = self.clock()
        if now - self._role_checked_at < ROLE_RECHECK or not self.pg.is_running():
            return False
        self._role_checked_at = now
        try:
            self.is_primary = not self.pg.in_recovery()
        except PostgresError:
            return False  # not accepting connections: starting up, still a standby
        if self.is_primary:
            log.warning("postgres runs as a primary, not as the replica the agent remembered")
        return self.is_primary

    def fence_once(self) -> str | None:
        """Stop postgres if it runs as a primary that must not; returns why it was stopped.

        The watchdog is petted whenever the fence has nothing to do, and not when a stop
        it needs fails: then the device resets the node."""
        if self.busy():
            self.watchdog.pet()  # a job under a lease (promote, start): not a hang
            return None
        reason = self.fence_reason()
        if reason is None or not self._primary_now():
            self._tend_watchdog()
            return None
        try:
            self.pg.stop("fast", timeout=5)
        except (PostgresError, OSError) as exc:
            log.error("fence failed to stop postgres: %s", exc)
            return None
        self.is_primary = False
        self.fenced = reason
        self.watchdog.disarm()
        log.warning("fenced: stopped the primary because %s", reason)
        return reason

    def _tend_watchdog(self) -> None:
        """Armed while postgres runs as a primary under a lease (adopted primaries too)."""
        if not self.is_primary:
            self.watchdog.disarm()
            return
        if self.lease_valid():
            try:
                self.watchdog.arm()
            except WatchdogError:
                pass  # required: status names it; the controller stops leading
        self.watchdog.pet()

    def fence_loop(self, interval: float = 0.1) -> None:
        while not self._stop.wait(interval):
            self.fence_once()

    def close(self) -> None:
        """Stop the fence loop; the watchdog is disarmed, since nothing pets it any more."""
        self._stop.set()
        self.watchdog.disarm()

    # --- status ---------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.config.name,
            "job": self.job.to_json() if self.job else None,
            "fenced": self.fenced,
            "watchdog": self.watchdog.status(),
            "has_data": self.pg.has_data(),
            "running": False,
            "role": "stopped",
            "sysid": None,
            "timeline": None,
            "lsn": None,
            "receive_lsn": None,
            "replay_lsn": None,
            "streaming": False,
            "upstream": None,
            "sender": None,
            "was_primary": None,
            "error": None,
        }
        try:
            control = self.pg.controldata() if out["has_data"] else None
        except PostgresError as exc:
            control = None
            out["error"] = str(exc)
        if control is not None:
            out["sysid"] = control.system_identifier
            out["was_primary"] = control.was_primary
            out["timeline"] = control.timeline
            out["lsn"] = control.checkpoint_lsn
        if self.pg.is_running():
            out["running"] = True
            out["upstream"] = self.pg.configured_upstream
            try:
                state = self.pg.query_state()
                out.update(state)
            except PostgresError as exc:
                out["role"] = "unknown"
                out["error"] = str(exc)
        for key in ("lsn", "receive_lsn", "replay_lsn"):
            if out[key] is not None:
                out[key] = format_lsn(out[key])
        return out
