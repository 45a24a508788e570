import os
import signal
from pathlib import Path

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


def test_the_sent_events_thread_takes_no_signal_a_job_holds_back():
    """A process-directed signal goes to any thread that does not block it; the web's
    (and a retrying worker child's) task-sent thread must block them all."""
    from tasks.core.sent_events import SentEvents
    from tasks.factory import create_celery_app

    app = create_celery_app("testing", overrides={"broker_url": "amqp://guest:guest@127.0.0.1:9//"})
    events = SentEvents(app, app.publisher.alarm, "test")
    events.put([{"type": "task-sent", "uuid": "x"}])
    status = Path(f"/proc/self/task/{events._thread.native_id}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("SigBlk"))
    mask = int(line.split()[1], 16)
    for held in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1):
        assert mask & (1 << (held - 1)), f"the events thread takes {held.name}"
    events.close(0.1)


def test_a_thread_that_takes_signals_does_not_let_one_through():
    """A thread someone else started (an exporter, a client library) does not block
    the held signals; the kernel may hand it the signal, and Python would run the
    handler in the main thread at once unless the handler is held back too."""
    import threading

    stop = threading.Event()
    foreign = threading.Thread(target=stop.wait, daemon=True)
    # Started outside the block, so it inherits an empty mask.
    foreign.start()
    seen = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: seen.append("handled"))
    try:
        # Block it here so the kernel can only hand the signal to the foreign thread.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        try:
            with deferred_signals():
                os.kill(os.getpid(), signal.SIGUSR1)
                deadline = 50
                while deadline and not _pending_in_process(signal.SIGUSR1):
                    deadline -= 1
                    threading.Event().wait(0.01)
                seen.append("inside")
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
        seen.append("after")
    finally:
        signal.signal(signal.SIGUSR1, previous)
        stop.set()
    assert seen == ["inside", "handled", "after"]


def _pending_in_process(signum: int) -> bool:
    """True once no thread still has the signal pending, i.e. it has been taken."""
    status = Path("/proc/self/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("ShdPnd"))
    return not int(line.split()[1], 16) & (1 << (signum - 1))
