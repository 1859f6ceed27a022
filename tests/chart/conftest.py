"""Fixtures of the chart tier: helm (obtained by scripts/helm.sh) and rendering helpers.

This tier needs no Kubernetes: it renders charts/postgres-ras with ``helm template``
over the values matrix in ``charts/postgres-ras/ci/*-values.yaml`` and checks the
manifests offline. When no helm can be obtained the tier FAILS with the reason (it
never skips silently): scripts/helm.sh says what to install.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT, helm_binary

CHART = ROOT / "charts" / "postgres-ras"
CI_VALUES = sorted(CHART.glob("ci/*-values.yaml"))
RELEASE = "pg"
NAMESPACE = "db"
# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schema shipped.
KUBE_VERSIONS = ("1.27.0", "1.37.0")

# Counts for the summary line (manifests rendered / validated, values files).
COUNTS = {"rendered": 0, "validated": 0, "values_files": len(CI_VALUES)}


class HelmError(AssertionError):
    """helm exited non-zero; the message carries its stderr."""


@dataclass(frozen=True)
class Helm:
    path: str

    def run(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.path, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise HelmError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def template(
        self,
        values: Iterable[Path] = (),
        sets: Sequence[str] = (),
        set_strings: Sequence[str] = (),
        release: str = RELEASE,
        namespace: str = NAMESPACE,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        args = ["template", release, str(CHART), "--namespace", namespace]
        for v in values:
            args += ["-f", str(v)]
        for s in sets:
            args += ["--set", s]
        for s in set_strings:
            args += ["--set-string", s]
        return self.run(*args, check=check)

    def render(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """The rendered manifests (non-empty YAML documents)."""
        out = self.template(*args, **kwargs).stdout
        docs = [d for d in yaml.safe_load_all(out) if d]
        COUNTS["rendered"] += len(docs)
        return docs


@pytest.fixture(scope="session")
def helm() -> Helm:
    return Helm(helm_binary("the chart tests"))


@pytest.fixture(scope="session")
def default_docs(helm: Helm) -> list[dict[str, Any]]:
    return helm.render()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if COUNTS["validated"]:
        terminalreporter.write_line(
            f"[chart] {COUNTS['values_files']} values files in ci/: "
            f"{COUNTS['validated']} rendered manifests validated strictly against the "
            f"Kubernetes {' and '.join(KUBE_VERSIONS)} schemas "
            f"({COUNTS['rendered']} manifests rendered by the chart tests in all)"
        )
