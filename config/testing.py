"""Testing: real services, short backoffs so retry paths run in seconds."""

import os

from celeryconfig import *  # noqa: F403

taskplane_environment = "testing"
# Retries still go through the broker with real delays, only shorter.
taskplane_backoff_scale = 0.05
# Finished records need not outlive a test run.
result_expires = 3600
# Shared CI machines can stall a quorum queue's fsync for seconds while the
# fuzzer and the chaos suite load them; a 503 there is noise, not a finding.
# (A stopped broker still answers 503 at once: the connection is refused.)
# (The fault tests set TASKPLANE_CONFIRM_TIMEOUT_S to check the production bound.)
taskplane_confirm_timeout_s = float(os.environ.get("TASKPLANE_CONFIRM_TIMEOUT_S", "10"))
# A claim on an effect lapses 6 s after its performer died instead of 30 s,
# so the tests that kill a worker mid-effect wait seconds (renewal runs every 2 s).
taskplane_effect_lease_s = 6
