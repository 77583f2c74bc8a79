"""Loading a folder: :func:`load_images` decodes every image under a folder into an :class:`ImageSet`.

``_decode_listing`` reads the set from the cache, or decodes the listed files by a thread pool straight into
the cache file (so a set larger than memory never has to fit in it), keeping or skipping unreadable files as
``on_error`` says. Decoding goes through ``decoding.decode_square``, looked up at call time (a test can patch
``cxrlib.data.decoding.decode_square`` to count decodes).
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterable

import numpy as np

from cxrlib.data import decoding
from cxrlib.data.cache import (
    RowReader,
    _cache_folder,
    _cache_key,
    _cache_meta,
    _cache_read,
    _check_disk,
    _not_caching,
    _write_bytes,
)
from cxrlib.data.decoding import CROP_MODES, DICOM_EXTS, PIL_EXTS
from cxrlib.data.imageset import ImageSet
from cxrlib.data.listing import IGNORE_DIRS, _Listing, _map_files, _warn_skipped, list_images
from cxrlib.errors import CxrError, ImageReadError


def _check_load_args(size, crop: str, on_error: str) -> None:
    if crop not in CROP_MODES:
        raise CxrError(f"unknown crop mode {crop!r}: choose one of {', '.join(CROP_MODES)}")
    if on_error not in ("raise", "skip"):
        raise CxrError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not 1 <= int(size) <= 4096:
        raise CxrError(f"size must be between 1 and 4096 px, got {size}")


def _decode_listing(
    listing: _Listing, size: int, crop: str, on_error: str, cache: bool, cache_dir, progress: bool,
    workers: int | None, *, warn_skipped: bool = True, stacklevel: int = 3, mmap=None,
) -> ImageSet:  # fmt: skip
    """Decode (or read from the cache) every file of ``listing``; ``stacklevel`` points warnings at the caller
    of the public function. With ``warn_skipped=False`` skipped files are only returned in ``.skipped``.

    With the cache on, the files are decoded straight into the cache file (a memory map), so a set larger
    than memory never has to fit in it; ``mmap`` (:func:`use_memmap`) then says whether the result stays
    memory-mapped or is read into memory."""
    root = listing.root
    origin = f"from '{root}'"
    base = None
    if cache:
        folder = _cache_folder(cache_dir, [root], stacklevel)
        if folder is not None:
            base = folder / "images" / _cache_key(listing, size, crop)
            hit = _cache_read(base, root, mmap)
            if hit is not None:
                if hit.skipped and on_error == "raise":
                    path, reason = hit.skipped[0]
                    raise ImageReadError(path, reason)
                for note in hit.notes:
                    warnings.warn(note, stacklevel=stacklevel)
                if warn_skipped:
                    _warn_skipped(hit.skipped, len(listing.files), stacklevel=stacklevel + 1)
                hit.origin = origin
                return hit

    n_files = len(listing.files)
    shape = (n_files, 1, size, size)
    tmp = None
    if base is not None:
        _check_disk(base.parent, n_files * size * size)
        tmp = base.with_name(f".{base.name}.npy.tmp-{os.getpid()}-{threading.get_ident()}")
        try:  # rows are written into the file as they are decoded (never all of them in memory)
            base.parent.mkdir(parents=True, exist_ok=True)
            rows = RowReader.create(tmp, shape)
        except OSError as e:  # a read-only home must not stop training
            _not_caching(folder, e.strerror or str(e), stacklevel)
            try:
                tmp.unlink(missing_ok=True)
            except OSError:  # e.g. the cache path runs through a file: there is nothing to remove
                pass
            base, tmp = None, None
    if base is None:
        images = np.empty(shape, dtype=np.uint8)
    try:
        kept, skipped, notes = [], [], []
        decode = lambda p: decoding.decode_square(p, size, crop)  # noqa: E731
        for i, res, err in _map_files(decode, listing.files, on_error, workers, progress):
            if err is not None:
                skipped.append((listing.rels[i], err.reason))
                continue
            if tmp is not None:
                rows.write(len(kept), res[0])
            else:
                images[len(kept), 0] = res[0]
            notes += res[1]
            kept.append(i)
        for note in notes:
            warnings.warn(note, stacklevel=stacklevel)
        if warn_skipped:
            _warn_skipped([(str(root / r), why) for r, why in skipped], n_files, stacklevel=stacklevel + 1)
        if not kept:
            raise CxrError(f"no readable images in '{root}': all {n_files} files failed (first: {skipped[0][0]}: {skipped[0][1]})")
        labels = [listing.labels[i] for i in kept]
        rels = [listing.rels[i] for i in kept]
        if tmp is not None:
            if len(kept) < n_files:  # the .npy header must hold the kept count: copy the rows into a shorter file
                short = tmp.with_name(tmp.name + "-kept")
                try:
                    out = RowReader.create(short, (len(kept), 1, size, size))
                    rows.copy_rows(out, len(kept))
                    out.close()
                    rows.close()
                    os.replace(short, tmp)
                finally:
                    short.unlink(missing_ok=True)
            rows.close()
            os.replace(tmp, base.with_suffix(".npy"))
            _write_bytes(base.with_suffix(".json"),
                          _cache_meta((len(kept), 1, size, size), labels, listing.classes, rels, skipped, notes))
            hit = _cache_read(base, root, mmap)
            if hit is None:
                raise CxrError(f"the data cache '{base.with_suffix('.npy')}' could not be read back after writing it")
            hit.origin = origin
            return hit
    finally:
        if tmp is not None:
            rows.close()
            tmp.unlink(missing_ok=True)
    import torch

    images = images[: len(kept)]
    return ImageSet(
        torch.from_numpy(images),
        torch.tensor(labels, dtype=torch.int64),
        list(listing.classes),
        [str(root / r) for r in rels],
        [(str(root / r), why) for r, why in skipped],
        origin,
        notes,
    )


def load_images(
    root,
    size: int = 64,
    *,
    crop: str = "center",
    on_error: str = "raise",
    cache: bool = True,
    cache_dir=None,
    progress: bool = False,
    workers: int | None = None,
    ignore_dirs: Iterable[str] = IGNORE_DIRS,
    mmap=None,
) -> ImageSet:
    """Decode every image under ``root`` into an :class:`ImageSet` of ``size`` x ``size`` grayscale images.

    root: a folder; class = first sub-folder name (images directly in ``root``: one class named after it;
    a top-level ``masks/`` folder is ignored). crop: "center" | "pad" | "stretch". on_error: "raise" stops at
    the first unreadable file naming it; "skip" leaves such files out, lists them in ``.skipped`` and warns
    once. cache: reuse/save the decoded tensor under ``cache_dir`` (default ``cxrlib.config.cache_dir()``),
    keyed by the files' names, mtimes and sizes, ``size`` and ``crop``; never inside ``root``. The files are
    decoded by a thread pool straight into the cache file; a cache folder without room for the set is a
    one-line error before decoding starts. mmap: True keeps the pixels in the cache file (``.memmap`` names
    it; batches are read page by page: data larger than memory), False reads them into memory, None/"auto"
    memory-maps sets larger than :func:`cxrlib.config.memmap_threshold`."""
    _check_load_args(size, crop, on_error)
    listing = list_images(root, ignore_dirs)
    if not listing.files:
        raise CxrError(f"no images found in '{listing.root}' (looked for {', '.join(sorted(PIL_EXTS | DICOM_EXTS))})")
    return _decode_listing(listing, size, crop, on_error, cache, cache_dir, progress, workers, stacklevel=3,
                           mmap=mmap)
