"""Printing results: one implementation's summary, and two side by side with ratios."""

from __future__ import annotations

import statistics
from typing import Any

from results import Results, same_machine

# (label, measurement kind, figure)
METRICS = (
    ("failover outage", "failover", "outage"),
    ("rejoin", "failover", "rejoin"),
    ("rejoin (lax)", "failover", "rejoin_lax"),
    ("switchover outage", "switchover", "outage"),
)


def _stats(res: Results, kind: str, key: str) -> tuple[float, float, float] | None:
    values = [r[key] for r in res.runs.get(kind, [])]
    if not values:
        return None
    return min(values), statistics.median(values), max(values)


def _lost(res: Results, kind: str) -> int:
    return sum(int(r["lost"]) for r in res.runs.get(kind, []))


def _settings(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in settings.items())


def title(res: Results) -> str:
    runs = max((len(v) for v in res.runs.values()), default=0)
    return (
        f"{res.implementation}, {res.scenario.describe()}, runs: {runs} of each; "
        f"settings: {_settings(res.settings)}; measured {res.date} on {res.machine.get('host')} "
        f"(load average at start {res.machine.get('loadavg_at_start')})"
    )


def print_summary(res: Results) -> None:
    print(title(res))
    for label, kind, key in METRICS:
        s = _stats(res, kind, key)
        if s is not None:
            print(f"{label:<20} min {s[0]:6.2f}s  median {s[1]:6.2f}s  max {s[2]:6.2f}s")
    print(
        f"{'lost writes':<20} failover {_lost(res, 'failover')} total, "
        f"switchover {_lost(res, 'switchover')} total"
    )


def print_side_by_side(reference: Results, ours: Results) -> None:
    """Both summaries' figures in one table; ratio ours/reference of the medians."""
    differs = same_machine(reference.machine, ours.machine)
    if differs:
        print(f"note: the reference was measured on another machine ({'; '.join(differs)})")
    if reference.scenario != ours.scenario:
        print(
            f"note: different scenarios: {reference.scenario.describe()} "
            f"vs {ours.scenario.describe()}"
        )
    ref, us = reference.implementation, ours.implementation
    print(f"ratio = {us} median / {ref} median")
    w = max(28, len(ref) + 15, len(us) + 15)  # a longer name ("... tuned") widens its column
    print(f"{'':<20} {ref + ' min/median/max':>{w}}  {us + ' min/median/max':>{w}}  ratio")
    for label, kind, key in METRICS:
        r, o = _stats(reference, kind, key), _stats(ours, kind, key)
        if r is None or o is None:
            continue
        ratio = f"{o[1] / r[1]:.2f}x" if r[1] > 0 else "n/a"
        print(f"{label:<20} {_triple(r):>{w}}  {_triple(o):>{w}}  {ratio}")
    for kind in ("failover", "switchover"):
        lost = f"{_lost(reference, kind):>{w}}  {_lost(ours, kind):>{w}}"
        print(f"{'lost (' + kind + ')':<20} {lost}")


def _triple(s: tuple[float, float, float]) -> str:
    return f"{s[0]:6.2f} /{s[1]:6.2f} /{s[2]:6.2f}s"
