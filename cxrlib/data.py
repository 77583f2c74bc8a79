"""Data: any folder of X-rays (or the built-in phantoms, or MedMNIST) → one uint8 tensor, decoded once.

The training loop never touches files: ``load_dataset`` returns an :class:`ImageSet` whose ``images`` are a
``(N, 1, S, S)`` uint8 tensor (move it to the device whole, draw batches by index). Loading a folder

* reads PNG/JPEG/BMP/TIFF in any Pillow mode and DICOM (pydicom), always to one grayscale channel;
* makes every image square at ``size`` px: ``crop="center"`` (resize the shorter side, centre-crop — the
  default), ``"pad"`` (letterbox with black) or ``"stretch"``;
* takes the class from the first sub-folder (``normal/``, ``pneumonia/``);
* decodes fast: JPEGs are decoded at reduced scale (``Image.draft``), resizing shrinks by integer factors
  first (``reducing_gap``), and files are decoded by a thread pool (Pillow releases the GIL);
* caches the decoded tensor under ``cxrlib.config.cache_dir()``, so the second load is a file read;
* stops at the first unreadable file naming it (``on_error="raise"``) or skips and counts (``"skip"``).

Paired data (Pix2Pix: anatomy mask → X-ray), :func:`load_pairs` or ``load_dataset(..., masks=True)``: the
images anywhere under the root as above, and ``masks/<structure>/<same stem>.png`` beside them (0/255, one
folder per structure, e.g. ``masks/lungs/cxr_00001.png``; ``<stem>_mask.png`` also matches) — the layout
``cxrlib phantom --masks`` writes. Montgomery's ``leftMask/`` + ``rightMask/`` become one ``lungs``
structure (their union); a flat folder of mask files is ``lungs``; a mask folder elsewhere is given with
``masks_dir`` (``--masks DIR``). Unpaired data (CycleGAN), :func:`load_unpaired`: two folders, one per domain.

Nothing here ever writes into a source folder.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import io
import json
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from cxrlib.errors import CxrError, ImageReadError
from cxrlib.files import atomic_write

if TYPE_CHECKING:  # torch is imported where tensors are made: `inspect`/`prepare` run without it
    import torch

CROP_MODES = ("center", "pad", "stretch")
PIL_EXTS = {
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".tif", ".tiff",
    ".gif", ".webp", ".pgm", ".ppm", ".pnm", ".pbm",
}  # fmt: skip
DICOM_EXTS = {".dcm", ".dicom", ".dic"}
IGNORE_DIRS = ("masks",)  # `cxrlib phantom --masks` writes segmentation masks next to the classes
CACHE_FORMAT = 1  # bump when decoding changes, so old caches are not reused
_RESAMPLE = Image.Resampling.BICUBIC
_REDUCING_GAP = 2.0  # shrink by an integer factor first (fast box filter), then resample the last < 2x

# Pillow modes that hold more than 8 bits per pixel: their range is the image's own, not 0..255
_WIDE_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "I;32", "F"}
_MODE_DEPTH = {
    "1": "1-bit", "L": "8-bit gray", "LA": "8-bit gray+alpha", "P": "8-bit palette", "PA": "8-bit palette+alpha",
    "RGB": "8-bit RGB", "RGBA": "8-bit RGBA", "RGBX": "8-bit RGB", "CMYK": "8-bit CMYK", "YCbCr": "8-bit YCbCr",
    "I;16": "16-bit gray", "I;16L": "16-bit gray", "I;16B": "16-bit gray", "I;16N": "16-bit gray",
    "I": "32-bit int gray", "F": "32-bit float gray",
}  # fmt: skip


# =========================================================================== the data set
@dataclasses.dataclass(repr=False)
class ImageSet:
    """A decoded data set.

    images: (N, 1, S, S) uint8 tensor, 0 = black; labels: (N,) int64 index into ``classes``;
    paths: one per image (the file, or ``"phantom:<i>"`` / ``"pneumoniamnist:<i>"`` for generated or packed
    data); skipped: ``(path, reason)`` of every unreadable file left out; origin: words for ``describe()``.
    masks: paired sets only (:func:`load_pairs`, phantoms with ``masks=True``): (N, C, S, S) uint8, 0 or 255,
    one channel per anatomical structure, aligned pixel for pixel with ``images``; structures: the channel
    names, in order (e.g. ``["lungs", "heart", "ribs", "clavicles"]``).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    paths: list[str] = dataclasses.field(default_factory=list)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    origin: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)  # e.g. "multi-frame DICOM, first frame used"
    masks: torch.Tensor | None = None
    structures: list[str] = dataclasses.field(default_factory=list)
    memmap: str = ""  # the cache file ``images`` is memory-mapped from ("" : the pixels are in memory)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        """Image side in px."""
        return int(self.images.shape[-1])

    def class_counts(self) -> dict[str, int]:
        """Images per class name, in class order."""
        import torch

        counts = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, counts))

    def describe(self) -> str:
        """One line, e.g. ``1000 phantom images, 64 px, classes normal=500 pneumonia=500``."""
        n = len(self)
        head = f"{n} images {self.origin}" if self.origin.startswith("from ") else f"{n} {self.origin} images"
        counts = " ".join(f"{c}={k}" for c, k in self.class_counts().items())
        line = f"{' '.join(head.split())}, {self.size} px, classes {counts}"
        if self.masks is not None:
            line += f", masks {'/'.join(self.structures)}"
            if self.skipped:
                line += f" ({len(self.skipped)} left out: unreadable or without masks)"
        elif self.skipped:
            line += f" ({len(self.skipped)} unreadable file{'s' if len(self.skipped) > 1 else ''} skipped)"
        if self.memmap:
            line += f", memory-mapped ({self.images.numel() / 1e9:.2f} GB on disk)"
        return line

    def __repr__(self) -> str:
        return f"ImageSet({self.describe()})"

    def subset(self, idx) -> ImageSet:
        """The images at ``idx`` (ints, a bool mask, a numpy array or a tensor), in that order (a copy in
        memory, also of a memory-mapped set)."""
        import torch

        idx = torch.as_tensor(np.asarray(idx))
        if idx.dtype == torch.bool:
            idx = idx.nonzero().flatten()
        idx = idx.long().flatten()
        paths = [self.paths[i] for i in idx.tolist()] if self.paths else []
        masks = None if self.masks is None else self.masks[idx]
        return ImageSet(
            self.images[idx], self.labels[idx], list(self.classes), paths, list(self.skipped), self.origin,
            list(self.notes), masks, list(self.structures),
        )  # fmt: skip

    def to_float(self) -> torch.Tensor:
        """images as (N, 1, S, S) float32 in [-1, 1] (what G's tanh produces), as the GAN trains on them
        (:func:`cxrlib.images.to_float`)."""
        from cxrlib.images import to_float

        return to_float(self.images)

    def split(self, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> tuple[ImageSet, ImageSet, ImageSet]:
        """Deterministic (train, val, holdout), stratified: each class is shuffled with ``seed`` and cut by
        ``fractions`` (normalised to sum to 1), so every part keeps the class balance. The holdout is for
        the memorisation audit: never train on it."""
        if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
            raise CxrError(f"split fractions must be three non-negative numbers, got {tuple(fractions)}")
        f = np.asarray(fractions, dtype=np.float64) / float(sum(fractions))
        rng = np.random.default_rng(seed)
        parts: list[list[int]] = [[], [], []]
        labels = self.labels.numpy()
        for c in range(len(self.classes)):
            members = np.flatnonzero(labels == c)
            members = members[rng.permutation(len(members))]
            n_train = int(round(f[0] * len(members)))
            n_val = min(int(round(f[1] * len(members))), len(members) - n_train)
            parts[0] += members[:n_train].tolist()
            parts[1] += members[n_train : n_train + n_val].tolist()
            parts[2] += members[n_train + n_val :].tolist()
        return tuple(self.subset(sorted(p)) for p in parts)  # type: ignore[return-value]


# =========================================================================== reading one file
@dataclasses.dataclass
class _Decoded:
    """One decoded file: ``pixels`` is a PIL image in mode "L" (0..255) or "F" (float, 0..255);
    ``format``/``width``/``height``/``mode`` describe the file as stored (for ``inspect``)."""

    pixels: Image.Image
    format: str
    width: int
    height: int
    mode: str
    notes: list[str] = dataclasses.field(default_factory=list)


def _draft_request(width: int, height: int, size: int, crop: str) -> tuple[int, int]:
    """The smallest (w, h) a JPEG may be decoded at and still give ``size`` px after ``crop``."""
    if crop == "pad":  # the longer side becomes `size`
        s = size / max(width, height)
        return max(1, int(np.ceil(width * s))), max(1, int(np.ceil(height * s)))
    return size, size  # center/stretch: both sides must stay >= size


def _to_gray(im: Image.Image, path) -> Image.Image:
    """Any Pillow mode → "L" (8-bit) or, for wider modes, "F" stretched from the image's [min, max] to 0..255
    (so 12/16-bit X-rays keep their full tonal range instead of being clipped at 255)."""
    mode = im.mode
    if mode == "L":
        return im
    if mode in _WIDE_MODES:
        a = np.asarray(im).astype(np.float32)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return Image.fromarray(a.astype(np.float32, copy=False))
    if mode in ("1", "P", "PA", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"):
        return im.convert("L")
    if mode in ("LAB", "HSV"):
        return im.convert("RGB").convert("L")
    raise ImageReadError(path, f"unsupported image mode '{mode}'")


def _decoder_failure(e: Exception) -> str:
    """The reason part of "cannot read 'FILE': REASON" for an exception a decoder raised."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, Image.DecompressionBombError):  # not an OSError: Image.open and load raise it
        m = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", msg)
        if m:
            return (f"image too large ({int(m[1]):,} pixels; Pillow refuses more than {int(m[2]):,} as a possible "
                    "decompression bomb: raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file)")
        return f"image too large ({msg})"
    return f"cannot decode ({type(e).__name__}: {msg})" if msg else f"cannot decode ({type(e).__name__})"


def _open_pil(f, path, draft: tuple[int, int, str] | None) -> _Decoded:
    """Decode a Pillow-readable file object; ``draft=(size, size, crop)`` lets JPEGs decode at 1/2–1/8 scale."""
    try:
        im = Image.open(f)
    except Image.UnidentifiedImageError:
        raise ImageReadError(path, "not an image (or a format Pillow cannot read)") from None
    fmt, (w, h), mode = im.format or "?", im.size, im.mode
    try:
        frames = getattr(im, "n_frames", 1)
        if frames > 1:
            im.seek(0)  # multi-page TIFF / animated GIF: the first page
        if draft is not None and fmt == "JPEG":
            im.draft("L", _draft_request(w, h, draft[0], draft[2]))
        im.load()
        ImageOps.exif_transpose(im, in_place=True)  # phones and some scanners store rotation in EXIF
        gray = _to_gray(im, path)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageReadError(path, _decoder_failure(e)) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as e:
        msg = str(e) or type(e).__name__
        if "truncat" in msg.lower():
            detail = re.sub(r"(?i)image file is truncated\s*", "", msg).strip(" ()")
            reason = f"truncated file ({detail})" if detail else "truncated file"
        else:
            reason = f"corrupt image data ({msg})"
        raise ImageReadError(path, reason) from None
    d = _Decoded(gray, fmt, w, h, mode)
    if frames > 1:
        d.notes.append(f"'{path}': {frames} pages/frames, using the first")
    return d


def _dicom_decoder_hint(message: str) -> str:
    """pydicom's "missing dependencies" message → the pip packages to install, e.g.
    ``pip install pylibjpeg pylibjpeg-libjpeg (or python-gdcm, or pyjpegls)``."""
    options = []
    for requires in re.findall(r"^\s*\S+ - requires (.+)$", message, flags=re.M):
        pkgs = [re.split(r"[<>=!~ ]", p.strip())[0] for p in requires.split(" and ")]
        pkgs = ["python-gdcm" if p == "gdcm" else p for p in pkgs if p and p != "numpy"]
        if pkgs:
            options.append(" ".join(pkgs))
    # pylibjpeg covers most syntaxes and installs everywhere: suggest it first
    options.sort(key=lambda o: not o.startswith("pylibjpeg"))
    if not options:
        return "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (or python-gdcm)"
    return "pip install " + options[0] + "".join(f" (or {o})" for o in options[1:])


def _dicom_pixels(f, path) -> tuple[np.ndarray, dict, list[str]]:
    """A DICOM file → (H, W) float32 in [0, 1] as a radiologist would see it, plus header facts and notes.

    Order as in the standard (PS3.4 grayscale pipeline): stored values → modality LUT (rescale slope and
    intercept, e.g. to Hounsfield units) → VOI LUT or window (the display range chosen by the modality) →
    MONOCHROME1 inverted (there, high values are dark)."""
    try:
        import pydicom
    except ImportError:
        raise ImageReadError(path, "reading DICOM needs pydicom: pip install 'pydicom>=3.0'", hint=None) from None
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array
    except ImportError:  # pydicom 2.x: installed, but without the pixels module
        version = getattr(pydicom, "__version__", "?")
        raise ImageReadError(path, f"reading DICOM needs pydicom 3.0 or newer (this is {version}): "
                             "pip install -U 'pydicom>=3.0'", hint=None) from None
    try:
        ds = pydicom.dcmread(f, force=True)
    except Exception as e:  # pydicom raises many kinds on a broken header
        raise ImageReadError(path, f"unreadable DICOM header ({type(e).__name__}: {e})") from None
    if "PixelData" not in ds:
        raise ImageReadError(path, "DICOM file without pixel data (a DICOMDIR, report or structured document?)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        arr = pixel_array(ds, index=0) if frames > 1 else ds.pixel_array
    except Exception as e:  # no decoder, or broken compressed data
        msg = str(e)
        name = getattr(syntax, "name", str(syntax))
        if "missing dependencies" in msg or "missing required" in msg or "no pixel data handlers" in msg.lower():
            raise ImageReadError(
                path, f"compressed DICOM ({name}) and no decoder installed: {_dicom_decoder_hint(msg)}", hint=None
            ) from None
        first = re.sub(r"<_io\.\w+ object at 0x[0-9a-f]+>", "data", msg.splitlines()[-1].strip() if msg else "")
        raise ImageReadError(path, f"cannot decode DICOM pixel data ({name}): {first or type(e).__name__}") from None
    notes = []
    if frames > 1:
        notes.append(f"'{path}': multi-frame DICOM ({frames} frames), using the first")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    info = {"photometric": photometric, "bits": int(ds.get("BitsStored", 8) or 8), "frames": frames}
    if arr.ndim == 3:  # colour (RGB / YBR converted by pydicom): luminance, no grayscale LUTs apply
        a = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        lo, hi = float(a.min()), float(a.max())
        return ((a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)).astype(np.float32), info, notes
    a = np.asarray(apply_modality_lut(arr, ds))
    if "VOILUTSequence" in ds:  # a display LUT (pydicom prefers it to a window); it is indexed by integers
        if a.dtype.kind == "f":
            a = np.rint(a).astype(np.int64)
        n, first = int(ds.VOILUTSequence[0].LUTDescriptor[0]) or 65536, int(ds.VOILUTSequence[0].LUTDescriptor[1])
        table = apply_voi_lut(np.arange(first, first + n), ds, index=0)  # its whole output range
        a = np.asarray(apply_voi_lut(a, ds, index=0), dtype=np.float64)
        lo, hi = float(np.min(table)), float(np.max(table))
    elif "WindowCenter" in ds and "WindowWidth" in ds:  # a window: its output runs between what it gives far below and far above the centre
        a = np.asarray(apply_voi_lut(a.astype(np.float64), ds, index=0), dtype=np.float64)
        lo, hi = (float(v) for v in apply_voi_lut(np.array([-1e12, 1e12]), ds, index=0))
    else:  # no display range recorded: use the image's own
        a = a.astype(np.float64)
        lo, hi = float(a.min()), float(a.max())
    a = np.clip((a - lo) / (hi - lo), 0.0, 1.0) if hi != lo else np.zeros_like(a)
    if photometric == "MONOCHROME1":
        a = 1.0 - a
    return a.astype(np.float32), info, notes


def _open_any(path, draft: tuple[int, int, str] | None = None) -> _Decoded:
    """Open any supported file by content: the DICOM preamble ("DICM" at byte 128) or a .dcm name → pydicom,
    anything else → Pillow. Raises :class:`ImageReadError` naming the file and the reason."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise ImageReadError(path, "file not found", hint=None) from None
    except OSError as e:
        raise ImageReadError(path, f"cannot open ({e.strerror or e})") from None
    with f:
        head = f.read(132)
        if not head:
            raise ImageReadError(path, "empty file (0 bytes)")
        f.seek(0)
        try:
            if head[128:132] == b"DICM" or path.suffix.lower() in DICOM_EXTS:
                a, info, notes = _dicom_pixels(f, path)
                mode = f"{info['photometric']} {info['bits']}-bit"
                h, w = a.shape
                return _Decoded(Image.fromarray((a * 255.0).astype(np.float32)), "DICOM", w, h, mode, notes)
            return _open_pil(f, path, draft)
        except ImageReadError:
            raise
        except Exception as e:  # whatever else a decoder raises: one line naming the file, never a traceback
            raise ImageReadError(path, _decoder_failure(e)) from None


def read_image(path) -> np.ndarray:
    """Any supported file (PNG/JPEG/BMP/TIFF in any mode, DICOM) → (H, W) float32 in [0, 1], 0 = black.

    Colour is converted to luminance, 16-bit/float images are stretched from their own [min, max],
    EXIF orientation is applied, DICOM goes through its rescale, window and MONOCHROME1 inversion.
    Raises :class:`cxrlib.errors.ImageReadError` with the file and the reason."""
    d = _open_any(path)
    for note in d.notes:
        warnings.warn(note, stacklevel=2)
    return np.asarray(d.pixels, dtype=np.float32) / 255.0


def _fit(im: Image.Image, size: int, crop: str) -> Image.Image:
    """A grayscale PIL image ("L" or "F") → ``size`` x ``size`` by ``crop`` (see module docstring)."""
    w, h = im.size
    if crop == "center":
        m = min(w, h)
        box = ((w - m) / 2, (h - m) / 2, (w + m) / 2, (h + m) / 2)
        return im.resize((size, size), _RESAMPLE, box=box, reducing_gap=_REDUCING_GAP)
    if crop == "stretch":
        return im.resize((size, size), _RESAMPLE, reducing_gap=_REDUCING_GAP)
    if crop == "pad":
        s = size / max(w, h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        canvas = Image.new(im.mode, (size, size), 0)
        canvas.paste(im.resize((nw, nh), _RESAMPLE, reducing_gap=_REDUCING_GAP), ((size - nw) // 2, (size - nh) // 2))
        return canvas
    raise CxrError(f"unknown crop mode {crop!r}: choose one of {', '.join(CROP_MODES)}")


def _to_uint8(im: Image.Image) -> np.ndarray:
    """An "L" or "F" (0..255) image → (H, W) uint8."""
    a = np.asarray(im)
    if a.dtype == np.uint8:
        return a
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def decode_square(path, size: int, crop: str = "center") -> tuple[np.ndarray, list[str]]:
    """One file → ((size, size) uint8, notes). The fast path used by the loader (JPEG draft, reducing_gap)."""
    d = _open_any(path, draft=(size, size, crop))
    return _to_uint8(_fit(d.pixels, size, crop)), d.notes


# =========================================================================== finding files
@dataclasses.dataclass
class _Listing:
    """What a folder holds: image candidates (absolute paths, root-relative posix names, class index) and
    the files and folders that are not images."""

    root: Path
    files: list[Path]
    rels: list[str]
    labels: list[int]
    classes: list[str]
    ignored: list[str]
    stats: list[tuple[int, int]]  # (mtime_ns, bytes) per file, for the cache key


def _is_dicom_by_content(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def list_images(root, ignore_dirs: Iterable[str] = IGNORE_DIRS) -> _Listing:
    """Walk ``root`` (sorted, hidden files and folders left out). Image candidates: Pillow/DICOM extensions,
    or any file with the DICOM preamble (DICOMs often have no extension). Class = first sub-folder; files
    directly in ``root`` form a class named after the folder."""
    root = Path(root).expanduser()
    if not root.exists():
        raise CxrError(f"folder not found: '{root}'")
    if not root.is_dir():
        raise CxrError(f"not a folder: '{root}' (give the folder that holds the images)")
    ignore_dirs = set(ignore_dirs)
    root_class = root.resolve().name or "images"
    found: list[tuple[str, Path, str]] = []
    ignored: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel_dir = here.relative_to(root)
        keep = []
        for d in sorted(dirnames):
            if d.startswith(".") or d == "__pycache__":
                continue
            if rel_dir == Path(".") and d in ignore_dirs:
                ignored.append(f"{d}/")
                continue
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = here / name
            rel = p.relative_to(root).as_posix()
            ext = p.suffix.lower()
            if ext in PIL_EXTS or ext in DICOM_EXTS or _is_dicom_by_content(p):
                cls = rel.split("/", 1)[0] if "/" in rel else root_class
                found.append((rel, p, cls))
            else:
                ignored.append(rel)
    found.sort(key=lambda t: t[0])
    classes = sorted({c for _, _, c in found})
    index = {c: i for i, c in enumerate(classes)}
    stats = []
    for _, p, _ in found:
        st = p.stat()
        stats.append((st.st_mtime_ns, st.st_size))
    return _Listing(
        root, [p for _, p, _ in found], [r for r, _, _ in found], [index[c] for _, _, c in found], classes,
        sorted(ignored), stats,
    )


# =========================================================================== many files, in parallel
def default_workers() -> int:
    """Decoding threads: two per core (Pillow and zlib release the GIL; the extra hides file I/O)."""
    from cxrlib.config import cpu_cores

    return max(2, min(16, 2 * cpu_cores()))


def _map_files(
    fn: Callable[[Path], object],
    files: Sequence[Path],
    on_error: str = "raise",
    workers: int | None = None,
    progress: bool = False,
    desc: str = "decoding",
) -> Iterator[tuple[int, object, ImageReadError | None]]:
    """Apply ``fn`` to every file in a thread pool; yield ``(i, result, error)`` in file order.

    ``on_error="raise"``: the first unreadable file (in sorted order) raises, the rest is cancelled.
    ``on_error="skip"``: unreadable files come back with their error and ``result=None``."""
    if on_error not in ("raise", "skip"):
        raise CxrError(f"on_error must be 'raise' or 'skip', got {on_error!r}")

    def safe(p: Path):
        try:
            return fn(p), None
        except ImageReadError as e:
            return None, e

    workers = workers or default_workers()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(workers, len(files) or 1)))
    try:
        results: Iterable = pool.map(safe, files)
        if progress:
            from cxrlib.progress import progress as progress_line

            results = progress_line(results, total=len(files), desc=desc, unit="images")
        for i, (res, err) in enumerate(results):
            if err is not None and on_error == "raise":
                raise err
            yield i, res, err
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _warn_skipped(skipped: Sequence[tuple[str, str]], total: int, stacklevel: int = 3) -> None:
    """ONE warning for all skipped files: the count and the first few names with their reasons."""
    if not skipped:
        return
    first = "; ".join(f"{p}: {r}" for p, r in skipped[:3])
    more = f"; … and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    warnings.warn(f"skipped {len(skipped)} unreadable file(s) of {total}: {first}{more}", stacklevel=stacklevel)


# =========================================================================== the cache
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


def _inside(path: Path, folder: Path) -> bool:
    """True when ``path`` is ``folder`` or inside it (after resolving links)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or path.is_relative_to(folder)


def is_inside(path, folder) -> bool:
    """True when ``path`` is ``folder`` itself or lies anywhere below it, after resolving ``..``, relative
    parts and links (``data/train/../train/aug`` is inside ``data/train``; ``data/train2`` is not). This is
    the check behind ``augment``/``prepare`` refusing to write into their source (:func:`check_separate`)."""
    return _inside(Path(path).expanduser(), Path(folder).expanduser())


# =========================================================================== loading a folder
def _check_load_args(size, crop: str, on_error: str) -> None:
    if crop not in CROP_MODES:
        raise CxrError(f"unknown crop mode {crop!r}: choose one of {', '.join(CROP_MODES)}")
    if on_error not in ("raise", "skip"):
        raise CxrError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not 1 <= int(size) <= 4096:
        raise CxrError(f"size must be between 1 and 4096 px, got {size}")


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
        decode = lambda p: decode_square(p, size, crop)  # noqa: E731
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


# =========================================================================== paired (mask, image) and unpaired sets
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


# =========================================================================== MedMNIST
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


# =========================================================================== the notebooks' one switch
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

    phantom: ``n`` procedural radiographs (default ``cxrlib.config.budget().n_images``), keyword
    ``pneumonia_fraction``. folder: every image under it (keywords of :func:`load_images`); ``n`` takes a
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


# =========================================================================== inspect
@dataclasses.dataclass
class InspectReport:
    """What a folder holds; ``str(report)`` is the human report printed by ``python -m cxrlib inspect``."""

    root: str
    classes: dict[str, int]
    formats: dict[str, int]
    sizes: dict[str, int]
    modes: dict[str, int]
    unreadable: list[tuple[str, str]]
    ignored: list[str]
    notes: list[str]
    n_files: int

    @property
    def n_readable(self) -> int:
        return self.n_files - len(self.unreadable)

    @property
    def ok(self) -> bool:
        """True when every image file can be read."""
        return not self.unreadable and self.n_files > 0

    def __str__(self) -> str:
        def counts(d: dict[str, int], limit: int = 8) -> str:
            items = sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))
            text = ", ".join(f"{k} {v}" for k, v in items[:limit])
            return text + (f", … ({len(items) - limit} more)" if len(items) > limit else "") if items else "-"

        lines = [
            f"{self.root}: {self.n_files} image file(s), {self.n_readable} readable, "
            f"{len(self.unreadable)} unreadable, {len(self.classes)} class(es)",
            f"  classes : {counts(self.classes, 20)}",
            f"  formats : {counts(self.formats)}",
            f"  sizes   : {counts(self.sizes)}",
            f"  modes   : {counts(self.modes)}",
        ]
        square = sum(v for k, v in self.sizes.items() if k.split("x")[0] == k.split("x")[1])
        if square < self.n_readable:
            lines.append(f"  note    : {self.n_readable - square} non-square image(s): loading centre-crops them (crop='pad' letterboxes)")
        lines += [f"  note    : {n}" for n in self.notes]
        if self.ignored:
            shown = ", ".join(self.ignored[:5]) + (f", … ({len(self.ignored) - 5} more)" if len(self.ignored) > 5 else "")
            lines.append(f"  ignored : {len(self.ignored)} non-image file(s)/folder(s): {shown}")
        if self.unreadable:
            lines.append(f"  unreadable ({len(self.unreadable)}):")
            lines += [f"    {p}: {why}" for p, why in self.unreadable]
        return "\n".join(lines)


def _probe(path: Path) -> _Decoded:
    """Decode fully (so a truncated file is caught) but at 1/8 scale where JPEG allows it."""
    return _open_any(path, draft=(64, 64, "center"))


def inspect_folder(root, *, workers: int | None = None, ignore_dirs: Iterable[str] = IGNORE_DIRS) -> InspectReport:
    """Read every image under ``root`` and report classes, formats, sizes, bit depths/modes and every
    unreadable file with its reason. Never stops at a bad file; writes nothing."""
    listing = list_images(root, ignore_dirs)
    classes: collections.Counter = collections.Counter()
    formats: collections.Counter = collections.Counter()
    sizes: collections.Counter = collections.Counter()
    modes: collections.Counter = collections.Counter()
    unreadable, notes = [], []
    for i, d, err in _map_files(_probe, listing.files, "skip", workers):
        if err is not None:
            unreadable.append((listing.rels[i], err.reason))
            continue
        classes[listing.classes[listing.labels[i]]] += 1
        formats[d.format] += 1
        sizes[f"{d.width}x{d.height}"] += 1
        mode = d.mode if d.format == "DICOM" else f"{d.mode} ({_MODE_DEPTH.get(d.mode, '?')})"
        modes[mode] += 1
        notes += [n.replace(f"'{listing.files[i]}'", listing.rels[i]) for n in d.notes]
    return InspectReport(
        str(listing.root), dict(classes), dict(formats), dict(sizes), dict(modes), unreadable, listing.ignored,
        notes, len(listing.files),
    )


# =========================================================================== prepare
def check_separate(src, dst) -> tuple[Path, Path]:
    """Refuse a destination equal to or inside the source, or a source inside the destination (writing there
    would change the source, or mix it into the output). Returns both as given."""
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if not src.is_dir():
        raise CxrError(f"source folder not found: '{src}'")
    if _inside(dst, src):
        raise CxrError(f"refusing to write into the source: '{dst}' is '{src}' or inside it (choose another --dst)")
    if _inside(src, dst):
        raise CxrError(f"refusing: the source '{src}' is inside the destination '{dst}' (choose another --dst)")
    return src, dst


class _Writer:
    """Writes files atomically under ``dst`` and can take back everything it wrote (no partial output)."""

    def __init__(self, dst: Path):
        self.dst = dst
        self.written: list[Path] = []
        self.made: list[Path] = []

    def write(self, rel: str, data: bytes) -> None:
        path = self.dst / rel
        missing = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
        path.parent.mkdir(parents=True, exist_ok=True)
        self.made += reversed(missing)
        _write_bytes(path, data)
        self.written.append(path)

    def undo(self) -> None:
        for p in self.written:
            p.unlink(missing_ok=True)
        for d in reversed(self.made):
            try:
                d.rmdir()
            except OSError:
                pass


def _png_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a.astype(np.uint8, copy=False)).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _unique_png_names(rels: Sequence[str]) -> list[str]:
    """``a/x.jpg`` → ``a/x.png``; when two sources would collide (x.jpg and x.tif) the later one keeps its
    extension in the name (``x_tif.png``)."""
    out, used = [], set()
    for rel in rels:
        p = Path(rel)
        name = p.with_suffix(".png").as_posix()
        if name in used:
            name = p.with_name(f"{p.stem}_{p.suffix.lstrip('.').lower() or 'file'}.png").as_posix()
        used.add(name)
        out.append(name)
    return out


def prepare_folder(
    src, dst, size: int, on_error: str = "raise", *, crop: str = "center", workers: int | None = None,
    progress: bool = False,
) -> str:  # fmt: skip
    """Convert every image under ``src`` (any supported format, DICOM included) into clean ``size`` x ``size``
    8-bit grayscale PNGs under ``dst``, keeping the relative paths (class sub-folders). Each file is written
    to a temporary name and renamed; with ``on_error="raise"`` a bad file also removes what this call wrote.
    Returns a one-paragraph summary."""
    src, dst = check_separate(src, dst)
    if crop not in CROP_MODES:
        raise CxrError(f"unknown crop mode {crop!r}: choose one of {', '.join(CROP_MODES)}")
    if not 1 <= int(size) <= 4096:
        raise CxrError(f"size must be between 1 and 4096 px, got {size}")
    listing = list_images(src)
    if not listing.files:
        raise CxrError(f"no images found in '{src}'")
    names = _unique_png_names(listing.rels)

    def convert(p: Path):
        a, notes = decode_square(p, size, crop)
        return _png_bytes(a), notes

    writer = _Writer(dst)
    skipped: list[tuple[str, str]] = []
    per_class: collections.Counter = collections.Counter()
    try:
        for i, res, err in _map_files(convert, listing.files, on_error, workers, progress, "preparing"):
            if err is not None:
                skipped.append((str(listing.files[i]), err.reason))
                continue
            data, notes = res
            for note in notes:
                warnings.warn(note, stacklevel=2)
            writer.write(names[i], data)
            per_class[listing.classes[listing.labels[i]]] += 1
    except BaseException:
        writer.undo()
        raise
    _warn_skipped(skipped, len(listing.files))
    if not writer.written:
        raise CxrError(f"no readable images in '{src}': all {len(listing.files)} files failed")
    counts = " ".join(f"{c}={k}" for c, k in sorted(per_class.items()))
    summary = f"prepared {len(writer.written)} images ({size} px grayscale PNG, crop={crop}; {counts}) from '{src}' into '{dst}'"
    if skipped:
        summary += f"; skipped {len(skipped)} unreadable: " + ", ".join(Path(p).name for p, _ in skipped[:5])
        summary += " …" if len(skipped) > 5 else ""
    return summary
