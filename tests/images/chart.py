"""The Helm chart as the images tier sees it: ``helm template`` output, the rendered
Secrets and ConfigMaps a pod refers to, and the one object of a component."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class Untranslatable(ValueError):
    """The pod spec uses something the translation does not support."""


def helm_template(
    helm: str, chart: Path, release: str, namespace: str, values: Mapping[str, Any], workdir: Path
) -> list[dict[str, Any]]:
    """The manifests ``helm template`` renders for ``values`` (a values file is written)."""
    values_file = workdir / f"{release}-values.yaml"
    values_file.write_text(yaml.safe_dump(dict(values)))
    proc = subprocess.run(
        [helm, "template", release, str(chart), "--namespace", namespace, "-f", str(values_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"helm template {chart} failed:\n{proc.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@dataclass(frozen=True)
class Objects:
    """The rendered Secrets and ConfigMaps a pod spec refers to (name -> key -> text)."""

    secrets: Mapping[str, Mapping[str, str]]
    configmaps: Mapping[str, Mapping[str, str]]

    @classmethod
    def from_manifests(cls, manifests: Iterable[Mapping[str, Any]]) -> Objects:
        secrets: dict[str, dict[str, str]] = {}
        configmaps: dict[str, dict[str, str]] = {}
        for doc in manifests:
            name = doc.get("metadata", {}).get("name", "")
            if doc.get("kind") == "Secret":
                data = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
                data.update({k: str(v) for k, v in (doc.get("stringData") or {}).items()})
                secrets[name] = data
            elif doc.get("kind") == "ConfigMap":
                configmaps[name] = {k: str(v) for k, v in (doc.get("data") or {}).items()}
        return cls(secrets, configmaps)

    def secret(self, name: str, key: str) -> str:
        try:
            return self.secrets[name][key]
        except KeyError:
            raise Untranslatable(f"secret {name!r} key {key!r} is not rendered") from None

    def configmap(self, name: str, key: str) -> str:
        try:
            return self.configmaps[name][key]
        except KeyError:
            raise Untranslatable(f"configMap {name!r} key {key!r} is not rendered") from None


def find(manifests: Iterable[Mapping[str, Any]], kind: str, component: str) -> dict[str, Any]:
    """The one object of ``kind`` labelled ``app.kubernetes.io/component=component``."""
    found = [
        dict(doc)
        for doc in manifests
        if doc.get("kind") == kind
        and doc.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component")
        == component
    ]
    if len(found) != 1:
        raise Untranslatable(f"expected one {kind} of component {component}, found {len(found)}")
    return found[0]
