"""The hand-written OpenAPI 3 document of the controller's REST API (``GET /openapi.json``).

Kept beside the routes it describes; the schemathesis test drives every
path through it, so a route and its document cannot drift far apart.
"""

from __future__ import annotations

from typing import Any

_STATUS = {"application/json": {"schema": {"$ref": "#/components/schemas/NodeStatus"}}}
_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_LAG = {
    "name": "lag",
    "in": "query",
    "required": False,
    "description": "Largest acceptable replication lag in bytes.",
    "schema": {"type": "integer", "minimum": 0},
}


def _probe(summary: str, ok: str, params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": {"description": ok, "content": _STATUS},
            "503": {"description": "Not in that state", "content": _STATUS},
        },
    }
    if params:
        op["parameters"] = params
        op["responses"]["400"] = {"description": "Invalid query parameter", "content": _ERROR}
    return {"get": op}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "postgres-ras controller",
            "version": "1.0.0",
            "description": "A node's REST API: probes for routers and Kubernetes, the cluster "
            "view, metrics and planned switchover.",
        },
        "paths": {
            "/health": _probe("Postgres runs on this node", "Postgres runs"),
            "/primary": _probe("This node is the writable leader", "Writable leader"),
            "/replica": _probe("This node is a streaming replica", "Streaming replica", [_LAG]),
            "/readiness": _probe(
                "Kubernetes readiness: lock-holding primary, or streaming replica within lag "
                "(default maximum_lag_on_failover)",
                "Ready",
                [_LAG],
            ),
            "/liveness": {
                "get": {
                    "summary": "Kubernetes liveness: the HA loop completed a cycle within ttl",
                    "responses": {
                        "200": {"description": "Alive", "content": _LIVENESS},
                        "503": {"description": "HA loop stalled", "content": _LIVENESS},
                    },
                }
            },
            "/status": {
                "get": {
                    "summary": "This node's state",
                    "parameters": [
                        {
                            "name": "fresh",
                            "in": "query",
                            "required": False,
                            "description": "Non-empty: read the WAL position live from the agent",
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {"description": "Node state", "content": _STATUS},
                        "503": {"description": "Agent unreachable", "content": _ERROR},
                    },
                }
            },
            "/cluster": {
                "get": {
                    "summary": "Members, leader, pending switchover, recent history",
                    "responses": {
                        "200": {
                            "description": "Cluster view",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "503": {"description": "Consul unreachable", "content": _ERROR},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (Patroni names with the pgras_ prefix)",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/switchover": {
                "post": {
                    "summary": "Planned switchover to a replica (or the best one)",
                    "security": [{"bearer": []}],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"to": {"type": "string", "nullable": True}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "Accepted; the leader carries it out",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "400": {"description": "Invalid request", "content": _ERROR},
                        "401": {"description": "Missing or wrong bearer token", "content": _ERROR},
                        "403": {
                            "description": "Client network not allowed, or no token configured",
                            "content": _ERROR,
                        },
                        "409": {"description": "Target not a running replica", "content": _ERROR},
                        "503": {
                            "description": "No leader, or Consul unreachable",
                            "content": _ERROR,
                        },
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3 document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
                "NodeStatus": {
                    "type": "object",
                    "required": ["name", "role", "running"],
                    "properties": {
                        "name": {"type": "string"},
                        "role": {"type": "string"},
                        "running": {"type": "boolean"},
                    },
                },
                "Liveness": {
                    "type": "object",
                    "required": ["alive"],
                    "properties": {
                        "alive": {"type": "boolean"},
                        "last_cycle_age": {"type": "number", "nullable": True},
                        "ttl": {"type": "number"},
                    },
                },
            },
        },
    }


_LIVENESS = {"application/json": {"schema": {"$ref": "#/components/schemas/Liveness"}}}
