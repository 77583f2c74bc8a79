"""Notebook 07's exercises (``notebooks/07_conditional_gan.ipynb``): the projection discriminator's logit, and
sampling class labels.

Each is registered as ``"07.<name>"``; see :mod:`cxrlib.exercises` for the convention."""

from __future__ import annotations

from cxrlib.exercises.checks import case, compare_outputs, describe_value, register


def _projection_cases():
    import torch

    g = torch.Generator().manual_seed(6)
    h, psi = torch.randn(5, 8, generator=g), torch.randn(5, generator=g)
    emb, y = torch.randn(3, 8, generator=g), torch.tensor([0, 2, 1, 2, 0])
    return [
        case(h, psi, emb, y, label="5 images, 8 features, 3 classes"),
        case(h, torch.zeros(5), torch.zeros(3, 8), y, label="a zero class embedding: only ψ is left (here 0)"),
        case(torch.ones(2, 4), torch.zeros(2), torch.eye(4)[:2], torch.tensor([0, 1]),
             label="one-hot class vectors: the logit picks feature y"),
    ]


register(
    "07.projection_logit",
    reference="cxrlib.models.projection_logit",
    checker=compare_outputs(_projection_cases, atol=1e-5),
    hint="h @ class_embedding.T scores every image against every class's vector, and summing over the classes "
    "throws y away. Keep only each image's own class: class_embedding[y] is (B, F); multiply it with h, sum over "
    "the features, then add psi_out",
)

SHARE_CHECK_N, SHARE_CHECK_TOL = 40000, 0.015


def _class_labels_checker(candidate, reference) -> str | None:
    import torch

    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)  # shares 0.6 / 0.3 / 0.1
    for balanced, want in ((False, [0.6, 0.3, 0.1]), (True, [1 / 3] * 3)):
        y = candidate(labels, SHARE_CHECK_N, torch.Generator().manual_seed(0), balanced)
        if not isinstance(y, torch.Tensor) or y.shape != (SHARE_CHECK_N,):
            return f"expected a tensor of {SHARE_CHECK_N} labels (balanced={balanced}), got {describe_value(y)}"
        if y.dtype != torch.long or int(y.min()) < 0 or int(y.max()) > 2:
            return f"labels must be int64 class indices 0, 1, 2 (balanced={balanced}); got {y.dtype}, {y.min()}…{y.max()}"
        got = torch.bincount(y, minlength=3).float() / SHARE_CHECK_N
        if (got - torch.tensor(want)).abs().max() > SHARE_CHECK_TOL:
            shown = ", ".join(f"{v:.3f}" for v in got.tolist())
            wanted = ", ".join(f"{v:.3f}" for v in want)
            return (f"with balanced={balanced} the class shares of your labels are {shown}, expected about {wanted} "
                    f"(training labels 60 % / 30 % / 10 %)")
    a = candidate(labels, 50, torch.Generator().manual_seed(1), False)
    b = candidate(labels, 50, torch.Generator().manual_seed(1), False)
    if not torch.equal(a, b):
        return "the same generator seed gave different labels: draw every random number from `generator`"
    return None


register(
    "07.class_labels",
    reference="cxrlib.conditional.sample_class_labels",
    checker=_class_labels_checker,
    hint="uniform labels are right only for balanced=True; otherwise draw with the training labels' shares: "
    "shares = torch.bincount(labels, minlength=n_classes) / len(labels), then "
    "torch.multinomial(shares, n, replacement=True, generator=generator)",
)
