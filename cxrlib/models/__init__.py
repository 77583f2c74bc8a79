"""Generators and discriminators: the original project's networks, DCGAN, the course's recipe and the style-based G.

``build_models(preset, size)`` returns ``(G, D)`` for any power-of-two ``size`` from 32 to 512:

* every generator has ``G.z_dim`` and maps ``z: (B, z_dim)`` to images ``(B, 1, S, S)`` in [-1, 1] (tanh);
  ``G(z, return_levels=True)`` also returns what each resolution contributes (see :class:`SkipGenerator`);
* every discriminator maps ``x: (B, 1, S, S)`` to logits ``(B,)`` -- no sigmoid: the losses take logits
  (``BCEWithLogits`` is the numerically safe form of sigmoid + BCE).

Presets (``PRESET_NOTES`` has a paragraph on each):

* ``"original"`` -- (old name ``"seed"``) the original project's Keras networks, layer for layer; ``skips=True`` adds
  the skip connections that its README promised and its code lacked;
* ``"dcgan"``  -- Radford et al. (2015): transposed convolutions, BatchNorm, ReLU / LeakyReLU;
* ``"course"`` -- the default: an upsampling generator in the original project's style and a discriminator with a
  minibatch-standard-deviation layer, both lean (no BatchNorm, no skip outputs, no spectral norm: each is one
  keyword away, ``LEGACY_NETWORKS`` has all three, and each cost more quality per CPU minute than it gave);
* ``"style"`` -- the style-based generator of ``style.py`` with the course D; ``"modern"`` -- the course networks
  (the preset differs in its training recipe, ``config.PRESETS``).

One file per job; every name below is importable from ``cxrlib.models`` as before:

* ``course.py`` -- the course's G and D (``course_generator``, ``CourseDiscriminator``, ``MinibatchStd``);
* ``original.py`` -- the original project's networks; ``dcgan.py`` -- DCGAN; ``style.py`` -- the style-based G and
  its tools (imported as ``cxrlib.models.style``); ``image_to_image.py`` -- the Pix2Pix / CycleGAN networks;
* ``diffusion.py`` -- the diffusion baseline's denoising U-Net, diffusers' ``UNet2DModel`` (imported as
  ``cxrlib.models.diffusion``; diffusers, an optional extra, is loaded only when one is built);
* ``common.py`` -- what they share (sizes, layouts, ``evaluating``, ``SkipGenerator``, ``FeaturesHead``);
* ``conditional.py`` -- ``ConditionalGenerator`` and ``ProjectionDiscriminator`` around any preset's pair;
* ``inspection.py`` -- ``count_params``, ``layer_table``, ``forward_flops``, ``flops_per_image``;
* ``nb02.py`` -- the building blocks notebook 02 takes apart; ``notes.py`` -- ``PRESET_NOTES``, the prose;
* this file -- ``NETWORKS`` and ``build_models``, which picks the networks of a preset.
"""

from __future__ import annotations

from torch import nn

from cxrlib.config import PRESET_ALIASES
from cxrlib.errors import CxrError
from cxrlib.models.common import (
    MAX_SIZE,
    MIN_SIZE,
    FeaturesHead,
    SkipGenerator,
    check_size,
    evaluating,
    in_layout,
    layout_of,
    n_doublings,
    scaled,
    upsample2,
)
from cxrlib.models.conditional import (
    CLASS_DIM,
    ClassBatchNorm2d,
    ConditionalGenerator,
    ProjectionDiscriminator,
    projection_logit,
)
from cxrlib.models.course import CourseDiscriminator, MinibatchStd, course_generator, course_width
from cxrlib.models.dcgan import DCGANDiscriminator, DCGANGenerator
from cxrlib.models.image_to_image import (
    PatchDiscriminator,
    ResnetGenerator,
    UNetGenerator,
    patch_layers,
    receptive_field,
    receptive_field_of,
)
from cxrlib.models.inspection import count_params, flops_per_image, forward_flops, layer_table
from cxrlib.models.nb02 import (
    conv2d_params,
    largest_singular_value,
    output_size,
    transpose_conv_block,
    upsample_conv_block,
    upsampling_stack,
)
from cxrlib.models.notes import PRESET_NOTES
from cxrlib.models.original import (
    ORIGINAL_D_WIDTHS,
    ORIGINAL_G_KERNELS,
    ORIGINAL_G_WIDTHS,
    ORIGINAL_Z_DIM,
    SEED_D_WIDTHS,
    SEED_G_KERNELS,
    SEED_G_WIDTHS,
    SEED_Z_DIM,
    OriginalDiscriminator,
    SampleDropout,
    SeedDiscriminator,
    original_generator,
    seed_generator,
)

__all__ = [
    "CLASS_DIM", "CONDITIONAL_NETWORKS", "ClassBatchNorm2d", "ConditionalGenerator", "CourseDiscriminator",
    "DCGANDiscriminator", "DCGANGenerator", "FeaturesHead", "LEGACY_NETWORKS", "MAX_SIZE", "MIN_SIZE",
    "MinibatchStd", "NETWORKS", "ORIGINAL_D_WIDTHS", "ORIGINAL_G_KERNELS", "ORIGINAL_G_WIDTHS", "ORIGINAL_Z_DIM",
    "OriginalDiscriminator", "PRESETS", "PRESET_KEYWORDS", "PRESET_NOTES", "PatchDiscriminator",
    "ProjectionDiscriminator", "ResnetGenerator", "SEED_D_WIDTHS", "SEED_G_KERNELS", "SEED_G_WIDTHS", "SEED_Z_DIM",
    "SampleDropout", "SeedDiscriminator", "SkipGenerator", "UNetGenerator", "build_models", "check_size",
    "conv2d_params", "count_params", "course_generator", "course_width", "evaluating", "flops_per_image",
    "forward_flops", "in_layout", "largest_singular_value", "layer_table", "layout_of", "n_doublings",
    "original_generator", "output_size", "patch_layers", "projection_logit", "receptive_field",
    "receptive_field_of", "scaled", "seed_generator", "transpose_conv_block", "upsample2", "upsample_conv_block",
    "upsampling_stack",
]  # fmt: skip

# The network presets build_models takes (``config.PRESETS`` holds the training recipes, one per preset name).
NETWORKS = ("original", "dcgan", "course", "style", "modern")  # modern: the course networks
PRESETS = NETWORKS  # old name, kept for older code: say NETWORKS (config.PRESETS are the recipes)

PRESET_KEYWORDS = {
    "original": ("skips", "dropout", "dropout_mode", "d_dropout"),
    "dcgan": ("ngf", "ndf"),
    "course": ("ch_out", "ch_max", "norm", "convs_per_block", "skips", "down", "mbstd_group", "spectral_norm"),
    "style": ("ch_out", "ch_max", "w_dim", "mapping_layers", "lr_mul", "mixing_prob", "down", "mbstd_group",
              "spectral_norm"),
}
PRESET_KEYWORDS["modern"] = PRESET_KEYWORDS["course"]  # the modern recipe trains the course networks
# The course networks' defaults before checkpoint version 2 (cxrlib.engine.checkpoints.upgrade_checkpoint): what a
# checkpoint written then was trained with. Measured on a 2-core CPU (benchmarks/RESULTS.md, 2026-12-03), the three layers cost
# more quality per CPU minute than they gave, and a step without them reaches dcgan's FLOP rate.
LEGACY_NETWORKS = {p: {"norm": "batch", "skips": True, "spectral_norm": True} for p in ("course", "modern")}
# The conditional pair keeps them: its G reads the class through class-conditional BatchNorm, and its figures
# (class consistency, per-class SWD; RESULTS.md, 2026-12-02) were measured with these networks.
CONDITIONAL_NETWORKS = LEGACY_NETWORKS


def build_models(
    preset: str, size: int, *, z_dim: int | None = None, width: float = 1.0, n_classes: int = 0,
    class_norm: bool | None = None, class_dim: int | None = None, **kw
) -> tuple[nn.Module, nn.Module]:
    """Build ``(G, D)`` of a preset for ``size``×``size`` grayscale images.

    preset: ``"original"`` (the original project's; ``"seed"`` is its old name), ``"dcgan"``, ``"course"``,
    ``"style"`` (the style-based G of ``cxrlib.models.style`` with the course D) or ``"modern"`` (the course
    networks; the preset differs in its recipe); size: a power of two from 32 to 512; z_dim: latent size
    (defaults: original 256, dcgan 100, course, style and modern 128); width: multiplies every channel count; n_classes ≥ 2: the
    conditional pair, ``ConditionalGenerator`` around the preset's G and ``ProjectionDiscriminator`` around
    its D (0: unconditional), G reading the class through class-conditional BatchNorm (``class_norm``, the
    default where G has BatchNorm) and/or a ``class_dim``-long embedding concatenated to z (the default,
    ``CLASS_DIM``, for a G without BatchNorm; both can be set through ``model_kwargs``).
    Extra keywords by preset -- original: ``skips``, ``dropout``, ``dropout_mode``, ``d_dropout``;
    dcgan: ``ngf``, ``ndf``; style: ``ch_out``, ``ch_max``, ``w_dim``, ``mapping_layers``, ``lr_mul``,
    ``mixing_prob`` and the D's; course and modern: ``ch_out``, ``ch_max``, ``norm``, ``convs_per_block``, ``skips``,
    ``down``, ``mbstd_group``, ``spectral_norm`` (defaults: no BatchNorm, no skip outputs, no spectral norm; the
    conditional pair of course/modern defaults to ``CONDITIONAL_NETWORKS``, with all three).
    """
    check_size(size)
    preset = PRESET_ALIASES.get(preset, preset)
    if preset not in PRESET_KEYWORDS:
        raise CxrError(f"unknown preset {preset!r}: choose one of {', '.join(NETWORKS)}")
    unknown = set(kw) - set(PRESET_KEYWORDS[preset])
    if unknown:
        raise CxrError(
            f"preset {preset!r} does not take {', '.join(sorted(unknown))} "
            f"(it takes {', '.join(PRESET_KEYWORDS[preset])})"
        )
    z_noise = z_dim or {"original": ORIGINAL_Z_DIM, "dcgan": 100}.get(preset, 128)
    if n_classes and preset in CONDITIONAL_NETWORKS:
        kw = {**CONDITIONAL_NETWORKS[preset], **kw}
    if n_classes:  # how G reads the class: class-conditional BatchNorm where G has BatchNorm, else [z, e(y)]
        has_bn = preset in ("original", "dcgan") or (preset in ("course", "modern") and kw.get("norm", "none") == "batch")
        class_norm = has_bn if class_norm is None else class_norm
        class_dim = (0 if class_norm else CLASS_DIM) if class_dim is None else class_dim
    else:
        class_dim = 0
    z_dim = z_noise + class_dim
    if preset == "original":
        d_dropout = kw.pop("d_dropout", 0.3)
        G = original_generator(size, z_dim=z_dim, width=width, **kw)
        D = OriginalDiscriminator(size, width=width, dropout=d_dropout)
    elif preset == "dcgan":
        G = DCGANGenerator(size, z_dim=z_dim, ngf=scaled(kw.get("ngf", 64), width))
        D = DCGANDiscriminator(size, ndf=scaled(kw.get("ndf", 64), width))
    else:  # course and modern: the course networks; style: the style-based G with the course D
        d_kw = {k: kw.pop(k) for k in ("down", "mbstd_group", "spectral_norm") if k in kw}
        shared = {k: kw[k] for k in ("ch_out", "ch_max") if k in kw}
        if preset == "style":
            from cxrlib.models.style import StyleGenerator

            d_kw.setdefault("spectral_norm", True)  # the style preset keeps the D it was measured with
            G = StyleGenerator(size, z_dim=z_dim, width=width, label_dim=class_dim, **kw)
        else:
            G = course_generator(size, z_dim=z_dim, width=width, **kw)
        D = CourseDiscriminator(size, width=width, **shared, **d_kw)
    if n_classes:
        G = ConditionalGenerator(G, n_classes, z_noise, class_dim=class_dim, class_norm=class_norm)
        D = ProjectionDiscriminator(D, n_classes)
    return G, D
