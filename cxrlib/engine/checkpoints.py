"""Checkpoint files: reading them safely (``load_checkpoint``: weights only, one-line refusals), bringing an
older format up to date (``upgrade_checkpoint``), writing atomically (``save_torch`` under
``cxrlib.files.atomic_write``) and exporting a small shippable generator (``export_pretrained``).

What a checkpoint holds is ``cxrlib.engine.state.state_dict``'s business (``Trainer.state_dict``); this module only
moves files."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

from cxrlib.errors import CxrError
from cxrlib.files import atomic_write

CHECKPOINT_FORMAT = "cxrlib-gan-checkpoint"
CHECKPOINT_VERSION = 2  # 2: the course networks lost spectral norm, BatchNorm and skip outputs by default


def save_torch(obj, tmp: Path) -> None:
    """``torch.save`` to ``tmp`` and fsync it: the writer ``cxrlib.files.atomic_write`` calls before renaming."""
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())  # the rename must not overtake the data on a power cut


def load_checkpoint(path) -> dict:
    """Read a checkpoint safely (``torch.load(weights_only=True)``: tensors and plain containers only).

    A file with Python objects in it (which could run code when unpickled) or a file that is not a cxrlib
    checkpoint raises ``CxrError`` with one line naming the file. The names ``"pretrained"`` and
    ``"pretrained-conditional"`` (when no such file or folder exists here) mean the checkpoints shipped with
    cxrlib (``cxrlib.assets.SHIPPED``).
    """
    from cxrlib import assets

    path = Path(path)
    if str(path) in assets.SHIPPED and not path.exists():
        name, shipped = str(path), assets.shipped_path(str(path))
        found = assets.pretrained_checkpoint(name=name)
        if found is None:
            why = "its sha256 does not match" if shipped.is_file() else "it is not installed"
            raise CxrError(f"no {name} checkpoint: {why} ('{shipped}'; `make {name}` rebuilds it)")
        path = found
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise CxrError(f"no checkpoint at '{path}'")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        with open(path, "rb") as f:
            head = f.read(4)
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found or head[:1] == b"\x80" or head[:2] == b"PK":
            what = f"it would import {found.group(1)}" if found else "unsupported pickle content"
            raise CxrError(
                f"refusing to load '{path}': it contains Python objects, not just tensors ({what}; "
                "only load checkpoints you made or trust)"
            ) from None
        raise CxrError(f"'{path}' is not a cxrlib checkpoint (not a torch file)") from None
    except Exception as e:  # truncated zip, empty file, text, …
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise CxrError(f"'{path}' is not a cxrlib checkpoint (cannot read it: {reason})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CxrError(f"'{path}' is not a cxrlib checkpoint (no training state inside)")
    if not isinstance(state.get("config"), dict):  # the format marker but a damaged or hand-made file
        raise CxrError(f"'{path}' is an incomplete cxrlib checkpoint (no training config inside)")
    return upgrade_checkpoint(state)


def upgrade_checkpoint(state: dict) -> dict:
    """A checkpoint written before ``CHECKPOINT_VERSION`` 2 built the course networks with the old defaults
    (``models.LEGACY_NETWORKS``: spectral norm, BatchNorm, skip outputs); name them in its config, so it
    rebuilds the networks it was trained with and resumes, samples and fine-tunes as before."""
    from cxrlib import models

    cfg = state.get("config")
    if state.get("version", 1) < 2 and isinstance(cfg, dict) and cfg.get("preset") in models.LEGACY_NETWORKS:
        cfg["model_kwargs"] = {**models.LEGACY_NETWORKS[cfg["preset"]], **(cfg.get("model_kwargs") or {})}
    return state


def export_pretrained(ckpt, dst, discriminator: bool = True) -> str:
    """Write a small shippable checkpoint from a run: the EMA generator (as both G and G_ema, stored once; an
    image-to-image run, trained without EMA: its G) and D,
    in float16, with the config and counters (a DP-SGD run: its "privacy", the ε spent at δ), plus ``<dst>.sha256`` beside it — loadable by
    ``load_generator`` and ``Trainer.finetune`` (which starts fresh optimiser moments anyway).

    float16 halves the file (the course preset at 64 px: ~7 MB instead of ~18 MB with fp32 G, EMA-G and D);
    ``load_state_dict`` casts the weights back to float32. ``discriminator=False`` leaves D out (a translator
    that is only applied, like the shipped CycleGAN: ``load_generator`` works, fine-tuning from it does not)."""
    from cxrlib.assets import sha256
    from cxrlib.config import TrainConfig
    from cxrlib.engine.families import FAMILIES

    state = load_checkpoint(ckpt)
    family = FAMILIES.get(state["config"].get("family") or TrainConfig().family)  # none saved: the default's
    translator = family is not None and not family.draws_from_z  # trained without EMA: G itself is exported
    if "G_ema" not in state and not translator:
        raise CxrError(f"'{ckpt}' has no EMA generator to export (train with an EMA half-life > 0)")

    def half(weights: dict) -> dict:
        return {k: (v.half() if v.is_floating_point() else v) for k, v in weights.items()}

    g = half(state["G_ema"] if "G_ema" in state else state["G"])
    small = {k: state[k] for k in ("format", "version", "config", "step", "images_seen", "seconds", "d_updates")}
    small.update(G=g, **({"D": half(state["D"])} if discriminator else {}), **({"G_ema": g} if "G_ema" in state else {}))
    if "dp" in state:  # a private run: the guarantee travels with the weights (not the accountant's secret streams)
        from cxrlib.gan.dp import epsilon_spent

        dp = state["dp"]
        small["privacy"] = {"epsilon_spent": epsilon_spent(dp["history"], dp["delta"]), "delta": dp["delta"],
                            "d_steps": sum(int(h[2]) for h in dp["history"])}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dst, lambda tmp: save_torch(small, tmp))
    digest = sha256(dst)
    atomic_write(dst.with_suffix(".sha256"), lambda tmp: tmp.write_text(f"{digest}  {dst.name}\n"))
    return f"wrote '{dst}' ({dst.stat().st_size / 1e6:.1f} MB, step {small['step']}, sha256 {digest[:12]}…)"
