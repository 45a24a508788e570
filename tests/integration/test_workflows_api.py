"""/workflows over HTTP against the session's gunicorn: every answer, every error, the scopes.

What workflows do (shapes, failures, replays) is tests/integration/test_workflows.py's;
this module is the HTTP contract: statuses, the error shape, what 422 names, the
scopes and the document.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from tests.integration.helpers import assert_error, wait_for_workflow, web_with_tokens
from tests.services import free_port

pytestmark = pytest.mark.integration
OPERATIONS = {
    ("/workflows", "post"),
    ("/workflows/{workflow_id}", "get"),
    ("/workflows/{workflow_id}", "delete"),
    ("/workflows/{workflow_id}/retry", "post"),
}


def echo(step_id: str, data: Any = None, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "diagnostics.echo", "payload": {"data": data}, **extra}


def sleep(step_id: str, seconds: float, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "diagnostics.sleep", "payload": {"seconds": seconds}, **extra}


def ref(step: str, path: str = "") -> dict[str, str]:
    return {"$result": step, "path": path} if path else {"$result": step}


def start(api: httpx.Client, *steps: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/workflows", json={"steps": list(steps)})
    assert response.status_code == 202, response.text
    return response.json()


# -- the round trip ------------------------------------------------------------------


def test_start_answers_202_with_location_and_get_follows_it_to_success(api):
    response = api.post(
        "/workflows",
        json={
            "steps": [
                echo("first", {"n": 7}),
                echo("second", ref("first", "data.n"), depends_on=["first"]),
            ]
        },
    )
    assert response.status_code == 202, response.text
    created = response.json()
    uuid.UUID(created["id"])
    assert response.headers["Location"] == f"/workflows/{created['id']}"
    assert created["state"] == "running" and created["created_at"].endswith("Z")
    assert created["finished_at"] is None and created["failed_step"] is None
    first, second = created["steps"]
    assert (first["id"], second["id"]) == ("first", "second")
    assert first["type"] == "diagnostics.echo" and first["depends_on"] == []
    assert first["job_id"] and first["state"] in ("queued", "started", "succeeded")
    assert second == {
        "id": "second",
        "type": "diagnostics.echo",
        "depends_on": ["first"],
        "state": "waiting",
        "job_id": None,
        "attempts": 0,
        "result": None,
        "error": None,
        "reason": None,
    }

    view = wait_for_workflow(api, created["id"], "succeeded")
    assert view["id"] == created["id"] and view["finished_at"]
    first, second = view["steps"]
    assert first["result"] == {"data": {"n": 7}} and second["result"] == {"data": 7}
    assert first["attempts"] == second["attempts"] == 1
    job = api.get(f"/jobs/{second['job_id']}").json()
    assert job["tags"] == {"workflow": created["id"], "step": "second"}
    assert api.get(response.headers["Location"]).json() == view


# -- what a workflow may not be ------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "code", "path", "step"),
    [
        ([{"id": "a", "type": "no.such"}], "unknown_job_type", "steps[0].type", "a"),
        (
            [echo("a"), sleep("b", "a while")],
            "validation_failed",
            "steps[1].payload.seconds",
            "b",
        ),
        (
            [echo("a"), echo("b", depends_on=["a", "ghost"])],
            "validation_failed",
            "steps[1].depends_on[1]",
            "b",
        ),
        ([echo("a"), echo("a")], "validation_failed", "steps[1].id", "a"),
        (
            [echo("a", depends_on=["c"]), echo("b", depends_on=["a"]), echo("c", depends_on=["b"])],
            "validation_failed",
            "steps[0].depends_on",
            "a",
        ),
        ([echo("a", depends_on=["a"])], "validation_failed", "steps[0].depends_on[0]", "a"),
        (
            [echo("a"), echo("b"), echo("c", ref("a"), depends_on=["b"])],
            "validation_failed",
            "steps[2].payload.data",
            "c",
        ),
        (
            [echo("a"), echo("b", {"$item": ""}, depends_on=["a"])],
            "validation_failed",
            "steps[1].payload.data",
            "b",
        ),
        (
            [echo("a"), echo("b", map=ref("ghost"), depends_on=["a"])],
            "validation_failed",
            "steps[1].map",
            "b",
        ),
        ([echo("a", depends_on=[7])], "validation_failed", "steps[0].depends_on[0]", "a"),
        (
            [{"id": "a", "type": "diagnostics.echo", "colour": "red"}],
            "validation_failed",
            "steps[0].colour",
            "a",
        ),
        (
            [{"id": "not a slug", "type": "diagnostics.echo"}],
            "validation_failed",
            "steps[0].id",
            None,
        ),
    ],
    ids=[
        "unknown-type",
        "static-payload",
        "unknown-dependency",
        "duplicate-id",
        "cycle",
        "self-dependency",
        "result-not-depended-on",
        "item-outside-map",
        "map-not-depended-on",
        "dependency-not-a-string",
        "unknown-field",
        "bad-step-id",
    ],
)
def test_an_invalid_workflow_is_422_naming_the_step_and_field(api, steps, code, path, step):
    error = assert_error(api.post("/workflows", json={"steps": steps}), 422, code)
    problems = {p["path"]: p for p in error["details"]}
    assert path in problems, error
    if step is not None:
        assert problems[path]["step"] == step, error
    assert problems[path]["message"] and problems[path]["type"]


def test_the_cycle_is_spelled_out(api):
    body = {"steps": [echo("a", depends_on=["b"]), echo("b", depends_on=["a"])]}
    error = assert_error(api.post("/workflows", json=body), 422, "validation_failed")
    (problem,) = error["details"]
    assert problem["type"] == "cycle" and "a -> b -> a" in problem["message"]


def test_an_unknown_job_type_lists_the_known_ones_and_every_problem_is_reported(api):
    body = {"steps": [{"id": "a", "type": "x.y"}, echo("b", depends_on=["nope"])]}
    error = assert_error(api.post("/workflows", json=body), 422, "validation_failed")
    by_path = {p["path"]: p for p in error["details"]}
    assert set(by_path) == {"steps[0].type", "steps[1].depends_on[0]"}
    assert "diagnostics.echo" in by_path["steps[0].type"]["known"]
    alone = assert_error(
        api.post("/workflows", json={"steps": [{"id": "a", "type": "x.y"}]}),
        422,
        "unknown_job_type",
    )
    assert alone["details"][0]["type"] == "unknown_job_type"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"steps": []}, "steps"),
        ({}, "steps"),
        ({"steps": [echo("a")], "name": "x"}, "name"),
        ({"steps": [echo(f"s{n}") for n in range(501)]}, "steps"),
        ({"steps": [echo("a", depends_on=[f"d{n}" for n in range(101)])]}, "steps[0].depends_on"),
    ],
    ids=["no-steps", "missing-steps", "unknown-field", "too-many-steps", "too-many-depends"],
)
def test_a_body_outside_the_limits_is_422(api, body, path):
    error = assert_error(api.post("/workflows", json=body), 422, "validation_failed")
    assert path in [p["path"] for p in error["details"]], error


def test_bodies_that_are_not_json_objects(api):
    headers = {"Content-Type": "application/json"}
    assert_error(api.post("/workflows", content=b"{nope", headers=headers), 400, "malformed_json")
    assert_error(api.post("/workflows", content=b"[1]", headers=headers), 422, "validation_failed")
    assert_error(
        api.post("/workflows", content=b"{}", headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    big = {"steps": [echo("a", "x" * (1024 * 1024 + 10))]}
    assert_error(api.post("/workflows", json=big), 413, "request_entity_too_large")


# -- unknown ids ---------------------------------------------------------------------


@pytest.mark.parametrize("workflow_id", [str(uuid.uuid4()), "not-a-uuid", "NOT%20AN%20ID"])
def test_an_unknown_workflow_is_404_on_every_operation(api, workflow_id):
    for response in (
        api.get(f"/workflows/{workflow_id}"),
        api.delete(f"/workflows/{workflow_id}"),
        api.post(f"/workflows/{workflow_id}/retry"),
    ):
        error = assert_error(response, 404, "workflow_not_found")
        assert "id" in error["details"]


# -- conflicts -----------------------------------------------------------------------


def test_a_succeeded_workflow_cannot_be_cancelled_or_retried(api):
    created = start(api, echo("only", "x"))
    wait_for_workflow(api, created["id"], "succeeded")
    error = assert_error(api.delete(f"/workflows/{created['id']}"), 409, "workflow_not_cancellable")
    assert error["details"] == {"id": created["id"], "state": "succeeded"}
    error = assert_error(
        api.post(f"/workflows/{created['id']}/retry"), 409, "workflow_not_retryable"
    )
    assert error["details"] == {"id": created["id"], "state": "succeeded"}
    assert api.get(f"/workflows/{created['id']}").json()["state"] == "succeeded"


def test_a_running_workflow_cannot_be_retried_but_can_be_cancelled_and_stays_readable(api):
    created = start(api, sleep("slow", 1.5), echo("after", depends_on=["slow"]))
    error = assert_error(
        api.post(f"/workflows/{created['id']}/retry"), 409, "workflow_not_retryable"
    )
    assert error["details"]["state"] == "running"
    cancelled = api.delete(f"/workflows/{created['id']}")
    assert cancelled.status_code == 200, cancelled.text
    view = cancelled.json()
    assert view["state"] == "cancelled" and view["finished_at"]
    after = {s["id"]: s for s in view["steps"]}["after"]
    assert after["state"] == "cancelled" and after["job_id"] is None
    assert after["reason"] == "the workflow was cancelled"
    again = api.delete(f"/workflows/{created['id']}")  # cancelling twice answers it again
    assert again.status_code == 200 and again.json()["state"] == "cancelled"
    assert_error(api.post(f"/workflows/{created['id']}/retry"), 409, "workflow_not_retryable")
    assert api.get(f"/workflows/{created['id']}").json()["state"] == "cancelled"


def test_a_failed_workflow_is_retried_with_200(api, http_target):
    hook = f"{http_target.base}/hooks/sequence/{uuid.uuid4().hex}?codes=400,200"
    deliver = {"id": "deliver", "type": "webhook.deliver", "payload": {"url": hook, "body": {}}}
    created = start(api, deliver, echo("after", "yes", depends_on=["deliver"]))
    failed = wait_for_workflow(api, created["id"], "failed")
    assert failed["failed_step"] == "deliver" and "deliver" in failed["reason"]
    retried = api.post(f"/workflows/{created['id']}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["state"] == "running" and retried.json()["failed_step"] is None
    view = wait_for_workflow(api, created["id"], "succeeded")
    assert {s["id"]: s for s in view["steps"]}["after"]["result"] == {"data": "yes"}


def test_a_retry_whose_dead_letter_is_gone_answers_503_and_leaves_the_workflow_failed(
    api, http_target
):
    """The retry replays the failed step's job from its dead letter, waiting a few seconds
    for one still on its way; a dead letter that never comes (purged) must not resume the
    workflow without its step's job, which would leave it running for ever."""
    hook = f"{http_target.base}/hooks/sequence/{uuid.uuid4().hex}?codes=400"
    deliver = {"id": "deliver", "type": "webhook.deliver", "payload": {"url": hook, "body": {}}}
    created = start(api, deliver, echo("after", "yes", depends_on=["deliver"]))
    failed = wait_for_workflow(api, created["id"], "failed")
    job_id = {s["id"]: s for s in failed["steps"]}["deliver"]["job_id"]
    deadline = time.monotonic() + 30
    while (
        api.request("DELETE", "/queues/webhooks/dead", json={"ids": [job_id]}).json()["purged"] != 1
    ):
        assert time.monotonic() < deadline, "the failed step's dead letter never arrived"
        time.sleep(0.2)
    started = time.monotonic()
    assert_error(api.post(f"/workflows/{created['id']}/retry"), 503, "unavailable")
    assert time.monotonic() - started < 10
    view = api.get(f"/workflows/{created['id']}").json()
    assert view["state"] == "failed" and view["failed_step"] == "deliver", view


# -- outages: 503 with Retry-After, as POST /jobs -------------------------------------


@pytest.fixture()
def in_process(platform, monkeypatch):
    """A web app in this process against the session's broker and Redis, to steer it."""
    from app import create_app

    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        monkeypatch.setenv(name, platform.env[name])
    return create_app({"TASKPLANE_ENV": "testing"})


def test_start_while_the_broker_blocks_publishers_is_503_at_once_and_keeps_nothing(
    in_process, session_redis_url
):
    import redis

    celery = in_process.extensions["celery"]
    celery.broker_watch.ensure_started()
    time.sleep(0.5)
    store = redis.Redis.from_url(session_redis_url)
    before = set(store.scan_iter(match="taskplane:workflow:*", count=1000))
    celery.broker_alarm.set("memory alarm (test)")
    try:
        client = in_process.test_client()
        began = time.monotonic()
        response = client.post("/workflows", json={"steps": [echo("a")]})
        retry = client.post(f"/workflows/{uuid.uuid4()}/retry")
        elapsed = time.monotonic() - began
        invalid = client.post("/workflows", json={"steps": []})
    finally:
        celery.broker_alarm.clear()
    for answer in (response, retry):
        assert answer.status_code == 503, answer.get_data(as_text=True)
        assert answer.json["error"]["code"] == "unavailable"
        assert "blocks publishers" in answer.json["error"]["message"]
        assert answer.headers["Retry-After"].isdigit()
    assert elapsed < 2
    assert invalid.status_code == 422  # a body is checked first, as POST /jobs does
    assert set(store.scan_iter(match="taskplane:workflow:*", count=1000)) == before
    store.close()


def test_every_operation_is_503_while_redis_does_not_answer(monkeypatch, platform):
    from app import create_app

    monkeypatch.setenv("CELERY_BROKER_URL", platform.env["CELERY_BROKER_URL"])
    monkeypatch.setenv("CELERY_RESULT_BACKEND", f"redis://127.0.0.1:{free_port()}/0")
    client = create_app({"TASKPLANE_ENV": "testing"}).test_client()
    workflow_id = str(uuid.uuid4())
    for response in (
        client.post("/workflows", json={"steps": [echo("a")]}),
        client.get(f"/workflows/{workflow_id}"),
        client.delete(f"/workflows/{workflow_id}"),
        client.post(f"/workflows/{workflow_id}/retry"),
    ):
        assert response.status_code == 503, response.get_data(as_text=True)
        assert response.json["error"]["code"] == "unavailable"
        assert "job storage" in response.json["error"]["message"]
        assert response.headers["Retry-After"].isdigit()


# -- the scopes ----------------------------------------------------------------------

TOKENS = {
    "reader": ["jobs:read"],
    "submitter": ["jobs:submit"],
    "both": ["jobs:submit", "jobs:read"],
}


def secret(name):
    return f"tp_test_workflows_{name}_0123456789abcdef"


@pytest.fixture(scope="module")
def guarded_web(platform):
    """The session's services behind a web that checks tokens."""
    with web_with_tokens(platform, TOKENS, secret) as base:
        yield base


def bearer(name):
    return {"Authorization": f"Bearer {secret(name)}"}


def test_each_workflow_operation_needs_its_scope(guarded_web, worker):
    with httpx.Client(base_url=guarded_web, timeout=10) as client:
        created = client.post(
            "/workflows", json={"steps": [echo("a")]}, headers=bearer("submitter")
        )
        assert created.status_code == 202, created.text
        workflow_id = created.json()["id"]
        calls = [
            ("post", "/workflows", {"steps": [echo("a")]}, "jobs:submit", 202),
            ("get", f"/workflows/{workflow_id}", None, "jobs:read", 200),
            ("post", f"/workflows/{workflow_id}/retry", None, "jobs:submit", 409),
            ("delete", f"/workflows/{workflow_id}", None, "jobs:submit", None),
        ]
        for method, path, body, scope, status in calls:
            kwargs = {} if body is None else {"json": body}
            assert_error(client.request(method, path, **kwargs), 401, "unauthorized")
            other = "reader" if scope == "jobs:submit" else "submitter"
            error = assert_error(
                client.request(method, path, headers=bearer(other), **kwargs), 403, "forbidden"
            )
            assert error["details"] == {"required_scope": scope}
            answer = client.request(method, path, headers=bearer("both"), **kwargs)
            # Cancel answers 200, or 409 when the one echo step has succeeded already.
            assert answer.status_code == status or (
                status is None and answer.status_code in (200, 409)
            )
        document = client.get("/openapi.json").json()
    for path, method in OPERATIONS:
        operation = document["paths"][path][method]
        scope = "jobs:read" if method == "get" else "jobs:submit"
        assert operation["security"] == [{"bearer": [scope]}]
        assert {"401", "403"} <= set(operation["responses"])


# -- the document --------------------------------------------------------------------


def test_the_document_lists_every_workflow_operation_with_its_answers(api):
    from openapi_spec_validator import validate

    from tasks.core.workflow_spec import MAX_DEPENDS, MAX_STEPS

    document = api.get("/openapi.json").json()
    validate(document)
    found = {
        (p, m) for p, ms in document["paths"].items() if p.startswith("/workflows") for m in ms
    }
    assert found == OPERATIONS
    statuses = {(p, m): set(document["paths"][p][m]["responses"]) for p, m in OPERATIONS}
    assert statuses[("/workflows", "post")] == {"202", "400", "413", "415", "422", "503"}
    assert statuses[("/workflows/{workflow_id}", "get")] == {"200", "404", "503"}
    assert statuses[("/workflows/{workflow_id}", "delete")] == {"200", "404", "409", "503"}
    assert statuses[("/workflows/{workflow_id}/retry", "post")] == {"200", "404", "409", "503"}
    post = document["paths"]["/workflows"]["post"]
    assert "Location" in post["responses"]["202"]["headers"]
    assert "Retry-After" in post["responses"]["503"]["headers"]
    assert post["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Workflow"
    }
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["steps"]["maxItems"] == MAX_STEPS
    assert body["properties"]["steps"]["minItems"] == 1
    step = document["components"]["schemas"]["WorkflowStepIn"]
    types = {t["name"] for t in api.get("/job-types").json()["job_types"]}
    assert set(step["properties"]["type"]["enum"]) == types
    assert step["properties"]["depends_on"]["maxItems"] == MAX_DEPENDS
    assert step["additionalProperties"] is False
    parameter = document["paths"]["/workflows/{workflow_id}"]["get"]["parameters"][0]
    assert parameter["name"] == "workflow_id" and parameter["schema"]["format"] == "uuid"
    assert document["paths"]["/workflows"]["post"]["tags"] == ["workflows"]


def test_answers_match_the_documented_workflow_model(api):
    from jsonschema import Draft202012Validator

    document = api.get("/openapi.json").json()
    validator = Draft202012Validator(
        {**document["components"]["schemas"]["Workflow"], "components": document["components"]}
    )
    created = start(
        api,
        echo("list", [1, 2, 3]),
        {
            "id": "each",
            "type": "diagnostics.echo",
            "depends_on": ["list"],
            "map": ref("list", "data"),
            "payload": {"data": {"$item": ""}},
        },
        echo("none", [], depends_on=["each"]),
        {
            "id": "empty",
            "type": "diagnostics.echo",
            "depends_on": ["none"],
            "map": ref("none", "data"),
            "payload": {"data": {"$item": ""}},
        },
    )
    validator.validate(created)
    view = wait_for_workflow(api, created["id"], "succeeded")
    validator.validate(view)
    steps = {s["id"]: s for s in view["steps"]}
    assert steps["each"]["result"] == [{"data": 1}, {"data": 2}, {"data": 3}]
    assert steps["each"]["items"]["total"] == 3 and steps["each"]["items"]["succeeded"] == 3
    assert steps["empty"]["result"] == [] and steps["empty"]["items"]["total"] == 0
    failed = start(api, {"id": "f", "type": "diagnostics.fail", "payload": {"permanent": True}})
    validator.validate(wait_for_workflow(api, failed["id"], "failed"))
