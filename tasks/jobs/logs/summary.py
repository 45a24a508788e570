"""Pure core of the ``logs.summarize`` job.

Log files submitted to Taskplane can be far bigger than a worker's memory and come in whatever
shape the producing service emits: JSON lines from structured loggers, plain text from
``logging`` / Celery / syslog, or a mix of both. The job only needs a compact overview (how many
lines, which levels, which errors dominate, which time span), so everything here works in a
single pass over the lines and keeps counters rather than lines.

Keeping this module free of I/O lets the Celery task own fetching and storage while the parsing
rules stay unit-testable and deterministic.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["LineLimitExceeded", "bounded_lines", "summarize"]

DEFAULT_MAX_DISTINCT_ERRORS = 10_000
MAX_MESSAGE_CHARS = 500

_LEVEL_ORDER = ("TRACE", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "UNKNOWN")
_LEVEL_ALIASES = {
    "WARN": "WARNING",
    "ERR": "ERROR",
    "CRIT": "CRITICAL",
    "FATAL": "CRITICAL",
    "PANIC": "CRITICAL",
}
_ERROR_LEVELS = frozenset({"ERROR", "CRITICAL"})

_JSON_LEVEL_KEYS = ("level", "severity", "levelname", "log.level", "lvl")
_JSON_MESSAGE_KEYS = ("message", "msg", "event", "error")
_JSON_TIMESTAMP_KEYS = ("timestamp", "@timestamp", "time", "ts", "asctime")

# Characters that sit between a level token and the message in common text formats
# ("ERROR: boom", "- ERROR - boom", "[ERROR] boom", "| ERROR | boom").
_MESSAGE_SEPARATORS = " \t:-]|"

# Anchored at the start of the line (optionally inside "[" as Celery and many Java loggers do).
# Only the timestamp itself is captured so that it can be reported exactly as written.
_TEXT_TIMESTAMP_RE = re.compile(
    r"""
    \s*\[?
    (?P<ts>
        \d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}         # ISO 8601 date and time
        (?::\d{2}(?:[.,]\d+)?)?                  # seconds, optional fraction (. or ,)
        (?:[Zz]|[+-]\d{2}(?::?\d{2})?)?          # optional UTC designator or offset
      |
        (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)
        \ [ \d]?\d\ \d{2}:\d{2}:\d{2}             # syslog "May  1 12:00:00"
    )
    """,
    re.VERBOSE,
)

_LEVEL_WORDS = r"TRACE|DEBUG|INFO|NOTICE|WARNING|WARN|ERROR|ERR|CRITICAL|CRIT|FATAL|PANIC"

# The leftmost match wins: level tokens normally precede the message, so this avoids picking up
# "error" from message prose when the line has a real level token earlier on.
_LEVEL_RE = re.compile(
    rf"""
    (?:
        (?<![\w-])(?:level|lvl|severity)=["']?(?P<kv>\w+)["']?    # logfmt: level=error
      |
        \[\s*(?P<bracket>{_LEVEL_WORDS})\s*\]                      # [ERROR]
      |
        (?<![\w./=-])(?P<word>{_LEVEL_WORDS})(?![\w=]|\.\w)        # bare word, not a key/path
    )
    (?:/[\w.-]+\])?                                                # Celery: ERROR/MainProcess]
    """,
    re.IGNORECASE | re.VERBOSE,
)


class LineLimitExceeded(ValueError):
    """Raised by :func:`bounded_lines` when a stream is larger than the caller allowed.

    It is a ``ValueError`` so that callers treating oversized input as bad input need no
    special case, while callers that want a distinct error message can still catch it.
    """


@dataclass(frozen=True, slots=True)
class _Entry:
    """One parsed line; only what the summary needs survives parsing."""

    fmt: str
    level: str
    message: str
    timestamp: str | None


@dataclass(slots=True)
class _Tally:
    """Running counters, so memory depends on distinct error messages, never on line count."""

    max_distinct_errors: int
    line_count: int = 0
    levels: Counter[str] = field(default_factory=Counter)
    formats: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    errors_truncated: bool = False
    first_timestamp: str | None = None
    last_timestamp: str | None = None

    def add(self, entry: _Entry) -> None:
        """Fold one line in; error grouping is capped to keep hostile inputs bounded."""
        self.line_count += 1
        self.levels[entry.level] += 1
        self.formats[entry.fmt] += 1
        if entry.timestamp is not None:
            if self.first_timestamp is None:
                self.first_timestamp = entry.timestamp
            self.last_timestamp = entry.timestamp
        if entry.level in _ERROR_LEVELS:
            self._count_error(entry.message)

    def _count_error(self, message: str) -> None:
        key = message.strip()[:MAX_MESSAGE_CHARS]
        if key in self.errors:
            self.errors[key] += 1
        elif len(self.errors) < self.max_distinct_errors:
            self.errors[key] = 1
        else:
            self.errors_truncated = True

    def result(self, top_errors: int) -> dict[str, Any]:
        """Build the job's output; ordering is fixed so identical input gives identical JSON."""
        # sorted() is stable and Counter keeps insertion order, so ties stay in first-seen order.
        ranked = sorted(self.errors.items(), key=lambda item: -item[1])[:top_errors]
        return {
            "line_count": self.line_count,
            "levels": {level: self.levels[level] for level in _LEVEL_ORDER if self.levels[level]},
            "top_errors": [{"message": message, "count": count} for message, count in ranked],
            "first_timestamp": self.first_timestamp,
            "last_timestamp": self.last_timestamp,
            "formats": {"json": self.formats["json"], "text": self.formats["text"]},
            "error_messages_truncated": self.errors_truncated,
        }


def summarize(
    lines: Iterable[str],
    top_errors: int = 10,
    *,
    max_distinct_errors: int = DEFAULT_MAX_DISTINCT_ERRORS,
) -> dict[str, Any]:
    """Summarise log lines in one pass so that arbitrarily large streams fit in bounded memory.

    ``lines`` may be a one-shot generator; it is consumed exactly once. Blank lines are ignored
    entirely. Each remaining line is parsed as JSON when it is a JSON object, otherwise as
    text. ``max_distinct_errors`` caps how many different error messages are tracked; once the
    cap is hit new messages are dropped (and ``error_messages_truncated`` is set) while the
    already-tracked ones keep counting, so their counts stay exact.
    """
    if top_errors < 0:
        raise ValueError("top_errors must be >= 0")
    if max_distinct_errors < 0:
        raise ValueError("max_distinct_errors must be >= 0")
    tally = _Tally(max_distinct_errors=max_distinct_errors)
    for raw in lines:
        line = raw.strip()
        if line:
            tally.add(_parse_line(line))
    return tally.result(top_errors)


def _parse_line(line: str) -> _Entry:
    """Detect the format per line because real files mix structured and unstructured output."""
    record = _load_json_object(line)
    if record is not None:
        return _parse_json(record)
    return _parse_text(line)


def _load_json_object(line: str) -> dict[str, Any] | None:
    """Return the object for JSON lines; anything unparsable is simply treated as text."""
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: pathologically nested input
        return None
    return value if isinstance(value, dict) else None


def _parse_json(record: dict[str, Any]) -> _Entry:
    level = _first_value(record, _JSON_LEVEL_KEYS, (str,))
    message = _first_value(record, _JSON_MESSAGE_KEYS, (str, int, float, dict, list))
    timestamp = _first_value(record, _JSON_TIMESTAMP_KEYS, (str, int, float))
    return _Entry(
        fmt="json",
        level=_normalise_level(level) if level is not None else "UNKNOWN",
        message=_message_text(message),
        timestamp=_json_timestamp(timestamp),
    )


def _first_value(record: dict[str, Any], keys: Iterable[str], types: tuple[type, ...]) -> Any:
    """Pick the first key with a usable value, so a null or empty field defers to the next key."""
    for key in keys:
        value = _lookup(record, key)
        if isinstance(value, types) and not isinstance(value, bool) and value != "":
            return value
    return None


def _lookup(record: dict[str, Any], key: str) -> Any:
    """Accept dotted keys both flat (``"log.level"``) and nested (ECS-style ``{"log": {...}}``)."""
    value = record.get(key)
    if value is not None:
        return value
    head, dot, tail = key.partition(".")
    parent = record.get(head) if dot else None
    return parent.get(tail) if isinstance(parent, dict) else None


def _message_text(value: Any) -> str:
    """Structured error payloads become stable JSON text so identical errors group together."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _json_timestamp(value: Any) -> str | None:
    """Keep strings as written; turn epoch seconds into RFC 3339 so outputs are comparable."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return _epoch_to_rfc3339(value)
    return None


def _epoch_to_rfc3339(seconds: float) -> str | None:
    """Non-finite or out-of-range numbers are not a usable time, so they count as no timestamp."""
    try:
        moment = datetime.fromtimestamp(seconds, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return moment.isoformat().replace("+00:00", "Z")


def _parse_text(line: str) -> _Entry:
    ts_match = _TEXT_TIMESTAMP_RE.match(line)
    timestamp = ts_match.group("ts") if ts_match else None
    rest = line[ts_match.end() :] if ts_match else line
    level_match = _LEVEL_RE.search(rest)
    if level_match is None:
        return _Entry("text", "UNKNOWN", _clean_message(rest), timestamp)
    token = level_match.group("kv") or level_match.group("bracket") or level_match.group("word")
    message = _clean_message(rest[level_match.end() :])
    return _Entry("text", _normalise_level(token), message, timestamp)


def _clean_message(text: str) -> str:
    return text.lstrip(_MESSAGE_SEPARATORS).strip()


def _normalise_level(token: str) -> str:
    """Collapse the many spellings of a level so counts from different loggers add up."""
    level = token.strip().upper()
    level = _LEVEL_ALIASES.get(level, level)
    return level if level in _LEVEL_ORDER else "UNKNOWN"


def bounded_lines(
    chunks: Iterable[str | bytes],
    max_bytes: int,
    max_line_bytes: int = 65536,
) -> Iterator[str]:
    """Split a chunked stream into lines without ever buffering more than one capped line.

    Network bodies arrive in arbitrary chunks and may be huge or contain a single endless
    "line", so the total size is enforced (:class:`LineLimitExceeded` once more than
    ``max_bytes`` bytes arrive; the complete lines before the limit are still yielded) and
    each line keeps at most ``max_line_bytes`` bytes, the rest being dropped. Lines are
    yielded without their ``\\n`` / ``\\r\\n`` terminator; invalid UTF-8 becomes U+FFFD.
    Arguments are checked eagerly so misuse fails at the call site, not on first iteration.
    """
    if max_bytes < 0:
        raise ValueError("max_bytes must be >= 0")
    if max_line_bytes < 1:
        raise ValueError("max_line_bytes must be >= 1")
    return _split_lines(chunks, max_bytes, max_line_bytes)


def _split_lines(
    chunks: Iterable[str | bytes], max_bytes: int, max_line_bytes: int
) -> Iterator[str]:
    line = bytearray()
    truncated = False
    received = 0
    for chunk in chunks:
        data = chunk.encode("utf-8", errors="replace") if isinstance(chunk, str) else bytes(chunk)
        over_limit = received + len(data) > max_bytes
        if over_limit:
            data = data[: max_bytes - received]
        received += len(data)
        start = 0
        while (newline := data.find(b"\n", start)) != -1:
            truncated |= _append_capped(line, data, start, newline, max_line_bytes)
            yield _decode_line(line, truncated)
            line.clear()
            truncated = False
            start = newline + 1
        truncated |= _append_capped(line, data, start, len(data), max_line_bytes)
        if over_limit:
            raise LineLimitExceeded(f"log stream exceeds the {max_bytes}-byte limit")
    if line:
        yield _decode_line(line, truncated)


def _append_capped(line: bytearray, data: bytes, start: int, end: int, limit: int) -> bool:
    """Append ``data[start:end]`` up to ``limit``; report whether anything had to be dropped."""
    take = min(limit - len(line), end - start)
    if take > 0:
        line += data[start : start + take]
    return end - start > take


def _decode_line(line: bytearray, truncated: bool) -> str:
    data = bytes(line)
    if data.endswith(b"\r"):
        data = data[:-1]
    if truncated:
        data = _drop_partial_char(data)
    return data.decode("utf-8", errors="replace")


def _drop_partial_char(data: bytes) -> bytes:
    """A byte cap can split a UTF-8 character; drop the fragment instead of emitting U+FFFD."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # continuation byte: keep walking back to the lead byte
            continue
        needed = 4 if byte >= 0xF0 else 3 if byte >= 0xE0 else 2 if byte >= 0xC0 else 1
        return data[:-back] if back < needed else data
    return data
