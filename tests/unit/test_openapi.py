"""The OpenAPI document is valid OpenAPI 3.0 and describes exactly the routes the app registers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV30SpecValidator

import app as app_module
from chalicelib.api.openapi import PUBLIC, document
from chalicelib.auth import guard

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (path, method.upper()): operation
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def routes() -> set[tuple[str, str]]:
    return {(path, method) for path, entries in app_module.app.routes.items() for method in entries}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document()


def test_the_document_is_valid_openapi_3_0(doc: dict[str, Any]) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in OpenAPIV30SpecValidator(doc).iter_errors()]
    assert errors == []
    assert doc["openapi"].startswith("3.0.")
    assert json.loads(json.dumps(doc)) == doc  # plain JSON, ready to serve


def test_every_route_of_the_app_is_documented(doc: dict[str, Any]) -> None:
    missing = sorted(routes() - set(operations(doc)))
    assert missing == [], f"routes without an entry in chalicelib/api/openapi.py: {missing}"


def test_every_documented_operation_is_a_route_of_the_app(doc: dict[str, Any]) -> None:
    extra = sorted(set(operations(doc)) - routes())
    assert extra == [], f"documented operations the app does not register: {extra}"


def test_path_parameters_are_the_routes_own(doc: dict[str, Any]) -> None:
    for (path, method), operation in operations(doc).items():
        declared = [*doc["paths"][path].get("parameters", []), *operation.get("parameters", [])]
        names = sorted(p["name"] for p in declared if p["in"] == "path")
        expected = sorted(part[1:-1] for part in path.split("/") if part.startswith("{"))
        assert names == expected, (method, path)
        entry = app_module.app.routes.get(path, {}).get(method)
        if entry is not None:
            assert sorted(entry.view_args) == expected, (method, path)


def test_errors_share_the_error_schema(doc: dict[str, Any]) -> None:
    shared = doc["components"]["responses"]
    for (path, method), operation in operations(doc).items():
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            if "$ref" in response:
                response = shared[response["$ref"].rsplit("/", 1)[1]]
            schema = response["content"]["application/json"]["schema"]
            refs = [schema, *schema.get("allOf", [])]
            assert {"$ref": "#/components/schemas/Error"} in refs, (method, path, status)


def test_security_is_global_but_for_the_public_routes(doc: dict[str, Any]) -> None:
    assert set(PUBLIC) == guard.PUBLIC  # the routes the guard lets through unsigned
    assert doc["security"] == [{"bearerAuth": []}]
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    for (path, method), operation in operations(doc).items():
        statuses = set(operation["responses"])
        if path in PUBLIC:
            assert operation.get("security") == [], (method, path)
        else:
            assert "security" not in operation, (method, path)
            assert "401" in statuses, (method, path)
        if path.startswith("/admin/"):
            assert "403" in statuses, (method, path)


def test_every_request_body_can_be_refused(doc: dict[str, Any]) -> None:
    for (path, method), operation in operations(doc).items():
        if "requestBody" in operation:
            assert {"400", "413"} <= set(operation["responses"]), (method, path)
            assert set(operation["requestBody"]["content"]) == {"application/json"}, (method, path)


def test_each_call_builds_a_new_document() -> None:
    first = document()
    first["paths"].clear()
    assert document()["paths"]
