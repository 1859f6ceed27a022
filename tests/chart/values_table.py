"""The chart README's values table, generated from values.yaml's `# --` comments.

``python3 -m tests.chart.values_table --write`` rewrites the table in
charts/postgres-ras/README.md; tests/chart/test_values.py fails while the README's
table differs from what this prints.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "postgres-ras"
README = CHART / "README.md"
KEY_RE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][A-Za-z0-9_-]*):(?P<rest>.*)$")
HEADER = "| value | default | description |\n|---|---|---|\n"


def documented(text: str) -> list[tuple[str, str]]:
    """(dotted path, first `# --` line) for every documented value, in file order."""
    lines = text.splitlines()
    stack: list[tuple[int, str]] = []
    out = []
    for i, line in enumerate(lines):
        m = KEY_RE.match(line)
        if not m:
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#"):
            if lines[j].strip().startswith("# --"):
                path = ".".join([k for _, k in stack] + [m["key"]])
                out.append((path, lines[j].strip()[4:].strip()))
                break
            j -= 1
        stack.append((indent, m["key"]))
    return out


def table(values_text: str) -> str:
    values = yaml.safe_load(values_text)
    rows = []
    for path, doc in documented(values_text):
        node: Any = values
        for part in path.split("."):
            node = node[part]
        default = f'"{node}"' if isinstance(node, str) else json.dumps(node)
        cells = [f"`{path}`", f"`{default}`", doc]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |\n")
    return HEADER + "".join(rows)


def readme_table(readme: str) -> str:
    start = readme.index(HEADER)
    end = readme.index("\n\n", start)
    return readme[start : end + 1]


def main() -> int:
    want = table((CHART / "values.yaml").read_text())
    readme = README.read_text()
    have = readme_table(readme)
    if "--write" in sys.argv[1:]:
        README.write_text(readme.replace(have, want))
        return 0
    sys.stdout.write(want)
    return 0


if __name__ == "__main__":
    sys.exit(main())
