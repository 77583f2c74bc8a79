"""Remove outputs, execution counts and widget state from notebooks before committing them.

Usage: ``python tools/strip_outputs.py [--check] [--all] [NOTEBOOK_OR_FOLDER ...]`` (default ``notebooks``).
The printed output of ``# NBVAL_CHECK_OUTPUT`` cells is kept (nbval's reference; store it with
``tools/store_checked_outputs.py``) unless ``--all``. ``--check`` changes nothing and exits 1 naming the
notebooks that still hold outputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrlib.exercises import clear_outputs, notebook_text, read_notebook, run_tool, write_notebook  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="notebooks or folders (default: notebooks/)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when outputs are present")
    parser.add_argument("--all", action="store_true", help="also drop the outputs of # NBVAL_CHECK_OUTPUT cells")
    args = parser.parse_args(argv)
    paths = []
    for a in args.paths or [str(ROOT / "notebooks")]:
        p = Path(a)
        paths += sorted(p.rglob("*.ipynb")) if p.is_dir() else [p]
    dirty = []
    for path in paths:
        if ".ipynb_checkpoints" in path.parts:
            continue
        nb = read_notebook(path)
        before = notebook_text(nb)
        if notebook_text(clear_outputs(nb, keep_checked=not args.all)) != before:
            dirty.append(path)
            if not args.check:
                write_notebook(nb, path)
                print(f"{path}: outputs stripped")
    if args.check and dirty:
        print("notebooks with outputs (run tools/strip_outputs.py): " + ", ".join(map(str, dirty)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main))
