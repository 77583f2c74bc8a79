"""Rewrite the opening of every course notebook from the one repository name (``make badges``).

The repository's GitHub owner/name lives in one place, ``pyproject.toml``::

    [tool.cxr-gan]
    repository = "cxr-gan/cxr-gan"
    branch = "main"

Each notebook opens with two generated cells, found by their marker and put back at the top:

* cell 0 (markdown) starts with ``<!-- cxr-gan: badges … -->`` and a line of badges (Open in Colab, Binder);
  only these two lines are generated — the title and intro written below them in the same cell are kept;
* cell 1 (code) is the setup cell, first line ``# cxr-gan: setup``: on Colab it installs ``cxrlib`` (with the
  ``medmnist``, ``dicom`` and ``metrics`` extras: FID needs the last) from the repository's ``branch`` -- the one
  the badges open -- without replacing Colab's torch, and prints the GPU; elsewhere it does nothing.

The README's course map gets the same badges: in each table row between ``<!-- cxr-gan: course map -->`` and
``<!-- /cxr-gan: course map -->`` that links a notebook, the last column is rewritten (the other columns are kept).

Usage: ``python tools/notebook_opening.py [--check] [NOTEBOOK_OR_FOLDER ...]`` (default ``notebooks`` and the
README). Idempotent; ``--check`` changes nothing and exits 1 when a file is out of date.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # cxrlib from this checkout, even without `pip install -e .`

from cxrlib.exercises import NOTEBOOK_GLOB, notebook_text, read_notebook, run_tool, write_notebook  # noqa: E402

BADGES_MARKER = "<!-- cxr-gan: badges"
SETUP_MARKER = "# cxr-gan: setup"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
BINDER_BADGE = "https://mybinder.org/badge_logo.svg"
MAP_BEGIN, MAP_END = "<!-- cxr-gan: course map", "<!-- /cxr-gan: course map"
README = ROOT / "README.md"


def course_settings(pyproject: Path = ROOT / "pyproject.toml") -> dict:
    """``{"repository": "owner/name", "branch": "main"}`` from ``[tool.cxr-gan]`` in pyproject.toml."""
    text = pyproject.read_text(encoding="utf-8")
    try:
        import tomllib

        section = tomllib.loads(text).get("tool", {}).get("cxr-gan", {})
    except ModuleNotFoundError:  # Python 3.10: read the two keys by hand
        body = text.split("[tool.cxr-gan]", 1)[-1].split("\n[", 1)[0]
        section = dict(re.findall(r'^(\w+)\s*=\s*"([^"]*)"', body, flags=re.M))
    repo = section.get("repository", "")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise SystemExit(f"error: {pyproject}: [tool.cxr-gan] repository must be 'owner/name', got {repo!r}")
    return {"repository": repo, "branch": section.get("branch", "main")}


def colab_url(repo: str, file: str, folder: str = "notebooks", branch: str = "main") -> str:
    return f"https://colab.research.google.com/github/{repo}/blob/{branch}/{folder}/{file}"


def binder_url(repo: str, file: str, folder: str = "notebooks", branch: str = "main") -> str:
    return f"https://mybinder.org/v2/gh/{repo}/{branch}?labpath={folder}%2F{file}"


def badges_inline(repo: str, file: str, branch: str = "main") -> str:
    """Colab and Binder badges of one notebook on one line (notebook openings and the README's course map)."""
    return (f"[![Open In Colab]({COLAB_BADGE})]({colab_url(repo, file, branch=branch)}) "
            f"[![Binder]({BINDER_BADGE})]({binder_url(repo, file, branch=branch)})")


def badges_lines(repo: str, file: str, branch: str = "main") -> str:
    """The two generated lines that open cell 0 (marker comment, then the badges)."""
    return (
        f"{BADGES_MARKER} — written by `make badges` from pyproject.toml [tool.cxr-gan]; edit below the badges -->\n"
        f"{badges_inline(repo, file, branch)}\n"
    )


def update_readme(text: str, repo: str, branch: str = "main") -> str:
    """``text`` with the badge column of every notebook row of the course map regenerated."""
    lines = text.split("\n")
    inside = False
    for i, line in enumerate(lines):
        if line.strip().startswith(MAP_BEGIN):
            inside = True
        elif line.strip().startswith(MAP_END):
            inside = False
        elif inside and line.startswith("|"):
            found = re.search(r"\(notebooks/(\d\d_[\w-]+\.ipynb)\)", line)
            if found:
                cells = line.rstrip().rstrip("|").split(" | ")
                cells[-1] = badges_inline(repo, found.group(1), branch)
                lines[i] = " | ".join(cells) + " |"
    return "\n".join(lines)


def setup_source(repo: str, branch: str = "main") -> str:
    """The setup cell: on Colab install cxrlib from ``branch`` of ``repo`` with the extras the notebooks use
    (keeping Colab's torch), once per session, and print the GPU; elsewhere nothing."""
    return f'''{SETUP_MARKER} — the same cell opens every notebook; run it and move on.
# On Colab: install cxrlib from GitHub once per session, keeping Colab's own torch. Elsewhere: nothing to do
# (locally `make lab` and on Binder `postBuild` have installed it already).
import sys

if "google.colab" in sys.modules:
    import importlib.util
    import subprocess

    import torch
    import torchvision

    if importlib.util.find_spec("cxrlib") is None:
        keep = "/tmp/cxr-gan-keep-torch.txt"  # pin Colab's torch so pip never downloads another (~2 GB)
        with open(keep, "w") as f:
            f.write(f"torch=={{torch.__version__}}\\ntorchvision=={{torchvision.__version__}}\\n")
        package = "cxrlib[medmnist,dicom,metrics] @ git+https://github.com/{repo}@{branch}"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", keep, package], check=True)
        importlib.invalidate_caches()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    print(f"GPU: {{gpu}}" if gpu else "No GPU: Runtime > Change runtime type > GPU (CPU works, slowly)")'''


def _find(cells: list[dict], cell_type: str, marker: str) -> int | None:
    for i, cell in enumerate(cells):
        if cell.get("cell_type") == cell_type and cell.get("source", "").lstrip().startswith(marker):
            return i
    return None


def update_opening(nb: dict, file: str, repo: str, branch: str = "main") -> dict:
    """``nb`` with its badges cell (0) and setup cell (1) regenerated and put first (in place; returns nb)."""
    cells = nb.setdefault("cells", [])
    i = _find(cells, "markdown", BADGES_MARKER)
    badges = cells.pop(i) if i is not None else {"cell_type": "markdown", "id": "badges", "metadata": {}}
    old = badges.get("source", "")
    rest = "\n".join(old.split("\n")[2:]) if old.lstrip().startswith(BADGES_MARKER) else ""
    badges["source"] = badges_lines(repo, file, branch) + rest
    i = _find(cells, "code", SETUP_MARKER)
    setup = cells.pop(i) if i is not None else {
        "cell_type": "code", "id": "setup", "metadata": {}, "execution_count": None, "outputs": []
    }
    setup["source"] = setup_source(repo, branch)
    if (nb.get("nbformat", 4), nb.get("nbformat_minor", 0)) < (4, 5):  # cell ids came with nbformat 4.5
        badges.pop("id", None), setup.pop("id", None)
    cells[:0] = [badges, setup]
    return nb


def notebook_paths(args: list[str]) -> list[Path]:
    paths = []
    for a in args or [str(ROOT / "notebooks")]:
        p = Path(a)
        paths += sorted(p.glob(NOTEBOOK_GLOB)) if p.is_dir() else [p]
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="notebooks or folders (default: notebooks/ and README.md)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when out of date")
    args = parser.parse_args(argv)
    settings = course_settings()
    stale = []
    for path in notebook_paths(args.paths):
        nb = read_notebook(path)
        before = notebook_text(nb)
        update_opening(nb, path.name, settings["repository"], settings["branch"])
        if notebook_text(nb) != before:
            stale.append(path)
            if not args.check:
                write_notebook(nb, path)
                print(f"{path}: opening rewritten for {settings['repository']}")
    if not args.paths and README.is_file():  # the default run also keeps the README's course map in step
        text = README.read_text(encoding="utf-8")
        new = update_readme(text, settings["repository"], settings["branch"])
        if new != text:
            stale.append(README)
            if not args.check:
                README.write_text(new, encoding="utf-8")
                print(f"{README.name}: course map badges rewritten for {settings['repository']}")
    if args.check and stale:
        print("out of date (run `make badges`): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main))
