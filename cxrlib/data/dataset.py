"""The notebooks' one switch: :func:`load_dataset` turns ``"phantom"``, a folder, ``"pneumoniamnist"``,
``"chestmnist"`` or a MedMNIST ``.npz`` into an :class:`ImageSet`.

``_phantom_set`` generates procedural radiographs (with their masks on request) and caches them like decoded
folders; ``_take`` draws a seeded subset of ``n``.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from cxrlib.data.cache import CACHE_FORMAT, _cache_folder, _cache_read, _cache_write, _write_bytes, use_memmap
from cxrlib.data.folder import load_images
from cxrlib.data.imageset import ImageSet
from cxrlib.data.masks import load_pairs
from cxrlib.data.medmnist import MEDMNIST_CLASSES, load_medmnist
from cxrlib.errors import CxrError


def _phantom_set(
    n: int, size: int, seed: int, cache: bool = True, cache_dir=None, masks: bool = False, structures=None,
    mmap=None, **kw
) -> ImageSet:
    """n phantoms as an ImageSet, cached like decoded folders: the key holds the arguments and the bytes of
    ``phantom.py`` itself, so a changed generator never serves stale images. masks=True: with the anatomy
    masks, (N, 4, S, S) uint8 0/255 in ``phantom.MASK_NAMES`` order (``structures`` picks and orders them),
    cached in a second ``.masks.npy`` beside the images."""
    import torch

    from cxrlib import phantom
    from cxrlib.config import cache_dir as default_cache_dir

    names = list(phantom.MASK_NAMES)
    if structures is not None:
        if not masks:
            raise CxrError("structures needs masks=True")
        names = [structures] if isinstance(structures, str) else list(structures)
        unknown = [s for s in names if s not in phantom.MASK_NAMES]
        if unknown or not names or len(set(names)) != len(names):
            raise CxrError(
                f"phantom structures must be distinct names among {', '.join(phantom.MASK_NAMES)}, got {', '.join(names) or 'none'}"
            )
    if kw.get("severity", 0) is None:
        del kw["severity"]  # the default look: the default set's cache entry
    elif "severity" in kw:  # checked and normalised, so (0.3, 0.5) and [0.3, 0.5] share one entry
        kw["severity"] = phantom.check_severity(kw["severity"])
    key = hashlib.sha256(Path(phantom.__file__).read_bytes())
    key_kw = sorted([*kw.items(), ("masks", True)]) if masks else sorted(kw.items())  # masks=False: the old key
    key.update(json.dumps([CACHE_FORMAT, torch.__version__, n, size, seed, key_kw]).encode())
    folder = _cache_folder(cache_dir, [], 3) if cache else None
    cache = folder is not None
    base = (folder or Path(cache_dir or default_cache_dir())) / "phantoms" / key.hexdigest()[:32]
    mask_file = base.with_name(base.name + ".masks.npy")
    root = Path("phantom:")
    if cache:
        hit = _cache_read(base, root, mmap)
        if hit is not None and masks:
            try:
                m = np.load(mask_file, allow_pickle=False)
                ok = m.dtype == np.uint8 and m.shape == (len(hit), len(phantom.MASK_NAMES), size, size)
            except (OSError, ValueError, EOFError):
                ok = False
            if ok:
                hit.masks = torch.from_numpy(m)
            else:
                hit = None
        if hit is not None:
            hit.paths, hit.origin = [f"phantom:{i}" for i in range(len(hit))], "phantom"
            return _pick_phantom_masks(hit, names) if masks else hit
    ph = phantom.generate(n, size=size, seed=seed, masks=masks, **kw)
    images = torch.as_tensor(ph.images, dtype=torch.uint8).reshape(n, 1, size, size)
    labels = torch.as_tensor(ph.labels, dtype=torch.int64)
    mask_t = None
    if masks:
        mask_t = torch.cat([ph.masks[k].reshape(n, 1, size, size) for k in phantom.MASK_NAMES], dim=1)
        mask_t = mask_t.to(torch.uint8).mul_(255)
    if cache:
        try:
            if mask_t is not None:  # before the images' .json, which marks the entry complete
                base.parent.mkdir(parents=True, exist_ok=True)
                buf = io.BytesIO()
                np.save(buf, mask_t.numpy(), allow_pickle=False)
                _write_bytes(mask_file, buf.getbuffer())
            _cache_write(base, images.numpy(), labels.tolist(), list(ph.classes), [str(i) for i in range(n)], [])
        except OSError:  # a read-only home folder: the set is still returned, just not cached
            pass
        else:
            hit = _cache_read(base, root, True) if not masks and use_memmap(mmap, images.numel()) else None
            if hit is not None:  # the pixels from the cache file, as a later load would give them
                hit.paths, hit.origin = [f"phantom:{i}" for i in range(len(hit))], "phantom"
                return hit
    ds = ImageSet(images, labels, list(ph.classes), [f"phantom:{i}" for i in range(n)], [], "phantom")
    if mask_t is not None:
        ds.masks, ds.structures = mask_t, list(phantom.MASK_NAMES)
        ds = _pick_phantom_masks(ds, names)
    return ds


def _pick_phantom_masks(ds: ImageSet, names: list[str]) -> ImageSet:
    from cxrlib.phantom import MASK_NAMES

    if names != list(MASK_NAMES):
        ds.masks = ds.masks[:, [MASK_NAMES.index(k) for k in names]].contiguous()
    ds.structures = list(names)
    return ds


def _take(ds: ImageSet, n: int | None, seed: int) -> ImageSet:
    """A deterministic random ``n`` of ``ds`` (in their original order), or all of it."""
    if n is None or n >= len(ds):
        return ds
    idx = np.sort(np.random.default_rng(seed).permutation(len(ds))[:n])
    return ds.subset(idx)


def load_dataset(source="phantom", size: int = 64, n: int | None = None, seed: int = 0, **kw) -> ImageSet:
    """The notebooks' one switch: ``"phantom"`` | a folder | ``"pneumoniamnist"`` | ``"chestmnist"`` | a .npz.

    phantom: ``n`` procedural radiographs (default ``cxrlib.config.budget().n_images``), keywords
    ``pneumonia_fraction`` and ``severity`` (``(lo, hi)`` in (0, 1]: milder findings, :mod:`cxrlib.phantom`;
    cached apart from the default set). folder: every image under it (keywords of :func:`load_images`); ``n`` takes a
    seeded random subset. MedMNIST: keywords ``root`` (a .npz or its folder) and ``split``. Prints nothing:
    call ``.describe()`` on the result.

    mmap (phantom or folder): True keeps the pixels memory-mapped in the cache file (data larger than memory;
    ``.memmap`` names the file), False reads them into memory, None (default) memory-maps sets larger than
    :func:`cxrlib.config.memmap_threshold`.

    masks=True (Pix2Pix): paired anatomy masks in ``.masks``/``.structures``. phantom: the generator's own
    (lungs, heart, ribs, clavicles; ``structures=[...]`` picks some); folder: :func:`load_pairs` with
    ``masks_dir`` (default ``<folder>/masks``) and ``structures``."""
    masks = bool(kw.pop("masks", False))
    mmap = kw.pop("mmap", None)
    mask_kw = {k: kw.pop(k) for k in ("masks_dir", "structures") if kw.get(k) is not None}
    kw.pop("masks_dir", None), kw.pop("structures", None)
    if mask_kw and not masks:
        raise CxrError(f"{' and '.join(mask_kw)} given without masks=True")
    if isinstance(source, str) and source.lower() == "phantom":
        if n is None:
            from cxrlib.config import budget

            n = budget().n_images
        if "masks_dir" in mask_kw:
            raise CxrError("masks_dir is for a folder of images; phantoms bring their own masks")
        if masks:
            kw.update(masks=True, **mask_kw)
        return _phantom_set(int(n), size, seed, mmap=mmap, **kw)
    if masks and isinstance(source, str) and source.lower() in MEDMNIST_CLASSES:
        raise CxrError(f"{source} has no anatomy masks: use 'phantom' or a folder with masks/ for masks=True")
    if isinstance(source, str) and source.lower() in MEDMNIST_CLASSES:
        return _take(load_medmnist(source, size, **kw), n, seed)
    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() == ".npz":
        if masks:
            raise CxrError(f"'{path}' (MedMNIST) has no anatomy masks: use 'phantom' or a folder with masks/")
        flag = next((f for f in MEDMNIST_CLASSES if path.name.startswith(f)), "pneumoniamnist")
        return _take(load_medmnist(flag, size, root=path, **kw), n, seed)
    if path.is_dir():
        if masks:
            return _take(load_pairs(path, size, **mask_kw, **kw), n, seed)
        return _take(load_images(path, size, mmap=mmap, **kw), n, seed)
    raise CxrError(
        f"unknown data source {str(source)!r}: use 'phantom', 'pneumoniamnist', 'chestmnist', a folder of images "
        "or a MedMNIST .npz"
    )
