import importlib

import pytest

import celeryconfig
from config import config_module, current_environment
from tasks.core.queues import job_queue, queue_names
from tasks.core.registry import JOB_TYPES, JobType, enabled_job_types
from tasks.core.retry import RetryPolicy
from tasks.jobs.webhooks.schema import WebhookPayload


def _job_type(**overrides):
    fields = dict(
        name="x.y",
        family="webhooks",
        queue="webhooks",
        payload_model=WebhookPayload,
        handler="tasks.jobs.webhooks.deliver:deliver",
        retry=RetryPolicy(max_attempts=1, backoff_base_s=1, backoff_cap_s=1),
        time_limit_s=10,
        description="",
    )
    return JobType(**{**fields, **overrides})


def test_job_names_are_namespaced_and_unique():
    names = [jt.name for jt in JOB_TYPES]
    assert len(names) == len(set(names))
    assert all("." in name for name in names)
    with pytest.raises(ValueError, match="namespaced"):
        _job_type(name="flat")


def test_a_time_limit_beyond_rabbitmqs_consumer_timeout_is_refused():
    with pytest.raises(ValueError, match="consumer timeout"):
        _job_type(time_limit_s=3600)


def test_soft_limit_comes_before_the_hard_limit():
    for jt in JOB_TYPES:
        assert 0 < jt.soft_time_limit_s < jt.time_limit_s


def test_handlers_resolve_to_callables():
    for jt in JOB_TYPES:
        assert callable(jt.load_handler()), jt.name


def test_production_has_no_diagnostics_job_types():
    production = importlib.import_module(config_module("production"))
    enabled = enabled_job_types(production.taskplane_job_families)
    assert not [name for name in enabled if name.startswith("diagnostics.")]
    assert {"webhook.deliver", "email.send", "logs.summarize"} <= set(enabled)


def test_unknown_families_in_config_are_an_error():
    with pytest.raises(ValueError, match="unknown job families"):
        enabled_job_types(["webhooks", "nope"])


def test_environment_comes_from_one_variable(monkeypatch):
    monkeypatch.delenv("TASKPLANE_ENV", raising=False)
    assert current_environment() == "development"
    monkeypatch.setenv("TASKPLANE_ENV", "Testing")
    assert current_environment() == "testing"
    monkeypatch.setenv("TASKPLANE_ENV", "staging")
    with pytest.raises(SystemExit, match="staging"):
        current_environment()


def test_json_only_and_the_reliability_settings_are_explicit():
    for name in ("development", "testing", "production"):
        conf = importlib.import_module(config_module(name))
        assert conf.accept_content == ["json"] and conf.result_accept_content == ["json"]
        assert conf.task_serializer == conf.result_serializer == conf.event_serializer == "json"
        assert conf.task_acks_late and conf.task_reject_on_worker_lost
        assert conf.worker_prefetch_multiplier == 1
        assert conf.broker_transport_options["confirm_publish"] is True
        assert conf.task_default_delivery_mode == "persistent"
        assert conf.worker_send_task_events and conf.task_send_sent_event
        assert not getattr(conf, "task_always_eager", False)


def test_broker_and_backend_urls_use_celerys_variable_names():
    assert celeryconfig.broker_url.startswith("amqp://")
    assert celeryconfig.result_backend.startswith("redis://")


def test_job_queues_are_durable_quorum_with_delivery_limit_and_dead_lettering():
    queue = job_queue("webhooks", delivery_limit=5)
    assert queue.durable and queue.exchange.type == "topic"
    assert queue.queue_arguments == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 5,
        "x-dead-letter-exchange": "taskplane.dead",
        "x-dead-letter-routing-key": "webhooks",
    }
    assert queue_names(JOB_TYPES) == ["webhooks", "email", "logs", "diagnostics"]
