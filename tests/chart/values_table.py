"""The chart README's values table, generated from values.yaml's `# --` comments.

``python3 -m tests.chart.values_table --write`` rewrites the table in
charts/postgres-ras/README.md; tests/chart/test_values.py fails while the README's
table differs from what this prints.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "postgres-ras"
README = CHART / "README.md"
KEY_RE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][A-Za-z0-9_-]*):(?P<rest>.*)$")
HEADER = "| value | default | description |\n|---|---|---|\n"


@dataclass(frozen=True)
class Key:
    """One ``key:`` line of values.yaml, as helm-docs reads it."""

    number: int  # 1-based line number
    line: str  # the line, stripped
    indent: int
    path: str  # dotted, e.g. ``storage.size``
    doc: str | None  # the nearest `# --` line in the comments right above, without `# --`
    is_parent: bool  # its value is the more indented block below it
    parent: Key | None  # the enclosing key

    @property
    def documented(self) -> bool:
        """A `# --` comment above this key or above an enclosing one."""
        return self.doc is not None or (self.parent is not None and self.parent.documented)


def keys(text: str) -> list[Key]:
    """Every key of values.yaml ``text``, in file order: the one parser of its comments."""
    lines = text.splitlines()
    stack: list[Key] = []
    out = []
    for i, line in enumerate(lines):
        m = KEY_RE.match(line)
        if not m:
            continue
        indent = len(m["indent"])
        while stack and stack[-1].indent >= indent:
            stack.pop()
        doc = None
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#"):
            if lines[j].strip().startswith("# --"):
                doc = lines[j].strip()[4:].strip()
                break
            j -= 1
        nxt = next(
            (ln for ln in lines[i + 1 :] if ln.strip() and not ln.strip().startswith("#")), ""
        )
        parent = stack[-1] if stack else None
        key = Key(
            number=i + 1,
            line=line.strip(),
            indent=indent,
            path=f"{parent.path}.{m['key']}" if parent else m["key"],
            doc=doc,
            is_parent=not m["rest"].strip() and len(nxt) - len(nxt.lstrip()) > indent,
            parent=parent,
        )
        out.append(key)
        stack.append(key)
    return out


def documented(text: str) -> list[tuple[str, str]]:
    """(dotted path, first `# --` line) for every documented value, in file order."""
    return [(k.path, k.doc) for k in keys(text) if k.doc is not None]


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
