"""SIGINT/SIGTERM while ``run``/``rotate`` serve in the main thread: a graceful stop.

The handlers are installed *before* the engine boots, so a signal that
arrives while it boots (or just after, before anything else runs) is not
lost to the default action; it stops the engine as soon as there is one.
A second signal during the graceful stop stops at once: what is still
unsent is dropped (and logged), and ``run()`` then raises so that the
program's exit status says so.  The previous handlers come back on exit.
"""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import Engine

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopOnSignals:
    """A context manager; ``attach(engine)`` once there is an engine to stop."""

    def __init__(self) -> None:
        self._engine: Engine | None = None
        self._received: int | None = None
        self._forced: int | None = None  # the second signal, which cut the stop short
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def attach(self, engine: Engine) -> None:
        self._engine = engine
        received, self._received = self._received, None
        if received is not None:
            self._on_signal(received, None)

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self._engine is None:
            self._received = signum
        elif self._received is None:
            self._received = signum
            self._engine.request_stop(reason=f"{name} received")
        else:
            # A second signal during the graceful stop: stop at once.
            self._forced = signum
            self._engine.request_stop(0, reason=f"{name} received again")

    def raise_if_forced(self) -> None:
        """After the stop: a second signal dropped unsent output; don't let the program exit 0."""
        if self._forced == signal.SIGINT:
            raise KeyboardInterrupt
        if self._forced is not None:
            raise SystemExit(128 + self._forced)
