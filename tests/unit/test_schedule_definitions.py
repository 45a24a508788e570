"""Schedule definitions as checked before they are stored: each refusal names its field.

No services: ``check_schedule``/``check_patch`` read only the registry, and the
admin operations refuse an invalid definition before they reach Redis.
"""

import pytest
from jsonschema import Draft202012Validator

from app import create_app
from app.openapi import build_document
from tasks.core import schedule_admin
from tasks.core.schedules import InvalidSchedule, check_patch, check_schedule
from tasks.factory import create_celery_app

YEARLY = "0 0 1 1 *"


@pytest.fixture(scope="module")
def celery():
    return create_celery_app("testing")


def definition(**fields):
    return {"id": "nightly", "type": "diagnostics.echo", "cron": YEARLY, **fields}


def refusal(call) -> InvalidSchedule:
    with pytest.raises(InvalidSchedule) as caught:
        call()
    return caught.value


def paths(exc: InvalidSchedule) -> list[str]:
    return [p["path"] for p in exc.problems]


def test_a_valid_definition_is_normalised(celery):
    schedule, enabled = check_schedule(
        celery,
        definition(cron="0  3 * * *", start_at="2031-01-01T01:00:00+01:00", enabled=False),
    )
    assert enabled is False
    fields = schedule.as_fields()
    assert fields["cron"] == "0 3 * * *" and fields["timezone"] == "UTC"
    assert fields["start_at"] == "2031-01-01T00:00:00.000Z"
    assert (
        check_schedule(celery, definition(cron=None, interval_s=60.0))[0].cadence.interval_s == 60
    )


@pytest.mark.parametrize(
    ("fields", "code", "path"),
    [
        ({"type": "nope.nothing"}, "unknown_job_type", "type"),
        ({"cron": "61 * * * *"}, "validation_failed", "cron"),
        ({"cron": "0 0 30 2 *"}, "validation_failed", "cron"),
        ({"cron": "@daily"}, "validation_failed", "cron"),
        ({"cron": "x" * 257}, "validation_failed", "cron"),
        ({"cron": None}, "validation_failed", "cron"),
        ({"interval_s": 60}, "validation_failed", "cron"),
        ({"timezone": "Mars/Olympus"}, "validation_failed", "timezone"),
        ({"timezone": "localtime"}, "validation_failed", "timezone"),
        ({"cron": None, "interval_s": 0.999}, "validation_failed", "interval_s"),
        ({"cron": None, "interval_s": 10**9}, "validation_failed", "interval_s"),
        ({"cron": None, "interval_s": True}, "validation_failed", "interval_s"),
        ({"jitter_s": 86401}, "validation_failed", "jitter_s"),
        ({"jitter_s": -0.5}, "validation_failed", "jitter_s"),
        ({"start_at": "2031-01-01T00:00:00"}, "validation_failed", "start_at"),
        (
            {"start_at": "2031-01-01T00:00:00Z", "end_at": "2031-01-01T00:00:00Z"},
            "validation_failed",
            "end_at",
        ),
        ({"id": "Upper"}, "validation_failed", "id"),
        ({"id": ""}, "validation_failed", "id"),
        ({"overlap": "never"}, "validation_failed", "overlap"),
        ({"extra": 1}, "validation_failed", "extra"),
    ],
)
def test_check_schedule_names_the_field(celery, fields, code, path):
    exc = refusal(lambda: check_schedule(celery, definition(**fields)))
    assert exc.code == code and path in paths(exc), exc.problems


def test_a_payload_that_does_not_fit_names_its_field_under_payload(celery):
    body = definition(type="diagnostics.sleep", payload={"seconds": "soon"})
    with pytest.raises(Exception) as caught:  # the core's InvalidJob, see the admin below
        check_schedule(celery, body)
    assert [p["path"] for p in caught.value.problems] == ["payload.seconds"]


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"cron": "* * *"}, "cron"),
        ({"cron": None}, "cron"),
        ({"interval_s": None}, "interval_s"),
        ({"type": None}, "type"),
        ({"payload": None}, "payload"),
        ({"timezone": "Atlantis/Central"}, "timezone"),
        ({"interval_s": 0}, "interval_s"),
        ({"cron": YEARLY, "interval_s": 60}, "cron"),
        ({"end_at": "2030-01-01T00:00:00Z", "start_at": "2031-01-01T00:00:00Z"}, "end_at"),
        ({"jitter_s": None}, "jitter_s"),
        ({"id": "other"}, "id"),
        ({"type": "nope.nothing"}, "type"),
    ],
)
def test_check_patch_names_the_field(celery, change, path):
    current, _ = check_schedule(celery, definition())
    exc = refusal(lambda: check_patch(celery, current, change))
    assert path in paths(exc), exc.problems


def test_check_patch_changes_only_what_it_is_given(celery):
    current, _ = check_schedule(celery, definition(jitter_s=5, start_at="2031-01-01T00:00:00Z"))
    changed, enabled = check_patch(celery, current, {"interval_s": 90, "start_at": None})
    assert enabled is None
    fields = changed.as_fields()
    assert fields["interval_s"] == 90 and "cron" not in fields
    assert fields["jitter_s"] == 5 and fields["start_at"] is None
    assert changed.timing() != current.timing()
    same, enabled = check_patch(celery, current, {"enabled": True, "overlap": "skip"})
    assert enabled is True and same.timing() == current.timing()
    assert check_patch(celery, current, {"cron": "5 * * * *"})[0].as_fields()["cron"] == "5 * * * *"


def test_admin_create_refuses_before_storage_and_names_the_field(celery):
    # Nothing here reaches Redis: every refusal comes from the checks first.
    exc = refusal(
        lambda: schedule_admin.create(
            celery, definition(type="diagnostics.sleep", payload={"seconds": "x"})
        )
    )
    assert paths(exc) == ["payload.seconds"]
    for name in ("start_at", "end_at"):
        exc = refusal(
            lambda name=name: schedule_admin.create(
                celery, definition(**{name: "0001-01-01T00:00:00+14:00"})
            )
        )
        assert paths(exc) == [name]
    exc = refusal(
        lambda: schedule_admin.create(celery, definition(end_at="9999-12-31T23:59:59-14:00"))
    )
    assert paths(exc) == ["end_at"]


# -- the documented bodies agree with the checks --------------------------------------


@pytest.fixture(scope="module")
def document():
    return build_document(create_app({"TASKPLANE_ENV": "testing"}))


def body_validator(document, path, method):
    schema = document["paths"][path][method]["requestBody"]["content"]["application/json"]
    return Draft202012Validator({**schema["schema"], "components": document["components"]})


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        (definition(), True),
        (definition(cron=None, interval_s=60), True),
        (definition(timezone="Europe/Berlin"), True),
        (definition(interval_s=60), False),  # both
        (definition(cron=None), False),  # neither
        (definition(timezone="Mars/Olympus"), False),
        (definition(cron=None, interval_s=0.5), False),
        (definition(jitter_s=86401), False),
        (definition(type="nope.nothing"), False),
        (definition(type="diagnostics.sleep", payload={"seconds": "x"}), False),
        (definition(type="diagnostics.sleep"), False),  # its payload is required
        (definition(colour="red"), False),
    ],
)
def test_the_documented_create_body_says_what_the_checks_accept(celery, document, body, valid):
    validator = body_validator(document, "/schedules", "post")
    assert validator.is_valid(body) == valid
    try:
        check_schedule(celery, body)
        accepted = True
    except Exception:  # noqa: BLE001 - InvalidSchedule or the core's InvalidJob
        accepted = False
    assert accepted == valid


@pytest.mark.parametrize(
    ("change", "valid"),
    [
        ({}, True),
        ({"cron": "5 * * * *"}, True),
        ({"start_at": None, "end_at": None, "enabled": None}, True),
        ({"cron": None}, False),
        ({"type": None}, False),
        ({"cron": YEARLY, "interval_s": 60}, False),
        ({"timezone": "Mars/Olympus"}, False),
        ({"id": "x"}, False),
    ],
)
def test_the_documented_change_body_says_what_check_patch_accepts(celery, document, change, valid):
    validator = body_validator(document, "/schedules/{schedule_id}", "patch")
    assert validator.is_valid(change) == valid
    current, _ = check_schedule(celery, definition())
    try:
        check_patch(celery, current, change)
        accepted = True
    except InvalidSchedule:
        accepted = False
    assert accepted == valid
