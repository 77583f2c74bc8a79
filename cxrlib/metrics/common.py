"""What every family of measures shares: reading a set in float chunks, the same-size check, and
nearest-neighbour distances between rows of features.

``_float_chunks`` converts ``_CHUNK`` images at a time to float in [-1, 1] (a large uint8 set never becomes one
big float tensor); ``embed`` runs any feature extractor over a set that way (FID's and KID's custom features,
``evaluate``'s ``fid_feature``); ``_check_same_size`` refuses two sets of different sizes in one sentence;
``_pairwise_distances`` and ``_k_smallest`` give the Euclidean distances and the k nearest rows, chunked so the
distance matrix stays small (used by the k-NN measures, the memorisation audit and ``evaluate``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from cxrlib.errors import CxrError
from cxrlib.images import to_float

_CHUNK = 256  # images converted to float at once: bounds memory at 512 px (256 · 512² · 4 B = 256 MB)


def _float_chunks(x: torch.Tensor, chunk: int = _CHUNK) -> Iterator[torch.Tensor]:
    """Yield ``x`` in slices of ``chunk`` images as float32 in [-1, 1]: a large uint8 set never becomes
    one big float tensor."""
    for i in range(0, x.shape[0], chunk):
        yield to_float(x[i : i + chunk])


def embed(extractor: Callable, images: torch.Tensor, batch: int = _CHUNK) -> torch.Tensor:
    """A feature extractor's features of a set: (N, 1, H, W) uint8 or float in [-1, 1] → (N, D) float32 on the CPU,
    ``batch`` float images in [-1, 1] at a time (a large uint8 set never becomes one big float). The extractor is any
    callable (B, 1, H, W) float in [-1, 1] → (B, …): a module, a chest-X-ray network, a function."""
    return torch.cat([torch.as_tensor(extractor(x)).detach().float().flatten(1).cpu()
                      for x in _float_chunks(images, batch)])


def _check_same_size(a: torch.Tensor, b: torch.Tensor, what: str = "real and fake") -> None:
    if a.shape[-2:] != b.shape[-2:]:
        raise CxrError(
            f"{what} images differ in size ({a.shape[-1]}x{a.shape[-2]} vs {b.shape[-1]}x{b.shape[-2]} px): "
            "resize them to one size first (python -m cxrlib prepare --size S)"
        )


def _pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between rows: a (n, D), b (m, D) → (n, m). Uses one matmul (‖a‖² + ‖b‖² − 2ab)."""
    d2 = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return d2.clamp_min_(0).sqrt_()


def _k_smallest(a: torch.Tensor, b: torch.Tensor, k: int, *, exclude_self: bool = False, chunk: int = 1024):
    """For each row of ``a``: the ``k`` smallest distances to rows of ``b`` and their indices, ascending.

    a (n, D), b (m, D) → values (n, k), indices (n, k). ``exclude_self`` (when a is b) skips the diagonal.
    Chunked over ``a`` so the distance matrix is never larger than chunk × m.
    """
    values, indices = [], []
    for i in range(0, a.shape[0], chunk):
        d = _pairwise_distances(a[i : i + chunk], b)
        if exclude_self:
            rows = torch.arange(d.shape[0])
            d[rows, rows + i] = float("inf")
        v, j = torch.topk(d, k, dim=1, largest=False)
        values.append(v)
        indices.append(j)
    return torch.cat(values), torch.cat(indices)
