"""Looking inside a network: parameter counts, a layer table and forward FLOPs (notebooks 02 and 03).

(Named ``inspection``, not ``inspect``, so that it never hides the standard library's ``inspect``.)"""

from __future__ import annotations

import torch
from torch import nn

from cxrlib.errors import CxrError
from cxrlib.models.common import evaluating


def count_params(module: nn.Module) -> int:
    """Number of parameters (trainable or not; spectral norm's u/v vectors are buffers, not counted)."""
    return sum(p.numel() for p in module.parameters())


def _is_layer(m: nn.Module) -> bool:
    """A leaf module, where spectral norm's ``parametrizations`` container does not count as a child."""
    return all(name == "parametrizations" for name, _ in m.named_children())


def _example_input(module: nn.Module, example: torch.Tensor | None, size: int | None) -> torch.Tensor:
    if example is not None:
        return example
    p = next(module.parameters())
    if hasattr(module, "z_dim"):
        return torch.randn(2, module.z_dim, device=p.device)
    if size is None:
        raise CxrError("layer_table needs an example input or size= for a discriminator")
    return torch.randn(2, 1, size, size, device=p.device)


@torch.no_grad()
def layer_table(
    module: nn.Module, example: torch.Tensor | None = None, *, size: int | None = None
) -> list[dict]:
    """One row per layer, in execution order: ``{"name", "type", "output_shape", "params"}``.

    example: an input batch (default: 2 random latents for a generator, 2 random (1, size, size) images for a
    discriminator). output_shape excludes the batch dimension. Runs one forward pass in eval mode with
    forward hooks; the module's train/eval mode is restored. The ``params`` column sums to
    :func:`count_params`. A module that holds parameters of its own besides its children (the style generator's
    modulated convolutions, noise strengths and constant input; the generator itself for its constant: name
    "(own)") gets a row with those only.
    """
    x = _example_input(module, example, size)
    rows, hooks = [], []

    def hook(name, own=False):
        def record(m, inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            rows.append(
                {
                    "name": name,
                    "type": type(m).__name__,
                    "output_shape": tuple(out.shape[1:]),
                    "params": sum(p.numel() for p in m.parameters(recurse=False)) if own else count_params(m),
                }
            )

        return record

    for name, m in module.named_modules():
        if ".parametrizations." in name or name.endswith("parametrizations"):
            continue
        if name and _is_layer(m):
            hooks.append(m.register_forward_hook(hook(name)))
        elif any(True for _ in m.parameters(recurse=False)):
            hooks.append(m.register_forward_hook(hook(name or "(own)", own=True)))
    with evaluating(module):
        try:
            module(x)
        finally:
            for h in hooks:
                h.remove()
    return rows


def _macs(m: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """Multiply-adds of one layer call for the whole batch (bias additions are not counted)."""
    if hasattr(m, "macs"):  # the style generator's layers count themselves
        return m.macs(inp, out)
    if isinstance(m, nn.Conv2d):
        k = m.kernel_size[0] * m.kernel_size[1]
        return out.numel() * (m.in_channels // m.groups) * k
    if isinstance(m, nn.ConvTranspose2d):
        # each input pixel scatters a k×k×C_out patch
        k = m.kernel_size[0] * m.kernel_size[1]
        return inp.numel() * (m.out_channels // m.groups) * k
    if isinstance(m, nn.Linear):
        return out.numel() * m.in_features
    return 0


@torch.no_grad()
def forward_flops(module: nn.Module, example: torch.Tensor) -> int:
    """Forward FLOPs per sample of Conv2d / ConvTranspose2d / Linear layers and of layers with a ``macs``
    method (the style generator's modulated convolutions) (1 multiply-add = 2 FLOPs)."""
    total, hooks = [0], []
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) or hasattr(m, "macs"):
            hooks.append(
                m.register_forward_hook(lambda m, i, o: total.__setitem__(0, total[0] + _macs(m, i[0], o)))
            )
    with evaluating(module):
        try:
            module(example)
        finally:
            for h in hooks:
                h.remove()
    return 2 * total[0] // example.shape[0]


def flops_per_image(G: nn.Module, D: nn.Module, size: int) -> dict:
    """FLOPs per image: ``{"G": …, "D": …, "train_step": …, "formula": …}``.

    G and D are forward FLOPs of the convolution and linear layers (the others are cheap). A backward pass
    costs about twice its forward (gradients for the inputs and for the weights). One training step per
    image of the batch: the D step runs G forward (1·G) and D forward + backward on a real and a fake image
    (2 · 3·D); the G step runs G forward + backward (3·G) and D forward + a backward for its *input* only
    (2·D: the trainer freezes D's weights there, so their gradients are not computed). So
    ``train_step = 4·G + 8·D`` (lazy R1 and spectral-norm power iterations not included).
    """
    p = next(G.parameters())
    g = forward_flops(G, torch.randn(1, G.z_dim, device=p.device))
    d = forward_flops(D, torch.randn(1, 1, size, size, device=p.device))
    return {"G": g, "D": d, "train_step": 4 * g + 8 * d, "formula": "train_step = 4·G + 8·D"}
