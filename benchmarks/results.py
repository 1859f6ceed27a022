"""Results files: one JSON per implementation and run, with its date, machine and settings.

patroni_reference.py writes ``results/patroni-<UTC time>.json``; failover.py reads
the newest one measured with the same scenario as its reference, and says so,
with its date and machine, or says that there is none. Figures are never
frozen in a script.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clusters import ClusterUnderTest
from measure import Run, Scenario, series

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Results:
    implementation: str  # "Patroni 4.1.5"
    slug: str  # "patroni": the file name's prefix
    settings: dict[str, Any]
    scenario: Scenario
    runs: dict[str, list[Run]]
    date: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    machine: dict[str, Any] = field(default_factory=lambda: machine())
    workload: dict[str, Any] = field(default_factory=dict)  # e.g. pgbench's options

    def save(self, directory: Path = RESULTS_DIR) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        stamp = self.date.replace(":", "").replace("+0000", "Z")
        path = directory / f"{self.slug}-{stamp}.json"
        n = 1
        while path.exists():  # two results of one slug in the same second: keep both
            n += 1
            path = directory / f"{self.slug}-{stamp}-{n}.json"
        data = asdict(self)
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> Results:
        data = json.loads(path.read_text())
        data["scenario"] = Scenario(**data["scenario"])
        return cls(**data)


def newest(slug: str, scenario: Scenario, directory: Path = RESULTS_DIR) -> Path | None:
    """The newest results file of ``slug`` measured with ``scenario``, or None."""
    found: list[tuple[str, Path]] = []
    for path in directory.glob(f"{slug}-*.json"):
        try:
            res = Results.load(path)
        except (OSError, ValueError, TypeError, KeyError):
            continue
        if res.scenario == scenario:
            found.append((res.date, path))
    return max(found)[1] if found else None


def machine() -> dict[str, Any]:
    """What makes figures comparable: host, CPUs, memory, load, PostgreSQL and Consul."""
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "postgresql": _version(["/usr/lib/postgresql/15/bin/postgres", "--version"]),
        "consul": _version(["consul", "version"]),
        "python": platform.python_version(),
    }


def same_machine(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The comparable facts that differ between two machines (empty when none)."""
    keys = ("host", "cpus", "memory_gib", "postgresql", "consul")
    return [f"{k} {a.get(k)} vs {b.get(k)}" for k in keys if a.get(k) != b.get(k)]


def _memory_gib() -> float | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    m = re.search(r"MemTotal:\s+(\d+) kB", text)
    return round(int(m.group(1)) / 2**20, 1) if m else None


def _version(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.splitlines()[0].strip() if out.stdout else None


def record(cluster: ClusterUnderTest, scenario: Scenario, runs: int) -> Results:
    """Measure ``runs`` of each kind on ``cluster`` (started and stopped here) and record them
    with the date and machine (load average) taken at the start."""
    date = datetime.now(UTC).isoformat(timespec="seconds")
    host = machine()
    figures = series(cluster, scenario, runs)
    return Results(cluster.name, cluster.slug, cluster.settings(), scenario, figures, date, host)
