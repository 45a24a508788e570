"""Fire times of schedules (tasks.core.schedule_times) against fixed clocks.

The DST cases are checked twice: by hand on the days issue 12 names, and against a
brute-force oracle that walks every UTC minute around real transitions in five zones
and applies the rule literally ("an instant fires when its local wall-clock time
matches; a repeated wall-clock time fires once, at its first occurrence, unless the
hour field covers every hour"). The oracle has its own tiny cron matcher, so it does
not share a bug with the library under test.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from tasks.core.schedule_times import (
    FIRE_ID_NAMESPACE,
    Cadence,
    ScheduleFieldError,
    check_jitter_s,
    check_window,
    due_between,
    fire_job_id,
    jittered,
    missed_fires,
    next_fire,
    scan_due,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def cron(expr: str, zone: str = "UTC") -> Cadence:
    return Cadence(cron=expr, timezone=zone)


def chain(cadence: Cadence, since: datetime, until: datetime, **window) -> list[datetime]:
    """next_fire applied repeatedly: what a scheduler keeping a watermark would see."""
    fires, due = [], next_fire(cadence, since, **window)
    while due is not None and due <= until:
        fires.append(due)
        due = next_fire(cadence, due, **window)
    return fires


# ------------------------------------------------------------------ cron fields


def test_every_minute_fires_on_the_next_whole_minute_strictly_after():
    every = cron("* * * * *")
    assert next_fire(every, utc(2025, 1, 1, 12, 0, 30)) == utc(2025, 1, 1, 12, 1)
    assert next_fire(every, utc(2025, 1, 1, 12, 1)) == utc(2025, 1, 1, 12, 2)
    assert next_fire(every, utc(2025, 1, 1, 12, 0, 59, 999999)) == utc(2025, 1, 1, 12, 1)


def test_results_are_aware_utc_whatever_offset_the_input_had():
    after = datetime(2025, 1, 1, 13, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    due = next_fire(cron("* * * * *"), after)
    assert due == utc(2025, 1, 1, 12, 1) and due.tzinfo is UTC


def test_specific_minute_hour_day_and_month():
    assert next_fire(cron("15 14 1 * *"), utc(2025, 1, 1, 14, 15)) == utc(2025, 2, 1, 14, 15)
    assert next_fire(cron("0 9 29 2 *"), utc(2025, 1, 1)) == utc(2028, 2, 29, 9)
    assert chain(cron("*/20 3 * * *"), utc(2025, 1, 1), utc(2025, 1, 1, 23)) == [
        utc(2025, 1, 1, 3, 0),
        utc(2025, 1, 1, 3, 20),
        utc(2025, 1, 1, 3, 40),
    ]
    assert chain(cron("0 8-10,17 * * *"), utc(2025, 1, 1), utc(2025, 1, 1, 23)) == [
        utc(2025, 1, 1, 8),
        utc(2025, 1, 1, 9),
        utc(2025, 1, 1, 10),
        utc(2025, 1, 1, 17),
    ]


def test_fields_are_local_wall_clock_in_the_schedules_zone():
    berlin = cron("15 14 * * *", "Europe/Berlin")
    assert next_fire(berlin, utc(2025, 1, 10)) == utc(2025, 1, 10, 13, 15)  # CET, +1
    assert next_fire(berlin, utc(2025, 7, 10)) == utc(2025, 7, 10, 12, 15)  # CEST, +2


def test_day_of_week_names_ranges_and_seven_for_sunday():
    # 2025-01-06 is a Monday.
    weekdays = chain(cron("0 9 * * MON-FRI"), utc(2025, 1, 4), utc(2025, 1, 13, 23))
    assert [d.day for d in weekdays] == [6, 7, 8, 9, 10, 13]
    assert next_fire(cron("0 0 * * 7"), utc(2025, 1, 6)) == utc(2025, 1, 12)
    assert next_fire(cron("0 0 * * sun"), utc(2025, 1, 6)) == utc(2025, 1, 12)


def test_day_of_month_and_day_of_week_both_given_means_either_like_vixie_cron():
    # The 13th or any Friday; with one of them "*" both must match.
    either = chain(cron("0 0 13 * 5"), utc(2025, 6, 1), utc(2025, 6, 30))
    assert [d.day for d in either] == [6, 13, 20, 27]  # Fridays, and Friday the 13th once
    either = chain(cron("0 0 12 * 5"), utc(2025, 6, 1), utc(2025, 6, 30))
    assert [d.day for d in either] == [6, 12, 13, 20, 27]
    both = chain(cron("0 0 * 6 5"), utc(2025, 6, 1), utc(2025, 6, 30))
    assert [d.day for d in both] == [6, 13, 20, 27]


def test_cronsim_extensions_last_day_and_nth_weekday():
    assert next_fire(cron("0 0 L * *"), utc(2025, 2, 1)) == utc(2025, 2, 28)
    assert next_fire(cron("0 0 * * MON#1"), utc(2025, 2, 1)) == utc(2025, 2, 3)


def test_the_expression_is_stored_normalised():
    cadence = cron("  0   9 * *  1-5 ", "Europe/Berlin")
    assert cadence.as_fields() == {"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"}
    assert cadence == cron("0 9 * * 1-5", "Europe/Berlin")
    assert Cadence.from_fields(cron="0 9 * * *").timezone == "UTC"
    assert Cadence.from_fields(interval_s=5).as_fields() == {"interval_s": 5}


# -------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("61 * * * *", "invalid minute field '61'"),
        ("* 24 * * *", "invalid hour field '24'"),
        ("* * 0 * *", "invalid day-of-month field '0'"),
        ("* * 32 * *", "invalid day-of-month field '32'"),
        ("* * * 13 *", "invalid month field '13'"),
        ("* * * * 8", "invalid day-of-week field '8'"),
        ("*/0 * * * *", "invalid minute field"),
        ("5-1 * * * *", "invalid minute field"),
        ("x * * * *", "invalid minute field"),
        ("0 0 ? * *", "invalid day-of-month field"),
        ("0 0 30 2 *", "never occurs in the months given"),
        ("* * * *", "must have 5 fields"),
        ("0 * * * * *", "got 6"),
        ("", "got 0"),
        ("@hourly", "aliases like '@hourly' are not supported"),
        ("@daily", "aliases"),
        ("1," * 200 + "1 * * * *", "longer than 256 characters"),
    ],
)
def test_an_invalid_cron_expression_names_the_cron_field(expr: str, says: str):
    with pytest.raises(ScheduleFieldError) as caught:
        cron(expr)
    assert caught.value.field == "cron"
    assert says in caught.value.reason
    assert str(caught.value).startswith("cron: ")
    assert isinstance(caught.value, ValueError)


def test_garbage_only_ever_raises_the_field_error():
    rng = random.Random(12)
    alphabet = "0123456789*/-,LW#?MONJAFRSUTHEDClx@ \t\u0663"
    for _ in range(3000):
        expr = " ".join(
            "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
            for _ in range(rng.choice((4, 5, 5, 5, 6)))
        )
        try:
            cadence = cron(expr, "Europe/Berlin")
        except ScheduleFieldError as exc:
            assert exc.field == "cron"
        else:
            next_fire(cadence, utc(2024, 10, 26, 23))


def test_a_cron_that_is_not_a_string_names_the_cron_field():
    with pytest.raises(ScheduleFieldError) as caught:
        Cadence(cron=5)  # type: ignore[arg-type]
    assert caught.value.field == "cron"


@pytest.mark.parametrize(
    "zone",
    ["Mars/Olympus_Mons", "europe/berlin", "America", "", "../etc/passwd", "/etc/localtime",
     "localtime", "Europe/Berlin\x00", 5, None],
)  # fmt: skip
def test_an_unknown_time_zone_names_the_timezone_field(zone):
    with pytest.raises(ScheduleFieldError) as caught:
        Cadence(cron="0 * * * *", timezone=zone)
    assert caught.value.field == "timezone"
    assert "time zone" in caught.value.reason


def test_the_timezone_is_checked_for_an_interval_too():
    assert Cadence(interval_s=5, timezone="Asia/Tokyo").interval_s == 5
    with pytest.raises(ScheduleFieldError) as caught:
        Cadence(interval_s=5, timezone="Nowhere/Town")
    assert caught.value.field == "timezone"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (0, "at least 1 second"),
        (0.5, "at least 1 second"),
        (-5, "at least 1 second"),
        (True, "a number"),
        ("5", "a number"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (1.0001, "whole number of milliseconds"),
        (366 * 86400 + 1, "at most"),
    ],
)
def test_a_bad_interval_names_the_interval_s_field(value, says: str):
    with pytest.raises(ScheduleFieldError) as caught:
        Cadence(interval_s=value)
    assert caught.value.field == "interval_s"
    assert says in caught.value.reason


def test_exactly_one_of_cron_and_interval_s():
    for kwargs in ({}, {"cron": "* * * * *", "interval_s": 5}):
        with pytest.raises(ScheduleFieldError) as caught:
            Cadence(**kwargs)
        assert caught.value.field == "cron" and "interval_s" in caught.value.reason


def test_a_window_ending_before_it_starts_names_end_at_and_naive_dates_are_refused():
    with pytest.raises(ScheduleFieldError) as caught:
        check_window(utc(2025, 2, 1), utc(2025, 1, 1))
    assert caught.value.field == "end_at"
    with pytest.raises(ScheduleFieldError) as caught:
        check_window(datetime(2025, 1, 1), None)
    assert caught.value.field == "start_at" and "UTC offset" in caught.value.reason
    with pytest.raises(ScheduleFieldError):
        next_fire(cron("* * * * *"), datetime(2025, 1, 1))
    assert check_window(None, None) == (None, None)


# ------------------------------------------------------------------- intervals


def test_an_interval_without_start_at_is_a_grid_anchored_at_the_unix_epoch():
    every_7s = Cadence(interval_s=7)
    due = next_fire(every_7s, utc(2025, 1, 1, 12))
    assert (due - utc(1970, 1, 1)).total_seconds() % 7 == 0
    assert utc(2025, 1, 1, 12) < due <= utc(2025, 1, 1, 12, 0, 7)
    assert next_fire(Cadence(interval_s=60), utc(2025, 1, 1, 12, 0, 30)) == utc(2025, 1, 1, 12, 1)


def test_two_schedulers_looking_at_different_times_compute_the_same_grid():
    for cadence, start_at in [
        (Cadence(interval_s=7), None),
        (Cadence(interval_s=90), utc(2025, 1, 1, 10, 0, 0, 250000)),
        (Cadence(interval_s=1.5), utc(2025, 1, 1, 10, 0, 0, 333333)),
    ]:
        first = chain(cadence, utc(2025, 1, 1, 10), utc(2025, 1, 1, 11), start_at=start_at)
        later = chain(
            cadence, utc(2025, 1, 1, 10, 17, 3, 123456), utc(2025, 1, 1, 11), start_at=start_at
        )
        assert later and set(later) <= set(first)
        assert first[-len(later) :] == later
        steps = {b - a for a, b in zip(first, first[1:], strict=False)}
        assert steps == {timedelta(seconds=cadence.interval_s)}
        assert all(d.microsecond % 1000 == 0 for d in first)  # millisecond due times


def test_an_interval_with_start_at_fires_at_start_at_then_every_interval():
    every_90s = Cadence(interval_s=90)
    start = utc(2025, 1, 1, 10, 0, 0, 250000)
    assert next_fire(every_90s, utc(2025, 1, 1), start_at=start) == start
    assert next_fire(every_90s, start, start_at=start) == start + timedelta(seconds=90)
    assert next_fire(every_90s, utc(2025, 1, 1, 10, 5), start_at=start) == utc(
        2025, 1, 1, 10, 6, 0, 250000
    )
    # sub-millisecond start: the grid starts at the next millisecond, never before start_at
    odd = utc(2025, 1, 1, 10, 0, 0, 250400)
    assert next_fire(every_90s, utc(2025, 1, 1), start_at=odd) == utc(2025, 1, 1, 10, 0, 0, 251000)


# ------------------------------------------------------------------ start / end


def test_start_at_is_inclusive_and_end_at_exclusive():
    hourly = cron("0 * * * *")
    start, end = utc(2025, 1, 1, 10), utc(2025, 1, 1, 13)
    assert next_fire(hourly, utc(2025, 1, 1), start_at=start) == start
    assert next_fire(hourly, utc(2025, 1, 1), start_at=start + timedelta(seconds=1)) == utc(
        2025, 1, 1, 11
    )
    assert chain(hourly, utc(2025, 1, 1), utc(2025, 1, 2), start_at=start, end_at=end) == [
        utc(2025, 1, 1, 10),
        utc(2025, 1, 1, 11),
        utc(2025, 1, 1, 12),
    ]
    assert next_fire(hourly, utc(2025, 1, 1, 12), end_at=end) is None
    assert next_fire(Cadence(interval_s=3600), utc(2025, 1, 1, 12), end_at=end) is None
    assert due_between(hourly, utc(2025, 1, 1), utc(2025, 1, 2), 10, start, end) == [
        utc(2025, 1, 1, 10),
        utc(2025, 1, 1, 11),
        utc(2025, 1, 1, 12),
    ]


def test_an_expression_with_no_more_dates_gives_none():
    # Feb 29 only: the next one is four years on; past year 9999 there is none
    assert next_fire(cron("0 0 29 2 *"), utc(2028, 2, 29)) == utc(2032, 2, 29)
    assert next_fire(cron("* * * * *"), utc(9999, 12, 31, 23, 59)) is None


# ------------------------------------------------------------------------- DST


def test_spring_forward_a_time_that_does_not_exist_is_skipped_once_in_berlin():
    # 2024-03-31: 02:00 CET becomes 03:00 CEST; 02:30 never happens that day.
    fires = due_between(cron("30 2 * * *", "Europe/Berlin"), utc(2024, 3, 29), utc(2024, 4, 2), 10)
    assert fires == [utc(2024, 3, 29, 1, 30), utc(2024, 3, 30, 1, 30), utc(2024, 4, 1, 0, 30)]
    # not "run at 03:00 instead", as Debian cron (and cronsim, croniter) would
    assert utc(2024, 3, 31, 1, 0) not in fires


def test_spring_forward_in_new_york_skips_the_missing_time_and_keeps_the_rest():
    # 2024-03-10: 02:00 EST becomes 03:00 EDT.
    ny = "America/New_York"
    fires = due_between(cron("30 2 * * *", ny), utc(2024, 3, 9), utc(2024, 3, 12), 10)
    assert fires == [utc(2024, 3, 9, 7, 30), utc(2024, 3, 11, 6, 30)]
    assert due_between(cron("0 3 * * *", ny), utc(2024, 3, 10), utc(2024, 3, 11), 10) == [
        utc(2024, 3, 10, 7)  # 03:00 EDT exists, fires once
    ]
    assert due_between(cron("*/20 2 * * *", ny), utc(2024, 3, 10), utc(2024, 3, 11), 10) == []


def test_fall_back_a_time_that_occurs_twice_fires_once_in_new_york():
    # 2024-11-03: 02:00 EDT becomes 01:00 EST; 01:30 happens at 05:30Z and 06:30Z.
    ny = "America/New_York"
    fires = due_between(cron("30 1 * * *", ny), utc(2024, 11, 2), utc(2024, 11, 5), 10)
    assert fires == [utc(2024, 11, 2, 5, 30), utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)]
    # also when a scheduler starts looking in the second copy of the hour
    assert next_fire(cron("30 1 * * *", ny), utc(2024, 11, 3, 6, 10)) == utc(2024, 11, 4, 6, 30)
    # a minute wildcard inside one named hour still names wall-clock times: once each
    every_30 = due_between(cron("*/30 1 * * *", ny), utc(2024, 11, 3), utc(2024, 11, 4), 10)
    assert every_30 == [utc(2024, 11, 3, 5, 0), utc(2024, 11, 3, 5, 30)]


def test_fall_back_in_berlin_fires_the_repeated_time_once():
    # 2024-10-27: 03:00 CEST becomes 02:00 CET; 02:30 happens at 00:30Z and 01:30Z.
    fires = due_between(
        cron("30 2 * * *", "Europe/Berlin"), utc(2024, 10, 26), utc(2024, 10, 29), 10
    )
    assert fires == [utc(2024, 10, 26, 0, 30), utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)]


def test_hourly_across_fall_back_gives_each_utc_hour_once():
    # The local day of 2024-11-03 in New York has 25 hours; "0 * * * *" fires 25 times.
    for expr in ("0 * * * *", "0 0-23 * * *", "0 */1 * * *"):
        cadence = cron(expr, "America/New_York")
        assert cadence.repeats_in_fall_back_hour
        fires = due_between(cadence, utc(2024, 11, 3, 3, 59), utc(2024, 11, 4, 4, 59), 100)
        assert fires == [utc(2024, 11, 3, 4) + timedelta(hours=h) for h in range(25)], expr
    berlin = due_between(
        cron("0 * * * *", "Europe/Berlin"),
        utc(2024, 10, 26, 21, 59),
        utc(2024, 10, 27, 22, 59),
        100,
    )
    assert berlin == [utc(2024, 10, 26, 22) + timedelta(hours=h) for h in range(25)]


def test_hourly_across_spring_forward_gives_each_utc_hour_once():
    # Berlin's local 2024-03-31 has 23 hours: 02:00 does not exist.
    fires = due_between(
        cron("0 * * * *", "Europe/Berlin"), utc(2024, 3, 30, 22, 59), utc(2024, 3, 31, 21, 59), 100
    )
    assert fires == [utc(2024, 3, 30, 23) + timedelta(hours=h) for h in range(23)]


def test_every_fifteen_minutes_keeps_its_pace_through_both_changes():
    for zone, since in (
        ("America/New_York", utc(2024, 11, 3, 4)),
        ("Europe/Berlin", utc(2024, 3, 31, 0)),
    ):
        fires = due_between(cron("*/15 * * * *", zone), since, since + timedelta(hours=4), 100)
        assert fires == [since + timedelta(minutes=15 * i) for i in range(1, 17)], zone


def test_a_midnight_that_does_not_exist_is_skipped_in_santiago():
    # Chile moves 2024-09-07 24:00 to 2024-09-08 01:00: that day has no 00:00.
    fires = due_between(
        cron("0 0 * * *", "America/Santiago"), utc(2024, 9, 6), utc(2024, 9, 10), 10
    )
    assert fires == [utc(2024, 9, 6, 4), utc(2024, 9, 7, 4), utc(2024, 9, 9, 3)]
    # while every minute of 2024-09-08 that does exist still fires
    day = cron("* * 8 9 *", "America/Santiago")
    assert next_fire(day, utc(2024, 9, 7, 12)) == utc(2024, 9, 8, 4)  # 01:00 local


def test_a_half_hour_change_keeps_every_real_fire_in_lord_howe():
    # Lord Howe Island moves its clocks by 30 minutes. cronsim's own zone handling loses
    # a fire on both days (it steps through UTC assuming hour-long hours); these do not.
    lord_howe = cron("30 * * * *", "Australia/Lord_Howe")
    # 2024-04-07 02:00 (+11) becomes 01:30 (+10:30): 01:30 happens twice, hourly fires both
    fall = due_between(lord_howe, utc(2024, 4, 6, 13), utc(2024, 4, 6, 16), 10)
    assert fall == [
        utc(2024, 4, 6, 13, 30),
        utc(2024, 4, 6, 14, 30),
        utc(2024, 4, 6, 15),
        utc(2024, 4, 6, 16),
    ]
    # 2024-10-06 02:00 (+10:30) becomes 02:30 (+11): 02:30 exists and fires
    spring = due_between(lord_howe, utc(2024, 10, 5, 14), utc(2024, 10, 5, 17), 10)
    assert spring == [utc(2024, 10, 5, 15), utc(2024, 10, 5, 15, 30), utc(2024, 10, 5, 16, 30)]


# A brute-force oracle: every UTC minute, its local wall-clock time, the rule applied
# literally. Its own parser covers numbers, ranges, steps, lists and "*".


def _field(text: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for term in text.split(","):
        base, _, step = term.partition("/")
        if base == "*":
            lo, hi = low, high
        elif "-" in base:
            lo, hi = map(int, base.split("-"))
        else:
            lo = hi = int(base)
            if step:
                hi = high
        values.update(range(lo, hi + 1, int(step or 1)))
    return values


def _oracle(expr: str, zone: str, since: datetime, until: datetime) -> list[datetime]:
    minute, hour, dom, month, dow = expr.split()
    minutes, hours = _field(minute, 0, 59), _field(hour, 0, 23)
    doms, months = _field(dom, 1, 31), _field(month, 1, 12)
    dows = {d % 7 for d in _field(dow, 0, 7)}
    either = not dom.startswith("*") and not dow.startswith("*")
    every_hour = hours == set(range(24))
    tz = ZoneInfo(zone)
    fires = []
    moment = since.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while moment <= until:
        local = moment.astimezone(tz)
        day_ok = (
            (local.day in doms or (local.isoweekday() % 7) in dows)
            if either
            else (local.day in doms and (local.isoweekday() % 7) in dows)
        )
        if (
            local.minute in minutes
            and local.hour in hours
            and local.month in months
            and day_ok
            and (every_hour or local.fold == 0)
        ):
            fires.append(moment)
        moment += timedelta(minutes=1)
    return fires


TRANSITIONS = [
    ("Europe/Berlin", utc(2024, 3, 31, 1)),
    ("Europe/Berlin", utc(2024, 10, 27, 1)),
    ("America/New_York", utc(2024, 3, 10, 7)),
    ("America/New_York", utc(2024, 11, 3, 6)),
    ("America/Santiago", utc(2024, 4, 7, 3)),  # Sat 24:00 -> Sat 23:00
    ("America/Santiago", utc(2024, 9, 8, 4)),  # Sat 24:00 -> Sun 01:00
    ("America/Havana", utc(2024, 3, 10, 5)),  # 00:00 -> 01:00
    ("America/Havana", utc(2024, 11, 3, 5)),  # 01:00 -> 00:00
    ("Australia/Lord_Howe", utc(2024, 4, 6, 15)),  # half-hour change: 02:00 -> 01:30
    ("Australia/Lord_Howe", utc(2024, 10, 5, 15, 30)),  # 02:00 -> 02:30
]

ORACLE_EXPRESSIONS = [
    "* * * * *",
    "*/15 * * * *",
    "0 * * * *",
    "30 * * * *",
    "0 0-23 * * *",
    "0 */2 * * *",
    "30 1 * * *",
    "30 2 * * *",
    "0 2 * * *",
    "0 0 * * *",
    "59 23 * * *",
    "* 1 * * *",
    "* 0 * * *",
    "*/20 2 * * *",
    "0,30 0-3 * * *",
    "45 1,2 * * 0",
    "0 0 6-10 * *",
    "15 23 7 * 6",
]


@pytest.mark.parametrize(("zone", "change"), TRANSITIONS, ids=lambda v: str(v))
def test_fires_match_the_brute_force_oracle_around_real_dst_changes(zone: str, change: datetime):
    tz = ZoneInfo(zone)
    since, until = change - timedelta(hours=30), change + timedelta(hours=30)
    assert since.astimezone(tz).utcoffset() != until.astimezone(tz).utcoffset(), "no DST change"
    for expr in ORACLE_EXPRESSIONS:
        cadence = cron(expr, zone)
        expected = _oracle(expr, zone, since, until)
        scan = scan_due(cadence, since, until, 5000)
        assert list(scan.fires) == expected, expr
        assert scan.total == len(expected), expr
        assert chain(cadence, since, until) == expected, expr
        assert due_between(cadence, since, until, 3) == expected[-3:], expr


# ---------------------------------------------------------- windows and policies


def test_due_between_is_the_newest_fires_in_a_half_open_window():
    minutely = cron("* * * * *")
    since, until = utc(2025, 1, 1, 12), utc(2025, 1, 1, 12, 10)
    assert due_between(minutely, since, until, 100) == [
        utc(2025, 1, 1, 12, m) for m in range(1, 11)
    ]  # (since, until]: 12:00 excluded, 12:10 included
    assert due_between(minutely, since, until, 3) == [
        utc(2025, 1, 1, 12, 8),
        utc(2025, 1, 1, 12, 9),
        utc(2025, 1, 1, 12, 10),
    ]
    assert due_between(minutely, since, until, 0) == []
    assert due_between(minutely, until, since, 10) == []
    scan = scan_due(minutely, since, until, 3)
    assert (scan.total, scan.dropped) == (10, 7)
    with pytest.raises(ValueError):
        due_between(minutely, since, until, -1)


def test_due_between_for_an_interval_is_arithmetic_and_agrees_with_next_fire():
    every_second = Cadence(interval_s=1)
    since = utc(2025, 1, 1, 12)
    scan = scan_due(every_second, since, since + timedelta(days=30), 5)
    assert scan.total == 30 * 86400
    assert scan.fires == tuple(since + timedelta(days=30, seconds=s) for s in range(-4, 1))
    start = utc(2025, 1, 1, 12, 0, 0, 500000)
    window = {"start_at": start, "end_at": start + timedelta(seconds=10)}
    expected = chain(every_second, since, since + timedelta(minutes=1), **window)
    assert len(expected) == 10 and expected[0] == start
    assert due_between(every_second, since, since + timedelta(minutes=1), 100, **window) == expected
    assert scan_due(every_second, since, since + timedelta(minutes=1), 4, **window).total == 10


def test_missed_fires_policies():
    due = [utc(2025, 1, 1, 12, m) for m in range(5)]
    assert missed_fires("all", due) == due
    assert missed_fires("all", due, bound=2) == due[-2:]
    assert missed_fires("all", due, bound=0) == []
    assert missed_fires("last", due) == [due[-1]]
    assert missed_fires("none", due) == []
    for policy in ("all", "last", "none"):
        assert missed_fires(policy, []) == []
    with pytest.raises(ScheduleFieldError) as caught:
        missed_fires("some", due)
    assert caught.value.field == "missed"


# ----------------------------------------------------------------- ids, jitter


def test_fire_job_id_is_a_stable_uuid5():
    due = utc(2024, 1, 1)
    job_id = fire_job_id("nightly", due)
    # Pinned: if this changes, every fire already made gets a new id and fires again.
    assert job_id == "fbea1d99-9ca2-5822-b4b2-0e4170eeafa4"
    assert uuid.UUID(job_id).version == 5
    assert job_id == str(uuid.uuid5(FIRE_ID_NAMESPACE, "nightly@2024-01-01T00:00:00.000Z"))


def test_fire_job_id_is_the_same_for_the_same_instant_and_distinct_otherwise():
    due = utc(2024, 11, 3, 5, 30)
    same_instant = due.astimezone(ZoneInfo("America/New_York"))
    assert fire_job_id("report", same_instant) == fire_job_id("report", due)
    assert fire_job_id("report", due + timedelta(microseconds=999)) == fire_job_id("report", due)
    assert fire_job_id("report", due + timedelta(milliseconds=1)) != fire_job_id("report", due)
    assert fire_job_id("report", due) != fire_job_id("reports", due)
    fires = due_between(Cadence(interval_s=1), utc(2025, 1, 1), utc(2025, 1, 1, 1), 3600)
    assert len({fire_job_id("tick", d) for d in fires}) == 3600
    with pytest.raises(ValueError):
        fire_job_id("", due)
    with pytest.raises(ValueError):
        fire_job_id("report", datetime(2024, 1, 1))


def test_jitter_is_deterministic_within_bounds_and_varies_per_fire():
    due = utc(2024, 1, 1)
    assert jittered(due, 30, "nightly") == utc(2024, 1, 1, 0, 0, 6, 963000)  # pinned
    assert jittered(due, 30, "nightly") == jittered(due, 30.0, "nightly")
    assert jittered(due, 0, "nightly") == due
    fires = due_between(cron("0 * * * *"), utc(2025, 1, 1), utc(2025, 1, 3), 100)
    offsets = {jittered(d, 60, "hourly") - d for d in fires}
    assert all(timedelta(0) <= o < timedelta(seconds=60) for o in offsets)
    assert len(offsets) > 40  # 48 fires, spread out
    assert jittered(due, 60, "a") != jittered(due, 60, "b")


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), "5", True, 86401])
def test_bad_jitter_names_the_jitter_s_field(value):
    with pytest.raises(ScheduleFieldError) as caught:
        check_jitter_s(value)
    assert caught.value.field == "jitter_s"
    with pytest.raises(ScheduleFieldError):
        jittered(utc(2024, 1, 1), value, "nightly")
