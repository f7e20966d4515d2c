"""A wall-clock deadline for Python code that may never return (a plugin sleeping or spinning).

``deadline`` uses ``SIGALRM``: the signal interrupts the main thread between two Python
bytecodes, so code stuck in one long C call (a huge torch kernel) is interrupted only when that
call returns to Python.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

#: After the deadline passes, the alarm fires again this often, so that code that catches
#: ``Timeout`` and carries on is interrupted again.
REPEAT_S = 1.0


class Timeout(BaseException):
    """The deadline passed. A BaseException, so that a plugin's ``except Exception`` lets it by."""


def _usable() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextmanager
def deadline(seconds: float | None, what: str) -> Iterator[None]:
    """Raise ``Timeout(f"{what} timed out after {seconds:g} s")`` in the body once it has run
    ``seconds``, and again every second until the body gives up.

    Works only on the main thread of the main interpreter of a POSIX system; elsewhere (another
    thread, a subinterpreter, Windows) and with ``seconds=None`` it is a no-op and the body runs
    unbounded. Deadlines nest: the previous ``SIGALRM`` handler and timer are restored on exit.
    """
    if seconds is not None and seconds <= 0:
        raise ValueError(f"{what}: a deadline must be positive (got {seconds:g} s)")
    if seconds is None or not _usable():
        yield
        return
    message = f"{what} timed out after {seconds:g} s"
    end = time.monotonic() + seconds

    def expire(signum, frame):
        if time.monotonic() >= end:
            raise Timeout(message)
        if callable(previous):  # an enclosing deadline's time came first: its handler decides
            previous(signum, frame)

    previous = _install(expire)
    if previous is _UNUSABLE:
        yield
        return
    outer_delay, outer_repeat, started = 0.0, 0.0, time.monotonic()
    try:
        outer_delay, outer_repeat = signal.setitimer(signal.ITIMER_REAL, seconds, REPEAT_S)
        if 0 < outer_delay < seconds:
            signal.setitimer(signal.ITIMER_REAL, outer_delay, REPEAT_S)
        yield
    finally:
        _restore(previous, outer_delay, outer_repeat, started)


_UNUSABLE = object()


def _install(handler):
    try:
        return signal.signal(signal.SIGALRM, handler)
    except ValueError:  # not the main interpreter
        return _UNUSABLE


def _restore(handler, outer_delay: float, outer_repeat: float, started: float) -> None:
    """Disarm and put back the enclosing timer; an alarm landing meanwhile must not stop this."""
    while True:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL if handler is None else handler)
            if outer_delay > 0:
                left = outer_delay - (time.monotonic() - started)
                signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), outer_repeat)
            return
        except Timeout:
            continue
