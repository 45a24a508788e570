"""The HTTP contract: cancel, unknown ids, the catalogue, OpenAPI and every error status."""

import json
import uuid

import pytest
from openapi_spec_validator import validate

from tests.integration.helpers import assert_error, follow, submit

pytestmark = pytest.mark.integration


def test_submit_answers_202_with_location_and_a_queued_job(api):
    response = api.post("/jobs", json={"type": "diagnostics.echo", "payload": {}})
    assert response.status_code == 202
    job = response.json()
    assert response.headers["Location"] == f"/jobs/{job['id']}"
    assert uuid.UUID(job["id"])
    assert job["type"] == "diagnostics.echo" and job["state"] == "queued"
    assert set(job) >= {
        "id",
        "type",
        "state",
        "attempts",
        "result",
        "error",
        "created_at",
        "started_at",
        "finished_at",
    }
    follow(api, job["id"])


def test_cancelled_job_never_runs(api):
    blockers = [submit(api, "diagnostics.sleep", {"seconds": 2})["id"] for _ in range(2)]
    victim = submit(api, "diagnostics.echo", {"data": "must not run"})
    response = api.delete(f"/jobs/{victim['id']}")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "cancelled"
    for job_id in blockers:
        follow(api, job_id)
    # The worker has now consumed the cancelled message too; it must not have run it.
    tail = submit(api, "diagnostics.echo", {})
    follow(api, tail["id"])
    job = api.get(f"/jobs/{victim['id']}").json()
    assert job["state"] == "cancelled"
    assert job["attempts"] == 0 and job["result"] is None and job["started_at"] is None


def test_cancelling_a_finished_job_is_a_conflict(api):
    job = submit(api, "diagnostics.echo", {})
    follow(api, job["id"])
    error = assert_error(api.delete(f"/jobs/{job['id']}"), 409, "job_not_cancellable")
    assert error["details"] == {"state": "succeeded"}


def test_cancelling_a_running_job_is_a_conflict(api):
    job = submit(api, "diagnostics.sleep", {"seconds": 1.5})
    _wait_for_state(api, job["id"], "started")
    assert_error(api.delete(f"/jobs/{job['id']}"), 409, "job_not_cancellable")
    follow(api, job["id"])


def _wait_for_state(api, job_id, state):
    from tests.services import wait_until

    wait_until(
        lambda: api.get(f"/jobs/{job_id}").json()["state"] == state,
        20,
        0.02,
        what=f"job {job_id} to be {state}",
    )


@pytest.mark.parametrize("job_id", [str(uuid.uuid4()), "not-a-uuid", "x" * 300])
def test_unknown_job_is_404_for_read_and_cancel(api, job_id):
    assert_error(api.get(f"/jobs/{job_id}"), 404, "job_not_found")
    assert_error(api.delete(f"/jobs/{job_id}"), 404, "job_not_found")


def test_job_types_lists_every_shipped_type_with_schema_and_retry(api):
    body = api.get("/job-types").json()
    by_name = {jt["name"]: jt for jt in body["job_types"]}
    assert set(by_name) == {
        "webhook.deliver",
        "email.send",
        "logs.summarize",
        "diagnostics.echo",
        "diagnostics.sum",
        "diagnostics.sleep",
        "diagnostics.fail",
        "diagnostics.crash",
    }
    webhook = by_name["webhook.deliver"]
    assert webhook["queue"] == "webhooks"
    assert webhook["payload_schema"]["required"] == ["url", "body"]
    assert webhook["retry"]["max_attempts"] == 8 and webhook["retry"]["jitter"] is True
    assert "from" in by_name["email.send"]["payload_schema"]["properties"]


def test_openapi_document_is_valid_openapi_3(api):
    document = api.get("/openapi.json").json()
    validate(document)
    assert document["openapi"].startswith("3.")
    assert {"/jobs", "/jobs/{job_id}", "/job-types", "/health/live", "/openapi.json"} <= set(
        document["paths"]
    )
    variants = document["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]["oneOf"]
    assert len(variants) == 8  # one per job type of the testing environment


def test_health_live(api):
    response = api.get("/health/live")
    assert response.status_code == 200 and response.json() == {"status": "UP"}


# -- every error status, one shape ---------------------------------------------------


def test_malformed_json_is_400(api):
    response = api.post(
        "/jobs",
        content=b'{"type": "diagnostics.echo",',
        headers={"Content-Type": "application/json"},
    )
    assert_error(response, 400, "malformed_json")


@pytest.mark.parametrize("raw", [b"\xff\xfe{}", b'{"type": NaN}', b"", b"[" * 100_000])
def test_undecodable_or_nonstandard_json_is_400(api, raw):
    response = api.post("/jobs", content=raw, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "malformed_json")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(api, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    body = json.dumps({"type": "diagnostics.echo", "payload": {}}).encode()
    assert_error(api.post("/jobs", content=body, headers=headers), 415, "unsupported_media_type")


def test_unknown_job_type_is_422(api):
    error = assert_error(
        api.post("/jobs", json={"type": "nope.nothing", "payload": {}}), 422, "unknown_job_type"
    )
    assert "webhook.deliver" in error["details"]["known"]


@pytest.mark.parametrize("body", [[1, 2], "text", 3, None])
def test_non_object_body_is_422(api, body):
    response = api.post(
        "/jobs", content=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    assert_error(response, 422, "validation_failed")


def test_envelope_violations_name_the_field(api):
    error = assert_error(
        api.post("/jobs", json={"payload": {}, "extra": 1}), 422, "validation_failed"
    )
    assert {d["path"] for d in error["details"]} == {"type", "extra"}


def test_payload_violations_name_the_failing_paths(api):
    response = api.post(
        "/jobs", json={"type": "webhook.deliver", "payload": {"url": "ftp://x", "timeout_s": 500}}
    )
    error = assert_error(response, 422, "validation_failed")
    paths = {d["path"] for d in error["details"]}
    assert paths == {"payload.url", "payload.body", "payload.timeout_s"}


def test_email_payload_rejects_bad_addresses_and_header_injection(api):
    response = api.post(
        "/jobs",
        json={
            "type": "email.send",
            "payload": {
                "to": ["not-an-address"],
                "subject": "hi\r\nBcc: victim@example.com",
                "text": "x",
            },
        },
    )
    error = assert_error(response, 422, "validation_failed")
    assert {d["path"] for d in error["details"]} == {"payload.to.0", "payload.subject"}


def test_body_over_the_limit_is_413(api):
    big = {"type": "diagnostics.echo", "payload": {"data": "x" * (1024 * 1024 + 10)}}
    assert_error(api.post("/jobs", json=big), 413, "request_entity_too_large")


def test_unknown_route_is_404_in_the_same_shape(api):
    assert_error(api.get("/nowhere"), 404, "not_found")


def test_wrong_method_is_405_with_allow_header(api):
    response = api.put("/jobs", json={})
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]
