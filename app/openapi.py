"""The OpenAPI 3.1 document, generated from the models that validate requests.

Hand-assembled from pydantic's JSON Schemas (OpenAPI 3.1 uses JSON Schema
2020-12, which pydantic emits): the Flask OpenAPI libraries we looked at
either replace Flask's routing or their own error shape, and the paths here
are few and stable.
"""

from typing import Any

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

from app.context import celery_app
from app.models import ErrorResponse, HealthStatus, Job, JobTypeList
from tasks.core.registry import JobType
from tasks.core.submission import MAX_DELAY_S

bp = Blueprint("openapi", __name__)
REF = "#/components/schemas/{model}"


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}},
    }


def _ok(model: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}},
    }


def _accepts_empty(job_type: JobType) -> bool:
    try:
        job_type.payload_model.model_validate({})
    except ValidationError:
        return False
    return True


def _submission_schema(job_type: JobType, payload_ref: str) -> dict[str, Any]:
    # "payload" may be left out (it defaults to {}) only when nothing in it is required.
    required = ["type"] if _accepts_empty(job_type) else ["type", "payload"]
    return {
        "type": "object",
        "title": f"Submit {job_type.name}",
        "additionalProperties": False,
        "required": required,
        "properties": {
            "type": {"const": job_type.name},
            "payload": {"$ref": payload_ref},
            "delay_s": {"type": ["number", "null"], "minimum": 0, "maximum": MAX_DELAY_S},
            "run_at": {"type": ["string", "null"], "format": "date-time"},
        },
        "not": {"required": ["delay_s", "run_at"]},
    }


def _batch_item_schema(job_type: JobType, payload_ref: str) -> dict[str, Any]:
    """A batch runs every job now: no delay_s or run_at."""
    schema = _submission_schema(job_type, payload_ref)
    for key in ("delay_s", "run_at"):
        schema["properties"].pop(key)
    schema.pop("not")
    return schema


def _op(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    scope: str | None = None,
    parameters: list | None = None,
    body: dict | None = None,
) -> dict[str, Any]:
    """One operation; every one can also answer 429, and a protected one 401 and 403."""
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "responses": {**responses, "429": _error("rate limit reached")},
    }
    if scope:
        op["security"] = [{"bearer": [scope]}]
        op["responses"] |= {"401": _error("no valid token"), "403": _error(f"needs {scope}")}
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    return op


def _json(description: str, schema: dict | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema or {"type": "object"}}},
    }


def build_document(job_types: dict[str, JobType], version: str = "0.1.0") -> dict[str, Any]:
    models: list[type[BaseModel]] = [Job, JobTypeList, ErrorResponse, HealthStatus]
    payload_models = {jt.payload_model for jt in job_types.values()}
    keyed = [(m, "validation") for m in payload_models] + [(m, "serialization") for m in models]
    refs, defs = models_json_schema(keyed, ref_template=REF, by_alias=True)
    schemas = defs.get("$defs", {})
    submissions, batch_items = [], []
    for jt in job_types.values():
        name = f"Submit_{jt.name.replace('.', '_')}"
        payload_ref = refs[(jt.payload_model, "validation")]["$ref"]
        schemas[name] = _submission_schema(jt, payload_ref)
        schemas[f"Batch{name}"] = _batch_item_schema(jt, payload_ref)
        submissions.append({"$ref": REF.format(model=name)})
        batch_items.append({"$ref": REF.format(model=f"Batch{name}")})
    submit_schema = {"oneOf": submissions, "discriminator": {"propertyName": "type"}}
    batch_item_schema = {"oneOf": batch_items, "discriminator": {"propertyName": "type"}}
    job_id = {
        "name": "job_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    }
    queue = {
        "name": "queue",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": sorted({jt.queue for jt in job_types.values()})},
    }
    ids = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"ids": {"type": ["array", "null"], "items": {"type": "string"}}},
    }
    unavailable = {
        **_error("broker or storage unavailable"),
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    }
    bad_body = {
        "400": _error("malformed JSON"),
        "413": _error("body over the size limit"),
        "415": _error("not JSON"),
        "422": _error("invalid body"),
    }
    paths = {
        "/jobs": {
            "post": {
                **_op(
                    "submitJob",
                    "Submit a job; 202 once the broker confirmed it",
                    {
                        "202": {
                            **_ok("Job", "accepted and confirmed by the broker"),
                            "headers": {"Location": {"schema": {"type": "string"}}},
                        },
                        "200": _ok("Job", "the job first submitted with this Idempotency-Key"),
                        "409": _error("Idempotency-Key reused with another body"),
                        **bad_body,
                        "503": unavailable,
                    },
                    scope="jobs:submit",
                    parameters=[
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "pattern": r"^[\x21-\x7e]{1,255}$"},
                        }
                    ],
                ),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": submit_schema}},
                },
            }
        },
        "/jobs/batch": {
            "post": {
                **_op(
                    "submitBatch",
                    "Submit up to 1,000 jobs; 202 once every message is confirmed",
                    {"202": _json("all accepted"), **bad_body, "503": unavailable},
                    scope="jobs:submit",
                ),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["jobs"],
                                "additionalProperties": False,
                                "properties": {
                                    "jobs": {
                                        "type": "array",
                                        "minItems": 1,
                                        "maxItems": 1000,
                                        "items": batch_item_schema,
                                    }
                                },
                            }
                        }
                    },
                },
            }
        },
        "/jobs/{job_id}": {
            "get": _op(
                "getJob",
                "A job's state, result and history",
                {"200": _ok("Job", "the job"), "404": _error("unknown id"), "503": unavailable},
                scope="jobs:read",
                parameters=[job_id],
            ),
            "delete": _op(
                "cancelJob",
                "Cancel a job that has not started",
                {
                    "200": _ok("Job", "cancelled"),
                    "404": _error("unknown id"),
                    "409": _error("already running or finished"),
                    "503": unavailable,
                },
                scope="jobs:submit",
                parameters=[job_id],
            ),
        },
        "/job-types": {
            "get": _op(
                "listJobTypes",
                "Job types with their payload schemas",
                {"200": _ok("JobTypeList", "job types")},
            )
        },
        "/queues": {
            "get": _op(
                "listQueues",
                "Queue depths, consumers, pause state",
                {"200": _json("queues"), "503": unavailable},
                scope="admin",
            )
        },
        "/queues/{queue}/pause": {
            "post": _op(
                "pauseQueue",
                "Stop every worker consuming the queue (remembered)",
                {"200": _json("paused"), "404": _error("unknown queue"), "503": unavailable},
                scope="admin",
                parameters=[queue],
            )
        },
        "/queues/{queue}/resume": {
            "post": _op(
                "resumeQueue",
                "Let the queue's workers consume it again",
                {"200": _json("resumed"), "404": _error("unknown queue"), "503": unavailable},
                scope="admin",
                parameters=[queue],
            )
        },
        "/queues/{queue}/dead": {
            "get": _op(
                "listDeadLetters",
                "Dead-lettered jobs, newest first",
                {
                    "200": _json("dead letters"),
                    "400": _error("bad offset or limit"),
                    "404": _error("unknown queue"),
                    "503": unavailable,
                },
                scope="admin",
                parameters=[
                    queue,
                    {
                        "name": "offset",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "maximum": 10**9},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                    },
                ],
            ),
            "delete": _op(
                "purgeDeadLetters",
                "Drop dead letters (all, or the listed ids)",
                {
                    "200": _json("purged"),
                    **bad_body,
                    "404": _error("unknown queue"),
                    "503": unavailable,
                },
                scope="admin",
                parameters=[queue],
                body=ids,
            ),
        },
        "/queues/{queue}/dead/replay": {
            "post": _op(
                "replayDeadLetters",
                "Send dead letters back to their queue, same ids",
                {
                    "200": _json("replayed"),
                    **bad_body,
                    "404": _error("unknown queue"),
                    "503": unavailable,
                },
                scope="admin",
                parameters=[queue],
                body=ids,
            )
        },
        "/health/live": {
            "get": _op("live", "The process serves", {"200": _ok("HealthStatus", "serving")})
        },
        "/health/ready": {
            "get": _op(
                "ready",
                "Broker, Redis and consumers, per component",
                {"200": _json("ready"), "503": _json("not ready")},
            )
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {"get": _op("openapi", "This document", {"200": _json("this document")})},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Taskplane",
            "version": version,
            "description": "Submit jobs, follow their state, cancel them, operate queues.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API token; see README",
                }
            },
        },
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(build_document(celery_app().job_types))
