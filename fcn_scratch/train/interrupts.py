"""Holding Ctrl-C back while the training state changes, so a checkpoint is never torn."""

import signal
import threading
from contextlib import contextmanager


@contextmanager
def deferred_interrupts():
    """Inside this block SIGINT is recorded instead of raised; on leaving it, a recorded
    SIGINT is delivered to the handler that was there before (by default: raise
    KeyboardInterrupt). Outside the main thread, where handlers cannot be set, a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if previous is signal.default_int_handler or previous is None:
                raise KeyboardInterrupt
            if callable(previous):
                previous(signal.SIGINT, received[0])
