"""The on-disk cache of decoded sets and the row reader of a memory-mapped one.

A cache entry is a ``.npy`` of the pixels and a ``.json`` of the facts (labels, classes, files, skipped files,
notes), keyed by the files' names, mtimes and sizes (``_cache_key``, ``CACHE_FORMAT``), written atomically, the
``.json`` last. ``_cache_read`` reads an entry back, in memory or memory-mapped (:func:`use_memmap` decides);
:class:`RowReader` reads (and, while the cache file is being filled, writes) rows of such a file with
``pread``/``pwrite``. ``_cache_folder`` picks the cache folder (``cxrlib.config.cache_dir()``) or says in one
warning why loading goes on without it (inside a source, a file, not writable); ``_check_disk`` refuses a set
the disk cannot hold before anything is decoded.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cxrlib.data.imageset import ImageSet
from cxrlib.data.listing import _inside, _Listing
from cxrlib.errors import CxrError
from cxrlib.files import atomic_write

if TYPE_CHECKING:  # torch is imported where tensors are made: `inspect`/`prepare` run without it
    import torch


CACHE_FORMAT = 1  # bump when decoding changes, so old caches are not reused


# =========================================================================== cache entries
def _cache_key(listing: _Listing, size: int, crop: str) -> str:
    h = hashlib.sha256()
    head = {"format": CACHE_FORMAT, "size": size, "crop": crop, "classes": listing.classes}
    h.update(json.dumps(head, sort_keys=True).encode())
    for rel, (mtime, nbytes) in zip(listing.rels, listing.stats):
        h.update(f"\n{rel}\t{mtime}\t{nbytes}".encode())
    return h.hexdigest()[:32]


def _write_bytes(path: Path, data) -> None:
    """``data`` (bytes or a buffer) into ``path`` through :func:`cxrlib.files.atomic_write`."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def use_memmap(mmap, nbytes: int) -> bool:
    """Whether a decoded set of ``nbytes`` pixels is memory-mapped from its cache file instead of read into
    memory: ``mmap`` True/False decides; ``None``/"auto": when it is larger than
    :func:`cxrlib.config.memmap_threshold` (a quarter of the available memory, or ``$CXRLIB_MEMMAP_BYTES``)."""
    if mmap is None or mmap == "auto":
        from cxrlib.config import memmap_threshold

        return nbytes > memmap_threshold()
    if isinstance(mmap, bool):
        return mmap
    raise CxrError(f"mmap must be True, False or 'auto', got {mmap!r}")


def _cache_read(base: Path, root: Path, mmap=False) -> ImageSet | None:
    """The cached set at ``base`` (.npy pixels + .json facts), or None when missing, partial or corrupt.
    With ``mmap`` (see :func:`use_memmap`) the pixels stay in the file, read page by page when indexed."""
    import torch

    try:
        meta = json.loads(base.with_suffix(".json").read_text())
        n, s = meta["n"], meta["size"]
        mapped = use_memmap(mmap, n * s * s)
        # copy-on-write: a writable array for torch, and nothing is ever written back to the cache file
        images = np.load(base.with_suffix(".npy"), mmap_mode="c" if mapped else None, allow_pickle=False)
        if images.dtype != np.uint8 or images.shape != (n, 1, s, s) or len(meta["labels"]) != n:
            return None
        return ImageSet(
            torch.from_numpy(images),
            torch.tensor(meta["labels"], dtype=torch.int64),
            list(meta["classes"]),
            [str(root / r) for r in meta["rels"]],
            [(str(root / r), why) for r, why in meta["skipped"]],
            notes=list(meta.get("notes", [])),
            memmap=str(base.with_suffix(".npy")) if mapped else "",
        )
    except CxrError:  # a bad mmap setting, not a bad cache entry
        raise
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, EOFError):  # corrupt: ignore it, it will be rebuilt
        return None


class RowReader:
    """Images of a memory-mapped set's ``.npy`` file read by index with ``os.preadv`` into a fresh buffer
    (and, with ``writable``, written by row with ``os.pwrite``: how the first decode fills the cache file).

    Faulting pages of a memory map in counts them in the process's resident memory (the kernel maps whole
    page-cache folios, up to megabytes per image touched), so after a few hundred random batches a mapped
    set looks as if it were in memory. Reading the rows with ``pread`` leaves them in the page cache, which
    the kernel can drop, and the process holds only the batch. path: a uint8 (N, 1, S, S) ``.npy``."""

    def __init__(self, path, writable: bool = False):
        self.path = str(path)
        with open(self.path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if dtype != np.uint8 or fortran or len(shape) != 4 or shape[1] != 1:
            raise CxrError(f"'{self.path}' is not a uint8 (N, 1, S, S) image cache")
        self.shape = tuple(shape)
        self.row = int(np.prod(shape[1:]))
        self.fd = os.open(self.path, os.O_RDWR if writable else os.O_RDONLY)

    @classmethod
    def create(cls, path, shape) -> RowReader:
        """A new uint8 ``.npy`` of ``shape`` (its header written, the pixels zero until written), writable."""
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": tuple(shape)})
            f.truncate(f.tell() + int(np.prod(shape)))
        return cls(path, writable=True)

    def write(self, i: int, pixels: np.ndarray) -> None:
        """Store row i (an (S, S) or (1, S, S) uint8 array)."""
        data = np.ascontiguousarray(pixels, dtype=np.uint8).reshape(-1)
        if os.pwrite(self.fd, data, self.offset + i * self.row) != self.row:
            raise OSError(f"short write to '{self.path}'")

    def copy_rows(self, dst: RowReader, n: int, chunk: int = 2**26) -> None:
        """Copy the first n rows into ``dst`` (a file of the same row size), a chunk at a time."""
        total, done = n * self.row, 0
        while done < total:
            data = os.pread(self.fd, min(chunk, total - done), self.offset + done)
            os.pwrite(dst.fd, data, dst.offset + done)
            done += len(data)

    def close(self) -> None:
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)
            self.fd = None

    def __len__(self) -> int:
        return self.shape[0]

    def __del__(self):
        self.close()

    def read(self, idx) -> torch.Tensor:
        """uint8 (len(idx), 1, S, S) tensor of the rows ``idx`` (ints, an array or a CPU tensor)."""
        import torch

        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        out = np.empty((len(idx), self.row), dtype=np.uint8)
        for k, i in enumerate(idx.tolist()):
            if not 0 <= i < self.shape[0]:
                raise IndexError(f"row {i} of {self.shape[0]}")
            if os.preadv(self.fd, [out[k]], self.offset + i * self.row) != self.row:
                raise CxrError(f"'{self.path}' is shorter than its header says (row {i}): delete it to rebuild the cache")
        return torch.from_numpy(out.reshape((len(idx),) + self.shape[1:]))


def _check_disk(folder: Path, nbytes: int) -> None:
    """Raise ``CxrError`` before decoding when the cache folder's disk cannot hold ``nbytes`` more."""
    import shutil

    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    if nbytes > free:
        raise CxrError(
            f"not enough disk space for the decoded data: {nbytes / 1e9:.2f} GB needed in the cache folder '{folder}', "
            f"{free / 1e9:.2f} GB free there (point $CXRLIB_CACHE at a larger disk)"
        )


def _cache_meta(images_shape, labels, classes, rels, skipped, notes=()) -> bytes:
    meta = {
        "format": CACHE_FORMAT, "n": int(images_shape[0]), "size": int(images_shape[-1]),
        "labels": [int(v) for v in labels], "classes": classes, "rels": rels, "skipped": skipped,
        "notes": list(notes),
    }  # fmt: skip
    return json.dumps(meta).encode()


def _cache_write(base: Path, images: np.ndarray, labels, classes, rels, skipped, notes=()) -> None:
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # an open file: np.save would add ".npy" to the temporary name
            np.save(f, images, allow_pickle=False)

    atomic_write(base.with_suffix(".npy"), save)
    # the .json is written last: it marks the entry complete
    _write_bytes(base.with_suffix(".json"), _cache_meta(images.shape, labels, classes, rels, skipped, notes))


# =========================================================================== the cache folder
def _cache_unusable(folder: Path) -> str | None:
    """Why ``folder`` cannot hold the cache (it is a file, cannot be created, is not writable), or None."""
    if folder.exists() and not folder.is_dir():
        return "it is a file, not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return e.strerror or type(e).__name__
    if not os.access(folder, os.W_OK | os.X_OK):
        return "it is not writable"
    return None


def _not_caching(folder: Path, why: str, stacklevel: int) -> None:
    """The one-line notice when the cache cannot be used: the data still loads, only slower next time."""
    warnings.warn(f"not caching decoded data: the cache folder '{folder}' cannot be used ({why}); "
                  "set CXRLIB_CACHE to a writable folder", stacklevel=stacklevel + 1)


def _cache_folder(cache_dir, sources: Sequence[Path], stacklevel: int) -> Path | None:
    """The cache folder, or None (with a one-line warning) when it lies inside one of the ``sources`` or cannot
    be used (a file, a read-only folder): loading then goes on without the cache."""
    from cxrlib.config import cache_dir as default_cache_dir

    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    for src in sources:
        if _inside(folder, src):
            warnings.warn(f"not caching: the cache folder '{folder}' is inside the source '{src}'", stacklevel=stacklevel + 1)
            return None
    why = _cache_unusable(folder)
    if why:
        _not_caching(folder, why, stacklevel + 1)
        return None
    return folder
