"""Every error response is JSON `{"error": {"code", "message"}}`; bad input is a 4xx, never a stack trace."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chalice import Chalice
from chalice.test import Client

import app as app_module
from chalicelib.errors import ConflictError, NotFoundError, ValidationError


@pytest.fixture
def client() -> Any:
    app = Chalice(app_name="errors-test")
    app.register_middleware(app_module.errors_as_json, "http")

    @app.route("/missing")
    def missing() -> None:
        raise NotFoundError("no movie 42", details={"id": 42})

    @app.route("/conflict")
    def conflict() -> None:
        raise ConflictError("already running")

    @app.route("/echo", methods=["POST"])
    def echo() -> Any:
        body = app.current_request.json_body
        if not isinstance(body, dict):
            raise ValidationError("body must be a JSON object")
        return body

    @app.route("/bug")
    def bug() -> None:
        raise KeyError("secret internals")

    with Client(app) as c:
        yield c


def error_of(response: Any) -> dict[str, Any]:
    assert response.headers["Content-Type"] == "application/json"
    return json.loads(response.body)["error"]


def test_our_errors_map_to_their_status_and_code(client: Any) -> None:
    response = client.http.get("/missing")
    assert response.status_code == 404
    assert error_of(response) == {"code": "not_found", "message": "no movie 42", "details": {"id": 42}}
    response = client.http.get("/conflict")
    assert response.status_code == 409 and error_of(response)["code"] == "conflict"


def test_a_malformed_json_body_is_a_400(client: Any) -> None:
    response = client.http.post("/echo", body=b"{nope", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert error_of(response)["code"] == "bad_request"


def test_a_valid_body_of_the_wrong_shape_is_a_400(client: Any) -> None:
    response = client.http.post("/echo", body=b"[1]", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert error_of(response) == {"code": "invalid_request", "message": "body must be a JSON object"}


def test_a_wrong_method_is_a_405_in_json(client: Any) -> None:
    response = client.http.delete("/missing")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"


def test_an_unexpected_exception_is_a_500_without_internals(client: Any) -> None:
    response = client.http.get("/bug")
    assert response.status_code == 500
    assert error_of(response) == {"code": "internal_error", "message": "Internal server error"}
    assert b"secret internals" not in response.body and b"Traceback" not in response.body
