"""The bench's CPU accounting from /proc: a group's CPU never falls between snapshots."""

import os
import subprocess
import sys
import time

from bench.cpu_account import cpu_seconds, snapshot

BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"


def test_a_child_that_exits_between_snapshots_still_counts():
    """A fork seen busy in the first snapshot and reaped before the second (as Redis's
    BGSAVE child is) moves its CPU to its parent's share instead of vanishing."""
    child = subprocess.Popen([sys.executable, "-c", BURN + "time.sleep(5)"])
    try:
        deadline = time.monotonic() + 10
        while cpu_seconds(child.pid) < 0.25 and time.monotonic() < deadline:
            time.sleep(0.05)
        before = snapshot({"group": [os.getpid()]})
        assert before["group"] >= 0.25, before
    finally:
        child.kill()
        child.wait()
    after = snapshot({"group": [os.getpid()]})
    assert after["group"] >= before["group"], (before, after)


def test_a_gone_process_counts_nothing():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert cpu_seconds(child.pid) == 0.0
