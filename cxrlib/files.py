"""Writing files so that a reader never sees half of one: :func:`atomic_write`."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a half-written file.

    The temporary file sits next to ``path`` (``.NAME.tmp-PID-THREAD``, so processes and threads writing at
    once never share one) and is removed when ``write`` fails; ``path``'s folder is made when missing.
    Returns ``path``. Bytes: ``atomic_write(p, lambda tmp: tmp.write_bytes(data))``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
