"""Reading one file: any Pillow format or DICOM → one grayscale channel, then made square.

:func:`read_image` gives a file as (H, W) float32 in [0, 1]; :func:`decode_square` gives it as ``size`` x
``size`` uint8, the loader's fast path (JPEGs decoded at reduced scale with ``Image.draft``, resizing that
shrinks by integer factors first with ``reducing_gap``). Behind them: ``_open_any`` opens a file by its content
(the DICOM preamble or a .dcm name → pydicom, anything else → Pillow) and turns whatever a decoder raises into
one :class:`cxrlib.errors.ImageReadError` naming the file; ``_to_gray`` takes any Pillow mode to "L" (or "F",
stretched, for 12/16-bit images); ``_dicom_pixels`` is the DICOM grayscale pipeline (modality LUT, VOI LUT or
window, MONOCHROME1); ``_fit`` applies the crop modes ``CROP_MODES`` ("center", "pad", "stretch").
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cxrlib.errors import CxrError, ImageReadError

CROP_MODES = ("center", "pad", "stretch")
PIL_EXTS = {
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".tif", ".tiff",
    ".gif", ".webp", ".pgm", ".ppm", ".pnm", ".pbm",
}  # fmt: skip
DICOM_EXTS = {".dcm", ".dicom", ".dic"}


_RESAMPLE = Image.Resampling.BICUBIC
_REDUCING_GAP = 2.0  # shrink by an integer factor first (fast box filter), then resample the last < 2x

# Pillow modes that hold more than 8 bits per pixel: their range is the image's own, not 0..255
_WIDE_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "I;32", "F"}


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
    ``pip install python-gdcm (cxrlib's 'dicom' extra; or pylibjpeg pylibjpeg-libjpeg; or pyjpegls)``."""
    options = []
    for requires in re.findall(r"^\s*\S+ - requires (.+)$", message, flags=re.M):
        pkgs = [re.split(r"[<>=!~ ]", p.strip())[0] for p in requires.split(" and ")]
        pkgs = ["python-gdcm" if p == "gdcm" else p for p in pkgs if p and p != "numpy"]
        if pkgs:
            options.append(" ".join(pkgs))
    # python-gdcm is what the 'dicom' extra installs (every JPEG syntax, permissive licence, wheels everywhere)
    others = [o for o in options if o != "python-gdcm"]
    if options and len(others) == len(options):  # a syntax GDCM does not decode
        return "pip install " + options[0] + "".join(f" (or {o})" for o in options[1:])
    return "pip install python-gdcm (cxrlib's 'dicom' extra" + "".join(f"; or {o}" for o in others) + ")"


def _dicom_pixels(f, path) -> tuple[np.ndarray, dict, list[str]]:
    """A DICOM file → (H, W) float32 in [0, 1] as a radiologist would see it, plus header facts and notes.

    Order as in the standard (PS3.4 grayscale pipeline): stored values → modality LUT (rescale slope and
    intercept, e.g. to Hounsfield units) → VOI LUT or window (the display range chosen by the modality) →
    MONOCHROME1 inverted (there, high values are dark)."""
    try:
        import pydicom
    except ImportError:
        raise ImageReadError(path, "reading DICOM needs pydicom: pip install 'pydicom>=3.0.1'", hint=None) from None
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array
    except ImportError:  # pydicom 2.x: installed, but without the pixels module
        version = getattr(pydicom, "__version__", "?")
        raise ImageReadError(path, f"reading DICOM needs pydicom 3.0 or newer (this is {version}): "
                             "pip install -U 'pydicom>=3.0.1'", hint=None) from None
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
    """A grayscale PIL image ("L" or "F") → ``size`` x ``size`` by ``crop`` (see the :mod:`cxrlib.data` docstring)."""
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
