"""Job messages derived from one that Celery built, instead of each built by Celery.

Why: per message of a 1,000-job batch, py-amqp encoding the headers table
(pure Python, ~20 entries) took ~40% of the web's publish and Celery's
``as_task_v2`` (with ``anon_nodename``, a ``gethostname`` call) a few percent
more; yet between two messages of one job type, in one process, with the
same Taskplane headers, only a handful of fields differ. So the first such
message is built by Celery (``as_task_v2``) exactly as before and becomes the
template; every later one copies it and replaces only what varies per job:

* the headers ``id``, ``root_id``, ``argsrepr`` and ``eta`` (a countdown),
  the property ``correlation_id``, the body's args, the ``sent_event`` fields
  carrying the same values;
* the trace context headers (W3C ``traceparent`` and friends), appended last
  as ``propagate.inject`` appends them.

Its wire properties (the content header's flags and property list) are
spliced from bytes py-amqp encoded once for the constant parts and encodes
per message, with its own item encoder, for the varying ones, so the bytes on
the wire are the bytes py-amqp would write for the same message. Workers and
Flower therefore see ordinary protocol-2 task messages;
tests/unit/test_message_template.py compares derived messages with
Celery-built ones field by field and byte by byte.

What a template keeps that Celery would compute again: ``origin``, the
process and host name (a fork makes new templates, see ``JobPublisher``; a
host renamed under a running web keeps its old name there, display only), and
what depends on the job type, retries and Taskplane headers (the template's
key). ``argsrepr`` below is Celery's ``saferepr`` made cheap for JSON
payloads, the other large per-message cost.
"""

from __future__ import annotations

from struct import pack
from typing import Any, NamedTuple

import amqp
from amqp.serialization import _write_item, dumps
from celery.utils.saferepr import saferepr

# Headers (and the property) whose values differ between jobs of one template.
VARYING_HEADERS = ("id", "root_id", "argsrepr", "eta")
HEADERS_PROPERTY = "application_headers"
CORRELATION_PROPERTY = "correlation_id"


class TemplatedMessage(NamedTuple):
    """A task message as ``as_task_v2`` returns it, plus its encoded wire properties."""

    headers: dict[str, Any]
    properties: dict[str, Any]
    body: tuple[Any, ...]
    sent_event: dict[str, Any] | None
    wire_properties: bytes

    def amqp_message(self, body: bytes, **properties: Any) -> amqp.Message:
        """The ``amqp.Message`` to publish, its properties already encoded."""
        return _PreEncoded(self.wire_properties, body, **properties)


class _PreEncoded(amqp.Message):
    """An ``amqp.Message`` whose content header properties are already encoded."""

    def __init__(self, wire_properties: bytes, body: bytes, **properties: Any):
        super().__init__(body, **properties)
        self._wire_properties = wire_properties

    def _serialize_properties(self) -> bytes:
        return self._wire_properties


class MessageTemplate:
    """The constant part of one kind of job message, and how to fill in one job.

    ``message`` is a Celery-built task message with the Taskplane headers
    added and no trace headers; ``wire`` the other properties every message
    is published with (content type and encoding, delivery mode).
    """

    def __init__(self, message: Any, wire: dict[str, Any]):
        missing = [name for name in VARYING_HEADERS if name not in message.headers]
        if missing or message.properties.get(CORRELATION_PROPERTY) is None:
            raise ValueError(f"not a protocol-2 task message: no {missing or 'correlation_id'}")
        self.headers = dict(message.headers)
        self.properties = dict(message.properties)
        self.kwargs, self.embed = dict(message.body[1]), dict(message.body[2])
        self.sent_event = dict(message.sent_event) if message.sent_event else None
        self.wire = dict(wire)
        # Lists and dicts among the headers (timelimit, stamps) are copied per
        # message, as Celery makes new ones for each.
        self._mutable = [k for k, v in self.headers.items() if isinstance(v, list | dict)]
        self._properties = _property_segments(
            {**self.wire, HEADERS_PROPERTY: self.headers, **self.properties}
        )
        self._table = _table_segments(self.headers)

    def message(
        self, job_id: str, args: tuple[Any, ...], argsrepr: str, eta: str | None, trace: dict
    ) -> TemplatedMessage:
        """The message for one job: the template with its id, args, argsrepr, eta and trace."""
        headers = self.headers.copy()
        for name in self._mutable:
            headers[name] = headers[name].copy()
        values = {"id": job_id, "root_id": job_id, "argsrepr": argsrepr, "eta": eta}
        headers.update(values)
        headers.update(trace)
        properties = {**self.properties, CORRELATION_PROPERTY: job_id}
        sent_event = None
        if self.sent_event is not None:
            sent_event = {
                **self.sent_event,
                "uuid": job_id,
                "root_id": job_id,
                "args": argsrepr,
                "eta": eta,
            }
        return TemplatedMessage(
            headers,
            properties,
            (args, self.kwargs.copy(), self.embed.copy()),
            sent_event,
            self._wire_properties(values, trace, job_id),
        )

    def fits(self, trace: dict) -> bool:
        """Whether trace headers can be appended: none is a header the template has."""
        return not any(key in self.headers for key in trace)

    def _wire_properties(self, values: dict[str, Any], trace: dict, job_id: str) -> bytes:
        parts: list[bytes] = []
        write = parts.append
        for segment in self._table:
            if isinstance(segment, bytes):
                write(segment)
            else:
                write(segment[0])
                _write_item(values[segment[1]], write, None)
        for key, value in trace.items():
            name = key.encode("utf-8", "surrogatepass")
            write(pack("B", len(name)))
            write(name)
            _write_item(value, write, None)
        table = b"".join(parts)
        # A shortstr as py-amqp's ``dumps`` writes one.
        correlation = job_id.encode("utf-8", "surrogatepass")
        filled = {
            HEADERS_PROPERTY: pack(">I", len(table)) + table,
            CORRELATION_PROPERTY: pack("B", len(correlation)) + correlation,
        }
        return b"".join(
            segment if isinstance(segment, bytes) else filled[segment]
            for segment in self._properties
        )


def _property_segments(properties: dict[str, Any]) -> list[bytes | str]:
    """The content header's flags and property list as ``amqp.Message`` encodes them.

    Constant properties are encoded here; the headers table and
    correlation_id stay as their names, filled in per message. The flags
    only say which properties are present, the same for every message.
    """
    segments: list[bytes | str] = []
    flags, flag_bits, shift = [], 0, 15
    for key, proptype in amqp.Message.PROPERTIES:
        value = properties.get(key)
        if value is None:
            shift -= 1
            continue
        if shift == 0:
            flags.append(flag_bits)
            flag_bits, shift = 0, 15
        flag_bits |= 1 << shift
        shift -= 1
        if key in (HEADERS_PROPERTY, CORRELATION_PROPERTY):
            segments.append(key)
        elif proptype != "bit":
            segments.append(dumps(proptype, [value]))
    flags.append(flag_bits)
    return [b"".join(pack(">H", bits) for bits in flags), *segments]


def _table_segments(headers: dict[str, Any]) -> list[bytes | tuple[bytes, str]]:
    """The headers table's entries: constant runs encoded, varying ones as (key bytes, name)."""
    segments: list[bytes | tuple[bytes, str]] = []
    run: list[bytes] = []
    for key, value in headers.items():
        name = key.encode("utf-8", "surrogatepass")
        prefix = pack("B", len(name)) + name
        if key in VARYING_HEADERS:
            if run:
                segments.append(b"".join(run))
                run = []
            segments.append((prefix, key))
        else:
            run.append(prefix)
            _write_item(value, run.append, None)
    if run:
        segments.append(b"".join(run))
    return segments


class _TooLong(Exception):
    """The repr reached Celery's bound: Celery's saferepr truncates, so it must write it."""


def argsrepr(args: tuple[Any, ...], maxlen: int, maxlevels: int) -> str:
    """Celery's ``saferepr(args, maxlen, maxlevels)``, faster for JSON payloads.

    Why: ``saferepr`` streams tokens through a generator with a dozen type
    checks each, a fifth of a batch's CPU after templates. For what a
    validated payload holds (dicts, lists, str, int, float, bool, None) and a
    repr shorter than ``maxlen`` its output is plain: strings quoted with
    ``'`` (only ``'`` escaped), numbers by ``str``, containers nested
    ``maxlevels`` deep shown as ``{...}``/``[...]``. Anything else (another
    type, a repr reaching ``maxlen``, which Celery truncates) goes to
    ``saferepr`` itself. tests/unit/test_message_template.py compares the two.
    """
    parts: list[str] = []
    try:
        _json_repr(args, parts, 0, maxlevels, [maxlen])
    except _TooLong:
        return saferepr(args, maxlen, maxlevels=maxlevels)
    return "".join(parts)


def _json_repr(value: Any, parts: list[str], level: int, maxlevels: int, room: list[int]) -> None:
    kind = type(value)
    if kind is str:
        text = "'" + value.replace("'", "\\'") + "'"
    elif kind is int or kind is float or kind is bool:
        text = str(value)
    elif value is None:
        text = "None"
    elif kind is dict or kind is list or (kind is tuple and level == 0):
        _container(value, parts, level, maxlevels, room)
        return
    else:
        raise _TooLong  # not JSON: Celery's saferepr decides
    room[0] -= len(text)
    if room[0] <= 0:
        raise _TooLong
    parts.append(text)


def _container(value: Any, parts: list[str], level: int, maxlevels: int, room: list[int]) -> None:
    start, end = {dict: ("{", "}"), list: ("[", "]")}.get(type(value), ("(", ")"))
    if type(value) is tuple and len(value) == 1:
        end = ",)"
    if maxlevels and level >= maxlevels:
        text = f"{start}...{end}"
        room[0] -= len(text)
        if room[0] <= 0:
            raise _TooLong
        parts.append(text)
        return
    room[0] -= len(start) + len(end)
    parts.append(start)
    items = value.items() if type(value) is dict else ((None, item) for item in value)
    for index, (key, item) in enumerate(items):
        if index:
            room[0] -= 2
            parts.append(", ")
        if type(value) is dict:
            if type(key) is not str:
                raise _TooLong
            _json_repr(key, parts, 0, maxlevels, room)
            room[0] -= 2
            parts.append(": ")
        _json_repr(item, parts, level + 1, maxlevels, room)
    if room[0] <= 0:
        raise _TooLong
    parts.append(end)
