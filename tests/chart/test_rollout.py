"""The orchestrated rollout in the chart: OnDelete, the post-upgrade Job running
postgres_ras.controller.rollout, its RBAC (exactly rollout.API_CALLS), its way through
the NetworkPolicy; RollingUpdate and none of it when upgradeHandover.enabled is false."""

from __future__ import annotations

import importlib.util
import json
from typing import Any
from urllib.parse import urlsplit

from postgres_ras import config
from postgres_ras.controller import auth, rollout
from tests.chart.conftest import CHART, NAMESPACE, Helm
from tests.helpers import container, find
from tests.helpers import role_rules as rules

ROLLOUT_OBJECTS = {
    ("Job", "pg-rollout"),
    ("ServiceAccount", "pg-rollout"),
    ("Role", "pg-rollout"),
    ("RoleBinding", "pg-rollout"),
}


def rollout_job(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    job = find(docs, "Job", "pg-rollout")
    return job, container(job["spec"]["template"]["spec"], "rollout")


def test_statefulset_is_on_delete_with_the_rollout(default_docs: list[dict[str, Any]]) -> None:
    sts = find(default_docs, "StatefulSet", "pg")
    assert sts["spec"]["updateStrategy"] == {"type": "OnDelete"}
    rendered = {(d["kind"], d["metadata"]["name"]) for d in default_docs}
    assert rendered >= ROLLOUT_OBJECTS
    assert not [n for _, n in rendered if n.endswith("upgrade-handover")], "the old Job is gone"


def test_rollout_job_is_a_post_upgrade_hook(default_docs: list[dict[str, Any]]) -> None:
    job, _ = rollout_job(default_docs)
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-upgrade,post-rollback"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    spec = job["spec"]
    assert spec["backoffLimit"] == 0, "a failed rollout is re-run by the next upgrade"
    assert spec["activeDeadlineSeconds"] == 900
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "pg-rollout"
    assert pod["automountServiceAccountToken"] is True, "it lists and deletes pods"
    labels = spec["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "rollout"
    assert labels["app.kubernetes.io/instance"] == "pg"


def test_rollout_job_runs_the_orchestrator_against_real_endpoints(
    default_docs: list[dict[str, Any]],
) -> None:
    _, ctr = rollout_job(default_docs)
    assert ctr["image"].rsplit("/", 1)[1].startswith("pg-controller:")
    assert ctr["command"] == ["python3", "-m", "postgres_ras.controller.rollout"]
    assert importlib.util.find_spec("postgres_ras.controller.rollout") is not None
    args = rollout.parse_args(ctr["args"])  # the orchestrator's own parser accepts them
    assert args.statefulset == "pg" and args.namespace == NAMESPACE
    assert args.pod_timeout == args.settle_timeout == 300
    assert 0 < args.deadline < 900, "it stops itself before activeDeadlineSeconds"
    api = urlsplit(args.api_url.format(pod="pg-1"))
    assert api.hostname == f"pg-1.pg-headless.{NAMESPACE}.svc.cluster.local"
    assert api.port == config.ControllerSettings().port
    sts = find(default_docs, "StatefulSet", "pg")
    assert sts["spec"]["serviceName"] == "pg-headless"
    env = {e["name"]: e for e in ctr["env"]}
    assert set(env) == {"CONTROLLER_TOKEN"}
    assert env["CONTROLLER_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "pg",
        "key": "controller-token",
    }
    # The controllers let a pod address in (with the token) by default.
    cm = find(default_docs, "ConfigMap", "pg-config")["data"]
    networks = auth.parse_networks(json.loads(cm["PGRAS_CONTROLLER__ALLOW_NETWORKS"]))
    assert auth.client_allowed("10.244.1.7", networks)


def test_rollout_values_reach_the_job(helm: Helm) -> None:
    docs = helm.render(
        sets=["upgradeHandover.activeDeadlineSeconds=1800", "upgradeHandover.podTimeoutSeconds=600"]
    )
    job, ctr = rollout_job(docs)
    assert job["spec"]["activeDeadlineSeconds"] == 1800
    args = rollout.parse_args(ctr["args"])
    assert args.pod_timeout == args.settle_timeout == 600 and args.deadline == 1770
    proc = helm.template(sets=["upgradeHandover.activeDeadlineSeconds=10"], check=False)
    assert proc.returncode != 0 and "activeDeadlineSeconds" in proc.stderr


def test_rollout_role_grants_exactly_its_api_calls(default_docs: list[dict[str, Any]]) -> None:
    role = find(default_docs, "Role", "pg-rollout")
    assert rules(role) == set(rollout.API_CALLS)
    assert rules(role) == {
        ("", "pods", "list"),
        ("", "pods", "delete"),
        ("apps", "statefulsets", "get"),
    }
    for rule in role["rules"]:
        if rule["resources"] == ["statefulsets"]:
            assert rule["resourceNames"] == ["pg"], "its own StatefulSet only"
    binding = find(default_docs, "RoleBinding", "pg-rollout")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "pg-rollout",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "pg-rollout", "namespace": NAMESPACE}
    ]
    sa = find(default_docs, "ServiceAccount", "pg-rollout")
    assert sa["automountServiceAccountToken"] is False, "only the Job's pod mounts a token"
    # The controllers' own Role is untouched by the rollout.
    assert ("", "pods", "delete") not in rules(find(default_docs, "Role", "pg-controller"))


def test_networkpolicy_admits_the_rollout_job_to_the_controller_api(helm: Helm) -> None:
    docs = helm.render([CHART / "ci" / "networkpolicy-values.yaml"])
    labels = find(docs, "Job", "pg-rollout")["spec"]["template"]["metadata"]["labels"]
    policy = find(docs, "NetworkPolicy", "pg")["spec"]
    (api_rule,) = [r for r in policy["ingress"] if {"port": 8008, "protocol": "TCP"} in r["ports"]]
    assert any(
        peer["podSelector"]["matchLabels"].items() <= labels.items() for peer in api_rule["from"]
    ), "the rollout Job's pods must reach port 8008"
    postgres_rule = [
        r for r in policy["ingress"] if {"port": 5432, "protocol": "TCP"} in r["ports"]
    ]
    assert postgres_rule, "the 5432 rule is untouched"


def test_disabled_rollout_is_a_rolling_update_without_the_job(helm: Helm) -> None:
    docs = helm.render(sets=["upgradeHandover.enabled=false"])
    sts = find(docs, "StatefulSet", "pg")
    assert sts["spec"]["updateStrategy"] == {"type": "RollingUpdate"}
    rendered = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert not ROLLOUT_OBJECTS & rendered
    assert not [
        d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] != "pg-test-roundtrip"
    ]
