"""A progress line that leaves a trace: live while a loop runs, its final state kept in a saved notebook.

In a Jupyter kernel a widget progress bar (tqdm's) is saved as its first frame ("0 %") or as ``HBox(…)``, and a
rendered or nbval copy shows that. Here the notebook gets one line of text, shown with a display id and updated in
place (at most every ``every`` seconds, and once at the end), so the saved copy holds the line as it ended:
``training: 80/80 steps · 63 s · d_loss 1.21 · g_loss 0.94``. In a terminal it is tqdm's text bar on stderr,
which stays on screen as the last line. Where stderr is not a terminal (CI, ``nohup``, SLURM, ``make demo > log``)
it is a plain line every 30 s and one at the end: tqdm's carriage-return redraws would make the log one long line.

    for x in progress(items, desc="toy grid"):
        ...
    bar = progress(total=80, desc="training", unit="steps"); bar.update(1); bar.set_postfix(d_loss="1.2"); bar.close()
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator


def in_notebook() -> bool:
    """True inside a Jupyter kernel (a notebook, nbval, nbconvert), False in a terminal or a script."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class _Line:
    """A progress line shown at most every ``every`` seconds and once at the end; the same calls as the tqdm
    methods used here (``update``, ``set_postfix``, ``close``, iteration). Subclasses say where it is shown."""

    def __init__(self, iterable, total, desc, unit, every):
        self.iterable, self.total, self.desc, self.unit, self.every = iterable, total, desc, unit, every
        self.n, self.postfix, self.start = 0, {}, time.perf_counter()
        self._shown, self._closed, self._last = self.start, False, None

    def _parts(self) -> list[str]:
        done = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        return [f"{self.desc}: {done} {self.unit}", f"{time.perf_counter() - self.start:.0f} s"]

    def _text(self) -> str:
        return " · ".join(self._parts() + [f"{k} {v}" for k, v in self.postfix.items()])

    def _show(self, text: str) -> None:
        raise NotImplementedError

    def _refresh(self, force: bool = False):
        now = time.perf_counter()
        if force or now - self._shown >= self.every:
            text = self._text()
            if text != self._last:  # a close right after a timed line says nothing new
                self._show(text)
                self._last = text
            self._shown = now

    def update(self, n: int = 1):
        self.n += n
        self._refresh()

    def set_postfix(self, **values):
        self.postfix = {k: v for k, v in values.items()}
        self._refresh()

    def close(self):
        if not self._closed:
            self._closed = True
            self._refresh(force=True)

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()


class _NotebookLine(_Line):
    """One text line in a notebook output, shown now and updated in place."""

    def __init__(self, iterable, total, desc, unit, every):
        from IPython.display import Pretty, display

        super().__init__(iterable, total, desc, unit, every)
        self._last = self._text()
        self._handle = display(Pretty(self._last), display_id=True)

    def _show(self, text: str) -> None:
        from IPython.display import Pretty

        self._handle.update(Pretty(text))


class _LogLine(_Line):
    """A log that is not a terminal (CI, ``nohup``, SLURM, a pipe): a plain line every ``every`` seconds and one at
    the end, with the share done, the rate and the time left, instead of tqdm's carriage-return redraws (which a
    file keeps as one ever longer line):
    ``training: 400/3000 steps (13 %) · 120 s · 3.33 steps/s · 780 s left · d_loss 1.210``."""

    def __init__(self, iterable, total, desc, unit, every, stream):
        super().__init__(iterable, total, desc, unit, every)
        self.stream = stream

    def _parts(self) -> list[str]:
        parts = super()._parts()
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f} %)"
        elapsed = time.perf_counter() - self.start
        if self.n and elapsed > 0:
            rate = self.n / elapsed
            parts.append(f"{rate:.3g} {self.unit}/s")
            if self.total and self.n < self.total:
                parts.append(f"{(self.total - self.n) / rate:.0f} s left")
        return parts

    def _show(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


def interactive(stream) -> bool:
    """True when ``stream`` is a terminal (where tqdm redraws its bar in place)."""
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             disable: bool = False, every: float = 0.5, log_every: float = 30.0):
    """Like ``tqdm(iterable, total=…, desc=…, unit=…)``; in a notebook its final line stays in the saved copy (updated
    every ``every`` s); where stderr is not a terminal, a plain line every ``log_every`` s and one at the end."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if not disable and in_notebook():
        return _NotebookLine(iterable, total, desc, unit, every)
    if not disable and not interactive(sys.stderr):
        if sys.stderr is None:  # pythonw: nowhere to write
            disable = True
        else:
            return _LogLine(iterable, total, desc, unit, log_every, sys.stderr)
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable)
