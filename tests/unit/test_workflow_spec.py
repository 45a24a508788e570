"""Workflows as checked before anything is created, and references as they are resolved.

No services: ``check_workflow`` reads only the registry (``job_types``, ``conf``),
and the rest of tasks/core/workflow_spec.py is pure.
"""

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from app import create_app
from app.openapi import build_document
from tasks.core.workflow_spec import (
    MAX_DEPENDS,
    MAX_STEPS,
    InvalidWorkflow,
    ReferenceError_,
    Step,
    check_workflow,
    find_cycle,
    from_fields,
    pick,
    references,
    resolve,
)
from tasks.factory import create_celery_app


@pytest.fixture(scope="module")
def celery():
    return create_celery_app("testing")


def echo(step_id: str, data: Any = None, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "diagnostics.echo", "payload": {"data": data}, **extra}


def ref(step: str, path: str = "") -> dict[str, str]:
    return {"$result": step, "path": path} if path else {"$result": step}


def refusal(celery, steps: Any) -> InvalidWorkflow:
    with pytest.raises(InvalidWorkflow) as caught:
        check_workflow(celery, {"steps": steps})
    return caught.value


def problems(exc: InvalidWorkflow) -> dict[str, dict[str, str]]:
    return {p["path"]: p for p in exc.problems}


# -- what is accepted ----------------------------------------------------------------


def test_a_valid_workflow_is_ordered_so_each_step_follows_its_dependencies(celery):
    workflow = check_workflow(
        celery,
        {
            "steps": [
                echo("d", [ref("b"), ref("c")], depends_on=["b", "c"]),
                echo("b", ref("a", "data"), depends_on=["a"]),
                echo("c", depends_on=["a", "a"]),  # a repeated dependency counts once
                echo("a", 1),
            ]
        },
    )
    assert workflow.order == ("a", "b", "c", "d")
    assert workflow.steps["c"].depends_on == ("a",)
    assert workflow.dependents["a"] == ("b", "c") and workflow.dependents["d"] == ()
    # What is stored comes back as the same workflow.
    again = from_fields(workflow.as_fields())
    assert again.steps == workflow.steps and again.order == workflow.order


def test_a_map_step_may_use_its_item_and_the_results_it_depends_on(celery):
    workflow = check_workflow(
        celery,
        {
            "steps": [
                echo("list", [1, 2]),
                echo("scale", 3),
                {
                    "id": "each",
                    "type": "diagnostics.sum",
                    "depends_on": ["list", "scale"],
                    "map": ref("list", "data"),
                    "payload": {"values": [{"$item": ""}, ref("scale", "data")]},
                    "continue_on_failure": True,
                },
            ]
        },
    )
    each = workflow.steps["each"]
    assert each.map == {"$result": "list", "path": "data"} and each.continue_on_failure
    assert each.as_fields()["continue_on_failure"] is True
    assert "continue_on_failure" not in workflow.steps["list"].as_fields()


def test_a_payload_with_references_is_not_checked_against_its_type_yet(celery):
    # "values" must be a list of numbers; a reference stands for one until it resolves.
    check_workflow(
        celery,
        {
            "steps": [
                echo("a", [1]),
                {
                    "id": "b",
                    "type": "diagnostics.sum",
                    "depends_on": ["a"],
                    "payload": {"values": ref("a", "data")},
                },
            ]
        },
    )


# -- what is refused, naming step and field ------------------------------------------


@pytest.mark.parametrize(
    ("steps", "path", "kind", "step"),
    [
        ([{"id": "a", "type": "no.such"}], "steps[0].type", "unknown_job_type", "a"),
        (
            [echo("a"), {"id": "b", "type": "diagnostics.sleep", "payload": {"seconds": "x"}}],
            "steps[1].payload.seconds",
            "float_type",
            "b",
        ),
        (
            [{"id": "a", "type": "diagnostics.sum", "payload": {}}],
            "steps[0].payload.values",
            "missing",
            "a",
        ),
        (
            [echo("a"), echo("b", depends_on=["a", "ghost"])],
            "steps[1].depends_on[1]",
            "unknown_step",
            "b",
        ),
        ([echo("a"), echo("a")], "steps[1].id", "duplicate_step", "a"),
        ([echo("a", depends_on=["a"])], "steps[0].depends_on[0]", "cycle", "a"),
        (
            [echo("a"), echo("b"), echo("c", ref("a"), depends_on=["b"])],
            "steps[2].payload.data",
            "invalid_reference",
            "c",
        ),
        (
            [echo("a"), echo("b", {"x": [0, ref("a")]}, depends_on=["a"]), echo("c")],
            None,
            None,
            None,
        ),
        (
            [echo("a"), echo("b", {"x": [0, ref("c")]}, depends_on=["a"]), echo("c")],
            "steps[1].payload.data.x.1",
            "invalid_reference",
            "b",
        ),
        (
            [echo("a"), echo("b", {"$item": ""}, depends_on=["a"])],
            "steps[1].payload.data",
            "invalid_reference",
            "b",
        ),
        (
            [echo("a"), echo("b", {"$result": "a", "extra": 1}, depends_on=["a"])],
            "steps[1].payload.data",
            "invalid_reference",
            "b",
        ),
        (
            [echo("a"), echo("b", {"$result": "a", "path": 3}, depends_on=["a"])],
            "steps[1].payload.data",
            "invalid_reference",
            "b",
        ),
        (
            [echo("a"), echo("b", {"$result": 7}, depends_on=["a"])],
            "steps[1].payload.data",
            "invalid_reference",
            "b",
        ),
        (
            [echo("a"), echo("b", {"$item": "", "x": 1}, depends_on=["a"], map=ref("a"))],
            "steps[1].payload.data",
            "invalid_reference",
            "b",
        ),
        (
            [echo("a"), echo("b", {"$item": 0}, depends_on=["a"], map=ref("a"))],
            "steps[1].payload.data",
            "invalid_reference",
            "b",
        ),
        ([echo("a"), echo("b", map=ref("a"))], "steps[1].map", "invalid_reference", "b"),
        (
            [echo("a"), echo("b", map={}, depends_on=["a"])],
            "steps[1].map",
            "invalid_reference",
            "b",
        ),
    ],
)
def test_each_problem_names_its_step_and_field(celery, steps, path, kind, step):
    if path is None:
        check_workflow(celery, {"steps": steps})
        return
    exc = refusal(celery, steps)
    assert exc.code == "validation_failed"
    found = problems(exc)
    assert path in found, exc.problems
    assert found[path]["type"] == kind and found[path]["step"] == step
    assert found[path]["message"]
    assert f"step(s) {step}" in exc.message and "nothing was created" in exc.message


def test_every_problem_of_every_step_is_reported_at_once(celery):
    exc = refusal(
        celery,
        [
            {"id": "a", "type": "no.such", "depends_on": ["ghost"]},
            echo("b", ref("a")),
            echo("b"),
        ],
    )
    assert set(problems(exc)) == {
        "steps[0].type",
        "steps[0].depends_on[0]",
        "steps[1].payload.data",
        "steps[2].id",
    }
    assert all("step" in p for p in exc.problems)
    assert exc.message.startswith("4 problem(s) in step(s) a, b;")


def test_a_cycle_is_refused_naming_its_steps_in_order(celery):
    exc = refusal(
        celery,
        [
            echo("start"),
            echo("a", depends_on=["start", "c"]),
            echo("b", depends_on=["a"]),
            echo("c", depends_on=["b"]),
        ],
    )
    (problem,) = exc.problems
    assert problem["type"] == "cycle" and problem["path"] == "steps[1].depends_on"
    assert problem["step"] == "a"
    assert "a -> c -> b -> a" in problem["message"] and exc.message == problem["message"]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"steps": []}, "steps"),
        ({}, "steps"),
        ([], ""),
        ({"steps": [echo("a")], "name": "x"}, "name"),
        ({"steps": [echo(f"s{n}") for n in range(MAX_STEPS + 1)]}, "steps"),
        (
            {"steps": [echo("a", depends_on=[f"d{n}" for n in range(MAX_DEPENDS + 1)])]},
            "steps[0].depends_on",
        ),
        ({"steps": [echo("a", depends_on=[1])]}, "steps[0].depends_on[0]"),
        ({"steps": [{"id": "-a", "type": "diagnostics.echo"}]}, "steps[0].id"),
        ({"steps": [{"id": "a" * 65, "type": "diagnostics.echo"}]}, "steps[0].id"),
        ({"steps": [{"id": "a", "type": ""}]}, "steps[0].type"),
        ({"steps": [{"id": "a", "type": "diagnostics.echo", "payload": []}]}, "steps[0].payload"),
        ({"steps": [echo("a", continue_on_failure="yes")]}, "steps[0].continue_on_failure"),
        ({"steps": [echo("a", colour="red")]}, "steps[0].colour"),
    ],
)
def test_a_body_outside_the_model_is_refused_by_it(celery, body, path):
    with pytest.raises(InvalidWorkflow) as caught:
        check_workflow(celery, body)
    assert caught.value.code == "validation_failed"
    assert path in [p["path"] for p in caught.value.problems], caught.value.problems


# -- cycles --------------------------------------------------------------------------


def steps_of(graph: dict[str, list[str]]) -> dict[str, Step]:
    return {sid: Step(sid, "diagnostics.echo", {}, tuple(deps)) for sid, deps in graph.items()}


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": []}, []),
        ({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}, []),
        ({"a": ["a"]}, ["a", "a"]),
        ({"a": ["b"], "b": ["a"]}, ["a", "b", "a"]),
        ({"x": [], "a": ["x", "c"], "b": ["a"], "c": ["b"]}, ["a", "c", "b", "a"]),
        ({"a": ["missing"]}, []),  # unknown steps are another problem's
    ],
)
def test_find_cycle(graph, cycle):
    assert find_cycle(steps_of(graph)) == cycle


def test_find_cycle_in_a_long_chain_does_not_recurse():
    chain = {f"s{n}": [f"s{n - 1}"] if n else [] for n in range(5000)}
    assert find_cycle(steps_of(chain)) == []
    chain["s0"] = ["s4999"]
    found = find_cycle(steps_of(chain))
    assert found[0] == found[-1] and len(found) == 5001


# -- references ----------------------------------------------------------------------


def test_references_are_found_with_their_locations():
    payload = {"a": ref("x"), "b": [1, {"c": {"$item": "k"}}], "d": {"e": 1}}
    assert references(payload) == [("a", ref("x")), ("b.1.c", {"$item": "k"})]
    assert references(ref("x")) == [("", ref("x"))]
    assert references({"plain": [1, 2, {"k": "v"}]}) == []


RESULT = {"items": [{"name": "a", "n": 1}, {"name": "b", "n": 2}], "total": 2, "empty": []}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("", RESULT),
        ("total", 2),
        ("items.0.name", "a"),
        ("items.1", {"name": "b", "n": 2}),
        ("items.*.name", ["a", "b"]),
        ("items.*", RESULT["items"]),
        ("empty.*.x", []),
    ],
)
def test_pick(path, value):
    assert pick(RESULT, path) == value


def test_pick_star_over_nested_lists():
    assert pick([[1, 2], [3]], "*.0") == [1, 3]
    assert pick({"rows": [{"cells": [1, 2]}, {"cells": [3]}]}, "rows.*.cells.*") == [[1, 2], [3]]


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("missing", "no key 'missing'"),
        ("items.2", "no index '2' in a list of 2"),
        ("items.01", "no index '01'"),
        ("items.-1", "no index '-1'"),
        ("items.name", "no index 'name'"),
        ("total.x", "cannot take 'x' of a int"),
        ("total.*", "'*' needs a list, found int"),
        ("items.*.missing", "no key 'missing'"),
    ],
)
def test_pick_refuses_a_path_that_is_not_there(path, says):
    with pytest.raises(ReferenceError_, match=says.replace("*", r"\*")):
        pick(RESULT, path)


def test_resolve_replaces_every_reference_and_leaves_the_rest():
    payload = {
        "whole": ref("a"),
        "part": ref("a", "items.*.n"),
        "list": [ref("b"), 3, {"deep": ref("a", "total")}],
        "item": {"$item": ""},
        "field": {"$item": "name"},
        "plain": {"k": "v"},
    }
    results = {"a": RESULT, "b": None}
    resolved = resolve(payload, results, item={"name": "x"})
    assert resolved == {
        "whole": RESULT,
        "part": [1, 2],
        "list": [None, 3, {"deep": 2}],
        "item": {"name": "x"},
        "field": "x",
        "plain": {"k": "v"},
    }
    assert payload["whole"] == ref("a")  # the stored payload is untouched


def test_resolve_of_a_path_that_is_not_there_raises():
    with pytest.raises(ReferenceError_):
        resolve({"x": ref("a", "items.9")}, {"a": RESULT})


# -- the document's body agrees with the checks -------------------------------------


@pytest.fixture(scope="module")
def body_schema():
    document = build_document(create_app({"TASKPLANE_ENV": "testing"}))
    operation = document["paths"]["/workflows"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    return Draft202012Validator({**schema, "components": document["components"]})


@pytest.mark.parametrize(
    "body",
    [
        {"steps": [echo("a")]},
        {"steps": [echo("a"), echo("b", ref("a", "data"), depends_on=["a"])]},
        {
            "steps": [
                echo("a", [1]),
                echo("b", {"$item": ""}, depends_on=["a"], map=ref("a", "data")),
                echo("c", depends_on=["b"], continue_on_failure=True, map=None),
            ]
        },
    ],
)
def test_what_the_checks_accept_the_document_accepts(celery, body_schema, body):
    check_workflow(celery, body)
    body_schema.validate(body)


def test_the_documented_example_is_a_valid_workflow(celery, body_schema):
    (example,) = body_schema.schema["examples"]
    body_schema.validate(example)
    assert check_workflow(celery, example).order == ("fetch", "report")


@pytest.mark.parametrize(
    "body",
    [
        {"steps": []},
        {"steps": [echo(f"s{n}") for n in range(MAX_STEPS + 1)]},
        {"steps": [{"id": "a", "type": "no.such"}]},
        {"steps": [echo("a", depends_on=[f"d{n}" for n in range(MAX_DEPENDS + 1)])]},
        {"steps": [echo("a", depends_on=["not a step id"])]},
        {"steps": [echo("-a")]},
        {"steps": [echo("a", map={"$result": "b", "extra": 1}, depends_on=["b"]), echo("b")]},
        {"steps": [echo("a", map={"path": "x"})]},
        {"steps": [echo("a", map={"$result": 1})]},
        {"steps": [echo("a", colour="red")]},
        {"steps": [echo("a")], "name": "x"},
    ],
)
def test_what_the_document_refuses_the_checks_refuse(celery, body_schema, body):
    assert not body_schema.is_valid(body)
    with pytest.raises(InvalidWorkflow):
        check_workflow(celery, body)
