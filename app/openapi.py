"""The OpenAPI 3.1 document, generated from the models that validate requests.

Hand-assembled from pydantic's JSON Schemas (OpenAPI 3.1 uses JSON Schema
2020-12, which pydantic emits): the Flask OpenAPI libraries we looked at
either replace Flask's routing or their own error shape, and the paths here
are few and stable.
"""

from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.models import ErrorResponse, HealthStatus, Job, JobTypeList
from tasks.registry import JobType

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


def _submission_schema(job_type: JobType, payload_ref: str) -> dict[str, Any]:
    return {
        "type": "object",
        "title": f"Submit {job_type.name}",
        "additionalProperties": False,
        "required": ["type", "payload"],
        "properties": {"type": {"const": job_type.name}, "payload": {"$ref": payload_ref}},
    }


def build_document(job_types: dict[str, JobType], version: str = "0.1.0") -> dict[str, Any]:
    models: list[type[BaseModel]] = [Job, JobTypeList, ErrorResponse, HealthStatus]
    payload_models = {jt.payload_model for jt in job_types.values()}
    keyed = [(m, "validation") for m in payload_models] + [(m, "serialization") for m in models]
    refs, defs = models_json_schema(keyed, ref_template=REF, by_alias=True)
    schemas = defs.get("$defs", {})
    submissions = []
    for jt in job_types.values():
        name = f"Submit_{jt.name.replace('.', '_')}"
        schemas[name] = _submission_schema(jt, refs[(jt.payload_model, "validation")]["$ref"])
        submissions.append({"$ref": REF.format(model=name)})
    job_id = {
        "name": "job_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Taskplane",
            "version": version,
            "description": "Submit jobs, follow their state, cancel them.",
        },
        "paths": {
            "/jobs": {
                "post": {
                    "operationId": "submitJob",
                    "summary": "Submit a job; 202 once the broker confirmed it",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": submissions,
                                    "discriminator": {"propertyName": "type"},
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": {
                            **_ok("Job", "accepted and confirmed by the broker"),
                            "headers": {"Location": {"schema": {"type": "string"}}},
                        },
                        "400": _error("malformed JSON"),
                        "413": _error("body over the size limit"),
                        "415": _error("not JSON"),
                        "422": _error("unknown job type or invalid payload"),
                        "503": {
                            **_error("broker or storage unavailable"),
                            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                        },
                    },
                }
            },
            "/jobs/{job_id}": {
                "get": {
                    "operationId": "getJob",
                    "parameters": [job_id],
                    "responses": {
                        "200": _ok("Job", "the job"),
                        "404": _error("unknown id"),
                        "503": _error("storage unavailable"),
                    },
                },
                "delete": {
                    "operationId": "cancelJob",
                    "parameters": [job_id],
                    "responses": {
                        "200": _ok("Job", "cancelled"),
                        "404": _error("unknown id"),
                        "409": _error("already running or finished"),
                        "503": _error("storage unavailable"),
                    },
                },
            },
            "/job-types": {
                "get": {
                    "operationId": "listJobTypes",
                    "responses": {"200": _ok("JobTypeList", "job types")},
                }
            },
            "/health/live": {
                "get": {"operationId": "live", "responses": {"200": _ok("HealthStatus", "serving")}}
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "responses": {
                        "200": {
                            "description": "this document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {"schemas": schemas},
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(build_document(current_app.extensions["celery"].job_types))
