"""``pgras verify``: workload + faults + catch-up + checker + report, against a target:
the cluster of ``pgras up`` (``target.LocalTarget``) or database pods running as Docker
containers (``docker_target.DockerTarget``).

Order: wait for full strength; (``--synchronous``) switch the cluster's
dynamic ``config`` to ``synchronous_mode`` and wait until the controller
names a synchronous standby, or report that it does not; recreate the
tables; start writers, readers and probes; for each run, each fault: inject,
wait for full strength, settle; keep the load up to ``--duration``; stop the
workload; wait until every replica replayed the primary's last WAL; read
every member's rows; check; report; restore the config as it was.

Exit status: 0 when every promise held, 1 when one broke (lost writes in
synchronous mode or past the asynchronous bound, duplicates, split brain,
replica divergence, a fault not recovered), 3 when synchronous mode was
asked for and the controller does not provide it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from postgres_ras.dcs.consul import client as consul_client
from postgres_ras.dcs.consul import cluster_prefix
from postgres_ras.errors import DCSError, FatalError, PgrasError
from postgres_ras.lsn import parse_lsn
from postgres_ras.verify import checker, partition, report
from postgres_ras.verify.events import FinalState, Recording, recording_to_json
from postgres_ras.verify.faults import (
    FAULTS,
    NEEDS_CONSUL_QUORUM,
    REPEAT_DEFAULT,
    run_fault,
    wait_full_strength,
)
from postgres_ras.verify.target import Target
from postgres_ras.verify.workload import TABLE, Workload, prepare

log = logging.getLogger(__name__)

EXIT_OK, EXIT_BROKEN, EXIT_NO_SYNC = 0, 1, 3
DEFAULT_MAX_LAG = 1024 * 1024
DEFAULT_TTL = 4.0


class SynchronousUnavailable(PgrasError):
    """The controller did not take up ``synchronous_mode`` (refused or not implemented)."""


@dataclass(frozen=True)
class Options:
    faults: tuple[tuple[str, str], ...]  # (fault, label)
    runs: int = 1
    duration: float = 0.0
    synchronous: bool = False
    settle: float = 3.0
    writers: int = 3
    pgpool_writers: int = 1
    readers: int = 1
    rate: float = 50.0
    fault_timeout: float = 90.0
    sync_timeout: float = 20.0
    as_json: bool = False
    plot: Path | None = None
    events: Path | None = None


def parse_faults(
    text: str, supported: tuple[str, ...] | None = None
) -> tuple[tuple[str, str], ...]:
    """``kill-primary,repeat:3`` -> (fault, label) pairs; ``repeat[:N]`` is N kill-primary.
    ``supported``: the faults of a target other than the local cluster (None: the local
    cluster's, where partition-primary needs what ``partition.unavailable`` checks)."""
    known = FAULTS if supported is None else (*supported, "repeat")
    out: list[tuple[str, str]] = []
    for raw in (t.strip() for t in text.split(",")):
        if not raw:
            continue
        name, _, count = raw.partition(":")
        if supported is None and name == "partition-primary" and partition.unavailable():
            raise FatalError(f"fault {name} is not available here: {partition.unavailable()}")
        if name not in known:
            where = "" if supported is None else " on this target"
            raise FatalError(f"unknown fault {name!r}{where}; choose from {', '.join(known)}")
        if name == "repeat":
            n = int(count) if count.isdigit() and int(count) > 0 else REPEAT_DEFAULT
            out += [("kill-primary", f"repeat {k}/{n}") for k in range(1, n + 1)]
        elif count:
            raise FatalError(f"only repeat takes a count (repeat:N), not {raw!r}")
        else:
            out.append((name, name))
    return tuple(out)


def check_consul_servers(cluster: Any, faults: tuple[tuple[str, str], ...]) -> None:
    """Refuse, before anything starts, a fault the cluster's Consul servers cannot take
    (parse_faults cannot: it runs before the cluster is known)."""
    servers = int(cluster.consul_servers)
    for name in dict.fromkeys(name for name, _ in faults):
        if name in NEEDS_CONSUL_QUORUM and servers < 3:
            raise FatalError(
                f"fault {name} is not available here: {NEEDS_CONSUL_QUORUM[name]} "
                f"(the cluster in {cluster.layout.work_dir} runs {servers} Consul server"
                f"{'s' if servers != 1 else ''})"
            )


# --- the cluster's dynamic config -------------------------------------------------------
class DynamicConfig:
    """The ``config`` (and ``sync``) keys of cluster ``cluster`` in the Consul at ``url``."""

    def __init__(self, url: str, cluster: str) -> None:
        self.url = url
        self.prefix = cluster_prefix(cluster)

    def get(self, key: str) -> tuple[int, str | None]:
        try:
            _, item = consul_client(self.url, timeout=3).kv.get(self.prefix + key)
        except Exception as exc:  # any client failure: Consul unreachable
            raise DCSError(f"Consul at {self.url}: {type(exc).__name__}: {exc}") from None
        if item is None:
            return 0, None
        return int(item["ModifyIndex"]), (item.get("Value") or b"").decode()

    def config(self) -> dict[str, Any]:
        _, raw = self.get("config")
        try:
            loaded = json.loads(raw) if raw else {}
        except ValueError:
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def put_config(self, value: str | None, expect_index: int) -> bool:
        c = consul_client(self.url, timeout=3).kv
        try:
            if value is None:
                return bool(c.delete(self.prefix + "config", cas=expect_index))
            return bool(c.put(self.prefix + "config", value, cas=expect_index))
        except Exception as exc:
            raise DCSError(f"Consul at {self.url}: {type(exc).__name__}: {exc}") from None


def _dynamic_config(target: Target, required: bool) -> DynamicConfig | None:
    dyn = target.dynamic_config()
    if dyn is None and required:
        raise FatalError(
            f"--synchronous needs the Consul of {target.describe()}, which is not known "
            "(a docker target file names it with consul_url and cluster)"
        )
    return dyn


def enable_synchronous(target: Target, dsns: dict[str, str], timeout: float) -> str | None:
    """Set ``synchronous_mode: true`` in the ``config`` key; wait until a standby is named
    in the ``sync`` key and the primary's synchronous_standby_names is set. Returns the
    previous value of the key (to restore). Raises SynchronousUnavailable, with the
    controller's own words when its log has them, after restoring the key: at once when
    a controller logs that it refuses the setting, else after ``timeout``."""
    dyn = _dynamic_config(target, required=True)
    assert dyn is not None
    index, previous = dyn.get("config")
    wanted = {**dyn.config(), "synchronous_mode": True}
    refused = target.sync_refusal_watch()
    if not dyn.put_config(json.dumps(wanted), index):
        raise SynchronousUnavailable("the config key changed while verify wrote it; try again")
    deadline = time.monotonic() + timeout
    refusal = ""
    while time.monotonic() < deadline and not refusal:
        _, sync = dyn.get("sync")
        if sync and _standby_names(target, dsns):
            return previous
        refusal = refused()
        time.sleep(0.5)
    new_index, _ = dyn.get("config")
    dyn.put_config(previous, new_index)
    if refusal:
        raise SynchronousUnavailable(
            f"the controller refuses synchronous_mode; the config key is restored. {refusal}"
        )
    raise SynchronousUnavailable(
        f"synchronous_mode was set in the config key but within {timeout:.0f}s no controller "
        f"named a synchronous standby (no `sync` key, or synchronous_standby_names empty on "
        f"the primary); the config key is restored."
    )


class ControllerLogs:
    """What the controllers log from now on (reads only what was appended since)."""

    REFUSAL_WORDS = ("invalid", "not available", "refus", "not supported", "cannot")

    def __init__(self, log_dir: Path) -> None:
        self.offsets = {p: p.stat().st_size for p in log_dir.glob("*-controller.log")}

    def refusal(self) -> str:
        """The first new line that says synchronous mode is refused, or ''."""
        for path, offset in self.offsets.items():
            try:
                with path.open("rb") as f:
                    f.seek(offset)
                    text = f.read().decode(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                low = line.lower()
                if "synchronous" in low and any(w in low for w in self.REFUSAL_WORDS):
                    return f"{path.stem}: {line.strip()[-300:]}"
        return ""


def _standby_names(target: Target, dsns: dict[str, str]) -> str:
    leader = target.leader()
    if leader is None or leader not in dsns:
        return ""
    try:
        with psycopg.connect(dsns[leader] + " connect_timeout=2", autocommit=True) as c:
            row = c.execute("SHOW synchronous_standby_names").fetchone()
    except psycopg.Error:
        return ""
    return str(row[0]) if row else ""


# --- catch-up and final rows -----------------------------------------------------------
def _one(dsn: str, query: str) -> Any:
    with psycopg.connect(dsn + " connect_timeout=2", autocommit=True) as conn:
        row = conn.execute(query).fetchone()
        return row[0] if row else None


def final_state(
    target: Target, dsns: dict[str, str], timeout: float = 30.0
) -> tuple[FinalState, int]:
    primary = target.leader()
    if primary is None or primary not in dsns:
        return FinalState(None, {}), 0
    target_lsn = parse_lsn(str(_one(dsns[primary], "SELECT pg_current_wal_lsn()")))
    caught: dict[str, bool] = {}
    deadline = time.monotonic() + timeout
    for name, dsn in dsns.items():
        if name == primary:
            continue
        caught[name] = False
        while time.monotonic() < deadline:
            try:
                replayed = _one(dsn, "SELECT pg_last_wal_replay_lsn()")
                if replayed is not None and parse_lsn(str(replayed)) >= target_lsn:
                    caught[name] = True
                    break
            except psycopg.Error:
                pass
            time.sleep(0.2)
    rows: dict[str, dict[int, int]] = {}
    for name, dsn in dsns.items():
        try:
            with psycopg.connect(dsn + " connect_timeout=2", autocommit=True) as conn:
                result = conn.execute(f"SELECT id, count(*) FROM {TABLE} GROUP BY id").fetchall()
            rows[name] = {int(i): int(n) for i, n in result}
        except psycopg.Error as exc:
            log.warning("could not read %s's rows: %s", name, exc)
            caught[name] = False
    return FinalState(primary, rows, caught), target_lsn


# --- the run -----------------------------------------------------------------------------
def verify(
    target: Target, opts: Options, echo: Callable[[str], None], progress: Callable[[str], None]
) -> int:
    """Run the whole verification; ``echo`` gets the report, ``progress`` the running
    commentary (stderr, so that ``--json`` output stays parseable)."""
    target.check_faults(opts.faults)
    ends = target.endpoints()
    dsns = target.dsns()
    dyn = _dynamic_config(target, required=opts.synchronous)
    cfg = dyn.config() if dyn is not None else {}
    ttl = float(cfg.get("ttl") or DEFAULT_TTL)
    max_lag = int(cfg.get("maximum_lag_on_failover") or DEFAULT_MAX_LAG)
    t0 = time.monotonic()

    def clock() -> float:
        return time.monotonic() - t0

    target.start(clock, ttl, opts.fault_timeout)
    if wait_full_strength(target.full_strength, clock, 60) is None:
        raise FatalError(
            "the cluster is not at full strength (see `pgras list`): not starting"
            if target.kind == "local"
            else f"{target.describe()} is not at full strength (one primary, every other "
            "member a streaming replica) within 60s: not starting"
        )
    previous_config: str | None = None
    if opts.synchronous:
        try:
            previous_config = enable_synchronous(target, dsns, opts.sync_timeout)
        except SynchronousUnavailable as exc:
            progress(f"synchronous mode not available: {exc}")
            return EXIT_NO_SYNC
        progress("synchronous mode on: the controller named a synchronous standby")
    try:
        return _run(target, opts, echo, progress, clock, dsns, ends, max_lag)
    finally:
        if opts.synchronous and dyn is not None:
            index, _ = dyn.get("config")
            dyn.put_config(previous_config, index)


def _run(
    target: Target,
    opts: Options,
    echo: Callable[[str], None],
    progress: Callable[[str], None],
    clock: Callable[[], float],
    dsns: dict[str, str],
    ends: dict[str, str],
    max_lag: int,
) -> int:
    prepare(ends["write"])
    start_lsn = parse_lsn(str(_one(ends["write"], "SELECT pg_current_wal_lsn()")))
    writers = {"write": (ends["write"], opts.writers)}
    if opts.pgpool_writers and "pgpool" in ends:
        writers["pgpool"] = (ends["pgpool"], opts.pgpool_writers)
    workload = Workload(
        clock, writers, ends.get("read"), opts.readers, dsns, target.ack_ports(), opts.rate
    )
    workload.start()
    faults = []
    try:
        time.sleep(opts.settle)
        for run in range(1, opts.runs + 1):
            for name, label in opts.faults:
                label = label if opts.runs == 1 else f"{label} #{run}"
                record = run_fault(
                    target, target.inject, clock, opts.fault_timeout, run, name, label
                )
                faults.append(record)
                took = "NOT back" if record.recovered is None else (
                    f"back at full strength after {record.recovered - record.started:.1f}s"
                )  # fmt: skip
                progress(f"{label}: {record.target or '-'}: {took}. {record.note}".rstrip())
                if record.recovered is None:
                    break
                time.sleep(opts.settle)
            if faults and faults[-1].recovered is None:
                break
        while clock() < opts.duration:
            time.sleep(min(1.0, opts.duration - clock()))
    finally:
        end = clock()
        rec = workload.stop()
    final, end_lsn = final_state(target, dsns)
    writes = len(rec.acks) + sum(1 for p in rec.probes if p.outcome.value == "writable")
    per_write = max(1.0, (end_lsn - start_lsn) / writes) if writes and end_lsn else 100.0
    failovers = sum(1 for f in faults if f.leader_after != f.leader_before) + sum(
        1 for f in faults if f.name == "double"
    )
    bound = 0 if opts.synchronous else max(1, failovers) * math.ceil(max_lag / per_write)
    recording = Recording(
        acks=list(rec.acks),
        indeterminate=frozenset(rec.indeterminate),
        probes=list(rec.probes),
        reads=list(rec.reads),
        faults=faults,
        final=final,
        end=end,
        synchronous=opts.synchronous,
        lost_bound=bound,
    )
    if opts.events is not None:
        opts.events.write_text(json.dumps(recording_to_json(recording)))
        progress(f"recording written to {opts.events}")
    findings = checker.check(recording)
    meta = {
        "mode": "synchronous" if opts.synchronous else "asynchronous",
        "target": target.kind,
        "members": len(dsns),
        "runs": opts.runs,
        "duration_s": round(end, 1),
        "final_primary": final.primary,
        "lost_bound": bound,
        "wal_bytes_per_write": round(per_write, 1),
    }
    if opts.plot is not None:
        from postgres_ras.verify.plot import write_png

        write_png(recording, findings, opts.plot)
    if opts.as_json:
        echo(json.dumps(report.to_json(findings, meta), indent=2))
    else:
        echo(report.table(findings, meta))
    if opts.plot is not None:
        progress(f"timeline written to {opts.plot}")
    return EXIT_OK if findings.ok else EXIT_BROKEN
