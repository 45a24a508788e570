"""schemathesis hooks for tests/integration/test_fuzz_openapi.py (tests/schemathesis.toml loads it).

``run_at`` is refused when it is more than ``MAX_DELAY_S`` after the server's
clock: the document says so in words and as ``x-max-seconds-ahead``, but
JSON Schema cannot bound a time relative to now, so schemathesis would draw
any date-time and count the refusal of a far-future one as a disagreement.
Drawn within the bound instead (from a day ago, which runs at once, to a day
short of the bound, in assorted offsets), every check runs on POST /jobs and
on the batch, positive_data_acceptance and the stateful phase included.
"""

import re
from datetime import UTC, datetime, timedelta, timezone

import schemathesis
from hypothesis import strategies as st

from tasks.core.registry import JOB_TYPES
from tasks.core.submission import MAX_DELAY_S
from tasks.core.workflow_spec import STEP_ID_PATTERN

DAY_S = 24 * 3600


def _within_bound(offset_s: int, zone_minutes: int) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=offset_s)
    return moment.astimezone(timezone(timedelta(minutes=zone_minutes))).isoformat()


schemathesis.openapi.format(
    "date-time",
    st.builds(
        _within_bound,
        st.integers(-DAY_S, MAX_DELAY_S - DAY_S),
        st.sampled_from([0, 60, -300, 330, 840, -720]),
    ),
)


# A workflow has rules JSON Schema cannot state (tests/schemathesis.toml lists
# them): unique step ids, depends_on naming an earlier step, a payload that
# fits its step's job type (the step schema cannot say which, as a payload may
# hold references). A drawn list of steps seldom keeps them, so nearly every
# workflow was refused, which schemathesis reports as validation_mismatch. So
# drawn bodies are repaired on those rules, and only where the drawn value is
# schema-valid already (a negative case, drawn to break the schema, must stay
# broken): a duplicate valid id is renamed, a valid id in depends_on that names
# no earlier step is dropped, and a step of a valid type with an object payload
# becomes a diagnostics.echo of that payload (job payloads are fuzzed per type
# on POST /jobs). Everything else stays as drawn.
STEP_ID = re.compile(STEP_ID_PATTERN)
KNOWN_TYPES = frozenset(job_type.name for job_type in JOB_TYPES)


@schemathesis.hook
def map_body(ctx, body):  # noqa: ANN001, ANN201 - schemathesis hook signature
    operation = getattr(ctx, "operation", None)
    if (
        operation is None
        or str(getattr(operation, "method", "")).upper() != "POST"
        or getattr(operation, "path", "") != "/workflows"
        or not isinstance(body, dict)
        or not isinstance(body.get("steps"), list)
    ):
        return body
    seen: list[str] = []
    for index, step in enumerate(body["steps"]):
        if not isinstance(step, dict):
            continue
        if _valid_id(step.get("id")) and step["id"] in seen:
            step["id"] = f"s{index}x"
        if isinstance(step.get("depends_on"), list):
            step["depends_on"] = [d for d in step["depends_on"] if not _valid_id(d) or d in seen]
        if step.get("type") in KNOWN_TYPES and isinstance(step.get("payload"), dict):
            step["type"] = "diagnostics.echo"
            step["payload"] = {"data": step["payload"]}
        if isinstance(step.get("id"), str):
            seen.append(step["id"])
    return body


def _valid_id(value: object) -> bool:
    return isinstance(value, str) and bool(STEP_ID.match(value))
