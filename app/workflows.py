"""Workflows: DAGs of jobs, submitted as one, followed, cancelled and retried as one.

Thin: the checks are tasks/core/workflow_spec.py's and the operations
tasks/core/workflows.py's (the CLI calls the same); this module maps their errors
to the one JSON error shape. Starting, cancelling and retrying need the
``jobs:submit`` scope, reading ``jobs:read``.
"""

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from flask import Blueprint, Response, jsonify, request, url_for

from app.context import celery_app
from app.errors import ApiError
from app.jsonbody import read_json_object
from app.operations import BAD_BODY, UNAVAILABLE, Body, Param, Reply, operation
from app.submit import refuse_while_blocked, unavailable
from app.workflow_models import WORKFLOW_ID, Workflow, workflow_in, workflow_view
from tasks.core import workflows
from tasks.core.errors import Unavailable
from tasks.core.workflow_spec import InvalidWorkflow, check_workflow
from tasks.core.workflows import WorkflowNotCancellable, WorkflowNotFound, WorkflowNotRetryable

bp = Blueprint("workflows", __name__)
T = TypeVar("T")


def not_found(workflow_id: str) -> ApiError:
    return ApiError(
        404, "workflow_not_found", f"no workflow with id {workflow_id!r}", {"id": workflow_id}
    )


def invalid(exc: InvalidWorkflow) -> ApiError:
    """422: every problem names its path (steps[i].field) and, where it has one, the step."""
    problems = [dict(p) for p in exc.problems]
    unknown = [p for p in problems if p.get("type") == "unknown_job_type"]
    for problem in unknown:  # as POST /jobs says it, within the problem
        problem["known"] = sorted(celery_app().job_types)
    code = "unknown_job_type" if unknown and len(unknown) == len(problems) else exc.code
    return ApiError(422, code, exc.message, details=problems)


@contextmanager
def _answers() -> Iterator[None]:
    """The workflow operations' errors as HTTP answers."""
    try:
        yield
    except WorkflowNotFound as exc:
        raise not_found(exc.workflow_id) from exc
    except WorkflowNotCancellable as exc:
        raise ApiError(
            409, "workflow_not_cancellable", str(exc), {"id": exc.workflow_id, "state": exc.state}
        ) from exc
    except WorkflowNotRetryable as exc:
        raise ApiError(
            409, "workflow_not_retryable", str(exc), {"id": exc.workflow_id, "state": exc.state}
        ) from exc
    except Unavailable as exc:
        raise unavailable(exc.what) from exc


def _operate(workflow_id: str, action: Callable[[Any, str], T]) -> T:
    if not _is_uuid(workflow_id):
        raise not_found(workflow_id)
    with _answers():
        return action(celery_app(), workflow_id)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


WORKFLOW_PARAM = Param(
    "workflow_id", "path", WORKFLOW_ID, "the workflow's id (other values answer 404)"
)
LOCATION = {"Location": {"schema": {"type": "string"}, "required": True}}
NOT_FOUND = Reply("no workflow with this id, or it is no longer kept (workflow_not_found)")


@bp.post("/workflows")
@operation(
    "startWorkflow",
    "Start a workflow; 202 once the broker confirmed the jobs of its first steps",
    {
        202: Reply(
            "accepted: recorded, and its first steps' jobs confirmed by the broker",
            Workflow,
            headers=LOCATION,
        ),
        **BAD_BODY,
        422: Reply(
            "the body is JSON but not a valid workflow (validation_failed; unknown_job_type "
            "when every problem is a job type that does not exist): nothing was created. "
            "details name each problem's path (e.g. steps[2].depends_on[0], "
            "steps[0].payload.url) and step (its id)"
        ),
        503: UNAVAILABLE,
    },
    body=Body(workflow_in),
    description=(
        "Steps with no dependencies start at once; each other step starts when every step "
        "it depends on has succeeded (or failed, with continue_on_failure), with its "
        "references resolved. A step that fails for good fails the workflow: nothing new "
        "starts, and POST /workflows/{workflow_id}/retry runs the failed steps again."
    ),
)
def start_workflow() -> tuple[Response, int, dict[str, str]]:
    body = read_json_object(request)
    celery = celery_app()
    try:
        workflow = check_workflow(celery, body)
    except InvalidWorkflow as exc:
        raise invalid(exc) from exc
    refuse_while_blocked(celery)
    with _answers():
        workflow_id = workflows.start(celery, workflow)
        view = workflows.describe(celery, workflow_id)
    location = url_for("workflows.get_workflow", workflow_id=workflow_id)
    return jsonify(workflow_view(view)), 202, {"Location": location}


@bp.get("/workflows/<workflow_id>")
@operation(
    "getWorkflow",
    "A workflow: its state and every step's state, job, attempts and result",
    {200: Reply("the workflow", Workflow), 404: NOT_FOUND, 503: UNAVAILABLE},
    params=(WORKFLOW_PARAM,),
)
def get_workflow(workflow_id: str) -> Response:
    return jsonify(workflow_view(_operate(workflow_id, workflows.describe)))


@bp.delete("/workflows/<workflow_id>")
@operation(
    "cancelWorkflow",
    "Cancel a workflow: nothing new starts, and its waiting jobs do not run",
    {
        200: Reply("cancelled; the workflow stays readable in state cancelled", Workflow),
        404: NOT_FOUND,
        409: Reply("the workflow has succeeded (workflow_not_cancellable; details.state)"),
        503: UNAVAILABLE,
    },
    params=(WORKFLOW_PARAM,),
    description=(
        "A running or failed workflow becomes cancelled; step jobs already running finish, "
        "but start nothing after them. Cancelling a cancelled workflow answers it again."
    ),
)
def cancel_workflow(workflow_id: str) -> Response:
    return jsonify(workflow_view(_operate(workflow_id, workflows.cancel)))


@bp.post("/workflows/<workflow_id>/retry")
@operation(
    "retryWorkflow",
    "Run a failed workflow's failed steps again and let it go on",
    {
        200: Reply("retried: the workflow runs again", Workflow),
        404: NOT_FOUND,
        409: Reply("the workflow has not failed (workflow_not_retryable; details.state)"),
        503: UNAVAILABLE,
    },
    params=(WORKFLOW_PARAM,),
    description=(
        "The failed steps' jobs are replayed from their dead letters (keeping their ids and "
        "history); a step that could not run (a reference that did not resolve) is tried "
        "again. Steps that succeeded are not run again. A dead letter still on its way (the "
        "step failed a moment ago) is waited for up to 5 s; one that never comes (it was "
        "purged) answers 503 and the workflow stays failed."
    ),
)
def retry_workflow(workflow_id: str) -> Response:
    if _is_uuid(workflow_id):
        refuse_while_blocked(celery_app())  # the replay publishes through Celery's connections
    return jsonify(workflow_view(_operate(workflow_id, workflows.retry)))
