"""Every measure at once: ``evaluate`` (the ``python -m cxrlib evaluate`` contract), its ``summary_table``,
``per_class_swd`` for conditional generators, and ``compare_sets`` / ``format_table``, the headline numbers
of several candidate sets against one real set (notebook 06).
"""

from __future__ import annotations

import os
import time

import torch
from torch import nn

from cxrlib.errors import CxrError
from cxrlib.images import as_images
from cxrlib.metrics.common import _check_same_size, _k_smallest, embed
from cxrlib.metrics.feature_space import features
from cxrlib.metrics.frechet import fid_from_features, fid_skip_reason, inception_features
from cxrlib.metrics.intensity import histogram_distance
from cxrlib.metrics.kernel import kid_from_features
from cxrlib.metrics.manifold import knn_warnings, precision_recall, precision_recall_from_features
from cxrlib.metrics.memorisation import audit_embedding, memorization_audit
from cxrlib.metrics.sliced_wasserstein import swd, swd_floor
from cxrlib.metrics.structural import diversity

#: fewest images per set that ``evaluate`` accepts: precision/recall need k + 1 = 4 neighbours per set and the
#: SWD floor splits the real set into two halves that must each hold at least that many.
MIN_IMAGES = 8


def _check_sets(real, fake, train, holdout) -> None:
    for name, x in (("real", real), ("fake", fake)):
        if x.shape[0] < MIN_IMAGES:
            raise CxrError(f"{name} set has {x.shape[0]} images; evaluation needs at least {MIN_IMAGES} per set")
    _check_same_size(real, fake)
    if train is not None:
        _check_same_size(real, train, "real and train")
    if holdout is not None:
        _check_same_size(real, holdout, "real and holdout")


def _real_minus_train(real: torch.Tensor, train: torch.Tensor, size: int) -> torch.Tensor | None:
    """The real images that are not (near-)exact copies of a training image: usable as held-out baseline."""
    d = _k_smallest(audit_embedding(real, size), audit_embedding(train, size), 1)[0][:, 0]
    keep = d > 1e-3
    return real[keep] if keep.sum() >= 2 else None


def _kid_row(k: dict) -> dict:
    """A KID dict as ``evaluate`` keeps it: mean, std, subsets, subset_size (the space is its key)."""
    return {key: k[key] for key in ("mean", "std", "subsets", "subset_size")}


def evaluate(
    real,
    fake,
    train=None,
    *,
    holdout=None,
    seed: int = 0,
    k: int = 3,
    n_pairs: int = 1000,
    fid_weights: str | os.PathLike | None = None,
    fid_feature: nn.Module | None = None,
    audit_kwargs: dict | None = None,
) -> dict:
    """Every metric of this module on one real and one fake set, as a JSON-ready dict.

    real, fake (and train, holdout): (N, 1, S, S) uint8 or float in [-1, 1], one size S, ≥ ``MIN_IMAGES``
    images for real and fake. Keys: ``swd`` and ``swd_floor`` ({"avg", "<res>px"…}), ``histogram_distance``
    and ``histogram_floor`` (real halves), ``diversity`` ({"fake", "real"}), ``precision_recall``
    ({"precision", "recall", "density", "coverage", "k", "features"}), ``fid`` (None when skipped) and
    ``fid_skipped`` (the reason or None), ``kid`` (``{space: {"mean", "std", "subsets", "subset_size"}}``:
    ``"random-cnn"`` always, offline; ``"inception"`` -- or ``"custom"`` with ``fid_feature`` -- where FID is
    computed, on the same features) and ``kid_skipped`` (one line saying why there is no Inception KID, or None),
    ``warnings`' (plain sentences, e.g. sets too small for the k-NN
    figures; empty when there is nothing to say), ``n_real``, ``n_fake``, ``size``, ``seed``, ``seconds`` (per
    metric); with ``train`` also ``memorization`` (``memorization_audit`` without the per-sample lists;
    held-out baseline = ``holdout``, or else the real images that are not in ``train``).
    """
    real, fake = as_images(real), as_images(fake)
    train = None if train is None else as_images(train)
    holdout = None if holdout is None else as_images(holdout)
    _check_sets(real, fake, train, holdout)
    seconds: dict[str, float] = {}

    def timed(name, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        seconds[name] = round(time.perf_counter() - t0, 3)
        return out

    gen = torch.Generator().manual_seed(seed + 2)
    perm = torch.randperm(real.shape[0], generator=gen)
    half = real.shape[0] // 2
    result: dict = {"n_real": int(real.shape[0]), "n_fake": int(fake.shape[0]), "size": int(real.shape[-1]),
                    "seed": seed}
    result["swd"] = timed("swd", swd, real, fake, seed=seed)
    result["swd_floor"] = timed("swd_floor", swd_floor, real, seed=seed)
    result["histogram_distance"] = timed("histogram_distance", histogram_distance, real, fake)
    result["histogram_floor"] = histogram_distance(real[perm[:half]], real[perm[half : 2 * half]])
    result["diversity"] = {
        "fake": timed("diversity", diversity, fake, n_pairs=n_pairs, seed=seed),
        "real": diversity(real, n_pairs=n_pairs, seed=seed),
    }
    # the random-CNN features serve precision/recall and KID: one pass of the network
    f_cnn = timed("random_cnn_features", lambda: [features(x, seed=seed).cpu() for x in (real, fake)])
    pr = timed("precision_recall", precision_recall_from_features, *f_cnn, k)
    result["precision_recall"] = {**pr, "features": "random-cnn"}
    result["warnings"] = knn_warnings(real.shape[0], fake.shape[0], k)
    result["kid"] = {"random-cnn": _kid_row(timed("kid", kid_from_features, *f_cnn, seed=seed))}
    reason = None if fid_feature is not None else fid_skip_reason(fid_weights)
    result["fid"], result["fid_skipped"] = None, reason
    result["kid_skipped"] = reason and fid_skip_reason(fid_weights, what="Inception KID skipped")
    if reason is None:  # FID and KID share one pass of the (slow) feature network
        name = "inception" if fid_feature is None else "custom"
        if fid_feature is None:
            f_real, f_fake = timed("features", lambda: [inception_features(x, weights=fid_weights) for x in (real, fake)])
        else:
            f_real, f_fake = timed("features", lambda: [embed(fid_feature, x) for x in (real, fake)])
        result["fid"] = timed("fid", fid_from_features, f_real, f_fake)
        result["kid"][name] = _kid_row(timed(f"kid_{name}", kid_from_features, f_real, f_fake, seed=seed))
    if train is not None:
        audit_kwargs = dict(audit_kwargs or {})
        if holdout is None:
            holdout = _real_minus_train(real, train, audit_kwargs.get("size", 32))
            source = "real images not in train" if holdout is not None else None
        else:
            source = "holdout"
        audit = timed("memorization", memorization_audit, fake, train, holdout, **audit_kwargs)
        audit.pop("per_sample")
        audit["holdout_source"] = source
        result["memorization"] = audit
    result["seconds"] = seconds
    return result


#: the columns of ``compare_sets``: name → (what it measures, which way is better)
COMPARE_COLUMNS = {
    "SWD": "texture distance ×10³ (lower = closer)",
    "hist. W1": "intensity-histogram distance (lower = closer)",
    "MS-SSIM": "pairwise similarity inside the set (real-like = good; near 1 = collapsed)",
    "precision": "share of samples on the real manifold (realism)",
    "recall": "share of real images inside some sample's ball (scattered samples inflate it)",
    "density": "real balls per sample ÷ k (≈ 1 for real-like samples)",
    "coverage": "share of real images whose ball holds a sample",
}


def compare_sets(real, sets: dict, *, columns=None, k: int = 3, n_pairs: int = 300, swd_repeats: int = 1,
                 seed: int = 0) -> dict[str, dict[str, float]]:
    """Headline numbers of several candidate sets against one real set, as ``{name: {column: value}}``.

    real: (N, 1, S, S); sets: ``{name: (M, 1, S, S)}`` uint8 or float in [-1, 1], M ≥ k + 1. columns: a subset
    of ``COMPARE_COLUMNS`` (default all): SWD (average over levels), histogram W1, MS-SSIM of ``n_pairs`` pairs
    inside the set, precision, recall, density and coverage (``precision_recall``). Put a set of held-out real
    images among ``sets``: its row is the floor every number should be read against (what a perfect generator
    scores at that set size). SWD compares a set of M images with the first M real ones (``real[:M]``), with
    ``swd_repeats`` sets of random directions (``swd``'s default is 4): quicker and, for a table of sets that
    differ clearly, precise enough.
    """
    columns = list(COMPARE_COLUMNS) if columns is None else list(columns)
    unknown = [c for c in columns if c not in COMPARE_COLUMNS]
    if unknown:
        raise CxrError(f"unknown column(s) {unknown}: choose from {list(COMPARE_COLUMNS)}")
    real = as_images(real)
    f_real = None

    def embed_once(x):  # the real set's features are computed once, not once per candidate set
        nonlocal f_real
        if x is real:
            if f_real is None:
                f_real = features(real, seed=seed)
            return f_real
        return features(x, seed=seed)

    table = {}
    for name, x in sets.items():
        x = as_images(x)
        row = {}
        if "SWD" in columns:
            # SWD compares equal numbers of patches: as many real images as the set holds are enough
            row["SWD"] = swd(real[: len(x)], x, n_repeats=swd_repeats, seed=seed)["avg"]
        if "hist. W1" in columns:
            row["hist. W1"] = histogram_distance(real, x)
        if "MS-SSIM" in columns:
            row["MS-SSIM"] = diversity(x, n_pairs=n_pairs, seed=seed)
        knn = [c for c in ("precision", "recall", "density", "coverage") if c in columns]
        if knn:
            pr = precision_recall(real, x, k, features=embed_once, seed=seed)
            row.update({c: pr[c] for c in knn})
        table[name] = {c: row[c] for c in columns}
    return table


def format_table(table: dict[str, dict[str, float]], digits: int = 3) -> str:
    """``{row: {column: number}}`` (e.g. ``compare_sets``) as an aligned text table, one line per row."""
    columns = list(next(iter(table.values())))
    width = max(len(name) for name in table)
    lines = [f"{'':<{width}}" + "".join(f"{c:>11}" for c in columns)]
    for name, row in table.items():
        lines.append(f"{name:<{width}}" + "".join(f"{row[c]:>11.{digits}f}" for c in columns))
    return "\n".join(lines)


def per_class_swd(real, real_labels, real_classes, fake, fake_labels, fake_classes, *, seed: int = 0) -> dict:
    """SWD (avg, ×1e3) of each class the two sets share, matched by name whatever the case (``NORMAL`` =
    ``normal``): {class: {"swd", "n_real", "n_fake"}}. A class with fewer than 2 images on a side is left out.
    What it adds to the overall SWD: a conditional generator that draws good X-rays of the *wrong* class
    mix, or of one class only, can score well overall and badly here."""
    out = {}
    fake_index = {c.lower(): i for i, c in enumerate(fake_classes)}
    for i, name in enumerate(real_classes):
        j = fake_index.get(name.lower())
        if j is None:
            continue
        r, f = as_images(real)[real_labels == i], as_images(fake)[fake_labels == j]
        if len(r) >= 2 and len(f) >= 2:
            out[name] = {"swd": float(swd(r, f, seed=seed)["avg"]), "n_real": len(r), "n_fake": len(f)}
    return out


KID_SPACES = (("random-cnn", "random CNN"), ("inception", "Inception"), ("custom", "custom"))  # (key, label)


def kid_entries(result: dict) -> list[tuple[str, str, dict | None]]:
    """``(space, label, KID dict)`` for each KID of an ``evaluate`` result, in the order the table and the report
    show them; Inception's with None when it was skipped (``kid_skipped``)."""
    kids = result.get("kid") or {}
    return [(space, label, kids.get(space)) for space, label in KID_SPACES
            if space in kids or (space == "inception" and result.get("kid_skipped"))]


def summary_table(result: dict) -> str:
    """A short human-readable table of an ``evaluate`` result, then one ``warning: …`` line per warning (what the
    CLI prints)."""
    swd_keys = [k for k in result["swd"] if k != "avg"]
    rows = [
        ("images", f"real {result['n_real']} · fake {result['n_fake']} · {result['size']} px", ""),
        ("SWD ×1e3 (avg)", f"{result['swd']['avg']:.2f}", f"floor {result['swd_floor']['avg']:.2f}"),
    ]
    rows += [(f"  SWD {k}", f"{result['swd'][k]:.2f}", f"floor {result['swd_floor'][k]:.2f}") for k in swd_keys]
    pr = result["precision_recall"]
    rows += [
        ("histogram W1", f"{result['histogram_distance']:.4f}", f"floor {result['histogram_floor']:.4f}"),
        ("MS-SSIM pairs", f"{result['diversity']['fake']:.3f}", f"real {result['diversity']['real']:.3f}"),
        ("precision / recall", f"{pr['precision']:.3f} / {pr['recall']:.3f}", f"k={pr['k']}, {pr['features']}"),
        ("density / coverage", f"{pr['density']:.3f} / {pr['coverage']:.3f}",
         "real-like ≈ 1 / higher = more covered"),
        ("FID", "skipped" if result["fid"] is None else f"{result['fid']:.2f}", result["fid_skipped"] or ""),
    ]
    for _, label, k in kid_entries(result):
        if k is not None:
            rows.append((f"KID ×1e3 {label}", f"{1e3 * k['mean']:.2f} ± {1e3 * k['std']:.2f}",
                         f"{k['subsets']} subsets of {k['subset_size']}; unbiased: ≈ 0 (may be < 0) when alike"))
        else:
            rows.append((f"KID {label}", "skipped", "as FID, the line above: they share Inception's features"))
    for name, v in (result.get("per_class_swd") or {}).items():
        rows.append((f"  SWD class {name}", f"{v['swd']:.2f}", f"real {v['n_real']} · fake {v['n_fake']}"))
    mem = result.get("memorization")
    if mem:
        hold = mem["holdout_flagged_fraction"]
        rows.append(("memorisation flagged", f"{mem['flagged_fraction']:.1%}",
                     "held-out " + ("n/a" if hold is None else f"{hold:.1%}") + f" · {mem['n_train']} train"))
    width = max(len(r[0]) for r in rows)
    lines = [f"{a:<{width}}  {b:<14} {c}".rstrip() for a, b, c in rows]
    return "\n".join(lines + [f"warning: {w}" for w in result.get("warnings", [])])
