"""Paired and unpaired sets: :func:`load_pairs` (anatomy masks beside the X-rays, for Pix2Pix) and
:func:`load_unpaired` (two folders as two domains, for CycleGAN).

Masks live in ``masks/<structure>/<image stem>.png`` (or ``<stem>_mask.png``), one folder per structure;
Montgomery's ``leftMask/`` + ``rightMask/`` become one ``lungs`` structure and a flat folder of masks is
``lungs`` (``_mask_layout``, ``_pick_structures``, ``_MaskIndex``). Masks are decoded with the images' geometry
and thresholded (``_decode_mask``), and cached under the cache folder's ``pairs/`` (``_decode_masks``).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cxrlib.data.cache import CACHE_FORMAT, _cache_folder, _write_bytes
from cxrlib.data.decoding import DICOM_EXTS, PIL_EXTS, _fit, _open_any, _to_uint8
from cxrlib.data.folder import _check_load_args, _decode_listing, load_images
from cxrlib.data.imageset import ImageSet
from cxrlib.data.listing import (
    IGNORE_DIRS,
    _inside,
    _is_dicom_by_content,
    _Listing,
    _map_files,
    _warn_skipped,
    list_images,
)
from cxrlib.errors import CxrError, ImageReadError

MASK_FORMAT = 1  # bump when mask decoding changes, so old mask caches are not reused
_LEFT_LUNG = {"leftmask", "left", "leftlung", "leftlungs"}  # Montgomery leftMask/, JSRT-SCR "left lung/"
_RIGHT_LUNG = {"rightmask", "right", "rightlung", "rightlungs"}
_MASK_LAYOUT = "masks/<structure>/<image stem>.png, one sub-folder per structure, e.g. masks/lungs/"


def _image_stem(p: Path) -> str:
    """The name masks are matched by: the file name without an image extension (``1.2.840.7`` has none)."""
    ext = p.suffix.lower()
    return p.stem if ext in PIL_EXTS or ext in DICOM_EXTS else p.name


def _squash(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.lower())


def _has_images(folder: Path) -> bool:
    for _, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(not f.startswith(".") and Path(f).suffix.lower() in PIL_EXTS | DICOM_EXTS for f in filenames):
            return True
    return False


def _mask_layout(masks_dir: Path) -> list[tuple[str, list[Path]]]:
    """The structures found in ``masks_dir``: ``[(name, [folder, ...]), ...]`` in the documented order. A
    structure with two folders (Montgomery's leftMask + rightMask) is their union."""
    subdirs = sorted(d for d in masks_dir.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name != "__pycache__")
    subdirs = [d for d in subdirs if _has_images(d)]  # an empty or non-image folder is not a structure
    if not subdirs:
        flat = [f for f in masks_dir.iterdir() if f.is_file() and not f.name.startswith(".")]
        if any(f.suffix.lower() in PIL_EXTS | DICOM_EXTS for f in flat):
            return [("lungs", [masks_dir])]  # one flat folder of (lung) masks, e.g. Shenzhen's mask/
        raise CxrError(f"mask folder '{masks_dir}' holds no mask images (expected {_MASK_LAYOUT})")
    left = [d for d in subdirs if _squash(d.name) in _LEFT_LUNG]
    right = [d for d in subdirs if _squash(d.name) in _RIGHT_LUNG]
    found: dict[str, list[Path]] = {d.name: [d] for d in subdirs if d not in left and d not in right}
    if left or right:
        if len(left) != 1 or len(right) != 1:
            names = ", ".join(d.name for d in left + right)
            raise CxrError(
                f"mask folder '{masks_dir}' has left/right lung folders ({names}) but not exactly one of each: "
                "Montgomery-style masks need one left and one right folder (e.g. leftMask/ and rightMask/)"
            )
        if "lungs" in found:
            raise CxrError(
                f"mask folder '{masks_dir}' has both a 'lungs' folder and left/right lung folders "
                f"({left[0].name}, {right[0].name}): keep one of them"
            )
        found["lungs"] = [left[0], right[0]]
    from cxrlib.phantom import MASK_NAMES

    names = sorted(found)
    if set(names) <= set(MASK_NAMES):
        names = [n for n in MASK_NAMES if n in found]
    return [(n, found[n]) for n in names]


def _pick_structures(layout: list[tuple[str, list[Path]]], structures, masks_dir: Path) -> list[tuple[str, list[Path]]]:
    """The structures asked for, in that order (exact names first, else a unique case-insensitive match)."""
    if structures is None:
        return layout
    if isinstance(structures, str):
        structures = [structures]
    structures = list(structures)
    if not structures:
        raise CxrError("structures must name at least one mask structure (or be None for all of them)")
    if len(set(structures)) != len(structures):
        raise CxrError(f"structures lists a name twice: {', '.join(structures)}")
    by_name = dict(layout)
    by_lower: dict[str, list[str]] = collections.defaultdict(list)
    for n in by_name:
        by_lower[n.lower()].append(n)
    out = []
    for want in structures:
        similar = by_lower.get(want.lower(), [])
        name = want if want in by_name else (similar[0] if len(similar) == 1 else None)
        if name is None:
            raise CxrError(f"mask folder '{masks_dir}' has no '{want}' masks (it has: {', '.join(by_name)})")
        out.append((want, by_name[name]))
    return out


class _MaskIndex:
    """The mask files of one structure folder (searched recursively), by image stem: ``<stem>.<ext>`` or
    ``<stem>_mask.<ext>`` (Shenzhen); the exact name wins."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.exact: dict[str, Path] = {}
        self.suffixed: dict[str, Path] = {}
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
            for name in sorted(filenames):
                p = Path(dirpath) / name
                if name.startswith(".") or (p.suffix.lower() not in PIL_EXTS | DICOM_EXTS and not _is_dicom_by_content(p)):
                    continue
                stem = _image_stem(p)
                self._add(self.exact, stem, p)
                if stem.lower().endswith("_mask") and len(stem) > 5:
                    self._add(self.suffixed, stem[:-5], p)

    def _add(self, table: dict[str, Path], key: str, p: Path) -> None:
        if key in table:
            raise CxrError(
                f"two mask files for '{key}' in '{self.folder}': '{table[key]}' and '{p}' (keep one of them)"
            )
        table[key] = p

    def get(self, stem: str) -> Path | None:
        return self.exact.get(stem) or self.suffixed.get(stem)

    def names(self) -> list[str]:
        """The image stems this folder has masks for (``x_mask.png`` counts as ``x``)."""
        return sorted({(k[:-5] if k.lower().endswith("_mask") and len(k) > 5 else k) for k in self.exact})


def _decode_mask(path: Path, size: int, crop: str) -> np.ndarray:
    """One mask file → (size, size) uint8 0/255 with the images' geometry (as :func:`decode_square`: same
    ``size`` and ``crop``), thresholded at 128. The file is first made binary at half its brightest value
    (at most 128), so masks stored as 0/1, 0/255 or in a dark colour all read as 0/255."""
    d = _open_any(path, draft=(size, size, crop))
    a = np.asarray(d.pixels)
    peak = float(a.max()) if a.size else 0.0
    if peak > 0:
        px = Image.fromarray(np.where(a >= min(128.0, peak / 2), 255, 0).astype(np.uint8))
    else:
        px = Image.new("L", d.pixels.size, 0)
    return np.where(_to_uint8(_fit(px, size, crop)) >= 128, 255, 0).astype(np.uint8)


def _mask_cache_key(masks_dir: Path, files: Sequence[Sequence[Sequence[Path]]], names, size: int, crop: str) -> str:
    """Keyed by every mask file's name (relative to ``masks_dir``), mtime and size, pair by pair."""
    h = hashlib.sha256()
    head = {"format": CACHE_FORMAT, "mask_format": MASK_FORMAT, "size": size, "crop": crop, "structures": list(names)}
    h.update(json.dumps(head, sort_keys=True).encode())
    for per_pair in files:
        h.update(b"\n")
        for per_structure in per_pair:
            h.update(b"|")
            for p in per_structure:
                st = p.stat()
                rel = p.relative_to(masks_dir).as_posix() if p.is_relative_to(masks_dir) else str(p)
                h.update(f"{rel}\t{st.st_mtime_ns}\t{st.st_size};".encode())
    return h.hexdigest()[:32]


def _decode_masks(
    masks_dir: Path, files: list[list[list[Path]]], names: list[str], size: int, crop: str, on_error: str,
    cache_folder: Path | None, workers: int | None, progress: bool,
) -> tuple[np.ndarray, dict[int, tuple[str, str]]]:  # fmt: skip
    """files[pair][structure] = the mask files (their union is the channel) → ((P, C, S, S) uint8 0/255,
    {pair: (unreadable mask file, reason)}). Cached under ``cache_folder/pairs`` when it is given."""
    base = None
    if cache_folder is not None:
        base = cache_folder / "pairs" / _mask_cache_key(masks_dir, files, names, size, crop)
        try:
            meta = json.loads(base.with_suffix(".json").read_text())
            masks = np.load(base.with_suffix(".npy"), allow_pickle=False)
            bad = {int(i): (str(p), str(why)) for i, p, why in meta["bad"]}
            if masks.dtype == np.uint8 and masks.shape == (len(files), len(names), size, size):
                if bad and on_error == "raise":
                    i = min(bad)
                    raise ImageReadError(*bad[i])
                return masks, bad
        except (OSError, ValueError, KeyError, TypeError, EOFError):  # missing or corrupt: decode again
            pass
    # in order of first use, so with on_error="raise" the first pair's bad mask is the one reported
    unique = list(dict.fromkeys(p for per_pair in files for per_structure in per_pair for p in per_structure))
    decoded: dict[Path, np.ndarray] = {}
    errors: dict[Path, str] = {}
    for i, res, err in _map_files(lambda p: _decode_mask(p, size, crop), unique, on_error, workers, progress, "masks"):
        if err is not None:
            errors[unique[i]] = err.reason
        else:
            decoded[unique[i]] = res
    masks = np.zeros((len(files), len(names), size, size), dtype=np.uint8)
    bad: dict[int, tuple[str, str]] = {}
    for i, per_pair in enumerate(files):
        for c, per_structure in enumerate(per_pair):
            for p in per_structure:
                if p in errors:
                    bad.setdefault(i, (str(p), errors[p]))
                else:
                    np.maximum(masks[i, c], decoded[p], out=masks[i, c])
    if base is not None:
        try:
            base.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            np.save(buf, masks, allow_pickle=False)
            _write_bytes(base.with_suffix(".npy"), buf.getbuffer())
            meta = {"format": CACHE_FORMAT, "bad": [[i, p, why] for i, (p, why) in sorted(bad.items())]}
            _write_bytes(base.with_suffix(".json"), json.dumps(meta).encode())  # last: marks the entry complete
        except OSError as e:
            warnings.warn(f"could not write the mask cache under '{base.parent}': {e}", stacklevel=3)
    return masks, bad


def _without_folder(listing: _Listing, rel_dir: str) -> _Listing:
    """``listing`` less the files under the root-relative folder ``rel_dir`` (classes recomputed)."""
    prefix = rel_dir.rstrip("/") + "/"
    keep = [i for i, r in enumerate(listing.rels) if not r.startswith(prefix)]
    names = [listing.classes[listing.labels[i]] for i in keep]
    classes = sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    return dataclasses.replace(
        listing, files=[listing.files[i] for i in keep], rels=[listing.rels[i] for i in keep],
        labels=[index[c] for c in names], classes=classes, stats=[listing.stats[i] for i in keep],
        ignored=sorted([*listing.ignored, prefix]),
    )  # fmt: skip


def load_pairs(
    root,
    size: int = 64,
    *,
    masks_dir=None,
    structures: Sequence[str] | None = None,
    crop: str = "center",
    on_error: str = "raise",
    cache: bool = True,
    cache_dir=None,
    workers: int | None = None,
    need_images: bool = True,
    progress: bool = False,
) -> ImageSet:
    """Paired (anatomy mask, X-ray) data for image-to-image translation (Pix2Pix): an :class:`ImageSet` whose
    ``masks`` are (N, C, S, S) uint8 0/255, one channel per structure (``structures`` names them).

    root: the images, read as :func:`load_images` reads them (class = first sub-folder). masks_dir: the masks
    (default ``root/masks``; never taken as a class of X-rays), in one of these layouts:

    * ``masks_dir/<structure>/<image stem>.<ext>`` (or ``<image stem>_mask.<ext>``), one folder per structure;
    * Montgomery: ``leftMask/`` + ``rightMask/`` (or left/right, left_lung/right_lung) → one ``"lungs"``
      structure, their union (other structure folders beside them are kept);
    * one flat folder of mask files → one ``"lungs"`` structure.

    Structures come sorted by name (phantom names keep the order lungs, heart, ribs, clavicles);
    ``structures=[...]`` picks and orders them. A mask matches the image with the same file stem; masks are
    decoded with the images' geometry (same ``size`` and ``crop``) and thresholded at 128, so they stay
    aligned (files stored as 0/1 or in colour read as 0/255). A missing or unreadable mask:
    ``on_error="raise"`` stops naming the file; ``"skip"`` leaves the pair out, lists it in ``.skipped`` and
    warns once. Two images with the same stem (in different class folders) are refused. Decoded masks are
    cached like images (``cache``, ``cache_dir``); nothing is written into ``root`` or ``masks_dir``.

    need_images=False: masks only (the input of a trained translator). The pairs are the files of the first
    structure's folder; ``images`` are zeros, ``labels`` zeros, ``classes == ["masks"]`` and ``paths`` the
    mask stems (name outputs after them). With no ``masks_dir``, ``root/masks`` is used when it exists, else
    ``root`` itself is the mask folder."""
    import torch

    _check_load_args(size, crop, on_error)
    root = Path(root).expanduser()
    if masks_dir is not None:
        masks_dir = Path(masks_dir).expanduser()
    elif need_images or (root / "masks").is_dir():
        masks_dir = root / "masks"
    else:
        masks_dir = root
    listing = None
    if need_images:  # list the images first: a wrong root is reported before anything about masks
        if masks_dir.is_dir() and _inside(root, masks_dir):
            raise CxrError(f"the mask folder '{masks_dir}' holds the images '{root}': keep the masks in their own folder")
        ignore, nested = set(IGNORE_DIRS), None
        if _inside(masks_dir, root):  # never read the masks as a class of X-rays
            rel = masks_dir.resolve().relative_to(root.resolve())
            if len(rel.parts) == 1:
                ignore.add(rel.parts[0])
            else:
                nested = rel.as_posix()
        listing = list_images(root, ignore)
        if nested is not None:
            listing = _without_folder(listing, nested)
    if not masks_dir.is_dir():
        what = "not a folder" if masks_dir.exists() else "not found"
        raise CxrError(
            f"no masks: '{masks_dir}' {what}; expected the masks there as {_MASK_LAYOUT} "
            "(or give the mask folder with masks_dir / --masks DIR)"
        )
    chosen = _pick_structures(_mask_layout(masks_dir), structures, masks_dir)
    names = [n for n, _ in chosen]
    indexes = [[_MaskIndex(f) for f in folders] for _, folders in chosen]
    skipped: list[tuple[str, str]] = []

    # ---- the pairs: (what the pair is called, its image stem), then its mask files per structure
    if listing is not None:
        if not listing.files:
            raise CxrError(f"no images found in '{listing.root}' (looked for {', '.join(sorted(PIL_EXTS | DICOM_EXTS))})")
        seen: dict[str, Path] = {}
        for p in listing.files:
            stem = _image_stem(p)
            if stem in seen:
                raise CxrError(
                    f"two images named '{stem}': '{seen[stem]}' and '{p}' (masks are matched by file name: rename one)"
                )
            seen[stem] = p
        subjects = [(str(p), _image_stem(p)) for p in listing.files]
    else:
        first = indexes[0][0]
        subjects = [(str(first.get(stem)), stem) for stem in first.names()]

    keep: list[int] = []
    files: list[list[list[Path]]] = []
    for i, (subject, stem) in enumerate(subjects):
        per_pair = []
        for name, per_folder in zip(names, indexes):
            found = [ix.get(stem) for ix in per_folder]
            missing = next((ix for ix, f in zip(per_folder, found) if f is None), None)
            if missing is not None:
                expected = missing.folder / f"{stem}.png"
                if on_error == "raise":
                    raise CxrError(
                        f"no {name} mask for '{subject}': expected '{expected}' (mask files must have the image's name)"
                    )
                skipped.append((subject, f"no {name} mask (expected '{expected}')"))
                break
            per_pair.append(found)
        else:
            keep.append(i)
            files.append(per_pair)
    if not keep:
        raise CxrError(
            f"no pairs: none of the {len(subjects)} images has all its masks in '{masks_dir}' "
            f"(first: {skipped[0][0]}: {skipped[0][1]})"
        )

    # ---- the images
    n_total = len(subjects)
    if listing is not None:
        sub = dataclasses.replace(
            listing, files=[listing.files[i] for i in keep], rels=[listing.rels[i] for i in keep],
            labels=[listing.labels[i] for i in keep], stats=[listing.stats[i] for i in keep],
        )  # fmt: skip
        ds = _decode_listing(sub, size, crop, on_error, cache, cache_dir, progress, workers, warn_skipped=False, stacklevel=3)
        pos = {str(listing.root / r): j for j, r in enumerate(sub.rels)}
        img_ok = [pos[p] for p in ds.paths]  # index into `keep` of every decoded image
        skipped += ds.skipped
    else:
        img_ok = list(range(len(keep)))
        ds = ImageSet(
            torch.zeros((len(keep), 1, size, size), dtype=torch.uint8), torch.zeros(len(keep), dtype=torch.int64),
            ["masks"], [subjects[i][1] for i in keep], [], f"from '{masks_dir}' (masks only)",
        )  # fmt: skip

    # ---- the masks
    folder = _cache_folder(cache_dir, [masks_dir] + ([root] if need_images else []), 2) if cache else None
    masks, bad = _decode_masks(masks_dir, files, names, size, crop, on_error, folder, workers, progress)
    rows = [j for j, k in enumerate(img_ok) if k not in bad]
    skipped += [bad[k] for k in img_ok if k in bad]
    _warn_skipped(skipped, n_total, stacklevel=3)
    if not rows:
        raise CxrError(f"no readable pairs in '{root}': every mask or image failed (first: {skipped[0][0]}: {skipped[0][1]})")
    out = ds.subset(rows) if len(rows) < len(ds) else ds
    out.masks = torch.from_numpy(np.ascontiguousarray(masks[[img_ok[j] for j in rows]]))
    out.structures = list(names)
    out.skipped = skipped
    return out


def load_unpaired(a, b, size: int = 64, **load_images_kw) -> ImageSet:
    """Two folders of X-rays as two domains (CycleGAN): everything under ``a`` is domain A (label 0), under
    ``b`` domain B (label 1), whatever class sub-folders they hold. classes: the two folder names (when equal,
    ``<name>_a`` and ``<name>_b``); paths are kept. Keywords go to :func:`load_images` for both folders."""
    import torch

    a, b = Path(a).expanduser(), Path(b).expanduser()
    for x, y in ((a, b), (b, a)):
        if x.is_dir() and y.is_dir() and _inside(x, y):
            raise CxrError(f"the two domains overlap: '{x}' is '{y}' or inside it (give two separate folders)")
    sa = load_images(a, size, **load_images_kw)
    sb = load_images(b, size, **load_images_kw)
    name_a, name_b = a.resolve().name or "A", b.resolve().name or "B"
    if name_a == name_b:
        name_a, name_b = f"{name_a}_a", f"{name_b}_b"
    return ImageSet(
        torch.cat([sa.images, sb.images]),
        torch.cat([torch.zeros(len(sa), dtype=torch.int64), torch.ones(len(sb), dtype=torch.int64)]),
        [name_a, name_b],
        [*sa.paths, *sb.paths],
        [*sa.skipped, *sb.skipped],
        f"from '{a}' and '{b}'",
        [*sa.notes, *sb.notes],
    )
