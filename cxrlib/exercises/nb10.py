"""Notebook 10's exercise (``notebooks/10_modern_losses.ipynb``): the relativistic pairing loss of G.

Registered as ``"10.<name>"``; see :mod:`cxrlib.exercises` for the convention."""

from __future__ import annotations

from cxrlib.exercises.checks import case, compare_outputs, describe_value, register


def pairing_g_loss(fake_logits, real_logits):
    """G's relativistic pairing loss as one 0-d tensor: :func:`cxrlib.losses.g_loss_rpgan` without its stats."""
    from cxrlib import losses

    return losses.g_loss_rpgan(fake_logits, real_logits)[0]


def _pairing_cases():
    import torch

    g = torch.Generator().manual_seed(10)
    real, fake = torch.randn(6, generator=g) + 1, torch.randn(6, generator=g) - 1
    return [
        case(fake, real, label="D favours the reals"),
        case(real, fake, label="D favours the fakes"),
        case(fake + 3, real + 3, label="every score shifted by +3"),
        case(torch.zeros(4), torch.zeros(4), label="D cannot tell: every gap 0"),
    ]


def _pairing_checker(candidate, reference) -> str | None:
    """Does the loss read the real scores, and only through the gap, before the element-by-element comparison."""
    import torch

    g = torch.Generator().manual_seed(10)
    real, fake = torch.randn(6, generator=g) + 1, torch.randn(6, generator=g) - 1
    got = candidate(fake.clone(), real.clone())
    if not isinstance(got, torch.Tensor) or got.dim() != 0:
        return f"the loss should be one number (a 0-d tensor: the mean over the pairs), got {describe_value(got)}"
    moved = candidate(fake.clone(), real.clone() + 2.0)
    if abs(float(moved) - float(got)) < 1e-6:
        return (f"your G loss is {float(got):.4f} whether D scores the real images as they are or 2 higher: it never "
                "reads them, so no fake competes with its pair. Which difference should the BCE with target 1 see?")
    shifted = candidate(fake.clone() + 3.0, real.clone() + 3.0)
    if abs(float(shifted) - float(got)) > 1e-5:
        return (f"adding 3 to every score (fakes and reals alike) changes your loss from {float(got):.4f} to "
                f"{float(shifted):.4f}: a pairing loss sees only the gap between fake i and real i")
    if float(candidate(real.clone(), fake.clone())) > float(got):
        return ("your loss is larger when the fakes score above their pairs than when they score below: G should "
                "be rewarded (a smaller loss) when its fakes look more real than their pairs")
    return compare_outputs(_pairing_cases, atol=1e-6)(candidate, reference)


register(
    "10.pairing_g_loss",
    reference="cxrlib.exercises.pairing_g_loss",
    checker=_pairing_checker,
    hint="G wants each fake to score above its own pair: which gap, pair by pair, should be large? The G loss is "
    "BCE with target 1 on that gap",
)
