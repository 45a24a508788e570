"""Constrained field types shared by job payload models.

Every constraint is a JSON Schema keyword (pattern, length), so the published
schema says exactly what the API accepts. Patterns use explicit character
ranges, on which JSON Schema's (ECMA) and pydantic's (Rust) regexes agree.
"""

import re
from datetime import datetime
from typing import Annotated

from pydantic import AnyHttpUrl, AwareDatetime, BeforeValidator, Field, UrlConstraints

# Deliberately permissive: local@domain, no spaces or control characters (so
# no header injection), RFC 5321 length. The SMTP server is the authority on
# whether a mailbox exists; its 5xx fails the job at once (and dead-letters it).
EmailAddress = Annotated[
    str, Field(pattern=r"^[^@\x00-\x20\x7f]+@[^@\x00-\x20\x7f]+$", min_length=3, max_length=254)
]
HttpUrl = Annotated[AnyHttpUrl, UrlConstraints(max_length=2048, allowed_schemes=["http", "https"])]
# No CR or LF: the value goes into a mail or HTTP header.
SingleLine = Annotated[str, Field(pattern=r"^[^\r\n]*$")]
HeaderName = Annotated[str, Field(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")]
HeaderValue = Annotated[str, Field(pattern=r"^[^\r\n]*$", max_length=8192)]
# Job tags: a small string map searched by exact pair (GET /jobs?tag=key:value).
# Keys exclude ':' and '=' so "key:value" and the index key split unambiguously;
# both are bounded because each pair is an index in Redis.
MAX_TAGS = 16
TagKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
TagValue = Annotated[str, Field(pattern=r"^[^\x00-\x1f\x7f]{1,128}$")]
Tags = Annotated[
    dict[TagKey, TagValue],
    Field(
        max_length=MAX_TAGS,
        description=f"at most {MAX_TAGS} pairs; keys [A-Za-z0-9_.-]{{1,64}}, values 1 to 128"
        " printable characters; searchable with GET /jobs?tag=key:value",
        json_schema_extra={"additionalProperties": False},
    ),
]


# RFC 3339 date-time with an offset, and nothing else. pydantic's AwareDatetime
# also takes a number of seconds ("8": 1970-01-01T00:00:08Z) and other shapes
# that JSON Schema's "date-time" format refuses; the API takes what it documents.
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339_text(value: object) -> object:
    """An RFC 3339 string as a datetime (strict validation takes no string after this)."""
    if not isinstance(value, str):
        return value
    found = RFC3339.match(value)
    if not found:
        raise ValueError("expected an RFC 3339 date-time with an offset, e.g. 2026-12-06T02:00:00Z")
    fraction = found.group(1) or ""
    text = value.replace(fraction, fraction[:7], 1) if fraction else value
    text = text[:10] + "T" + text[11:]
    if text[-1] in "Zz":
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:  # 2026-02-30, 25:00, a leap second
        raise ValueError(f"not a date-time: {exc}") from exc


Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]
