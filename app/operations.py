"""What each route says about itself: the declarations /openapi.json is built from.

Every view carries ``@operation(...)`` (or ``@undocumented(reason)``) under
its route decorator. app/openapi.py walks ``app.url_map`` and refuses a route
without one (``create_app`` checks at start), so a route cannot exist without
its entry in the document, and the entry sits next to the code that answers.

A declaration says only what the view itself decides: its summary, answers,
parameters and body. What the running process decides is added by the
generator: the job types and queues of this environment, whether tokens are
checked (security, 401, 403) and scopes (app/auth.py), whether a rate limit
applies (429, app/ratelimit.py), the body size limit (413).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel

from app.models import ErrorResponse

if TYPE_CHECKING:
    from app.openapi import Context

# A literal JSON Schema, a pydantic model (its schema becomes a component), or a
# builder of either from what this process runs (job types, queues, limits).
Schema = dict[str, Any] | type[BaseModel] | Callable[["Context"], Any]
Text = str | Callable[["Context"], str]
View = TypeVar("View", bound=Callable[..., Any])
ATTRIBUTE = "taskplane_operation"


@dataclass(frozen=True)
class Reply:
    """One documented answer; ``schema=None`` means no body."""

    description: Text
    schema: Schema | None = ErrorResponse
    media_type: str = "application/json"
    headers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Param:
    name: str
    location: Literal["path", "query", "header"]
    schema: Schema
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Body:
    schema: Schema
    required: bool = True
    description: str = ""


@dataclass(frozen=True)
class Operation:
    operation_id: str
    summary: str
    responses: Mapping[int, Reply]
    params: tuple[Param, ...] = ()
    body: Body | None = None
    deprecated: bool = False
    description: str | None = None


@dataclass(frozen=True)
class Undocumented:
    """A route left out of the API document on purpose, and why."""

    reason: str


def operation(
    operation_id: str,
    summary: str,
    responses: Mapping[int, Reply],
    *,
    params: tuple[Param, ...] = (),
    body: Body | None = None,
    deprecated: bool = False,
    description: str | None = None,
) -> Callable[[View], View]:
    """Declare the view's operation; put it under the route decorator."""
    declared = Operation(operation_id, summary, responses, params, body, deprecated, description)

    def mark(view: View) -> View:
        setattr(view, ATTRIBUTE, declared)
        return view

    return mark


def undocumented(reason: str) -> Callable[[View], View]:
    """Keep the view's route out of the document (say why: it is not part of the API)."""

    def mark(view: View) -> View:
        setattr(view, ATTRIBUTE, Undocumented(reason))
        return view

    return mark


def declaration(view: Callable[..., Any]) -> Operation | Undocumented | None:
    """The view's declaration, through wrappers that keep ``__wrapped__`` (rate limits)."""
    seen: set[int] = set()
    current: Any = view
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = getattr(current, ATTRIBUTE, None)
        if found is not None:
            return found
        current = getattr(current, "__wrapped__", None)
    return None


# -- answers most operations share ---------------------------------------------------

RETRY_AFTER = {
    "description": "seconds to wait before trying again",
    "schema": {"type": "integer", "minimum": 0},
}
UNAVAILABLE = Reply(
    "the broker or job storage is unavailable (or the broker blocks publishers); "
    "nothing was done: try again after Retry-After seconds",
    headers={"Retry-After": {**RETRY_AFTER, "required": True}},
)


def _too_large(context: "Context") -> str:
    if context.max_body_bytes is None:
        return "the body is over the size limit"
    return f"the body is over {context.max_body_bytes:,} bytes (TASKPLANE_MAX_BODY_BYTES)"


# Answers of every operation that reads a JSON body (app/jsonbody.py).
BAD_BODY: Mapping[int, Reply] = {
    400: Reply("the body is not valid JSON, or nests too deeply"),
    413: Reply(_too_large),
    415: Reply("the body is not sent as application/json"),
    422: Reply("the body is JSON but not what this operation takes; details name each problem"),
}


def json_object(description: str) -> Reply:
    """An answer whose JSON object is described in prose (no model of its own)."""
    return Reply(description, {"type": "object"})
