"""tasks/core/message_template: a derived job message is the message Celery would build.

Workers and Flower read our job messages as ordinary Celery protocol-2 task
messages, so a message derived from a template must equal, field by field
and byte by byte on the wire, what ``as_task_v2`` (``build_by_celery``)
builds for the same job: headers (values and order), properties, body,
``sent_event``, and the encoded content header. Hypothesis picks the
payloads, ids, countdowns, retries, Taskplane headers and trace contexts;
the clock is fixed so an eta is computed from the same "now" both ways.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from amqp.serialization import decode_properties_basic
from celery.utils.saferepr import saferepr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, context, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from tasks.core.message_template import MessageTemplate, TemplatedMessage, argsrepr
from tasks.core.publisher import JOB_WIRE, JobPublisher, _amqp_message
from tasks.factory import create_celery_app

JOB_TYPES = ("diagnostics.echo", "webhook.deliver", "email.send")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
payloads = st.dictionaries(st.text(max_size=12), json_values, max_size=6)
taskplane_headers = st.sampled_from(
    [
        {"taskplane_recorded": True},
        {"taskplane_recorded": True, "taskplane_takeover": True},
        {"taskplane_takeover": True},
        {},
    ]
)
job_ids = st.uuids().map(str) | st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=60
)
jobs = st.fixed_dictionaries(
    {
        "job_id": job_ids,
        "job_type": st.sampled_from(JOB_TYPES),
        "payload": payloads,
        "headers": taskplane_headers,
        "countdown": st.none() | st.integers(min_value=0, max_value=30 * 24 * 3600),
        "retries": st.sampled_from([0, 0, 0, 1, 7]),
    }
)
traces = st.none() | st.fixed_dictionaries(
    {
        "trace_id": st.integers(min_value=1, max_value=2**128 - 1),
        "span_id": st.integers(min_value=1, max_value=2**64 - 1),
        "sampled": st.booleans(),
        "baggage": st.dictionaries(
            st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=6),
            st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", max_size=8),
            max_size=2,
        ),
    }
)


@pytest.fixture(scope="module")
def app() -> Iterator[Any]:
    app = create_celery_app("testing")
    fixed = app.now()
    with mock.patch.object(type(app), "now", lambda self: fixed):  # the same "now" both ways
        yield app


@contextmanager
def current_trace(spec: dict | None) -> Iterator[None]:
    """Make a span (and baggage) current, as the web's request span is."""
    if spec is None:
        yield
        return
    span = NonRecordingSpan(
        SpanContext(
            spec["trace_id"],
            spec["span_id"],
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED if spec["sampled"] else 0),
        )
    )
    ctx = trace.set_span_in_context(span)
    for key, value in spec["baggage"].items():
        ctx = baggage.set_baggage(key, value, ctx)
    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)


def assert_same_message(derived: Any, celery: Any) -> None:
    """Field by field, then as py-amqp writes and reads them on the wire."""
    assert derived.headers == celery.headers
    assert list(derived.headers) == list(celery.headers)  # the table's order
    assert derived.properties == celery.properties
    assert derived.body == celery.body
    assert derived.sent_event == celery.sent_event
    ours, theirs = _amqp_message(derived, 2), _amqp_message(celery, 2)
    assert ours.body == theirs.body
    assert ours.properties == theirs.properties
    wire = ours._serialize_properties()  # noqa: SLF001 - the content header's bytes
    assert wire == theirs._serialize_properties()  # noqa: SLF001
    decoded, _ = decode_properties_basic(wire, 0)
    assert decoded["application_headers"]["id"] == celery.headers["id"]
    assert decoded["correlation_id"] == celery.properties["correlation_id"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(jobs, min_size=1, max_size=8), spec=traces)
def test_every_built_message_equals_celerys_for_the_same_job(app, batch, spec):
    publisher = JobPublisher(app)  # no templates yet: the first of each kind is Celery's
    with current_trace(spec):
        for job in batch:
            job = dict(job)
            job_id, job_type, payload, headers = (
                job.pop("job_id"),
                job.pop("job_type"),
                job.pop("payload"),
                job.pop("headers"),
            )
            built = publisher.build(job_id, job_type, payload, dict(headers), **job)
            celery = publisher.build_by_celery(job_id, job_type, payload, dict(headers), **job)
            assert_same_message(built, celery)


@settings(max_examples=100, deadline=None)
@given(first=jobs, rest=st.lists(payloads, min_size=1, max_size=5), spec=traces)
def test_a_batch_is_derived_from_its_first_message(app, first, rest, spec):
    publisher = JobPublisher(app)
    first = {**first, "retries": 0, "countdown": None}
    ids = [str(uuid.uuid4()) for _ in rest]
    with current_trace(spec):
        head = publisher.build(
            first["job_id"], first["job_type"], first["payload"], dict(first["headers"])
        )
        assert not isinstance(head, TemplatedMessage)  # Celery's own, as before
        for job_id, payload in zip(ids, rest, strict=True):
            built = publisher.build(job_id, first["job_type"], payload, dict(first["headers"]))
            assert isinstance(built, TemplatedMessage)
            assert_same_message(
                built,
                publisher.build_by_celery(
                    job_id, first["job_type"], payload, dict(first["headers"])
                ),
            )


def test_a_template_outlives_its_request_but_not_its_trace(app):
    """A later request's trace replaces the earlier one's; no trace leaves none behind."""
    publisher = JobPublisher(app)
    spec = {"trace_id": 1, "span_id": 2, "sampled": True, "baggage": {"a": "b"}}
    with current_trace(spec):
        publisher.build(str(uuid.uuid4()), "diagnostics.echo", {}, {})
        traced = publisher.build(str(uuid.uuid4()), "diagnostics.echo", {}, {})
    assert isinstance(traced, TemplatedMessage)
    assert traced.headers["traceparent"].startswith("00-" + "0" * 31 + "1-")
    assert traced.headers["baggage"] == "a=b"
    job_id = str(uuid.uuid4())
    untraced = publisher.build(job_id, "diagnostics.echo", {"n": 1}, {})
    assert isinstance(untraced, TemplatedMessage)
    assert "traceparent" not in untraced.headers and "baggage" not in untraced.headers
    assert_same_message(
        untraced, publisher.build_by_celery(job_id, "diagnostics.echo", {"n": 1}, {})
    )


def test_messages_of_distinct_parents_do_not_share_mutable_parts(app):
    publisher = JobPublisher(app)
    publisher.build(str(uuid.uuid4()), "diagnostics.echo", {}, {})
    one = publisher.build(str(uuid.uuid4()), "diagnostics.echo", {}, {})
    two = publisher.build(str(uuid.uuid4()), "diagnostics.echo", {}, {})
    one.headers["timelimit"].append("x")
    one.body[2]["chain"] = "x"
    assert two.headers["timelimit"] == [None, None] and two.body[2]["chain"] is None


def test_a_template_refuses_a_message_that_is_not_a_task_message(app):
    message = JobPublisher(app).build_by_celery(str(uuid.uuid4()), "diagnostics.echo", {}, {})
    del message.headers["argsrepr"]
    with pytest.raises(ValueError, match="argsrepr"):
        MessageTemplate(message, JOB_WIRE)


def test_a_fork_builds_its_own_templates(app):
    """``origin`` names the process: a template made before a fork is not used after it."""
    publisher = JobPublisher(app)
    publisher.build(str(uuid.uuid4()), "diagnostics.echo", {}, {})
    assert publisher._templates()  # noqa: SLF001
    with mock.patch("tasks.core.publisher.os.getpid", return_value=-1):
        assert not publisher._templates()  # noqa: SLF001


reprable = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=40)
    | st.text(alphabet="'\\\"x\n", max_size=10)
    | st.binary(max_size=4)
    | st.tuples(st.integers()),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=6) | st.integers(), children, max_size=5)
    ),
    max_leaves=40,
)


@settings(max_examples=1500, deadline=None)
@given(
    payload=st.dictionaries(st.text(max_size=8), reprable, max_size=6) | reprable,
    maxlen=st.sampled_from([1024, 1024, 200, 60, 20, 5]),
    maxlevels=st.sampled_from([3, 3, 0, 1, 2, 5]),
)
def test_argsrepr_is_celerys_saferepr(payload, maxlen, maxlevels):
    args = (payload,)
    assert argsrepr(args, maxlen, maxlevels) == saferepr(args, maxlen, maxlevels=maxlevels)


@pytest.mark.parametrize("size", [1000, 1010, 1015, 1016, 1017, 1018, 1019, 1020, 1030])
def test_argsrepr_at_celerys_bound(size):
    """Around maxlen Celery truncates; the fast path must hand such reprs to it."""
    for payload in ({"k": "x" * size}, {"k": ["y" * (size // 2), "z" * (size // 2)]}):
        assert argsrepr((payload,), 1024, 3) == saferepr((payload,), 1024, maxlevels=3)
