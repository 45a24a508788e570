"""The bytes of a JSON request body, the same wherever they are made.

webhook.deliver POSTs ``body_bytes(payload.body)``; a completion callback
(tasks/core/callbacks.py) signs ``body_bytes`` of the same body when it
submits the job. Both sides serialize the validated payload the same way, so
the bytes signed are the bytes sent, with no second, raw copy of the body in
the payload for a client to get wrong (or a schema to describe).
"""

import json
from typing import Any


def body_bytes(value: Any) -> bytes:
    """Compact JSON, non-ASCII escaped, keys in the order given; NaN and infinities refused."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
