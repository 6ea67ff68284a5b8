"""Signals that should clean up, not just kill: SIGTERM and SIGHUP become an exception.

By default SIGTERM (``kill PID``, a batch scheduler's timeout) and SIGHUP (a closed terminal or
SSH session) end a Python process at once: no ``finally`` block runs, so a half-written output
or a 2.5 GB temporary conversion directory stays behind. SIGINT (Ctrl-C) already raises
:class:`KeyboardInterrupt`.

:func:`terminate_on_signals` makes SIGTERM and SIGHUP raise :class:`lensmap.errors.Terminated`
(a ``BaseException``, like ``KeyboardInterrupt``) while it is active, so cleanup code runs;
:func:`deferred_signals` holds SIGINT, SIGTERM and SIGHUP back during a short critical section
(the renames that publish an output directory) and acts on them right after it.

Python delivers signals to the main thread only, so both are no-ops in any other thread.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

from lensmap.errors import Terminated

__all__ = ["TERMINATING_SIGNALS", "terminate_on_signals", "deferred_signals"]

#: The signals :func:`terminate_on_signals` turns into :class:`Terminated`.
TERMINATING_SIGNALS: tuple[int, ...] = tuple(
    s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None
)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[None]:
    """While active, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread.

    A signal is taken over only if its handler is the default one (``SIG_DFL``): an ignored
    SIGHUP (``nohup lensmap ...``) stays ignored and a handler the host program installed stays
    in charge. The previous handlers are restored on exit, also when the block raises. Nesting
    is fine. Outside the main thread this does nothing (Python cannot install handlers there).

    The CLI catches :class:`Terminated` and exits with ``error.exit_code`` (143 for SIGTERM,
    129 for SIGHUP), as the shell would report a death by that signal.
    """
    if not _in_main_thread():
        yield
        return
    previous: dict[int, Any] = {}
    try:
        for signum in TERMINATING_SIGNALS:
            if signal.getsignal(signum) is signal.SIG_DFL:
                previous[signum] = signal.signal(signum, _raise_terminated)
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP until the block ends, then act on the first one that came.

    For short critical sections only (renaming finished files into place): a signal arriving
    inside the block is recorded, the block completes, the previous handlers come back, and the
    signal is then handled exactly as it would have been (``KeyboardInterrupt``,
    :class:`Terminated`, the host's own handler, or the default action, which ends the process).
    Ignored signals stay ignored. SIGKILL cannot be held by any process. No-op outside the
    main thread.
    """
    if not _in_main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        pending.append(signum)

    previous: dict[int, Any] = {}
    wanted = (signal.SIGINT, *TERMINATING_SIGNALS)
    try:
        for signum in wanted:
            handler = signal.getsignal(signum)
            if handler is None or handler is signal.SIG_IGN:
                continue
            previous[signum] = signal.signal(signum, hold)
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if pending:
            signum = pending[0]
            handler = previous[signum]
            if callable(handler):
                handler(signum, None)
            else:  # SIG_DFL: let the default action (termination) happen now
                os.kill(os.getpid(), signum)
