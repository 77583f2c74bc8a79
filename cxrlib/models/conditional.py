"""Conditional wrappers around any preset's networks: G(z, y) reads the class through class-conditional
BatchNorm and/or an embedding beside z; D(x, y) adds a projection head (Miyato & Koyama 2018)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from cxrlib.errors import CxrError

CLASS_DIM = 64  # size of the class embedding concatenated to z (generators without BatchNorm)


class ClassBatchNorm2d(nn.Module):
    """Class-conditional BatchNorm (de Vries et al. 2017; the projection paper's generator): normalise as
    BatchNorm does, then scale and shift with a learned (γ, β) *per class*: ``γ[y] · x̂ + β[y]``.

    The labels ``y`` of the batch are set on the layer by :class:`ConditionalGenerator` before each forward pass
    (the layers sit inside ``nn.Sequential`` blocks, which pass only the image on). γ starts at 1 and β at 0,
    i.e. as plain BatchNorm."""

    def __init__(self, bn: nn.BatchNorm2d, n_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=False)
        self.gamma = nn.Embedding(n_classes, bn.num_features)
        self.beta = nn.Embedding(n_classes, bn.num_features)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)
        self.y: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(x)
        g, b = self.gamma(self.y).to(out.dtype), self.beta(self.y).to(out.dtype)
        return out * g[:, :, None, None] + b[:, :, None, None]


def _class_norms(module: nn.Module, n_classes: int) -> list[ClassBatchNorm2d]:
    """Replace every BatchNorm2d inside ``module`` by a :class:`ClassBatchNorm2d`; return the new layers."""
    made = []
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            cbn = ClassBatchNorm2d(child, n_classes)
            setattr(module, name, cbn)
            made.append(cbn)
        else:
            made += _class_norms(child, n_classes)
    return made


class ConditionalGenerator(nn.Module):
    """G(z, y): a generator told which class to draw. z: (B, z_dim), y: (B,) class indices → (B, 1, S, S).

    The class reaches the unconditional network ``base`` in one or both of two ways:

    * ``class_norm`` -- every BatchNorm of ``base`` becomes a :class:`ClassBatchNorm2d`: a learned scale and
      shift per class and channel, at every resolution (the projection paper's generator). The default where
      G has BatchNorm;
    * ``class_dim`` > 0 -- a learned embedding e(y) of ``class_dim`` numbers concatenated to z (``base`` built
      for ``z_dim + class_dim`` inputs). The default for a G without BatchNorm.

    Why normalisation by default, measured (course preset, 32-px phantoms): with e(y) concatenated to z the
    samples of one class came out nearly alike, far less varied than real images and the unconditional G's, even
    when D ignored the labels: a class vector beside z in the first layer crowds z out. With class-conditional
    BatchNorm the diversity and the SWD stayed near the unconditional G's (figures in benchmarks/RESULTS.md,
    2026-12-02, "How the conditional G reads its class").

    The same z with another y draws "the same patient" as the other class, as far as the network learnt to
    keep the two apart. ``y=None`` draws the classes in turn (0, 1, 0, 1, …): code written for unconditional
    generators (metrics, grids) gets a balanced mix.
    """

    def __init__(self, base: nn.Module, n_classes: int, z_dim: int, class_dim: int = 0, class_norm: bool = True):
        super().__init__()
        if n_classes < 2:
            raise CxrError(f"a conditional generator needs at least 2 classes, got {n_classes}")
        self.base, self.n_classes, self.z_dim, self.size = base, n_classes, z_dim, base.size
        self.embed = nn.Embedding(n_classes, class_dim) if class_dim else None  # N(0, 1) init: on the scale of z
        self.class_norms = _class_norms(base, n_classes) if class_norm else []
        if not (self.embed is not None or self.class_norms):
            raise CxrError("this generator has no BatchNorm to condition: give it a class embedding (class_dim > 0)")

    def default_labels(self, n: int, device=None) -> torch.Tensor:
        return torch.arange(n, device=device) % self.n_classes

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None, return_levels: bool = False, **kw):
        """``kw`` goes to the base network (a style G's ``truncation`` and ``noise_mode``)."""
        if y is None:
            y = self.default_labels(len(z), z.device)
        for norm in self.class_norms:
            norm.y = y
        return self.base(self.latent(z, y), return_levels=return_levels, **kw)

    def latent(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What the base network reads: z with the class embedding e(y) beside it (z itself without one)."""
        return z if self.embed is None else torch.cat([z, self.embed(y).to(z.dtype)], 1)


class ProjectionDiscriminator(nn.Module):
    """D(x, y) with a projection head (Miyato & Koyama 2018): logit = ψ(φ(x)) + ⟨embed(y), φ(x)⟩.

    φ(x) are the features the base discriminator's last layer reads, ψ that layer (``FeaturesHead``). The
    first term asks "is this a real X-ray?", the inner product "is it a real X-ray *of class y*?": one
    learned vector per class, compared with the features. Projecting (instead of concatenating y to the
    input) is the form that follows from writing the logit as log p_data(x|y) / p_G(x|y), and it trained
    better in the paper. The embedding is spectrally normalised like the rest of the course D."""

    def __init__(self, base: nn.Module, n_classes: int):
        super().__init__()
        self.base, self.n_classes = base, n_classes
        self.embed = nn.Embedding(n_classes, _feature_dim(base))
        nn.init.xavier_uniform_(self.embed.weight)
        if getattr(base, "spectral_norm", False):
            self.embed = _spectral_norm(self.embed)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.base.phi(x)
        return projection_logit(h, self.base.psi(h), self.embed.weight.to(h.dtype), y)


def projection_logit(h: torch.Tensor, psi_out: torch.Tensor, class_embedding: torch.Tensor,
                     y: torch.Tensor) -> torch.Tensor:
    """The projection head's logit: ``psi_out + ⟨class_embedding[y], h⟩``.

    h: (B, F) features φ(x); psi_out: (B,) the unconditional logit ψ(φ(x)); class_embedding: (C, F), one
    vector per class; y: (B,) class indices → (B,) logits."""
    return psi_out + (class_embedding[y] * h).sum(1)


def _feature_dim(D: nn.Module) -> int:
    """Width F of φ(x): the in-features of the last layer."""
    last = D.head[-1] if hasattr(D, "head") else D.net[-1]
    return last.in_features if isinstance(last, nn.Linear) else last.in_channels * 16
