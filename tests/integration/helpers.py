"""Small helpers for driving jobs through the HTTP API, and headless Chromium for its pages."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from tests.services import ROOT

FINAL = {"succeeded", "failed", "cancelled"}


def submit(api: httpx.Client, job_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/jobs", json={"type": job_type, "payload": payload})
    assert response.status_code == 202, response.text
    return response.json()


def follow(api: httpx.Client, job_id: str, timeout: float = 30) -> tuple[dict, list[str]]:
    """Poll the job until it is final; returns the last view and every state seen, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        job = api.get(f"/jobs/{job_id}").json()
        if not seen or seen[-1] != job["state"]:
            seen.append(job["state"])
        if job["state"] in FINAL:
            return job, seen
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not final after {timeout}s; states {seen}: {job}")
        time.sleep(0.05)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """The one error shape: {"error": {"code", "message", "details"?}}."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"]) <= {"code", "message", "details"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def submit_until_accepted(api: httpx.Client, timeout: float = 60) -> str:
    """Submit an echo job, retrying through 503s (an outage ending); returns its id."""
    from tests.services import wait_until

    def attempt() -> str | None:
        response = api.post("/jobs", json={"type": "diagnostics.echo", "payload": {}})
        return response.json()["id"] if response.status_code == 202 else None

    return wait_until(attempt, timeout, 0.5, what="a submission to be accepted")


def wait_for_state(api: httpx.Client, job_id: str, state: str, timeout: float = 60) -> None:
    from tests.services import wait_until

    wait_until(
        lambda: api.get(f"/jobs/{job_id}").json()["state"] == state,
        timeout,
        0.2,
        what=f"job {job_id} to be {state}",
    )


# -- headless Chromium, for the pages people look at (Flower, /docs) ----------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = ROOT / "var" / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
    "--virtual-time-budget=8000",
]


def chromium(url: str, *extra: str) -> str:
    with tempfile.TemporaryDirectory(prefix="taskplane-chromium-") as profile:
        result = subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url],
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def wait_for_workflow(
    api: httpx.Client, workflow_id: str, *states: str, timeout: float = 60
) -> dict[str, Any]:
    """Poll GET /workflows/<id> until its state is one of ``states``; returns the view."""
    deadline = time.monotonic() + timeout
    while True:
        view = api.get(f"/workflows/{workflow_id}").json()
        if view["state"] in states:
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"workflow still {view['state']} after {timeout}s: {view}")
        time.sleep(0.1)


@contextmanager
def web_with_tokens(platform: Any, tokens: dict[str, list[str]], secret: Any) -> Iterator[str]:
    """A web on the session's services that checks tokens: ``tokens`` name -> scopes,
    ``secret(name)`` the token each name presents. Yields its base URL."""
    from app.auth import hash_token
    from tests.services import Platform

    entries = [{"name": n, "sha256": hash_token(secret(n)), "scopes": s} for n, s in tokens.items()]
    web = Platform(
        env={**platform.env, "TASKPLANE_API_TOKENS": json.dumps(entries)},
        log_dir=platform.log_dir,
    )
    _, base = web.start_web()
    try:
        yield base
    finally:
        web.stop_all()
