"""Interactive tools for the notebooks: augmentation explorer, training dashboard, latent explorer, Turing test.

Each tool is plain logic (functions and small classes on arrays and tensors, testable with no display) plus a
thin function that returns an ``ipywidgets`` box. Nothing is displayed at import: a notebook shows a tool by
making it the last expression of a cell::

    from cxrlib import widgets
    widgets.augmentation_explorer(images)            # notebook 01
    dash = widgets.TrainingDashboard(every=5)        # notebook 04: trainer callback
    dash.widget
    widgets.latent_explorer(G)                       # notebook 06
    widgets.truncation_explorer(G)                   # notebook 09: a style generator
    widgets.turing_test(real, fake, n_rounds=10)     # notebook 06

Figures are drawn by matplotlib's Agg renderer (no pyplot, so no stray inline figures) into PNG bytes shown by
an ``ipywidgets.Image``; updates replace the bytes in place, so a cell's output never grows while a tool is
used. That works in JupyterLab, Notebook 7, VS Code, Colab and under nbval alike.

Images in: uint8 ``(N, 1, H, W)``, ``(N, H, W)`` or a list of ``(H, W)`` arrays (numpy or torch); generator
outputs are float ``(B, 1, S, S)`` in [-1, 1]. Only notebooks and the CLI import this module.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import numpy as np
import torch

from cxrlib.errors import CxrError
from cxrlib.images import to_uint8_array

# ======================================================================= shared helpers


to_uint8 = to_uint8_array  # old name, kept for older code (a numpy array; cxrlib.images.to_uint8 gives a tensor)


def as_image(image) -> np.ndarray:
    """One grayscale image as uint8 (H, W); accepts (H, W), (1, H, W), (H, W, 1), numpy, torch or PIL."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    a = np.asarray(image)
    if a.ndim == 3 and 1 in (a.shape[0], a.shape[-1]):
        a = a.reshape(a.shape[1:] if a.shape[0] == 1 else a.shape[:-1])
    if a.ndim != 2:
        raise CxrError(f"expected one grayscale image (H, W) or (1, H, W), got shape {tuple(a.shape)}")
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and a.size and a.min() >= -1.0 and a.max() <= 1.0:
            return to_uint8_array(a)  # generator range
        a = np.clip(a, 0, 255).astype(np.uint8)
    return a


def as_stack(images) -> np.ndarray:
    """Several grayscale images as uint8 (N, H, W); accepts (N, 1, H, W), (N, H, W) or a list of images."""
    if isinstance(images, (list, tuple)):
        return np.stack([as_image(im) for im in images]) if images else np.zeros((0, 1, 1), np.uint8)
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    a = np.asarray(images)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        raise CxrError(f"expected images (N, 1, H, W) or (N, H, W), got shape {tuple(a.shape)}")
    return np.stack([as_image(im) for im in a]) if a.dtype != np.uint8 else a


def grid(images, ncol: int | None = None, pad: int = 2, fill: int = 0) -> np.ndarray:
    """Tile images (N, H, W) or (N, 1, H, W) uint8 into one (rows·(H+pad)+pad, ncol·(W+pad)+pad) uint8 image."""
    a = as_stack(images)
    n, h, w = a.shape
    ncol = ncol or max(1, math.ceil(math.sqrt(n)))
    nrow = max(1, math.ceil(n / ncol))
    out = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad), fill, np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y : y + h, x : x + w] = a[i]
    return out


def png_bytes(image, min_side: int = 0) -> bytes:
    """A (H, W) uint8 image as PNG bytes, enlarged by whole pixels (nearest) until its short side ≥ min_side."""
    from PIL import Image

    a = as_image(image)
    k = max(1, math.ceil(min_side / max(1, min(a.shape)))) if min_side else 1
    if k > 1:  # whole-pixel blocks: an enlarged phantom must not look smoother than it is
        a = np.kron(a, np.ones((k, k), np.uint8))
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def new_figure(width: float, height: float, **margins):
    """A matplotlib Figure that never touches pyplot (no inline display, no global state).

    margins: ``Figure.subplots_adjust`` arguments; fixed margins redraw several times faster than a
    constrained layout, which matters when a slider redraws on a 2-core laptop."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(**{"left": 0.04, "right": 0.98, "bottom": 0.15, "top": 0.88, "wspace": 0.3, **margins})
    return fig


def figure_png(fig, dpi: int = 80) -> bytes:
    """Render a matplotlib Figure to PNG bytes with the Agg renderer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _image_widget(png: bytes = b""):
    """An ``ipywidgets.Image`` at its own pixel size, shrunk to fit a narrower cell (never stretched, never a
    scroll bar); an empty one is hidden until it gets an image (a browser would draw a broken-image icon)."""
    import ipywidgets as W

    # flex-start: a box would otherwise stretch the image to its width; the 8 px leave room for widget margins.
    image = W.Image(value=png, format="png", layout=W.Layout(max_width="calc(100% - 8px)", align_self="flex-start"))

    def follow(change):
        image.layout.display = None if change["new"] else "none"

    follow({"new": png})
    image.observe(follow, names="value")
    return image


_BOX_CLASS = None


def _box(children, still: bytes | None = None, what: str = "interactive widget", **kwargs):
    """An ``ipywidgets.VBox`` that reads well in a saved, rendered or nbval copy of a notebook too.

    Where the notebook shows it, ``still`` (a PNG of its first view) is displayed just above it: the live widget
    needs a running kernel, the still picture does not. Its text form is a sentence (``what``, and how to use it)
    instead of ``VBox(children=(…))``."""
    global _BOX_CLASS
    import ipywidgets as W

    if _BOX_CLASS is None:
        class StillBox(W.VBox):
            def _repr_mimebundle_(self, **kwargs):
                bundle = super()._repr_mimebundle_(**kwargs)
                if self._still:
                    from IPython.display import Image, display

                    display(Image(data=self._still, format="png"))
                if isinstance(bundle, dict) and "text/plain" in bundle:
                    bundle["text/plain"] = self._what
                return bundle

            def __repr__(self):
                return self._what

        _BOX_CLASS = StillBox
    box = _BOX_CLASS(children, **kwargs)
    box._still = still
    box._what = (f"[{what}: run the notebook to use it"
                 + ("; the picture above is its first view]" if still else "]"))
    return box


# ======================================================================= 1. augmentation explorer (notebook 01)

#: The original project's offline augmentation ranges, and wider ones that make the augmentation leak visible.
ORIGINAL_RANGES = {"brightness": (-0.1, 0.1), "contrast": (0.9, 1.1), "quality": (90, 100)}
SEED_RANGES = ORIGINAL_RANGES  # old name, kept for older code
STRONG_RANGES = {"brightness": (-0.5, 0.5), "contrast": (0.4, 1.6), "quality": (5, 100)}


def apply_augmentation(image, brightness: float = 0.0, contrast: float = 1.0, quality: int | None = None):
    """The original project's offline augmentation with explicit values (deterministic), as ``cxrlib.augment.original_augment``
    applies it with random ones.

    image: uint8 (H, W). brightness: added to intensities on a [0, 1] scale (±0.1 in the original project); contrast:
    factor that stretches intensities about the image mean (0.9–1.1); quality: JPEG re-encoding quality
    (90–100), or None for no re-encoding. Returns uint8 (H, W).
    """
    from PIL import Image

    from cxrlib.augment import adjust_brightness_contrast

    x = adjust_brightness_contrast(as_image(image).astype(np.float32) / 255.0, brightness, contrast)
    out = np.rint(x * 255.0).astype(np.uint8)
    if quality is not None:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        out = np.asarray(Image.open(buf).convert("L"), dtype=np.uint8)
    return out


def augment_preview(image, brightness: float = 0.0, contrast: float = 1.0, quality: int | None = None,
                    bins: int = 256) -> dict:
    """What one augmentation does to one image.

    image: uint8 (H, W). Returns ``image`` (augmented, uint8 (H, W)), ``diff`` (augmented − original, int16
    (H, W)), ``hist_before`` / ``hist_after`` (pixel counts over ``bins`` equal bins of 0..255, int64) and
    ``bin_edges`` (bins + 1,).
    """
    before = as_image(image)
    after = apply_augmentation(before, brightness, contrast, quality)
    edges = np.linspace(0, 256, bins + 1)
    return {
        "image": after,
        "diff": after.astype(np.int16) - before.astype(np.int16),
        "hist_before": np.histogram(before, bins=edges)[0],
        "hist_after": np.histogram(after, bins=edges)[0],
        "bin_edges": edges,
    }


def augment_preview_png(image, brightness: float = 0.0, contrast: float = 1.0, quality: int | None = None) -> bytes:
    """Original | augmented | difference | both histograms, as one PNG figure."""
    before = as_image(image)
    p = augment_preview(before, brightness, contrast, quality, bins=64)
    fig = new_figure(12, 3.2, left=0.01, bottom=0.16, wspace=0.45)
    axes = fig.subplots(1, 4, width_ratios=[1, 1, 1.2, 1.5])
    axes[0].imshow(before, cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("original")
    q = "no JPEG" if quality is None else f"JPEG q={int(quality)}"
    axes[1].imshow(p["image"], cmap="gray", vmin=0, vmax=255)
    axes[1].set_title(f"b={brightness:+.2f} · c={contrast:.2f} · {q}", fontsize=9)
    max_diff = int(np.abs(p["diff"]).max())
    im = axes[2].imshow(p["diff"], cmap="RdBu_r", vmin=-max(1, max_diff), vmax=max(1, max_diff))
    axes[2].set_title(f"augmented − original (max |Δ| = {max_diff})", fontsize=9)
    fig.colorbar(im, ax=axes[2], shrink=0.8)
    for ax in axes[:3]:
        ax.set_xticks([])
        ax.set_yticks([])
    centres = (p["bin_edges"][:-1] + p["bin_edges"][1:]) / 2
    axes[3].fill_between(centres, p["hist_before"], step="mid", alpha=0.4, label=f"original (mean {before.mean():.0f})")
    axes[3].step(centres, p["hist_after"], where="mid", color="C3", label=f"augmented (mean {p['image'].mean():.0f})")
    axes[3].set(title="intensity histogram", xlabel="pixel value", ylabel="pixels", xlim=(0, 255))
    axes[3].legend(fontsize=8)
    return figure_png(fig)


def _set_range(slider, lo, hi) -> None:
    """Change a slider's range without ever passing through min > max (ipywidgets rejects that)."""
    if lo > slider.max:
        slider.max = hi
        slider.min = lo
    else:
        slider.min = lo
        slider.max = hi


def augmentation_explorer(images, index: int = 0):
    """Sliders for brightness, contrast and JPEG quality over one of ``images``; shows the effect and histograms.

    images: uint8 (N, 1, H, W), (N, H, W) or a list of (H, W). The "strong" toggle widens the ranges far beyond
    the original project's, to show what a generator trained on such copies would learn to reproduce (the augmentation leak).
    Returns an ``ipywidgets.VBox``.
    """
    import ipywidgets as W

    stack = as_stack(images)
    if not len(stack):
        raise CxrError("the augmentation explorer needs at least one image")
    style = {"description_width": "90px"}
    pick = W.IntSlider(min(index, len(stack) - 1), 0, len(stack) - 1, description="image", style=style,
                       continuous_update=False, disabled=len(stack) == 1)
    (b0, b1), (c0, c1), (q0, q1) = ORIGINAL_RANGES.values()
    bright = W.FloatSlider(0.0, min=b0, max=b1, step=0.01, description="brightness", style=style,
                           continuous_update=False, readout_format="+.2f")
    contrast = W.FloatSlider(1.0, min=c0, max=c1, step=0.01, description="contrast", style=style,
                             continuous_update=False)
    quality = W.IntSlider(95, min=q0, max=q1, description="JPEG quality", style=style, continuous_update=False)
    jpeg = W.Checkbox(True, description="re-encode as JPEG", indent=False)
    strong = W.ToggleButton(False, description="strong ranges", icon="bolt", _dom_classes=["cxr-aug-strong"],
                            tooltip="ranges far wider than the original project's: watch what a GAN would copy")
    note = W.HTML()
    out = _image_widget()
    for w, cls in ((bright, "cxr-aug-brightness"), (contrast, "cxr-aug-contrast"), (quality, "cxr-aug-quality")):
        w.add_class(cls)

    holding = []  # non-empty while the toggle moves several sliders: draw once, afterwards

    def redraw(_=None):
        if holding:
            return
        q = quality.value if jpeg.value else None
        quality.disabled = not jpeg.value
        out.value = augment_preview_png(stack[pick.value], bright.value, contrast.value, q)

    def toggle_strong(change):
        ranges = STRONG_RANGES if change["new"] else ORIGINAL_RANGES
        holding.append(True)
        try:
            for slider, key in ((bright, "brightness"), (contrast, "contrast"), (quality, "quality")):
                _set_range(slider, *ranges[key])
        finally:
            holding.clear()
        note.value = (
            "<b>Strong ranges.</b> Offline copies made like this become part of the “real” data: the generator "
            "is trained to reproduce washed-out, crushed or blocky X-rays too. Prefer DiffAugment/ADA, which "
            "augments real and fake alike inside training." if change["new"] else ""
        )
        redraw()

    for w in (pick, bright, contrast, quality, jpeg):
        w.observe(redraw, names="value")
    strong.observe(toggle_strong, names="value")
    redraw()
    controls = W.HBox([W.VBox([pick, bright, contrast]), W.VBox([quality, W.HBox([jpeg, strong])])])
    return _box([controls, note, out], out.value, "augmentation explorer (sliders: brightness, contrast, JPEG)",
                layout=W.Layout(width="100%"))


# ======================================================================= 2. training dashboard (notebook 04)


class TrainingDashboard:
    """Live view of a training run: losses, D(x) / D(G(z)) and samples from fixed z; a ``Trainer`` callback.

    ``dash = TrainingDashboard(every=5)``; show ``dash.widget`` in one cell, then pass ``callbacks=[dash]`` to the
    trainer. Each call ``dash(trainer, record)`` keeps ``record`` (a dict with ``step``, ``d_loss``, ``g_loss``,
    ``D(x)``, ``D(G(z))``, ``aug_p``, …); every ``every``-th call it draws ``trainer.sample(n_samples, seed=seed,
    ema=ema)`` (uint8 (n, 1, S, S)) and redraws the figure in place. ``trainer`` may be None (replaying a log).
    Grids of samples are kept in ``frames`` as ``(step, (H, W) uint8)`` for ``samples_animation``.
    """

    def __init__(self, every: int = 1, n_samples: int = 16, seed: int = 0, ema: bool = True, max_frames: int = 120):
        if every < 1:
            raise CxrError(f"TrainingDashboard(every={every}): every must be at least 1")
        self.every, self.n_samples, self.seed, self.ema, self.max_frames = every, n_samples, seed, ema, max_frames
        self.records: list[dict] = []
        self.frames: list[tuple[int, np.ndarray]] = []
        self._calls = 0
        self._box = self._image = self._status = None

    def __call__(self, trainer, record: dict) -> None:
        self.records.append(dict(record))
        self._calls += 1
        if self._calls % self.every:
            return
        if trainer is not None and self.n_samples:
            samples = trainer.sample(self.n_samples, seed=self.seed, ema=self.ema)
            self.frames.append((int(record.get("step", len(self.records))), grid(samples)))
            if len(self.frames) > self.max_frames:  # halve the time resolution rather than grow without bound
                self.frames = self.frames[::2]
        self.redraw()

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one logged quantity, skipping records that lack it."""
        pts = [(r.get("step", i), r[key]) for i, r in enumerate(self.records) if r.get(key) is not None]
        if not pts:
            return np.zeros(0), np.zeros(0)
        s, v = zip(*pts)
        return np.asarray(s, dtype=float), np.asarray(v, dtype=float)

    def status_text(self) -> str:
        """One line about the latest record: step, images seen, time, losses, D outputs, augmentation p."""
        if not self.records:
            return "waiting for the first log record…"
        r = self.records[-1]
        parts = [f"step {r.get('step', len(self.records))}"]
        if "images_seen" in r:
            parts.append(f"{int(r['images_seen']):,} images")
        if "seconds" in r:
            parts.append(f"{float(r['seconds']):.1f} s")
        for key in ("d_loss", "g_loss", "D(x)", "D(G(z))", "aug_p"):
            if r.get(key) is not None:
                parts.append(f"{key} {float(r[key]):.3f}")
        return " · ".join(parts)

    def render_png(self) -> bytes:
        """Losses | discriminator outputs | latest fixed-z samples, as one PNG figure."""
        fig = new_figure(12, 3.4, left=0.06, wspace=0.25)
        ax_loss, ax_d, ax_s = fig.subplots(1, 3, width_ratios=[1.2, 1.2, 1])
        for key, colour in (("d_loss", "C0"), ("g_loss", "C1")):
            s, v = self.series(key)
            if len(s):
                ax_loss.plot(s, v, color=colour, label=key, marker="o" if len(s) < 20 else None, ms=3)
        ax_loss.set(title="losses", xlabel="step", ylabel="loss")
        for key, colour, style in (("D(x)", "C2", "-"), ("D(G(z))", "C3", "-"), ("aug_p", "0.5", "--")):
            s, v = self.series(key)
            if len(s):
                ax_d.plot(s, v, style, color=colour, label=key, marker="o" if len(s) < 20 else None, ms=3)
        ax_d.set(title="discriminator outputs", xlabel="step", ylabel="probability")
        for ax in (ax_loss, ax_d):
            if ax.lines:
                ax.legend(fontsize=8, loc="best")
            ax.grid(alpha=0.3)
        if self.frames:
            step, g = self.frames[-1]
            ax_s.imshow(g, cmap="gray", vmin=0, vmax=255)
            ax_s.set_title(f"fixed-z samples, step {step}")
        else:
            ax_s.set_title("samples appear here")
        ax_s.set_xticks([])
        ax_s.set_yticks([])
        return figure_png(fig)

    @property
    def widget(self):
        """The dashboard's ``ipywidgets.VBox`` (the same object every time; it is updated in place)."""
        if self._box is None:
            import ipywidgets as W

            self._status = W.HTML(self.status_text())
            self._status.add_class("cxr-dashboard-status")
            self._image = _image_widget(self.render_png())
            self._box = _box([self._status, self._image], None, "training dashboard (live while a run trains)")
        return self._box

    def redraw(self) -> None:
        """Update the widget (only when it has been created: a dashboard nobody looks at costs nothing)."""
        if self._box is not None:
            self._status.value = self.status_text()
            self._image.value = self.render_png()


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def load_sample_frames(run_dir) -> list[tuple[str, np.ndarray]]:
    """The sample grids a training run wrote: ``run_dir/samples/*.png`` (or ``run_dir/*.png``) in step order.

    Returns (label, (H, W) uint8) pairs; the label is the step for files named ``step_000120.png``."""
    from PIL import Image

    root = Path(run_dir)
    folder = root / "samples" if (root / "samples").is_dir() else root
    files = sorted(folder.glob("*.png"), key=_natural_key)
    if not files:
        raise CxrError(f"no sample images in '{folder}': train with the CLI or a Trainer first")
    labels = [int(m.group(1)) if (m := re.fullmatch(r"step_?(\d+)", f.stem)) else f.stem for f in files]
    return [(lab, np.asarray(Image.open(f).convert("L"), dtype=np.uint8)) for lab, f in zip(labels, files)]


def samples_animation(frames, interval_ms: int = 400, min_side: int = 256):
    """A Play button and slider over frames of samples: how fixed-z samples evolve during training.

    frames: a list of (H, W) uint8 grids, of (label, grid) pairs (``TrainingDashboard.frames``), or of image
    batches (N, 1, S, S) which are tiled. Returns an ``ipywidgets.VBox``.
    """
    import ipywidgets as W

    if len(frames) == 0:
        raise CxrError("no frames to animate: run training with a TrainingDashboard (or pass sample grids)")
    labels, pngs = [], []
    for i, f in enumerate(frames):
        label, img = f if isinstance(f, tuple) else (i, f)
        a = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        pngs.append(png_bytes(grid(a) if a.ndim in (3, 4) and a.shape[0] > 1 else a, min_side=min_side))
        labels.append(f"step {label}" if isinstance(label, (int, np.integer)) else str(label))
    play = W.Play(0, min=0, max=len(pngs) - 1, interval=interval_ms, description="play", repeat=True)
    slider = W.IntSlider(0, min=0, max=len(pngs) - 1, description="frame", readout=False)
    W.jslink((play, "value"), (slider, "value"))  # the browser drives the slider; the kernel swaps the image
    caption = W.Label(f"{labels[0]} (1/{len(pngs)})")
    image = _image_widget(pngs[0])

    def show(change):
        i = change["new"]
        image.value = pngs[i]
        caption.value = f"{labels[i]} ({i + 1}/{len(pngs)})"

    slider.observe(show, names="value")
    return _box([W.HBox([play, slider, caption]), image], pngs[0],
                f"animation of {len(pngs)} frames of samples ({labels[0]} to {labels[-1]}; Play button)")


def animate_samples(source, interval_ms: int = 400):
    """``samples_animation`` over a run folder's ``samples/*.png`` or over a list of grids."""
    frames = load_sample_frames(source) if isinstance(source, (str, Path)) else source
    return samples_animation(frames, interval_ms=interval_ms)


# ======================================================================= 3. latent space (notebook 06)


def truncated_z(n: int, z_dim: int, threshold: float = math.inf,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """n latent vectors with the truncation trick of BigGAN (Brock et al. 2019): z ~ N(0, I), then every
    component with |z| > ``threshold`` is drawn again, from the same ``generator``, until none is left.

    Returns float (n, z_dim) on the CPU, each component a standard normal truncated to [−threshold, threshold]
    (components already inside keep their first draw, so lowering the threshold changes only the tails).
    threshold = inf (no truncation) gives exactly ``torch.randn(n, z_dim, generator=generator)``. Lower
    thresholds give more typical, less varied samples; the vector also gets shorter (|z| ≈ 0.54·√z_dim at
    threshold 1), so G is asked for latents it rarely saw: whether they look better must be measured.
    """
    if not threshold > 0:
        raise CxrError(f"truncation threshold must be > 0 (math.inf for none), got {threshold!r}")
    z = torch.randn(int(n), int(z_dim), generator=generator)
    while True:
        outside = z.abs() > threshold
        count = int(outside.sum())
        if not count:
            return z
        z[outside] = torch.randn(count, generator=generator)


def latent(z_dim: int, seed: int = 0, threshold: float = math.inf) -> torch.Tensor:
    """The latent vector a seed names: float (z_dim,), the same on every machine (CPU generator).

    ``truncated_z`` of one vector from a generator seeded with ``seed``: z ~ N(0, I) without truncation
    (threshold = inf), else every component resampled into [−threshold, threshold]."""
    return truncated_z(1, z_dim, threshold, torch.Generator().manual_seed(int(seed)))[0]


def _t_shape(t, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t if t.dim() == 0 else t.reshape(-1, *([1] * like.dim()))


def lerp(z0: torch.Tensor, z1: torch.Tensor, t) -> torch.Tensor:
    """Straight-line interpolation. z0, z1: (..., D); t: float → (..., D), or (T,) → (T, ..., D)."""
    t = _t_shape(t, z0)
    return (1 - t) * z0 + t * z1


def slerp(z0: torch.Tensor, z1: torch.Tensor, t, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation along the great circle from z0 to z1 (Shoemake 1985; White 2016 for GANs).

    z0, z1: (..., D); t: float → (..., D), or (T,) → (T, ..., D). t=0 gives z0, t=1 gives z1. Between them the
    norm moves smoothly from |z0| to |z1| (constant when they are equal), where ``lerp`` would pass through
    short vectors near the origin that a Gaussian latent almost never produces. Falls back to ``lerp`` for
    (anti)parallel vectors.
    """
    t = _t_shape(t, z0)
    u0 = z0 / z0.norm(dim=-1, keepdim=True).clamp_min(eps)
    u1 = z1 / z1.norm(dim=-1, keepdim=True).clamp_min(eps)
    omega = torch.acos((u0 * u1).sum(-1, keepdim=True).clamp(-1.0, 1.0))
    sin_omega = torch.sin(omega)
    safe = sin_omega.abs() > 1e-6
    denom = torch.where(safe, sin_omega, torch.ones_like(sin_omega))
    spherical = (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / denom
    return torch.where(safe, spherical, (1 - t) * z0 + t * z1)


def truncate(z: torch.Tensor, psi: float, z_mean: torch.Tensor | None = None) -> torch.Tensor:
    """Linear truncation: pull z towards a mean latent, ``z_mean + psi · (z − z_mean)``.

    z: (..., D); psi: 1 = unchanged, 0 = the mean. This is StyleGAN's form, meant for its learnt W space, whose
    mean is itself a typical latent. In the z space of the course's generators the mean 0 is a point G never
    saw (|z| ≈ √D): there use ``truncated_z``, BigGAN's resampling, as notebook 06 and the latent explorer do.
    z_mean: (D,), default 0 (the mean of N(0, I)).
    """
    if z_mean is None:
        return z * psi
    return z_mean + psi * (z - z_mean)


def walk_latents(z_dim: int, seed: int = 0, steps: int = 16, step_size: float = 0.2,
                 threshold: float = math.inf) -> torch.Tensor:
    """A walk along a great circle of the latent sphere starting at ``latent(z_dim, seed, threshold)``.

    Returns float (steps, z_dim): z_k = cos(kθ)·z0 + sin(kθ)·v with θ = step_size radians and v a random
    direction (drawn with the same truncation) orthogonal to z0 with the same norm, so every z_k is as typical
    as z0 and consecutive samples are equally far apart; after 2π/θ steps the walk returns to z0.
    """
    z0 = latent(z_dim, seed, threshold)
    v = latent(z_dim, int(seed) + 7919, threshold)
    v = v - (v @ z0) / (z0 @ z0) * z0
    v = v / v.norm() * z0.norm()
    k = torch.arange(int(steps), dtype=z0.dtype)[:, None] * float(step_size)
    return torch.cos(k) * z0 + torch.sin(k) * v


@torch.no_grad()
def generate(G, z: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """G applied to latents in eval mode (BatchNorm statistics, no dropout), in batches.

    z: (N, z_dim) → float (N, 1, S, S) in [-1, 1] on the CPU. G's train/eval mode is restored afterwards.
    """
    from cxrlib.models import evaluating

    device = next(G.parameters()).device
    with evaluating(G):
        z = z.reshape(-1, G.z_dim)
        return torch.cat([G(z[i : i + batch].to(device)).float().cpu() for i in range(0, len(z), batch)])


def interpolate(G, z0: torch.Tensor, z1: torch.Tensor, steps: int = 8, method: str = "slerp") -> torch.Tensor:
    """Images along the path from z0 to z1. z0, z1: (z_dim,); returns float (steps, 1, S, S) in [-1, 1].

    method: ``"slerp"`` (great circle, default) or ``"lerp"`` (straight line). The first and last images are
    G(z0) and G(z1); to interpolate between truncated samples, pass ``latent(z_dim, seed, threshold)``s.
    """
    paths = {"slerp": slerp, "lerp": lerp}
    if method not in paths:
        raise CxrError(f"unknown interpolation {method!r}: choose 'slerp' or 'lerp'")
    t = torch.linspace(0, 1, int(steps))
    return generate(G, paths[method](z0.reshape(-1).cpu(), z1.reshape(-1).cpu(), t))


def latent_walk(G, seed: int = 0, steps: int = 16, step_size: float = 0.2,
                threshold: float = math.inf) -> torch.Tensor:
    """Images along ``walk_latents(G.z_dim, seed, steps, step_size, threshold)``: float (steps, 1, S, S) in
    [-1, 1]."""
    return generate(G, walk_latents(G.z_dim, seed, steps, step_size, threshold))


def latent_views(G, seed: int = 0, t: float = 0.5, threshold: float = math.inf, walk_step: int = 0,
                 step_size: float = 0.2, method: str = "slerp") -> dict:
    """The four images the latent explorer shows, from one batched forward pass.

    A = latent(seed, threshold), B = latent(seed + 1, threshold), the point at ``t`` between them, and step
    ``walk_step`` of the walk from A (``truncated_z``: components beyond the threshold resampled; the points
    between truncated latents are their mixtures). Returns ``images`` float (4, 1, S, S) in [-1, 1] and their
    ``titles``.
    """
    z_a, z_b = latent(G.z_dim, seed, threshold), latent(G.z_dim, seed + 1, threshold)
    z_t = (slerp if method == "slerp" else lerp)(z_a, z_b, float(t))
    z_w = walk_latents(G.z_dim, seed, walk_step + 1, step_size, threshold)[-1]
    images = generate(G, torch.stack([z_a, z_t, z_b, z_w]))
    titles = [f"A (seed {seed})", f"{method} t = {t:.2f}", f"B (seed {seed + 1})", f"walk step {walk_step}"]
    return {"images": images, "titles": titles}


#: the latent explorer's truncation choices: label → threshold (math.inf = no truncation)
TRUNCATION_CHOICES = {"off": math.inf, "2.0": 2.0, "1.5": 1.5, "1.0": 1.0, "0.5": 0.5}


def _truncation_label(threshold: float) -> str:
    return "no truncation" if math.isinf(threshold) else f"truncation |z| ≤ {threshold:g}"


def latent_views_png(views: dict, threshold: float) -> bytes:
    fig = new_figure(10, 2.9, left=0.01, right=0.99, bottom=0.02, top=0.82, wspace=0.05)
    axes = fig.subplots(1, 4)
    for ax, img, title in zip(axes, to_uint8_array(views["images"][:, 0]), views["titles"]):
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(_truncation_label(threshold), fontsize=10)
    return figure_png(fig)


def latent_explorer(G, seed: int = 0, walk_steps: int = 64, step_size: float = 0.2, interval_ms: int = 300):
    """Interpolate between two seeds' samples, truncate, and walk the latent space of a generator.

    G: a generator with ``.z_dim`` mapping (B, z_dim) to (B, 1, S, S) in [-1, 1]. Controls: a seed box (A = seed,
    B = seed + 1), a t slider between them, slerp/lerp, a truncation slider (``TRUNCATION_CHOICES``: the threshold
    of ``truncated_z``) and a "walk" Play button.
    Returns an ``ipywidgets.VBox``.
    """
    import ipywidgets as W

    style = {"description_width": "70px"}
    seed_box = W.BoundedIntText(seed, min=0, max=2**31 - 2, description="seed A", style=style,
                                layout=W.Layout(width="170px"))
    t = W.FloatSlider(0.5, min=0.0, max=1.0, step=0.05, description="t (A→B)", style=style, continuous_update=False)
    truncation = W.SelectionSlider(options=list(TRUNCATION_CHOICES.items()), value=math.inf,
                                   description="truncation", style=style, continuous_update=False)
    method = W.ToggleButtons(options=["slerp", "lerp"], value="slerp", style={"button_width": "60px"})
    walk = W.Play(0, min=0, max=walk_steps - 1, interval=interval_ms, description="walk", repeat=True)
    walk_label = W.Label("walk")
    t.add_class("cxr-latent-t")
    truncation.add_class("cxr-latent-truncation")
    image = _image_widget()

    def redraw(_=None):
        views = latent_views(G, seed_box.value, t.value, truncation.value, walk.value, step_size, method.value)
        image.value = latent_views_png(views, truncation.value)

    for w in (seed_box, t, truncation, method, walk):
        w.observe(redraw, names="value")
    redraw()
    controls = W.HBox([W.VBox([W.HBox([seed_box, method]), W.HBox([walk_label, walk])]), W.VBox([t, truncation])])
    return _box([controls, image], image.value, "latent explorer (seed, t, slerp/lerp, truncation, walk)")


# ======================================================================= 3b. truncation in W (notebook 09)


def truncation_views(G, psi: float, seed: int = 0, n: int = 8) -> torch.Tensor:
    """n images of a style generator at truncation ψ (w = w_avg + ψ·(w − w_avg)), the same latents (``seed``)
    for every ψ, with the stored noise maps: float (n, 1, S, S) in [-1, 1]."""
    from cxrlib.models import evaluating
    from cxrlib.models.style import style_network

    with evaluating(style_network(G)) as net, torch.no_grad():
        return net(torch.randn(n, net.z_dim, generator=torch.Generator().manual_seed(seed)), truncation=psi)


def truncation_views_png(images, psi: float, average=None) -> bytes:
    """One row of images at ψ (and the image of w_avg itself, ``average``, at the left when given) as PNG."""
    imgs = list(to_uint8_array(images[:, 0]))
    titles = [f"latent {i}" for i in range(len(imgs))]
    if average is not None:
        imgs, titles = [to_uint8_array(average[0, 0])] + imgs, ["w_avg (ψ = 0)"] + titles
    fig = new_figure(1.3 * len(imgs), 1.75, left=0.01, right=0.99, bottom=0.02, top=0.78, wspace=0.05)
    for ax, img, title in zip(fig.subplots(1, len(imgs)), imgs, titles):
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"truncation ψ = {psi:.2f}: the same 8 latents, pulled toward the average w", fontsize=9)
    return figure_png(fig)


def truncation_explorer(G, seed: int = 0, n: int = 8):
    """A ψ slider (0.05–1) over n images of a style generator from the same latents, with the image of w_avg.
    Returns an ``ipywidgets.VBox``."""
    import ipywidgets as W

    from cxrlib.models import evaluating
    from cxrlib.models.style import style_network

    with evaluating(style_network(G)) as net, torch.no_grad():
        average = net.synthesis(net.w_avg[None, None].expand(1, net.num_ws, -1), "const")
    psi = W.FloatSlider(1.0, min=0.05, max=1.0, step=0.05, description="ψ", continuous_update=False,
                        style={"description_width": "30px"})
    psi.add_class("cxr-truncation-psi")
    image = _image_widget()

    def redraw(_=None):
        image.value = truncation_views_png(truncation_views(G, psi.value, seed, n), psi.value, average)

    psi.observe(redraw, names="value")
    redraw()
    return _box([psi, image], image.value, "truncation explorer (a ψ slider)")


# ======================================================================= 4. visual Turing test (notebook 06)


class TuringTest:
    """Real or fake? A short quiz over real and generated images, with a score and a reveal.

    real, fake: uint8 images (N, 1, H, W), (N, H, W) or lists, at the same size (a size difference would give
    the answer away). n_rounds rounds, half real and half fake in a seeded random order; images are drawn without
    replacement while the pools last.
    """

    def __init__(self, real, fake, n_rounds: int = 10, seed: int = 0):
        self.real, self.fake = as_stack(real), as_stack(fake)
        if not len(self.real) or not len(self.fake):
            raise CxrError("the Turing test needs at least one real and one fake image")
        if self.real.shape[1:] != self.fake.shape[1:]:
            raise CxrError(
                f"real images are {self.real.shape[1]}×{self.real.shape[2]} but fake ones "
                f"{self.fake.shape[1]}×{self.fake.shape[2]}: resize one side first (the size gives the answer away)"
            )
        if n_rounds < 1:
            raise CxrError(f"TuringTest(n_rounds={n_rounds}): play at least one round")
        rng = np.random.default_rng(seed)
        truth = np.array([True] * (n_rounds - n_rounds // 2) + [False] * (n_rounds // 2))
        rng.shuffle(truth)
        picks = {}
        for is_real, pool in ((True, self.real), (False, self.fake)):
            k = int((truth == is_real).sum())
            picks[is_real] = list(rng.choice(len(pool), size=k, replace=k > len(pool)))
        self.rounds = [(bool(r), int(picks[bool(r)].pop())) for r in truth]
        self.history: list[dict] = []

    @property
    def n_rounds(self) -> int:
        return len(self.rounds)

    @property
    def done(self) -> bool:
        return len(self.history) >= self.n_rounds

    def _image(self, is_real: bool, index: int) -> np.ndarray:
        return (self.real if is_real else self.fake)[index]

    def current(self) -> np.ndarray | None:
        """The image to judge now, uint8 (H, W); None when every round has been answered."""
        return None if self.done else self._image(*self.rounds[len(self.history)])

    def answer(self, said_real: bool) -> bool:
        """Judge the current image (True = "real"); returns whether that was correct and moves on."""
        if self.done:
            raise CxrError(f"the test is over ({self.n_rounds} rounds): see score and reveal()")
        is_real, index = self.rounds[len(self.history)]
        correct = bool(said_real) == is_real
        self.history.append({"round": len(self.history), "is_real": is_real, "index": index,
                             "said_real": bool(said_real), "correct": correct})
        return correct

    @property
    def score(self) -> int:
        """Correct answers so far."""
        return sum(h["correct"] for h in self.history)

    @property
    def accuracy(self) -> float:
        """Fraction correct so far (nan before the first answer); 0.5 is what guessing scores."""
        return self.score / len(self.history) if self.history else float("nan")

    @property
    def fakes_passed(self) -> int:
        """Generated images judged real: the generator's score."""
        return sum(1 for h in self.history if not h["is_real"] and h["said_real"])

    def reveal(self) -> list[dict]:
        """The answered rounds with the truth: ``image`` uint8 (H, W), ``is_real``, ``said_real``, ``correct``."""
        return [dict(h, image=self._image(h["is_real"], h["index"])) for h in self.history]

    def summary(self) -> str:
        n = len(self.history)
        if not n:
            return f"round 1 of {self.n_rounds}: real or fake?"
        fakes = sum(1 for h in self.history if not h["is_real"])
        head = "done" if self.done else f"round {n + 1} of {self.n_rounds}"
        return f"{head} · score {self.score}/{n} · fakes judged real: {self.fakes_passed}/{fakes}"

    def reveal_png(self, ncol: int = 5) -> bytes:
        items = self.reveal()
        if not items:
            return b""
        ncol = min(ncol, len(items))
        nrow = math.ceil(len(items) / ncol)
        fig = new_figure(2.0 * ncol, 2.2 * nrow, left=0.01, right=0.99, bottom=0.01, top=0.9, wspace=0.05, hspace=0.25)
        axes = np.atleast_1d(fig.subplots(nrow, ncol)).ravel()
        for ax in axes:
            ax.axis("off")
        for ax, it in zip(axes, items):
            ax.imshow(it["image"], cmap="gray", vmin=0, vmax=255)
            truth = "real" if it["is_real"] else "fake"
            said = "real" if it["said_real"] else "fake"
            ax.set_title(f"{truth} · you: {said} {'✓' if it['correct'] else '✗'}", fontsize=9,
                         color="green" if it["correct"] else "red")
        return figure_png(fig)

    def widget(self, min_side: int = 256):
        """Buttons "Real" / "Fake", a running score and a "Reveal" button; returns an ``ipywidgets.VBox``."""
        import ipywidgets as W

        image = _image_widget(png_bytes(self.current(), min_side=min_side))
        real_b = W.Button(description="Real", button_style="success", icon="check")
        fake_b = W.Button(description="Fake", button_style="danger", icon="times")
        reveal_b = W.Button(description="Reveal", icon="eye")
        score = W.HTML(self.summary())
        revealed = _image_widget()
        real_b.add_class("cxr-turing-real")
        fake_b.add_class("cxr-turing-fake")
        reveal_b.add_class("cxr-turing-reveal")
        score.add_class("cxr-turing-score")

        def judge(said_real):
            def click(_):
                if self.done:
                    return
                self.answer(said_real)
                score.value = self.summary()
                if self.done:
                    real_b.disabled = fake_b.disabled = True
                    revealed.value = self.reveal_png()
                else:
                    image.value = png_bytes(self.current(), min_side=min_side)

            return click

        real_b.on_click(judge(True))
        fake_b.on_click(judge(False))
        reveal_b.on_click(lambda _: setattr(revealed, "value", self.reveal_png()))
        return _box([W.HBox([real_b, fake_b, reveal_b]), score, image, revealed], image.value,
                    f"visual Turing test, {self.n_rounds} rounds (buttons Real / Fake / Reveal)")


def turing_test(real, fake, n_rounds: int = 10, seed: int = 0):
    """A ``TuringTest(real, fake, n_rounds, seed)`` as a widget (its logic is at ``box.test``)."""
    test = TuringTest(real, fake, n_rounds=n_rounds, seed=seed)
    box = test.widget()
    box.test = test
    return box
