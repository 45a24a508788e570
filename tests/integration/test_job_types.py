"""Each shipped job type, end to end: HTTP -> RabbitMQ -> real worker -> Redis -> HTTP."""

import pytest

from tests.integration.helpers import follow, submit

pytestmark = pytest.mark.integration


def test_echo_succeeds_with_its_data_as_result(api):
    job = submit(api, "diagnostics.echo", {"data": {"hello": ["world", 1]}})
    assert job["state"] == "queued"
    done, _ = follow(api, job["id"])
    assert done["state"] == "succeeded"
    assert done["result"] == {"data": {"hello": ["world", 1]}}
    assert done["attempts"] == 1
    assert done["started_at"] and done["finished_at"] and done["created_at"]


def test_sleep_reports_started_while_running(api):
    job = submit(api, "diagnostics.sleep", {"seconds": 1.5})
    done, seen = follow(api, job["id"])
    assert done["state"] == "succeeded"
    assert "started" in seen
    assert done["result"] == {"slept_s": 1.5}


def test_fail_retries_then_succeeds_counting_every_attempt(api):
    job = submit(api, "diagnostics.fail", {"times": 2})
    done, seen = follow(api, job["id"])
    assert done["state"] == "succeeded", done
    assert done["attempts"] == 3
    assert "retrying" in seen


def test_fail_always_ends_failed_after_its_attempt_budget(api):
    job = submit(api, "diagnostics.fail", {"message": "boom"})
    done, _ = follow(api, job["id"], timeout=60)
    assert done["state"] == "failed"
    assert done["attempts"] == 5  # diagnostics.fail allows five attempts
    assert done["error"]["type"] == "transient"
    assert "boom" in done["error"]["message"]


def test_permanent_failure_does_not_retry(api):
    job = submit(api, "diagnostics.fail", {"permanent": True})
    done, _ = follow(api, job["id"])
    assert done["state"] == "failed"
    assert done["attempts"] == 1
    assert done["error"]["type"] == "permanent"


def test_crash_kills_the_pool_process_and_the_job_is_redelivered(api):
    job = submit(api, "diagnostics.crash", {"times": 1})
    done, _ = follow(api, job["id"])
    assert done["state"] == "succeeded", done
    assert done["attempts"] == 2
    assert done["result"] == {"crashed_attempts": 1}


def test_webhook_delivers_json_once(api, http_target):
    url = f"{http_target.base}/hooks/ok"
    before = len(http_target.requests["/hooks/ok"])
    job = submit(
        api,
        "webhook.deliver",
        {"url": url, "body": {"event": "signup", "n": 1}, "headers": {"X-Test": "yes"}},
    )
    done, _ = follow(api, job["id"])
    assert done["state"] == "succeeded", done
    assert done["result"]["status_code"] == 200
    assert done["result"]["attempts"] == 1
    assert done["result"]["elapsed_ms"] >= 0
    received = http_target.requests["/hooks/ok"][before:]
    assert len(received) == 1
    assert received[0]["body"] == {"event": "signup", "n": 1}
    assert received[0]["headers"]["X-Test"] == "yes"
    assert received[0]["headers"]["Idempotency-Key"] == job["id"]


def test_webhook_retries_503_then_succeeds(api, http_target):
    path = "/hooks/flaky/twice"
    job = submit(
        api, "webhook.deliver", {"url": f"{http_target.base}{path}?fail=2", "body": {"n": 2}}
    )
    done, seen = follow(api, job["id"], timeout=60)
    assert done["state"] == "succeeded", done
    assert done["attempts"] == 3
    assert done["result"]["attempts"] == 3
    assert "retrying" in seen
    assert [r["status"] for r in http_target.requests[path]] == [503, 503, 200]


def test_webhook_client_error_fails_at_once(api, http_target):
    path = "/hooks/status/400"
    before = len(http_target.requests[path])
    job = submit(api, "webhook.deliver", {"url": f"{http_target.base}{path}", "body": {}})
    done, _ = follow(api, job["id"])
    assert done["state"] == "failed"
    assert done["attempts"] == 1
    assert done["error"]["type"] == "permanent"
    assert "400" in done["error"]["message"]
    assert len(http_target.requests[path]) - before == 1


def test_email_reaches_a_real_smtp_server(api, smtp_sink):
    job = submit(
        api,
        "email.send",
        {
            "to": ["ada@example.com", "grace@example.org"],
            "subject": "Report ready",
            "text": "Your report is ready.",
            "html": "<p>Your report is <b>ready</b>.</p>",
        },
    )
    done, _ = follow(api, job["id"])
    assert done["state"] == "succeeded", done
    assert done["result"]["accepted"] == 2
    message = smtp_sink.find(job["id"])
    assert message is not None
    assert message["Subject"] == "Report ready"
    assert message["To"] == "ada@example.com, grace@example.org"
    assert message.is_multipart()
    parts = {
        part.get_content_type(): part.get_payload(decode=True).decode()
        for part in message.walk()
        if not part.is_multipart()
    }
    assert parts["text/plain"].strip() == "Your report is ready."
    assert "<b>ready</b>" in parts["text/html"]


def _generated_log(lines: int) -> str:
    out = []
    for i in range(lines):
        level = "ERROR" if i % 10 == 0 else ("WARNING" if i % 5 == 0 else "INFO")
        message = "database timeout" if i % 20 == 0 else ("cache miss" if i % 10 == 0 else "ok")
        out.append(f"2024-05-01T12:{i // 60:02d}:{i % 60:02d}Z {level} {message}")
    return "\n".join(out) + "\n"


def test_logs_summarize_streams_a_log_over_http(api, http_target):
    http_target.logs["app.log"] = _generated_log(200).encode()
    job = submit(api, "logs.summarize", {"url": f"{http_target.base}/logs/app.log"})
    done, _ = follow(api, job["id"])
    assert done["state"] == "succeeded", done
    result = done["result"]
    assert result["line_count"] == 200
    assert result["levels"] == {"INFO": 160, "WARNING": 20, "ERROR": 20}
    assert result["top_errors"] == [
        {"message": "database timeout", "count": 10},
        {"message": "cache miss", "count": 10},
    ]
    assert result["first_timestamp"] == "2024-05-01T12:00:00Z"
    assert result["last_timestamp"] == "2024-05-01T12:03:19Z"


def test_logs_summarize_accepts_inline_json_lines(api):
    lines = [
        '{"level": "error", "msg": "disk full", "ts": "2024-01-01T00:00:00Z"}',
        '{"level": "info", "msg": "started", "ts": "2024-01-01T00:00:05Z"}',
    ]
    job = submit(api, "logs.summarize", {"lines": lines})
    done, _ = follow(api, job["id"])
    assert done["state"] == "succeeded", done
    assert done["result"]["levels"] == {"INFO": 1, "ERROR": 1}
    assert done["result"]["top_errors"] == [{"message": "disk full", "count": 1}]


def test_logs_summarize_missing_log_fails_without_retry(api, http_target):
    job = submit(api, "logs.summarize", {"url": f"{http_target.base}/logs/nope.log"})
    done, _ = follow(api, job["id"])
    assert done["state"] == "failed"
    assert done["attempts"] == 1
