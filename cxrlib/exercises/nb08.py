"""Notebook 08's exercises (``notebooks/08_image_to_image.ipynb``): a receptive field, and the cycle-
consistency loss.

Each is registered as ``"08.<name>"``; see :mod:`cxrlib.exercises` for the convention."""

from __future__ import annotations

from cxrlib.exercises.checks import case, compare_outputs, register


def _receptive_field_cases():
    return [
        case([(3, 1)], label="one 3×3 convolution"),
        case([(3, 1), (3, 1)], label="two 3×3 convolutions, stride 1"),
        case([(4, 2), (4, 2), (4, 2), (4, 1), (4, 1)], label="the 70×70 PatchGAN of Pix2Pix"),
        case([(4, 2), (4, 1), (4, 1)], label="the one-layer PatchGAN used at 64 px"),
        case([(7, 1), (3, 2), (3, 2), (3, 1)], label="a ResNet generator's first layers"),
        case([], label="no layers: one pixel sees itself"),
    ]


register(
    "08.receptive_field",
    reference="cxrlib.models.receptive_field_of",
    checker=compare_outputs(_receptive_field_cases),
    hint="one output pixel sees 1 pixel; a layer with kernel k widens the field by k - 1 of its input's pixels, and "
    "each of those is 'jump' input pixels apart, where jump is the product of the strides of the layers before it: "
    "start with field = 1 and jump = 1; for each (kernel, stride): field += (kernel - 1) * jump, then "
    "jump *= stride",
)


def _cycle_cases():
    import torch

    g = torch.Generator().manual_seed(7)
    a, b = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1, torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    return [
        case(a, b, lambda x: x, lambda x: x, label="identity generators: every image comes back, loss 0"),
        case(a, b, lambda x: x + 0.5, lambda x: x - 0.5,
             label="G_ab adds 0.5 and G_ba takes it away: every image comes back exactly, so the loss must be 0"),
        case(a, b, lambda x: -x, lambda x: -x, label="two inversions undo each other: loss 0 again"),
        case(a, b, lambda x: 0.5 * x, lambda x: x, label="G_ab halves, G_ba keeps: nothing comes back whole"),
        case(a, b, lambda x: x + 0.1, lambda x: x.clamp(-0.5, 0.5), label="a shift and a clamp"),
    ]


register(
    "08.cycle_loss",
    reference="cxrlib.cyclegan.cycle_loss",
    checker=compare_outputs(_cycle_cases),
    hint="a round trip must give back the image it started from: compare g_ba(g_ab(real_a)) with real_a and "
    "g_ab(g_ba(real_b)) with real_b, not with the translations fake_b, fake_a (that loss is 0 whenever the "
    "second generator copies its input, whatever the first one drew)",
)
