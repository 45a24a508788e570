"""JSON Schemas of the API that depend on what this process runs, or on another module's limits.

Each reads its facts from their owner: the job types from the registry of
this environment, the envelope (``delay_s``, ``run_at``) from the submission
core's ``JobEnvelope`` and ``MAX_DELAY_S``, the batch size from ``MAX_BATCH``,
the Idempotency-Key characters from app/submit.py. They are builders, called
by app/openapi.py with its ``Context`` while it assembles the document.
"""

from copy import deepcopy
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from app.submit import IDEMPOTENCY_KEY_CHARS, IDEMPOTENCY_KEY_MAX_LENGTH
from tasks.core.registry import JobType
from tasks.core.submission import MAX_BATCH, MAX_DELAY_S, JobEnvelope

if TYPE_CHECKING:
    from app.openapi import Context


def submission(context: "Context") -> dict[str, Any]:
    """``POST /jobs`` and each item of a batch: one schema per job type, told apart by ``type``."""
    envelope = JobEnvelope.model_json_schema(mode="validation")
    mapping = {}
    for job_type in context.job_types.values():
        payload = context.resolve(job_type.payload_model, mode="validation")
        name = f"Submit_{job_type.name.replace('.', '_')}"
        schema = _submission(job_type, envelope, payload)
        mapping[job_type.name] = context.component(name, schema)["$ref"]
    return {
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "type", "mapping": mapping},
    }


def _submission(
    job_type: JobType, envelope: dict[str, Any], payload: dict[str, Any]
) -> dict[str, Any]:
    fields = envelope["properties"]
    run_at = deepcopy(fields["run_at"])
    run_at["description"] = (
        f"{run_at.get('description', '')}. Times more than {MAX_DELAY_S:,} s (MAX_DELAY_S) "
        "after the server's clock are refused (422); JSON Schema cannot bound a time "
        "relative to now, so x-max-seconds-ahead states it"
    )
    run_at["x-max-seconds-ahead"] = MAX_DELAY_S
    # "payload" may be left out (it defaults to {}) only when nothing in it is required.
    required = [*envelope["required"], *([] if accepts_empty(job_type) else ["payload"])]
    return {
        "type": "object",
        "title": f"Submit {job_type.name}",
        "description": job_type.description,
        "additionalProperties": envelope["additionalProperties"],
        "required": required,
        "properties": {
            "type": {"const": job_type.name, "description": fields["type"]["description"]},
            "payload": payload,
            "delay_s": deepcopy(fields["delay_s"]),
            "run_at": run_at,
            "tags": deepcopy(fields["tags"]),
            "callback_url": deepcopy(fields["callback_url"]),
        },
        # JobEnvelope's own rule (a model validator, so not in its schema):
        # at most one of the two may be given a value.
        "not": {
            "required": ["delay_s", "run_at"],
            "properties": {
                "delay_s": {"not": {"type": "null"}},
                "run_at": {"not": {"type": "null"}},
            },
        },
    }


def accepts_empty(job_type: JobType) -> bool:
    try:
        job_type.payload_model.model_validate({})
    except ValidationError:
        return False
    return True


def batch(context: "Context") -> dict[str, Any]:
    """``POST /jobs/batch``: 1 to ``MAX_BATCH`` submissions, all accepted or none."""
    return {
        "type": "object",
        "required": ["jobs"],
        "additionalProperties": False,
        "properties": {
            "jobs": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH,
                "items": submission(context),
            }
        },
    }


def queue_name(context: "Context") -> dict[str, Any]:
    """A queue of this environment (what ``known_queue`` accepts)."""
    return {"type": "string", "enum": list(context.queues)}


def idempotency_key_pattern() -> str:
    """The ECMA-262 pattern of a key app/submit.py accepts, built from its character set."""
    codes = sorted(ord(c) for c in IDEMPOTENCY_KEY_CHARS)
    ranges: list[tuple[int, int]] = []
    for code in codes:
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    chars = "".join(
        f"\\x{low:02x}" if low == high else f"\\x{low:02x}-\\x{high:02x}" for low, high in ranges
    )
    return f"^[{chars}]{{1,{IDEMPOTENCY_KEY_MAX_LENGTH}}}$"


IDEMPOTENCY_KEY: dict[str, Any] = {"type": "string", "pattern": idempotency_key_pattern()}
