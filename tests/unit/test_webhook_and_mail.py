from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from tasks.core.errors import PermanentError, TransientError
from tasks.jobs.mail.schema import EmailPayload
from tasks.jobs.mail.send import build_message, raise_for_codes
from tasks.jobs.outbound_http import classify, parse_retry_after


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_2xx_is_delivered(status):
    assert classify(status, None) is None


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599, 408, 425, 429])
def test_server_errors_timeouts_and_throttling_retry(status):
    with pytest.raises(TransientError):
        classify(status, None)


@pytest.mark.parametrize("status", [301, 400, 401, 403, 404, 410, 422])
def test_other_answers_fail_at_once(status):
    with pytest.raises(PermanentError):
        classify(status, None)


def test_retry_after_travels_with_the_transient_error():
    with pytest.raises(TransientError) as raised:
        classify(429, "7")
    assert raised.value.retry_after == 7.0


def test_retry_after_accepts_seconds_and_http_dates():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(later, now=now.timestamp()) == pytest.approx(90)
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None and parse_retry_after(None) is None


def test_smtp_4xx_is_transient_and_5xx_permanent():
    with pytest.raises(TransientError):
        raise_for_codes("busy", [451])
    with pytest.raises(PermanentError):
        raise_for_codes("no such user", [550])
    with pytest.raises(TransientError):
        raise_for_codes("mixed", [550, 452])


def test_message_carries_job_id_and_both_parts():
    payload = EmailPayload.model_validate(
        {
            "to": ["a@example.com"],
            "subject": "Hi",
            "text": "plain",
            "html": "<p>rich</p>",
            "from": "ops@example.com",
        }
    )
    message = build_message(payload, payload.from_, "job-123")
    assert message["X-Taskplane-Job"] == "job-123"
    assert "job-123" in message["Message-ID"]
    assert message["From"] == "ops@example.com"
    types = [part.get_content_type() for part in message.walk()]
    assert types == ["multipart/alternative", "text/plain", "text/html"]
