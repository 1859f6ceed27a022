"""The puppies API of the tutorial, with the tutorial's exact JSON.

Guarantees: every answer is JSON; bad input gets a 4xx naming the field; a
database that is unreachable, read-only or not bootstrapped yet gets 503; SQL is
always parameterised. Success bodies match the tutorial
(``{"status": "success", ..., "message": "Retrieved ALL puppies"}``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import psycopg
from flask import Flask, Response, jsonify, request
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout
from werkzeug.exceptions import HTTPException

from postgres_ras.demo_app import db
from postgres_ras.demo_app.openapi import openapi_document
from postgres_ras.demo_app.validation import InputError, PuppyInput, parse_puppy
from postgres_ras.errors import ConfigError

log = logging.getLogger(__name__)

MAX_CONTENT_LENGTH = 64 * 1024
MAX_ID = 2**31 - 1
COLUMNS = "id, name, breed, age, sex"

Result = tuple[Response, int]


def error(status: int, message: str, field: str | None = None) -> Result:
    body: dict[str, Any] = {"status": "error", "message": message}
    if field is not None:
        body["field"] = field
    return jsonify(body), status


class Unavailable(Exception):
    """The database cannot serve this request now (503)."""


def create_app(dsn: str | None = None, bootstrap: bool = True) -> Flask:
    """Build the app for the server ``dsn`` (default: env PUPPIES_DSN)."""
    server_dsn = dsn if dsn is not None else os.environ.get("PUPPIES_DSN", "")
    if not server_dsn.strip():
        raise ConfigError(
            "PUPPIES_DSN is required: a libpq conninfo of the server, e.g. "
            "'host=127.0.0.1 port=5432 user=postgres password=...'"
        )
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH
    app.json.sort_keys = False  # type: ignore[attr-defined]
    pool = db.make_pool(server_dsn)
    app.extensions["puppies_pool"] = pool
    if bootstrap:
        bootstrapper = db.Bootstrapper(server_dsn)
        app.extensions["puppies_bootstrap"] = bootstrapper
        bootstrapper.start()

    def run(query: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        return _run(pool, query)

    retry_dsn = db.app_conninfo(server_dsn)

    def read(query: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        """For idempotent GETs only: a connection lost mid-query is retried once, afresh."""
        return _run(pool, query, retry_dsn=retry_dsn)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Result:
        field = "body" if exc.code == 413 else None
        return error(exc.code or 500, exc.description or exc.name, field)

    @app.errorhandler(Unavailable)
    def unavailable(exc: Unavailable) -> Result:
        return error(503, str(exc))

    @app.errorhandler(InputError)
    def bad_input(exc: InputError) -> Result:
        return error(400, exc.message, exc.field)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Result:
        log.exception("unexpected error")
        return error(500, "internal error")

    @app.get("/healthz")
    def healthz() -> Result:
        try:
            run(lambda conn: conn.execute("SELECT 1"))
        except Unavailable as exc:
            return jsonify({"status": "error", "database": "unavailable", "message": str(exc)}), 503
        return jsonify({"status": "ok", "database": "ok"}), 200

    @app.get("/api/openapi.json")
    def openapi() -> Result:
        return jsonify(openapi_document()), 200

    @app.get("/api/puppies")
    def get_all() -> Result:
        rows = read(lambda c: c.execute(f"SELECT {COLUMNS} FROM pups ORDER BY id").fetchall())
        return success(data=rows, message="Retrieved ALL puppies")

    @app.get("/api/puppies/<int:pup_id>")
    def get_one(pup_id: int) -> Result:
        if not valid_id(pup_id):
            return not_found(pup_id)
        row = read(
            lambda c: c.execute(f"SELECT {COLUMNS} FROM pups WHERE id = %s", (pup_id,)).fetchone()
        )
        if row is None:
            return not_found(pup_id)
        return success(data=row, message="Retrieved ONE puppy")

    @app.post("/api/puppies")
    def create() -> Result:
        pup = parse_puppy(_body())
        run(
            lambda c: c.execute(
                "INSERT INTO pups (name, breed, age, sex) VALUES (%s, %s, %s, %s)", pup.values()
            )
        )
        return success(message="Inserted one puppy")

    @app.put("/api/puppies/<int:pup_id>")
    def update(pup_id: int) -> Result:
        pup: PuppyInput = parse_puppy(_body())
        if not valid_id(pup_id):
            return not_found(pup_id)
        count = run(
            lambda c: (
                c.execute(
                    "UPDATE pups SET name = %s, breed = %s, age = %s, sex = %s WHERE id = %s",
                    (*pup.values(), pup_id),
                ).rowcount
            )
        )
        if count == 0:
            return not_found(pup_id)
        return success(message="Updated puppy")

    @app.delete("/api/puppies/<int:pup_id>")
    def remove(pup_id: int) -> Result:
        if not valid_id(pup_id):
            return not_found(pup_id)
        count = run(lambda c: c.execute("DELETE FROM pups WHERE id = %s", (pup_id,)).rowcount)
        if count == 0:
            return not_found(pup_id)
        return success(message=f"Removed {count} puppy")

    return app


def success(message: str, data: Any = None) -> Result:
    body: dict[str, Any] = {"status": "success"}
    if data is not None:
        body["data"] = data
    body["message"] = message
    return jsonify(body), 200


def not_found(pup_id: int) -> Result:
    return error(404, f"no puppy with id {pup_id}", "id")


def valid_id(pup_id: int) -> bool:
    """Ids outside the serial range cannot exist: answer 404 without a query."""
    return 1 <= pup_id <= MAX_ID


def _body() -> dict[str, Any]:
    """The request fields: a JSON object, or form fields."""
    if request.is_json:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise InputError("body", "the body must be a JSON object")
        return data
    return request.form.to_dict()


def _run(
    pool: ConnectionPool,
    query: Callable[[psycopg.Connection[Any]], Any],
    retry_dsn: str | None = None,
) -> Any:
    """Run ``query`` on a pooled connection; database trouble becomes Unavailable.

    A connection that failed, or that reached a read-only server (a demoted
    primary, a replica behind the write endpoint), is closed so the pool never
    hands it out again: the next request connects afresh through the endpoint.

    With ``retry_dsn`` (idempotent reads only, never writes), a pooled connection
    that breaks (psycopg.OperationalError: cut by the endpoint when its server
    changes role, or by a restarting server) is retried once on a fresh
    connection to ``retry_dsn``, outside the pool. A pool that cannot hand out a
    connection in time (PoolTimeout) is not retried: that is overload or an
    outage, which another connection would only worsen.
    """
    try:
        return _on_pooled(pool, query)
    except Unavailable as exc:
        cause = exc.__cause__
        if (
            retry_dsn is None
            or not isinstance(cause, psycopg.OperationalError)
            or isinstance(cause, PoolTimeout)
        ):
            raise
        log.info("read failed (%s); retrying once on a fresh connection", str(cause).strip())
    try:
        with psycopg.connect(retry_dsn, autocommit=True) as conn:
            conn.row_factory = dict_row  # type: ignore[assignment]
            return query(conn)
    except psycopg.errors.UndefinedTable as exc:
        raise Unavailable("database not initialised yet, retry later") from exc
    except psycopg.errors.DataError as exc:
        raise InputError("body", f"invalid value: {exc.diag.message_primary}") from exc
    except psycopg.Error as exc:
        log.warning("database error on retry: %s", str(exc).strip())
        raise Unavailable("database unavailable, retry later") from exc


def _on_pooled(pool: ConnectionPool, query: Callable[[psycopg.Connection[Any]], Any]) -> Any:
    """One attempt on a pooled connection (see :func:`_run`)."""
    try:
        with pool.connection() as conn:
            conn.row_factory = dict_row  # type: ignore[assignment]
            try:
                return query(conn)
            except psycopg.errors.DataError as exc:
                raise InputError("body", f"invalid value: {exc.diag.message_primary}") from exc
            except psycopg.errors.UndefinedTable as exc:
                raise Unavailable("database not initialised yet, retry later") from exc
            except psycopg.errors.ReadOnlySqlTransaction as exc:
                conn.close()
                raise Unavailable("no writable primary reachable, retry later") from exc
            except psycopg.Error:
                conn.close()
                raise
    except Unavailable:
        raise
    except InputError:
        raise
    except psycopg.Error as exc:
        log.warning("database error: %s", str(exc).strip())
        raise Unavailable("database unavailable, retry later") from exc
