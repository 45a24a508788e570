"""What a workflow is: steps in a DAG, references to results, and map steps. Pure functions.

A workflow is a list of steps ``{id, type, payload, depends_on, map?,
continue_on_failure?}``. A step runs once every step it depends on has
succeeded (or failed with ``continue_on_failure``). Its payload may take values
from their results:

- ``{"$result": "<step id>"}`` is replaced by that step's result, and
  ``{"$result": "<step id>", "path": "items.0.name"}`` by a part of it (dot
  separated keys and list indexes; ``*`` applies the rest of the path to every
  element of a list). The step must be one the referring step depends on.
- A **map step** has ``"map": {"$result": "<step>", "path": ...}``, a reference
  to a list: it runs one job per item (at most ``MAX_MAP_ITEMS``), and inside its
  payload ``{"$item": ""}`` is the item (``{"$item": "path"}`` a part of it). Its
  result, for the steps that depend on it, is the list of its jobs' results in
  item order (fan-in).

Everything here is checked before anything is created; a reference is resolved
when its step becomes ready, and the resolved payload is then checked against
the step's job type (a mismatch fails that step, with the reason).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from tasks.core.schema_types import Tags
from tasks.core.submission import InvalidJob, check_payload
from tasks.core.validation import validate_json_payload, validation_details

MAX_STEPS = 500
MAX_MAP_ITEMS = 1000
MAX_DEPENDS = 100
STEP_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
RESULT_KEY = "$result"
ITEM_KEY = "$item"
_INDEX = re.compile(r"^(0|[1-9][0-9]*)$")


class StepIn(BaseModel):
    """One step as a client writes it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=STEP_ID_PATTERN, description="unique within the workflow")
    type: str = Field(min_length=1, max_length=200, description="a job type, see /job-types")
    payload: dict[str, JsonValue] = Field(
        default_factory=dict,
        description='may hold {"$result": step, "path"?} references (and {"$item": path} in'
        " a map step), resolved when the step becomes ready",
    )
    depends_on: list[str] = Field(default_factory=list, max_length=MAX_DEPENDS)
    map: dict[str, JsonValue] | None = Field(
        default=None,
        description='{"$result": step, "path"?}: a list; one job per item (at most '
        f"{MAX_MAP_ITEMS})",
    )
    continue_on_failure: bool = Field(
        default=False, description="when it fails, the steps after it still run"
    )
    tags: Tags | None = Field(
        default=None,
        description="tags of the step's jobs, beside workflow, step and item (which win)",
    )


class WorkflowIn(BaseModel):
    """POST /workflows."""

    model_config = ConfigDict(extra="forbid")

    steps: list[StepIn] = Field(min_length=1, max_length=MAX_STEPS)


class InvalidWorkflow(InvalidJob):
    """The workflow cannot be accepted; ``problems`` name the step (``steps[i]``) and field."""


@dataclass(frozen=True)
class Step:
    id: str
    type: str
    payload: dict[str, Any]
    depends_on: tuple[str, ...] = ()
    map: dict[str, Any] | None = None
    continue_on_failure: bool = False
    tags: dict[str, str] | None = None

    def as_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "payload": self.payload,
            "depends_on": list(self.depends_on),
        }
        if self.map is not None:
            fields["map"] = self.map
        if self.continue_on_failure:
            fields["continue_on_failure"] = True
        if self.tags:
            fields["tags"] = dict(self.tags)
        return fields


@dataclass(frozen=True)
class Workflow:
    """A checked DAG; ``order`` is a topological order of the step ids."""

    steps: dict[str, Step]
    order: tuple[str, ...]
    dependents: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def as_fields(self) -> list[dict[str, Any]]:
        return [self.steps[sid].as_fields() for sid in self.order]


def from_fields(steps: list[dict[str, Any]]) -> Workflow:
    """A stored workflow back (checked when it was stored)."""
    parsed = {
        s["id"]: Step(
            id=s["id"],
            type=s["type"],
            payload=s.get("payload") or {},
            depends_on=tuple(s.get("depends_on") or ()),
            map=s.get("map"),
            continue_on_failure=bool(s.get("continue_on_failure")),
            tags=s.get("tags") or None,
        )
        for s in steps
    }
    return _graph(parsed, [s["id"] for s in steps])


def check_workflow(app: Any, data: Any) -> Workflow:
    """Check a whole workflow before anything is created; InvalidWorkflow names step and field."""
    try:
        parsed = validate_json_payload(WorkflowIn, data)
    except ValidationError as exc:
        steps = data.get("steps") if isinstance(data, dict) else None
        problems = [_located(p, steps) for p in validation_details(exc)]
        raise InvalidWorkflow("validation_failed", "the workflow is invalid", problems) from exc
    problems: list[dict[str, str]] = []
    seen: dict[str, int] = {}
    for index, step in enumerate(parsed.steps):
        if step.id in seen:
            problems.append(
                {
                    **_problem(index, "id", "duplicate_step", f"step id {step.id!r} is used twice"),
                    "step": step.id,
                }
            )
        seen.setdefault(step.id, index)
    steps: dict[str, Step] = {}
    for index, step in enumerate(parsed.steps):
        problems += _check_step(app, index, step, seen)
        steps.setdefault(
            step.id,
            Step(
                id=step.id,
                type=step.type,
                payload=step.payload,
                depends_on=tuple(dict.fromkeys(step.depends_on)),
                map=step.map,
                continue_on_failure=step.continue_on_failure,
                tags=step.tags or None,
            ),
        )
    if problems:
        raise InvalidWorkflow("validation_failed", _summary(problems), problems)
    cycle = find_cycle(steps)
    if cycle:
        index = seen[cycle[0]]
        message = "the steps depend on each other in a cycle: " + " -> ".join(cycle)
        raise InvalidWorkflow(
            "validation_failed",
            message,
            [{**_problem(index, "depends_on", "cycle", message), "step": cycle[0]}],
        )
    return _graph(steps, [s.id for s in parsed.steps])


# pydantic's locations ("steps.2.depends_on.0") as the checks write them ("steps[2]...").
_STEP_AT = re.compile(r"^steps\.(\d+)(?=\.|$)")
_DEPENDENCY_AT = re.compile(r"^(steps\[\d+\]\.depends_on)\.(\d+)(?=\.|$)")


def _located(problem: dict[str, str], steps: Any) -> dict[str, str]:
    """A schema problem with the path the other checks write, and its step's id."""
    path = _DEPENDENCY_AT.sub(r"\1[\2]", _STEP_AT.sub(r"steps[\1]", problem.get("path", "")))
    located = {**problem, "path": path}
    found = re.match(r"^steps\[(\d+)\]", path)
    if found and isinstance(steps, list) and int(found.group(1)) < len(steps):
        step = steps[int(found.group(1))]
        if isinstance(step, dict) and isinstance(step.get("id"), str):
            located["step"] = step["id"]
    return located


def _check_step(app: Any, index: int, step: StepIn, ids: dict[str, int]) -> list[dict[str, str]]:
    problems = []
    job_type = app.job_types.get(step.type)
    if job_type is None:
        problems.append(
            _problem(index, "type", "unknown_job_type", f"no job type named {step.type!r}")
        )
    for position, dependency in enumerate(step.depends_on):
        if dependency not in ids:
            problems.append(
                _problem(
                    index, f"depends_on[{position}]", "unknown_step", f"no step {dependency!r}"
                )
            )
        elif dependency == step.id:
            problems.append(
                _problem(
                    index, f"depends_on[{position}]", "cycle", "a step cannot depend on itself"
                )
            )
    deps = set(step.depends_on)
    if step.map is not None:
        problems += _check_reference(index, "map", step.map, deps)
    for path, ref in references(step.payload):
        where = "payload" + (f".{path}" if path else "")
        if RESULT_KEY in ref:
            problems += _check_reference(index, where, ref, deps)
        elif step.map is None:
            problems.append(
                _problem(index, where, "invalid_reference", "$item is only allowed in a map step")
            )
        else:
            problems += _check_item(index, where, ref)
    if job_type is not None and not any(True for _ in references(step.payload)):
        try:
            check_payload(app, job_type, step.payload)
        except InvalidJob as exc:
            problems += [
                {**p, "path": f"steps[{index}].{p['path']}", "step": step.id} for p in exc.problems
            ]
    for problem in problems:
        problem.setdefault("step", step.id)
    return problems


def _check_reference(
    index: int, where: str, ref: dict[str, Any], deps: set[str]
) -> list[dict[str, str]]:
    extra = set(ref) - {RESULT_KEY, "path"}
    target = ref.get(RESULT_KEY)
    if extra or not isinstance(target, str):
        return [
            _problem(index, where, "invalid_reference", 'a reference is {"$result": step, "path"?}')
        ]
    if target not in deps:
        return [
            _problem(
                index,
                where,
                "invalid_reference",
                f"refers to step {target!r}, which this step does not depend on",
            )
        ]
    if not isinstance(ref.get("path", ""), str):
        return [_problem(index, where, "invalid_reference", "path must be a string")]
    return []


def _check_item(index: int, where: str, ref: dict[str, Any]) -> list[dict[str, str]]:
    if set(ref) != {ITEM_KEY} or not isinstance(ref[ITEM_KEY], str):
        return [_problem(index, where, "invalid_reference", 'an item reference is {"$item": path}')]
    return []


def _problem(index: int, where: str, kind: str, message: str) -> dict[str, str]:
    return {"path": f"steps[{index}].{where}", "type": kind, "message": message}


def _summary(problems: list[dict[str, str]]) -> str:
    steps = sorted({p["step"] for p in problems if "step" in p})
    return f"{len(problems)} problem(s) in step(s) {', '.join(steps)}; nothing was created"


def find_cycle(steps: dict[str, Step]) -> list[str]:
    """A cycle of step ids (first repeated at the end), or [] for a DAG."""
    state: dict[str, int] = {}
    for start in steps:
        if state.get(start):
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        path: list[str] = []
        while stack:
            node, position = stack.pop()
            if position == 0:
                state[node] = 1
                path.append(node)
            deps = [d for d in steps[node].depends_on if d in steps]
            if position < len(deps):
                stack.append((node, position + 1))
                nxt = deps[position]
                if state.get(nxt) == 1:
                    return [*path[path.index(nxt) :], nxt]
                if not state.get(nxt):
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                path.pop()
    return []


def _graph(steps: dict[str, Step], listed: list[str]) -> Workflow:
    dependents: dict[str, list[str]] = {sid: [] for sid in steps}
    indegree = {sid: 0 for sid in steps}
    for sid in listed:
        for dependency in steps[sid].depends_on:
            dependents[dependency].append(sid)
            indegree[sid] += 1
    ready = deque(sid for sid in listed if indegree[sid] == 0)
    order = []
    while ready:
        sid = ready.popleft()
        order.append(sid)
        for nxt in dependents[sid]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    return Workflow(steps, tuple(order), {k: tuple(v) for k, v in dependents.items()})


# -- references -----------------------------------------------------------------------


def references(value: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every reference object in a payload, with its dotted location."""
    if isinstance(value, dict):
        if RESULT_KEY in value or ITEM_KEY in value:
            return [(path, value)]
        found = []
        for key, inner in value.items():
            found += references(inner, f"{path}.{key}" if path else str(key))
        return found
    if isinstance(value, list):
        found = []
        for position, inner in enumerate(value):
            found += references(inner, f"{path}.{position}" if path else str(position))
        return found
    return []


class ReferenceError_(ValueError):
    """A reference that does not resolve (a missing key, an index past the end)."""


def pick(value: Any, path: str) -> Any:
    """The part of ``value`` at ``path`` (dot separated; ``*`` maps over a list)."""
    if not path:
        return value
    head, _, rest = path.partition(".")
    if head == "*":
        if not isinstance(value, list):
            raise ReferenceError_(f"'*' needs a list, found {type(value).__name__}")
        return [pick(item, rest) for item in value]
    if isinstance(value, dict):
        if head not in value:
            raise ReferenceError_(f"no key {head!r}")
        return pick(value[head], rest)
    if isinstance(value, list):
        if not _INDEX.match(head) or int(head) >= len(value):
            raise ReferenceError_(f"no index {head!r} in a list of {len(value)}")
        return pick(value[int(head)], rest)
    raise ReferenceError_(f"cannot take {head!r} of a {type(value).__name__}")


def resolve(value: Any, results: dict[str, Any], item: Any = None) -> Any:
    """``value`` with every reference replaced (results by step id; ``item`` for $item)."""
    if isinstance(value, dict):
        if RESULT_KEY in value:
            return pick(results[value[RESULT_KEY]], value.get("path", ""))
        if ITEM_KEY in value:
            return pick(item, value[ITEM_KEY])
        return {key: resolve(inner, results, item) for key, inner in value.items()}
    if isinstance(value, list):
        return [resolve(inner, results, item) for inner in value]
    return value
