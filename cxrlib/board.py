"""A run in TensorBoard: a ``Trainer`` callback writing what ``log.jsonl`` holds, and the fixed-z sample grids.

    trainer = Trainer(cfg, data, out="runs/a", callbacks=[TensorBoard("runs/a")])    # in a notebook
    python -m cxrlib train --data phantom --out runs/a --tensorboard                   # the same from the CLI
    %load_ext tensorboard
    %tensorboard --logdir runs                                                        # every run under runs/

``tensorboard`` is an optional extra (``pip install "cxrlib[tensorboard]"``); the writer is PyTorch's own
``torch.utils.tensorboard.SummaryWriter``. The events file goes into the run folder itself, so each run is one line
in TensorBoard, named by its folder.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import torch

from cxrlib.errors import CxrError

INSTALL_HINT = 'TensorBoard logging needs the tensorboard package: pip install "cxrlib[tensorboard]"'

#: log.jsonl's keys → TensorBoard tags (TensorBoard's tags allow letters, digits, ``_ - . /``: no ``D(x)``)
TAGS = {
    "d_loss": "loss/D", "g_loss": "loss/G", "d_loss_real": "loss/D_real", "d_loss_fake": "loss/D_fake",
    "D(x)": "D_output/real_Dx", "D(G(z))": "D_output/fake_DGz",
    "aug_p": "ada/p", "g_lr": "lr/G", "d_lr": "lr/D",
    "g_grad_norm": "grad_norm/G", "d_grad_norm": "grad_norm/D", "r1": "regulariser/r1", "r2": "regulariser/r2",
    "gp": "regulariser/gp",
    "images_per_s": "speed/images_per_s",
}  # fmt: skip
#: keys of a log record that are the x-axis or bookkeeping, not curves
NOT_CURVES = ("step", "images_seen", "seconds")


def check_installed() -> None:
    """A ``CxrError`` with the one line to install it, when ``tensorboard`` is missing."""
    from importlib.util import find_spec

    if find_spec("tensorboard") is None:
        raise CxrError(INSTALL_HINT)


def tag(key: str) -> str:
    """The TensorBoard tag of a log record's key: ``TAGS``, else ``stats/<key>`` with other characters as ``_``
    (a family's own statistics, e.g. pix2pix's ``l1``, cyclegan's cycle losses)."""
    return TAGS.get(key) or "stats/" + re.sub(r"[^\w.\-/]", "_", key)


class TensorBoard:
    """``Trainer`` callback: every log record's numbers as scalars (losses, D outputs D(x) and D(G(z)), ADA's p,
    learning rates, gradient norms, regularisers, a family's own statistics) at its step, and the fixed-z sample
    grid whenever the trainer saves it (``on_samples``: the very grid of ``RUN/samples/step_XXXXXX.png``, every
    ``cfg.sample_every`` steps and at the end; no second pass of G, so a run is the same with or without it).

    log_dir: where the events file goes (the run folder, so ``%tensorboard --logdir runs`` lists the run by name).
    Only the process that writes the run's files writes (torchrun: rank 0). The writer opens at the first record or grid;
    a resumed run hides the events the interrupted one wrote from that step on (``purge_step``), so the curves do not
    double back. Flushed at every record; ``close()`` when done (the CLI does).
    """

    def __init__(self, log_dir: str | os.PathLike, *, images: bool = True):
        check_installed()
        self.log_dir, self.images = Path(log_dir), images
        self.writer = None
        self._last_grid: int | None = None

    def _open(self, step: int) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.log_dir), purge_step=step)

    def __call__(self, trainer, record: dict) -> None:
        if not trainer.writer:
            return
        step = int(record["step"])
        self._open(step)
        for key, value in record.items():
            if key not in NOT_CURVES and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(tag(key), value, step)
        self.writer.flush()

    def on_samples(self, trainer, step: int, grid: torch.Tensor, nrow: int) -> None:
        """``Trainer.save_samples``' hook: the grid it has just drawn (float in [-1, 1], ``nrow`` per row) as the
        image ``samples`` at ``step`` (once per step: the end of a run may save the last grid again)."""
        if not (trainer.writer and self.images) or step == self._last_grid:
            return
        self._open(step)
        self.add_grid(trainer, step, grid, nrow)
        self.writer.flush()

    @torch.no_grad()
    def add_grid(self, trainer, step: int, grid: torch.Tensor | None = None, nrow: int | None = None) -> None:
        """A sample grid as the image ``samples`` at ``step``: ``grid`` (with ``nrow``), else the fixed-z grid drawn
        now (``trainer.family.sample_grid()``, another pass of G)."""
        from torchvision.utils import make_grid

        from cxrlib.images import to_uint8

        if grid is None:
            grid, nrow = trainer.family.sample_grid()
        image = make_grid(to_uint8(grid).float().cpu() / 255, nrow=nrow, padding=2)
        self.writer.add_image("samples", image, step)
        self._last_grid = step

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
