"""The chart and the code agree: the role label, the env vars (parsed by the real
config loader), the ports (images' EXPOSE and the code's defaults), the probe paths
(the real Flask apps), pgpool's settings and the RBAC Role (the controller's
API_CALLS)."""

from __future__ import annotations

import base64
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest

from postgres_ras import config
from postgres_ras.controller.state import Role
from postgres_ras.pgpool.entrypoint import settings_from_env
from tests.chart.conftest import CHART, CI_VALUES, NAMESPACE, Helm
from tests.helpers import ROOT, container, find, role_rules

POD = "pg-1"
IMAGES = ROOT / "images"
DATABASE_CONTAINERS = {"postgres": "postgres", "controller": "pg-controller"}
FAKE_SECRET = "s3cret-from-a-Secret"
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


DOCKERFILE = IMAGES / "Dockerfile"


@dataclass(frozen=True)
class Stage:
    """One build target of images/Dockerfile with what it inherits from its parents."""

    env: dict[str, str]
    exposed: set[int]
    entrypoint: str
    cmd: str
    volumes: str


def image(target: str) -> Stage:
    """Resolve a target of the multi-stage images/Dockerfile (ENV, EXPOSE, ENTRYPOINT,
    CMD, VOLUME), following ``FROM <stage> AS <target>`` chains, ARG defaults expanded."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    stages: dict[str, tuple[str, list[str]]] = {}
    current: list[str] = []
    for line in text.splitlines():
        m = re.match(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            current = []
            stages[m[2] or m[1]] = (m[1], current)
        elif stages:
            current.append(line.strip())
    if target not in stages:
        raise AssertionError(f"images/Dockerfile has no target {target!r}: {sorted(stages)}")
    chain = []
    name = target
    while name in stages:
        chain.append(name)
        name = stages[name][0]
    env: dict[str, str] = {}
    args: dict[str, str] = {}
    exposed_ports: set[int] = set()
    fields = {"ENTRYPOINT": "", "CMD": "", "VOLUME": ""}
    for stage in reversed(chain):
        for line in stages[stage][1]:
            word, _, rest = line.partition(" ")
            rest = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), rest)
            if word == "ARG" and "=" in rest:
                key, _, value = rest.partition("=")
                args[key] = value
            elif word == "ENV":
                for item in shlex.split(rest):
                    key, _, value = item.partition("=")
                    env[key] = value
            elif word == "EXPOSE":
                exposed_ports |= {int(p.split("/")[0]) for p in rest.split()}
            elif word in fields:
                fields[word] = rest
    return Stage(env, exposed_ports, fields["ENTRYPOINT"], fields["CMD"], fields["VOLUME"])


def image_env(target: str) -> dict[str, str]:
    return image(target).env


def exposed(target: str) -> set[int]:
    return image(target).exposed


def container_env(
    doc_set: list[dict[str, Any]], pod_spec: dict[str, Any], ctr: dict[str, Any], image: str
) -> dict[str, str]:
    """The environment a kubelet gives the container: image ENV, envFrom ConfigMaps, env
    with the downward API filled in (pod pg-1), secrets faked, $(VAR) expanded."""
    env = image_env(image)
    for source in ctr.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update(find(doc_set, "ConfigMap", ref)["data"])
    for item in ctr.get("env", []):
        name = item["name"]
        if "value" in item:
            env[name] = VAR_REF.sub(lambda m: env.get(m[1], m[0]), item["value"])
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            env[name] = {"metadata.name": POD, "metadata.namespace": NAMESPACE}[
                source["fieldRef"]["fieldPath"]
            ]
        elif "secretKeyRef" in source:
            env[name] = f"{FAKE_SECRET}-{source['secretKeyRef']['key']}"
        else:
            raise AssertionError(f"{ctr['name']}: unexpected env source {source}")
    unresolved = {k: v for k, v in env.items() if VAR_REF.search(v)}
    assert not unresolved, f"{ctr['name']}: $(VAR) references to undefined variables: {unresolved}"
    return env


def database(helm_docs: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(find(helm_docs, "StatefulSet", "pg")["spec"]["template"]["spec"])


def loaded(docs: list[dict[str, Any]], ctr_name: str) -> tuple[config.NodeConfig, dict[str, str]]:
    pod = database(docs)
    env = container_env(docs, pod, container(pod, ctr_name), DATABASE_CONTAINERS[ctr_name])
    try:
        return config.load(None, environ=env), env
    except config.ConfigError as exc:
        raise AssertionError(f"the {ctr_name} container's env does not parse: {exc}") from None


# -- the role label ------------------------------------------------------------


def test_services_select_the_label_the_publisher_writes(default_docs: list[dict[str, Any]]) -> None:
    label = config.PublisherSettings().label
    primary = find(default_docs, "Service", "pg-primary")["spec"]["selector"]
    replicas = find(default_docs, "Service", "pg-replicas")["spec"]["selector"]
    assert primary[label] == Role.PRIMARY.value
    assert replicas[label] == Role.REPLICA.value
    cfg, _ = loaded(default_docs, "controller")
    assert cfg.publisher.kind == "kubernetes"
    assert cfg.publisher.label == label


def test_pod_selector_selects_the_database_pods_only(default_docs: list[dict[str, Any]]) -> None:
    cfg, _ = loaded(default_docs, "controller")
    assert cfg.publisher.pod_selector
    wanted = dict(kv.split("=", 1) for kv in cfg.publisher.pod_selector.split(","))
    for doc in default_docs:
        if doc["kind"] not in ("StatefulSet", "Deployment", "Job"):
            continue
        labels = doc["spec"]["template"]["metadata"]["labels"]
        selected = wanted.items() <= labels.items()
        assert selected == (doc["metadata"]["name"] == "pg" and doc["kind"] == "StatefulSet"), (
            f"PGRAS_PUBLISHER__POD_SELECTOR {cfg.publisher.pod_selector} vs {doc['kind']}/"
            f"{doc['metadata']['name']}"
        )


# -- env vars: real config fields, required ones set ------------------------------


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.name for p in CI_VALUES])
@pytest.mark.parametrize("ctr_name", sorted(DATABASE_CONTAINERS))
def test_every_env_var_is_a_config_field_and_parses(
    helm: Helm, values: Path, ctr_name: str
) -> None:
    docs = helm.render([values])
    cfg, env = loaded(docs, ctr_name)  # extra="forbid": an unknown PGRAS_* field fails here
    chart_set = [k for k in env if k.startswith(config.ENV_PREFIX)]
    assert not set(chart_set) & config.NOT_NODE_SETTINGS, "CLI-only variables in a pod"
    assert cfg.name == POD
    assert cfg.postgres.host == f"{POD}.pg-headless.{NAMESPACE}.svc.cluster.local"
    assert cfg.controller.host == cfg.postgres.host
    assert cfg.agent.auth_token is not None, "agent and controller share PGRAS_AGENT__AUTH_TOKEN"
    assert cfg.agent.auth_token.get_secret_value() == f"{FAKE_SECRET}-agent-token"
    assert cfg.publisher.namespace == NAMESPACE and cfg.publisher.pod_name == POD
    assert urlsplit(cfg.controller.agent_url).port == cfg.agent.port


def test_required_settings_are_set(default_docs: list[dict[str, Any]]) -> None:
    agent, agent_env = loaded(default_docs, "postgres")
    ctl, ctl_env = loaded(default_docs, "controller")
    for env in (agent_env, ctl_env):
        for name in (
            "PGRAS_NAME",
            "PGRAS_CLUSTER",
            "PGRAS_CONSUL__URL",
            "PGRAS_POSTGRES__HOST",
            "PGRAS_CONTROLLER__HOST",
            "PGRAS_POSTGRES__ALLOW_NETWORKS",
            "PGRAS_PUBLISHER__KIND",
            "PGRAS_AGENT__AUTH_TOKEN",
        ):
            assert name in env, f"{name} is not set"
    # Passwords come from the Secret, never the defaults baked into config.py.
    assert agent.postgres.superuser.password == f"{FAKE_SECRET}-superuser-password"
    assert agent.postgres.replication.password == f"{FAKE_SECRET}-replication-password"
    assert ctl.controller.auth_token is not None
    assert ctl.controller.auth_token.get_secret_value() == f"{FAKE_SECRET}-controller-token"
    assert "PGRAS_CONTROLLER__AUTH_TOKEN" not in agent_env, "the agent needs no controller token"
    assert ctl.cluster == agent.cluster == "pg"
    assert ctl.consul.url == f"http://pg-consul.{NAMESPACE}.svc.cluster.local:8500"
    assert ctl.publisher.delete_unreachable_after == 0
    assert (ctl.ha.ttl, ctl.ha.loop_wait, ctl.ha.retry_timeout) == (4, 1, 3)
    assert agent.agent.fence_timeout == 2
    assert ctl.ha.maximum_lag_on_failover == 1048576


def test_values_reach_the_config(helm: Helm, tmp_path: Path) -> None:
    values = tmp_path / "tuned-values.yaml"
    values.write_text(
        "clusterName: orders\n"
        "ha: {ttl: 8, retryTimeout: 6.5, loopWait: 0.5, fenceTimeout: 3,\n"
        "     maximumLagOnFailover: 16777216, primaryStartTimeout: 45,\n"
        "     deleteUnreachableAfter: 30, synchronousMode: true, synchronousNodeCount: 2,\n"
        "     synchronousModeStrict: true}\n"
        "postgresql:\n"
        "  parameters: {max_connections: 200, shared_buffers: 256MB, wal_compression: true}\n"
    )
    docs = helm.render([values])
    cfg, _ = loaded(docs, "controller")
    assert (cfg.ha.ttl, cfg.ha.retry_timeout, cfg.ha.loop_wait) == (8, 6.5, 0.5)
    assert cfg.ha.maximum_lag_on_failover == 16777216
    assert cfg.ha.primary_start_timeout == 45
    assert cfg.ha.synchronous_mode and cfg.ha.synchronous_mode_strict
    assert cfg.ha.synchronous_node_count == 2
    assert cfg.agent.fence_timeout == 3
    assert cfg.publisher.delete_unreachable_after == 30
    assert cfg.cluster == "orders"
    assert cfg.postgres.parameters == {
        "max_connections": 200,
        "shared_buffers": "256MB",
        "wal_compression": True,
    }


def test_secret_keys_referenced_exist(default_docs: list[dict[str, Any]]) -> None:
    keys = set(find(default_docs, "Secret", "pg")["data"])
    for doc in default_docs:
        if doc["kind"] not in ("StatefulSet", "Deployment", "Job"):
            continue
        for ctr in doc["spec"]["template"]["spec"]["containers"]:
            for item in ctr.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] == "pg":
                    assert ref["key"] in keys, f"{doc['metadata']['name']}/{ctr['name']}: {ref}"
    for value in find(default_docs, "Secret", "pg")["data"].values():
        assert len(base64.b64decode(value)) >= 24


# -- ports and probe paths ---------------------------------------------------------


def ports(ctr: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in ctr.get("ports", [])}


def test_ports_match_the_images_and_the_code(default_docs: list[dict[str, Any]]) -> None:
    agent_cfg, _ = loaded(default_docs, "postgres")
    ctl_cfg, _ = loaded(default_docs, "controller")
    pod = database(default_docs)
    assert ports(container(pod, "postgres")) == {"postgresql": agent_cfg.postgres.port}
    assert agent_cfg.postgres.port in exposed("postgres")
    assert ports(container(pod, "controller")) == {"api": ctl_cfg.controller.port}
    assert ctl_cfg.controller.port in exposed("pg-controller")
    assert ctl_cfg.controller.port == config.ControllerSettings().port
    # The agent's API is node-local: not a container port, reached over the pod's loopback.
    assert agent_cfg.agent.listen == "127.0.0.1"
    assert urlsplit(ctl_cfg.controller.agent_url).hostname == "127.0.0.1"

    pgpool = find(default_docs, "Deployment", "pg-pgpool")["spec"]["template"]["spec"]
    pgpool_env = container_env(default_docs, pgpool, container(pgpool, "pgpool"), "pgpool")
    assert ports(container(pgpool, "pgpool")) == {"postgresql": int(pgpool_env["PGPOOL_PORT"])}
    assert int(pgpool_env["PGPOOL_PORT"]) in exposed("pgpool")

    app = find(default_docs, "Deployment", "pg-demo-app")["spec"]["template"]["spec"]
    assert ports(container(app, "demo-app")) == {"http": 8080}
    assert "bind=0.0.0.0:8080" in image_env("demo-app")["GUNICORN_CMD_ARGS"]
    assert 8080 in exposed("demo-app")


def test_service_target_ports_exist(default_docs: list[dict[str, Any]]) -> None:
    named: dict[str, set[str]] = {}
    for doc in default_docs:
        if doc["kind"] in ("StatefulSet", "Deployment"):
            component = doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
            names = {n for c in doc["spec"]["template"]["spec"]["containers"] for n in ports(c)}
            named[component] = names
    for doc in default_docs:
        if doc["kind"] != "Service":
            continue
        component = doc["spec"]["selector"]["app.kubernetes.io/component"]
        for port in doc["spec"]["ports"]:
            assert port["targetPort"] in named[component], (
                f"Service {doc['metadata']['name']} targets {port['targetPort']}, "
                f"the {component} pods name {sorted(named[component])}"
            )


def test_probe_paths_exist_in_the_controller_api(default_docs: list[dict[str, Any]]) -> None:
    from postgres_ras.controller.api import create_app

    app = create_app(mock.MagicMock())
    routes = {rule.rule for rule in app.url_map.iter_rules() if "GET" in (rule.methods or ())}
    ctl = container(database(default_docs), "controller")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = ctl[probe]["httpGet"]
        assert get["path"] in routes, (
            f"controller {probe} path {get['path']} not in {sorted(routes)}"
        )
        assert get["port"] in ports(ctl), f"{probe} port {get['port']}"


def test_probe_paths_exist_in_the_demo_app(default_docs: list[dict[str, Any]]) -> None:
    from postgres_ras.demo_app import create_app

    app = create_app("host=127.0.0.1 port=1 dbname=postgres user=nobody", bootstrap=False)
    try:
        routes = {rule.rule for rule in app.url_map.iter_rules()}
    finally:
        app.extensions["puppies_pool"].close(timeout=1)
    spec = find(default_docs, "Deployment", "pg-demo-app")["spec"]["template"]["spec"]
    ctr = container(spec, "demo-app")
    for probe in ("livenessProbe", "readinessProbe"):
        assert ctr[probe]["httpGet"]["path"] in routes, probe


def test_images_run_the_commands_the_chart_names(default_docs: list[dict[str, Any]]) -> None:
    pod = database(default_docs)
    assert container(pod, "postgres")["args"] == ["agent"]
    assert container(pod, "controller")["args"] == ["controller"]
    for target in ("postgres", "pg-controller"):
        assert image(target).entrypoint == '["/usr/bin/tini", "--", "pgras"]', target
    for target in ("pgpool", "demo-app"):
        spec = find(default_docs, "Deployment", f"pg-{target}")["spec"]["template"]["spec"]
        ctr = container(spec, target)
        assert "args" not in ctr and "command" not in ctr, f"{target} runs its image's CMD"
        assert image(target).cmd, target


def test_data_volume_is_the_images_volume(default_docs: list[dict[str, Any]]) -> None:
    agent, _ = loaded(default_docs, "postgres")
    (mount,) = container(database(default_docs), "postgres")["volumeMounts"]
    assert image("postgres").volumes == '["/var/lib/pgras"]'
    assert mount["mountPath"] == "/var/lib/pgras"
    assert agent.data_dir.is_relative_to(mount["mountPath"])


# -- pgpool and the demo app --------------------------------------------------------


def test_pgpool_settings_parse_and_point_at_the_role_services(
    default_docs: list[dict[str, Any]],
) -> None:
    spec = find(default_docs, "Deployment", "pg-pgpool")["spec"]["template"]["spec"]
    env = container_env(default_docs, spec, container(spec, "pgpool"), "pgpool")
    settings = settings_from_env(env)
    assert settings.write_host == f"pg-primary.{NAMESPACE}.svc.cluster.local"
    assert settings.read_host == f"pg-readable.{NAMESPACE}.svc.cluster.local"
    assert settings.write_port == settings.read_port == 5432
    assert settings.password == f"{FAKE_SECRET}-superuser-password"
    probes = container(spec, "pgpool")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert probes[probe] == {**probes[probe], "tcpSocket": {"port": "postgresql"}}, (
            f"pgpool {probe} must check pgpool itself, never its backends"
        )


def test_demo_app_and_helm_test_reach_pgpool(default_docs: list[dict[str, Any]]) -> None:
    from psycopg.conninfo import conninfo_to_dict

    app = find(default_docs, "Deployment", "pg-demo-app")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in container(app, "demo-app")["env"]}
    dsn = conninfo_to_dict(env["PUPPIES_DSN"]["value"])
    assert dsn["host"] == f"pg-pgpool.{NAMESPACE}.svc.cluster.local"
    assert "password" not in dsn, "the password comes from the Secret (PGPASSWORD)"
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "superuser-password"
    job = find(default_docs, "Job", "pg-test-roundtrip")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = container(job["spec"]["template"]["spec"], "roundtrip")["command"][-1]
    compile(script, "helm-test", "exec")
    assert "bootstrap_once" in script and "INSERT INTO pups" in script


# -- RBAC: exactly the controller's API calls -----------------------------------------


def role_calls(docs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return role_rules(find(docs, "Role", "pg-controller"))


def test_role_grants_exactly_the_controllers_api_calls(helm: Helm) -> None:
    try:
        from postgres_ras.controller.kubernetes import API_CALLS, OPT_IN_CALLS
    except ImportError as exc:
        pytest.fail(
            "postgres_ras.controller.kubernetes.API_CALLS (the controller's Kubernetes API "
            f"calls, a set of (api_group, resource, verb)) is missing: {exc}",
            pytrace=False,
        )
    calls = {tuple(c) for c in API_CALLS}
    assert set(OPT_IN_CALLS) == {("", "pods", "delete")}, "the chart opts in to pod deletion only"
    opted_in = role_calls(helm.render(sets=["ha.deleteUnreachableAfter=30"]))
    assert opted_in == calls, f"Role {sorted(opted_in)} != API_CALLS {sorted(calls)}"
    default = role_calls(helm.render())
    assert default == calls - set(OPT_IN_CALLS), (
        "pods delete only with ha.deleteUnreachableAfter > 0"
    )


def test_role_reads_only_its_own_statefulset(default_docs: list[dict[str, Any]]) -> None:
    role = find(default_docs, "Role", "pg-controller")
    for rule in role["rules"]:
        if "statefulsets" in rule["resources"]:
            assert rule["resourceNames"] == ["pg"] and rule["verbs"] == ["get"]
    binding = find(default_docs, "RoleBinding", "pg-controller")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "pg-controller", "namespace": NAMESPACE}
    ]
    # Only the database pods get an API token ...
    for doc in default_docs:
        if doc["kind"] in ("StatefulSet", "Deployment", "Job"):
            spec = doc["spec"]["template"]["spec"]
            is_db = doc["kind"] == "StatefulSet" and doc["metadata"]["name"] == "pg"
            # ... and the rollout Job, which lists and deletes them (its own Role).
            is_rollout = doc["kind"] == "Job" and doc["metadata"]["name"] == "pg-rollout"
            wanted = is_db or is_rollout
            assert spec.get("automountServiceAccountToken") is wanted, doc["metadata"]["name"]


def test_chart_dir_constant() -> None:
    assert (CHART / "Chart.yaml").is_file()


def test_prestop_budget_covers_the_controllers_handover(helm: Helm) -> None:
    """Even at the smallest grace period the schema allows, the agent's preStop waits
    longer than the controller's handover may take, and leaves postgres time to stop."""
    from postgres_ras.controller.service import HANDOVER_TIMEOUT

    schema = json.loads((CHART / "values.schema.json").read_text())
    smallest = schema["properties"]["terminationGracePeriodSeconds"]["minimum"]
    docs = helm.render(sets=[f"terminationGracePeriodSeconds={smallest}"])
    script = container(database(docs), "postgres")["lifecycle"]["preStop"]["exec"]["command"][-1]
    m = re.search(r"time\.monotonic\(\) \+ (\d+)", script)
    assert m, script
    wait = int(m[1])
    assert HANDOVER_TIMEOUT < wait <= smallest - 5, (
        f"preStop waits {wait}s, handover takes up to {HANDOVER_TIMEOUT}s, grace {smallest}s"
    )


def test_rollout_job_calls_real_endpoints(default_docs: list[dict[str, Any]]) -> None:
    """The post-upgrade rollout Job (tests/chart/test_rollout.py) reads GET /cluster and
    asks POST /switchover of the controller API, which lets it in (network + token)."""
    import inspect

    from postgres_ras.controller import auth, rollout
    from postgres_ras.controller.api import create_app

    job = find(default_docs, "Job", "pg-rollout")
    ctr = container(job["spec"]["template"]["spec"], "rollout")
    args = rollout.parse_args(ctr["args"])
    api = urlsplit(args.api_url.format(pod=POD))
    assert api.hostname == f"{POD}.pg-headless.{NAMESPACE}.svc.cluster.local"
    assert api.port == config.ControllerSettings().port
    env = {e["name"]: e for e in ctr["env"]}
    assert env["CONTROLLER_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "controller-token"
    app = create_app(mock.MagicMock())
    rules = {(r.rule, m) for r in app.url_map.iter_rules() for m in r.methods or ()}
    assert ("/cluster", "GET") in rules and ("/switchover", "POST") in rules
    source = inspect.getsource(rollout.KubeTarget)
    assert 'requests.get(url + "/cluster"' in source
    assert 'url + "/switchover"' in source and "requests.post(" in source
    cfg, _ = loaded(default_docs, "controller")
    networks = auth.parse_networks(cfg.controller.allow_networks)
    assert auth.client_allowed("10.244.1.7", networks), "a pod address may ask (with the token)"


def test_pgpool_read_backend_includes_the_primary(default_docs: list[dict[str, Any]]) -> None:
    """pgpool's read backend selects every ready database pod (no role): it is never
    empty while a primary serves, unlike the replicas Service."""
    spec = find(default_docs, "Deployment", "pg-pgpool")["spec"]["template"]["spec"]
    env = container_env(default_docs, spec, container(spec, "pgpool"), "pgpool")
    service = env["PGPOOL_READ_HOST"].split(".")[0]
    selector = find(default_docs, "Service", service)["spec"]["selector"]
    sts = find(default_docs, "StatefulSet", "pg")
    assert selector == sts["spec"]["selector"]["matchLabels"]
    assert config.PublisherSettings().label not in selector
