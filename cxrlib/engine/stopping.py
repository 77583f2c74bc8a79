"""Stopping a run on request: SIGINT/SIGTERM let the step finish (``StopSignals``), and the warning that the
wall-clock cap ended a run before its step target (``WallClockCapWarning``). ``Trainer.fit`` uses both."""

from __future__ import annotations

import signal
import threading


class StopSignals:
    """While active (``with StopSignals() as stop``): SIGINT and SIGTERM only set ``stop.signum``, so the
    training loop can finish its step and checkpoint; a second one acts at once as the previous handler would.
    The previous handlers come back on exit. Outside the main thread (where Python cannot set handlers) it
    does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum, self._previous = None, {}

    def _handle(self, signum, frame):
        if self.signum is not None:  # asked twice: stop now
            self._restore()
            signal.raise_signal(signum)
            return
        self.signum = signum

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        self._restore()
        return False


class WallClockCapWarning(UserWarning):
    """``Trainer.fit`` stopped at its wall-clock cap before its step target: not the run the config describes."""
