"""The puppies app against a real PostgreSQL: the tutorial's API, bad input, outages."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from schemathesis.checks import not_a_server_error

from postgres_ras.demo_app import create_app
from postgres_ras.demo_app.app import MAX_CONTENT_LENGTH
from postgres_ras.errors import ConfigError
from tests.access.conftest import PgServer
from tests.helpers import poll

pytestmark = pytest.mark.access


@pytest.fixture(scope="module")
def app(primary: PgServer) -> Iterator[Flask]:
    flask_app = create_app(primary.dsn)
    poll("schema bootstrap", flask_app.extensions["puppies_bootstrap"].ready.is_set, 30)
    yield flask_app
    flask_app.extensions["puppies_pool"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def all_pups(client: FlaskClient) -> list[dict[str, Any]]:
    resp = client.get("/api/puppies")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["status"] == "success"
    assert body["message"] == "Retrieved ALL puppies"
    return list(body["data"])


def test_seed_row_created_once(app: Flask, client: FlaskClient, primary: PgServer) -> None:
    pups = all_pups(client)
    assert pups[0] == {"id": 1, "name": "Tyler", "breed": "Retrieved", "age": 3, "sex": "M"}
    # A second app on the same server does not seed again.
    second = create_app(primary.dsn)
    poll("second bootstrap", second.extensions["puppies_bootstrap"].ready.is_set, 30)
    second.extensions["puppies_pool"].close()
    assert primary.query("SELECT count(*) FROM pups WHERE name = 'Tyler'", "puppies") == 1


def test_tutorial_crud(client: FlaskClient) -> None:
    resp = client.post("/api/puppies", data={"name": "Whisky", "breed": "annoying", "age": "3",
                                             "sex": "f"})  # fmt: skip
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "success", "message": "Inserted one puppy"}
    created = next(p for p in all_pups(client) if p["name"] == "Whisky")
    pid = created["id"]
    assert created == {"id": pid, "name": "Whisky", "breed": "annoying", "age": 3, "sex": "f"}

    resp = client.put(f"/api/puppies/{pid}", json={"name": "Hunter", "breed": "annoying",
                                                   "age": 33, "sex": "m"})  # fmt: skip
    assert resp.get_json() == {"status": "success", "message": "Updated puppy"}
    resp = client.get(f"/api/puppies/{pid}")
    assert resp.get_json() == {
        "status": "success",
        "data": {"id": pid, "name": "Hunter", "breed": "annoying", "age": 33, "sex": "m"},
        "message": "Retrieved ONE puppy",
    }
    resp = client.delete(f"/api/puppies/{pid}")
    assert resp.get_json() == {"status": "success", "message": "Removed 1 puppy"}
    assert client.get(f"/api/puppies/{pid}").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "field"),
    [
        ("post", "/api/puppies", {"data": {"breed": "x"}}, 400, "name"),
        ("post", "/api/puppies", {"json": {"name": ""}}, 400, "name"),
        ("post", "/api/puppies", {"json": {"name": 5}}, 400, "name"),
        ("post", "/api/puppies", {"data": {"name": "a", "age": "three"}}, 400, "age"),
        ("post", "/api/puppies", {"json": {"name": "a", "age": 2.5}}, 400, "age"),
        ("post", "/api/puppies", {"json": {"name": "a", "age": True}}, 400, "age"),
        ("post", "/api/puppies", {"json": {"name": "a", "age": 10**30}}, 400, "age"),
        ("post", "/api/puppies", {"json": {"name": "a\x00b"}}, 400, "name"),
        ("post", "/api/puppies", {"json": {"name": "\ud800"}}, 400, "name"),
        ("post", "/api/puppies", {"json": {"name": "a", "sex": "x" * 1000}}, 400, "sex"),
        ("post", "/api/puppies", {"json": ["name"]}, 400, "body"),
        ("post", "/api/puppies", {"data": "{not json", "content_type": "application/json"},
         400, "body"),
        ("post", "/api/puppies", {"data": "x" * (MAX_CONTENT_LENGTH + 1),
                                  "content_type": "text/plain"}, 413, "body"),
        ("put", "/api/puppies/1", {"json": {"breed": "x"}}, 400, "name"),
        ("put", "/api/puppies/999999", {"json": {"name": "x"}}, 404, "id"),
        ("get", "/api/puppies/999999", {}, 404, "id"),
        ("get", "/api/puppies/0", {}, 404, "id"),
        ("get", "/api/puppies/99999999999999999999", {}, 404, "id"),
        ("delete", "/api/puppies/999999", {}, 404, "id"),
        ("get", "/api/puppies/abc", {}, 404, None),
        ("patch", "/api/puppies", {}, 405, None),
    ],
)  # fmt: skip
def test_bad_requests_get_json_4xx(
    client: FlaskClient, method: str, path: str, kwargs: dict[str, Any], status: int,
    field: str | None,
) -> None:  # fmt: skip
    resp = getattr(client, method)(path, **kwargs)
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["status"] == "error"
    assert body["message"]
    assert body.get("field") == field
    assert "Traceback" not in resp.get_data(as_text=True)


def test_sql_injection_is_stored_as_text(client: FlaskClient, primary: PgServer) -> None:
    evil = "Bobby'); DROP TABLE pups; --"
    resp = client.post("/api/puppies", json={"name": evil, "breed": "' OR 1=1 --"})
    assert resp.status_code == 200
    stored = [p for p in all_pups(client) if p["name"] == evil]
    assert stored and stored[0]["breed"] == "' OR 1=1 --"
    assert primary.query("SELECT count(*) FROM pups", "puppies") >= 1  # type: ignore[operator]


def test_openapi_and_healthz(client: FlaskClient) -> None:
    doc = client.get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {"/healthz", "/api/puppies", "/api/puppies/{id}"}
    assert client.get("/healthz").get_json() == {"status": "ok", "database": "ok"}


@pytest.fixture(scope="module")
def api_schema(app: Flask) -> Any:
    return schemathesis.openapi.from_wsgi("/api/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@hypothesis.settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_schemathesis_finds_no_server_error(case: Any) -> None:
    case.call_and_validate(checks=[not_a_server_error])


def test_writes_503_while_database_down_then_recover(
    app: Flask, client: FlaskClient, primary: PgServer
) -> None:
    primary.stop()
    try:
        resp = client.post("/api/puppies", json={"name": "during-outage"})
        assert resp.status_code == 503, resp.get_data(as_text=True)
        assert resp.get_json()["status"] == "error"
        assert client.get("/api/puppies").status_code == 503
        assert client.get("/healthz").status_code == 503
        # Outlast the pool's reconnect_timeout: recovery must not depend on its backoff.
        time.sleep(4)
        assert client.get("/api/puppies").status_code == 503
    finally:
        primary.start()

    def write_ok() -> bool:
        return client.post("/api/puppies", json={"name": "after-outage"}).status_code == 200

    poll("writes to succeed again after the database came back", write_ok, 20, 0.5)
    assert any(p["name"] == "after-outage" for p in all_pups(client))


def test_app_requires_a_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PUPPIES_DSN", raising=False)
    with pytest.raises(ConfigError, match="PUPPIES_DSN"):
        create_app()


def test_app_on_read_only_server_waits_for_schema(primary: PgServer) -> None:
    """An app pointed at a read-only endpoint never creates anything and never crashes."""
    ro_dsn = primary.dsn + " options='-c default_transaction_read_only=on'"
    ro_app = create_app(ro_dsn)
    try:
        client = ro_app.test_client()
        resp = client.post("/api/puppies", json={"name": "ro"})
        assert resp.status_code == 503, resp.get_data(as_text=True)
        assert json.loads(resp.get_data(as_text=True))["status"] == "error"
        # The schema exists already (created by the writable app): reads work.
        poll("ro bootstrap", ro_app.extensions["puppies_bootstrap"].ready.is_set, 10)
        assert client.get("/api/puppies").status_code == 200
    finally:
        ro_app.extensions["puppies_pool"].close()
