"""GET /health."""

from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.errors import error_body, json_response
from chalicelib.health import check_health
from chalicelib.settings import get_settings

bp = Blueprint(__name__)


@bp.route("/health", methods=["GET"])
def health() -> Response:
    healthy, report = check_health(get_settings())
    if healthy:
        return json_response(200, report)
    parts = ", ".join(sorted(report["failing"]))
    body = error_body("unavailable", f"cannot reach {parts}", report["failing"]) | report
    return json_response(503, body)
