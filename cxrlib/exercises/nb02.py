"""Notebook 02's exercises (``notebooks/02_architecture.ipynb``): a convolution's parameter count, an
upsampling block, and spectral normalisation.

Each is registered as ``"02.<name>"``; see :mod:`cxrlib.exercises` for the convention."""

from __future__ import annotations

from cxrlib.exercises.checks import describe_value, register


def _check_conv_params(candidate, reference):
    """Compare with what PyTorch allocates; name the usual slip (bias, k for k², one filter for all) by its number."""
    from torch import nn

    for c_in, c_out, k, bias in ((1, 8, 3, True), (64, 128, 5, True), (512, 256, 7, True), (16, 4, 1, False)):
        label = f"nn.Conv2d({c_in}, {c_out}, {k}{'' if bias else ', bias=False'})"
        conv = nn.Conv2d(c_in, c_out, k, bias=bias, device="meta")  # shapes only
        want = sum(p.numel() for p in conv.parameters())
        got = candidate(c_in, c_out, k, bias)
        if hasattr(got, "item") and getattr(got, "ndim", 0) == 0:  # a numpy or torch scalar
            got = got.item()
        if isinstance(got, float) and got.is_integer():
            got = int(got)
        if not isinstance(got, int) or isinstance(got, bool):
            return f"for {label} expected a whole number, got {describe_value(got)}"
        if got == want:
            continue
        weights, biases = c_out * c_in * k * k, c_out if bias else 0
        slips = [  # the first that matches names the slip
            (weights, f"that is the weights alone: the layer also has {c_out} biases, one per output channel"),
            (weights + c_out, "bias=False: this layer has no biases, only weights"),
            (weights + c_in, f"one bias per output channel ({c_out}), not per input channel ({c_in})"),
            (c_out * c_in * k + biases, f"a kernel is k×k = {k * k} numbers per channel pair, not k = {k}"),
            (c_out * k * k + biases, f"each output channel has one k×k filter per input channel: {c_in}, not one"),
            (c_in * k * k + (1 if bias else 0), f"that is one output channel; the layer has {c_out}"),
        ]
        why = next((text for n, text in slips if n == got), f"list its tensors: [(n, tuple(t.shape)) for n, t in "
                    f"{label}.named_parameters()]")
        return f"for {label} your count is {got:,}, PyTorch allocates {want:,}: {why}"
    return None


register(
    "02.conv_params",
    reference="cxrlib.models.conv2d_params",
    checker=_check_conv_params,
    hint="each output channel runs one k×k filter over each input channel and adds one bias; "
    "nn.Conv2d(c_in, c_out, k).weight.shape shows the filters",
)


def _check_upsample_block(candidate, reference):
    import torch
    from torch import nn

    for c_in, c_out, k in ((8, 4, 3), (3, 5, 5)):
        torch.manual_seed(0)
        block, ref = candidate(c_in, c_out, k), reference(c_in, c_out, k)
        if not isinstance(block, nn.Module):
            return f"upsample_conv_block({c_in}, {c_out}, {k}) should return an nn.Module, got {describe_value(block)}"
        if any(isinstance(m, nn.ConvTranspose2d) for m in block.modules()):
            return "it uses ConvTranspose2d: upsample first (nn.Upsample), then a normal Conv2d"
        with torch.no_grad():
            y = block(torch.randn(2, c_in, 6, 6))
            want = (2, c_out, 12, 12)
            if tuple(y.shape) != want:
                return (f"for c_in={c_in}, c_out={c_out}, k={k} an input (2, {c_in}, 6, 6) gave {tuple(y.shape)}, "
                        f"expected {want} (×2 upsampling, 'same' padding k // 2)")
            n, n_ref = sum(p.numel() for p in block.parameters()), sum(p.numel() for p in ref.parameters())
            if n != n_ref:
                return f"for c_in={c_in}, c_out={c_out}, k={k} it has {n} parameters, expected {n_ref} (one Conv2d)"
            flat = block(torch.ones(1, c_in, 8, 8))[..., k:-k, k:-k]
            spread = float((flat - flat.mean(dim=(-2, -1), keepdim=True)).abs().max())
            if spread > 1e-4:
                return (f"a constant input does not stay constant away from the borders (values differ by "
                        f"{spread:.3g}): use nearest-neighbour upsampling before the convolution")
            if not any(isinstance(m, (nn.LeakyReLU, nn.ReLU)) for m in block.modules()):
                return "it has no activation after the convolution: end the block with nn.LeakyReLU(0.2)"
    return None


register(
    "02.upsample_conv_block",
    reference="cxrlib.models.upsample_conv_block",
    checker=_check_upsample_block,
    hint="nn.Sequential(nn.Upsample(scale_factor=2, mode='nearest'), nn.Conv2d(c_in, c_out, kernel_size, "
    "padding=kernel_size // 2), nn.LeakyReLU(0.2))",
)


def spectral_normalise(weight):
    """Reference of exercise 02.spectral_normalise: ``weight / σ_max``, σ_max the largest singular value of the
    weight seen as a matrix (out_features, everything else) -- what spectral normalisation divides by (computed
    exactly here; the library layer estimates it with one power iteration per training forward pass).

    weight: a Linear (out, in) or Conv2d (out, in, k, k) weight → a new tensor of the same shape, σ_max = 1."""
    import torch

    return weight / torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2)


def _check_spectral_normalise(candidate, reference):
    import torch

    g = torch.Generator().manual_seed(0)
    cases = [("a Linear weight (8, 20)", torch.randn(8, 20, generator=g)),
             ("a Conv2d weight (16, 8, 3, 3)", 0.2 * torch.randn(16, 8, 3, 3, generator=g)),
             ("a Conv2d weight (32, 16, 3, 3) scaled ×3", 0.6 * torch.randn(32, 16, 3, 3, generator=g))]
    for label, w in cases:
        keep = w.clone()
        got = candidate(w)
        if not torch.equal(w, keep):
            return f"for {label} it changed the weight in place: return a new tensor (weight / σ), leave W as it is"
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(w.shape):
            return f"for {label} expected a tensor of shape {tuple(w.shape)}, got {describe_value(got)}"
        ratio = (got.reshape(-1).double() / w.reshape(-1).double())
        if not torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-4) or float(ratio[0]) <= 0:
            return f"for {label} the result is not W times one positive number: divide the whole weight by σ_max"
        sigma = float(torch.linalg.matrix_norm(got.reshape(got.shape[0], -1).double(), ord=2))
        if abs(sigma - 1.0) > 1e-3:
            raw = float(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1).double(), ord=2))
            return (f"for {label} (raw σ_max {raw:.2f}, Frobenius norm {float(w.norm()):.2f}) your result has "
                    f"σ_max = {sigma:.3f}, expected 1.000: you divided by {raw / sigma:.2f}. A layer scaled so would "
                    f"shrink its input ×{sigma:.2f} at most, and {sigma:.2f}^12 = {sigma ** 12:.1e} through 12 such "
                    "layers (the course D at 64 px)")
    return None


register(
    "02.spectral_normalise",
    reference="cxrlib.exercises.spectral_normalise",
    checker=_check_spectral_normalise,
    hint="see W as a matrix: w = weight.reshape(weight.shape[0], -1); σ_max = torch.linalg.matrix_norm(w, ord=2) "
    "(the largest singular value); weight.norm() is the Frobenius norm √(Σ σᵢ²), larger than σ_max",
)
