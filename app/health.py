"""Health endpoints for load balancers and orchestrators."""

from flask import Blueprint, Response, jsonify

bp = Blueprint("health", __name__)


@bp.get("/health/live")
def live() -> Response:
    """The process serves requests; says nothing about its dependencies."""
    return jsonify({"status": "UP"})
