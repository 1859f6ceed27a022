"""Patroni in its own venv, installed from PyPI once and kept as a cache.

The venv is made with the system python (not the project's .venv), so
Patroni's dependencies never mix with the project's locked packages.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from clusters import BenchmarkError

PATRONI_VERSION = "4.1.5"
DEFAULT_VENV = Path("/var/tmp/pgras-patroni-venv")
CA_FILE = Path("/etc/ssl/certs/ca-certificates.crt")


def _ready(venv: Path) -> bool:
    try:
        out = subprocess.run(
            [str(venv / "bin" / "patroni"), "--version"], capture_output=True, text=True, timeout=60
        )
        probe = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import psycopg2, consul"],
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return PATRONI_VERSION in out.stdout and probe.returncode == 0


def ensure_venv(venv: Path = DEFAULT_VENV) -> Path:
    """Patroni's executable in ``venv``; creates the venv and installs Patroni if needed."""
    if _ready(venv):
        return venv / "bin" / "patroni"
    print(f"installing Patroni {PATRONI_VERSION} into {venv} ...", flush=True)
    env = dict(os.environ)
    if "PIP_CERT" not in env and CA_FILE.exists():  # PyPI behind a proxy with its own CA
        env["PIP_CERT"] = str(CA_FILE)
    pip = [str(venv / "bin" / "pip"), "install", "-q"]
    try:
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run(
            [*pip, f"patroni[consul]=={PATRONI_VERSION}", "psycopg2-binary"],
            check=True,
            timeout=600,
            env=env,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise BenchmarkError(f"installing Patroni into {venv} failed: {exc}") from None
    if not _ready(venv):
        raise BenchmarkError(f"Patroni {PATRONI_VERSION} not usable from {venv} after install")
    return venv / "bin" / "patroni"
