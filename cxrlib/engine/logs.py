"""A run's log: each step's statistics added to running sums that stay tensors on the device (``accumulate``: no
host synchronisation per step), and every ``log_every`` steps one record of their means (``log``: averaged over
the processes, appended to ``RUN/log.jsonl``, handed to the callbacks). ``Trainer.train_step`` and
``Trainer.log`` call them."""

from __future__ import annotations

import json
import math

import torch

from cxrlib import distributed
from cxrlib.engine.state import open_run
from cxrlib.engine.stopping import flush_finite


def accumulate(trainer, stats: dict) -> None:
    """Add one step's statistics (those of ``trainer.logged_stats``; missing ones as 0) to the running sums, and
    keep the latest R1/R2 penalties (they are computed only on the lazy steps)."""
    t = trainer
    row = torch.stack([stats[k].detach().float().reshape(()) if k in stats else torch.zeros((), device=t.device)
                       for k in t.logged_stats])
    t._sums = row if t._sums is None else t._sums + row
    t._n_summed += 1
    for k in ("r1", "r2"):
        if k in stats:
            setattr(t, f"_last_{k}", stats[k])


def log(trainer, now: float) -> dict:
    """``Trainer.log``: the record of the steps since the last one (means of the sums, counters, time, ADA's p,
    learning rates, throughput), appended to ``log.jsonl`` by the writing process and passed to the callbacks.
    now: the trainer's clock (``time.perf_counter()``), which ``trainer.seconds`` counts by."""
    t = trainer
    flush_finite(t)
    t.seconds = now - getattr(t, "_clock", now - t.seconds)
    t_prev, seen_prev = t._last_log or (now, t.images_seen)
    sums = t._sums
    if t.world > 1:  # every process logs at the same steps: average the statistics over them
        sums = distributed.all_mean(sums if sums is not None else torch.full((len(t.logged_stats),), math.nan))
    means = (sums / max(1, t._n_summed)).tolist() if sums is not None else [math.nan] * len(t.logged_stats)
    record = {"step": t.step, "images_seen": t.images_seen, "seconds": round(t.seconds, 3)}
    record.update({k: float(v) for k, v in zip(t.logged_stats, means)})
    for k in ("r1", "r2"):
        if getattr(t.cfg, f"{k}_gamma") > 0 and hasattr(t, f"_last_{k}"):
            record[k] = float(getattr(t, f"_last_{k}"))
    record["aug_p"] = float(t.aug_p)
    if t.dp is not None:  # DP-SGD: the privacy spent so far (cxrlib.gan.dp)
        record["epsilon"] = t.dp.spent()
    record["g_lr"] = t.g_opt.param_groups[0]["lr"]
    record["d_lr"] = t.d_opt.param_groups[0]["lr"]
    record["images_per_s"] = round((t.images_seen - seen_prev) / max(now - t_prev, 1e-9), 2)
    t._sums, t._n_summed, t._last_log = None, 0, (now, t.images_seen)
    if t.out is not None and t.writer:
        open_run(t)
        t.out.mkdir(parents=True, exist_ok=True)
        with open(t.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
    for cb in t.callbacks:
        cb(t, record)
    return record
