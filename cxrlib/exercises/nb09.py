"""Notebook 09's exercises (``notebooks/09_stylegan_ideas.ipynb``): modulated weights, and the
truncation trick.

Each is registered as ``"09.<name>"``; see :mod:`cxrlib.exercises` for the convention."""

from __future__ import annotations

from cxrlib.exercises.checks import case, compare_outputs, describe_value, register


def _modulated_weights_cases():
    import torch

    g = torch.Generator().manual_seed(8)
    weight = torch.randn(4, 3, 3, 3, generator=g)
    s = torch.rand(2, 3, generator=g) + 0.5
    return [
        case(weight, s, False, label="modulation only: each input channel's weights scaled by its style"),
        case(weight, s, True, label="modulation and demodulation"),
        case(weight, torch.ones(1, 3), True, label="styles of 1: demodulated weights of unit norm per output"),
        case(weight[:, :1, :1, :1], 10 * s[:, :1], True, label="1×1 kernels, one input channel, large styles"),
    ]


def _modulated_weights_checker(candidate, reference) -> str | None:
    """What demodulation must do, in numbers, before the element-by-element comparison: one norm per sample and
    output channel, equal to 1, and weights that still follow the style."""
    import torch

    g = torch.Generator().manual_seed(8)
    weight, s = torch.randn(4, 3, 3, 3, generator=g), torch.rand(2, 3, generator=g) + 0.5
    got = candidate(weight.clone(), s.clone(), True)
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != (2, 4, 3, 3, 3):
        return (f"weight (4, 3, 3, 3) and s (2, 3) should give (B, C_out, C_in, k, k) = (2, 4, 3, 3, 3), "
                f"got {describe_value(got)}")
    restyled = candidate(weight.clone(), s.flip(1) * torch.tensor([1.0, 3.0]).view(2, 1), True)
    if isinstance(restyled, torch.Tensor) and (restyled - got).abs().max() < 1e-4:
        return (f"with demodulate=True your weights do not change when the styles do (largest change "
                f"{float((restyled - got).abs().max()):.1e}): the normalisation divides s out again, so w no "
                "longer steers the layer. Which dimensions does your norm sum over?")
    norms = got.pow(2).sum((2, 3, 4)).sqrt()  # (B, C_out): one norm per sample and output channel
    if (norms - 1).abs().max() > 1e-3:
        return (f"with demodulate=True each output channel of each sample should have weights of norm 1 (summed "
                f"over C_in and the kernel, dims 2, 3, 4); yours have norms from {float(norms.min()):.3f} to "
                f"{float(norms.max()):.3f}")
    return compare_outputs(_modulated_weights_cases, atol=1e-5)(candidate, reference)


register(
    "09.modulated_weights",
    reference="cxrlib.models.style.modulated_weights",
    checker=_modulated_weights_checker,
    hint="w has shape (B, C_out, C_in, k, k). A style scales input channels, so a norm that sums over the "
    "input channels keeps the output's scale whatever the styles' size, one norm per (sample, output "
    "channel); a norm per input channel divides each style out again",
)


def _truncate_cases():
    import torch

    g = torch.Generator().manual_seed(9)
    w, w_avg = torch.randn(5, 6, generator=g), torch.randn(6, generator=g)
    return [
        case(w, w_avg, 1.0, label="ψ = 1: w itself"),
        case(w, w_avg, 0.5, label="ψ = 0.5: half-way to the average"),
        case(w, w_avg, 0.0, label="ψ = 0: every w becomes w_avg"),
        case(torch.randn(2, 10, 6, generator=g), w_avg, 0.7, label="per-layer ws (B, num_ws, w_dim), ψ = 0.7"),
    ]


def _truncate_checker(candidate, reference) -> str | None:
    """Where ψ = 0 lands (w_avg, not the origin of W) and where ψ = 1 lands (w itself), before the comparison."""
    import torch

    g = torch.Generator().manual_seed(9)
    w, w_avg = torch.randn(5, 6, generator=g), torch.randn(6, generator=g) + 2.0  # a mean far from the origin
    got = candidate(w.clone(), w_avg.clone(), 0.0)
    if not isinstance(got, torch.Tensor) or got.shape != w.shape:
        return f"w (5, 6) should give the same shape back, got {describe_value(got)}"
    off = float((got - w_avg).norm(dim=-1).max())
    if off > 1e-4:
        at_origin = float(got.norm(dim=-1).max())
        where = ("it lands on w = 0: your pull goes toward the origin of W, which is not the average w"
                 if at_origin < 1e-4 else f"it lands {at_origin:.2f} from the origin")
        return (f"at ψ = 0 every w should become w_avg; yours lands {off:.2f} from w_avg "
                f"(|w_avg| = {float(w_avg.norm()):.2f}) — {where}")
    return compare_outputs(_truncate_cases, atol=1e-6)(candidate, reference)


register(
    "09.truncate",
    reference="cxrlib.models.style.truncate_toward",
    checker=_truncate_checker,
    hint="ψ scales the offset from the point the pull goes toward: at ψ = 0 every w must become w_avg, at ψ = 1 "
    "stay w",
)
