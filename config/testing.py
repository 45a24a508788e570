"""Testing: real services, short backoffs so retry paths run in seconds."""

from celeryconfig import *  # noqa: F403

taskplane_environment = "testing"
# Retries still go through the broker with real delays, only shorter.
taskplane_backoff_scale = 0.05
# Finished records need not outlive a test run.
result_expires = 3600
