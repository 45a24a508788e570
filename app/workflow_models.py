"""Workflows in the API document: what GET answers, and what POST takes.

The answers are pydantic models of ``describe`` (tasks/core/workflows.py); the
views pass every answer through them, so the document cannot promise a field the
server does not send. The body is ``WorkflowIn`` (tasks/core/workflow_spec.py) as
JSON Schema, with what its checks enforce and a schema can state: 1 to
``MAX_STEPS`` steps, step ids, at most ``MAX_DEPENDS`` dependencies, a job type of
this environment. What no schema can state is said in the descriptions and
answers 422 naming the step and field: duplicate ids, unknown dependencies,
cycles, references to steps not depended on, ``$item`` outside a map step, and a
static payload (one without references) that does not fit its job type.
"""

from copy import deepcopy
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from tasks.core.workflow_spec import (
    MAX_DEPENDS,
    MAX_MAP_ITEMS,
    MAX_STEPS,
    RESULT_KEY,
    STEP_ID_PATTERN,
    WorkflowIn,
)

if TYPE_CHECKING:
    from app.openapi import Context

REF = "#/components/schemas/{model}"

WorkflowState = Literal["running", "succeeded", "failed", "cancelled"]
StepState = Literal[
    "waiting",
    "queued",
    "scheduled",
    "started",
    "retrying",
    "succeeded",
    "failed",
    "cancelled",
    "expired",
]


class StepItems(BaseModel):
    """A map step's jobs: how many, their ids in item order, and how many are in each state."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, int] = Field(init=False)  # a count per job state

    total: int = Field(description="items mapped over (jobs made)")
    job_ids: list[str] | None = Field(default=None, description="in item order")


class WorkflowStep(BaseModel):
    id: str
    type: str
    depends_on: list[str]
    state: StepState = Field(
        description="waiting: not started yet; the step's job's state once it has one (a map "
        "step's summarises its jobs); expired: its job record is no longer kept; cancelled: "
        "it will not run (the workflow was cancelled, or failed before it)"
    )
    job_id: str | None = Field(description="the step's job (none for a map step: see items)")
    attempts: int = Field(description="attempts of its job (a map step: of all its jobs)")
    result: JsonValue = Field(description="its job's result; a map step's: the list, in order")
    error: dict[str, JsonValue] | None = Field(
        description="its job's error, or why it could not run (a reference that did not "
        "resolve, a resolved payload that does not fit its job type)"
    )
    reason: str | None = Field(description="why a step that will not run does not")
    items: StepItems | None = Field(default=None, description="map steps only")


class Workflow(BaseModel):
    id: str
    state: WorkflowState
    created_at: str | None
    finished_at: str | None
    failed_step: str | None = Field(description="the step that failed it (state failed)")
    reason: str | None = Field(description="why it failed")
    steps: list[WorkflowStep] = Field(description="in an order where a step follows its deps")


def workflow_view(described: dict[str, Any]) -> dict[str, Any]:
    """``describe``'s dict as the documented model (only the fields it gave)."""
    return Workflow.model_validate(described).model_dump(mode="json", exclude_unset=True)


# -- the request body ---------------------------------------------------------------

RULES = (
    "Checked before anything is created, each failure answering 422 naming the step "
    "(steps[i], and its id) and field: step ids are unique; every depends_on names a step "
    'of this workflow; the steps form no cycle; a {"$result": step} reference (in the '
    'payload or map) names a step this step depends on; {"$item": path} appears only in '
    "a map step; a payload without references fits its job type's schema (see "
    "/job-types). A payload with references is checked once they are resolved, when the "
    "step becomes ready: a mismatch then fails the step, with the reason."
)
PAYLOAD_NOTE = (
    'the job payload. It may hold {"$result": step, "path"?} references to the result '
    "of a step this one depends on (path: dot-separated keys and list indexes; '*' applies "
    'the rest of the path to every element of a list), and in a map step {"$item": path} '
    "for (a part of) the item; they are resolved when the step becomes ready"
)
MAP_NOTE = (
    'makes this a map step: {"$result": step, "path"?}, a reference to a list; one job '
    f"per item (at most {MAX_MAP_ITEMS}, MAX_MAP_ITEMS; more fails the step). Its result, for "
    "the steps after it, is the list of its jobs' results in item order"
)


def workflow_in(context: "Context") -> dict[str, Any]:
    """POST /workflows: WorkflowIn, with the job types of this environment."""
    schema = WorkflowIn.model_json_schema(ref_template=REF, mode="validation")
    defs = schema.pop("$defs", {})
    for name, nested in defs.items():
        if name not in ("StepIn",):
            context.component(name, nested)
    step = deepcopy(defs["StepIn"])
    fields = step["properties"]
    fields["id"]["description"] = "unique within the workflow"
    fields["id"]["pattern"] = STEP_ID_PATTERN
    fields["type"] = {
        "type": "string",
        "enum": list(context.job_types),
        "description": "a job type, see /job-types",
    }
    fields["payload"]["description"] = PAYLOAD_NOTE
    fields["depends_on"]["items"] = {"type": "string", "pattern": STEP_ID_PATTERN}
    fields["depends_on"]["maxItems"] = MAX_DEPENDS
    fields["depends_on"]["description"] = (
        f"ids of steps of this workflow that must succeed first (at most {MAX_DEPENDS}, "
        "MAX_DEPENDS); none: it starts at once"
    )
    reference = {
        "type": "object",
        "required": [RESULT_KEY],
        "additionalProperties": False,
        "properties": {
            RESULT_KEY: {"type": "string", "pattern": STEP_ID_PATTERN},
            "path": {"type": "string"},
        },
    }
    fields["map"] = {"anyOf": [reference, {"type": "null"}], "default": None}
    fields["map"]["description"] = MAP_NOTE
    fields["continue_on_failure"]["description"] = (
        "when its job fails for good, the steps after it still run (its result is then null)"
    )
    step["title"] = "WorkflowStepIn"
    step["description"] = "One step: an ordinary job, run once its dependencies are done."
    ref = context.component("WorkflowStepIn", step)
    body = schema["properties"]["steps"]
    body.update(minItems=1, maxItems=MAX_STEPS, items=ref)
    body["description"] = f"1 to {MAX_STEPS} steps (MAX_STEPS)"
    workflow = {
        "type": "object",
        "title": "WorkflowIn",
        "description": RULES,
        "additionalProperties": False,
        "required": ["steps"],
        "properties": {"steps": body},
    }
    if EXAMPLE_TYPE in context.job_types:  # development and testing only
        workflow["examples"] = [EXAMPLE]
    return workflow


# A chain that passes a result along, as README's Workflows section shows it.
EXAMPLE_TYPE = "diagnostics.echo"
EXAMPLE = {
    "steps": [
        {"id": "fetch", "type": EXAMPLE_TYPE, "payload": {"data": {"n": 1}}},
        {
            "id": "report",
            "type": EXAMPLE_TYPE,
            "depends_on": ["fetch"],
            "payload": {"data": {RESULT_KEY: "fetch", "path": "data.n"}},
        },
    ]
}


WORKFLOW_ID: dict[str, Any] = {"type": "string", "format": "uuid"}
