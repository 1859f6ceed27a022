"""Run a Kubernetes pod template with the Docker engine, the way a kubelet would.

The images tier starts its database pods from the Helm chart's rendered
StatefulSet (``helm template``), not from hand-written docker arguments. This
module is the translation, kept pure (no docker call here) so it is tested on a
hand-made manifest too:

- a pod is a "pause" container that holds the pod's network (its address on the
  test network, its DNS names: the pod name and
  ``<pod>.<serviceName>.<namespace>.svc.<domain>``) and IPC namespace, plus one
  container per pod-spec container joining it (``--network container:<pause>``);
- ``command`` replaces the image's ENTRYPOINT and ``args`` its CMD, exactly as
  Kubernetes does; ``$(VAR)`` references in env values, command and args are
  expanded as Kubernetes expands them (``$$`` escapes, unknown names stay);
- env: plain values, ``fieldRef`` (metadata.name / namespace / uid / labels /
  annotations, status.podIP, spec.nodeName / serviceAccountName),
  ``secretKeyRef`` / ``configMapKeyRef`` and ``envFrom`` from the rendered
  Secrets and ConfigMaps;
- volume mounts: a volumeClaimTemplate or an emptyDir becomes a named docker
  volume of the pod, a configMap or secret volume a read-only bind mount of
  files written for the pod;
- the security context (user, fsGroup, dropped capabilities, no new
  privileges), memory/CPU limits, the grace period and the probes
  (httpGet / tcpSocket / exec) and preStop hooks are carried over.

Anything else the pod spec asks for raises :class:`Untranslatable` naming it:
a chart change the test cannot honour fails loudly instead of being ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.images.chart import Objects, Untranslatable, find, helm_template

__all__ = [
    "ContainerRun",
    "Objects",
    "PodIdentity",
    "PodRun",
    "Probe",
    "Untranslatable",
    "container_env",
    "expand",
    "find",
    "helm_template",
    "translate_pod",
]


# ---------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Probe:
    """One probe as the kubelet runs it; ``port`` is resolved to a number."""

    kind: str  # httpGet | tcpSocket | exec
    path: str = "/"
    port: int = 0
    scheme: str = "HTTP"
    command: tuple[str, ...] = ()
    period: float = 10.0
    timeout: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1
    initial_delay: float = 0.0


@dataclass(frozen=True)
class PodIdentity:
    """What the downward API tells a pod about itself."""

    name: str
    namespace: str
    ip: str
    uid: str = "00000000-0000-0000-0000-000000000000"
    node_name: str = "docker"
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    service_account: str = "default"


@dataclass(frozen=True)
class ContainerRun:
    """One pod container as a ``docker run``: ``docker run -d --name NAME *options IMAGE *argv``."""

    name: str  # the container's name in the pod spec
    image: str
    options: tuple[str, ...]
    argv: tuple[str, ...]
    env: Mapping[str, str]
    probes: Mapping[str, Probe]  # startup / liveness / readiness
    pre_stop: Probe | None
    files: Mapping[Path, str]  # configMap / secret volume files to write before the run


@dataclass(frozen=True)
class PodRun:
    """A translated pod: the containers in spec order, the grace period, the volumes."""

    identity: PodIdentity
    containers: tuple[ContainerRun, ...]
    grace_seconds: int
    docker_volumes: tuple[str, ...]  # named docker volumes (claims and emptyDirs) of this pod
    fqdn: str


# ---------------------------------------------------------------------------- expansion

_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined names are replaced, ``$$`` is ``$``,
    anything else stays as written."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _REF.sub(sub, text)


def _field_ref(path: str, pod: PodIdentity) -> str:
    simple = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "metadata.uid": pod.uid,
        "status.podIP": pod.ip,
        "status.podIPs": pod.ip,
        "status.hostIP": "127.0.0.1",
        "spec.nodeName": pod.node_name,
        "spec.serviceAccountName": pod.service_account,
    }
    if path in simple:
        return simple[path]
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        source = pod.labels if m.group(1) == "labels" else pod.annotations
        return source.get(m.group(2), "")
    raise Untranslatable(f"fieldRef {path!r} is not supported")


def container_env(
    spec: Mapping[str, Any], pod: PodIdentity, objects: Objects, overrides: Mapping[str, str]
) -> dict[str, str]:
    """The container's environment in Kubernetes' order: envFrom, then env (later wins,
    each value expanded against what is defined before it), then the test's overrides."""
    env: dict[str, str] = {}
    for source in spec.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            data = objects.configmaps.get(source["configMapRef"]["name"])
        elif "secretRef" in source:
            data = objects.secrets.get(source["secretRef"]["name"])
        else:
            raise Untranslatable(f"envFrom {source} is not supported")
        if data is None:
            ref = source.get("configMapRef") or source.get("secretRef")
            if ref.get("optional"):
                continue
            raise Untranslatable(f"envFrom refers to {ref['name']!r}, which is not rendered")
        env.update({prefix + k: v for k, v in data.items()})
    for var in spec.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        src = var["valueFrom"]
        if "fieldRef" in src:
            env[name] = _field_ref(src["fieldRef"]["fieldPath"], pod)
        elif "secretKeyRef" in src:
            ref = src["secretKeyRef"]
            if ref.get("optional") and ref["name"] not in objects.secrets:
                continue
            env[name] = objects.secret(ref["name"], ref["key"])
        elif "configMapKeyRef" in src:
            ref = src["configMapKeyRef"]
            if ref.get("optional") and ref["name"] not in objects.configmaps:
                continue
            env[name] = objects.configmap(ref["name"], ref["key"])
        else:
            raise Untranslatable(f"env {name}: valueFrom {sorted(src)} is not supported")
    env.update(overrides)
    return env


# ---------------------------------------------------------------------------- parts


def _quantity_bytes(text: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    m = re.fullmatch(r"(\d+)([A-Za-z]*)", str(text))
    if not m or (m.group(2) and m.group(2) not in units):
        raise Untranslatable(f"memory quantity {text!r} is not supported")
    return int(m.group(1)) * units.get(m.group(2), 1)


def _cpus(text: str) -> str:
    text = str(text)
    return f"{int(text[:-1]) / 1000:g}" if text.endswith("m") else f"{float(text):g}"


def _probe(raw: Mapping[str, Any] | None, ports: Mapping[str, int]) -> Probe | None:
    if not raw:
        return None
    timing = {
        "period": float(raw.get("periodSeconds", 10)),
        "timeout": float(raw.get("timeoutSeconds", 1)),
        "failure_threshold": int(raw.get("failureThreshold", 3)),
        "success_threshold": int(raw.get("successThreshold", 1)),
        "initial_delay": float(raw.get("initialDelaySeconds", 0)),
    }
    if "httpGet" in raw:
        get = raw["httpGet"]
        if get.get("host") or get.get("httpHeaders"):
            raise Untranslatable(f"httpGet host/headers are not supported: {get}")
        return Probe(
            "httpGet",
            path=get.get("path", "/"),
            port=_port(get["port"], ports),
            scheme=get.get("scheme", "HTTP"),
            **timing,
        )
    if "tcpSocket" in raw:
        return Probe("tcpSocket", port=_port(raw["tcpSocket"]["port"], ports), **timing)
    if "exec" in raw:
        return Probe("exec", command=tuple(raw["exec"]["command"]), **timing)
    raise Untranslatable(f"probe {sorted(raw)} is not supported")


def _port(port: int | str, ports: Mapping[str, int]) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    if port not in ports:
        raise Untranslatable(f"probe port {port!r} is not a named container port {dict(ports)}")
    return ports[port]


def _security(pod_ctx: Mapping[str, Any], ctx: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    user = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    group = ctx.get("runAsGroup", pod_ctx.get("runAsGroup"))
    if user is not None:
        out += ["--user", f"{user}:{group}" if group is not None else str(user)]
    if pod_ctx.get("fsGroup") is not None:
        out += ["--group-add", str(pod_ctx["fsGroup"])]
    for gid in pod_ctx.get("supplementalGroups") or []:
        out += ["--group-add", str(gid)]
    if ctx.get("allowPrivilegeEscalation") is False:
        out += ["--security-opt", "no-new-privileges"]
    caps = ctx.get("capabilities") or {}
    for cap in caps.get("drop") or []:
        out += ["--cap-drop", cap]
    for cap in caps.get("add") or []:
        out += ["--cap-add", cap]
    if ctx.get("readOnlyRootFilesystem"):
        out.append("--read-only")
    if ctx.get("privileged"):
        raise Untranslatable("privileged containers are not supported")
    return out


# ---------------------------------------------------------------------------- the pod


def translate_pod(
    statefulset: Mapping[str, Any],
    ordinal: int,
    objects: Objects,
    *,
    ip: str,
    names: Callable[[str], str],
    files_dir: Path,
    env_overrides: Mapping[str, str] | None = None,
    cluster_domain: str = "cluster.local",
) -> PodRun:
    """Pod ``<statefulset>-<ordinal>`` as docker runs.

    ``names(suffix)`` makes the run-scoped docker name of this pod's objects
    (containers, volumes); ``ip`` is its address on the test network;
    ``env_overrides`` are set last in every container (say why at the call site).
    """
    meta, spec = statefulset["metadata"], statefulset["spec"]
    template = spec["template"]
    pod_spec = template["spec"]
    pod_name = f"{meta['name']}-{ordinal}"
    namespace = meta.get("namespace", "default")
    identity = PodIdentity(
        name=pod_name,
        namespace=namespace,
        ip=ip,
        labels={
            **template.get("metadata", {}).get("labels", {}),
            "statefulset.kubernetes.io/pod-name": pod_name,
            "apps.kubernetes.io/pod-index": str(ordinal),
        },
        annotations=template.get("metadata", {}).get("annotations", {}),
        service_account=pod_spec.get("serviceAccountName", "default"),
    )
    for unsupported in ("initContainers", "hostNetwork", "hostPID", "shareProcessNamespace"):
        if pod_spec.get(unsupported):
            raise Untranslatable(f"pod spec {unsupported} is not supported")
    fqdn = f"{pod_name}.{spec['serviceName']}.{namespace}.svc.{cluster_domain}"

    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates") or []}
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    docker_volumes: list[str] = []
    for claim in sorted(claims):
        docker_volumes.append(names(claim))
    for vname, vol in sorted(volumes.items()):
        if "emptyDir" in vol:
            docker_volumes.append(names(vname))

    grace = int(pod_spec.get("terminationGracePeriodSeconds", 30))
    pod_ctx = pod_spec.get("securityContext") or {}
    runs: list[ContainerRun] = []
    for c in pod_spec["containers"]:
        files: dict[Path, str] = {}
        options: list[str] = ["--stop-timeout", str(grace)]
        env = container_env(c, identity, objects, env_overrides or {})
        for key, value in env.items():
            options += ["-e", f"{key}={value}"]
        ports = {p["name"]: int(p["containerPort"]) for p in c.get("ports") or [] if "name" in p}
        # Ports need no publishing: every port of the pod is reachable on the test
        # network (docker refuses --expose for a container in another's namespace).
        for m in c.get("volumeMounts") or []:
            options += _mount(m, claims, volumes, objects, names, files_dir / c["name"], files)
        limits = (c.get("resources") or {}).get("limits") or {}
        if "memory" in limits:
            options += ["--memory", str(_quantity_bytes(limits["memory"]))]
        if "cpu" in limits:
            options += ["--cpus", _cpus(limits["cpu"])]
        options += _security(pod_ctx, c.get("securityContext") or {})
        command = [expand(str(a), env) for a in c.get("command") or []]
        args = [expand(str(a), env) for a in c.get("args") or []]
        if command:
            # docker's --entrypoint takes one executable and clears the image's CMD,
            # as a Kubernetes `command` does; the rest of it goes before args.
            options += ["--entrypoint", command[0]]
            argv = [*command[1:], *args]
        else:
            argv = args
        probes = {
            kind: p
            for kind, p in (
                ("startup", _probe(c.get("startupProbe"), ports)),
                ("liveness", _probe(c.get("livenessProbe"), ports)),
                ("readiness", _probe(c.get("readinessProbe"), ports)),
            )
            if p is not None
        }
        pre_stop_raw = ((c.get("lifecycle") or {}).get("preStop")) or None
        runs.append(
            ContainerRun(
                name=c["name"],
                image=c["image"],
                options=tuple(options),
                argv=tuple(argv),
                env=env,
                probes=probes,
                pre_stop=_probe(pre_stop_raw, ports),
                files=files,
            )
        )
    return PodRun(identity, tuple(runs), grace, tuple(docker_volumes), fqdn)


def _mount(
    m: Mapping[str, Any],
    claims: set[str],
    volumes: Mapping[str, Mapping[str, Any]],
    objects: Objects,
    names: Callable[[str], str],
    files_dir: Path,
    files: dict[Path, str],
) -> list[str]:
    name, path = m["name"], m["mountPath"]
    ro = ",readonly" if m.get("readOnly") else ""
    if m.get("subPath") or m.get("subPathExpr"):
        raise Untranslatable(f"volumeMount {name}: subPath is not supported")
    if name in claims or "emptyDir" in volumes.get(name, {}):
        return ["--mount", f"type=volume,source={names(name)},target={path}{ro}"]
    vol = volumes.get(name)
    if vol is None:
        raise Untranslatable(f"volumeMount {name!r} names no volume or claim template")
    if "configMap" in vol or "secret" in vol:
        if "configMap" in vol:
            src, data = vol["configMap"], objects.configmaps.get(vol["configMap"]["name"], {})
        else:
            src = vol["secret"]
            data = objects.secrets.get(src["secretName"], {})
        items = src.get("items") or [{"key": k, "path": k} for k in data]
        target_dir = files_dir / name
        for item in items:
            files[target_dir / item["path"]] = data[item["key"]]
        return ["--mount", f"type=bind,source={target_dir},target={path},readonly"]
    raise Untranslatable(f"volume {name!r} of type {sorted(vol)} is not supported")
