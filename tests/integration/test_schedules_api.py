"""/schedules over HTTP against the session's gunicorn: every answer, every error, the scope.

Schedules here fire once a year (cron "0 0 1 1 *") unless a test says otherwise, so
a scheduler another module runs in the session never fires them during a test.
"""

import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis

from tests.integration.helpers import assert_error, follow, web_with_tokens
from tests.services import free_port

pytestmark = pytest.mark.integration
YEARLY = "0 0 1 1 *"
OPERATIONS = {
    ("/schedules", "get"),
    ("/schedules", "post"),
    ("/schedules/{schedule_id}", "get"),
    ("/schedules/{schedule_id}", "patch"),
    ("/schedules/{schedule_id}", "delete"),
    ("/schedules/{schedule_id}/pause", "post"),
    ("/schedules/{schedule_id}/resume", "post"),
    ("/schedules/{schedule_id}/run", "post"),
}


@pytest.fixture()
def store(session_redis_url):
    client = redis.Redis.from_url(session_redis_url, decode_responses=True)
    yield client
    client.close()


def clear_schedules(client: redis.Redis) -> None:
    """Every schedule in the session's Redis (other modules' too) is gone."""
    keys = ["taskplane:schedules"]
    for pattern in ("taskplane:schedule:*", "taskplane:schedule-fires:*"):
        keys += list(client.scan_iter(match=pattern, count=1000))
    client.delete(*keys)


@pytest.fixture(autouse=True)
def no_schedules(store):
    clear_schedules(store)
    yield
    clear_schedules(store)


def definition(schedule_id="nightly", **fields):
    return {"id": schedule_id, "type": "diagnostics.echo", "cron": YEARLY, **fields}


def create(api, **fields):
    response = api.post("/schedules", json=definition(**fields))
    assert response.status_code == 201, response.text
    return response.json()


# -- the round trip ------------------------------------------------------------------


def test_create_get_list_patch_delete(api):
    body = definition(payload={"data": {"n": 1}}, timezone="Europe/Berlin", jitter_s=2)
    response = api.post("/schedules", json=body)
    assert response.status_code == 201, response.text
    assert response.headers["Location"] == "/schedules/nightly"
    created = response.json()
    assert created["id"] == "nightly" and created["type"] == "diagnostics.echo"
    assert created["payload"] == {"data": {"n": 1}}
    assert (created["cron"], created["timezone"], created["jitter_s"]) == (
        YEARLY,
        "Europe/Berlin",
        2.0,
    )
    assert "interval_s" not in created
    assert created["enabled"] is True and created["disabled_reason"] is None
    assert created["origin"] == "api"
    assert created["missed"] == "last" and created["overlap"] == "allow"
    assert created["next_fire_at"].endswith("Z")
    assert created["last_fires"] == [] and created["counts"] == {
        "fired": 0,
        "skipped": 0,
        "missed": 0,
    }
    assert api.get("/schedules/nightly").json() == created
    assert api.get("/schedules").json() == {"schedules": [created], "next_after": None}

    changed = api.patch("/schedules/nightly", json={"interval_s": 3600, "overlap": "skip"})
    assert changed.status_code == 200, changed.text
    view = changed.json()
    assert view["interval_s"] == 3600 and "cron" not in view and "timezone" not in view
    assert view["overlap"] == "skip" and view["payload"] == {"data": {"n": 1}}
    assert view["created_at"] == created["created_at"]
    assert api.get("/schedules/nightly").json() == view

    window = {"start_at": "2031-01-01T00:00:00+01:00", "end_at": "2032-01-01T00:00:00Z"}
    view = api.patch("/schedules/nightly", json=window).json()
    assert (view["start_at"], view["end_at"]) == (
        "2030-12-31T23:00:00.000Z",
        "2032-01-01T00:00:00.000Z",
    )
    assert view["next_fire_at"] >= "2030-12-31T23:00:00"
    cleared = api.patch("/schedules/nightly", json={"start_at": None, "end_at": None}).json()
    assert cleared["start_at"] is None and cleared["end_at"] is None

    deleted = api.delete("/schedules/nightly")
    assert deleted.status_code == 204 and deleted.content == b""
    assert_error(api.get("/schedules/nightly"), 404, "schedule_not_found")
    assert_error(api.delete("/schedules/nightly"), 404, "schedule_not_found")
    assert api.get("/schedules").json() == {"schedules": [], "next_after": None}


def test_created_disabled_does_not_say_when_it_fires(api):
    view = create(api, enabled=False)
    assert view["enabled"] is False and view["next_fire_at"] is None


def test_list_pages_through_every_schedule_in_id_order(api):
    ids = [f"s-{n}" for n in range(5)]
    for schedule_id in reversed(ids):
        create(api, schedule_id=schedule_id)
    seen, after, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = api.get("/schedules", params=params).json()
        pages += 1
        seen += [s["id"] for s in page["schedules"]]
        after = page["next_after"]
        if after is None:
            break
        assert after == seen[-1]
    assert seen == ids and pages == 3
    assert [s["id"] for s in api.get("/schedules", params={"limit": 5}).json()["schedules"]] == ids
    assert api.get("/schedules", params={"limit": 5}).json()["next_after"] is None
    assert api.get("/schedules", params={"after": "s-4"}).json()["schedules"] == []


@pytest.mark.parametrize("limit", ["0", "1001", "x", "-1", ""])
def test_list_limit_out_of_range_is_400(api, limit):
    assert_error(api.get("/schedules", params={"limit": limit}), 400, "invalid_parameter")


# -- what a definition may not be ----------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "code", "path"),
    [
        ({"type": "nope.nothing"}, "unknown_job_type", "type"),
        ({"cron": "61 * * * *"}, "validation_failed", "cron"),
        ({"cron": "* * *"}, "validation_failed", "cron"),
        ({"cron": "@hourly"}, "validation_failed", "cron"),
        ({"cron": "0 0 31 2 *"}, "validation_failed", "cron"),
        ({"timezone": "Mars/Olympus"}, "validation_failed", "timezone"),
        ({"cron": None, "interval_s": 0.5}, "validation_failed", "interval_s"),
        ({"cron": None, "interval_s": 1.0005}, "validation_failed", "interval_s"),
        ({"cron": None}, "validation_failed", "cron"),
        ({"interval_s": 60}, "validation_failed", "cron"),
        (
            {"type": "diagnostics.sleep", "payload": {"seconds": "x"}},
            "validation_failed",
            "payload.seconds",
        ),
        ({"payload": {"unknown": 1}}, "validation_failed", "payload.unknown"),
        (
            {"start_at": "2031-01-01T00:00:00Z", "end_at": "2030-01-01T00:00:00Z"},
            "validation_failed",
            "end_at",
        ),
        ({"start_at": "2031-01-01T00:00:00"}, "validation_failed", "start_at"),
        ({"start_at": "0001-01-01T00:00:00+14:00"}, "validation_failed", "start_at"),
        ({"id": "Not A Slug"}, "validation_failed", "id"),
        ({"id": "x" * 65}, "validation_failed", "id"),
        ({"jitter_s": -1}, "validation_failed", "jitter_s"),
        ({"missed": "sometimes"}, "validation_failed", "missed"),
        ({"colour": "red"}, "validation_failed", "colour"),
    ],
)
def test_an_invalid_definition_is_422_naming_the_field(api, fields, code, path):
    error = assert_error(api.post("/schedules", json=definition(**fields)), 422, code)
    assert path in [d["path"] for d in error["details"]], error
    assert api.get("/schedules").json()["schedules"] == []


def test_unknown_job_type_lists_the_known_ones(api):
    error = assert_error(api.post("/schedules", json=definition(type="x.y")), 422)
    (problem,) = error["details"]
    assert problem["path"] == "type" and "diagnostics.echo" in problem["known"]


def test_id_missing_is_422_naming_it(api):
    body = {"type": "diagnostics.echo", "cron": YEARLY}
    error = assert_error(api.post("/schedules", json=body), 422, "validation_failed")
    assert [d["path"] for d in error["details"]] == ["id"]


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"cron": "not cron"}, "cron"),
        ({"cron": None}, "cron"),
        ({"type": None}, "type"),
        ({"type": "nope.nothing"}, "type"),
        ({"type": "diagnostics.sleep"}, "payload.seconds"),
        ({"payload": {"unknown": 1}}, "payload.unknown"),
        ({"timezone": "Nowhere/Land"}, "timezone"),
        ({"interval_s": 0}, "interval_s"),
        ({"start_at": "2031-01-01T00:00:00Z", "end_at": "2031-01-01T00:00:00Z"}, "end_at"),
        ({"id": "renamed"}, "id"),
        ({"enabled": "yes"}, "enabled"),
    ],
)
def test_an_invalid_change_is_422_naming_the_field_and_changes_nothing(api, change, path):
    before = create(api)
    error = assert_error(api.patch("/schedules/nightly", json=change), 422)
    assert path in [d["path"] for d in error["details"]], error
    assert api.get("/schedules/nightly").json() == before


def test_change_or_delete_of_an_unknown_schedule_is_404(api):
    for response in (
        api.patch("/schedules/ghost", json={"cron": YEARLY}),
        api.delete("/schedules/ghost"),
        api.get("/schedules/ghost"),
        api.post("/schedules/ghost/pause"),
        api.post("/schedules/ghost/resume"),
        api.post("/schedules/ghost/run"),
        api.get("/schedules/NOT%20AN%20ID"),
    ):
        error = assert_error(response, 404, "schedule_not_found")
        assert "id" in error["details"]


@pytest.mark.parametrize("method", ["post", "patch"])
def test_bodies_that_are_not_json_objects(api, method):
    path = "/schedules" if method == "post" else "/schedules/nightly"
    create(api)
    send = getattr(api, method)
    headers = {"Content-Type": "application/json"}
    assert_error(send(path, content=b"{nope", headers=headers), 400, "malformed_json")
    assert_error(send(path, content=b"[1, 2]", headers=headers), 422, "validation_failed")
    assert_error(
        send(path, content=b"{}", headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    big = {"payload": {"data": "x" * (1024 * 1024 + 10)}}
    assert_error(send(path, json=big), 413, "request_entity_too_large")


# -- conflicts -----------------------------------------------------------------------


def test_a_second_schedule_with_the_same_id_is_409(api):
    first = create(api)
    error = assert_error(
        api.post("/schedules", json=definition(cron="5 5 * * *")), 409, "schedule_exists"
    )
    assert error["details"] == {"id": "nightly"}
    assert api.get("/schedules/nightly").json() == first


def test_a_declared_schedule_is_changed_in_config_but_operated_here(api, store):
    create(api)
    store.hset("taskplane:schedule:nightly", mapping={"origin": "config"})
    assert_error(
        api.patch("/schedules/nightly", json={"cron": "1 1 * * *"}), 409, "declared_in_config"
    )
    assert_error(api.delete("/schedules/nightly"), 409, "declared_in_config")
    assert api.get("/schedules/nightly").json()["cron"] == YEARLY
    paused = api.post("/schedules/nightly/pause")
    assert paused.status_code == 200 and paused.json()["enabled"] is False
    resumed = api.post("/schedules/nightly/resume")
    assert resumed.status_code == 200 and resumed.json()["enabled"] is True
    run = api.post("/schedules/nightly/run")
    assert run.status_code == 202, run.text
    assert resumed.json()["origin"] == "config"


def test_the_schedule_limit_is_409(api, store):
    from tasks.core.schedules import MAX_SCHEDULES

    store.zadd("taskplane:schedules", {f"filler-{n:05d}": 0 for n in range(MAX_SCHEDULES)})
    error = assert_error(api.post("/schedules", json=definition()), 409, "schedule_limit_reached")
    assert error["details"] == {"id": "nightly"}
    assert store.exists("taskplane:schedule:nightly") == 0


# -- pause, resume, a payload that stopped fitting -----------------------------------


def test_pause_and_resume(api):
    create(api)
    paused = api.post("/schedules/nightly/pause").json()
    assert paused["enabled"] is False and paused["next_fire_at"] is None
    assert paused["disabled_reason"] == "paused by an operator"
    assert api.post("/schedules/nightly/pause").json()["enabled"] is False  # idempotent
    resumed = api.post("/schedules/nightly/resume").json()
    assert resumed["enabled"] is True and resumed["disabled_reason"] is None
    assert resumed["next_fire_at"] is not None
    via_patch = api.patch("/schedules/nightly", json={"enabled": False}).json()
    assert via_patch["enabled"] is False
    assert api.patch("/schedules/nightly", json={"enabled": True}).json()["enabled"] is True


def test_a_payload_that_no_longer_fits_keeps_the_schedule_disabled(api, store):
    create(api, type="diagnostics.sleep", payload={"seconds": 0.01})
    api.post("/schedules/nightly/pause")
    key = "taskplane:schedule:nightly"
    spec = json.loads(store.hget(key, "spec"))
    spec["payload"] = {"seconds": "a while"}  # as if the job type's schema had changed
    store.hset(key, "spec", json.dumps(spec))

    error = assert_error(api.post("/schedules/nightly/resume"), 422, "validation_failed")
    assert [d["path"] for d in error["details"]] == ["payload.seconds"]
    view = api.get("/schedules/nightly").json()
    assert view["enabled"] is False and "payload.seconds" in view["disabled_reason"]
    error = assert_error(api.patch("/schedules/nightly", json={"enabled": True}), 422)
    assert [d["path"] for d in error["details"]] == ["payload.seconds"]
    assert api.get("/schedules/nightly").json()["enabled"] is False
    assert_error(api.post("/schedules/nightly/run"), 422, "validation_failed")
    assert api.get("/schedules/nightly").json()["counts"]["fired"] == 0

    fixed = api.patch("/schedules/nightly", json={"payload": {"seconds": 0.01}, "enabled": True})
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["enabled"] is True and fixed.json()["disabled_reason"] is None


# -- run now -------------------------------------------------------------------------


def test_run_now_answers_202_with_the_job_which_runs(api):
    create(api, payload={"data": "now"})
    response = api.post("/schedules/nightly/run")
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["Location"] == f"/jobs/{job['id']}"
    assert job["type"] == "diagnostics.echo" and job["state"] in ("queued", "started")
    assert job["tags"]["schedule"] == "nightly" and job["tags"]["trigger"] == "manual"
    final, _ = follow(api, job["id"])
    assert final["state"] == "succeeded" and final["result"]["data"] == "now"

    second = api.post("/schedules/nightly/run").json()
    assert second["id"] != job["id"]  # run now twice is two runs
    view = api.get("/schedules/nightly").json()
    assert view["counts"]["fired"] == 2
    assert [f["job_id"] for f in view["last_fires"]] == [second["id"], job["id"]]
    assert {f["trigger"] for f in view["last_fires"]} == {"manual"}
    assert view["last_fires"][1]["state"] == "succeeded"
    follow(api, second["id"])


def test_run_now_of_a_paused_schedule_runs_it_once_and_it_stays_paused(api):
    create(api, enabled=False)
    job = api.post("/schedules/nightly/run").json()
    assert follow(api, job["id"])[0]["state"] == "succeeded"
    assert api.get("/schedules/nightly").json()["enabled"] is False


# -- outages: 503 with Retry-After, as POST /jobs -------------------------------------


@pytest.fixture()
def in_process(platform, monkeypatch):
    """A web app in this process against the session's broker and Redis, to steer it."""
    from app import create_app

    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        monkeypatch.setenv(name, platform.env[name])
    return create_app({"TASKPLANE_ENV": "testing"})


def test_run_while_the_broker_blocks_publishers_is_503_like_post_jobs(in_process, api):
    create(api)
    celery = in_process.extensions["celery"]
    celery.broker_watch.ensure_started()
    time.sleep(0.5)
    celery.broker_alarm.set("memory alarm (test)")
    try:
        client = in_process.test_client()
        run = client.post("/schedules/nightly/run")
        jobs = client.post("/jobs", json={"type": "diagnostics.echo", "payload": {}})
    finally:
        celery.broker_alarm.clear()
    for response in (run, jobs):
        assert response.status_code == 503, response.get_data(as_text=True)
        assert response.json["error"]["code"] == "unavailable"
        assert response.headers["Retry-After"].isdigit()
    assert api.get("/schedules/nightly").json()["counts"]["fired"] == 0


def test_every_operation_is_503_while_redis_does_not_answer(monkeypatch, platform):
    from app import create_app

    monkeypatch.setenv("CELERY_BROKER_URL", platform.env["CELERY_BROKER_URL"])
    monkeypatch.setenv("CELERY_RESULT_BACKEND", f"redis://127.0.0.1:{free_port()}/0")
    client = create_app({"TASKPLANE_ENV": "testing"}).test_client()
    for response in (
        client.get("/schedules"),
        client.post("/schedules", json=definition()),
        client.get("/schedules/nightly"),
        client.patch("/schedules/nightly", json={"cron": YEARLY}),
        client.delete("/schedules/nightly"),
        client.post("/schedules/nightly/pause"),
        client.post("/schedules/nightly/resume"),
        client.post("/schedules/nightly/run"),
    ):
        assert response.status_code == 503, response.get_data(as_text=True)
        assert response.json["error"]["code"] == "unavailable"
        assert "job storage" in response.json["error"]["message"]
        assert response.headers["Retry-After"].isdigit()


# -- the admin scope -----------------------------------------------------------------

TOKENS = {"ops": ["admin"], "submitter": ["jobs:submit", "jobs:read"]}


def secret(name):
    return f"tp_test_schedules_{name}_0123456789abcdef"


@pytest.fixture(scope="module")
def guarded_web(platform):
    """The session's services behind a web that checks tokens."""
    with web_with_tokens(platform, TOKENS, secret) as base:
        yield base


def test_every_schedule_operation_needs_the_admin_scope(guarded_web, worker):
    calls = [
        ("get", "/schedules", None),
        ("post", "/schedules", definition()),
        ("get", "/schedules/nightly", None),
        ("patch", "/schedules/nightly", {"jitter_s": 1}),
        ("post", "/schedules/nightly/pause", None),
        ("post", "/schedules/nightly/resume", None),
        ("post", "/schedules/nightly/run", None),
        ("delete", "/schedules/nightly", None),
    ]
    with httpx.Client(base_url=guarded_web, timeout=10) as client:
        for method, path, body in calls:
            kwargs = {} if body is None else {"json": body}
            assert_error(client.request(method, path, **kwargs), 401, "unauthorized")
            submitter = {"Authorization": f"Bearer {secret('submitter')}"}
            error = assert_error(
                client.request(method, path, headers=submitter, **kwargs), 403, "forbidden"
            )
            assert error["details"] == {"required_scope": "admin"}
        ops = {"Authorization": f"Bearer {secret('ops')}"}
        answers = [
            client.request(method, path, headers=ops, **({} if b is None else {"json": b}))
            for method, path, b in calls
        ]
        assert [a.status_code for a in answers] == [200, 201, 200, 200, 200, 200, 202, 204]
        document = client.get("/openapi.json").json()
    for path, method in OPERATIONS:
        assert document["paths"][path][method]["security"] == [{"bearer": ["admin"]}]
        assert {"401", "403"} <= set(document["paths"][path][method]["responses"])


# -- the document --------------------------------------------------------------------


def test_the_document_lists_every_schedule_operation_with_its_answers(api):
    from openapi_spec_validator import validate

    document = api.get("/openapi.json").json()
    validate(document)
    found = {
        (p, m) for p, ms in document["paths"].items() if p.startswith("/schedules") for m in ms
    }
    assert found == OPERATIONS
    statuses = {(p, m): set(document["paths"][p][m]["responses"]) for p, m in OPERATIONS}
    assert statuses[("/schedules", "get")] == {"200", "400", "503"}
    assert statuses[("/schedules", "post")] == {"201", "400", "409", "413", "415", "422", "503"}
    assert statuses[("/schedules/{schedule_id}", "get")] == {"200", "404", "503"}
    assert statuses[("/schedules/{schedule_id}", "patch")] == {
        "200",
        "400",
        "404",
        "409",
        "413",
        "415",
        "422",
        "503",
    }
    assert statuses[("/schedules/{schedule_id}", "delete")] == {"204", "404", "409", "503"}
    assert statuses[("/schedules/{schedule_id}/pause", "post")] == {"200", "404", "503"}
    assert statuses[("/schedules/{schedule_id}/resume", "post")] == {"200", "404", "422", "503"}
    assert statuses[("/schedules/{schedule_id}/run", "post")] == {"202", "404", "422", "503"}
    post = document["paths"]["/schedules"]["post"]
    assert "Location" in post["responses"]["201"]["headers"]
    assert "Retry-After" in post["responses"]["503"]["headers"]
    run = document["paths"]["/schedules/{schedule_id}/run"]["post"]["responses"]["202"]
    assert run["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Job"}
    body = post["requestBody"]["content"]["application/json"]["schema"]
    types = {t["name"] for t in api.get("/job-types").json()["job_types"]}
    assert set(body["discriminator"]["mapping"]) == types
    echo = document["components"]["schemas"]["Schedule_diagnostics_echo"]
    assert echo["properties"]["type"]["const"] == "diagnostics.echo"
    assert "Europe/Berlin" in echo["properties"]["timezone"]["enum"]
    assert echo["properties"]["interval_s"]["anyOf"][0]["minimum"] == 1
    listing = document["paths"]["/schedules"]["get"]["parameters"]
    limit = next(p for p in listing if p["name"] == "limit")["schema"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, 1000, 100)


def test_answers_match_the_documented_schedule_model(api):
    from jsonschema import Draft202012Validator

    document = api.get("/openapi.json").json()
    components = document["components"]["schemas"]
    # The document's $refs resolve against a root that holds its components.
    validator = Draft202012Validator(
        {**components["ScheduleList"], "components": document["components"]}
    )
    create(api, schedule_id="cron-one")
    create(api, schedule_id="every-hour", cron=None, interval_s=3600)
    api.post("/schedules/cron-one/run")
    validator.validate(api.get("/schedules").json())
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert api.patch("/schedules/every-hour", json={"start_at": later}).status_code == 200
    validator.validate(api.get("/schedules").json())
