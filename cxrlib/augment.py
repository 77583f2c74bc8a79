"""Augmentation, in two kinds.

* **Offline** (the original project's): brightness, contrast and JPEG quality applied to files, K copies per image,
  written to a separate folder. It enlarges the data set but its changes become part of "real", so the
  generator learns to reproduce them (the course shows this leak).
* **Differentiable** (DiffAugment, Zhao et al. 2020; ADA, Karras et al. 2020): applied on the device to real
  *and* fake batches alike inside the training step, so the discriminator never sees un-augmented data and the
  generator is not pushed to copy the augmentation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cxrlib.errors import CxrError

# ======================================================================= offline augmentation (the original project's)
# Imports are local to these functions: the differentiable half below needs only torch.
ORIGINAL_BRIGHTNESS = 0.1  # ± shift in [0, 1] intensity units, like tf.image.random_brightness(max_delta=0.1)
ORIGINAL_CONTRAST = (0.9, 1.1)  # factor around the image mean, like tf.image.random_contrast(0.9, 1.1)
ORIGINAL_JPEG_QUALITY = (90, 100)  # inclusive, like tf.image.random_jpeg_quality(90, 100)
SEED_BRIGHTNESS = ORIGINAL_BRIGHTNESS  # old name, kept for older code
SEED_CONTRAST = ORIGINAL_CONTRAST  # old name, kept for older code
SEED_JPEG_QUALITY = ORIGINAL_JPEG_QUALITY  # old name, kept for older code


def original_augment_params(
    rng, brightness: float = ORIGINAL_BRIGHTNESS, contrast=ORIGINAL_CONTRAST, jpeg_quality=ORIGINAL_JPEG_QUALITY
) -> dict:
    """Draw one augmentation: ``{"brightness": b in [-brightness, brightness], "contrast": c in contrast,
    "jpeg_quality": q in jpeg_quality (inclusive)}`` from the numpy Generator ``rng``."""
    return {
        "brightness": float(rng.uniform(-brightness, brightness)),
        "contrast": float(rng.uniform(contrast[0], contrast[1])),
        "jpeg_quality": int(rng.integers(jpeg_quality[0], jpeg_quality[1], endpoint=True)),
    }


seed_augment_params = original_augment_params  # old name, kept for older code


def _original_augment_jpeg(img, params: dict) -> bytes:
    """Apply ``params`` to a PIL image (any mode, made grayscale); return the JPEG file's bytes, whose
    compression *is* the JPEG-quality augmentation. Pixel maths in [0, 1]: x + b, then (x - mean)·c + mean."""
    import io

    import numpy as np

    from cxrlib.data import _to_gray

    x = np.asarray(_to_gray(img, getattr(img, "filename", "image")), dtype=np.float32) / 255.0
    x = adjust_brightness_contrast(x, params["brightness"], params["contrast"])
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.rint(x * 255.0).astype(np.uint8)).save(buf, "JPEG", quality=params["jpeg_quality"])
    return buf.getvalue()


def original_augment(
    img, rng, brightness: float = ORIGINAL_BRIGHTNESS, contrast=ORIGINAL_CONTRAST, jpeg_quality=ORIGINAL_JPEG_QUALITY
):
    """The original project's offline augmentation of one image: random brightness, contrast and JPEG quality.

    img: PIL image, any mode (returned as 8-bit grayscale "L", same size); rng: ``numpy.random.Generator``.
    brightness: max ± shift in [0, 1] units; contrast: (low, high) factor; jpeg_quality: (low, high) inclusive."""
    import io

    from PIL import Image

    params = original_augment_params(rng, brightness, contrast, jpeg_quality)
    out = Image.open(io.BytesIO(_original_augment_jpeg(img, params)))
    out.load()
    return out


seed_augment = original_augment  # old name, kept for older code


def _file_rng(seed: int, rel: str):
    """A Generator for one file from (seed, its relative name): the same file gets the same copies no matter
    which other files are in the folder or which thread handles it."""
    import hashlib

    import numpy as np

    h = int.from_bytes(hashlib.sha256(rel.encode()).digest()[:8], "little")
    return np.random.default_rng([int(seed), h])


def augment_folder(
    src, dst, copies: int, seed: int = 0, on_error: str = "raise", *, brightness: float = ORIGINAL_BRIGHTNESS,
    contrast=ORIGINAL_CONTRAST, jpeg_quality=ORIGINAL_JPEG_QUALITY, workers: int | None = None, progress: bool = False,
) -> str:  # fmt: skip
    """Write each image of ``src`` to ``dst`` unchanged plus ``copies`` augmented copies ``<stem>_aug<k>.jpg``
    (class sub-folders kept), and ``dst/augmentations.csv`` with every copy's parameters.

    Refuses a ``dst`` equal to or inside ``src`` and a ``src`` inside ``dst``. Every file is written to a
    temporary name in ``dst`` and renamed; with ``on_error="raise"`` a bad file also removes what this call
    wrote. Deterministic for a given ``seed``. Returns a summary line."""
    import collections
    from pathlib import Path

    from PIL import Image

    from cxrlib import data
    from cxrlib.errors import CxrError

    src, dst = data.check_separate(src, dst)
    if int(copies) != copies or copies < 0:
        raise CxrError(f"--copies must be a whole number >= 0, got {copies}")
    listing = data.list_images(src)
    if not listing.files:
        raise CxrError(f"no images found in '{src}'")
    plan = []  # per file: [original name, copy names...]
    owner: dict[str, str] = {}
    for rel in listing.rels:
        p = Path(rel)
        names = [rel] + [p.with_name(f"{p.stem}_aug{k}.jpg").as_posix() for k in range(1, copies + 1)]
        for name in names:
            if name in owner:
                raise CxrError(f"'{rel}' and '{owner[name]}' would both write '{name}' in '{dst}': rename one of them")
            owner[name] = rel
        plan.append(names)

    def augment_one(i: int):
        path = listing.files[i]
        d = data._open_any(path)  # raises ImageReadError on a bad file, before anything is written
        rng = _file_rng(seed, listing.rels[i])
        params = [original_augment_params(rng, brightness, contrast, jpeg_quality) for _ in range(copies)]
        gray = Image.fromarray(data._to_uint8(d.pixels))  # decoded "F" is already 0..255: no re-stretch
        return path.read_bytes(), [_original_augment_jpeg(gray, p) for p in params], params

    writer = data._Writer(dst)
    skipped: list[tuple[str, str]] = []
    per_class: collections.Counter = collections.Counter()
    rows = ["file,source,brightness,contrast,jpeg_quality"]
    try:
        results = data._map_files(augment_one, list(range(len(listing.files))), on_error, workers, progress, "augmenting")
        for i, res, err in results:
            if err is not None:
                skipped.append((str(listing.files[i]), err.reason))
                continue
            original, jpegs, params = res
            writer.write(plan[i][0], original)
            for name, blob, p in zip(plan[i][1:], jpegs, params):
                writer.write(name, blob)
                rows.append(f"{name},{listing.rels[i]},{p['brightness']:.5f},{p['contrast']:.5f},{p['jpeg_quality']}")
            per_class[listing.classes[listing.labels[i]]] += 1
        if not per_class:
            raise CxrError(f"no readable images in '{src}': all {len(listing.files)} files failed")
        writer.write("augmentations.csv", ("\n".join(rows) + "\n").encode())
    except BaseException:
        writer.undo()
        raise
    data._warn_skipped(skipped, len(listing.files))
    n = sum(per_class.values())
    counts = " ".join(f"{c}={k}" for c, k in sorted(per_class.items()))
    summary = (
        f"augmented {n} images from '{src}' into '{dst}': {n} originals + {n * copies} copies "
        f"(K={copies}, seed {seed}; brightness ±{brightness:g}, contrast {contrast[0]:g}–{contrast[1]:g}, "
        f"JPEG quality {jpeg_quality[0]}–{jpeg_quality[1]}; {counts})"
    )
    if skipped:
        summary += f"; skipped {len(skipped)} unreadable: " + ", ".join(Path(p).name for p, _ in skipped[:5])
    return summary


def adjust_brightness_contrast(x, brightness: float = 0.0, contrast: float = 1.0):
    """The original project's pixel maths for one augmentation: ``x + b``, then ``(x - mean) · c + mean``, clipped to [0, 1].

    x: (..., H, W) float in [0, 1] (a torch tensor or a numpy array; returned as the same kind, same shape);
    brightness b: added to every pixel (±0.1 in the original project); contrast c: stretches each image about its own mean
    (taken after the brightness shift, over its last two axes; 0.9–1.1 in the original project). Strong values saturate
    pixels at 0 or 1 -- information the copy no longer has.
    """
    x = x + brightness
    mean = x.mean(axis=(-2, -1), keepdims=True)
    return ((x - mean) * contrast + mean).clip(0.0, 1.0)


def augment_images(
    images, copies: int = 1, seed: int = 0, *, brightness: float = ORIGINAL_BRIGHTNESS, contrast=ORIGINAL_CONTRAST,
    jpeg_quality=ORIGINAL_JPEG_QUALITY,
):  # fmt: skip
    """:func:`augment_folder` for a tensor in memory: the originals followed by ``copies`` augmented copies each.

    images: (N, 1, H, W) uint8 → (N · (1 + copies), 1, H, W) uint8: rows 0..N-1 are the originals, then
    copy 1 of every image, then copy 2, ... Each copy gets its own random brightness, contrast and JPEG
    quality (same maths and ranges as the files ``augment_folder`` writes), drawn from ``seed``.
    """
    import io

    import numpy as np
    from PIL import Image

    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 1:
        raise CxrError(f"augment_images wants uint8 images shaped (N, 1, H, W), got {x.dtype} {tuple(x.shape)}")
    if int(copies) != copies or copies < 0:
        raise CxrError(f"copies must be a whole number >= 0, got {copies}")
    rng = np.random.default_rng(seed)
    out = [x]
    for _ in range(int(copies)):
        batch = []
        for img in x[:, 0].numpy():
            params = original_augment_params(rng, brightness, contrast, jpeg_quality)
            blob = _original_augment_jpeg(Image.fromarray(img), params)
            batch.append(np.asarray(Image.open(io.BytesIO(blob)).convert("L")))
        out.append(torch.from_numpy(np.stack(batch))[:, None])
    return torch.cat(out)


def original_augment_images(images: torch.Tensor, seed: int = 0, *, brightness: float = ORIGINAL_BRIGHTNESS,
                            contrast=ORIGINAL_CONTRAST, jpeg_quality=ORIGINAL_JPEG_QUALITY) -> torch.Tensor:
    """One augmented copy of each image of an in-memory set, as ``augment_folder`` would write it.

    images: uint8 (N, 1, H, W) → uint8 (N, 1, H, W): random brightness, contrast and JPEG quality per image
    (one draw each from a numpy Generator seeded with ``seed``; same seed, same copies)."""
    import io

    import numpy as np
    from PIL import Image

    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 1:
        raise CxrError(f"original_augment_images expects uint8 images (N, 1, H, W), got {images.dtype} "
                       f"{tuple(images.shape)}")
    rng = np.random.default_rng(seed)
    out = torch.empty_like(images)
    for i, img in enumerate(images.cpu().numpy()):
        params = original_augment_params(rng, brightness, contrast, jpeg_quality)
        jpeg = _original_augment_jpeg(Image.fromarray(img[0]), params)
        out[i, 0] = torch.from_numpy(np.asarray(Image.open(io.BytesIO(jpeg)).convert("L")).copy())
    return out


seed_augment_images = original_augment_images  # old name, kept for older code



# ======================================================================= differentiable augmentation

# Both kinds are applied with the same transforms to real and to generated images; none of them mirrors the
# image: a chest radiograph is not left-right symmetric (the heart sits on the left, the liver lifts the right
# hemidiaphragm), so a flipped X-ray is an anatomically wrong one -- and with an augmentation that leaks,
# the generator would learn to draw mirrored chests.

DIFF_AUGMENT_OPS = ("brightness", "contrast", "translation", "cutout")
_POLICY_ALIASES = {"color": ("brightness", "contrast")}  # DiffAugment's "color" minus saturation (grayscale)


def parse_policy(policy: str) -> tuple[str, ...]:
    """``"color,translation,cutout"`` → ``("brightness", "contrast", "translation", "cutout")``."""
    ops: list[str] = []
    for name in (w.strip().lower() for w in policy.split(",")):
        if not name:
            continue
        if name in ("flip", "hflip", "vflip", "flips"):
            raise CxrError(
                f"augmentation policy {policy!r}: flips are not offered -- a chest X-ray is not left-right "
                "symmetric, and a generator would learn to draw mirrored anatomy"
            )
        expanded = _POLICY_ALIASES.get(name, (name,))
        for op in expanded:
            if op not in DIFF_AUGMENT_OPS:
                raise CxrError(
                    f"unknown augmentation {name!r} in policy {policy!r}: choose from color, "
                    f"{', '.join(DIFF_AUGMENT_OPS)}"
                )
            if op not in ops:
                ops.append(op)
    return tuple(ops)


def _uniform(B: int, x: torch.Tensor, generator) -> torch.Tensor:
    """B draws from U[0, 1) in float32 on x's device."""
    return torch.rand(B, generator=generator, device=x.device)


def _chosen(B: int, x: torch.Tensor, p, generator) -> torch.Tensor:
    """(B,) bool: which samples this transform touches (each with probability p; p a float or 0-dim tensor)."""
    return _uniform(B, x, generator) < p


def _brightness(x, apply, amount, generator):
    b = (2 * _uniform(x.shape[0], x, generator) - 1) * amount  # U(-amount, amount)
    b = torch.where(apply, b, 0.0)
    return x + b.to(x.dtype).view(-1, 1, 1, 1)


def _contrast(x, apply, amount, generator):
    c = 1 + (2 * _uniform(x.shape[0], x, generator) - 1) * amount  # U(1 - amount, 1 + amount)
    c = torch.where(apply, c, 1.0).to(x.dtype).view(-1, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    out = (x - mean) * c + mean
    return torch.where(apply.view(-1, 1, 1, 1), out, x)  # untouched samples stay bit-identical


def _translation(x, apply, ratio, generator):
    B, C, H, W = x.shape
    sy, sx = int(H * ratio + 0.5), int(W * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (B,), generator=generator, device=x.device) * apply
    dx = torch.randint(-sx, sx + 1, (B,), generator=generator, device=x.device) * apply
    # gather from a 1-pixel zero border: source indices that fall outside the image land on it
    gy = (torch.arange(H, device=x.device) + dy[:, None] + 1).clamp(0, H + 1)  # (B, H)
    gx = (torch.arange(W, device=x.device) + dx[:, None] + 1).clamp(0, W + 1)  # (B, W)
    b = torch.arange(B, device=x.device)[:, None, None]
    x_pad = F.pad(x, (1, 1, 1, 1))
    out = x_pad[b, :, gy[:, :, None], gx[:, None, :]]  # (B, H, W, C): advanced indices come first
    return out.permute(0, 3, 1, 2)


def _cutout(x, apply, ratio, generator):
    B, C, H, W = x.shape
    s = int(H * ratio + 0.5)
    cy = torch.randint(0, H + (1 - s % 2), (B,), generator=generator, device=x.device)
    cx = torch.randint(0, W + (1 - s % 2), (B,), generator=generator, device=x.device)
    rows = torch.arange(H, device=x.device)[None, :] - (cy[:, None] - s // 2)  # (B, H): 0 ≤ · < s inside
    cols = torch.arange(W, device=x.device)[None, :] - (cx[:, None] - s // 2)
    inside = ((rows >= 0) & (rows < s))[:, :, None] & ((cols >= 0) & (cols < s))[:, None, :]
    cut = inside & apply[:, None, None]
    return x * (~cut).to(x.dtype)[:, None]


def diff_augment(
    x: torch.Tensor,
    policy: str = "color,translation,cutout",
    p=1.0,
    generator: torch.Generator | None = None,
    *,
    brightness: float = 0.5,
    contrast: float = 0.5,
    translation: float = 1 / 8,
    cutout: float = 1 / 2,
) -> torch.Tensor:
    """Differentiable augmentation (DiffAugment, Zhao et al. 2020) with ADA-style probability.

    x: (B, C, H, W) float in [-1, 1] (real or generated) → same shape, same dtype and device; not clamped
    (a clamp would cut gradients). The trainer applies it to the real batch and to the generated batch
    alike (independent draws per sample, the same ``p``), so G is not pushed to reproduce the augmentation: it
    leaks into samples only when p is too high (ADA: p ≲ 0.8). With p < 1 a share 1 − p of the images skips
    each transform, so D does see clean images (every image while ADA's p is still 0).

    policy: comma-separated, applied in this order:

    * ``color`` = ``brightness`` + ``contrast`` (no saturation: grayscale):
      brightness ``x + b``, b ~ U(-0.5, 0.5); contrast ``(x - mean) · c + mean``, c ~ U(0.5, 1.5),
      mean over the sample's pixels;
    * ``translation``: shift by an integer in [-H/8, H/8] rows and [-W/8, W/8] columns, zero fill;
    * ``cutout``: zero a square of half the side, centred uniformly at random (it may stick out).

    No flips (see the note above). Each transform touches each sample independently with probability ``p``
    (a float or a 0-dim tensor on x's device, e.g. :attr:`AdaptiveAugment.p`); ``p = 0`` returns ``x``
    itself. Everything runs on x's device with no host synchronisation; the same ``generator`` state (a
    ``torch.Generator`` on x's device) gives the same result. Gradients flow to x through every transform
    (zero gradient where cutout erased pixels).
    """
    ops = parse_policy(policy)
    if not ops or (isinstance(p, (int, float)) and p <= 0):
        return x
    B = x.shape[0]
    amounts = {"brightness": brightness, "contrast": contrast, "translation": translation, "cutout": cutout}
    transforms = {"brightness": _brightness, "contrast": _contrast, "translation": _translation,
                  "cutout": _cutout}
    for op in DIFF_AUGMENT_OPS:  # fixed order, whatever the order in the policy string
        if op in ops:
            apply = _chosen(B, x, p, generator)
            x = transforms[op](x, apply, amounts[op], generator)
    return x


class AdaptiveAugment:
    """ADA's controller (Karras et al. 2020): tune the augmentation probability p from D's overfitting.

    The overfitting heuristic is ``r_t = E[sign(D(x_real))]``: the fraction of real images D scores as real,
    mapped to [-1, 1]. r_t near 0: D cannot tell; r_t near 1: D is sure of every training image, i.e. it
    memorises them. Every ``interval`` iterations::

        p ← clip(p + sign(r_t - target) · N / (speed_kimg · 1000),  0,  p_max)

    where N is the number of real images seen since the last adjustment (batch · interval). So p can move
    from 0 to 1 in ``speed_kimg`` thousand images (ADA: 500k; use ~20k for a run of minutes). ``target``
    0.6 is ADA's value; ``p_max`` keeps p below where augmentations start to leak into the samples.

    Use: ``ada.update(real_logits)`` after each D forward on reals, ``ada.step(batch_size)`` once per
    iteration, ``diff_augment(x, p=ada.p)``. All state lives on the logits' device (0-dim tensors), so
    nothing waits for the host; read ``float(ada.p)`` only when logging.
    """

    def __init__(
        self,
        target: float = 0.6,
        speed_kimg: float = 500.0,
        interval: int = 4,
        p_init: float = 0.0,
        p_max: float = 0.8,
        device=None,
    ):
        if interval < 1 or speed_kimg <= 0:
            raise CxrError("AdaptiveAugment needs interval >= 1 and speed_kimg > 0")
        self.target, self.speed_kimg, self.interval, self.p_max = target, speed_kimg, interval, p_max
        device = torch.device(device or "cpu")
        self._p = torch.tensor(float(p_init), device=device)
        self._r_t = torch.tensor(float("nan"), device=device)
        self._sign_sum = torch.zeros((), device=device)
        self._n_logits = 0  # shapes are known on the host: counting them needs no synchronisation
        self._n_images = 0
        self._iters = 0

    @property
    def p(self) -> torch.Tensor:
        """The current augmentation probability: a 0-dim float32 tensor in [0, p_max]."""
        return self._p

    @property
    def r_t(self) -> torch.Tensor:
        """r_t measured at the last adjustment (NaN before the first): a 0-dim tensor in [-1, 1]."""
        return self._r_t

    def _to(self, device) -> None:
        if self._p.device != device:
            self._p, self._r_t = self._p.to(device), self._r_t.to(device)
            self._sign_sum = self._sign_sum.to(device)

    @torch.no_grad()
    def update(self, real_logits: torch.Tensor) -> None:
        """Accumulate sign(D(x_real)) for r_t. real_logits: (B,) raw D outputs on real images."""
        self._to(real_logits.device)
        self._sign_sum += torch.sign(real_logits.detach().float()).sum()
        self._n_logits += real_logits.numel()

    @torch.no_grad()
    def step(self, batch_size: int) -> torch.Tensor:
        """Count one iteration of ``batch_size`` real images; every ``interval`` iterations adjust p.

        Returns p (a 0-dim tensor). Without any ``update`` since the last adjustment p stays as it is.
        """
        self._iters += 1
        self._n_images += int(batch_size)
        if self._iters % self.interval == 0 and self._n_logits > 0:
            sign_sum, n_logits, n_images = self._sign_sum, self._n_logits, self._n_images
            from cxrlib import distributed

            if distributed.is_active():  # several processes (torchrun): r_t and N over all their images
                counts = torch.tensor([0.0, n_logits, n_images], dtype=torch.float64, device=sign_sum.device)
                counts[0] = sign_sum
                total = distributed.all_sum(counts)
                sign_sum, n_logits, n_images = total[0].float(), float(total[1]), float(total[2])
            self._r_t = sign_sum / n_logits
            adjust = torch.sign(self._r_t - self.target) * (n_images / (self.speed_kimg * 1000))
            self._p = (self._p + adjust).clamp(0.0, self.p_max)
            self._sign_sum.zero_()
            self._n_logits = self._n_images = 0
        return self._p

    def state_dict(self) -> dict:
        """Everything needed to resume exactly (tensors and ints only: safe with ``weights_only=True``)."""
        return {
            "p": self._p.clone(), "r_t": self._r_t.clone(), "sign_sum": self._sign_sum.clone(),
            "n_logits": self._n_logits, "n_images": self._n_images, "iters": self._iters,
        }

    def load_state_dict(self, state: dict) -> None:
        device = self._p.device
        self._p, self._r_t = state["p"].to(device), state["r_t"].to(device)
        self._sign_sum = state["sign_sum"].to(device)
        self._n_logits, self._n_images, self._iters = state["n_logits"], state["n_images"], state["iters"]
