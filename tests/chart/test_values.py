"""values.yaml and values.schema.json: every value documented and typed; bad values
refused by the schema or by validateValues with a message naming the value (and,
for validateValues, the fix)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart import values_table
from tests.chart.conftest import CHART, Helm

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].removeprefix("#/definitions/")
        node = {**SCHEMA["definitions"][name], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def schema_paths(node: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    node = resolve(node)
    for key, sub in node.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        out[path] = resolve(sub)
        out.update(schema_paths(sub, path))
    return out


def value_paths(node: Any, prefix: str = "") -> list[str]:
    out = []
    if isinstance(node, dict):
        for key, sub in node.items():
            path = f"{prefix}.{key}" if prefix else key
            out.append(path)
            out.extend(value_paths(sub, path))
    return out


def test_every_value_is_typed_in_the_schema() -> None:
    known = schema_paths(SCHEMA)
    # Values inside free-form maps (resources, parameters) are typed by their parent.
    free = ("resources.", "postgresql.parameters.", "storage.createStorageClass.parameters.")
    untyped = [p for p in value_paths(VALUES) if p not in known and not p.startswith(free)]
    assert not untyped, f"values without a schema entry: {untyped}"
    unused = [p for p in known if p.count(".") < 2 and p not in value_paths(VALUES)]
    assert not unused, f"schema entries without a default in values.yaml: {unused}"


def test_every_object_in_the_schema_refuses_unknown_keys() -> None:
    def walk(node: dict[str, Any], where: str) -> list[str]:
        bad = []
        if (
            node.get("type") == "object"
            and "properties" in node
            and node.get("additionalProperties") is not False
        ):
            bad.append(where or "(top)")
        for key, sub in node.get("properties", {}).items():
            bad += walk(sub, f"{where}.{key}")
        for key, sub in node.get("definitions", {}).items():
            bad += walk(sub, f"definitions.{key}")
        return bad

    assert not walk(SCHEMA, ""), "objects allowing unknown keys"


def test_every_value_has_a_doc_comment() -> None:
    """helm-docs style: a `# --` comment above each leaf value (or above its parent)."""
    missing = [
        f"line {k.number}: {k.line}"
        for k in values_table.keys(VALUES_TEXT)
        if not k.is_parent and not k.documented
    ]
    assert not missing, "values without a '# --' comment:\n" + "\n".join(missing)


BAD_VALUES = [
    # (--set or --set-string, the path the message must name, a word of the complaint)
    (["instances=0"], [], "/instances", "minimum"),
    (["network.mode=calico"], [], "/network/mode", "one of"),
    ([], ["storage.size=10"], "/storage/size", "pattern"),
    (["storage.size=10"], [], "/storage/size", "string"),
    (["instnaces=3"], [], "instnaces", "not allowed"),
    (["storage.sise=10Gi"], [], "sise", "not allowed"),
    (["affinity.podAntiAffinity=strict"], [], "/affinity/podAntiAffinity", "one of"),
    (["image.pullPolicy=Sometimes"], [], "/image/pullPolicy", "one of"),
    (["consul.replicas=2"], [], "/consul/replicas", "one of"),
    (["storage.retention.whenScaled=Keep"], [], "/storage/retention/whenScaled", "one of"),
    (["terminationGracePeriodSeconds=3"], [], "/terminationGracePeriodSeconds", "minimum"),
    (["ha.ttl=0"], [], "/ha/ttl", "exclusiveMinimum"),
]


@pytest.mark.parametrize(("sets", "strings", "path", "word"), BAD_VALUES, ids=lambda v: str(v))
def test_schema_refuses_bad_values(
    helm: Helm, sets: list[str], strings: list[str], path: str, word: str
) -> None:
    proc = helm.template(sets=sets, set_strings=strings, check=False)
    assert proc.returncode != 0, f"{sets or strings} was accepted"
    assert path in proc.stderr and word in proc.stderr, (
        f"the message for {sets or strings} must name {path} ({word}):\n{proc.stderr}"
    )


def test_lint_refuses_bad_values_too(helm: Helm, tmp_path: Path) -> None:
    bad = tmp_path / "bad-values.yaml"
    bad.write_text("instances: 0\nnetwork: {mode: calico}\n")
    proc = helm.run("lint", "--strict", str(CHART), "-f", str(bad), check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "/instances" in out and "/network/mode" in out, out


VALIDATE_VALUES = [
    (
        ["ha.retryTimeout=5"],
        "ha.retryTimeout (5) must be below ha.ttl (4)",
        "--set ha.retryTimeout=3",
    ),
    (
        ["ha.fenceTimeout=4"],
        "ha.fenceTimeout (4) must be below ha.ttl (4)",
        "--set ha.fenceTimeout=2",
    ),
    (["ha.loopWait=3"], "ha.loopWait (3) must be below ha.retryTimeout (3)", "--set ha.loopWait=1"),
    (["consul.enabled=false"], "consul.externalAddress is empty", "--set consul.externalAddress="),
    (
        ["consul.externalAddress=http://c:8500"],
        "consul.externalAddress (http://c:8500) is set but consul.enabled is true",
        "--set consul.enabled=false",
    ),
    (["network.mode=multus"], "network.multus.networks is empty", "--set network.multus.networks="),
    (
        ["storage.mirrorCount=2"],
        "storage.mirrorCount (2) only takes effect",
        "--set storage.createStorageClass.enabled=true",
    ),
    (
        ["storage.createStorageClass.enabled=true", "storage.createStorageClass.provisioner=x"],
        "needs the class's name",
        "--set storage.storageClass=",
    ),
    (["pdb.maxUnavailable=3"], "pdb.maxUnavailable (3)", "--set pdb.maxUnavailable=1"),
]


@pytest.mark.parametrize(("sets", "message", "fix"), VALIDATE_VALUES, ids=lambda v: str(v))
def test_validate_values_names_the_value_and_the_fix(
    helm: Helm, sets: list[str], message: str, fix: str
) -> None:
    proc = helm.template(sets=sets, check=False)
    assert proc.returncode != 0, f"{sets} was accepted"
    assert message in proc.stderr, f"expected {message!r} for {sets}:\n{proc.stderr}"
    assert fix in proc.stderr, f"expected the fix {fix!r} for {sets}:\n{proc.stderr}"


def test_diamanti_example_in_the_readme_renders(helm: Helm, tmp_path: Path) -> None:
    """The chart README's Diamanti values block is valid as written."""
    readme = (CHART / "README.md").read_text()
    m = re.search(r"```yaml\n(# diamanti-values\.yaml.*?)```", readme, re.S)
    assert m, "the chart README must hold the Diamanti example (```yaml # diamanti-values.yaml)"
    values = tmp_path / "diamanti-values.yaml"
    values.write_text(m[1])
    docs = helm.render([values])
    assert any(d["kind"] == "StorageClass" for d in docs)


def test_readme_values_table_is_current() -> None:
    """The README's table is values_table.table(values.yaml): every documented value,
    its default and its description (fix: python3 -m tests.chart.values_table --write)."""
    paths = [p for p, _ in values_table.documented(VALUES_TEXT)]
    assert len(paths) > 40, paths
    want = values_table.table(VALUES_TEXT)
    have = values_table.readme_table((CHART / "README.md").read_text())
    assert have == want, (
        "the chart README's values table is stale: run python3 -m tests.chart.values_table --write"
    )
