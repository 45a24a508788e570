"""``flask --app wsgi jobs ...`` as an operator runs it, against the session's services."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from tests.integration.helpers import follow
from tests.integration.test_job_search import listing, post_jobs, wait_dead_lettered
from tests.services import ROOT, VENV_BIN, Platform

pytestmark = pytest.mark.integration


def flask(platform: Platform, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "wsgi", "jobs", *args],
        cwd=ROOT,
        env=platform.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        input=stdin,
    )


def ok(platform: Platform, *args: str) -> dict:
    result = flask(platform, *args)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return json.loads(result.stdout)


def test_list_prints_what_get_jobs_answers(platform, api):
    run = uuid.uuid4().hex[:12]
    accepted = post_jobs(
        api, [{"type": "diagnostics.echo", "payload": {}, "tags": {"run": run}}] * 3
    )
    for job in accepted:
        follow(api, job["id"])
    printed = ok(platform, "list", "--tag", f"run:{run}", "--state", "succeeded")
    assert printed == api.get("/jobs", params={"tag": f"run:{run}", "state": "succeeded"}).json()
    assert {j["id"] for j in printed["jobs"]} == {j["id"] for j in accepted}
    page = ok(platform, "list", "--tag", f"run:{run}", "--limit", "2")
    assert len(page["jobs"]) == 2 and page["next_cursor"]
    rest = ok(
        platform, "list", "--tag", f"run:{run}", "--limit", "2", "--cursor", page["next_cursor"]
    )
    assert [j["id"] for j in page["jobs"] + rest["jobs"]] == [
        j["id"] for j in listing(api, tag=f"run:{run}")
    ]


def test_cancel_dry_run_then_cancel_by_filter(platform, api):
    run = uuid.uuid4().hex[:12]
    accepted = post_jobs(
        api,
        [{"type": "diagnostics.echo", "payload": {}, "delay_s": 600, "tags": {"run": run}}] * 4,
    )
    dry = ok(platform, "cancel", "--tag", f"run:{run}", "--dry-run")
    assert dry["matched"] == 4 and dry["acted"] == 0
    done = ok(platform, "cancel", "--tag", f"run:{run}", "--state", "scheduled")
    assert sorted(done["ids"]) == sorted(j["id"] for j in accepted)
    assert {api.get(f"/jobs/{j['id']}").json()["state"] for j in accepted} == {"cancelled"}


def test_replay_one_with_a_corrected_payload_and_purge_by_id(platform, api):
    (job,) = post_jobs(api, [{"type": "diagnostics.fail", "payload": {"permanent": True}}])
    follow(api, job["id"])
    wait_dead_lettered(api, [job["id"]])
    replayed = ok(platform, "replay-one", job["id"], "--payload", '{"times": 0}')
    assert replayed["id"] == job["id"] and len(replayed["history"]) == 1
    done, _ = follow(api, job["id"])
    assert done["state"] == "succeeded"
    purged = ok(platform, "purge", "--id", job["id"])
    assert purged["ids"] == [job["id"]]
    assert api.get(f"/jobs/{job['id']}").status_code == 404


def test_errors_are_a_message_and_status_1(platform):
    result = flask(platform, "list", "--tag", "no-colon")
    assert result.returncode == 1 and "validation_failed" in result.stderr
    assert "Traceback" not in result.stderr
    result = flask(platform, "cancel", "--id", str(uuid.uuid4()), "--tag", "a:b")
    assert result.returncode != 0 and "not both" in result.stderr
    result = flask(platform, "replay-one", str(uuid.uuid4()))
    assert result.returncode == 1 and "no job with id" in result.stderr
