import os
import signal

from tasks.runtime.effects import deferred_signals


def test_a_signal_sent_inside_the_block_is_handled_only_after_it():
    seen = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: seen.append("handled"))
    try:
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGUSR1)
            seen.append("inside")
        seen.append("after")
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert seen == ["inside", "handled", "after"]
