"""scripts/e2e-kind.sh where kind cannot run: it stops at once, exits 0 and names
what is missing (CI machines have no kind and no registry)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.helpers import ROOT


def test_e2e_stops_at_once_naming_what_is_missing(tmp_path: Path) -> None:
    # A PATH with only what the script needs to start: no kind, kubectl or docker.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "timeout"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    start = time.monotonic()
    proc = subprocess.run(
        [str(bin_dir / "bash"), str(ROOT / "scripts" / "e2e-kind.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": str(bin_dir)},
        check=False,
    )
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert took < 10, f"took {took:.1f}s: it must stop at once"
    assert "SKIPPED, nothing was run" in proc.stderr, proc.stderr
    for tool in ("kind", "kubectl", "docker"):
        assert tool in proc.stderr, f"{tool} not named as missing:\n{proc.stderr}"
