"""Unit tests for the pure log summariser behind the ``logs.summarize`` job."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tasks.jobs.logs.summary import LineLimitExceeded, bounded_lines, summarize

EXPECTED_KEYS = {
    "line_count",
    "levels",
    "top_errors",
    "first_timestamp",
    "last_timestamp",
    "formats",
    "error_messages_truncated",
}


def _json_line(**fields: object) -> str:
    return json.dumps(fields) + "\n"


# --- JSON lines -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        {"level": "error", "message": "boom"},
        {"severity": "ERROR", "message": "boom"},
        {"levelname": "Error", "message": "boom"},
        {"log.level": "error", "message": "boom"},
        {"log": {"level": "error"}, "message": "boom"},
        {"lvl": "err", "message": "boom"},
    ],
    ids=["level", "severity", "levelname", "log.level-flat", "log.level-nested", "lvl"],
)
def test_json_level_key_variants(record: dict[str, object]) -> None:
    result = summarize([json.dumps(record)])

    assert result["levels"] == {"ERROR": 1}
    assert result["top_errors"] == [{"message": "boom", "count": 1}]
    assert result["formats"] == {"json": 1, "text": 0}


def test_json_level_keys_are_tried_in_documented_order() -> None:
    result = summarize(
        [
            _json_line(severity="info", level="error", msg="a"),
            _json_line(lvl="debug", levelname="warning", msg="b"),
            _json_line(level=None, severity="critical", msg="c"),
        ]
    )

    assert result["levels"] == {"WARNING": 1, "ERROR": 1, "CRITICAL": 1}


@pytest.mark.parametrize("key", ["message", "msg", "event", "error"])
def test_json_message_key_variants(key: str) -> None:
    result = summarize([json.dumps({"level": "error", key: "disk full"})])

    assert result["top_errors"] == [{"message": "disk full", "count": 1}]


def test_json_message_keys_prefer_message_and_skip_nulls() -> None:
    result = summarize(
        [
            _json_line(level="error", error="low", event="mid", msg="high", message="top"),
            _json_line(level="error", message=None, error="fallback"),
        ]
    )

    assert result["top_errors"] == [
        {"message": "top", "count": 1},
        {"message": "fallback", "count": 1},
    ]


def test_json_structured_error_payload_groups_as_stable_json() -> None:
    result = summarize(
        [
            _json_line(level="error", error={"type": "IOError", "code": 5}),
            _json_line(level="error", error={"code": 5, "type": "IOError"}),
        ]
    )

    assert result["top_errors"] == [{"message": '{"code": 5, "type": "IOError"}', "count": 2}]


@pytest.mark.parametrize("key", ["timestamp", "@timestamp", "time", "ts", "asctime"])
def test_json_timestamp_key_variants(key: str) -> None:
    result = summarize([json.dumps({key: "2024-05-01 12:00:00,123", "level": "info"})])

    assert result["first_timestamp"] == "2024-05-01 12:00:00,123"
    assert result["last_timestamp"] == "2024-05-01 12:00:00,123"


def test_json_epoch_seconds_become_rfc3339_utc() -> None:
    result = summarize(
        [
            _json_line(ts=1714564800, level="info", msg="start"),
            _json_line(ts=1714564801.25, level="info", msg="end"),
        ]
    )

    assert result["first_timestamp"] == "2024-05-01T12:00:00Z"
    assert result["last_timestamp"] == "2024-05-01T12:00:01.250000Z"


def test_json_unusable_epoch_numbers_count_as_no_timestamp() -> None:
    lines = [
        _json_line(ts=1714564800, msg="ok"),
        '{"ts": NaN, "msg": "nan"}',
        _json_line(ts=10**20, msg="far future"),
        _json_line(ts=True, msg="bool"),
    ]

    result = summarize(lines)

    assert result["first_timestamp"] == "2024-05-01T12:00:00Z"
    assert result["last_timestamp"] == "2024-05-01T12:00:00Z"
    assert result["line_count"] == 4


def test_json_without_level_is_unknown() -> None:
    result = summarize([_json_line(msg="hello"), _json_line(level=30, msg="numeric")])

    assert result["levels"] == {"UNKNOWN": 2}
    assert result["top_errors"] == []


def test_brace_line_that_is_not_json_is_text() -> None:
    result = summarize(["{not json} ERROR broken", '{"level": "info"} trailing garbage'])

    assert result["formats"] == {"json": 0, "text": 2}
    assert result["levels"] == {"INFO": 1, "ERROR": 1}
    assert result["top_errors"] == [{"message": "broken", "count": 1}]


def test_json_array_line_is_text() -> None:
    result = summarize(['["ERROR", "boom"]'])

    assert result["formats"] == {"json": 0, "text": 1}


# --- plain text -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "timestamp", "level", "message"),
    [
        ("2024-05-01T12:00:00Z ERROR boom", "2024-05-01T12:00:00Z", "ERROR", "boom"),
        (
            "2024-05-01 12:00:00,123 - app.db - ERROR - boom",
            "2024-05-01 12:00:00,123",
            "ERROR",
            "boom",
        ),
        (
            "2024-05-01T12:00:00.123456+02:00 [WARN] slow query",
            "2024-05-01T12:00:00.123456+02:00",
            "WARNING",
            "slow query",
        ),
        ("2024-05-01 12:00:00-0500 info: started", "2024-05-01 12:00:00-0500", "INFO", "started"),
        (
            "[2024-05-01 12:00:00,123: ERROR/MainProcess] Task failed",
            "2024-05-01 12:00:00,123",
            "ERROR",
            "Task failed",
        ),
        ("May  1 12:00:00 host app[42]: error: disk full", "May  1 12:00:00", "ERROR", "disk full"),
        ("Dec 31 23:59:59 host kernel: PANIC oops", "Dec 31 23:59:59", "CRITICAL", "oops"),
    ],
    ids=[
        "iso-z",
        "python-logging",
        "iso-offset-bracket",
        "compact-offset",
        "celery",
        "syslog",
        "syslog-2digit",
    ],
)
def test_text_timestamp_and_level_formats(
    line: str, timestamp: str, level: str, message: str
) -> None:
    result = summarize([line + "\n"])

    assert result["first_timestamp"] == timestamp
    assert result["last_timestamp"] == timestamp
    assert result["levels"] == {level: 1}
    assert result["formats"] == {"json": 0, "text": 1}
    if level in {"ERROR", "CRITICAL"}:
        assert result["top_errors"] == [{"message": message, "count": 1}]


def test_text_without_timestamp_or_level() -> None:
    result = summarize(["just some output\n"])

    assert result["levels"] == {"UNKNOWN": 1}
    assert result["first_timestamp"] is None
    assert result["last_timestamp"] is None


def test_text_timestamp_must_be_at_start() -> None:
    result = summarize(["ERROR at 2024-05-01T12:00:00Z it broke"])

    assert result["first_timestamp"] is None
    assert result["top_errors"] == [{"message": "at 2024-05-01T12:00:00Z it broke", "count": 1}]


def test_text_level_words_inside_identifiers_are_ignored() -> None:
    result = summarize(
        [
            "GET /api/error 200",
            "loaded module com.example.error.Handler",
            "non-error condition",
            "errors=0 warnings=0",
            "error_count went up",
        ]
    )

    assert result["levels"] == {"UNKNOWN": 5}


def test_text_first_level_token_wins() -> None:
    result = summarize(["INFO user asked about an error page"])

    assert result["levels"] == {"INFO": 1}
    assert result["top_errors"] == []


def test_text_logfmt_level() -> None:
    result = summarize(['ts=1 level=error msg="db down"', "time=2 level='warn' msg=x"])

    assert result["levels"] == {"WARNING": 1, "ERROR": 1}
    assert result["top_errors"] == [{"message": 'msg="db down"', "count": 1}]


# --- level normalisation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("TRACE", "TRACE"),
        ("debug", "DEBUG"),
        ("Info", "INFO"),
        ("NOTICE", "NOTICE"),
        ("WARN", "WARNING"),
        ("warning", "WARNING"),
        ("ERR", "ERROR"),
        ("error", "ERROR"),
        ("CRIT", "CRITICAL"),
        ("critical", "CRITICAL"),
        ("FATAL", "CRITICAL"),
        ("panic", "CRITICAL"),
    ],
)
def test_level_normalisation_text_and_json(token: str, expected: str) -> None:
    result = summarize([f"2024-05-01T12:00:00Z {token} something", _json_line(level=token)])

    assert result["levels"] == {expected: 2}


@pytest.mark.parametrize("token", ["verbose", "5", "", "  "])
def test_unrecognised_json_levels_are_unknown(token: str) -> None:
    result = summarize([_json_line(level=token, msg="x")])

    assert result["levels"] == {"UNKNOWN": 1}


def test_unrecognised_logfmt_level_is_unknown() -> None:
    result = summarize(["level=verbose msg=x"])

    assert result["levels"] == {"UNKNOWN": 1}


def test_levels_are_ordered_by_severity_then_unknown() -> None:
    lines = [
        "no level",
        "ERROR a",
        "TRACE b",
        "CRITICAL c",
        "INFO d",
        "WARN e",
        "NOTICE f",
        "DEBUG g",
    ]

    result = summarize(lines)

    assert list(result["levels"]) == [
        "TRACE",
        "DEBUG",
        "INFO",
        "NOTICE",
        "WARNING",
        "ERROR",
        "CRITICAL",
        "UNKNOWN",
    ]


# --- whole-file behaviour ---------------------------------------------------------------------


def test_mixed_file() -> None:
    lines = [
        "2024-05-01T12:00:00Z INFO starting\n",
        _json_line(timestamp="2024-05-01T12:00:01Z", level="error", message="db down"),
        "\n",
        "2024-05-01T12:00:02Z ERROR db down\n",
        _json_line(level="warning", message="retrying"),
        "plain line with no level\n",
        _json_line(ts=1714564805, severity="fatal", msg="giving up"),
        "trailing line without timestamp ERROR db down",
    ]

    result = summarize(lines)

    assert result == {
        "line_count": 7,
        "levels": {"INFO": 1, "WARNING": 1, "ERROR": 3, "CRITICAL": 1, "UNKNOWN": 1},
        "top_errors": [
            {"message": "db down", "count": 3},
            {"message": "giving up", "count": 1},
        ],
        "first_timestamp": "2024-05-01T12:00:00Z",
        "last_timestamp": "2024-05-01T12:00:05Z",
        "formats": {"json": 3, "text": 4},
        "error_messages_truncated": False,
    }
    assert json.loads(json.dumps(result)) == result


def test_blank_lines_are_skipped_and_not_counted() -> None:
    result = summarize(["\n", "   \n", "\r\n", "", "\t", "INFO hi\n", "\n"])

    assert result["line_count"] == 1
    assert result["levels"] == {"INFO": 1}
    assert result["formats"] == {"json": 0, "text": 1}


def test_empty_input() -> None:
    assert summarize([]) == {
        "line_count": 0,
        "levels": {},
        "top_errors": [],
        "first_timestamp": None,
        "last_timestamp": None,
        "formats": {"json": 0, "text": 0},
        "error_messages_truncated": False,
    }


def test_result_has_exactly_the_documented_keys() -> None:
    assert set(summarize(["INFO x"])) == EXPECTED_KEYS


def test_first_and_last_timestamp_follow_file_order_not_time_order() -> None:
    result = summarize(
        [
            "no timestamp here",
            "2024-05-02T00:00:00Z INFO later date first",
            "middle without timestamp",
            "2024-05-01T00:00:00Z INFO earlier date last",
            "tail without timestamp",
        ]
    )

    assert result["first_timestamp"] == "2024-05-02T00:00:00Z"
    assert result["last_timestamp"] == "2024-05-01T00:00:00Z"


def test_accepts_a_one_shot_generator() -> None:
    consumed = []

    def generate() -> Iterator[str]:
        for i in range(1000):
            consumed.append(i)
            yield f"2024-05-01T12:00:00Z ERROR failure {i % 3}\n"

    result = summarize(generate(), top_errors=2)

    assert len(consumed) == 1000
    assert result["line_count"] == 1000
    assert result["top_errors"] == [
        {"message": "failure 0", "count": 334},
        {"message": "failure 1", "count": 333},
    ]


# --- top_errors -------------------------------------------------------------------------------


def test_top_errors_ordered_by_count_then_first_seen() -> None:
    lines = [
        "ERROR b",
        "ERROR a",
        "CRITICAL c",
        "ERROR a",
        "ERROR c",
        "ERROR d",
        "ERROR b",
        "WARNING a",
        "INFO a",
    ]

    result = summarize(lines)

    assert result["top_errors"] == [
        {"message": "b", "count": 2},
        {"message": "a", "count": 2},
        {"message": "c", "count": 2},
        {"message": "d", "count": 1},
    ]


def test_top_errors_limit() -> None:
    lines = [f"ERROR e{i}" for i in range(5) for _ in range(i + 1)]

    assert summarize(lines, top_errors=2)["top_errors"] == [
        {"message": "e4", "count": 5},
        {"message": "e3", "count": 4},
    ]
    assert summarize(lines, top_errors=0)["top_errors"] == []
    assert len(summarize(lines)["top_errors"]) == 5


def test_top_errors_rejects_negative() -> None:
    with pytest.raises(ValueError, match="top_errors"):
        summarize([], top_errors=-1)


def test_error_messages_are_stripped_and_truncated_to_500_chars() -> None:
    long = "x" * 600
    result = summarize([f"ERROR   {long}   ", _json_line(level="error", msg=f"  {long[:500]}yyy")])

    assert result["top_errors"] == [{"message": "x" * 500, "count": 2}]


def test_distinct_error_cap_sets_truncated_flag_but_keeps_counting() -> None:
    lines = ["ERROR a", "ERROR b", "ERROR c", "ERROR a", "ERROR d", "ERROR b", "ERROR a"]

    result = summarize(lines, max_distinct_errors=2)

    assert result["error_messages_truncated"] is True
    assert result["top_errors"] == [
        {"message": "a", "count": 3},
        {"message": "b", "count": 2},
    ]
    assert result["levels"] == {"ERROR": 7}


def test_distinct_error_cap_exactly_filled_is_not_truncated() -> None:
    result = summarize(["ERROR a", "ERROR b", "ERROR a"], max_distinct_errors=2)

    assert result["error_messages_truncated"] is False
    assert result["top_errors"] == [
        {"message": "a", "count": 2},
        {"message": "b", "count": 1},
    ]


def test_distinct_error_cap_of_zero_tracks_nothing() -> None:
    result = summarize(["ERROR a", "INFO b"], max_distinct_errors=0)

    assert result["error_messages_truncated"] is True
    assert result["top_errors"] == []


# --- bounded_lines ----------------------------------------------------------------------------


def test_bounded_lines_joins_lines_split_across_byte_chunks() -> None:
    chunks = [b"fir", b"st\nsec", b"ond\n", b"\nth", "é".encode()[:1], "é".encode()[1:], b"\n"]

    assert list(bounded_lines(chunks, max_bytes=1000)) == ["first", "second", "", "thé"]


def test_bounded_lines_handles_crlf_including_split_crlf() -> None:
    chunks = [b"one\r\ntwo\r", b"\nthree\r\n"]

    assert list(bounded_lines(chunks, max_bytes=1000)) == ["one", "two", "three"]


def test_bounded_lines_keeps_inner_carriage_returns() -> None:
    assert list(bounded_lines([b"a\rb\n"], max_bytes=100)) == ["a\rb"]


def test_bounded_lines_yields_final_line_without_newline() -> None:
    assert list(bounded_lines([b"a\nb", b"c"], max_bytes=100)) == ["a", "bc"]


def test_bounded_lines_accepts_str_chunks() -> None:
    assert list(bounded_lines(["héllo\nwor", "ld"], max_bytes=100)) == ["héllo", "world"]


def test_bounded_lines_replaces_invalid_utf8() -> None:
    assert list(bounded_lines([b"bad \xff byte\n"], max_bytes=100)) == ["bad \ufffd byte"]


def test_bounded_lines_empty_stream() -> None:
    assert list(bounded_lines([], max_bytes=10)) == []
    assert list(bounded_lines([b"", b""], max_bytes=10)) == []


def test_bounded_lines_raises_after_max_bytes_but_yields_complete_lines_first() -> None:
    lines = bounded_lines([b"abc\nde", b"f\nghi\njkl\n"], max_bytes=10)

    assert next(lines) == "abc"
    assert next(lines) == "def"
    with pytest.raises(LineLimitExceeded):
        next(lines)


def test_bounded_lines_limit_does_not_depend_on_chunking() -> None:
    data = b"abc\ndef\nghi\njkl\n"
    for size in (1, 3, 5, len(data)):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        seen: list[str] = []
        with pytest.raises(LineLimitExceeded):
            seen.extend(bounded_lines(chunks, max_bytes=10))
        assert seen == ["abc", "def"], size


def test_bounded_lines_exactly_max_bytes_is_allowed() -> None:
    assert list(bounded_lines([b"abc\n", b"def"], max_bytes=7)) == ["abc", "def"]


def test_bounded_lines_stops_pulling_chunks_after_limit() -> None:
    pulled: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(100):
            pulled.append(i)
            yield b"0123456789\n"

    with pytest.raises(LineLimitExceeded):
        list(bounded_lines(chunks(), max_bytes=25))
    assert pulled == [0, 1, 2]


def test_line_limit_exceeded_is_a_value_error() -> None:
    assert issubclass(LineLimitExceeded, ValueError)


def test_bounded_lines_truncates_overlong_lines() -> None:
    chunks = [b"abcdefghij", b"klmnop\nshort\n", b"x" * 20]

    assert list(bounded_lines(chunks, max_bytes=1000, max_line_bytes=5)) == [
        "abcde",
        "short",
        "xxxxx",
    ]


def test_bounded_lines_line_exactly_at_cap_with_crlf_is_intact() -> None:
    assert list(bounded_lines([b"abcde\r\nnext\n"], max_bytes=100, max_line_bytes=5)) == [
        "abcde",
        "next",
    ]


def test_bounded_lines_truncation_does_not_split_utf8_characters() -> None:
    # "aé€" is 1 + 2 + 3 bytes; a 4-byte cap would otherwise cut the euro sign in half.
    data = "aé€z\n".encode()

    assert list(bounded_lines([data], max_bytes=100, max_line_bytes=4)) == ["aé"]
    assert list(bounded_lines([data], max_bytes=100, max_line_bytes=6)) == ["aé€"]


def test_bounded_lines_buffer_stays_bounded_for_one_huge_line() -> None:
    chunks = (b"y" * 1024 for _ in range(1024))  # 1 MiB single line, streamed

    lines = list(bounded_lines(chunks, max_bytes=2 * 1024 * 1024, max_line_bytes=10))

    assert lines == ["y" * 10]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"max_bytes": -1}, "max_bytes"), ({"max_bytes": 10, "max_line_bytes": 0}, "max_line")],
)
def test_bounded_lines_validates_arguments_eagerly(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bounded_lines([], **kwargs)


def test_bounded_lines_feeds_summarize() -> None:
    body = (
        b'{"level": "error", "msg": "db down", "ts": 1714564800}\r\n'
        b"2024-05-01T12:00:01Z ERROR db down\r\n"
        b"\r\n"
        b"2024-05-01T12:00:02Z INFO recovered"
    )
    chunks = [body[i : i + 7] for i in range(0, len(body), 7)]

    result = summarize(bounded_lines(chunks, max_bytes=len(body)))

    assert result["line_count"] == 3
    assert result["top_errors"] == [{"message": "db down", "count": 2}]
    assert result["first_timestamp"] == "2024-05-01T12:00:00Z"
    assert result["last_timestamp"] == "2024-05-01T12:00:02Z"
    assert result["formats"] == {"json": 1, "text": 2}
