"""Drawing images from a generator: a trainer's (``generate``, ``sample``, ``save_samples`` and the EMA
generator's BatchNorm statistics, ``refresh_ema_norm_stats``: what ``Trainer``'s methods of those names do) or a
checkpoint's (``load_generator``: its G in eval mode, ``load_discriminator`` its D; ``write_samples``:
``python -m cxrlib sample``), and ``fixed_batches``, which makes an image's pixels independent of how many are
drawn at once."""

from __future__ import annotations

from pathlib import Path

import torch

from cxrlib import config
from cxrlib.conditional import class_labels
from cxrlib.config import TrainConfig
from cxrlib.engine.checkpoints import load_checkpoint
from cxrlib.engine.families import FAMILIES
from cxrlib.engine.hardware import amp_dtype
from cxrlib.errors import CxrError
from cxrlib.files import atomic_write
from cxrlib.images import to_uint8
from cxrlib.models import evaluating

SAMPLE_BATCH = 16  # rows per generator call when sampling (every call exactly this many: see fixed_batches)
EMA_NORM_BATCHES, EMA_NORM_BATCH = 4, 64  # 256 latents recompute the EMA generator's BatchNorm statistics


def fixed_batches(n: int, batch: int, *tensors):
    """Chunks of rows 0..n-1 of ``tensors`` (None entries pass through), each exactly ``batch`` rows: the last
    is padded by repeating its last row. Yields ``(start, rows, chunks)``; keep the first ``rows`` outputs.
    Every row is then computed in a call of the same shape, so its result does not depend on n: the CPU and
    GPU libraries pick other kernels for other batch sizes (batch 1 vs 5 differs by ~1e-6 on an AVX2 CPU,
    enough to flip a rounded grey level)."""
    for start in range(0, n, batch):
        chunks = [None if t is None else t[start:start + batch] for t in tensors]
        rows = min(batch, n - start)
        if rows < batch:
            chunks = [None if c is None else torch.cat([c, c[-1:].expand(batch - rows, *c.shape[1:])]) for c in chunks]
        yield start, rows, chunks


# ------------------------------------------------------------------ a trainer's generator
@torch.no_grad()
def generate(trainer, z: torch.Tensor, ema: bool = True, labels: torch.Tensor | None = None) -> torch.Tensor:
    """``Trainer.generate``: images of the trainer's EMA generator (or of G with ``ema=False`` or without EMA),
    eval mode. z: (B, z_dim) → (B, 1, S, S) float in [-1, 1] on the device; labels: (B,) classes for a
    conditional G (None: the classes in turn)."""
    t = trainer
    if ema and t.ema is not None:
        refresh_ema_norm_stats(t)
    G = t.ema.model if (ema and t.ema is not None) else t.G
    with evaluating(G), t.autocast():
        if labels is None:
            return G(z.to(t.device)).float()
        return G(z.to(t.device), labels.to(t.device)).float()


def refresh_ema_norm_stats(trainer, force: bool = False) -> None:
    """``Trainer.refresh_ema_norm_stats``: recompute the EMA generator's BatchNorm statistics for its averaged
    weights (``EMA.refresh_norm_stats``) when ``cfg.ema_bn_refresh`` and a G step changed the average since the
    last time, or now with ``force``. Training's random streams are untouched."""
    t = trainer
    if t.ema is None or not (force or (t.cfg.ema_bn_refresh and t.ema.dirty)):
        return
    with t.autocast():
        t.ema.refresh_norm_stats(t.z_dim, n_batches=EMA_NORM_BATCHES, batch=EMA_NORM_BATCH, device=t.device)


def sample(trainer, n: int, seed: int = 0, ema: bool = True, batch: int = SAMPLE_BATCH, label=None) -> torch.Tensor:
    """``Trainer.sample``: n images from z drawn with ``seed``, uint8 (n, 1, S, S) on the CPU; image i is always
    computed in a call of ``batch`` rows (``fixed_batches``), so it does not depend on n."""
    t = trainer
    if not t.family.draws_from_z:
        raise CxrError(f"a {t.cfg.family} generator translates images rather than drawing them from z: "
                       "use trainer.family.translate(x) or `python -m cxrlib translate`")
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, t.z_dim, generator=g)
    if n == 0:
        return torch.zeros((0, 1, t.cfg.size, t.cfg.size), dtype=torch.uint8)
    y = class_labels(t.cfg, label, n)
    return torch.cat([to_uint8(generate(t, zb, ema=ema, labels=yb)[:rows]).cpu()
                      for _, rows, (zb, yb) in fixed_batches(n, batch, z, y)])


def save_samples(trainer, path=None) -> Path:
    """``Trainer.save_samples``: the family's sample grid → ``RUN/samples/step_XXXXXX.png`` (or ``path``),
    atomically; callbacks with an ``on_samples`` method get the grid too."""
    from torchvision.utils import save_image

    from cxrlib.engine.state import open_run

    t = trainer
    if path is None:
        open_run(t)
    path = Path(path) if path is not None else t.out / "samples" / f"step_{t.step:06d}.png"
    grid, nrow = t.family.sample_grid()  # conditional: one row per class; image-to-image: strips
    for cb in t.callbacks:  # e.g. TensorBoard shows this very grid (no second pass of G)
        if hasattr(cb, "on_samples"):
            cb.on_samples(t, t.step, grid, nrow)
    grid = to_uint8(grid).float() / 255
    return atomic_write(path, lambda tmp: save_image(grid, tmp, nrow=nrow, padding=2, format="PNG"))


# ------------------------------------------------------------------ a checkpoint's generator
def load_generator(ckpt, ema: bool = True, device: str = "auto") -> tuple[torch.nn.Module, TrainConfig]:
    """The generator of a checkpoint (its EMA copy when present and ``ema``), in eval mode, and the config.

    ckpt: a checkpoint file or a run directory. G maps z: (B, G.z_dim) → (B, 1, S, S) in [-1, 1]."""
    state = load_checkpoint(ckpt)
    cfg = TrainConfig.from_dict(state["config"])
    G, _ = FAMILIES[cfg.family].build_models(cfg)
    weights = state["G_ema"] if (ema and "G_ema" in state) else state["G"]
    try:
        G.load_state_dict(weights)
    except RuntimeError as e:
        raise CxrError(f"'{ckpt}': generator weights do not fit its config ({str(e).splitlines()[0][:120]})") from None
    return G.to(config.get_device(device)).eval().requires_grad_(False), cfg


@torch.no_grad()
def draw_images(G, n: int, seed: int = 0, labels=None, batch: int = SAMPLE_BATCH) -> torch.Tensor:
    """n images of a loaded generator (``load_generator``), z drawn with ``seed`` → uint8 (n, 1, S, S) on the CPU,
    in calls of ``batch`` rows (``fixed_batches``). ``labels``: (n,) class indices for a conditional generator
    (without them it draws its classes in turn, as ``python -m cxrlib sample`` does)."""
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    device = next(G.parameters()).device
    return torch.cat([to_uint8((G(zb.to(device)) if yb is None else G(zb.to(device), yb.to(device)))[:rows].float())
                      .cpu() for _, rows, (zb, yb) in fixed_batches(n, batch, z, labels)])


def load_discriminator(ckpt, device: str = "auto") -> torch.nn.Module | None:
    """The discriminator of a checkpoint, in eval mode, or None when it holds none (an exported generator
    written with ``discriminator=False``). ckpt: a checkpoint file or a run directory; the D of an unconditional
    run maps x: (B, 1, S, S) in [-1, 1] → (B,) logits, a conditional run's (x, y) → (B,)."""
    state = load_checkpoint(ckpt)
    if "D" not in state:
        return None
    cfg = TrainConfig.from_dict(state["config"])
    _, D = FAMILIES[cfg.family].build_models(cfg)
    try:
        D.load_state_dict(state["D"])
    except RuntimeError as e:
        raise CxrError(f"'{ckpt}': discriminator weights do not fit its config ({str(e).splitlines()[0][:120]})") \
            from None
    return D.to(config.get_device(device)).eval().requires_grad_(False)


def write_samples(ckpt, n: int | None, out, seed: int = 0, ema: bool = True, batch: int = SAMPLE_BATCH, label=None,
                  per_class: int | None = None, truncation: float = 1.0, mix_seed: int | None = None,
                  mix_layers=None, steps: int | None = None) -> str:
    """Write n generated images as ``out/sample_XXXXX.png`` (each written to a temp name, then renamed).

    Conditional checkpoints: ``label`` (a class name or index) draws all n as that class; ``per_class`` N
    writes N of every class to ``out/<class>/sample_XXXXX.png`` (the same latents for each class, so file k
    of every folder is one z drawn as each class). Without either, the classes come in turn.
    Style generators (preset "style"): ``truncation`` ψ < 1 pulls every w toward the running mean of w;
    ``mix_seed`` K with ``mix_layers`` (e.g. "0-2"; default: the coarse layers) takes those layers' w from
    latent i of seed K for image i (style mixing). Either asked of a generator without a mapping network is a
    one-line error. Diffusion models (``cxrlib.diffusion``): ``steps`` K denoising (DDIM) steps instead of the
    model's own; a GAN, which draws an image in one pass, refuses it in one line.
    Returns a one-line summary. The same checkpoint and seed give the same images."""
    from PIL import Image

    from cxrlib.models import style

    if per_class is not None and label is not None:
        raise CxrError("give --class or --per-class, not both")
    count = per_class if per_class is not None else n
    if count is None or count < 1:
        raise CxrError(f"--{'per-class' if per_class is not None else 'n'} must be at least 1, got {count}")
    G, cfg = load_generator(ckpt, ema=ema)
    family = FAMILIES[cfg.family]
    if steps is not None:
        if not hasattr(G, "sampling_steps"):
            raise CxrError(f"--steps sets a diffusion model's denoising steps; '{ckpt}' holds a GAN ({cfg.family}), "
                           "whose generator draws an image in one pass: drop --steps")
        G.sampling_steps = steps
    if not family.draws_from_z:
        raise CxrError(f"'{ckpt}' is a {cfg.family} run, which translates images rather than drawing them: use "
                       "`python -m cxrlib translate --ckpt RUN --src DIR --dst DIR`")
    if per_class is not None and not family.takes_labels:
        raise CxrError("this generator is unconditional (trained without classes), so --per-class has no classes "
                       "to draw: train one with --conditional")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CxrError(f"cannot write samples into '{out}': it is a file, not a folder")
    jobs = ([(out / name, class_labels(cfg, k, count)) for k, name in enumerate(cfg.classes)]
            if per_class is not None else [(out, class_labels(cfg, label, count))])
    if mix_layers is not None and mix_seed is None:
        raise CxrError("--mix-layers needs --mix-seed K (the latents the mixed layers come from)")
    styled = truncation != 1 or mix_seed is not None
    if styled:
        net = style.style_network(G)  # a one-line error for a generator without a mapping network
        style.check_psi(truncation)
        mixed = style.parse_layers(mix_layers if mix_layers is not None else style.style_layer_groups(G)["coarse"],
                                   net.num_ws) if mix_seed is not None else []
    device = next(G.parameters()).device
    dtype = amp_dtype(cfg.amp, device)
    z_all = torch.randn(count, G.z_dim, generator=torch.Generator().manual_seed(seed))
    z_mix = torch.randn(count, G.z_dim, generator=torch.Generator().manual_seed(mix_seed)) if mix_seed is not None else None

    def draw(z, y, zm):
        if not styled:
            return G(z) if y is None else G(z, y)
        zs = [z] if zm is None else [z, zm.to(device)]
        if family.takes_labels:
            zs = [G.latent(zz, y) for zz in zs]
        ws = [net.ws(zz, truncation) for zz in zs]
        if len(ws) == 2:
            ws[0] = ws[0].clone()
            ws[0][:, mixed] = ws[1][:, mixed]
        return net.synthesis(ws[0])

    with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        for folder, y_all in jobs:
            folder.mkdir(parents=True, exist_ok=True)
            for i, rows, (z, y, zm) in fixed_batches(count, batch, z_all, y_all, z_mix):
                x = draw(z.to(device), None if y is None else y.to(device), zm)[:rows]
                for j, img in enumerate(to_uint8(x.float()).cpu()):
                    pic = Image.fromarray(img[0].numpy())  # uint8 (H, W) → mode "L"
                    atomic_write(folder / f"sample_{i + j:05d}.png", lambda tmp, pic=pic: pic.save(tmp, format="PNG"))
    which = "EMA generator" if (ema and cfg.ema_half_life_kimg > 0) else "generator"
    what = f"{cfg.preset} {cfg.size}px"
    if cfg.family not in (TrainConfig().family, cfg.preset):  # the default family, or its own preset's, goes unnamed
        what = f"{cfg.family} {what}"
    if hasattr(G, "sampling_steps"):  # a diffusion model: how many passes of its network each image took
        what += f", {G.sampling_steps} DDIM steps"
    if per_class is not None:
        return (f"wrote {count} samples of each class ({', '.join(cfg.classes)}; {which}, {what}, seed {seed}) "
                f"to '{out}/<class>/'")
    named = f", class {cfg.classes[class_labels(cfg, label, 1).item()]}" if label is not None else ""
    if truncation != 1:
        named += f", truncation ψ={truncation:g}"
    if mix_seed is not None:
        named += f", style layers {mixed[0]}-{mixed[-1]} from seed {mix_seed}" if mixed == list(
            range(mixed[0], mixed[-1] + 1)) else f", style layers {mixed} from seed {mix_seed}"
    return f"wrote {count} samples ({which}, {what}{named}, seed {seed}) to '{out}'"
