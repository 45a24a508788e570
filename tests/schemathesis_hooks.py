"""schemathesis hooks for tests/integration/test_fuzz_openapi.py (tests/schemathesis.toml loads it).

``run_at`` is refused when it is more than ``MAX_DELAY_S`` after the server's
clock: the document says so in words and as ``x-max-seconds-ahead``, but
JSON Schema cannot bound a time relative to now, so schemathesis would draw
any date-time and count the refusal of a far-future one as a disagreement.
Drawn within the bound instead (from a day ago, which runs at once, to a day
short of the bound, in assorted offsets), every check runs on POST /jobs and
on the batch, positive_data_acceptance and the stateful phase included.
"""

from datetime import UTC, datetime, timedelta, timezone

import schemathesis
from hypothesis import strategies as st

from tasks.core.submission import MAX_DELAY_S

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
