"""Errors meant for people: one line that names the file (when there is one) and the reason."""

from __future__ import annotations


class CxrError(ValueError):
    """Any error cxrlib reports to a user; the CLI prints ``error: <message>`` and exits with status 2."""


class ImageReadError(CxrError):
    """A file that cannot be read as an image: ``cannot read '<path>': <reason>``."""

    def __init__(self, path, reason: str, hint: str | None = "skip it with on_error='skip'"):
        self.path = str(path)
        self.reason = reason
        msg = f"cannot read '{self.path}': {reason}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class TrainingStopped(KeyboardInterrupt):
    """``Trainer.fit`` stopped by SIGINT or SIGTERM after finishing its step and writing a checkpoint.

    A ``KeyboardInterrupt`` (code that stops on Ctrl-C still does); ``signal``: the signal's number, ``step``:
    the step reached, ``checkpoint``: the file written (None without a run directory), ``exit_status``: the
    shell's convention, 128 + the signal (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int, step: int, checkpoint=None):
        import signal

        self.signal, self.step, self.checkpoint = int(signum), int(step), checkpoint
        self.exit_status = 128 + self.signal
        name = signal.Signals(self.signal).name
        where = (f"checkpoint {checkpoint} (continue with --resume)" if checkpoint is not None
                 else "no run directory, nothing written")
        super().__init__(f"stopped by {name} at step {self.step}: {where}")
