"""An independent classifier trained on *real* X-rays: a judge of a generator's classes and of augmentation.

A conditional GAN is asked for "pneumonia"; whether it drew pneumonia is not something its own discriminator
can answer (it learned alongside the generator). A separate classifier trained only on real images can:

* ``class_consistency`` — the share of images generated for class c that the classifier calls c. Read it
  beside the classifier's own accuracy on held-out real images of c: the ceiling a perfect generator reaches.
* the augmentation study — train the classifier on real / real + offline-augmented / real + synthetic /
  synthetic only, score ROC-AUC (``roc_auc``, ``evaluate_classifier``) on held-out real images, over seeds.

The network is deliberately small (about 0.1 M parameters at ``width=16``): it looks at the image at no more
than 64 px (``work_size``; pneumonia here is a large-scale opacity, and a fixed working size keeps one step as
cheap at 512 px as at 64 px), so a few hundred steps take seconds on a laptop CPU and many seeds are
affordable. It uses GroupNorm, not BatchNorm: a prediction then depends on the image alone, never on what
else is in the batch, and train and eval modes differ only by dropout.

Training is deterministic given ``seed`` and leaves the caller's random state alone: the initialisation and
dropout run under ``torch.random.fork_rng``, and batches and augmentation are drawn from a private
``torch.Generator``. Batches are class-balanced (a class first, uniformly, then an image of it), so a training
set with few pneumonia images does not teach the classifier to say "normal". The on-the-fly augmentation is a
small shift and brightness/contrast jitter, never a horizontal flip: the heart is on the patient's left.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrlib import config
from cxrlib.errors import CxrError
from cxrlib.images import as_images, to_float
from cxrlib.models import evaluating

WORK_SIZE = 64  # the side the classifier looks at: larger inputs are area-downsampled to it
SHIFT_FRACTION = 1 / 16  # on-the-fly translation: up to this share of the side, each way
BRIGHTNESS = 0.1  # ± shift in [0, 1] intensity units (the offline augmentation's range, cxrlib.augment)
CONTRAST = (0.9, 1.1)  # factor around each image's mean
VAL_CHECKS = 10  # with ``val``: times the validation AUC is measured during training (the last step included)


# ======================================================================= the network
def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """Conv3x3 → GroupNorm → ReLU (no conv bias: the norm's shift replaces it)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(min(8, c_out // 4) or 1, c_out),
        nn.ReLU(inplace=True),
    )


class XrayClassifier(nn.Module):
    """A small CNN: images ``(B, 1, S, S)`` float in [-1, 1] → class logits ``(B, n_classes)``.

    Inputs larger than ``work_size`` are average-pooled to it first, so any side from 32 to 512 px works and
    costs the same. Then five Conv3x3-GroupNorm-ReLU blocks, each halving the side (channels w, 2w, 2w, 4w,
    8w; 64 → 2 px), global average pooling, dropout and a linear layer. Five halvings give a receptive field
    of 63 px, the whole working image: a consolidation makes the lung as bright as the heart beside it, and
    only a unit that sees where it is can tell the two apart (a stride-1 stem and four halvings, 33 px, gave
    held-out AUC 0.80–0.97 over seeds on 64 px phantoms; this network 0.99–1.00, in a third of the time).
    ``classes``: the class names, set by :func:`train_classifier` (None on a fresh network).
    """

    def __init__(
        self, n_classes: int = 2, width: int = 16, *, dropout: float = 0.2, work_size: int = WORK_SIZE
    ):
        super().__init__()
        if int(n_classes) < 2:
            raise CxrError(f"a classifier needs at least 2 classes, got n_classes={n_classes}")
        if int(width) < 4:
            raise CxrError(f"classifier width must be at least 4, got {width}")
        w = int(width)
        self.n_classes, self.width, self.work_size = int(n_classes), w, int(work_size)
        self.classes: list[str] | None = None
        chans = [1, w, 2 * w, 2 * w, 4 * w, 8 * w]
        self.features = nn.Sequential(*(_block(a, b, 2) for a, b in zip(chans[:-1], chans[1:])))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(8 * w, self.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 1:
            raise CxrError(f"the classifier takes grayscale images shaped (B, 1, S, S), got {tuple(x.shape)}")
        if x.shape[-1] > self.work_size or x.shape[-2] > self.work_size:
            x = F.adaptive_avg_pool2d(x, (min(x.shape[-2], self.work_size), min(x.shape[-1], self.work_size)))
        h = self.features(x).mean(dim=(2, 3))
        return self.head(self.dropout(h))


def _class_names(model: nn.Module, n: int) -> list[str]:
    names = getattr(model, "classes", None)
    return list(names) if names else [str(c) for c in range(n)]


# ======================================================================= inputs
def _as_uint8(images) -> torch.Tensor:
    """Training images: a uint8 (N, 1, S, S) tensor (or an ImageSet), checked with a one-line reason."""
    try:
        return as_images(images, uint8=True)
    except CxrError as e:
        raise CxrError(f"train_classifier: {e} (convert generated images with cxrlib.images.to_uint8)") from None


def _as_labels(labels, n: int, what: str = "images") -> torch.Tensor:
    """Labels as a flat int64 CPU tensor of length ``n``."""
    if labels is None:
        raise CxrError("labels are missing: pass labels (N,) int64, or an ImageSet, which carries its own")
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).detach().cpu()
    if y.is_floating_point() or y.is_complex():
        if not torch.equal(y, y.round()):
            raise CxrError(
                f"labels must be integer class indices, got {y.dtype} values such as {y.flatten()[0]}"
            )
    y = y.flatten().long()
    if len(y) != n:
        raise CxrError(f"{n} {what} but {len(y)} labels: give one label per image")
    if len(y) and int(y.min()) < 0:
        raise CxrError(f"labels must be class indices 0, 1, ..., got {int(y.min())}")
    return y


def _split_pair(data, labels=None, what: str = "val"):
    """``data`` as (images, labels): an ImageSet, or a pair ``(images, labels)``."""
    if labels is None and isinstance(data, tuple | list) and len(data) == 2:
        data, labels = data
    if labels is None:
        labels = getattr(data, "labels", None)
    if labels is None:
        raise CxrError(f"{what} needs labels: pass an ImageSet or a pair (images, labels)")
    x = as_images(data)
    return x, _as_labels(labels, len(x))


# ======================================================================= augmentation
def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random shift (up to ``SHIFT_FRACTION`` of the side each way, edges replicated) and brightness and
    contrast jitter of each image in ``x`` (B, 1, S, S) float in [-1, 1]; no flips. Randomness from ``g``."""
    b, _, h, w = x.shape
    p = max(1, round(min(h, w) * SHIFT_FRACTION))
    dev = x.device
    oy = torch.randint(0, 2 * p + 1, (b,), generator=g).to(dev)
    ox = torch.randint(0, 2 * p + 1, (b,), generator=g).to(dev)
    padded = F.pad(x, (p, p, p, p), mode="replicate")
    rows = (oy[:, None] + torch.arange(h, device=dev))[:, :, None]  # (B, H, 1)
    cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, :]  # (B, 1, W)
    x = padded[torch.arange(b, device=dev)[:, None, None], 0, rows, cols][:, None]
    contrast = torch.empty(b, 1, 1, 1).uniform_(CONTRAST[0], CONTRAST[1], generator=g).to(dev)
    brightness = torch.empty(b, 1, 1, 1).uniform_(-BRIGHTNESS, BRIGHTNESS, generator=g).to(dev) * 2.0
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + brightness).clamp_(-1.0, 1.0)


def _working_float(x: torch.Tensor, work_size: int, chunk: int = 256) -> torch.Tensor:
    """uint8 (N, 1, S, S) → float [-1, 1] at no more than ``work_size`` px, converted in chunks (a large set
    at 512 px never becomes one big float tensor)."""
    out = []
    for i in range(0, len(x), chunk):
        f = to_float(x[i : i + chunk])
        if f.shape[-1] > work_size or f.shape[-2] > work_size:
            f = F.adaptive_avg_pool2d(f, (min(f.shape[-2], work_size), min(f.shape[-1], work_size)))
        out.append(f)
    return torch.cat(out)


# ======================================================================= training
def _balanced_sampler(labels: torch.Tensor, n_classes: int):
    """``draw(batch, g)`` → indices into ``labels`` (int64, CPU): each draws a class uniformly, then one of
    its images uniformly, so every class fills about ``batch / n_classes`` places however rare it is."""
    counts = torch.bincount(labels, minlength=n_classes)
    order = torch.argsort(labels, stable=True)  # class c is order[start[c] : start[c] + counts[c]]
    start = torch.cumsum(counts, 0) - counts

    def draw(batch: int, g: torch.Generator) -> torch.Tensor:
        c = torch.randint(0, n_classes, (batch,), generator=g)
        within = (torch.rand(batch, generator=g) * counts[c]).long().clamp_max_(counts[c] - 1)
        return order[start[c] + within]

    return draw


def train_classifier(
    images,
    labels=None,
    *,
    classes: Sequence[str] | None = None,
    steps: int = 300,
    batch: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    augment: bool = True,
    weight_decay: float = 1e-4,
    device: str | None = "auto",
    val=None,
    width: int = 16,
) -> XrayClassifier:
    """Train an :class:`XrayClassifier` on real images and return it in eval mode, with ``.classes`` set.

    images: uint8 ``(N, 1, S, S)`` or an ``ImageSet`` (then ``labels`` and ``classes`` default to its own);
    labels: ``(N,)`` int64 class indices; classes: names (default: the ImageSet's, else ``"0"``, ``"1"``…).
    ``steps`` AdamW steps (cosine-decayed ``lr``, cross-entropy) on class-balanced batches of ``batch``
    images, augmented on the fly when ``augment`` (pass False for an arm that must see its data as it is).
    Deterministic given ``seed``; the global RNG is left as it was.
    val: an ``ImageSet`` or ``(images, labels)``: the validation AUC is measured ``VAL_CHECKS`` times and the
    weights that scored best are returned (``model.val_history`` lists ``{"step", "auc", "accuracy"}``).
    """
    x = _as_uint8(images)
    if labels is None and hasattr(images, "labels"):
        labels = images.labels
    y = _as_labels(labels, len(x))
    if classes is None:
        classes = getattr(images, "classes", None)
    present = torch.unique(y).tolist()
    if len(present) < 2:
        raise CxrError(
            f"training a classifier needs images of at least 2 classes, but every label is {present[0]}"
            if present
            else "training a classifier needs images of at least 2 classes, got none"
        )
    n_classes = len(classes) if classes is not None else int(y.max()) + 1
    classes = list(classes) if classes is not None else [str(c) for c in range(n_classes)]
    if int(y.max()) >= n_classes:
        raise CxrError(f"label {int(y.max())} is out of range for {n_classes} classes {classes}")
    counts = torch.bincount(y, minlength=n_classes)
    empty = [classes[c] for c in range(n_classes) if counts[c] == 0]
    if empty:
        raise CxrError(
            f"class{'es' if len(empty) > 1 else ''} {', '.join(map(repr, empty))} "
            f"ha{'ve' if len(empty) > 1 else 's'} no training images: drop it from classes or add images"
        )
    if int(steps) < 1 or int(batch) < 1:
        raise CxrError(f"steps and batch must be at least 1, got steps={steps}, batch={batch}")
    val_pair = _split_pair(val) if val is not None else None

    config.set_threads()
    dev = config.get_device(device)
    data = _working_float(x, WORK_SIZE).to(dev)
    draw = _balanced_sampler(y, n_classes)
    g = torch.Generator().manual_seed(int(seed))
    forked = (
        [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    )

    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(int(seed))  # initialisation and dropout
        model = XrayClassifier(n_classes, width).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * s / steps)))
        checks = (
            {max(1, round(steps * (k + 1) / VAL_CHECKS)) for k in range(VAL_CHECKS)} if val_pair else set()
        )
        best, history = None, []
        model.train()
        for step in range(1, int(steps) + 1):
            idx = draw(batch, g)
            xb = data[idx.to(dev)]
            if augment:
                xb = _augment(xb, g)
            loss = F.cross_entropy(model(xb), y[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step in checks:
                model.classes = classes
                r = evaluate_classifier(model, *val_pair)
                history.append({"step": step, "auc": r["auc"], "accuracy": r["accuracy"]})
                if best is None or r["auc"] > best[0]:
                    best = (r["auc"], {k: v.detach().clone() for k, v in model.state_dict().items()})
                model.train()
    if best is not None:
        model.load_state_dict(best[1])
    model.classes = classes
    model.val_history = history
    return model.eval()


# ======================================================================= prediction and scores
@torch.no_grad()
def predict_proba(model: nn.Module, images, batch: int = 256) -> torch.Tensor:
    """Class probabilities ``(N, C)`` float32 on the CPU, for images uint8 [0, 255] or float [-1, 1]
    (a generator's output as it comes), an array or an ``ImageSet``. Runs in eval mode; the model's mode is
    restored afterwards."""
    x = as_images(images)
    dev = next(model.parameters()).device
    with evaluating(model):
        out = [
            torch.softmax(model(to_float(x[i : i + batch]).to(dev)).float(), 1).cpu()
            for i in range(0, len(x), batch)
        ]
    return torch.cat(out)


def roc_auc(scores, labels) -> float:
    """Binary ROC-AUC: the chance that a random positive (label 1) scores above a random negative (label 0),
    ties counting one half; computed by the rank-sum (Mann–Whitney U) formula with average ranks for ties.

    scores: (N,) numbers (e.g. the probability of class 1); labels: (N,) 0/1 (or bool)."""
    s = np.asarray(
        scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64
    ).ravel()
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels).ravel()
    if len(s) != len(y):
        raise CxrError(f"roc_auc got {len(s)} scores but {len(y)} labels")
    if np.isnan(s).any():
        raise CxrError("roc_auc: some scores are NaN")
    if not np.isin(y, (0, 1)).all():
        raise CxrError(
            f"roc_auc needs binary labels 0/1, got values {sorted(set(np.unique(y).tolist()))[:5]}"
        )
    y = y.astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise CxrError(
            f"roc_auc needs both classes, got {n_pos} positive and {n_neg} negative labels: "
            "score on a set that holds images of each class"
        )
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based rank of each distinct score's first occurrence
    ranks = (first + (counts + 1) / 2.0)[inverse]  # average 1-based rank of each score
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def sensitivity_at_specificity(scores, labels, specificity: float = 0.9) -> float:
    """The share of positives (label 1) called positive at the threshold that calls at least ``specificity`` of
    the negatives negative: the operating point a screening test is read at (e.g. 90 % specificity).

    The threshold is the negatives' score of rank ⌈specificity · N⁻⌉ (ascending); a positive counts when it
    scores above it, so at least that share of the negatives is not called positive (ties go against the test)."""
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    y = torch.as_tensor(labels).flatten().bool()
    if len(s) != len(y):
        raise CxrError(f"sensitivity_at_specificity got {len(s)} scores but {len(y)} labels")
    if not 0 < specificity < 1:
        raise CxrError(f"specificity must be in (0, 1), got {specificity}")
    neg, pos = s[~y], s[y]
    if len(neg) == 0 or len(pos) == 0:
        raise CxrError("sensitivity_at_specificity needs both classes")
    threshold = torch.sort(neg).values[min(len(neg) - 1, math.ceil(specificity * len(neg)) - 1)]
    return float((pos > threshold).double().mean())


def evaluate_classifier(model: nn.Module, images, labels=None, specificity: float = 0.9) -> dict:
    """Score a classifier on labelled (held-out, real) images.

    Returns ``{"auc", "accuracy", "n", "per_class_accuracy", "sensitivity"}``. auc: ROC-AUC of class 1's
    probability (binary), else the mean one-vs-rest AUC over the classes present (at least two must be);
    sensitivity: class 1's sensitivity at ``specificity`` (:func:`sensitivity_at_specificity`; binary only,
    else None);
    per_class_accuracy: ``{class name: share called correctly}``, None for a class with no images here.
    images: uint8 or float [-1, 1], or an ``ImageSet`` (then labels default to its own).
    """
    x, y = _split_pair(images, labels, "evaluate_classifier")
    proba = predict_proba(model, x)
    n_classes = proba.shape[1]
    if int(y.max()) >= n_classes:
        raise CxrError(f"label {int(y.max())} is out of range for a classifier of {n_classes} classes")
    present = torch.unique(y).tolist()
    if len(present) < 2:
        raise CxrError(f"evaluating AUC needs images of at least 2 classes, but every label is {present[0]}")
    sensitivity = None
    if n_classes == 2:
        auc = roc_auc(proba[:, 1], y == 1)
        sensitivity = sensitivity_at_specificity(proba[:, 1], y == 1, specificity)
    else:
        auc = float(np.mean([roc_auc(proba[:, c], y == c) for c in present]))
    pred = proba.argmax(1)
    names = _class_names(model, n_classes)
    per_class = {
        names[c]: (float((pred[y == c] == c).float().mean()) if (y == c).any() else None)
        for c in range(n_classes)
    }
    return {
        "auc": auc,
        "accuracy": float((pred == y).float().mean()),
        "n": len(y),
        "per_class_accuracy": per_class,
        "sensitivity": sensitivity,
    }


def class_consistency(model: nn.Module, images, intended) -> dict:
    """How often the classifier calls images the class they were meant to be (e.g. generated for).

    intended: one class index for all images, or an int64 ``(N,)`` tensor per image. Returns
    ``{"overall": share called their intended class, "per_class": {class name: share}, "n": N}``;
    ``per_class`` holds only the classes intended for some image. On real held-out images this equals the
    per-class accuracy: the ceiling a generator's consistency can be read against.
    """
    x = as_images(images)
    n_classes = _n_outputs(model)
    if isinstance(intended, int | np.integer):
        y = torch.full((len(x),), int(intended), dtype=torch.long)
    else:
        y = _as_labels(intended, len(x))
    if int(y.min()) < 0 or int(y.max()) >= n_classes:
        bad = int(y.max()) if int(y.max()) >= n_classes else int(y.min())
        raise CxrError(f"intended class {bad} is out of range for a classifier of {n_classes} classes")
    pred = predict_proba(model, x).argmax(1)
    names = _class_names(model, n_classes)
    hit = (pred == y).float()
    per_class = {names[c]: float(hit[y == c].mean()) for c in torch.unique(y).tolist()}
    return {"overall": float(hit.mean()), "per_class": per_class, "n": len(y)}


def _n_outputs(model: nn.Module) -> int:
    n = getattr(model, "n_classes", None)
    if n is None:
        n = len(model.classes) if getattr(model, "classes", None) else None
    if n is None:
        raise CxrError(
            "cannot tell how many classes the model has: give it an n_classes or classes attribute"
        )
    return int(n)
