"""The controller REST API over a fake HA snapshot: probes, liveness, auth, OpenAPI, schemathesis.

The HA object is faked (its snapshot, config, agent and DCS); everything
from the Flask routes down is the real code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from pydantic import SecretStr

from postgres_ras.config import NodeConfig, load
from postgres_ras.controller import auth
from postgres_ras.controller.api import create_app
from postgres_ras.controller.ha import Snapshot
from postgres_ras.controller.lease import Lease
from postgres_ras.controller.state import NodeView, Observation, Role, Settings
from postgres_ras.dcs.base import Cluster, Leader, Member
from postgres_ras.errors import DCSError

TOKEN = "s3cret-token"
GIB = 1 << 30


def member(name: str, role: str, lsn: int, state: str = "running") -> Member:
    return Member(
        name, f"http://127.0.0.1:1/{name}", "127.0.0.1", 5432, role, state, 1, lsn, False, "s"
    )


def cluster(leader_lsn: int = GIB) -> Cluster:
    return Cluster(
        initialize="7000",
        leader=Leader("node1", "s1", 10),
        members=(member("node1", "primary", leader_lsn), member("node2", "replica", GIB)),
    )


@dataclass
class FakeDCS:
    cluster: Cluster | None = field(default_factory=cluster)
    written: list[tuple[str, str]] = field(default_factory=list)

    def get_cluster(self) -> Cluster:
        if self.cluster is None:
            raise DCSError("Consul at http://127.0.0.1:1 unreachable")
        return self.cluster

    def put(self, key: str, value: str) -> None:
        self.written.append((key, value))


class FakeAgent:
    def status(self) -> dict[str, Any]:
        return {"running": True, "role": "replica", "has_data": True, "lsn": "0/40000000"}


@dataclass
class FakeHA:
    config: NodeConfig
    snapshot: Snapshot = field(default_factory=Snapshot)
    dcs: FakeDCS = field(default_factory=FakeDCS)
    agent: FakeAgent = field(default_factory=FakeAgent)
    instance: str = "controller-instance-1"

    @property
    def lease(self) -> Lease:
        lease = Lease(time.monotonic)
        if self.snapshot.primary_ok:
            lease.deadline = time.monotonic() + 2.0
        return lease


def config(**controller: Any) -> NodeConfig:
    env = {"PGRAS_NAME": "node2", "PGRAS_DATA_DIR": "/tmp/unused"}
    c = load(None, env)
    return c.model_copy(update={"controller": c.controller.model_copy(update=controller)})


def node(role: Role, streaming: bool = False, lsn: int = GIB, running: bool = True) -> NodeView:
    return NodeView(running=running, role=role, has_data=True, lsn=lsn, streaming=streaming)


def snap(
    n: NodeView | None,
    c: Cluster | None = None,
    primary_ok: bool = False,
    age: float = 0.1,
    settings: Settings | None = None,
) -> Snapshot:
    o = Observation(me="node2", node=n, cluster=c, session="s2", settings=settings or Settings())
    return Snapshot(o, None, primary_ok, time.time() - age)


def client(ha: FakeHA) -> FlaskClient:
    app: Flask = create_app(ha)  # type: ignore[arg-type]
    return app.test_client()


# --- readiness -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "primary_ok", "leader_lsn", "query", "code"),
    [
        (node(Role.PRIMARY), True, GIB, "", 200),  # the lock-holding primary
        (node(Role.PRIMARY), False, GIB, "", 503),  # a primary that lost the lock
        (node(Role.REPLICA, streaming=True), False, GIB, "", 200),
        (node(Role.REPLICA, streaming=True), False, GIB + 2 * (1 << 20), "", 503),  # > 1 MiB
        (node(Role.REPLICA, streaming=True), False, GIB + 2 * (1 << 20), "?lag=4194304", 200),
        (node(Role.REPLICA, streaming=True), False, GIB + 10, "?lag=0", 503),
        (node(Role.REPLICA, streaming=False), False, GIB, "", 503),  # not streaming yet
        (node(Role.REPLICA, streaming=True, running=False), False, GIB, "", 503),
        (None, False, GIB, "", 503),  # agent unreachable
    ],
)
def test_readiness(
    n: NodeView | None, primary_ok: bool, leader_lsn: int, query: str, code: int
) -> None:
    ha = FakeHA(config(), snap(n, cluster(leader_lsn), primary_ok))
    resp = client(ha).get("/readiness" + query)
    assert resp.status_code == code, resp.get_json()


def test_readiness_default_lag_follows_the_dynamic_config() -> None:
    lagging = node(Role.REPLICA, streaming=True)
    tight = Settings(maximum_lag_on_failover=5)
    ha = FakeHA(config(), snap(lagging, cluster(GIB + 10), settings=tight))
    assert client(ha).get("/readiness").status_code == 503
    ha.snapshot = snap(lagging, cluster(GIB + 10), settings=Settings(maximum_lag_on_failover=10))
    assert client(ha).get("/readiness").status_code == 200


def test_readiness_without_consul_view_is_not_ready() -> None:
    ha = FakeHA(config(), snap(node(Role.REPLICA, streaming=True), None))
    assert client(ha).get("/readiness").status_code == 503


@pytest.mark.parametrize("lag", ["abc", "-1", "1.5"])
def test_bad_lag_is_400(lag: str) -> None:
    ha = FakeHA(config(), snap(node(Role.REPLICA, streaming=True), cluster()))
    for path in ("/readiness", "/replica"):
        resp = client(ha).get(f"{path}?lag={lag}")
        assert resp.status_code == 400 and "lag" in resp.get_json()["error"]


# --- liveness ------------------------------------------------------------------------
def test_liveness_follows_the_last_cycle_not_postgres() -> None:
    ha = FakeHA(config(), Snapshot())
    resp = client(ha).get("/liveness")
    assert resp.status_code == 503 and resp.get_json()["alive"] is False  # no cycle yet
    # Postgres down (a long basebackup, a recovery): still alive while the loop cycles.
    ha.snapshot = snap(node(Role.STOPPED, running=False), None, age=0.5)
    resp = client(ha).get("/liveness")
    assert resp.status_code == 200 and resp.get_json()["alive"] is True
    ha.snapshot = snap(None, None, age=3.9)  # agent unreachable, still within ttl=4
    assert client(ha).get("/liveness").status_code == 200
    ha.snapshot = snap(node(Role.PRIMARY), cluster(), True, age=4.5)  # loop stuck > ttl
    body = client(ha).get("/liveness").get_json()
    assert body["alive"] is False and body["ttl"] == 4.0 and body["last_cycle_age"] >= 4.5


# --- state-changing endpoints --------------------------------------------------------
def switchover(c: FlaskClient, token: str | None, addr: str = "127.0.0.1") -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return c.post(
        "/switchover", json={"to": "node2"}, headers=headers, environ_base={"REMOTE_ADDR": addr}
    )


def test_switchover_without_a_configured_token_is_refused_with_the_fix() -> None:
    ha = FakeHA(config(), snap(node(Role.PRIMARY), cluster(), True))
    resp = switchover(client(ha), "anything")
    assert resp.status_code == 403
    assert "PGRAS_CONTROLLER__AUTH_TOKEN" in resp.get_json()["error"]
    assert ha.dcs.written == []


@pytest.mark.parametrize("given", [None, "", "wrong", TOKEN + "x", TOKEN[:-1]])
def test_switchover_with_a_wrong_token_is_401(given: str | None) -> None:
    ha = FakeHA(config(auth_token=SecretStr(TOKEN)), snap(node(Role.PRIMARY), cluster(), True))
    resp = switchover(client(ha), given)
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert ha.dcs.written == []


def test_switchover_with_the_token_from_loopback_is_accepted() -> None:
    ha = FakeHA(config(auth_token=SecretStr(TOKEN)), snap(node(Role.PRIMARY), cluster(), True))
    resp = switchover(client(ha), TOKEN)
    assert resp.status_code == 202, resp.get_json()
    assert [k for k, _ in ha.dcs.written] == ["switchover"]


def test_switchover_from_outside_the_allowed_networks_is_403() -> None:
    cfg = config(auth_token=SecretStr(TOKEN), allow_networks=["10.1.0.0/16"])
    ha = FakeHA(cfg, snap(node(Role.PRIMARY), cluster(), True))
    resp = switchover(client(ha), TOKEN, addr="192.168.5.5")
    assert resp.status_code == 403 and "allow_networks" in resp.get_json()["error"]
    assert switchover(client(ha), TOKEN, addr="10.1.2.3").status_code == 202
    assert switchover(client(ha), TOKEN, addr="::ffff:10.1.2.3").status_code == 202


def test_read_only_endpoints_stay_open_from_anywhere() -> None:
    cfg = config(auth_token=SecretStr(TOKEN))
    ha = FakeHA(cfg, snap(node(Role.PRIMARY), cluster(), True))
    c = client(ha)
    for path in ("/primary", "/readiness", "/liveness", "/health", "/cluster", "/metrics"):
        resp = c.get(path, environ_base={"REMOTE_ADDR": "203.0.113.9"})
        assert resp.status_code == 200, (path, resp.status_code)


def test_auth_check_is_pure_and_ordered() -> None:
    nets = auth.parse_networks(["10.0.0.0/8"])
    token = SecretStr(TOKEN)
    assert auth.check("GET", "8.8.8.8", None, None, nets) is None
    assert auth.check("POST", "8.8.8.8", f"Bearer {TOKEN}", token, nets).status == 403  # type: ignore[union-attr]
    assert auth.check("POST", "10.0.0.1", f"bearer {TOKEN}", token, nets) is None
    assert auth.check("DELETE", "::1", "Basic abc", token, nets).status == 401  # type: ignore[union-attr]
    assert auth.check("POST", "not-an-ip", f"Bearer {TOKEN}", token, nets).status == 403  # type: ignore[union-attr]


# --- OpenAPI + schemathesis ----------------------------------------------------------
def test_openapi_document_lists_every_route() -> None:
    ha = FakeHA(config(), snap(node(Role.PRIMARY), cluster(), True))
    app: Flask = create_app(ha)  # type: ignore[arg-type]
    doc = app.test_client().get("/openapi.json").get_json()
    routes = {r.rule for r in app.url_map.iter_rules() if r.endpoint != "static"}
    assert set(doc["paths"]) == routes


SCENARIOS = {
    "primary": lambda: FakeHA(
        config(auth_token=SecretStr(TOKEN)), snap(node(Role.PRIMARY), cluster(), True)
    ),
    "replica-no-consul": lambda: FakeHA(
        config(), snap(node(Role.REPLICA, streaming=True), None), dcs=FakeDCS(None)
    ),
}


@pytest.fixture(params=sorted(SCENARIOS))
def api_schema(request: pytest.FixtureRequest) -> Any:
    app = create_app(SCENARIOS[request.param]())  # type: ignore[arg-type]
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


def no_internal_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """503 is a probe's documented 'not in that state' (HAProxy and kubelet read it); a 500
    (an unhandled exception) is the bug we hunt."""
    if response.status_code == 500:
        raise AssertionError(f"500 from {case.method} {case.path}: {response.text[:300]}")
    return None


@schema.parametrize()
@hypothesis.settings(
    max_examples=30, deadline=None, suppress_health_check=list(hypothesis.HealthCheck)
)
def test_schemathesis_finds_no_server_error(case: Any) -> None:
    # With the token when the scenario has one, so POST /switchover is exercised past auth.
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=[no_internal_error])


# --- the controller settings behind all this -----------------------------------------
def test_controller_settings_refuse_bad_networks_and_half_a_tls_pair() -> None:
    from postgres_ras.errors import ConfigError

    env = {"PGRAS_NAME": "n1", "PGRAS_DATA_DIR": "/tmp/unused"}
    with pytest.raises(ConfigError, match=r"allow_networks: 'x' is not a network"):
        load(None, {**env, "PGRAS_CONTROLLER__ALLOW_NETWORKS": '["x"]'})
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        load(None, {**env, "PGRAS_CONTROLLER__TLS_CERT": "/etc/tls.crt"})
    c = load(None, {**env, "PGRAS_CONTROLLER__AUTH_TOKEN": TOKEN})
    assert c.controller.auth_token is not None
    assert c.controller.auth_token.get_secret_value() == TOKEN
    assert TOKEN not in repr(c) and c.controller.scheme == "http"
    both = {"PGRAS_CONTROLLER__TLS_CERT": "/c", "PGRAS_CONTROLLER__TLS_KEY": "/k"}
    assert load(None, {**env, **both}).controller.scheme == "https"


@pytest.mark.parametrize(
    ("sync", "mode", "expected"),
    [("node2", True, 1.0), ("node3", True, 0.0), ("node2", False, 0.0), (None, True, 0.0)],
)
def test_sync_standby_in_metrics_and_cluster(sync: str | None, mode: bool, expected: float) -> None:
    from dataclasses import replace

    ha = FakeHA(config())
    c = replace(cluster(), sync=sync)
    ha.snapshot = snap(
        node(Role.REPLICA, streaming=True), c, settings=Settings(synchronous_mode=mode)
    )
    text = client(ha).get("/metrics").get_data(as_text=True)
    line = next(x for x in text.splitlines() if x.startswith("pgras_sync_standby{"))
    assert float(line.rsplit(" ", 1)[1]) == expected
    body = client(ha).get("/cluster").get_json()
    assert body["synchronous_mode"] is mode and body["sync"] == ([sync] if sync else [])
    flags = {m["name"]: m["sync_standby"] for m in body["members"]}
    assert flags["node2"] is (expected == 1.0)
