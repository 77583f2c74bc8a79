"""Files shipped with cxrlib: the small pretrained ``course`` generator trained on phantoms.

``pretrained_checkpoint()`` gives its path when the file is present and its sha256 matches the one recorded
beside it, else ``None`` (notebooks then train their own). ``make pretrained`` reproduces it; the command, seed,
steps, wall time and final SWD are in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
PRETRAINED = HERE / "course_phantom_64.pt"


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pretrained_checkpoint(verify: bool = True) -> Path | None:
    """Path of the shipped pretrained checkpoint (EMA generator + config), or None when it is absent or altered."""
    if not PRETRAINED.is_file():
        return None
    if verify:
        recorded = PRETRAINED.with_suffix(".sha256")
        if not recorded.is_file() or recorded.read_text().split()[0] != sha256(PRETRAINED):
            return None
    return PRETRAINED
