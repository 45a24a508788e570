import pytest

from tasks.core.errors import PermanentError, TransientError
from tasks.core.retry import RetryPolicy
from tasks.runtime.task import describe_error, is_transient, whole_seconds


def test_backoff_grows_exponentially_up_to_the_cap_without_jitter():
    policy = RetryPolicy(max_attempts=10, backoff_base_s=2, backoff_cap_s=30, jitter=False)
    assert [policy.delay_after(n) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]


def test_full_jitter_draws_between_zero_and_the_exponential_ceiling():
    policy = RetryPolicy(max_attempts=10, backoff_base_s=2, backoff_cap_s=30)
    bounds = []
    policy.delay_after(3, uniform=lambda lo, hi: bounds.append((lo, hi)) or hi / 2)
    assert bounds == [(0.0, 8)]
    assert policy.delay_after(3, uniform=lambda lo, hi: hi / 2) == 4


def test_retry_after_is_a_floor_capped_by_the_policy():
    policy = RetryPolicy(max_attempts=5, backoff_base_s=1, backoff_cap_s=60)
    zero = lambda lo, hi: 0.0  # noqa: E731
    assert policy.delay_after(1, retry_after=20, uniform=zero) == 20
    assert policy.delay_after(1, retry_after=86_400, uniform=zero) == 60


def test_scale_shrinks_every_delay():
    policy = RetryPolicy(max_attempts=5, backoff_base_s=4, backoff_cap_s=60, jitter=False)
    assert policy.delay_after(2, scale=0.25) == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0, "backoff_base_s": 1, "backoff_cap_s": 1},
        {"max_attempts": 1, "backoff_base_s": 0, "backoff_cap_s": 1},
        {"max_attempts": 1, "backoff_base_s": 5, "backoff_cap_s": 1},
    ],
)
def test_nonsense_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_countdowns_are_whole_seconds_of_at_least_one():
    assert [whole_seconds(d) for d in (0.0, 0.2, 1.4, 2.6)] == [1, 1, 1, 3]


def test_only_permanent_errors_and_invalid_payloads_skip_retries():
    from pydantic import BaseModel, ValidationError

    class M(BaseModel):
        n: int

    with pytest.raises(ValidationError) as invalid:
        M.model_validate({"n": "x"})
    assert is_transient(TransientError("x"))
    assert is_transient(RuntimeError("bug"))
    assert not is_transient(PermanentError("no"))
    assert not is_transient(invalid.value)
    assert describe_error(invalid.value, 1)["type"] == "invalid_payload"
    assert describe_error(invalid.value, 1)["message"].startswith("n: ")


def test_error_descriptions_are_bounded_and_json_safe():
    error = describe_error(RuntimeError("x" * 5000), attempt=3)
    assert error["type"] == "exception" and error["attempt"] == 3
    assert len(error["message"]) == 2000
