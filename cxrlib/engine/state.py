"""What a run keeps, and starting from it: a trainer's checkpoint state (``state_dict`` / ``load_state_dict``:
weights, optimisers, counters, random streams, config), writing it (``save_checkpoint``), the run folder's own
files (``open_run``: ``config.json``, a resumed run's log cut back to its checkpoint, written once its lock is
held: ``claimed``), and the two
ways to go on from a checkpoint (``resume``, exactly; ``finetune``, the original project's second phase).
``Trainer``'s methods of the same names call these; the files themselves are read and written by
``cxrlib.engine.checkpoints``."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import torch

from cxrlib import config, distributed
from cxrlib.config import TrainConfig
from cxrlib.engine.checkpoints import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load_checkpoint, save_torch
from cxrlib.engine.rng import restore_streams, save_streams
from cxrlib.engine.stopping import flush_finite
from cxrlib.errors import CxrError
from cxrlib.files import atomic_write, claim_folder


# ------------------------------------------------------------------ the checkpoint's content
def state_dict(trainer) -> dict:
    """``Trainer.state_dict``: everything needed to continue exactly (weights, optimisers, counters, RNG states,
    config). The EMA generator's BatchNorm statistics are refreshed first (``cfg.ema_bn_refresh``), so a
    checkpoint samples as the trainer does; training continues exactly the same either way."""
    t = trainer
    flush_finite(t)
    t.refresh_ema_norm_stats()
    state = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": t.cfg.to_dict(),
        "step": t.step, "images_seen": t.images_seen, "seconds": float(t.seconds),
        "d_updates": t.d_updates, "lr_scale": t.lr_scale,
        "plateau": {"best": float(t.plateau["best"]), "bad": int(t.plateau["bad"])},
        "G": t.G.state_dict(), "D": t.D.state_dict(),
        "g_opt": t.g_opt.state_dict(), "d_opt": t.d_opt.state_dict(),
        "rng": save_streams(t.rng, t.global_rng, t.device, t.host_batches),
    }
    if t.world > 1:  # every process's random streams (rank 0's are also "rng")
        state["rng_ranks"] = distributed.gather_objects(state["rng"])
    if t.ema is not None:
        state["G_ema"] = t.ema.model.state_dict()
    if t.ada is not None:
        state["ada"] = {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v)
                        for k, v in t.ada.state_dict().items()}
    if t.dp is not None:  # DP-SGD's accountant and noise stream (cxrlib.gan.dp)
        state["dp"] = t.dp.state_dict()
    family_state = t.family.state_dict()  # e.g. CycleGAN's image pools
    if family_state:
        state["family"] = family_state
    return state


def load_state_dict(trainer, state: dict, optimizers: bool = True, rng: bool = True) -> None:
    """``Trainer.load_state_dict``: restore a ``state_dict()`` (weights always; optimiser moments, counters and
    RNG states unless told not)."""
    t = trainer
    if optimizers and "g_opt" not in state and "G" in state:
        raise CxrError("this checkpoint holds weights but no optimiser state (an exported generator, like the "
                       "shipped pretrained one), so it cannot be resumed exactly: start from it with "
                       "Trainer.finetune (or `python -m cxrlib finetune`), which begins with fresh Adam moments")
    try:
        t.G.load_state_dict(state["G"])
        t.D.load_state_dict(state["D"])
        if t.ema is not None:
            t.ema.model.load_state_dict(state.get("G_ema", state["G"]))
            t.ema.dirty = True  # an old checkpoint's statistics may be G's copies
        if optimizers:
            t.g_opt.load_state_dict(state["g_opt"])
            t.d_opt.load_state_dict(state["d_opt"])
    except (RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0][:160]
        raise CxrError(f"checkpoint does not fit the {t.cfg.family} {t.cfg.preset!r} {t.cfg.size}px "
                       f"networks: {first}") from None
    if optimizers:
        t.step, t.images_seen = int(state["step"]), int(state["images_seen"])
        t.seconds, t.d_updates = float(state["seconds"]), int(state["d_updates"])
        t.lr_scale = float(state.get("lr_scale", 1.0))
        t.plateau = dict(state.get("plateau", {"best": math.inf, "bad": 0}))
        if t.ada is not None and "ada" in state:
            t.ada.load_state_dict(state["ada"])
        if (t.dp is None) != ("dp" not in state):
            raise CxrError("this checkpoint was trained with DP-SGD: resume it with its dp_epsilon" if t.dp is None else
                           "this checkpoint was trained without DP-SGD: a private run cannot continue it")
        if t.dp is not None:
            t.dp.load_state_dict(state["dp"])
    if optimizers and "family" in state:
        t.family.load_state_dict(state["family"])
    t.lr_decay = t.lr_decay_factor()
    t.set_lr_scale(t.lr_scale)  # the config is the truth for lr and betas
    if rng:  # the trainer's streams continue exactly (or start afresh, with a notice, when they cannot)
        t.global_rng = restore_streams(state, t.rng, t.global_rng, t.host_batches, t.device, seed=t.cfg.seed,
                                       step=t.step, rank=t.rank, world=t.world, writer=t.writer, stacklevel=4)


def save_checkpoint(trainer, path=None, periodic: bool = False) -> Path:
    """``Trainer.save_checkpoint``: the state to ``path`` (default ``RUN/checkpoints/last.pt``; ``periodic`` also
    keeps ``step_XXXXXX.pt``), atomically: a temporary file in the same folder, then a rename."""
    t = trainer
    state = state_dict(t)  # with several processes: every one calls this (it gathers their streams)
    if not t.writer:
        return Path(path) if path is not None else t.out / "checkpoints" / "last.pt"
    if path is None:
        if t.out is None:
            raise CxrError("save_checkpoint needs a path (this trainer has no run directory)")
        open_run(t)
        folder = t.out / "checkpoints"
        if periodic:
            atomic_write(folder / f"step_{t.step:06d}.pt", lambda tmp: save_torch(state, tmp))
        path = folder / "last.pt"
        if t.dp is not None:  # config.json's ε spent is the checkpoint's
            write_config(t)
    return atomic_write(path, lambda tmp: save_torch(state, tmp))


# ------------------------------------------------------------------ the run folder
@contextlib.contextmanager
def claimed(out, writer: bool, world: int):
    """Hold the run folder's lock (``RUN/.lock``, ``cxrlib.files.claim_folder``) while the block runs: rank 0
    claims and every process learns the outcome, so a refusal (``CxrError``, one line) stops them all.
    out None: nothing to claim."""
    with contextlib.ExitStack() as held:
        if out is not None:
            refused = None
            if writer:
                try:
                    held.enter_context(claim_folder(out))
                except CxrError as e:
                    refused = str(e)
            if world > 1:
                refused = distributed.broadcast_object(refused)
            if refused is not None:
                raise CxrError(refused)
        yield


def open_run(trainer) -> None:
    """The trainer's first write into its run folder: ``config.json``, and for a resumed run the log cut back to
    its checkpoint (a killed run logged past it). ``fit`` calls it once it holds the folder's lock (``claimed``),
    and so do ``log``, ``adapt_lr`` and ``save_checkpoint`` / ``save_samples`` into the folder when called outside
    ``fit``; it acts once. Nothing is written at construction, so a trainer pointed at the folder of a run that is still
    going (another process holds its lock) changes none of its files: its ``fit`` is refused first."""
    t = trainer
    if t.out is None or not t.writer or t.run_opened:
        return
    t.run_opened = True
    write_config(t)
    log = t.out / "log.jsonl"
    if t.resumed_at is None or not log.exists():
        return
    keep = []
    for line in log.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= t.resumed_at:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by the kill
    atomic_write(log, lambda tmp: tmp.write_text("".join(k + "\n" for k in keep)))


def write_config(trainer) -> None:
    """``RUN/config.json``: the run's config, and for a DP-SGD run its ``"privacy"`` record (ε spent so far, δ, σ, C,
    q, D steps; ``cxrlib.gan.dp.PrivacyAccount.record``), rewritten with every checkpoint."""
    t = trainer
    record = t.cfg.to_dict()
    if t.dp is not None:
        record["privacy"] = t.dp.record()
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(t.out / "config.json", lambda tmp: tmp.write_text(text))


# ------------------------------------------------------------------ going on from a checkpoint
def resume(cls, src, data, out=None, callbacks=(), **overrides):
    """``Trainer.resume``: a trainer of class ``cls`` that continues ``src``'s run exactly."""
    src = Path(src)
    ckpt = src / "checkpoints" / "last.pt" if src.is_dir() else src
    state = load_checkpoint(ckpt)
    cfg = TrainConfig.from_dict(state["config"]).replace(**overrides)
    if out is None:
        out = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None
    trainer = cls(cfg, data, out=out, callbacks=callbacks)
    trainer.load_state_dict(state)
    trainer.resumed_at = trainer.step  # open_run cuts the log back to this step (after claiming the folder)
    return trainer


def finetune(cls, ckpt, data, out=None, *, lr_scale: float = 0.5, d_lr_scale: float = 1.0,
             betas: tuple[float, float] = (0.0, 0.99), adaptive: bool = False, steps: int | None = None,
             minutes: float | None = None, callbacks=(), **overrides):
    """``Trainer.finetune``: a trainer of class ``cls`` that starts from ``ckpt``'s weights with the second
    phase's learning rates, betas and EMA (see ``Trainer.finetune``)."""
    state = ckpt if isinstance(ckpt, dict) else load_checkpoint(ckpt)
    base = TrainConfig.from_dict(state["config"])
    if base.dp_epsilon is not None or overrides.get("dp_epsilon") is not None:
        raise CxrError("fine-tuning cannot be made private here: a new phase on the same patients spends more of their "
                       "privacy than its own accountant would count; train a DP-SGD run with more steps instead")
    half_life = base.ema_half_life_kimg or base.batch * math.log(0.5) / math.log(0.999) / 1000
    start = int(state["step"])
    changes = dict(g_lr=base.g_lr * lr_scale, d_lr=base.d_lr * d_lr_scale, g_betas=tuple(betas),
                   d_betas=tuple(betas), ema_half_life_kimg=half_life, adaptive_lr=adaptive)
    if steps is None and minutes is None:
        steps = config.budget().steps
    changes.update(steps=None if steps is None else start + int(steps), minutes=minutes)
    cfg = base.replace(**{**changes, **overrides})
    trainer = cls(cfg, data, out=out, callbacks=callbacks)
    trainer.load_state_dict(state, optimizers=False, rng=False)  # G_ema, or G when the run had no EMA
    trainer.step, trainer.images_seen = start, int(state["images_seen"])
    trainer.d_updates = int(state["d_updates"])
    trainer.seconds = 0.0  # the fine-tuning's own clock: cfg.minutes caps this phase, not the whole history
    if trainer.ada is not None and "ada" in state:  # D keeps the augmentation strength it had learned under
        trainer.ada.load_state_dict(state["ada"])
    return trainer
