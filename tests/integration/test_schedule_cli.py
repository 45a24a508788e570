"""``flask --app wsgi schedule ...`` as an operator runs it, against the session's services."""

from __future__ import annotations

import json
import subprocess

import pytest
import redis

from tests.integration.helpers import follow
from tests.integration.test_schedules_api import YEARLY, clear_schedules
from tests.services import ROOT, VENV_BIN, Platform

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def no_schedules(session_redis_url):
    client = redis.Redis.from_url(session_redis_url, decode_responses=True)
    clear_schedules(client)
    yield
    clear_schedules(client)
    client.close()


def flask(platform: Platform, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "wsgi", "schedule", *args],
        cwd=ROOT,
        env=platform.env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(platform: Platform, *args: str, stdin: str | None = None) -> object:
    result = flask(platform, *args, stdin=stdin)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return json.loads(result.stdout)


def failed(platform: Platform, *args: str) -> str:
    result = flask(platform, *args)
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr


def test_add_list_show_pause_resume_run_remove(platform, api):
    added = ok(
        platform,
        "add",
        "--id",
        "cli-nightly",
        "--type",
        "diagnostics.echo",
        "--payload",
        '{"data": "from the cli"}',
        "--cron",
        YEARLY,
        "--timezone",
        "Europe/Berlin",
        "--overlap",
        "skip",
        "--jitter",
        "1.5",
    )
    assert added["id"] == "cli-nightly" and added["timezone"] == "Europe/Berlin"
    assert added["payload"] == {"data": "from the cli"} and added["overlap"] == "skip"
    assert added["jitter_s"] == 1.5 and added["enabled"] is True
    body = {"id": "cli-hourly", "type": "diagnostics.echo", "interval_s": 3600}
    from_json = ok(platform, "add", "--json", json.dumps(body), "--disabled")
    assert from_json["id"] == "cli-hourly" and from_json["interval_s"] == 3600
    assert from_json["enabled"] is False

    listed = ok(platform, "list")
    assert [s["id"] for s in listed["schedules"]] == ["cli-hourly", "cli-nightly"]
    first = ok(platform, "list", "--limit", "1")
    assert [s["id"] for s in first["schedules"]] == ["cli-hourly"]
    assert first["next_after"] == "cli-hourly"
    rest = ok(platform, "list", "--after", "cli-hourly")
    assert [s["id"] for s in rest["schedules"]] == ["cli-nightly"] and rest["next_after"] is None

    # The HTTP API sees the same schedule.
    assert ok(platform, "show", "cli-nightly") == api.get("/schedules/cli-nightly").json()

    paused = ok(platform, "pause", "cli-nightly")
    assert paused["enabled"] is False and paused["next_fire_at"] is None
    resumed = ok(platform, "resume", "cli-nightly")
    assert resumed["enabled"] is True

    job = ok(platform, "run", "cli-nightly")
    assert job["tags"]["schedule"] == "cli-nightly"
    assert follow(api, job["id"])[0]["result"]["data"] == "from the cli"
    assert ok(platform, "show", "cli-nightly")["counts"]["fired"] == 1

    kept = flask(platform, "remove", "cli-nightly", stdin="n\n")
    assert kept.returncode != 0 and "Aborted" in kept.stderr
    assert api.get("/schedules/cli-nightly").status_code == 200
    assert ok(platform, "remove", "cli-nightly", stdin="y\n") == {"removed": "cli-nightly"}
    assert ok(platform, "remove", "cli-hourly", "--yes") == {"removed": "cli-hourly"}
    assert ok(platform, "list") == {"schedules": [], "next_after": None}


def test_errors_are_a_message_and_a_nonzero_exit(platform):
    message = failed(
        platform, "add", "--id", "bad", "--type", "diagnostics.echo", "--cron", "61 * * * *"
    )
    assert "validation_failed" in message and "cron" in message
    message = failed(platform, "add", "--id", "bad", "--type", "no.such", "--interval", "60")
    assert "unknown_job_type" in message and "type" in message
    assert "not valid JSON" in failed(platform, "add", "--json", "{nope")
    assert "not both" in failed(platform, "add", "--json", "{}", "--id", "x")
    assert "schedule_not_found" in failed(platform, "show", "ghost")
    assert "schedule_not_found" in failed(platform, "run", "ghost")
    assert "schedule_not_found" in failed(platform, "remove", "ghost", "--yes")
    ok(platform, "add", "--id", "twice", "--type", "diagnostics.echo", "--interval", "60")
    assert "schedule_exists" in failed(
        platform, "add", "--id", "twice", "--type", "diagnostics.echo", "--interval", "60"
    )
