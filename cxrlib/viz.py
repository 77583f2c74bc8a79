"""Pictures: sample grids, training curves and evaluation reports (matplotlib).

Only notebooks and the CLI import this module; figures are built on ``matplotlib.figure.Figure``
without pyplot, so they work headless (the CLI saves them) and display in Jupyter alike.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from cxrlib.progress import progress  # noqa: F401  (notebooks: a loop's progress line that stays in saved copies)


# ======================================================================= image grids
def show_grid(images, labels=None, ncols: int = 8, title: str | None = None, class_names=None) -> Figure:
    """A titled grid of grayscale images, each captioned with its class when ``labels`` are given.

    images: (N, 1, H, W) uint8 (0–255) or float in [-1, 1] (tensor or array); labels: (N,) class indices;
    class_names: names for the indices (default ``("normal", "pneumonia")``); ncols: images per row.
    Built on ``matplotlib.figure.Figure`` (no pyplot state): ``fig.savefig(path)`` works headless and a
    notebook displays the returned figure.
    """
    x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images).detach().cpu()
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"show_grid wants images shaped (N, 1, H, W), got {tuple(x.shape)}")
    x = x.float() / 255.0 if x.dtype == torch.uint8 else (x.float() + 1.0) / 2.0
    n = len(x)
    ncols = max(1, min(int(ncols), n))
    nrows = max(1, -(-n // ncols))
    names = tuple(class_names) if class_names is not None else ("normal", "pneumonia")
    fig = Figure(figsize=(1.6 * ncols, 1.6 * nrows + (0.45 if labels is not None else 0.2) + 0.35),
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= n:
            continue
        ax.imshow(x[k, 0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if labels is not None:
            lab = int(labels[k])
            ax.set_title(names[lab] if 0 <= lab < len(names) else str(lab), fontsize=9)
    h, w = x.shape[-2:]
    fig.suptitle(title or f"{n} images, {h}x{w} px")
    return fig


FINDING_LEVELS = 6  # mild_cases' red outline: where an ill film is this many grey levels brighter than its twin


def mild_cases(severity=(0.25, 0.6), size: int = 64, n: int = 8, seed: int = 7) -> Figure:
    """The same n patients (phantoms of ``seed``) healthy, ill at the default severity, ill at the mildest of
    ``severity`` (lo, hi), and that mildest film again with the lung mask (green) and the finding (red: where it is
    ``FINDING_LEVELS`` or more grey levels brighter than the same patient's healthy film). Pneumonia has its own
    random stream, so ``pneumonia_fraction`` 0 and 1 give the same patients: the twins differ only in the finding."""
    from cxrlib.phantom import generate

    healthy = generate(n, size, seed=seed, pneumonia_fraction=0.0, masks=True)
    full = generate(n, size, seed=seed, pneumonia_fraction=1.0)
    mild = generate(n, size, seed=seed, pneumonia_fraction=1.0, severity=(severity[0], severity[0]))
    fig = Figure(figsize=(1.3 * n, 1.3 * 4 + 0.5), layout="constrained")
    axes = fig.subplots(4, n, squeeze=False)
    titles = ("healthy", "default (severity 1)", f"mild (severity {severity[0]:g})", "mild + lungs + finding")
    for i in range(n):
        h, f, m = (p.images[i, 0].numpy() for p in (healthy, full, mild))
        finding = (m.astype(np.int16) - h.astype(np.int16)) >= FINDING_LEVELS
        for row, img in enumerate((h, f, m, m)):
            ax = axes[row, i]
            ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(titles[row], fontsize=7)
        axes[3, i].contour(healthy.masks["lungs"][i, 0].numpy(), levels=[0.5], colors="lime", linewidths=0.6)
        if finding.any():
            axes[3, i].contour(finding.astype(float), levels=[0.5], colors="red", linewidths=0.6)
    fig.suptitle(f"The same {n} patients, {size} px: pneumonia at the default and the mildest severity of "
                 f"{severity[0]:g}-{severity[1]:g}", fontsize=8)
    return fig


def image_rows(rows: dict, title: str, col_titles=None, pad: int = 2) -> Figure:
    """One strip of images per entry of ``rows`` (``{row name: (N, 1, H, W)}``, uint8 or float in [-1, 1]), the
    row's name on its left; ``col_titles`` (one string per column) caption the top strip. Rows may differ in
    length. Each strip is a single image (one axes per row), so even many rows draw quickly."""
    strips = []
    for images in rows.values():
        x = torch.as_tensor(images).detach().cpu()
        x = x.float() / 255.0 if x.dtype == torch.uint8 else (x.float() + 1.0) / 2.0
        strips.append(x.clamp(0, 1))
    h, w = strips[0].shape[-2:]
    ncols = max(len(x) for x in strips)
    width = ncols * (w + pad) - pad
    fig = Figure(figsize=(1.25 * ncols + 0.8, 1.3 * len(rows) + 0.7), layout="constrained")
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, name, x in zip(axes, rows, strips):
        strip = np.ones((h, width), dtype=np.float32)
        for c, img in enumerate(x):
            strip[:, c * (w + pad) : c * (w + pad) + w] = img[0].numpy()
        ax.imshow(strip, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks([])
        ax.set_xticks([])
        ax.set_ylabel(name, fontsize=10)
        for spine in ax.spines.values():
            spine.set_visible(False)
    if col_titles is not None:
        axes[0].xaxis.tick_top()
        axes[0].set_xticks([c * (w + pad) + (w - 1) / 2 for c in range(len(col_titles))],
                           [str(t) for t in col_titles], fontsize=9)
        axes[0].tick_params(axis="x", length=0)
    fig.suptitle(title)
    return fig


def metric_bars(table: dict, title: str, descriptions: dict | None = None, floor: str | None = None,
                ncols: int | None = None) -> Figure:
    """One bar chart per column of ``{row: {column: number}}`` (e.g. ``metrics.compare_sets``), a bar per row.

    ``descriptions`` ({column: words}, default ``metrics.COMPARE_COLUMNS`` where it names the column) label
    each chart's value axis. ``floor``: the row (e.g. held-out real images) drawn as a dashed line across each
    chart, so every bar is read against it. ``ncols``: charts per row (default: all in one row)."""
    from cxrlib.metrics import COMPARE_COLUMNS

    descriptions = {**COMPARE_COLUMNS, **(descriptions or {})}
    names, columns = list(table), list(next(iter(table.values())))
    ncols = len(columns) if ncols is None else max(1, min(ncols, len(columns)))
    nrows = -(-len(columns) // ncols)
    fig = Figure(figsize=(3.0 * ncols, nrows * (3.4 + 0.12 * max(len(n) for n in names))), layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for spare in grid[len(columns):]:
        spare.set_axis_off()
    axes = grid[:len(columns)]
    colours = [f"C{i}" for i in range(len(names))]
    for ax, col in zip(axes, columns):
        ax.bar(range(len(names)), [table[n][col] for n in names], color=colours)
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
        ax.set_title(col)
        ax.set_xlabel("image set")
        ax.set_ylabel(descriptions.get(col, col), fontsize=8)
        if floor is not None:
            ax.axhline(table[floor][col], color="k", ls="--", lw=1, label=floor)
    if floor is not None:
        axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(title)
    return fig


# ======================================================================= evaluation report
def _mosaic(images, ncols: int, pad: int = 1) -> np.ndarray:
    """(N, 1, H, W) uint8 or float in [-1, 1] → one (rows·H, ncols·W) float array in [0, 1] for imshow."""
    from torchvision.utils import make_grid

    x = images.float() / 255.0 if images.dtype == torch.uint8 else (images.float() + 1) / 2
    grid = make_grid(x.clamp(0, 1).cpu(), nrow=ncols, padding=pad, pad_value=1.0)
    return grid[0].numpy()


def _show_mosaic(ax, images, ncols: int, title: str) -> None:
    ax.imshow(_mosaic(images, ncols), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title)
    ax.set_axis_off()


def plot_intensity_histograms(ax, real, fake, bins: int = 64) -> None:
    """Pixel-intensity distributions of two sets on one axes (what ``histogram_distance`` compares)."""
    from cxrlib.metrics import intensity_histogram

    centres = (np.arange(bins) + 0.5) / bins
    for name, x, colour in (("real", real, "tab:blue"), ("fake", fake, "tab:orange")):
        ax.plot(centres, intensity_histogram(x, bins).numpy(), label=name, color=colour)
    ax.set_xlabel("pixel intensity (0 = black, 1 = white)")
    ax.set_ylabel("share of pixels")
    ax.set_title("intensity histograms")
    ax.legend()


def plot_swd_levels(ax, result: dict) -> None:
    """SWD per pyramid level for the fakes beside the real-vs-real floor (bars; lower is better)."""
    levels = [k for k in result["swd"] if k != "avg"]
    pos = np.arange(len(levels))
    ax.bar(pos - 0.2, [result["swd"][k] for k in levels], 0.4, label="real vs fake", color="tab:orange")
    ax.bar(pos + 0.2, [result["swd_floor"][k] for k in levels], 0.4, label="real vs real (floor)", color="tab:blue")
    ax.set_xticks(pos, levels)
    ax.set_xlabel("pyramid level")
    ax.set_ylabel("SWD ×10³")
    ax.set_title("sliced Wasserstein distance per level")
    ax.legend()


def nearest_pairs_figure(fake, train, pairs: list[dict], n: int = 8, title: str | None = None) -> Figure:
    """The most suspicious samples (top row) above their nearest training images (bottom row).

    fake, train: (N, 1, H, W) image sets; pairs: ``memorization_audit(...)["top_pairs"]`` (most suspicious
    first). Each column is titled with the authenticity ratio d₁/ρ (< 1: closer than training images are to
    each other)."""
    pairs = pairs[:n]
    fig = Figure(figsize=(1.4 * max(len(pairs), 1), 3.4), layout="constrained")
    axes = fig.subplots(2, max(len(pairs), 1), squeeze=False)
    for col, p in enumerate(pairs):
        for row, (x, i, label) in enumerate(((fake, p["fake"], "sample"), (train, p["train"], "train"))):
            ax = axes[row, col]
            img = x[i, 0].float().cpu()
            ax.imshow(img / 255.0 if x.dtype == torch.uint8 else (img + 1) / 2, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(label)
        axes[0, col].set_title(f"{p['authenticity_ratio']:.2f}", fontsize=9)
    fig.suptitle(title or "nearest training image of the most suspicious samples (title: d₁/ρ)")
    return fig


def evaluation_report(real, fake, result: dict, train=None, *, n_show: int = 16, n_pairs: int = 8) -> Figure:
    """One-page picture of an ``evaluate`` result: real and fake samples, intensity histograms, SWD per level
    beside its floor, the key numbers, and — with ``train`` and ``result["memorization"]`` — the most
    suspicious samples above their nearest training images.

    real, fake, train: (N, 1, H, W) uint8 or float in [-1, 1] (or ``ImageSet``); result: ``evaluate``'s dict."""
    real, fake = getattr(real, "images", real), getattr(fake, "images", fake)
    mem = result.get("memorization")
    with_pairs = train is not None and mem is not None and mem.get("top_pairs")
    fig = Figure(figsize=(12, 13 if with_pairs else 9.5), layout="constrained")
    grid = fig.add_gridspec(3 if with_pairs else 2, 3, height_ratios=[1.4, 1, 0.9] if with_pairs else [1.4, 1])
    ncols = int(np.ceil(np.sqrt(n_show)))
    _show_mosaic(fig.add_subplot(grid[0, 0]), real[:n_show], ncols, f"real ({result['n_real']} images)")
    _show_mosaic(fig.add_subplot(grid[0, 1]), fake[:n_show], ncols, f"fake ({result['n_fake']} images)")
    ax = fig.add_subplot(grid[0, 2])
    ax.set_axis_off()
    ax.text(0, 1, _key_numbers(result), va="top", family="monospace", fontsize=9, transform=ax.transAxes)
    plot_intensity_histograms(fig.add_subplot(grid[1, 0:2]), real, fake)
    plot_swd_levels(fig.add_subplot(grid[1, 2]), result)
    if with_pairs:
        train = getattr(train, "images", train)
        pairs = mem["top_pairs"][:n_pairs]
        top = torch.stack([fake[p["fake"]] for p in pairs])
        bottom = torch.stack([train[p["train"]] for p in pairs])
        _show_mosaic(fig.add_subplot(grid[2, :]), torch.cat([top, bottom]), len(pairs),
                     "most suspicious samples (top) above their nearest training images (bottom); "
                     f"flagged {mem['flagged_fraction']:.1%}")
    fig.suptitle(f"evaluation: {result['size']} px, seed {result.get('seed', 0)}")
    return fig


def _key_numbers(result: dict) -> str:
    from cxrlib.metrics.evaluation import kid_entries

    pr, div = result["precision_recall"], result["diversity"]
    lines = [
        f"SWD ×1e3     {result['swd']['avg']:8.2f}",
        f"  floor      {result['swd_floor']['avg']:8.2f}",
        f"hist. W1     {result['histogram_distance']:8.4f}",
        f"MS-SSIM fake {div['fake']:8.3f}",
        f"MS-SSIM real {div['real']:8.3f}",
        f"precision    {pr['precision']:8.3f}",
        f"recall       {pr['recall']:8.3f}",
        "FID          " + ("skipped" if result["fid"] is None else f"{result['fid']:8.2f}"),
    ]
    kids = kid_entries(result)
    if kids:  # beside FID, with the spread over subsets (unbiased: ≈ 0, may be < 0, when the sets are alike)
        lines.append("KID ×1e3")
        lines += [f"  {label:<11}" + ("skipped" if k is None else f"{1e3 * k['mean']:8.2f} ± {1e3 * k['std']:.2f}")
                  for _, label, k in kids]
    mem = result.get("memorization")
    if mem:
        lines.append(f"flagged      {mem['flagged_fraction']:8.1%}")
        if mem.get("holdout_flagged_fraction") is not None:
            lines.append(f"  held-out   {mem['holdout_flagged_fraction']:8.1%}")
    return "\n".join(lines)


# ======================================================================= training curves
def read_log(run_dir) -> list[dict]:
    """The records of ``RUN/log.jsonl`` (a line cut short by a killed run is skipped)."""
    import json
    from pathlib import Path

    records = []
    path = Path(run_dir) / "log.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def plot_log(log, title: str | None = None) -> Figure:
    """Training curves from log records (``Trainer.fit`` / callbacks) or a run directory's ``log.jsonl``.

    Three panels against images seen (thousands): the losses (``d_loss``, ``g_loss``); D's mean probabilities
    ``D(x)`` and ``D(G(z))`` (a healthy game keeps them apart but away from 1 and 0); and the augmentation
    probability ``aug_p`` with the learning rates relative to their start.
    """
    records = list(log) if isinstance(log, (list, tuple)) else read_log(log)
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    axes = fig.subplots(1, 3)
    if not records:
        for ax in axes:
            ax.text(0.5, 0.5, "no log records yet", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        fig.suptitle(title or "training curves")
        return fig
    kimg = [r.get("images_seen", r["step"]) / 1000 for r in records]

    def curve(ax, key, **kw):
        if key in records[0]:
            ax.plot(kimg, [r.get(key, float("nan")) for r in records], label=key, **kw)

    ax = axes[0]
    curve(ax, "d_loss")
    curve(ax, "g_loss")
    ax.set(title="losses", xlabel="images seen (thousands)", ylabel="loss")
    ax.legend()
    ax = axes[1]
    curve(ax, "D(x)")
    curve(ax, "D(G(z))")
    ax.axhline(0.5, color="gray", lw=0.8, ls=":")
    ax.set(title="discriminator outputs", xlabel="images seen (thousands)", ylabel="mean probability 'real'",
           ylim=(0, 1))
    ax.legend()
    ax = axes[2]
    curve(ax, "aug_p")
    for key in ("g_lr", "d_lr"):
        if key in records[0] and records[0][key]:
            ax.plot(kimg, [r[key] / records[0][key] for r in records], ls="--", label=f"{key} / start")
    ax.set(title="augmentation p and learning rates", xlabel="images seen (thousands)", ylabel="value",
           ylim=(-0.05, 1.1))
    ax.legend()
    fig.suptitle(title or f"training curves (step {records[-1]['step']})")
    return fig


def compare_logs(logs: dict, keys=("d_loss", "g_loss"), *, mark: float | None = None,
                 mark_label: str = "fine-tuning starts", title: str | None = None) -> Figure:
    """Training curves of several runs side by side: one panel per logged quantity, one line per run.

    logs: ``{run name: log records}`` (``Trainer.fit`` results or ``read_log(run_dir)``); keys: logged
    quantities (``d_loss``, ``g_loss``, ``D(x)``, ``D(G(z))``, ``g_lr``, …), plotted against images seen
    (thousands); mark: an x position (thousands of images) drawn as a dashed vertical line, e.g. where
    fine-tuning started.
    """
    keys = list(keys)
    fig = Figure(figsize=(4.4 * len(keys), 3.4), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        for i, (name, records) in enumerate(logs.items()):
            pts = [(r.get("images_seen", r["step"]) / 1000, r[key]) for r in records if r.get(key) is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, color=f"C{i % 10}", marker="." if len(pts) < 12 else None, label=name)
        if mark is not None:
            ax.axvline(mark, color="k", ls="--", lw=1, label=mark_label)
        if key in ("D(x)", "D(G(z))"):
            ax.set_ylim(0, 1)
            ax.axhline(0.5, color="gray", lw=0.8, ls=":")
        ylabel = {"g_lr": "G's learning rate", "d_lr": "D's learning rate"}.get(key, key.replace("_", " "))
        ax.set(title=key, xlabel="images seen (thousands)",
               ylabel="mean probability 'real'" if key.startswith("D(") else ylabel)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        axes[-1].legend(handles, labels, fontsize=8, loc="best")
    fig.suptitle(title or "training curves: " + ", ".join(keys))
    return fig
