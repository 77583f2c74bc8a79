"""Notebook 01's exercises (``notebooks/01_data_and_augmentation.ipynb``): brightness and contrast, an
exposure probe, and whether a path lies inside a folder.

Each is registered as ``"01.<name>"``; see :mod:`cxrlib.exercises` for the convention."""

from __future__ import annotations

import math

from cxrlib.exercises.checks import case, compare_outputs, register


def _unit_ramp(shape=(2, 1, 4, 8)):
    """Values 0 … 1 spread over ``shape``, a different range per image (float32)."""
    import torch

    n = math.prod(shape)
    x = torch.linspace(0.0, 1.0, n).reshape(shape)
    return x * torch.linspace(1.0, 0.6, shape[0]).view(-1, *([1] * (len(shape) - 1)))


register(
    "01.brightness_contrast",
    reference="cxrlib.augment.adjust_brightness_contrast",
    checker=compare_outputs(lambda: [
        case(_unit_ramp(), 0.1, 1.0, label="brightness +0.1, contrast 1.0"),
        case(_unit_ramp(), 0.0, 0.5, label="two images, contrast 0.5 only (each image about its own mean)"),
        case(_unit_ramp(), -0.05, 1.1, label="brightness -0.05, contrast 1.1 (the original project's ranges)"),
        case(_unit_ramp(), 0.4, 1.5, label="strong: brightness +0.4, contrast 1.5 (must clip to [0, 1])"),
    ], atol=1e-6),
    hint="the stretch is about each image's own mean, not the whole batch's: which axes does your mean average "
    "over? Keep them so the mean broadcasts back onto the image; clip to [0, 1] last",
)


def _exposure_sets():
    """Four sets of 200 small films (uint8) with known answers for an exposure probe: the clean films, the same
    with a random brightness shift each (b ∈ [-0.3, 0.3]: what offline jitter does), with each film's contrast
    stretched about its own mean (c ∈ [0.6, 1.4]) and with each film's pixels shuffled (other anatomy, same
    exposure)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    n, side = 200, 16
    coarse = (torch.rand(n, 1, 4, 4, generator=g) - 0.5) * 0.8
    anatomy = F.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    clean = 0.5 + 0.04 * torch.randn(n, 1, 1, 1, generator=g) + anatomy
    mean = clean.mean(dim=(2, 3), keepdim=True)
    shift = (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.6
    stretch = 0.6 + 0.8 * torch.rand(n, 1, 1, 1, generator=g)
    order = torch.stack([torch.randperm(side * side, generator=g) for _ in range(n)])
    shuffled = clean.flatten(1).gather(1, order).view_as(clean)

    def films(x):
        return (x.clamp(0, 1) * 255).round().to(torch.uint8)

    return {"clean": films(clean), "brightness-shifted": films(clean + shift),
            "contrast-stretched": films((clean - mean) * stretch + mean), "pixels shuffled": films(shuffled)}


def _check_exposure_probe(candidate, reference):
    import torch

    sets = _exposure_sets()
    values = {}
    for name, x in sets.items():
        v = candidate(x.clone())
        if isinstance(v, torch.Tensor) and v.numel() != 1:
            return (f"your probe returned a tensor of shape {tuple(v.shape)} for {len(x)} films: it must return "
                    "one number for the whole set")
        try:
            values[name] = float(v)
        except (TypeError, ValueError):
            return f"your probe returned {type(v).__name__}, not a number"
        if not math.isfinite(values[name]):
            return f"your probe gave {values[name]} on the {name} films: it must be a finite number"
    base = values["clean"]
    if base == 0:
        return "your probe gives 0 on the clean films, so it cannot say how much a change multiplies it"
    ratios = {k: v / base for k, v in values.items()}
    ref = {k: float(reference(x)) for k, x in sets.items()}
    said = (f"your probe: clean films {base:.4g} · " + " · ".join(f"{k} {values[k]:.4g} (×{ratios[k]:.2f})"
            for k in list(sets)[1:]) + f"; a probe that works gives ×{ref['brightness-shifted'] / ref['clean']:.2f}"
            f", ×{ref['contrast-stretched'] / ref['clean']:.2f} and ×{ref['pixels shuffled'] / ref['clean']:.2f}")
    if ratios["brightness-shifted"] < 2:
        return f"a brightness shift per film must at least double it — {said}"
    for k in ("contrast-stretched", "pixels shuffled"):
        if abs(ratios[k] - 1) > 0.1:
            return f"{k} films have the same exposures, so it must move by less than 10 % — {said}"
    return None


register(
    "01.exposure_probe",
    reference="cxrlib.experiments.exposure_spread",
    checker=_check_exposure_probe,
    hint="give each film one number for its exposure first (section 1 has one), then measure how much that "
    "number varies across the set",
)


def _inside_cases():
    return [
        case("data/train/aug", "data/train", label="('data/train/aug', 'data/train'): a sub-folder"),
        case("data/train", "data/train", label="('data/train', 'data/train'): the folder itself"),
        case("data/train2", "data/train", label="('data/train2', 'data/train'): a sibling whose name starts alike"),
        case("data/train/../val", "data/train", label="('data/train/../val', 'data/train'): '..' leads out"),
        case("data/val/../train/aug", "data/train", label="('data/val/../train/aug', 'data/train'): '..' leads in"),
        case("data", "data/train", label="('data', 'data/train'): the parent"),
    ]


register(
    "01.is_inside",
    reference="cxrlib.data.is_inside",
    checker=compare_outputs(_inside_cases),
    hint="compare paths, not strings: Path(...).resolve() removes '..' and relative parts, and "
    "path == folder or path.is_relative_to(folder) compares whole folder names ('train2' is not 'train')",
)
