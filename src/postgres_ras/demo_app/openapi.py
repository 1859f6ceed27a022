"""The hand-written OpenAPI 3 document of the puppies API (served at /api/openapi.json)."""

from __future__ import annotations

from typing import Any

from postgres_ras.demo_app.validation import MAX_AGE, MAX_TEXT, MIN_AGE


def _json(schema_ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}


def _resp(description: str, schema_ref: str) -> dict[str, Any]:
    return {"description": description, "content": _json(schema_ref)}


_ERRORS = {
    "400": _resp("Invalid input; `field` names the offending field", "Error"),
    "404": _resp("No puppy with this id", "Error"),
    "413": _resp("Request body too large", "Error"),
    "503": _resp("No (writable) database reachable; retry later", "Error"),
}

_ID_PARAM = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}

_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/PuppyInput"}},
        "application/x-www-form-urlencoded": {
            "schema": {"$ref": "#/components/schemas/PuppyInput"}
        },
    },
}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: _ERRORS[code] for code in codes}


def openapi_document() -> dict[str, Any]:
    text = {"type": "string", "maxLength": MAX_TEXT}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "puppies",
            "version": "1.0.0",
            "description": "The puppies API of the tutorial, used to verify postgres-ras.",
        },
        "paths": {
            "/healthz": {
                "get": {
                    "summary": "Liveness and database reachability",
                    "responses": {
                        "200": _resp("Database reachable", "Health"),
                        "503": _resp("Database unreachable", "Health"),
                    },
                }
            },
            "/api/puppies": {
                "get": {
                    "summary": "All puppies",
                    "responses": {
                        "200": _resp("Retrieved ALL puppies", "PuppyList"),
                        **_errors("503"),
                    },
                },
                "post": {
                    "summary": "Insert one puppy",
                    "requestBody": _BODY,
                    "responses": {
                        "200": _resp("Inserted one puppy", "Message"),
                        **_errors("400", "413", "503"),
                    },
                },
            },
            "/api/puppies/{id}": {
                "parameters": [_ID_PARAM],
                "get": {
                    "summary": "One puppy",
                    "responses": {
                        "200": _resp("Retrieved ONE puppy", "PuppyOne"),
                        **_errors("404", "503"),
                    },
                },
                "put": {
                    "summary": "Replace one puppy",
                    "requestBody": _BODY,
                    "responses": {
                        "200": _resp("Updated puppy", "Message"),
                        **_errors("400", "404", "413", "503"),
                    },
                },
                "delete": {
                    "summary": "Remove one puppy",
                    "responses": {
                        "200": _resp("Removed 1 puppy", "Message"),
                        **_errors("404", "503"),
                    },
                },
            },
        },
        "components": {
            "schemas": {
                "Puppy": {
                    "type": "object",
                    "required": ["id", "name", "breed", "age", "sex"],
                    "properties": {
                        "id": {"type": "integer"},
                        "name": {"type": "string"},
                        "breed": {"type": "string", "nullable": True},
                        "age": {"type": "integer", "nullable": True},
                        "sex": {"type": "string", "nullable": True},
                    },
                },
                "PuppyInput": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {**text, "minLength": 1},
                        "breed": text,
                        "age": {"type": "integer", "minimum": MIN_AGE, "maximum": MAX_AGE},
                        "sex": text,
                    },
                },
                "PuppyList": {
                    "type": "object",
                    "required": ["status", "data", "message"],
                    "properties": {
                        "status": {"type": "string", "enum": ["success"]},
                        "data": {"type": "array", "items": {"$ref": "#/components/schemas/Puppy"}},
                        "message": {"type": "string"},
                    },
                },
                "PuppyOne": {
                    "type": "object",
                    "required": ["status", "data", "message"],
                    "properties": {
                        "status": {"type": "string", "enum": ["success"]},
                        "data": {"$ref": "#/components/schemas/Puppy"},
                        "message": {"type": "string"},
                    },
                },
                "Message": {
                    "type": "object",
                    "required": ["status", "message"],
                    "properties": {
                        "status": {"type": "string", "enum": ["success"]},
                        "message": {"type": "string"},
                    },
                },
                "Health": {
                    "type": "object",
                    "required": ["status", "database"],
                    "properties": {
                        "status": {"type": "string"},
                        "database": {"type": "string"},
                        "message": {"type": "string"},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["status", "message"],
                    "properties": {
                        "status": {"type": "string", "enum": ["error"]},
                        "message": {"type": "string"},
                        "field": {"type": "string"},
                    },
                },
            }
        },
    }
