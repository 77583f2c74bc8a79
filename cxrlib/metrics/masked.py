"""Masked measures and the translation check (CycleGAN: a normal → pneumonia translation against its source
and, with phantoms, the patient's ill twin).

``masked_l1`` (how much changed inside a mask, e.g. outside the lung fields), ``masked_mean_change`` (signed:
the opacity a translation adds) and ``translation_report`` (both, the twin's change and the round trip, as one
dict). Conventions as in ``cxrlib.metrics.paired``.
"""

from __future__ import annotations

import torch

from cxrlib.metrics.paired import _abs_error, _broadcast_map, _l1, _paired, _per_image, _unit


def _as_mask(mask, like: torch.Tensor) -> torch.Tensor:
    """A mask (bool, or numbers where > 0 is inside, e.g. uint8 0/255) as bool shaped like ``like``."""
    m = _broadcast_map(mask, like, "mask")
    return m if m.dtype == torch.bool else m > 0



def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image mean of ``values`` (B, 1, H, W) over the pixels where ``mask`` (bool, same shape) is true:
    (B,), NaN where the mask is empty."""
    count = mask.sum(dim=(1, 2, 3)).float()
    total = torch.where(mask, values, torch.zeros_like(values)).sum(dim=(1, 2, 3))
    return torch.where(count > 0, total / count.clamp_min(1.0), torch.full_like(total, float("nan")))


def masked_l1(a, b, mask) -> torch.Tensor:
    """Per-image mean |a − b| over the pixels inside ``mask``, on the [0, 1] scale: (N,) float32.

    a, b: (N, 1, H, W); mask: bool, or numbers where > 0 is inside (uint8 0/255), shaped (N, 1, H, W) or
    broadcastable to it ((H, W), (1, 1, H, W)). An image whose mask is empty gives NaN. E.g. ``mask=~lungs``:
    how much a translation changed outside the lung fields.
    """
    a, b = _paired(a, b, "masked")
    m = _as_mask(mask, a)
    return _per_image(lambda x, y, k: _masked_mean(_abs_error(x, y), k), a, b, m)


def masked_mean_change(before, after, mask) -> torch.Tensor:
    """Per-image mean of after − before over the pixels inside ``mask``, signed, on the [0, 1] scale: (N,) float32.

    Shapes and mask as in ``masked_l1`` (an empty mask gives NaN). Positive = brighter after, e.g. the
    lung-field opacity a normal → pneumonia translation adds.
    """
    before, after = _paired(before, after, "before and after")
    m = _as_mask(mask, before)
    return _per_image(lambda x, y, k: _masked_mean(_unit(y) - _unit(x), k), before, after, m)


def translation_report(source, translated, *, lungs, twin=None, round_trip=None) -> dict:
    """What a normal → pneumonia translation changed, as a JSON-ready dict.

    source, translated (and twin, round_trip): (N, 1, H, W), same N and size; lungs: (N, 1, H, W) bool or
    uint8 0/255 (the source's lung fields). Means over images (images with an empty mask region left out),
    on the [0, 1] scale:

    * ``outside_l1`` — mean ``masked_l1(source, translated, ~lungs)``: should be near 0 (the patient kept);
    * ``lung_change`` — mean ``masked_mean_change(source, translated, lungs)``: > 0 when the lungs whitened;
    * with ``twin`` (the same patient ill, e.g. a phantom drawn with ``pneumonia_fraction=1`` and the same
      seed): ``twin_lung_change`` (the same for twin) and ``change_ratio`` = lung_change / twin_lung_change
      (1 = as much opacity as the real disease adds; NaN when the twin's change is 0);
    * with ``round_trip`` (source → pneumonia → normal): ``round_trip_l1`` = mean |round_trip − source|;
    * ``n``: N.
    """
    source, translated = _paired(source, translated, "source and translated")
    inside = _as_mask(lungs, source)
    out: dict = {
        "outside_l1": float(torch.nanmean(masked_l1(source, translated, ~inside))),
        "lung_change": float(torch.nanmean(masked_mean_change(source, translated, inside))),
    }
    if twin is not None:
        twin_change = float(torch.nanmean(masked_mean_change(source, twin, inside)))
        out["twin_lung_change"] = twin_change
        out["change_ratio"] = out["lung_change"] / twin_change if twin_change != 0 else float("nan")
    if round_trip is not None:
        src, back = _paired(source, round_trip, "source and round-trip")
        out["round_trip_l1"] = float(_per_image(_l1, src, back).mean())
    out["n"] = int(source.shape[0])
    return out
