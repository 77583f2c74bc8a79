"""Using a trained image-to-image generator: translate tensors or a whole folder (``python -m cxrlib translate``).

* Pix2Pix: the source is a folder laid out for training (images, and ``masks/<structure>/<image stem>.png``;
  a folder of masks alone works too); each output is the X-ray the generator draws for one image's masks,
  named after that image (``normal/cxr_00003.png`` → ``DST/normal/cxr_00003.png``).
* CycleGAN: the source is any folder of images; each is translated A → B (``direction="a2b"``, e.g.
  normal → pneumonia) or B → A and written under the same relative name (as PNG).

The source is never written to; every file is written to a temporary name and renamed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cxrlib.config import IMAGE_TO_IMAGE, TrainConfig
from cxrlib.engine.families import FAMILIES
from cxrlib.errors import CxrError


def load_translator(ckpt, ema: bool = True, device: str = "auto") -> tuple[torch.nn.Module, TrainConfig]:
    """The generator(s) of a pix2pix or cyclegan checkpoint (eval mode) and its config; any other family's
    checkpoint is a one-line error."""
    from cxrlib.train import load_generator

    G, cfg = load_generator(ckpt, ema=ema, device=device)
    if FAMILIES[cfg.family].draws_from_z:
        raise CxrError(f"'{ckpt}' holds a {cfg.family} {cfg.preset} generator, which draws images from noise: "
                       f"translate needs a {' or '.join(IMAGE_TO_IMAGE)} checkpoint (use `sample` for this one)")
    return G, cfg


def translate(G: torch.nn.Module, cfg: TrainConfig, x: torch.Tensor, direction: str | None = None,
              batch: int = 32) -> torch.Tensor:
    """Translate a batch: pix2pix x = masks (N, C, S, S) uint8 0/255; cyclegan x = images (N, 1, S, S) uint8
    (``direction`` "a2b", the default, or "b2a"). Returns uint8 (N, 1, S, S) on the CPU."""
    from cxrlib.train import to_uint8

    family = FAMILIES[cfg.family]
    if family.needs_masks:  # one way only: masks → X-ray
        if direction not in (None, "a2b"):
            raise CxrError(f"a {cfg.family} generator translates masks → X-ray only: drop --direction")
        step = lambda xb: family.apply(G, xb)  # noqa: E731
    else:  # either way between two domains
        step = lambda xb: family.apply(G, xb, direction or "a2b")  # noqa: E731
    parts = [to_uint8(step(xb)).cpu() for xb in x.split(batch)]
    return torch.cat(parts) if parts else torch.zeros((0, 1, cfg.size, cfg.size), dtype=torch.uint8)


def _relative_png(path: str, root: Path) -> Path:
    p = Path(path)
    try:
        rel = p.resolve().relative_to(root.resolve())
    except ValueError:
        rel = Path(p.name)
    return rel.with_suffix(".png")


def translate_folder(ckpt, src, dst, direction: str | None = None, *, masks_dir=None, on_error: str = "raise",
                     crop: str = "center", ema: bool = True, batch: int = 32) -> str:
    """Translate every image (cyclegan) or every image's masks (pix2pix) of ``src`` into ``dst`` under the
    same relative names, as PNG. Returns a one-line summary."""
    from PIL import Image

    from cxrlib import data as datalib
    from cxrlib.files import atomic_write

    src, dst = datalib.check_separate(src, dst)
    G, cfg = load_translator(ckpt, ema=ema)
    if FAMILIES[cfg.family].needs_masks:
        mask_root = Path(masks_dir) if masks_dir is not None else src / "masks"
        # images beside the masks give the outputs their names; a folder of masks alone works too
        have_images = mask_root.is_dir() and bool(datalib.list_images(src, ignore_dirs=("masks", mask_root.name)).files)
        pairs = datalib.load_pairs(src, cfg.size, masks_dir=masks_dir, structures=list(cfg.structures), crop=crop,
                                   on_error=on_error, cache=False, need_images=have_images)
        inputs, paths, skipped = pairs.masks, pairs.paths, pairs.skipped
        what = f"masks ({', '.join(cfg.structures)}) → X-ray"
    else:
        images = datalib.load_images(src, cfg.size, crop=crop, on_error=on_error, cache=False)
        inputs, paths, skipped = images.images, images.paths, images.skipped
        a, b = cfg.domains
        what = f"{a} → {b}" if (direction or "a2b") == "a2b" else f"{b} → {a}"
    out = translate(G, cfg, inputs, direction, batch)
    if dst.exists() and not dst.is_dir():
        raise CxrError(f"cannot write translations into '{dst}': it is a file, not a folder")
    for img, path in zip(out, paths):
        target = dst / _relative_png(path, src)
        target.parent.mkdir(parents=True, exist_ok=True)
        pic = Image.fromarray(img[0].numpy())
        atomic_write(target, lambda tmp, pic=pic: pic.save(tmp, format="PNG"))
    skip = f" ({len(skipped)} skipped)" if skipped else ""
    return f"translated {len(out)} images, {what} ({cfg.family} {cfg.size}px), into '{dst}'{skip}"


# =========================================================================== evaluation on held-out phantoms
def pixel_linear_baseline(train_masks: torch.Tensor, train_images: torch.Tensor, masks: torch.Tensor,
                          chunk: int = 256) -> torch.Tensor:
    """What a per-pixel linear model of the masks predicts: at every pixel, least squares of the intensity on
    [1, mask channels] over the training pairs, applied to ``masks``. The baseline Pix2Pix must beat.
    train_masks (N, C, S, S) uint8 0/255, train_images (N, 1, S, S) uint8 → uint8 (M, 1, S, S).
    ``chunk`` pixels are solved at a time (each pixel's fit is independent; all at once held ~0.4 GB at 64 px)."""
    n, c, h, w = train_masks.shape

    def design(m, rows):  # (pixels in rows, images, 1 + channels), float64
        x = (m.flatten(2)[:, :, rows].float() / 255).permute(2, 0, 1)
        return torch.cat([torch.ones(len(x), len(m), 1), x], 2).double()

    y = train_images.flatten(2).permute(2, 0, 1)  # (pixels, images, 1) uint8
    pred = torch.empty(h * w, len(masks), dtype=torch.float64)
    for start in range(0, h * w, chunk):
        rows = slice(start, min(start + chunk, h * w))
        coef = torch.linalg.lstsq(design(train_masks, rows), y[rows].double(), driver="gelsd").solution
        pred[rows] = (design(masks, rows) @ coef)[..., 0]
    return pred.T.reshape(len(masks), 1, h, w).round().clamp(0, 255).to(torch.uint8)


def nearest_anatomy_baseline(train_masks: torch.Tensor, train_images: torch.Tensor, masks: torch.Tensor,
                             chunk: int = 256) -> torch.Tensor:
    """A real film for every query: the training image whose masks disagree with ``masks`` in the fewest
    pixels (all channels together). Realistic by construction (it *is* an X-ray), right about the anatomy only
    as far as the nearest training patient is — the baseline that shows what a realistic answer costs in
    pixel correlation. train_masks (N, C, S, S) uint8 0/255, train_images (N, 1, S, S) uint8 → (M, 1, S, S)."""
    if train_masks.shape[1:] != masks.shape[1:]:
        raise CxrError(f"masks of shape {tuple(masks.shape[1:])} cannot be matched with training masks of shape "
                       f"{tuple(train_masks.shape[1:])}")
    ref = (train_masks.flatten(1) > 127).float().mul_(2).sub_(1)  # ±1: the dot product = pixels − 2 × mismatches
    best = []
    for q in (masks.flatten(1) > 127).float().mul_(2).sub_(1).split(chunk):
        best.append((q @ ref.T).argmax(1))
    return train_images[torch.cat(best)].clone()


def ideal_translations(n: int, size: int, seed: int, draws: int = 8) -> dict[str, torch.Tensor]:
    """What an *ideal* masks → X-ray model would answer for phantoms 0..n-1 of ``seed`` (phantom test sets only:
    the generator's parameters are known). ``"ideal sample"``: another film of the same masks — the patient's
    mask-shaping anatomy kept, body, bone density, vessels, exposure and pneumonia drawn afresh
    (``phantom.generate(anatomy_seed=seed)``) — a draw from "X-rays given these masks", as real as the data.
    ``"ideal mean"``: the pixel average of ``draws`` such films, about what the best L1/L2 predictor outputs.
    Both (n, 1, size, size) uint8."""
    films = ideal_samples(n, size, seed, draws)
    mean = torch.stack([f.float() for f in films]).mean(0).round().to(torch.uint8)
    return {"ideal sample": films[0], "ideal mean": mean}


def ideal_samples(n: int, size: int, seed: int, draws: int) -> list[torch.Tensor]:
    """``draws`` independent films of the masks of phantoms 0..n-1 of ``seed`` (see :func:`ideal_translations`)."""
    from cxrlib import phantom

    if draws < 1:
        raise CxrError(f"draws must be at least 1, got {draws!r}")
    return [phantom.generate(n, size=size, seed=seed + 7919 * d, anatomy_seed=seed).images for d in range(1, draws + 1)]


def baseline_translations(test, train) -> dict[str, torch.Tensor]:
    """The answers that use no network, for the masks of ``test`` given the training pairs ``train``: the
    training mean image, the per-pixel linear model of the masks and the nearest anatomy (the real training film
    whose masks match best: realistic, but another patient). {name: (N, 1, S, S) uint8}."""
    mean = train.images.float().mean(0, keepdim=True).round().to(torch.uint8)
    return {
        "mean image": mean.expand(len(test), -1, -1, -1).contiguous(),
        "linear model": pixel_linear_baseline(train.masks, train.images, test.masks),
        "nearest anatomy": nearest_anatomy_baseline(train.masks, train.images, test.masks),
    }


def inner(images: torch.Tensor, border: int | None = None) -> torch.Tensor:
    """The images without a ``border`` (default: 1/8 of the side) on each side: where a generator's edge
    artefacts (the checkerboard of transposed convolutions is strongest at the film's border) cannot count."""
    border = images.shape[-1] // 8 if border is None else border
    return images[..., border:images.shape[-2] - border, border:images.shape[-1] - border]


def score_translations(outputs: dict, test, train, *, swd_seed: int = 0) -> dict:
    """Every {name: (N, 1, S, S) uint8} prediction of the images of ``test`` scored against them: paired scores
    (L1, PSNR, SSIM, pixel correlation, correlation of the deviations from the training mean image), SWD ×10³
    against the true images (None for the mean image: one image repeated), sharpness of the whole image and of
    its inner part (:func:`inner`). Also "real sharpness", "real inner sharpness" and "swd floor"."""
    from cxrlib import metrics

    mean = train.images.float().mean(0, keepdim=True)  # 0..255
    out = {}
    for name, pred in outputs.items():
        row = metrics.paired_scores(pred, test.images, reference=mean)
        row["swd"] = float(metrics.swd(test.images, pred, seed=swd_seed)["avg"]) if name != "mean image" else None
        row["sharpness"] = metrics.sharpness(pred)
        row["inner sharpness"] = metrics.sharpness(inner(pred))
        out[name] = row
    out["real sharpness"] = metrics.sharpness(test.images)
    out["real inner sharpness"] = metrics.sharpness(inner(test.images))
    out["swd floor"] = float(metrics.swd_floor(test.images, seed=swd_seed)["avg"])
    return out


def evaluate_pix2pix(G, cfg: TrainConfig, test, train, *, swd_seed: int = 0, extra: dict | None = None) -> dict:
    """Scores of a Pix2Pix generator on held-out pairs ``test`` (an ImageSet with masks), with ``train`` (its
    training pairs) for the baselines (:func:`baseline_translations`) and every ``extra`` {name: (N, 1, S, S)
    uint8} prediction (e.g. :func:`ideal_translations`), all scored by :func:`score_translations`; the
    generator's row is "pix2pix"."""
    outputs = {"pix2pix": translate(G, cfg, test.masks), **baseline_translations(test, train), **(extra or {})}
    return score_translations(outputs, test, train, swd_seed=swd_seed)


def evaluate_cyclegan(G, cfg: TrainConfig, normals, twins, judge, *, judge_fn=None) -> dict:
    """Scores of a normal → pneumonia CycleGAN on held-out patients: ``normals`` (ImageSet with masks, all
    normal) and ``twins`` (the same patients with pneumonia: same seed, ``pneumonia_fraction=1``).

    Returns the share of translations ``judge`` calls pneumonia (``judge_fn(judge, images)`` → P(pneumonia)
    per image; default ``classifier.predict_proba``), and the same share for the real normals and the real
    twins; ``metrics.translation_report`` of the translations (change outside the lungs, brightening inside
    against the twins', the round trip A → B → A)."""
    from cxrlib import classifier, metrics

    if judge_fn is None:
        judge_fn = lambda net, x: classifier.predict_proba(net, x)[:, 1]  # noqa: E731
    ab = "a2b" if cfg.domains[0].lower().startswith("normal") else "b2a"
    ba = "b2a" if ab == "a2b" else "a2b"
    fake = translate(G, cfg, normals.images, ab)
    back = translate(G, cfg, fake, ba)
    lungs = normals.masks[:, list(normals.structures).index("lungs")].unsqueeze(1) > 127
    report = metrics.translation_report(normals.images, fake, lungs=lungs, twin=twins.images, round_trip=back)
    for name, x in (("translated", fake), ("real normals", normals.images), ("ill twins", twins.images)):
        report[f"judged pneumonia: {name}"] = float((judge_fn(judge, x) > 0.5).float().mean())
    report["direction"] = ab
    return report
