"""Files shipped with cxrlib: small pretrained generators trained on 64-px phantoms.

``pretrained_checkpoint()`` gives the unconditional one's path when the file is present and its sha256 matches
the one recorded beside it, else ``None`` (notebooks then train their own); ``pretrained_checkpoint(name=
"pretrained-conditional")`` the conditional one (normal / pneumonia), ``"pretrained-cyclegan"`` a CycleGAN and
``"pretrained-style"`` a style-based generator (notebooks 08, 09). ``make pretrained``, ``make
pretrained-conditional``, ``make pretrained-cyclegan`` and ``make pretrained-style`` reproduce them; the
commands, seeds, steps, wall times and figures are in ``benchmarks/RESULTS.md``. On the command line ``--ckpt NAME`` names them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
PRETRAINED = HERE / "course_phantom_64.pt"
PRETRAINED_CONDITIONAL = HERE / "conditional_phantom_64.pt"
PRETRAINED_CYCLEGAN = HERE / "cyclegan_phantom_64.pt"  # normal ↔ pneumonia (notebook 08)
PRETRAINED_STYLE = HERE / "style_phantom_64.pt"  # the style preset at width 0.5 (notebook 09)
# --ckpt NAME → the name of the module attribute that holds its path (looked up at each call, so tests can point
# an attribute at another file)
SHIPPED = {"pretrained": "PRETRAINED", "pretrained-conditional": "PRETRAINED_CONDITIONAL",
           "pretrained-cyclegan": "PRETRAINED_CYCLEGAN", "pretrained-style": "PRETRAINED_STYLE"}


def shipped_path(name: str = "pretrained") -> Path:
    """Where the shipped checkpoint ``name`` (a key of ``SHIPPED``) lives, present or not."""
    return globals()[SHIPPED[name]]


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pretrained_checkpoint(verify: bool = True, name: str = "pretrained") -> Path | None:
    """Path of a shipped pretrained checkpoint (EMA generator + config; ``name`` a key of ``SHIPPED``), or None
    when it is absent or altered."""
    path = shipped_path(name)
    if not path.is_file():
        return None
    if verify:
        recorded = path.with_suffix(".sha256")
        if not recorded.is_file() or recorded.read_text().split()[0] != sha256(path):
            return None
    return path
