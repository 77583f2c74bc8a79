"""The conditional GAN family: G(z, y) draws an X-ray *of class y*, D(x, y) judges "a real X-ray of class y?".

The seed lists "conditional GANs for better output control" as future work: instead of whatever chest the
generator happens to draw, ask it for a normal one or one with pneumonia. What changes against
``cxrlib.unconditional`` is small, and this file is all of it (a family of its own, on the same two steps):

* **the batch** -- real images come with their labels (the class sub-folders, e.g. ``normal/`` and
  ``pneumonia/``); each fake gets a label too, drawn with the training set's class frequencies
  (``class_sampling="frequency"``) or uniformly (``"balanced"``, which then draws the real batches
  class-balanced as well: D must never be able to tell reals from fakes by how often a class comes up);
* **the networks** -- G's BatchNorm layers scale and shift per class (``models.ConditionalGenerator``; a G
  without BatchNorm reads [z, embed(y)] instead); D has a projection head, logit = ψ(φ(x)) + ⟨embed(y), φ(x)⟩
  (``models.ProjectionDiscriminator``, Miyato & Koyama 2018);
* **the steps** -- exactly the unconditional D and G steps (``cxrlib.gan.steps``), with y passed along: given
  labels, a step calls G(z, y) and D(x, y). A fake of class y is judged against reals of class y, so G is
  rewarded only for a pneumonia image when it was asked for one.

DiffAugment/ADA, R1, EMA, label smoothing and flipping work unchanged: they act on images and logits.
"""

from __future__ import annotations

import torch

from cxrlib import models
from cxrlib.config import FAMILY_TRAITS, TrainConfig
from cxrlib.errors import CxrError
from cxrlib.gan.family import Family


def class_names(data, where: str = "the training data") -> list[str]:
    """The class names of an ``ImageSet`` (its sub-folders), checked to be at least two."""
    classes = list(getattr(data, "classes", None) or [])
    if getattr(data, "labels", None) is None or not classes:
        raise CxrError(f"conditional training needs labelled images: {where} has no classes (give a folder with "
                       "one sub-folder per class, e.g. normal/ and pneumonia/, or an ImageSet)")
    present = sorted(set(data.labels.tolist()))
    if len(present) < 2:
        only = classes[present[0]] if present else "none"
        raise CxrError(f"conditional training needs at least 2 classes; {where} holds one ({only!r}): "
                       "put each class in its own sub-folder, e.g. normal/ and pneumonia/")
    return classes


def same_classes(a, b) -> bool:
    """Class lists that name the same classes in the same order, whatever the case (``NORMAL`` = ``normal``)."""
    return [c.lower() for c in a] == [c.lower() for c in b]


def class_index(classes, name) -> int:
    """A class given by name (any case) or index → its index; unknown: one line listing the known ones."""
    classes = list(classes)
    if isinstance(name, str) and name.strip().lstrip("-").isdigit():
        name = int(name)
    if isinstance(name, int) and not isinstance(name, bool):
        if 0 <= name < len(classes):
            return name
    else:
        lowered = [c.lower() for c in classes]
        if str(name).lower() in lowered:
            return lowered.index(str(name).lower())
    known = ", ".join(f"{i}={c}" for i, c in enumerate(classes))
    raise CxrError(f"unknown class {name!r}: this generator knows {known}")


def class_labels(cfg: TrainConfig, label, n: int) -> torch.Tensor | None:
    """Labels for n samples of a generator trained with ``cfg``: ``label`` a class name or index (all n), a
    sequence/tensor of n indices, or None (None back: unconditional, or the classes in turn)."""
    if label is None:
        return None
    if not FAMILY_TRAITS[cfg.family]["takes_labels"]:
        raise CxrError("this generator is unconditional (trained without classes), so it cannot be asked for a "
                       "class: train one with --conditional (family='conditional')")
    if isinstance(label, (str, int)):
        return torch.full((n,), class_index(cfg.classes, label), dtype=torch.long)
    y = torch.as_tensor(label, dtype=torch.long).flatten()
    if len(y) != n or (len(y) and (y.min() < 0 or y.max() >= len(cfg.classes))):
        raise CxrError(f"labels must be {n} class indices in 0…{len(cfg.classes) - 1}")
    return y


def sample_class_labels(labels: torch.Tensor, n: int, generator: torch.Generator | None = None,
                        balanced: bool = False, n_classes: int | None = None) -> torch.Tensor:
    """n class labels for fakes: drawn with the class shares of ``labels`` (the training set's), or uniformly
    when ``balanced``. labels: (N,) int64; n_classes: default ``labels.max() + 1`` → (n,) int64 on
    ``labels``' device. With the data's shares, D sees each class as often among fakes as among reals."""
    n_classes = n_classes or int(labels.max()) + 1
    if balanced:
        return torch.randint(n_classes, (n,), generator=generator, device=labels.device)
    shares = torch.bincount(labels, minlength=n_classes).float() / len(labels)
    return torch.multinomial(shares, n, replacement=True, generator=generator)


class Conditional(Family):
    """The conditional GAN: G(z, y) and D(x, y) with a projection head; the steps of ``cxrlib.gan.steps`` with
    labels (the trainer runs them: ``Trainer.run_d_step`` / ``run_g_step``)."""

    name = "conditional"
    takes_labels = True
    losses = ("bce", "hinge", "lsgan", "rpgan")  # no WGAN-GP: its penalty mixes a real and a fake, each with a label

    def __init__(self, trainer, data=None):
        super().__init__(trainer, data)
        t = trainer
        counts = torch.bincount(t.labels, minlength=len(t.cfg.classes)).float()
        # for class-balanced real batches: row c lists class c's image indices (padded), sizes[c] how many
        members = [torch.nonzero(t.labels.cpu() == c).flatten() for c in range(len(counts))]
        if t.cfg.class_sampling == "balanced" and (counts == 0).any():
            empty = t.cfg.classes[int(torch.nonzero(counts == 0)[0])]
            raise CxrError(f"class {empty!r} has no training images: balanced sampling needs images of every class")
        self.sizes = counts.long().to(t.device)
        self.members = torch.nn.utils.rnn.pad_sequence(members, batch_first=True).to(t.device)

    @staticmethod
    def configure(cfg: TrainConfig, data) -> TrainConfig:
        """The config with ``classes`` taken from the data (or checked against them when it has some)."""
        classes = class_names(data)
        if cfg.classes and not same_classes(cfg.classes, classes):
            raise CxrError(f"the data's classes {', '.join(classes)} are not the run's {', '.join(cfg.classes)}")
        return cfg if cfg.classes else cfg.replace(classes=classes)

    @staticmethod
    def build_models(cfg: TrainConfig) -> tuple[torch.nn.Module, torch.nn.Module]:
        return models.build_models(cfg.preset, cfg.size, z_dim=cfg.z_dim, width=cfg.width,
                                   n_classes=len(cfg.classes), **cfg.model_kwargs)

    def real_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.t
        if t.cfg.class_sampling == "balanced":  # a class uniformly, then one of its images
            y = torch.randint(len(self.sizes), (n,), generator=t.rng, device=t.device)
            pick = (torch.rand(n, generator=t.rng, device=t.device) * self.sizes[y]).long()
            idx = self.members[y, pick]
        else:
            idx = t.batch_indices(n)  # with replacement; under DP-SGD a Poisson sample
        return t.images_at(idx), t.labels[idx]

    def fake_labels(self, n: int) -> torch.Tensor:
        t = self.t
        return sample_class_labels(t.labels, n, t.rng, balanced=t.cfg.class_sampling == "balanced",
                                   n_classes=len(t.cfg.classes))

    # ------------------------------------------------------------------ the training step
    # Drawn from the trainer's generator in this order: the real batch and its labels, the fakes' labels, z.
    def d_step(self, real: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> tuple[dict, int]:
        """One D update: D(x, y) on reals of class y, D(G(z, y'), y') on fakes of the drawn classes y'.
        real, labels: a batch to use (default: a random one). Returns 0-d tensors (see ``cxrlib.gan.steps``) and
        the number of real images D saw."""
        t = self.t
        if real is None:
            real, labels = self.real_batch(t.batch)  # under DP-SGD a Poisson sample, whose size varies
        n_fake = len(real) if t.dp is None else t.batch  # ... while the fakes' must not tell it (cxrlib.gan.dp)
        y_fake = self.fake_labels(n_fake)
        return t.run_d_step(real, t.sample_z(n_fake), real_labels=labels, fake_labels=y_fake), len(real)

    def g_step(self) -> tuple[dict, int]:
        """One G update: G(z, y') must make D(·, y') call its fakes real. Returns g_loss, g_grad_norm, and 0
        real images counted."""
        t = self.t
        y_fake = self.fake_labels(t.batch)
        stats = t.run_g_step(t.sample_z(t.batch), fake_labels=y_fake, real_batch=lambda: self.real_batch(t.batch))
        return stats, 0

    # ------------------------------------------------------------------ samples
    def grid(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The sample grid (rows of 8): one row per class, the same 8 latents in each row of a block of
        C rows, so a column shows one z drawn as every class."""
        n_classes, n = len(self.t.cfg.classes), len(z)
        row = torch.arange(n) // 8
        z_index = (row // n_classes) * 8 + torch.arange(n) % 8
        return z[z_index], row % n_classes

    def sample_grid(self) -> tuple[torch.Tensor, int]:
        """The images of ``RUN/samples/step_XXXXXX.png`` (float in [-1, 1]) and the grid's row length."""
        z, y = self.grid(self.t.z_fixed)
        return torch.cat([self.t.generate(zb, labels=yb) for zb, yb in zip(z.split(64), y.split(64))]), 8
