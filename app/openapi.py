"""The OpenAPI 3.1 document, generated from the routes, their declarations and the models.

Walks ``app.url_map``: every route's view declares its operation next to its
code (app/operations.py), and a route without a declaration stops the app at
start (``check_routes``). Schemas come from the pydantic models that validate
requests and shape answers (OpenAPI 3.1 is JSON Schema 2020-12, which pydantic
emits). What the running process decides is read from its owners when the
document is built: security only where this process checks tokens, with the
scopes of app/auth.py; 429 only where a rate limit applies; job types and
queues of this environment.

Why not spectree or flask-openapi3: see the note at the end of this module.
"""

import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode
from werkzeug.routing import Rule

from app import auth, ratelimit
from app.context import celery_of
from app.operations import (
    RETRY_AFTER,
    Operation,
    Reply,
    Schema,
    Text,
    Undocumented,
    declaration,
    json_object,
    operation,
)
from tasks.core.registry import JobType

bp = Blueprint("openapi", __name__)
REF = "#/components/schemas/{model}"
# Flask answers these itself for every route; they are not operations of ours.
IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})
DOCUMENT = "openapi_document"
# How /docs lists the groups (blueprints): the API first; others after, as registered.
TAG_ORDER = (
    "jobs",
    "batch",
    "workflows",
    "schedules",
    "queues",
    "deadletters",
    "health",
    "metrics",
    "openapi",
    "docs",
)


@dataclass
class Context:
    """What builders of schemas read (app/schemas.py), and the components they add."""

    job_types: Mapping[str, JobType]
    queues: Sequence[str]
    max_body_bytes: int | None
    schemas: dict[str, Any] = field(default_factory=dict)

    def ref_of(self, name: str) -> str:
        return REF.format(model=name)

    def component(self, name: str, schema: dict[str, Any]) -> dict[str, str]:
        """Add ``schema`` as ``name``; the same name for another schema is a bug."""
        if self.schemas.setdefault(name, schema) != schema:
            raise ValueError(f"two different schemas are both named {name!r}")
        return {"$ref": self.ref_of(name)}

    def resolve(self, schema: Schema, mode: JsonSchemaMode = "serialization") -> dict[str, Any]:
        """A JSON Schema for a literal, a model (added as a component) or a builder."""
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            generated = schema.model_json_schema(ref_template=REF, mode=mode, by_alias=True)
            for name, nested in generated.pop("$defs", {}).items():
                self.component(name, nested)
            return self.component(schema.__name__, generated)
        if callable(schema):
            return self.resolve(schema(self), mode)
        return schema

    def text(self, text: Text) -> str:
        return text if isinstance(text, str) else text(self)


@dataclass(frozen=True)
class Route:
    rule: Rule
    method: str
    declared: Operation | Undocumented | None

    @property
    def path(self) -> str:
        """The OpenAPI path: ``/jobs/<jobid:job_id>`` is ``/jobs/{job_id}``."""
        return re.sub(r"<(?:[^<>]*:)?([A-Za-z_][A-Za-z0-9_]*)>", r"{\1}", self.rule.rule)

    @property
    def label(self) -> str:
        return f"{self.method} {self.rule.rule} ({self.rule.endpoint})"


def routes(app: Flask) -> Iterator[Route]:
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        for method in sorted((rule.methods or set()) - IMPLICIT_METHODS):
            yield Route(rule, method, declaration(view))


def check_routes(app: Flask) -> None:
    """Every route declares its operation, and its path parameters are the route's."""
    problems = []
    operation_ids: dict[str, str] = {}
    for route in routes(app):
        declared = route.declared
        if declared is None:
            problems.append(f"{route.label} has no @operation (or @undocumented) declaration")
            continue
        if isinstance(declared, Undocumented):
            continue
        in_path = {p.name for p in declared.params if p.location == "path"}
        if in_path != set(route.rule.arguments):
            problems.append(
                f"{route.label} declares path parameters {sorted(in_path)}, "
                f"its route has {sorted(route.rule.arguments)}"
            )
        first = operation_ids.setdefault(declared.operation_id, route.label)
        if first != route.label:
            problems.append(f"{route.label} reuses operationId {declared.operation_id!r}")
    if problems:
        raise RuntimeError(
            "the API document would not match the routes:\n  " + "\n  ".join(problems)
        )


def build_document(app: Flask, version: str = "0.1.0") -> dict[str, Any]:
    check_routes(app)
    celery = celery_of(app)
    context = Context(
        job_types=celery.job_types,
        queues=[queue.name for queue in celery.conf.task_queues],
        max_body_bytes=app.config.get("MAX_CONTENT_LENGTH"),
    )
    checks_tokens = auth.enforced(app)
    limited = ratelimit.limited_endpoints(app)
    paths: dict[str, dict[str, Any]] = {}
    tags: dict[str, dict[str, str]] = {}
    for route in routes(app):
        if not isinstance(route.declared, Operation):
            continue
        endpoint = route.rule.endpoint
        scope = auth.REQUIRED_SCOPE.get(endpoint) if checks_tokens else None
        op = _operation(context, route.declared, scope=scope, limited=endpoint in limited)
        blueprint = endpoint.rpartition(".")[0]
        if blueprint:
            tags.setdefault(blueprint, _tag(app, blueprint))
            op = {"tags": [blueprint], **op}
        paths.setdefault(route.path, {})[route.method.lower()] = op
    components: dict[str, Any] = {"schemas": dict(sorted(context.schemas.items()))}
    if checks_tokens:
        components["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": (
                    "An API token (TASKPLANE_API_TOKENS; create one with "
                    "'flask --app wsgi token create'). Each operation names the scope "
                    f"it needs, one of: {', '.join(auth.SCOPES)}."
                ),
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Taskplane",
            "version": version,
            "description": _description(checks_tokens),
        },
        "tags": sorted(tags.values(), key=lambda tag: _rank(tag["name"])),
        "paths": dict(sorted(paths.items(), key=lambda item: _path_rank(item[1]))),
        "components": components,
    }


def _rank(tag: str) -> int:
    return TAG_ORDER.index(tag) if tag in TAG_ORDER else len(TAG_ORDER)


def _path_rank(methods: dict[str, Any]) -> int:
    return min(_rank(tag) for op in methods.values() for tag in op.get("tags", [""]))


def _tag(app: Flask, blueprint: str) -> dict[str, str]:
    """A blueprint is a tag; the first line of its module's docstring describes it."""
    module = sys.modules.get(app.blueprints[blueprint].import_name)
    summary = ((module.__doc__ if module else None) or "").strip().splitlines()
    return {"name": blueprint, **({"description": summary[0]} if summary else {})}


def _description(checks_tokens: bool) -> str:
    about = "Submit jobs, follow their state, cancel them, operate queues."
    if checks_tokens:
        return about + " Operations with a security requirement need a bearer token."
    return (
        about + " This server checks no tokens (no TASKPLANE_API_TOKENS outside production): "
        "every operation is open, so none declares security."
    )


def _operation(
    context: Context, declared: Operation, *, scope: str | None, limited: bool
) -> dict[str, Any]:
    responses = {status: _reply(context, reply) for status, reply in declared.responses.items()}
    if scope is not None:
        responses[401] = _reply(
            context,
            Reply(
                "no valid bearer token",
                headers={"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
            ),
        )
        responses[403] = _reply(context, Reply(f"the token lacks the {scope!r} scope"))
    if limited:
        responses[429] = _reply(
            context,
            Reply("rate limit reached", headers={"Retry-After": RETRY_AFTER}),
        )
    op: dict[str, Any] = {
        "operationId": declared.operation_id,
        "summary": declared.summary,
    }
    if declared.description:
        op["description"] = declared.description
    if declared.deprecated:
        op["deprecated"] = True
    if scope is not None:
        op["security"] = [{"bearer": [scope]}]
    if declared.params:
        op["parameters"] = [
            {
                "name": p.name,
                "in": p.location,
                "required": p.required or p.location == "path",
                "schema": context.resolve(p.schema, mode="validation"),
                **({"description": p.description} if p.description else {}),
            }
            for p in declared.params
        ]
    if declared.body is not None:
        op["requestBody"] = {
            "required": declared.body.required,
            "content": {
                "application/json": {
                    "schema": context.resolve(declared.body.schema, mode="validation")
                }
            },
            **({"description": declared.body.description} if declared.body.description else {}),
        }
    op["responses"] = {str(status): responses[status] for status in sorted(responses)}
    return op


def _reply(context: Context, reply: Reply) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": context.text(reply.description)}
    if reply.headers:
        answer["headers"] = {name: dict(header) for name, header in reply.headers.items()}
    if reply.schema is not None:
        answer["content"] = {reply.media_type: {"schema": context.resolve(reply.schema)}}
    return answer


@bp.get("/openapi.json")
@operation("openapi", "This document", {200: json_object("the OpenAPI 3.1 document")})
def openapi() -> Response:
    # Built once per process: it depends only on the app's configuration.
    document = current_app.extensions.get(DOCUMENT)
    if document is None:
        document = current_app.extensions[DOCUMENT] = build_document(current_app)
    return jsonify(document)


# Why not a library (spectree 3.0.0 was tried; flask-openapi3 replaces Flask's
# routing and its own request validation, which is what this module must not
# do). Walking Flask's routes and pydantic's schemas is what spectree does too,
# but it could not say what this document says:
# - a custom path converter (``jobid``) becomes ``"schema": null``: an invalid
#   document, where this one says ``format: uuid``;
# - a discriminated union built from the registry at run time gets discriminator
#   mappings that point at components that do not exist (it renames nested
#   definitions but not the mapping), and the decorator needs the model at
#   import time, before the environment's job types are known;
# - a response is a model per status, nothing more: no headers (Retry-After on
#   503 and 429, Location on 202, WWW-Authenticate on 401), no text/plain
#   (/metrics), and every operation gets its own 422 validation-error shape
#   instead of the one error shape of app/errors.py;
# - security is fixed per decorator at import, and the document is cached on a
#   module-level object: it cannot follow whether this process checks tokens;
# - request bodies are always ``required: true`` (dead-letter selections are
#   optional), and its documentation pages load Swagger UI and Redoc from a CDN.
