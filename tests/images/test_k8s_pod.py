"""The pod-template translation (tests/images/k8s_pod.py) on a hand-made StatefulSet,
and on the chart's own rendering: no Docker needed, seconds."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.images import k8s_pod

pytestmark = pytest.mark.images

STATEFULSET = {
    "kind": "StatefulSet",
    "metadata": {"name": "db", "namespace": "ns", "labels": {"app.kubernetes.io/component": "x"}},
    "spec": {
        "serviceName": "db-headless",
        "template": {
            "metadata": {"labels": {"app": "db"}, "annotations": {"a": "b"}},
            "spec": {
                "terminationGracePeriodSeconds": 12,
                "securityContext": {"fsGroup": 999, "runAsNonRoot": True},
                "volumes": [
                    {"name": "scratch", "emptyDir": {}},
                    {
                        "name": "conf",
                        "configMap": {"name": "cm", "items": [{"key": "k", "path": "f"}]},
                    },
                ],
                "containers": [
                    {
                        "name": "main",
                        "image": "img/main:1",
                        "command": ["/bin/run", "--flag"],
                        "args": ["serve", "$(NAME)", "$$(NAME)", "$(UNKNOWN)"],
                        "envFrom": [{"configMapRef": {"name": "cm"}}],
                        "env": [
                            {
                                "name": "NAME",
                                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                            },
                            {
                                "name": "NS",
                                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                            },
                            {
                                "name": "IP",
                                "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                            },
                            {
                                "name": "LBL",
                                "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}},
                            },
                            {"name": "FQDN", "value": "$(NAME).db-headless.$(NS)"},
                            {"name": "LATER", "value": "$(DEFINED_AFTER)"},
                            {"name": "DEFINED_AFTER", "value": "x"},
                            {
                                "name": "PW",
                                "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw"}},
                            },
                            {"name": "k", "value": "overrides the configMap"},
                        ],
                        "ports": [{"name": "api", "containerPort": 8008}],
                        "volumeMounts": [
                            {"name": "data", "mountPath": "/data"},
                            {"name": "scratch", "mountPath": "/tmp/s"},
                            {"name": "conf", "mountPath": "/etc/conf", "readOnly": True},
                        ],
                        "resources": {"limits": {"memory": "256Mi", "cpu": "500m"}},
                        "securityContext": {
                            "runAsUser": 1000,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "readinessProbe": {
                            "httpGet": {"path": "/ready", "port": "api"},
                            "periodSeconds": 2,
                            "failureThreshold": 1,
                        },
                        "livenessProbe": {"tcpSocket": {"port": 8008}},
                        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "1"]}}},
                    },
                    {"name": "side", "image": "img/side:1", "args": ["only-args"]},
                    {"name": "plain", "image": "img/plain:1"},
                ],
            },
        },
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {}}],
    },
}
PASSWORD = base64.b64encode(b"s3cret").decode()
OBJECTS = k8s_pod.Objects.from_manifests(
    [
        {"kind": "Secret", "metadata": {"name": "sec"}, "data": {"pw": PASSWORD}},
        {"kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"k": "v", "C": "from-cm"}},
    ]
)  # fmt: skip


def translate(tmp_path: Path, **kw: object) -> k8s_pod.PodRun:
    return k8s_pod.translate_pod(
        STATEFULSET,
        1,
        OBJECTS,
        ip="10.9.9.11",
        names=lambda s: f"run-db-1-{s}",
        files_dir=tmp_path,
        **kw,  # type: ignore[arg-type]
    )


def test_identity_env_and_expansion(tmp_path: Path) -> None:
    pod = translate(tmp_path, env_overrides={"C": "test"})
    main = pod.containers[0]
    assert pod.identity.name == "db-1" and pod.fqdn == "db-1.db-headless.ns.svc.cluster.local"
    assert main.env["NAME"] == "db-1" and main.env["NS"] == "ns" and main.env["IP"] == "10.9.9.11"
    assert main.env["LBL"] == "db"
    assert main.env["FQDN"] == "db-1.db-headless.ns"
    assert main.env["LATER"] == "$(DEFINED_AFTER)", "only names defined earlier expand"
    assert main.env["PW"] == "s3cret"
    assert main.env["k"] == "overrides the configMap"
    assert main.env["C"] == "test", "the test's overrides come last"
    assert "-e" in main.options and "PW=s3cret" in main.options


def test_command_and_args_as_kubernetes_treats_them(tmp_path: Path) -> None:
    main, side, plain = translate(tmp_path).containers
    # command replaces ENTRYPOINT (docker: --entrypoint + the rest), args replace CMD.
    i = main.options.index("--entrypoint")
    assert main.options[i + 1] == "/bin/run"
    assert main.argv == ("--flag", "serve", "db-1", "$(NAME)", "$(UNKNOWN)")
    assert "--entrypoint" not in side.options and side.argv == ("only-args",)
    assert "--entrypoint" not in plain.options and plain.argv == ()


def test_mounts_security_limits_probes(tmp_path: Path) -> None:
    pod = translate(tmp_path)
    main = pod.containers[0]
    opts = " ".join(main.options)
    assert "type=volume,source=run-db-1-data,target=/data" in opts
    assert "type=volume,source=run-db-1-scratch,target=/tmp/s" in opts
    assert f"type=bind,source={tmp_path}/main/conf,target=/etc/conf,readonly" in opts
    assert main.files == {tmp_path / "main" / "conf" / "f": "v"}
    assert set(pod.docker_volumes) == {"run-db-1-data", "run-db-1-scratch"}
    assert "--user 1000" in opts and "--group-add 999" in opts
    assert "--cap-drop ALL" in opts and "--security-opt no-new-privileges" in opts
    assert f"--memory {256 * 2**20}" in opts and "--cpus 0.5" in opts
    assert "--stop-timeout 12" in opts and pod.grace_seconds == 12
    ready = main.probes["readiness"]
    assert (ready.kind, ready.path, ready.port, ready.period, ready.failure_threshold) == (
        "httpGet", "/ready", 8008, 2.0, 1,
    )  # fmt: skip
    assert main.probes["liveness"].kind == "tcpSocket"
    assert main.pre_stop is not None and main.pre_stop.command == ("sleep", "1")


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("volumes",), [{"name": "h", "hostPath": {"path": "/"}}], "hostPath"),
        (("initContainers",), [{"name": "i", "image": "x"}], "initContainers"),
    ],
)
def test_what_it_cannot_honour_fails_loudly(
    tmp_path: Path, path: tuple[str, ...], value: object, message: str
) -> None:
    import copy

    sts = copy.deepcopy(STATEFULSET)
    spec = sts["spec"]["template"]["spec"]
    spec[path[0]] = value
    if path[0] == "volumes":
        spec["containers"][0]["volumeMounts"] = [{"name": "h", "mountPath": "/h"}]
    with pytest.raises(k8s_pod.Untranslatable, match=message):
        k8s_pod.translate_pod(sts, 0, OBJECTS, ip="1.1.1.1", names=str, files_dir=tmp_path)


def test_unknown_secret_fails_loudly(tmp_path: Path) -> None:
    empty = k8s_pod.Objects.from_manifests([{"kind": "ConfigMap", "metadata": {"name": "cm"}}])
    with pytest.raises(k8s_pod.Untranslatable, match="secret 'sec'"):
        k8s_pod.translate_pod(STATEFULSET, 0, empty, ip="1.1.1.1", names=str, files_dir=tmp_path)


def test_the_chart_translates(chart_manifests: list[dict], tmp_path: Path) -> None:
    """The chart's StatefulSet translates completely: both containers, the probes the
    chart declares, every variable the config reads filled (no $(...) left)."""
    sts = k8s_pod.find(chart_manifests, "StatefulSet", "database")
    objects = k8s_pod.Objects.from_manifests(chart_manifests)
    pod = k8s_pod.translate_pod(
        sts, 0, objects, ip="10.0.0.10", names=lambda s: f"r-{s}", files_dir=tmp_path
    )
    names = [c.name for c in pod.containers]
    assert len(names) >= 2, names
    for c in pod.containers:
        leftovers = {k: v for k, v in c.env.items() if "$(" in v}
        assert not leftovers, f"{c.name}: unexpanded references {leftovers}"
        assert c.env.get("PGRAS_NAME") == pod.identity.name, c.env
    kinds = {kind for c in pod.containers for kind in c.probes}
    assert {"liveness", "readiness"} <= kinds, kinds


def test_haproxy_servers_at_pod_addresses() -> None:
    """The container tier runs the local cluster's HAProxy renderer with each server at
    its pod's address (NodePorts.host) and the frontends on every interface."""
    from postgres_ras.local.haproxy import render_haproxy_cfg
    from postgres_ras.local.layout import Layout, NodePorts

    layout = Layout(work_dir=Path("/nonexistent"), base_port=25000, host="0.0.0.0")
    nodes = [NodePorts("pg-0", 0, 5432, 8010, 8008, host="10.1.2.10"), layout.node(1)]
    cfg = render_haproxy_cfg(layout, nodes)
    assert "    server pg-0 10.1.2.10:5432 check port 8008" in cfg
    assert f"    server node1 0.0.0.0:{layout.node(1).postgres} check" in cfg
    assert f"    bind 0.0.0.0:{layout.haproxy_write}" in cfg
