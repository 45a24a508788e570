"""The production profile: refuses insecure settings, authenticates, limits, denies SSRF."""

import json
import subprocess
import sys

import httpx
import pytest

from app.auth import hash_token
from tests.integration.helpers import assert_error, follow
from tests.services import ROOT, VENV_BIN, Platform

pytestmark = pytest.mark.integration
TOKENS = {"submitter": ["jobs:submit", "jobs:read"], "reader": ["jobs:read"], "ops": ["admin"]}


def secret(name):
    return f"tp_test_{name}_0123456789abcdef0123456789"


def production_env(platform, **overrides):
    entries = [{"name": n, "sha256": hash_token(secret(n)), "scopes": s} for n, s in TOKENS.items()]
    env = {
        **platform.env,
        "TASKPLANE_ENV": "production",
        "TASKPLANE_SECRET_KEY": "k" * 48,
        "TASKPLANE_API_TOKENS": json.dumps(entries),
        "TASKPLANE_LOG_JSON": "1",
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def run(argv, env):
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"TASKPLANE_SECRET_KEY": None}, "TASKPLANE_SECRET_KEY"),
        ({"TASKPLANE_API_TOKENS": None}, "TASKPLANE_API_TOKENS"),
        ({"FLASK_DEBUG": "1"}, "FLASK_DEBUG"),
        ({"CELERY_BROKER_URL": "amqp://guest:guest@rabbit.example.com:5672//"}, "guest"),
    ],
)
def test_production_web_refuses_to_start_naming_the_setting(platform, overrides, named):
    result = run(
        [sys.executable, "-c", "from app import create_app; create_app()"],
        production_env(platform, **overrides),
    )
    assert result.returncode != 0
    assert "production refuses to start" in result.stderr and named in result.stderr


def test_production_worker_and_flower_refuse_insecure_settings(platform):
    guest = production_env(
        platform, CELERY_BROKER_URL="amqp://guest:guest@rabbit.example.com:5672//"
    )
    worker = run([str(VENV_BIN / "celery"), "-A", "tasks", "inspect", "ping"], guest)
    assert worker.returncode != 0 and "guest" in worker.stderr
    flower = run(
        [str(VENV_BIN / "celery"), "-A", "tasks", "flower"],
        production_env(platform, FLOWER_BASIC_AUTH=None),
    )
    assert flower.returncode != 0 and "FLOWER_BASIC_AUTH" in flower.stderr


@pytest.fixture(scope="module")
def production_web_process(platform):
    web = Platform(env=production_env(platform), log_dir=platform.log_dir)
    process, base = web.start_web()
    yield process, base
    web.stop_all()


@pytest.fixture(scope="module")
def production_web(production_web_process):
    return production_web_process[1]


def auth(name):
    return {"Authorization": f"Bearer {secret(name)}"}


def test_secure_production_starts_and_checks_tokens_and_scopes(production_web, worker):
    body = {"type": "logs.summarize", "payload": {"lines": ["2024-01-01T00:00:00Z ERROR x"]}}
    with httpx.Client(base_url=production_web, timeout=10) as api:
        assert api.get("/health/live").status_code == 200
        assert api.get("/job-types").status_code == 200
        missing = api.post("/jobs", json=body)
        assert_error(missing, 401, "unauthorized")
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        assert_error(api.post("/jobs", json=body, headers={"Authorization": "Bearer nope"}), 401)
        assert_error(
            api.post("/jobs", json=body, headers={"Authorization": secret("submitter")}), 401
        )
        assert_error(api.post("/jobs", json=body, headers=auth("reader")), 403, "forbidden")
        accepted = api.post("/jobs", json=body, headers=auth("submitter"))
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]
        assert_error(api.get(f"/jobs/{job_id}"), 401)
        api.headers.update(auth("reader"))
        assert follow(api, job_id)[0]["state"] == "succeeded"
        assert_error(api.get("/queues", headers=auth("submitter")), 403, "forbidden")
        assert api.get("/queues", headers=auth("ops")).status_code == 200


def test_production_hides_diagnostics_and_refuses_private_urls(production_web):
    with httpx.Client(base_url=production_web, timeout=10, headers=auth("submitter")) as api:
        assert_error(
            api.post("/jobs", json={"type": "diagnostics.echo", "payload": {}}),
            422,
            "unknown_job_type",
        )
        for url in (
            "http://127.0.0.1:15672/api/queues",
            "http://169.254.169.254/latest",
            "http://10.0.0.5/hook",
        ):
            error = assert_error(
                api.post(
                    "/jobs", json={"type": "webhook.deliver", "payload": {"url": url, "body": {}}}
                ),
                422,
                "url_not_allowed",
            )
            assert error["details"][0]["path"] == "payload.url"
        logs = api.post(
            "/jobs",
            json={"type": "logs.summarize", "payload": {"url": "http://localhost:8026/sample.log"}},
        )
        assert_error(logs, 422, "url_not_allowed")


def test_rate_limit_per_job_type_answers_429_with_retry_after(platform, worker):
    limited = Platform(
        env={**platform.env, "TASKPLANE_RATE_LIMIT_PER_JOB_TYPE": "3/minute"},
        log_dir=platform.log_dir,
    )
    _, base = limited.start_web()
    try:
        with httpx.Client(base_url=base, timeout=10) as api:
            body = {"type": "diagnostics.echo", "payload": {}}
            statuses = [api.post("/jobs", json=body).status_code for _ in range(3)]
            assert statuses == [202, 202, 202]
            refused = api.post("/jobs", json=body)
            assert_error(refused, 429)
            assert int(refused.headers["Retry-After"]) > 0
            other = api.post("/jobs", json={"type": "logs.summarize", "payload": {"lines": ["x"]}})
            assert other.status_code == 202
    finally:
        limited.stop_all()


def test_token_cli_prints_a_token_and_the_entry_that_accepts_it(platform):
    result = run(
        [
            str(VENV_BIN / "flask"),
            "--app",
            "wsgi",
            "token",
            "create",
            "--name",
            "ci",
            "--scope",
            "jobs:read",
            "--scope",
            "admin",
        ],
        platform.env,
    )
    assert result.returncode == 0, result.stderr
    token = next(
        line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("token: ")
    )
    entry = json.loads(
        next(
            line.split(": ", 1)[1]
            for line in result.stdout.splitlines()
            if line.startswith("TASKPLANE_API_TOKENS entry: ")
        )
    )
    assert entry == {"name": "ci", "sha256": hash_token(token), "scopes": ["admin", "jobs:read"]}
    assert token not in json.dumps(entry)


def test_deep_json_and_oversized_headers_are_refused(production_web):
    with httpx.Client(base_url=production_web, timeout=10, headers=auth("submitter")) as api:
        deep = {"type": "diagnostics.echo", "payload": {"data": None}}
        node = deep["payload"]
        for _ in range(40):
            node["data"] = {"data": None}
            node = node["data"]
        assert_error(api.post("/jobs", json=deep), 400, "too_deeply_nested")
        huge = api.get("/health/live", headers={"X-Padding": "x" * 20_000})
        assert huge.status_code == 431  # gunicorn: limit_request_field_size (its own body)


def test_tokens_never_reach_the_log(production_web_process):
    process, base = production_web_process
    with httpx.Client(base_url=base, timeout=10) as api:
        api.post(
            "/jobs",
            json={"type": "logs.summarize", "payload": {"lines": ["x"]}},
            headers=auth("submitter"),
        )
        api.get("/queues", headers={"Authorization": "Bearer tp_wrong_token_value"})
        api.get("/queues", headers=auth("ops"))
    log = process.log_path.read_text(errors="replace")
    assert "POST /jobs 202" in log  # the requests were logged...
    for name in TOKENS:
        assert secret(name) not in log  # ...without their tokens
    assert "tp_wrong_token_value" not in log


def test_rate_limit_per_token_counts_every_job_type_and_every_gunicorn_worker(platform, worker):
    limited = Platform(
        env={**platform.env, "TASKPLANE_RATE_LIMIT_PER_TOKEN": "4/minute"}, log_dir=platform.log_dir
    )
    _, base = limited.start_web()
    try:
        bodies = [
            {"type": "diagnostics.echo", "payload": {}},
            {"type": "logs.summarize", "payload": {"lines": ["x"]}},
        ] * 2
        statuses = []
        for body in bodies:  # a new connection each time: both gunicorn workers serve them
            with httpx.Client(base_url=base, timeout=10) as api:
                statuses.append(api.post("/jobs", json=body).status_code)
        assert statuses == [202, 202, 202, 202]
        with httpx.Client(base_url=base, timeout=10) as api:
            refused = api.get("/job-types")
            assert_error(refused, 429)
            assert int(refused.headers["Retry-After"]) > 0
    finally:
        limited.stop_all()
