"""schemathesis against /openapi.json: no 5xx, every response as documented.

Runs against a web of its own (own vhost and Redis database, no worker), so
fuzzed admin calls (pause, purge) cannot disturb other tests.
"""

import json
import re
import subprocess
import uuid

import pytest

from app.auth import hash_token
from tests.services import ROOT, VENV_BIN, Platform, RabbitMQ, RedisServer

pytestmark = pytest.mark.integration
TOKEN = "tp_fuzz_0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def fuzz_web(platform):
    rabbit, redis_server = RabbitMQ(), RedisServer()
    vhost = f"taskplane-fuzz-{uuid.uuid4().hex[:8]}"
    broker = rabbit.create_vhost(vhost)
    _, backend = redis_server.claim_database(owner="fuzz")
    entry = [
        {
            "name": "fuzzer",
            "sha256": hash_token(TOKEN),
            "scopes": ["jobs:submit", "jobs:read", "admin"],
        }
    ]
    env = {
        **platform.env,
        "CELERY_BROKER_URL": broker,
        "CELERY_RESULT_BACKEND": backend,
        "TASKPLANE_API_TOKENS": json.dumps(entry),
    }
    web = Platform(env=env, log_dir=platform.log_dir)
    try:
        process, base = web.start_web()
        # A worker consumes every queue, so readiness is UP as in production.
        web.start_worker("fuzz", concurrency=1)
        yield process, base
    finally:
        web.stop_all()
        redis_server.release_database(backend)
        rabbit.delete_vhost(vhost)


def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(fuzz_web):
    process, base = fuzz_web
    result = subprocess.run(
        [
            str(VENV_BIN / "schemathesis"),
            "--config-file",
            str(ROOT / "tests/schemathesis.toml"),
            "run",
            f"{base}/openapi.json",
            "--checks",
            "all",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--max-examples",
            "220",
            "--generation-deterministic",
            # The coverage phase hits an internal error of schemathesis 4.32 with
            # Hypothesis on Python 3.11 (AST recursion depth mismatch). The stateful
            # phase cannot be told that POST /jobs rightly refuses a run_at more
            # than 30 days ahead (tests/schemathesis.toml does so for fuzzing).
            "--phases",
            "examples,fuzzing",
            # DELETE cancels a job / purges dead letters; what remains stays readable.
            "--exclude-checks",
            "use_after_free",
            "--workers",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = result.stdout + result.stderr
    report = ROOT / "var" / "test-artifacts" / "schemathesis.txt"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(output)
    assert result.returncode == 0, f"see {report}\n" + output[-6000:]
    generated = re.search(r"(\d+) generated", output)
    # Hypothesis stops early on operations with few distinct inputs, so the
    # total varies from run to run (997 to 1,162 seen); this floor only
    # catches a run that did not really fuzz.
    assert generated and int(generated.group(1)) >= 800, output[-3000:]
    assert " 500 " not in process.log_tail(400)
