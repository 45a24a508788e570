"""``flask --app wsgi workflow ...`` as an operator runs it, against the session's services."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from tests.integration.helpers import wait_for_workflow
from tests.integration.test_workflows_api import echo, sleep, start
from tests.services import ROOT, VENV_BIN, Platform

pytestmark = pytest.mark.integration


def flask(platform: Platform, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "wsgi", "workflow", *args],
        cwd=ROOT,
        env=platform.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(platform: Platform, *args: str) -> dict:
    result = flask(platform, *args)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return json.loads(result.stdout)


def failed(platform: Platform, *args: str) -> str:
    result = flask(platform, *args)
    assert result.returncode != 0, result.stdout
    assert result.stdout == "", result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr


def test_show_prints_what_get_answers(platform, api):
    created = start(api, echo("a", "cli"), echo("b", depends_on=["a"]))
    wait_for_workflow(api, created["id"], "succeeded")
    shown = ok(platform, "show", created["id"])
    assert shown == api.get(f"/workflows/{created['id']}").json()
    assert shown["state"] == "succeeded" and [s["id"] for s in shown["steps"]] == ["a", "b"]


def test_cancel_then_retry_is_refused(platform, api):
    # The slow step keeps the workflow running while the command starts.
    created = start(api, sleep("slow", 15), echo("after", depends_on=["slow"]))
    cancelled = ok(platform, "cancel", created["id"])
    assert cancelled["id"] == created["id"] and cancelled["state"] == "cancelled"
    steps = {s["id"]: s for s in cancelled["steps"]}
    assert steps["after"]["state"] == "cancelled" and steps["after"]["job_id"] is None
    assert api.get(f"/workflows/{created['id']}").json()["state"] == "cancelled"
    refused = failed(platform, "retry", created["id"])
    assert "workflow_not_retryable" in refused and "cancelled" in refused


def test_retry_resumes_a_failed_workflow_and_a_succeeded_one_cannot_be_cancelled(
    platform, api, http_target
):
    hook = f"{http_target.base}/hooks/sequence/{uuid.uuid4().hex}?codes=400,200"
    deliver = {"id": "deliver", "type": "webhook.deliver", "payload": {"url": hook, "body": {}}}
    created = start(api, deliver, echo("after", "on", depends_on=["deliver"]))
    wait_for_workflow(api, created["id"], "failed")
    retried = ok(platform, "retry", created["id"])
    assert retried["state"] == "running" and retried["failed_step"] is None
    view = wait_for_workflow(api, created["id"], "succeeded")
    assert {s["id"]: s for s in view["steps"]}["after"]["result"] == {"data": "on"}
    refused = failed(platform, "cancel", created["id"])
    assert "workflow_not_cancellable" in refused and "succeeded" in refused


@pytest.mark.parametrize("command", ["show", "cancel", "retry"])
def test_an_unknown_id_is_a_message_and_a_nonzero_exit(platform, command):
    workflow_id = str(uuid.uuid4())
    message = failed(platform, command, workflow_id)
    assert "workflow_not_found" in message and workflow_id in message


def test_an_id_that_is_not_a_uuid_is_not_found_either(platform):
    assert "workflow_not_found" in failed(platform, "show", "not-a-uuid")
