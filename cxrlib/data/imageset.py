""":class:`ImageSet`: a decoded data set, what every loader returns.

``images`` (N, 1, S, S) uint8, ``labels`` indexing ``classes``, ``paths``, the files left out, and for paired
sets the anatomy ``masks``; :meth:`ImageSet.describe` (one line), :meth:`ImageSet.subset`,
:meth:`ImageSet.to_float` and the stratified, seeded :meth:`ImageSet.split` (train, val, holdout).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from cxrlib.errors import CxrError

if TYPE_CHECKING:  # torch is imported where tensors are made: `inspect`/`prepare` run without it
    import torch


@dataclasses.dataclass(repr=False)
class ImageSet:
    """A decoded data set.

    images: (N, 1, S, S) uint8 tensor, 0 = black; labels: (N,) int64 index into ``classes``;
    paths: one per image (the file, or ``"phantom:<i>"`` / ``"pneumoniamnist:<i>"`` for generated or packed
    data); skipped: ``(path, reason)`` of every unreadable file left out; origin: words for ``describe()``.
    masks: paired sets only (:func:`load_pairs`, phantoms with ``masks=True``): (N, C, S, S) uint8, 0 or 255,
    one channel per anatomical structure, aligned pixel for pixel with ``images``; structures: the channel
    names, in order (e.g. ``["lungs", "heart", "ribs", "clavicles"]``).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    paths: list[str] = dataclasses.field(default_factory=list)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    origin: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)  # e.g. "multi-frame DICOM, first frame used"
    masks: torch.Tensor | None = None
    structures: list[str] = dataclasses.field(default_factory=list)
    memmap: str = ""  # the cache file ``images`` is memory-mapped from ("" : the pixels are in memory)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        """Image side in px."""
        return int(self.images.shape[-1])

    def class_counts(self) -> dict[str, int]:
        """Images per class name, in class order."""
        import torch

        counts = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, counts))

    def describe(self) -> str:
        """One line, e.g. ``1000 phantom images, 64 px, classes normal=500 pneumonia=500``."""
        n = len(self)
        head = f"{n} images {self.origin}" if self.origin.startswith("from ") else f"{n} {self.origin} images"
        counts = " ".join(f"{c}={k}" for c, k in self.class_counts().items())
        line = f"{' '.join(head.split())}, {self.size} px, classes {counts}"
        if self.masks is not None:
            line += f", masks {'/'.join(self.structures)}"
            if self.skipped:
                line += f" ({len(self.skipped)} left out: unreadable or without masks)"
        elif self.skipped:
            line += f" ({len(self.skipped)} unreadable file{'s' if len(self.skipped) > 1 else ''} skipped)"
        if self.memmap:
            line += f", memory-mapped ({self.images.numel() / 1e9:.2f} GB on disk)"
        return line

    def __repr__(self) -> str:
        return f"ImageSet({self.describe()})"

    def subset(self, idx) -> ImageSet:
        """The images at ``idx`` (ints, a bool mask, a numpy array or a tensor), in that order (a copy in
        memory, also of a memory-mapped set)."""
        import torch

        idx = torch.as_tensor(np.asarray(idx))
        if idx.dtype == torch.bool:
            idx = idx.nonzero().flatten()
        idx = idx.long().flatten()
        paths = [self.paths[i] for i in idx.tolist()] if self.paths else []
        masks = None if self.masks is None else self.masks[idx]
        return ImageSet(
            self.images[idx], self.labels[idx], list(self.classes), paths, list(self.skipped), self.origin,
            list(self.notes), masks, list(self.structures),
        )  # fmt: skip

    def to_float(self) -> torch.Tensor:
        """images as (N, 1, S, S) float32 in [-1, 1] (what G's tanh produces), as the GAN trains on them
        (:func:`cxrlib.images.to_float`)."""
        from cxrlib.images import to_float

        return to_float(self.images)

    def split(self, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> tuple[ImageSet, ImageSet, ImageSet]:
        """Deterministic (train, val, holdout), stratified: each class is shuffled with ``seed`` and cut by
        ``fractions`` (normalised to sum to 1), so every part keeps the class balance. The holdout is for
        the memorisation audit: never train on it."""
        if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
            raise CxrError(f"split fractions must be three non-negative numbers, got {tuple(fractions)}")
        f = np.asarray(fractions, dtype=np.float64) / float(sum(fractions))
        rng = np.random.default_rng(seed)
        parts: list[list[int]] = [[], [], []]
        labels = self.labels.numpy()
        for c in range(len(self.classes)):
            members = np.flatnonzero(labels == c)
            members = members[rng.permutation(len(members))]
            n_train = int(round(f[0] * len(members)))
            n_val = min(int(round(f[1] * len(members))), len(members) - n_train)
            parts[0] += members[:n_train].tolist()
            parts[1] += members[n_train : n_train + n_val].tolist()
            parts[2] += members[n_train + n_val :].tolist()
        return tuple(self.subset(sorted(p)) for p in parts)  # type: ignore[return-value]
