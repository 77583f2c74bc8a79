"""Stopping a run: on request (SIGINT/SIGTERM let the step finish: ``StopSignals``), at its wall-clock cap
(``past_deadline``; ``WallClockCapWarning`` when that cut the run short), and when a loss turns NaN or infinite
(the asynchronous NaN guard: ``check_finite`` / ``flush_finite``). With several processes every decision is
taken by all of them together (``any_process``). ``Trainer.fit`` and ``Trainer.train_step`` use them."""

from __future__ import annotations

import os
import signal
import threading
import time

import torch

from cxrlib import distributed
from cxrlib.errors import CxrError


class StopSignals:
    """While active (``with StopSignals() as stop``): SIGINT and SIGTERM only set ``stop.signum``, so the
    training loop can finish its step and checkpoint; a second one acts at once as the previous handler would --
    except in a torchrun worker (``TORCHELASTIC_RUN_ID`` set), where a later one is the same request: SLURM
    signals every process of a job step and torchrun forwards its own copy to each worker, and torchrun ends a
    worker that outlasts its ``--shutdown_timeout`` itself. The previous handlers come back on exit. Outside the
    main thread (where Python cannot set handlers) it does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum, self._previous = None, {}

    def _handle(self, signum, frame):
        if self.signum is not None and "TORCHELASTIC_RUN_ID" not in os.environ:  # asked twice: stop now
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


def any_process(flag: bool, world: int) -> bool:
    """True when ``flag`` is true in any of the run's ``world`` processes (one small collective; alone: the flag)."""
    return distributed.any_true(flag)[0] if world > 1 else flag


def past_deadline(deadline: float | None, world: int, clock=time.perf_counter) -> bool:
    """Whether ``clock()`` has reached ``deadline`` (None: never) -- in any process, so all stop."""
    return deadline is not None and any_process(clock() >= deadline, world)


# ------------------------------------------------------------------ the NaN guard
def nan_error(trainer, step: int, stats: dict | None = None) -> CxrError:
    """The one-line error of a run whose loss became NaN or infinite at ``step`` (naming the checkpoint kept)."""
    values = ""
    if stats:
        values = ", ".join(f"{k}={float(stats[k]):.4g}" for k in ("d_loss", "g_loss") if k in stats) + "; "
    last = trainer.out / "checkpoints" / "last.pt" if trainer.out is not None else None
    keep = (f"the last good checkpoint '{last}' is kept" if last is not None and last.exists()
            else "no checkpoint was written")
    return CxrError(f"training diverged at step {step}: a loss is NaN or infinite ({values}{keep}; "
                    "try lower learning rates, amp='off' or r1_gamma > 0)")


def check_finite(trainer, stats: dict) -> None:
    """Stop within one step when a loss is NaN/Inf. On CUDA the check reads the previous step's flag, which the
    GPU has (almost always) finished, so the loop never waits for the current step; the flag of this step
    waits in ``trainer._pending_finite`` for ``flush_finite``."""
    t = trainer
    finite = torch.isfinite(torch.stack([stats["d_loss"].float(), stats["g_loss"].float()])).all()
    if t.world > 1:  # all processes stop together (their gradients are averaged: a NaN reaches all)
        if distributed.any_true(not bool(finite))[0]:
            raise nan_error(t, t.step, stats)
        return
    if t.device.type != "cuda":
        if not bool(finite):
            raise nan_error(t, t.step, stats)
        return
    flush_finite(t)
    with t.on_device():  # the event belongs to the training device's stream, not the current device's
        host = torch.empty((), dtype=torch.bool, pin_memory=True)
        host.copy_(finite, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(t.device))
    t._pending_finite = (t.step, host, event)


def flush_finite(trainer) -> None:
    """Wait for the pending CUDA flag of ``check_finite`` (if any) and raise when its step was not finite."""
    if trainer._pending_finite is not None:
        step, host, event = trainer._pending_finite
        trainer._pending_finite = None
        event.synchronize()
        if not bool(host):
            raise nan_error(trainer, step)
