"""A progress line that leaves a trace: live while a loop runs, its final state kept in a saved notebook.

In a Jupyter kernel a widget progress bar (tqdm's) is saved as its first frame ("0 %") or as ``HBox(…)``, and a
rendered or nbval copy shows that. Here the notebook gets one line of text, shown with a display id and updated in
place (at most every ``every`` seconds, and once at the end), so the saved copy holds the line as it ended:
``training: 80/80 steps · 63 s · d_loss 1.21 · g_loss 0.94``. Outside a kernel it is tqdm's text bar on stderr,
which stays on screen as the last line.

    for x in progress(items, desc="toy grid"):
        ...
    bar = progress(total=80, desc="training", unit="steps"); bar.update(1); bar.set_postfix(d_loss="1.2"); bar.close()
"""

from __future__ import annotations

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


class _NotebookLine:
    """One text line in a notebook output, updated in place; same calls as the tqdm methods used here."""

    def __init__(self, iterable, total, desc, unit, every):
        from IPython.display import display

        self.iterable, self.total, self.desc, self.unit, self.every = iterable, total, desc, unit, every
        self.n, self.postfix, self.start = 0, {}, time.perf_counter()
        self._shown = self.start  # the first line is shown now, below
        self._handle = display(self._text(), display_id=True)

    def _text(self):
        from IPython.display import Pretty

        done = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        parts = [f"{self.desc}: {done} {self.unit}", f"{time.perf_counter() - self.start:.0f} s"]
        parts += [f"{k} {v}" for k, v in self.postfix.items()]
        return Pretty(" · ".join(parts))

    def _refresh(self, force: bool = False):
        now = time.perf_counter()
        if force or now - self._shown >= self.every:
            self._handle.update(self._text())
            self._shown = now

    def update(self, n: int = 1):
        self.n += n
        self._refresh()

    def set_postfix(self, **values):
        self.postfix = {k: v for k, v in values.items()}
        self._refresh()

    def close(self):
        self._refresh(force=True)

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             disable: bool = False, every: float = 0.5):
    """Like ``tqdm(iterable, total=…, desc=…, unit=…)``; in a notebook its final line stays in the saved copy."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if not disable and in_notebook():
        return _NotebookLine(iterable, total, desc, unit, every)
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable)
