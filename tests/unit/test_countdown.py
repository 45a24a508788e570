from datetime import UTC, datetime, timedelta

from tasks.core.submission import countdown_for as _countdown


def test_a_one_second_delay_still_waits_a_second():
    assert _countdown(datetime.now(UTC) + timedelta(seconds=1)) == 1


def test_delays_round_to_whole_seconds_and_under_half_a_second_runs_now():
    now = datetime.now(UTC)
    assert _countdown(now + timedelta(seconds=2.6)) == 3
    assert _countdown(now + timedelta(seconds=0.3)) is None
    assert _countdown(now - timedelta(seconds=5)) is None
    assert _countdown(None) is None
