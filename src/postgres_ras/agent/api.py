"""The agent's node-local HTTP API, used only by its own controller.

Every call must carry ``Authorization: Bearer <agent.auth_token>`` when a
token is configured (401 otherwise). Long actions answer 202 and run as a
job reported by ``GET /status``; a request while a job runs answers 409.
Bad input answers 400 naming the field.
"""

from __future__ import annotations

import hmac
import math
import re
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from postgres_ras.agent.node import Agent, Busy, NoLease
from postgres_ras.agent.pgconf import Upstream
from postgres_ras.errors import PostgresError


class BadRequest(Exception):
    pass


def _body() -> dict[str, Any]:
    if not request.get_data():
        return {}
    data = request.get_json(silent=True)
    if data is None:
        raise BadRequest("request body must be JSON")
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def _upstream(data: dict[str, Any], required: bool) -> Upstream | None:
    raw = data.get("upstream")
    if raw is None:
        if required:
            raise BadRequest('field \'upstream\' is required: {"host": ..., "port": ...}')
        return None
    try:
        port = int(raw["port"])
        host = str(raw["host"])
    except (KeyError, TypeError, ValueError):
        raise BadRequest('field \'upstream\' must be {"host": str, "port": int}') from None
    if not host or not 0 < port < 65536:
        raise BadRequest("field 'upstream' has an empty host or a port out of range")
    return Upstream(host, port)


SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")


def _slot_names(data: dict[str, Any], field: str, required: bool) -> list[str]:
    names = data.get(field)
    if names is None and not required:
        return []
    if (
        not isinstance(names, list)
        or len(names) > 1000
        or not all(isinstance(n, str) and SLOT_NAME.fullmatch(n) for n in names)
    ):
        raise BadRequest(
            f"field '{field}' must be a list of slot names (1-63 characters of a-z, 0-9, _)"
        )
    return names


def _finite(value: Any, low: float, high: float) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and low <= value <= high
    )


def create_app(agent: Agent, token: str | None = None) -> Flask:
    app = Flask("pgras-agent")
    expected = f"Bearer {token}".encode() if token else None

    @app.before_request
    def authenticate() -> Any:
        if expected is None:
            return None
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return jsonify(error="agent API: missing or wrong token (agent.auth_token)"), 401
        return None

    @app.errorhandler(Busy)
    def busy(exc: Busy) -> Any:
        return jsonify(error=f"busy: {exc}"), 409

    @app.errorhandler(NoLease)
    def no_lease(exc: NoLease) -> Any:
        return jsonify(error=str(exc)), 409

    @app.errorhandler(BadRequest)
    def bad(exc: BadRequest) -> Any:
        return jsonify(error=str(exc)), 400

    @app.errorhandler(PostgresError)
    def pg_error(exc: PostgresError) -> Any:
        return jsonify(error=str(exc)), 500

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return jsonify(error=exc.description), exc.code

    def accepted(job: Any) -> Any:
        return jsonify(job=job.to_json()), 202

    @app.get("/status")
    def status() -> Any:
        return jsonify(agent.status())

    @app.post("/heartbeat")
    def heartbeat() -> Any:
        data = _body()
        lease = data.get("lease")
        # NaN or infinity would switch the fence off for good: refuse them.
        if lease is not None and not _finite(lease, 0, 600):
            raise BadRequest("field 'lease' must be a number of seconds in 0..600, or null")
        deadline = data.get("deadline")
        if deadline is not None and not _finite(deadline, 0, 1e12):
            raise BadRequest("field 'deadline' must be a CLOCK_BOOTTIME instant, or null")
        if deadline is None:
            agent.heartbeat(None if lease is None else float(lease))
        else:
            agent.heartbeat(None if lease is None else float(lease), float(deadline))
        return jsonify(ok=True, fenced=agent.fenced)

    @app.post("/bootstrap")
    def bootstrap() -> Any:
        return accepted(agent.bootstrap())

    @app.post("/clone")
    def clone() -> Any:
        upstream = _upstream(_body(), required=True)
        assert upstream is not None
        return accepted(agent.clone(upstream))

    @app.post("/start")
    def start() -> Any:
        data = _body()
        role = data.get("role")
        if role == "primary":
            return accepted(agent.start_primary())
        if role == "replica":
            rewind = data.get("rewind", False)
            if not isinstance(rewind, bool):
                raise BadRequest("field 'rewind' must be true or false")
            return accepted(agent.start_replica(_upstream(data, required=False), rewind))
        raise BadRequest("field 'role' must be 'primary' or 'replica'")

    @app.post("/promote")
    def promote() -> Any:
        return accepted(agent.promote(_slot_names(_body(), "slots", required=False)))

    @app.post("/stop")
    def stop() -> Any:
        data = _body()
        mode = data.get("mode", "fast")
        if mode not in ("smart", "fast", "immediate"):
            raise BadRequest("field 'mode' must be smart, fast or immediate")
        return jsonify(agent.stop(mode, str(data.get("reason", "requested"))))

    @app.post("/slots")
    def slots() -> Any:
        return jsonify(agent.pg.ensure_slots(_slot_names(_body(), "names", required=True)))

    @app.get("/sync")
    def replication() -> Any:
        return jsonify(agent.pg.replication())

    @app.post("/sync")
    def set_sync() -> Any:
        names = _body().get("synchronous_standby_names")
        if not isinstance(names, str) or "\n" in names or len(names) > 4096:
            raise BadRequest("field 'synchronous_standby_names' must be a one-line string")
        agent.pg.set_sync(names)
        return jsonify(ok=True)

    return app
