"""Completion callbacks: the signature, the callback job built for a finished record,
and webhook.deliver sending exactly the bytes the signature covers.

Signatures are checked with the verification snippet of README.md itself, so
the documented receiver code is what the tests run.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tasks.core import callbacks, submission
from tasks.core.json_body import body_bytes
from tasks.core.registry import enabled_job_types
from tasks.core.submission import InvalidJob
from tasks.jobs.webhooks import deliver
from tasks.jobs.webhooks.schema import WebhookPayload

README = Path(__file__).resolve().parents[2] / "README.md"
SECRET = "s3cret-for-tests"


def readme_verify() -> Any:
    """``verify`` from the README's Completion callbacks section, as a receiver copies it."""
    text = README.read_text()
    section = text[text.index("### Completion callbacks") :]
    section = section[: section.index("\n## ", 1)]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    return namespace["verify"]


verify = readme_verify()


class Conf(dict):
    """The few Celery settings the callbacks module and the URL policy read."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


class App:
    def __init__(self, **conf: Any) -> None:
        self.conf = Conf(
            taskplane_environment="testing",
            taskplane_callback_secret=SECRET,
            taskplane_url_policy={"deny_private": False, "allow": [], "deny": []},
            **conf,
        )
        self.job_types = enabled_job_types(["webhooks", "diagnostics"])


def finished(state: str = "succeeded", **fields: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "type": "diagnostics.echo",
        "queue": "diagnostics",
        "state": state,
        "attempts": 1,
        "result": {"data": "é ✓ \u2028"},
        "created_at": "2026-01-01T00:00:00.000Z",
        "finished_at": "2026-01-01T00:00:01.000Z",
        "callback_url": "http://receiver.example/hooks",
        "token": "private-token",
        "publishing": "private-mark",
        "run": "private-run",
        **fields,
    }


# -- the signature -------------------------------------------------------------------


def test_a_signature_verifies_with_the_documented_snippet():
    body = b'{"id":"x","state":"succeeded"}'
    now = int(time.time())
    header = callbacks.sign(SECRET, body, now)
    assert re.fullmatch(rf"t={now},v1=[0-9a-f]{{64}}", header), header
    assert verify(SECRET, header, body)


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body():
    body = b'{"a":1}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert callbacks.sign(SECRET, body, 1700000000) == f"t=1700000000,v1={expected}"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda secret, header, body: (secret, header, body + b" "),
        lambda secret, header, body: (secret, header, body.replace(b"1", b"2")),
        lambda secret, header, body: ("another secret", header, body),
        lambda secret, header, body: (
            secret,
            header.replace("t=", "t=1", 1),  # another timestamp, same mac
            body,
        ),
        lambda secret, header, body: (secret, header.split(",")[0], body),  # no v1
        lambda secret, header, body: (secret, "garbage", body),
        lambda secret, header, body: (secret, header[:-1] + "é", body),  # not ASCII
    ],
)
def test_anything_changed_fails_verification(tamper):
    body = b'{"id":"1","state":"failed"}'
    header = callbacks.sign(SECRET, body, int(time.time()))
    assert verify(SECRET, header, body)
    assert not verify(*tamper(SECRET, header, body))


def test_a_stale_signature_fails_past_the_tolerance():
    body = b"{}"
    old = int(time.time()) - 3 * 3600
    header = callbacks.sign(SECRET, body, old)
    assert not verify(SECRET, header, body)
    assert verify(SECRET, header, body, tolerance_s=4 * 3600)


# -- the callback job ----------------------------------------------------------------


def test_the_callback_job_posts_the_public_view_signed_over_the_exact_bytes():
    app, record = App(), finished()
    job = callbacks.build(app, record, now=time.time())
    assert job is not None
    assert job.job_type.name == "webhook.deliver"
    assert job.callback_url is None  # no callback of a callback
    assert job.parent_id == record["id"]
    assert job.tags == {callbacks.CALLBACK_TAG: record["id"]}
    payload = job.payload
    sent = body_bytes(payload["body"])
    view = json.loads(sent)
    assert view == payload["body"]
    assert view["id"] == record["id"] and view["state"] == "succeeded"
    assert view["result"] == record["result"]
    assert not {"token", "publishing", "run"} & set(view)
    headers = payload["headers"]
    assert headers["X-Taskplane-Event"] == "job.finished"
    assert headers["X-Taskplane-Job"] == record["id"]
    assert verify(SECRET, headers["X-Taskplane-Signature"], sent)
    assert not verify(
        "taskplane-development-callback-secret", headers["X-Taskplane-Signature"], sent
    )
    assert payload["url"] == record["callback_url"]
    WebhookPayload.model_validate(payload)  # what the worker validates again


def test_one_completion_one_id_and_a_replayed_run_another():
    app, record = App(), finished("failed")
    first = callbacks.build(app, record, now=1)
    again = callbacks.build(app, dict(record), now=2)
    assert first.job_id == again.job_id  # type: ignore[union-attr]
    replayed = {**record, "history": [{"state": "failed"}]}
    assert callbacks.build(app, replayed).job_id != first.job_id  # type: ignore[union-attr]
    other_state = {**record, "state": "cancelled"}
    assert callbacks.build(app, other_state).job_id != first.job_id  # type: ignore[union-attr]
    uuid.UUID(first.job_id)  # type: ignore[union-attr]


@pytest.mark.parametrize("state", ["queued", "scheduled", "started", "retrying"])
def test_a_job_that_is_not_final_gets_no_callback(state):
    assert callbacks.build(App(), finished(state)) is None


def test_a_job_without_callback_url_gets_none():
    record = finished()
    del record["callback_url"]
    assert callbacks.build(App(), record) is None
    assert callbacks.notify_final(App(), record) is None
    assert callbacks.notify_final(App(), None) is None


def test_a_url_the_policy_refuses_now_is_not_sent():
    app = App()
    app.conf["taskplane_url_policy"] = {"deny_private": True, "allow": [], "deny": []}
    with pytest.raises(InvalidJob) as raised:
        callbacks.build(app, finished(callback_url="http://127.0.0.1:9/hooks"))
    assert raised.value.code == "url_not_allowed"


# -- the secret ----------------------------------------------------------------------


def test_development_and_testing_sign_with_the_fixed_secret_when_none_is_set():
    for environment in ("development", "testing"):
        app = App()
        app.conf.update(taskplane_environment=environment, taskplane_callback_secret="")
        assert callbacks.secret(app.conf) == callbacks.DEVELOPMENT_SECRET
        callbacks.check_configured(app)
        job = callbacks.build(app, finished())
        signature = job.payload["headers"]["X-Taskplane-Signature"]  # type: ignore[union-attr]
        body = body_bytes(job.payload["body"])  # type: ignore[union-attr]
        assert verify(callbacks.DEVELOPMENT_SECRET, signature, body)


def test_production_without_a_secret_refuses_callbacks():
    app = App()
    app.conf.update(taskplane_environment="production", taskplane_callback_secret="")
    assert callbacks.secret(app.conf) is None
    with pytest.raises(InvalidJob) as raised:
        callbacks.check_configured(app)
    assert raised.value.code == "callbacks_not_configured"
    assert raised.value.problems[0]["path"] == "callback_url"
    assert callbacks.notify_final(app, finished()) is None  # logged, nothing submitted


def test_production_with_a_secret_signs_with_it():
    app = App()
    app.conf.update(taskplane_environment="production", taskplane_callback_secret="prod-secret")
    callbacks.check_configured(app)
    job = callbacks.build(app, finished())
    signature = job.payload["headers"]["X-Taskplane-Signature"]  # type: ignore[union-attr]
    body = body_bytes(job.payload["body"])  # type: ignore[union-attr]
    assert verify("prod-secret", signature, body)
    assert not verify(SECRET, signature, body)


# -- webhook.deliver sends the bytes the signature covers ------------------------------


class FakeContext:
    """What deliver._post needs of a JobContext, with an httpx mock transport."""

    job_id = "callback-job-id"
    attempt = 1

    def __init__(self, handler: Any) -> None:
        self.transport = httpx.MockTransport(handler)

    def http_client(self) -> Any:
        return contextlib.closing(httpx.Client(transport=self.transport))


def test_deliver_sends_the_bytes_a_callback_signs():
    """The callback's signature, checked over what webhook.deliver actually POSTs, after
    the worker validated the payload again (72.0 arrives as 72 on both sides)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    record = finished(result={"total": 72.0, "name": "é", "items": [1.5, None]})
    job = callbacks.build(App(), record, now=time.time())
    payload = WebhookPayload.model_validate_json(json.dumps(job.payload))  # type: ignore[union-attr]
    deliver._post(payload, FakeContext(handler))  # type: ignore[arg-type]
    (request,) = seen
    assert verify(SECRET, request.headers["x-taskplane-signature"], request.content)
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == "callback-job-id"
    assert json.loads(request.content)["result"] == {"total": 72, "name": "é", "items": [1.5, None]}


def test_deliver_sends_any_body_as_compact_json():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    payload = WebhookPayload.model_validate({"url": "http://receiver.example/", "body": [1, "x"]})
    deliver._post(payload, FakeContext(handler))  # type: ignore[arg-type]
    assert seen[0].content == b'[1,"x"]'


def test_submission_refuses_a_callback_url_in_production_without_a_secret():
    envelope = {
        "type": "webhook.deliver",
        "payload": {"url": "http://receiver.example/", "body": {}},
        "callback_url": "http://receiver.example/done",
    }
    app = App()
    app.conf.update(taskplane_environment="production", taskplane_callback_secret="")
    with pytest.raises(InvalidJob) as raised:
        submission.check(app, envelope)
    assert raised.value.code == "callbacks_not_configured"
    no_callback = {k: v for k, v in envelope.items() if k != "callback_url"}
    assert submission.check(app, no_callback).callback_url is None
    app.conf["taskplane_callback_secret"] = "prod-secret"
    assert submission.check(app, envelope).callback_url == "http://receiver.example/done"
