"""Finding the files and working through many of them.

:func:`list_images` walks a folder (sorted, hidden files left out; class = first sub-folder; a top-level
``masks/`` folder ignored) into a ``_Listing``; ``_map_files`` applies a function to every file in a thread
pool (:func:`default_workers` threads) and yields the results in file order, stopping at the first unreadable
file or skipping it; ``_warn_skipped`` reports all skipped files in one warning. :func:`is_inside` says
whether a path lies in a folder (the check that keeps the cache and the tools' output out of a source).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from cxrlib.data.decoding import DICOM_EXTS, PIL_EXTS
from cxrlib.errors import CxrError, ImageReadError

IGNORE_DIRS = ("masks",)  # `cxrlib phantom --masks` writes segmentation masks next to the classes


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


# =========================================================================== where a path lies
def _inside(path: Path, folder: Path) -> bool:
    """True when ``path`` is ``folder`` or inside it (after resolving links)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or path.is_relative_to(folder)


def is_inside(path, folder) -> bool:
    """True when ``path`` is ``folder`` itself or lies anywhere below it, after resolving ``..``, relative
    parts and links (``data/train/../train/aug`` is inside ``data/train``; ``data/train2`` is not). This is
    the check behind ``augment``/``prepare`` refusing to write into their source (:func:`check_separate`)."""
    return _inside(Path(path).expanduser(), Path(folder).expanduser())
