"""helm lint --strict and helm template over the values matrix; every manifest
validated strictly against the Kubernetes OpenAPI schema (kubernetes-validate,
offline); the structural promises of the chart checked on the rendered objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart.conftest import CHART, CI_VALUES, COUNTS, KUBE_VERSIONS, Helm
from tests.helpers import container, find

SELECTOR_KEYS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
}
WORKLOADS = ("StatefulSet", "Deployment")


def ids(paths: list[Path]) -> list[str]:
    return [p.name.removesuffix("-values.yaml") for p in paths]


def test_values_matrix_is_complete() -> None:
    names = set(ids(CI_VALUES))
    wanted = {
        "defaults",
        "five-instances",
        "external-consul",
        "network-multus",
        "network-diamanti",
        "networkpolicy",
        "demo-app-off",
        "existing-secret",
    }
    assert wanted <= names, f"missing ci values files: {sorted(wanted - names)}"


@pytest.mark.parametrize("values", CI_VALUES, ids=ids(CI_VALUES))
def test_lint_strict(helm: Helm, values: Path) -> None:
    proc = helm.run("lint", "--strict", str(CHART), "-f", str(values), check=False)
    assert proc.returncode == 0, f"helm lint --strict -f {values.name}:\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("values", CI_VALUES, ids=ids(CI_VALUES))
def test_every_manifest_validates_strictly(helm: Helm, values: Path) -> None:
    docs = helm.render([values])
    assert len(docs) >= 10, f"{values.name} rendered only {len(docs)} manifests"
    errors = []
    for doc in docs:
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = "/".join(str(p) for p in exc.path)
                errors.append(
                    f"{doc['kind']}/{doc['metadata']['name']} (k8s {version}) at {where}: "
                    f"{exc.message}"
                )
        COUNTS["validated"] += 1
    assert not errors, f"{values.name}:\n" + "\n".join(errors)


@pytest.mark.parametrize("values", CI_VALUES, ids=ids(CI_VALUES))
def test_selectors_carry_only_name_instance_component(helm: Helm, values: Path) -> None:
    """No version, chart or role in a workload selector: upgrades never hit
    "Forbidden: updates to statefulset spec"."""
    for doc in helm.render([values]):
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in WORKLOADS:
            selector = doc["spec"]["selector"]["matchLabels"]
            assert set(selector) == SELECTOR_KEYS, f"{name} selects {sorted(selector)}"
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), f"{name}: template lacks its selector"
        if doc["kind"] == "PodDisruptionBudget":
            assert set(doc["spec"]["selector"]["matchLabels"]) == SELECTOR_KEYS, name
        if doc["kind"] == "Service":
            selector = doc["spec"]["selector"]
            extra = set(selector) - SELECTOR_KEYS
            role_service = doc["metadata"]["name"].endswith(("-primary", "-replicas"))
            assert extra == ({"role"} if role_service else set()), f"{name} selects {selector}"


def test_objects_of_the_default_install(default_docs: list[dict[str, Any]]) -> None:
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in default_docs)
    for wanted in (
        "StatefulSet/pg",
        "StatefulSet/pg-consul",
        "Service/pg-headless",
        "Service/pg-primary",
        "Service/pg-replicas",
        "Service/pg-readable",
        "Service/pg-consul",
        "Service/pg-consul-headless",
        "Service/pg-pgpool",
        "Service/pg-demo-app",
        "Deployment/pg-pgpool",
        "Deployment/pg-demo-app",
        "ServiceAccount/pg-controller",
        "Role/pg-controller",
        "RoleBinding/pg-controller",
        "Secret/pg",
        "ConfigMap/pg-config",
        "ConfigMap/pg-pgpool",
        "PodDisruptionBudget/pg",
        "PodDisruptionBudget/pg-consul",
        "Job/pg-test-roundtrip",
    ):
        assert wanted in kinds, f"{wanted} not rendered; got {kinds}"
    assert not [k for k in kinds if k.startswith("NetworkPolicy/")], "NetworkPolicy is opt-in"


def test_database_statefulset(default_docs: list[dict[str, Any]]) -> None:
    sts = find(default_docs, "StatefulSet", "pg")
    spec = sts["spec"]
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == "pg-headless"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenScaled": "Retain",
        "whenDeleted": "Retain",
    }
    (vct,) = spec["volumeClaimTemplates"]
    assert vct["spec"]["resources"]["requests"]["storage"] == "8Gi"
    assert "storageClassName" not in vct["spec"], "default class unless storage.storageClass"
    pod = spec["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["postgres", "controller"]
    assert pod["terminationGracePeriodSeconds"] == 30
    assert pod["serviceAccountName"] == "pg-controller"
    assert "checksum/config" in spec["template"]["metadata"]["annotations"]
    tolerations = {t["key"]: t["tolerationSeconds"] for t in pod["tolerations"]}
    assert tolerations == {"node.kubernetes.io/not-ready": 10, "node.kubernetes.io/unreachable": 10}
    agent = container(pod, "postgres")
    assert agent["volumeMounts"] == [{"name": "data", "mountPath": "/var/lib/pgras"}]
    assert "preStop" in agent["lifecycle"], "the agent must outlive the controller's handover"
    assert "livenessProbe" not in agent, "no pg_isready-style liveness on postgres"
    ctl = container(pod, "controller")
    assert ctl["startupProbe"]["httpGet"]["path"] == "/liveness"
    startup = ctl["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert ctl["livenessProbe"]["httpGet"]["path"] == "/liveness"
    assert ctl["readinessProbe"]["httpGet"]["path"] == "/readiness"
    assert "volumeMounts" not in ctl, "the controller never touches PGDATA"


def test_prestop_outwaits_the_handover_within_the_grace_period(helm: Helm) -> None:
    docs = helm.render(sets=["terminationGracePeriodSeconds=60"])
    pod = find(docs, "StatefulSet", "pg")["spec"]["template"]["spec"]
    script = container(pod, "postgres")["lifecycle"]["preStop"]["exec"]["command"][-1]
    assert "time.monotonic() + 52" in script, script
    compile(script, "preStop", "exec")  # the hook is valid Python


def test_headless_service_publishes_not_ready(default_docs: list[dict[str, Any]]) -> None:
    svc = find(default_docs, "Service", "pg-headless")["spec"]
    assert svc["clusterIP"] == "None"
    assert svc["publishNotReadyAddresses"] is True


def test_image_tag_defaults_to_app_version(helm: Helm, default_docs: list[dict[str, Any]]) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    images = {
        c["image"]
        for d in default_docs
        if d["kind"] in (*WORKLOADS, "Job") and d["metadata"]["name"] != "pg-consul"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {
        f"docker.io/postgres-ras/{n}:{app_version}"
        for n in ("postgres", "pg-controller", "pgpool", "demo-app")
    }
    docs = helm.render(sets=["image.registry=registry.local:5000", "image.tag=dev"])
    sts = find(docs, "StatefulSet", "pg")["spec"]["template"]["spec"]
    assert container(sts, "postgres")["image"] == "registry.local:5000/postgres-ras/postgres:dev"


def test_generated_secret_is_kept(default_docs: list[dict[str, Any]]) -> None:
    secret = find(default_docs, "Secret", "pg")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert set(secret["data"]) == {
        "superuser-password",
        "replication-password",
        "agent-token",
        "controller-token",
    }
    assert len(set(secret["data"].values())) == 4, "each secret is generated on its own"
    template = (CHART / "templates" / "secret.yaml").read_text()
    assert 'lookup "v1" "Secret"' in template, "existing values must be looked up and kept"


def test_existing_secret_replaces_the_generated_one(helm: Helm) -> None:
    docs = helm.render([CHART / "ci" / "existing-secret-values.yaml"])
    assert not [d for d in docs if d["kind"] == "Secret"], "no Secret when auth.existingSecret"
    refs = set()
    for d in docs:
        if d["kind"] in (*WORKLOADS, "Job"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        refs.add(ref["name"])
    assert refs == {"my-pg-credentials"}


def test_config_checksum_follows_the_config(helm: Helm) -> None:
    def checksum(*sets: str) -> str:
        sts = find(helm.render(sets=list(sets)), "StatefulSet", "pg")
        return str(sts["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum() == checksum(), "the checksum is stable"
    assert checksum() != checksum("ha.ttl=5"), "a config change must roll the pods"


def test_network_modes_annotate_the_pods(helm: Helm) -> None:
    def annotations(values: str) -> dict[str, str]:
        sts = find(helm.render([CHART / "ci" / values]), "StatefulSet", "pg")
        return dict(sts["spec"]["template"]["metadata"]["annotations"])

    assert annotations("network-multus-values.yaml")["k8s.v1.cni.cncf.io/networks"] == (
        "macvlan-conf"
    )
    assert annotations("network-diamanti-values.yaml")["diamanti.com/endpoint0"] == (
        '{"network":"blue","perfTier":"high"}'
    )
    assert set(annotations("defaults-values.yaml")) == {"checksum/config"}


def test_diamanti_storage_class_carries_the_mirror_count(helm: Helm) -> None:
    docs = helm.render([CHART / "ci" / "network-diamanti-values.yaml"])
    sc = find(docs, "StorageClass", "high")
    assert sc["provisioner"] == "dcx.csi.diamanti.com"
    assert sc["parameters"] == {"mirrorCount": "2", "perfTier": "high", "fsType": "ext4"}
    vct = find(docs, "StatefulSet", "pg")["spec"]["volumeClaimTemplates"][0]
    assert vct["spec"]["storageClassName"] == "high"


def test_hard_anti_affinity_and_five_instances(helm: Helm) -> None:
    docs = helm.render([CHART / "ci" / "five-instances-values.yaml"])
    sts = find(docs, "StatefulSet", "pg")
    assert sts["spec"]["replicas"] == 5
    anti = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert list(anti) == ["requiredDuringSchedulingIgnoredDuringExecution"]
    assert find(docs, "PodDisruptionBudget", "pg")["spec"]["maxUnavailable"] == 2
    assert find(docs, "PodDisruptionBudget", "pg-pgpool")["spec"]["maxUnavailable"] == 1


def test_external_consul_renders_no_consul(helm: Helm) -> None:
    docs = helm.render([CHART / "ci" / "external-consul-values.yaml"])
    assert not [d for d in docs if "consul" in d["metadata"]["name"]]
    cm = find(docs, "ConfigMap", "pg-config")["data"]
    assert cm["PGRAS_CONSUL__URL"] == "https://consul.consul.svc.cluster.local:8501"
    ctl = container(find(docs, "StatefulSet", "pg")["spec"]["template"]["spec"], "controller")
    token = next(e for e in ctl["env"] if e["name"] == "PGRAS_CONSUL__TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "consul-acl", "key": "controller-token"}


def test_consul_servers(default_docs: list[dict[str, Any]]) -> None:
    sts = find(default_docs, "StatefulSet", "pg-consul")
    assert sts["spec"]["replicas"] == 3
    cmd = container(sts["spec"]["template"]["spec"], "consul")["command"]
    assert "-bootstrap-expect=3" in cmd
    joins = [a for a in cmd if a.startswith("-retry-join=")]
    assert joins == [
        f"-retry-join=pg-consul-{i}.pg-consul-headless.db.svc.cluster.local" for i in range(3)
    ]
    probe = container(sts["spec"]["template"]["spec"], "consul")["readinessProbe"]
    assert "/v1/status/leader" in " ".join(probe["exec"]["command"])
    assert find(default_docs, "Service", "pg-consul-headless")["spec"]["publishNotReadyAddresses"]


def test_network_policies_keep_dns_api_consul_and_peers(helm: Helm) -> None:
    docs = helm.render([CHART / "ci" / "networkpolicy-values.yaml"])
    db = find(docs, "NetworkPolicy", "pg")["spec"]
    egress_ports = {(p["port"], p["protocol"]) for rule in db["egress"] for p in rule["ports"]}
    assert {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP"), (8500, "TCP")} <= egress_ports
    assert {(5432, "TCP"), (8008, "TCP")} <= egress_ports, "peers: replication and REST API"
    api = next(r for r in db["egress"] if {"port": 443, "protocol": "TCP"} in r["ports"])
    assert [t["ipBlock"]["cidr"] for t in api["to"]] == ["10.96.0.1/32", "172.18.0.0/16"]
    for name in ("pg-consul", "pg-pgpool", "pg-demo-app"):
        policy = find(docs, "NetworkPolicy", name)["spec"]
        dns = {(p["port"], p["protocol"]) for r in policy["egress"] for p in r["ports"]}
        assert {(53, "UDP"), (53, "TCP")} <= dns, f"{name} must still resolve names"
    docs = helm.render([CHART / "ci" / "networkpolicy-external-consul-values.yaml"])
    db = find(docs, "NetworkPolicy", "pg")["spec"]
    assert any(
        r["ports"] == [{"port": 8500, "protocol": "TCP"}] and "to" not in r for r in db["egress"]
    )


def test_notes_name_the_endpoints(helm: Helm) -> None:
    proc = helm.run(
        "install", "pg", str(CHART), "--namespace", "db", "--dry-run=client", "--set", "instances=5"
    )
    notes = proc.stdout[proc.stdout.index("NOTES:") :]
    for wanted in (
        "5 PostgreSQL pods",
        "pg-primary.db.svc",
        "pg-replicas.db.svc",
        "pg-pgpool.db.svc",
        "http://pg-demo-app.db.svc:8080/api/puppies",
        "get secret pg ",
        "helm test pg",
        "role=primary",
    ):
        assert wanted in notes, f"NOTES lack {wanted!r}:\n{notes}"


@pytest.mark.parametrize("values", CI_VALUES, ids=ids(CI_VALUES))
def test_every_pod_meets_the_restricted_pod_security_standard(helm: Helm, values: Path) -> None:
    """Pod Security Standard "restricted": non-root, no privilege escalation, every
    capability dropped, a seccomp profile, no host namespaces or hostPath volumes."""
    for doc in helm.render([values]):
        if doc["kind"] not in (*WORKLOADS, "Job"):
            continue
        spec = doc["spec"]["template"]["spec"]
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        pod_ctx = spec.get("securityContext", {})
        assert pod_ctx.get("runAsNonRoot") is True, name
        assert pod_ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), name
        assert not any("hostPath" in v for v in spec.get("volumes", [])), name
        for ctr in spec["containers"] + spec.get("initContainers", []):
            ctx = ctr.get("securityContext", {})
            where = f"{name} container {ctr['name']}"
            assert ctx.get("allowPrivilegeEscalation") is False, where
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not ctx.get("capabilities", {}).get("add"), where
            assert ctx.get("runAsUser", 1) != 0 and not ctx.get("privileged"), where
            assert "resources" in ctr and ctr["resources"].get("requests"), f"{where}: requests"
