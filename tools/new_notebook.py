"""Create a course notebook with the standard opening and skeleton (see notebooks/CONVENTIONS.md).

Usage: ``python tools/new_notebook.py 04_adversarial_training_tricks "Adversarial training tricks"``
writes ``notebooks/04_adversarial_training_tricks.ipynb`` (never overwrites). Fill the sections with prose
and short code cells, then run ``make badges exercises`` and the notebook under nbval.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from notebook_opening import course_settings, update_opening  # noqa: E402

from cxrlib.exercises import run_tool, write_notebook  # noqa: E402

IMPORTS = """%matplotlib inline
import matplotlib.pyplot as plt
import torch
from tqdm.auto import tqdm

import cxrlib
import cxrlib.config
import cxrlib.data
from cxrlib.exercises import check

B = cxrlib.config.budget()  # image size, data, batch and steps for this machine (CXRLIB_SMOKE=1: CI's tiny one)
print(f"cxrlib {cxrlib.__version__} · torch {torch.__version__}")
print(B)"""

DATA = """DATA = "phantom"  # or a folder of images/DICOMs ("data/chest_xray/train"), or "pneumoniamnist"
dataset = cxrlib.data.load_dataset(DATA, size=B.size, n=B.n_images)
print(dataset.describe())"""


def _md(cell_id: str, text: str) -> dict:
    return {"cell_type": "markdown", "id": cell_id, "metadata": {}, "source": text}


def _code(cell_id: str, text: str) -> dict:
    return {"cell_type": "code", "id": cell_id, "metadata": {}, "execution_count": None, "outputs": [],
            "source": text}


def skeleton(stem: str, title: str) -> dict:
    """A notebook dict: opening (badges + title, setup, imports + budget, learning goals), data, sections, end."""
    number = stem[:2]
    cells = [
        _md("badges", f"# {number} · {title}\n\nOne paragraph: what this notebook shows and why it matters."),
        _code("imports", IMPORTS),
        _md("goals", "## Learning goals\n\nAfter this notebook you can:\n\n- …\n- …\n- …"),
        _md("data-intro", "## The data\n\nSwitch `DATA` to use real X-rays (see notebook 00)."),
        _code("data", DATA),
        _md("section-1", "## 1 · First section\n\nProse first; then a short code cell; end with what to notice."),
        _md("summary", "## Summary — what you should have noticed\n\n- …"),
        _md("try-next", "## Try next\n\n- …"),
    ]
    nb = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    # the badges marker goes on top of the title cell, then the setup cell is inserted after it
    nb["cells"][0]["source"] = "<!-- cxr-gan: badges -->\n(badges)\n\n" + nb["cells"][0]["source"]
    settings = course_settings()
    return update_opening(nb, f"{stem}.ipynb", settings["repository"], settings["branch"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stem", help="file name without .ipynb: NN_snake_case, e.g. 04_adversarial_training_tricks")
    parser.add_argument("title", help="title shown in the notebook, e.g. 'Adversarial training tricks'")
    parser.add_argument("--dir", default=str(ROOT / "notebooks"), help="folder (default notebooks/)")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"\d\d_[a-z0-9_]+", args.stem):
        parser.error("stem must look like 04_adversarial_training_tricks")
    path = Path(args.dir) / f"{args.stem}.ipynb"
    if path.exists():
        parser.error(f"{path} exists; not overwriting it")
    write_notebook(skeleton(args.stem, args.title), path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main))
