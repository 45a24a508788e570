import ipaddress

import pytest

from app.auth import ApiToken, find_token, hash_token, load_tokens
from app.jsonbody import nesting_depth
from config.checks import platform_problems, web_problems
from tasks.core.netpolicy import UrlNotAllowed, UrlPolicy


def test_nesting_depth_counts_arrays_and_objects():
    assert nesting_depth(1) == 0
    assert nesting_depth({"a": [1, {"b": []}]}) == 4
    deep = []
    for _ in range(5000):
        deep = [deep]
    assert nesting_depth(deep) == 5001  # no recursion limit involved


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://10.0.0.8/",
        "http://[::1]:80/",
        "http://169.254.169.254/latest/meta-data",
        "http://192.168.1.1/",
        "http://localhost:15672/api",
    ],
)
def test_production_policy_refuses_private_loopback_and_link_local(url):
    with pytest.raises(UrlNotAllowed):
        UrlPolicy(deny_private=True).check_url(url)


def test_policy_allows_public_addresses_and_listed_networks():
    UrlPolicy(deny_private=True).check_url("https://93.184.216.34/hook", resolve=False)
    allowed = UrlPolicy(deny_private=True, allow=(ipaddress.ip_network("10.1.0.0/16"),))
    allowed.check_url("http://10.1.2.3/hook")
    with pytest.raises(UrlNotAllowed):
        allowed.check_url("http://10.2.0.1/hook")
    denied = UrlPolicy(deny_private=False, deny=(ipaddress.ip_network("127.0.0.0/8"),))
    with pytest.raises(UrlNotAllowed):
        denied.check_url("http://127.0.0.1:9/")
    UrlPolicy(deny_private=False).check_url("http://127.0.0.1:8026/hook")


def test_tokens_are_configured_as_hashes_and_matched_in_constant_time():
    entry = f'[{{"name": "ci", "sha256": "{hash_token("s3cret")}", "scopes": ["jobs:read"]}}]'
    tokens = load_tokens(entry)
    assert tokens == [ApiToken("ci", hash_token("s3cret"), frozenset({"jobs:read"}))]
    assert find_token(tokens, "s3cret").name == "ci"
    assert find_token(tokens, "s3cre") is None


@pytest.mark.parametrize(
    "raw",
    [
        '[{"name": "x", "sha256": "plain", "scopes": ["admin"]}]',
        '[{"name": "x", "sha256": "' + "a" * 64 + '", "scopes": ["root"]}]',
        "not json",
        '[{"name": "x"}]',
    ],
)
def test_bad_token_configuration_stops_the_process(raw):
    with pytest.raises(SystemExit):
        load_tokens(raw)


class Conf(dict):
    __getattr__ = dict.get


def test_production_names_each_insecure_platform_setting():
    conf = Conf(
        broker_url="amqp://guest:guest@rabbit.internal:5672//",
        accept_content=["json", "pickle"],
        result_accept_content=["json"],
        task_serializer="pickle",
        taskplane_job_families=["webhooks", "diagnostics"],
    )
    problems = "\n".join(platform_problems(conf))
    assert "guest" in problems and "rabbit.internal" in problems
    assert "accept_content accepts pickle" in problems
    assert "task_serializer is pickle" in problems
    assert "diagnostics" in problems
    secure = Conf(
        broker_url="amqp://tp:long-secret@rabbit.internal:5672//",
        accept_content=["json"],
        taskplane_job_families=["webhooks"],
    )
    assert platform_problems(secure) == []
    assert (
        platform_problems(
            Conf(broker_url="amqp://guest:guest@127.0.0.1//", taskplane_job_families=[])
        )
        == []
    )


def test_production_names_each_insecure_web_setting():
    problems = "\n".join(web_problems({"SECRET_KEY": None}, {"FLASK_DEBUG": "1"}, 0))
    assert "TASKPLANE_SECRET_KEY" in problems
    assert "TASKPLANE_API_TOKENS" in problems
    assert "FLASK_DEBUG" in problems
    assert web_problems({"SECRET_KEY": "x" * 40}, {}, 1) == []


def test_the_worker_checks_the_url_again_before_connecting():
    """What webhook.deliver and logs.summarize call right before their request."""
    from tasks.core.errors import PermanentError
    from tasks.jobs.outbound_http import ensure_allowed

    strict = Conf(taskplane_url_policy={"deny_private": True})
    with pytest.raises(PermanentError, match="not allowed"):
        ensure_allowed("http://169.254.169.254/latest/meta-data", strict)
    ensure_allowed("http://93.184.216.34/hook", strict)
    ensure_allowed("http://127.0.0.1:8026/hook", Conf(taskplane_url_policy={"deny_private": False}))
