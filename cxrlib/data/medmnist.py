"""MedMNIST: :func:`load_medmnist` gives PneumoniaMNIST or ChestMNIST as an :class:`ImageSet`.

:func:`read_medmnist_npz` reads a MedMNIST-layout ``.npz`` with numpy (no pickle); the file is found in a
given path, ``~/.medmnist`` or the cache, or downloaded through the ``medmnist`` package, and the images are
resized to the size asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cxrlib.data.imageset import ImageSet
from cxrlib.errors import CxrError

if TYPE_CHECKING:  # torch is imported where tensors are made: `inspect`/`prepare` run without it
    import torch


MEDMNIST_CLASSES = {"pneumoniamnist": ["normal", "pneumonia"], "chestmnist": ["no_finding", "finding"]}
MEDMNIST_SIZES = (28, 64, 128, 224)


def _medmnist_file(flag: str, msize: int) -> str:
    return f"{flag}{'' if msize == 28 else f'_{msize}'}.npz"


def read_medmnist_npz(path, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A MedMNIST-layout ``.npz`` (``{train,val,test}_{images,labels}``) → ((N, H, W) uint8, (N,) int64).

    split: "train" | "val" | "test" | None (all three, in that order). Multi-label rows (ChestMNIST's 14
    findings) become 1 when any finding is present. Read with numpy, without pickle."""
    splits = (split,) if split else ("train", "val", "test")
    try:
        with np.load(path, allow_pickle=False) as z:
            parts = [(z[f"{s}_images"], z[f"{s}_labels"]) for s in splits if f"{s}_images" in z.files]
    except Exception as e:  # OSError, ValueError, EOFError (empty file), zipfile.BadZipFile, zlib.error, …
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CxrError(f"cannot read '{path}' as a MedMNIST .npz ({why})") from None
    if not parts:
        raise CxrError(f"'{path}' has no {'/'.join(f'{s}_images' for s in splits)} arrays (not a MedMNIST .npz?)")
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([np.asarray(p[1]).reshape(len(p[1]), -1) for p in parts])
    if images.ndim == 4:  # (N, H, W, 3) colour sets: luminance
        images = np.rint(images[..., :3] @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    labels = (labels.sum(1) > 0) if labels.shape[1] > 1 else labels[:, 0]
    return images.astype(np.uint8), labels.astype(np.int64)


def _find_or_download_medmnist(flag: str, msize: int, root, download: bool = True) -> Path:
    """Where ``<flag>_<size>.npz`` is: ``root`` (a file or folder), ``~/.medmnist``, our cache, or downloaded
    there through the ``medmnist`` package (imported only now)."""
    from cxrlib.config import cache_dir

    name = _medmnist_file(flag, msize)
    if root is not None and Path(root).is_file():
        return Path(root)
    folders = [Path(root).expanduser()] if root is not None else [Path.home() / ".medmnist", cache_dir() / "medmnist"]
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    offline = f"cannot get {flag} ({msize} px)"
    hint = f"use source='phantom' (built in, no download) or put {name} in '{folders[-1]}'"
    if not download:
        raise CxrError(f"{offline}: {name} not found and download=False; {hint}")
    try:
        import medmnist
    except ImportError:
        raise CxrError(f"{offline}: the medmnist package is not installed (pip install medmnist); {hint}") from None
    folder = folders[-1]
    folder.mkdir(parents=True, exist_ok=True)
    info = medmnist.INFO[flag]
    try:  # the package's class downloads and checks the MD5; we then read the .npz ourselves
        getattr(medmnist, info["python_class"])(split="test", download=True, size=msize, root=str(folder))
    except Exception:
        raise CxrError(f"{offline}: download failed (offline?); {hint}") from None
    return folder / name


def _resize_uint8(images: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W) uint8 → (N, 1, size, size) uint8 (antialiased bilinear, in chunks to bound memory)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)
    if x.shape[-1] == size and x.shape[-2] == size:
        return x.clone()
    out = torch.empty((x.shape[0], 1, size, size), dtype=torch.uint8)
    for i in range(0, x.shape[0], 1024):
        y = torch.nn.functional.interpolate(x[i : i + 1024].float(), size=(size, size), mode="bilinear", antialias=True)
        out[i : i + 1024] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def load_medmnist(
    flag: str = "pneumoniamnist", size: int = 64, *, root=None, split: str | None = None, download: bool = True
) -> ImageSet:
    """PneumoniaMNIST or ChestMNIST at the smallest official size >= ``size`` (28/64/128/224), resized to ``size``.

    root: a MedMNIST ``.npz`` file or the folder holding it (else ``~/.medmnist``, then a download through the
    ``medmnist`` package into ``cxrlib.config.cache_dir()/medmnist``, unless ``download=False``).
    split: None = train+val+test."""
    flag = flag.lower()
    if flag not in MEDMNIST_CLASSES:
        raise CxrError(f"unknown MedMNIST set {flag!r}: choose one of {', '.join(MEDMNIST_CLASSES)}")
    msize = next((s for s in MEDMNIST_SIZES if s >= size), MEDMNIST_SIZES[-1])
    import torch

    path = _find_or_download_medmnist(flag, msize, root, download)
    classes = MEDMNIST_CLASSES[flag]
    images, labels = read_medmnist_npz(path, split)
    return ImageSet(
        _resize_uint8(images, size),
        torch.from_numpy(labels),
        list(classes),
        [f"{flag}:{i}" for i in range(len(labels))],
        [],
        flag,
    )
