"""Image conversions used across cxrlib: one copy of each, one contract each.

An image set is ``(N, 1, H, W)``: ``uint8`` means pixels in [0, 255], a float dtype means a generator's
range [-1, 1] (tanh).

* :func:`as_images` -- a tensor, numpy array or anything with an ``.images`` attribute (``ImageSet``) → the
  ``(N, 1, H, W)`` tensor, checked;
* :func:`to_float` -- uint8 [0, 255] → float32 [-1, 1] (floats pass through as float32);
* :func:`to_uint8` -- float [-1, 1] → a uint8 *tensor* [0, 255] (same shape, same device);
* :func:`to_uint8_array` -- the same pixels as a *numpy* array on the CPU (matplotlib, PIL, widgets).
"""

from __future__ import annotations

import numpy as np
import torch

from cxrlib.errors import CxrError

__all__ = ["as_images", "to_float", "to_uint8", "to_uint8_array"]


def as_images(x, size: int | None = None, *, uint8: bool = False) -> torch.Tensor:
    """A tensor, numpy array or ``ImageSet`` → a ``(N, 1, H, W)`` tensor (dtype unchanged, no copy).

    ``uint8`` means [0, 255]; any float dtype means [-1, 1]. ``(N, H, W)`` gains the channel axis. With
    ``uint8=True`` only uint8 pixels are accepted (training data); with ``size`` the images must be
    ``size`` × ``size`` px (the training config's size). Anything else raises :class:`CxrError` with one line saying what was wrong.
    """
    x = getattr(x, "images", x)
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise CxrError(f"expected images as a tensor, array or ImageSet, got {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or x.shape[1] != 1:
        raise CxrError(f"expected grayscale images shaped (N, 1, H, W), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise CxrError("the image set is empty")
    if uint8 and x.dtype != torch.uint8:
        raise CxrError(f"expected uint8 images in [0, 255] (what load_dataset gives), got {x.dtype}")
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise CxrError(f"expected uint8 in [0, 255] or float in [-1, 1], got {x.dtype}")
    if size is not None and (x.shape[-2] != size or x.shape[-1] != size):
        raise CxrError(
            f"the images are {x.shape[-2]}×{x.shape[-1]} px but the config asks for {size} px "
            f"(load the data with size={size} or set size={x.shape[-1]})"
        )
    return x


def to_float(x: torch.Tensor) -> torch.Tensor:
    """``x``: uint8 [0, 255] → float32 in [-1, 1], computed as ``x · (2/255) − 1`` (same shape, same device);
    a float tensor (already [-1, 1]) comes back as float32.

    The training loop turns every batch into floats with this, so its arithmetic is part of what makes a run
    reproduce bit for bit: do not rewrite it as ``x / 127.5 − 1``, which differs in the last bit for 111 of
    the 256 grey levels."""
    if x.dtype == torch.uint8:
        return x.float().mul_(2 / 255).sub_(1)
    return x.float()


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """x: float in [-1, 1] (a generator's output) → uint8 tensor in [0, 255], same shape, same device."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_uint8_array(x) -> np.ndarray:
    """x: float in [-1, 1], a tensor (any device) or an array → the pixels of :func:`to_uint8` as a numpy uint8
    array on the CPU, same shape (for matplotlib, PIL and the widgets)."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, dtype=np.float32))
    return to_uint8(t).cpu().numpy()
