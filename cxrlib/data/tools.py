"""The folder tools behind ``python -m cxrlib inspect`` and ``prepare``.

:func:`inspect_folder` reads every image under a folder and returns an :class:`InspectReport` (classes,
formats, sizes, modes, every unreadable file); :func:`prepare_folder` converts a folder into clean square
8-bit grayscale PNGs, written atomically by ``_Writer`` (which can take back what it wrote), after
:func:`check_separate` has refused a destination inside the source or around it.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cxrlib.data import decoding
from cxrlib.data.cache import _write_bytes
from cxrlib.data.decoding import CROP_MODES, _Decoded, _open_any
from cxrlib.data.listing import IGNORE_DIRS, _inside, _map_files, _warn_skipped, list_images
from cxrlib.errors import CxrError

_MODE_DEPTH = {
    "1": "1-bit", "L": "8-bit gray", "LA": "8-bit gray+alpha", "P": "8-bit palette", "PA": "8-bit palette+alpha",
    "RGB": "8-bit RGB", "RGBA": "8-bit RGBA", "RGBX": "8-bit RGB", "CMYK": "8-bit CMYK", "YCbCr": "8-bit YCbCr",
    "I;16": "16-bit gray", "I;16L": "16-bit gray", "I;16B": "16-bit gray", "I;16N": "16-bit gray",
    "I": "32-bit int gray", "F": "32-bit float gray",
}  # fmt: skip


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
        a, notes = decoding.decode_square(p, size, crop)
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
