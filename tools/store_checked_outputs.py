"""Run notebooks in the smoke budget and store the output of their ``# NBVAL_CHECK_OUTPUT`` cells.

nbval (``--nbval-lax``) compares a checked cell's new output with the stored one; a notebook committed without
outputs compares with nothing and always passes. So after changing a notebook, store the reference:

    .venv/bin/python tools/store_checked_outputs.py notebooks/02_architecture.ipynb

Each notebook runs in a fresh kernel of this interpreter, with ``CXRLIB_SMOKE=1`` and ``MPLBACKEND=Agg``, in a
scratch folder; then only the printed (stdout) output of the checked cells is written back, nothing else.
``execute()`` is also what tests/test_exercises.py uses to run the student versions.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrlib.exercises import clear_outputs, is_checked_cell, read_notebook, run_tool, write_notebook  # noqa: E402


def execute(nb: dict, cwd: str | os.PathLike, timeout: int = 300):
    """Run a notebook dict top to bottom in a fresh kernel of this interpreter; return the executed node.

    Cells tagged ``raises-exception`` may fail (their error is recorded as output); an error anywhere else
    raises ``nbclient.exceptions.CellExecutionError``. The kernel inherits this process's environment.
    """
    import ipykernel.kernelspec
    import nbformat
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    class CurrentEnv(KernelSpecManager):  # like nbval's --nbval-current-env: no installed kernelspec needed
        def get_kernel_spec(self, kernel_name):
            return KernelSpec(resource_dir=ipykernel.kernelspec.RESOURCES, **ipykernel.kernelspec.get_kernel_dict())

    node = nbformat.from_dict(nb)
    km = KernelManager(kernel_name="python3", kernel_spec_manager=CurrentEnv())
    NotebookClient(node, km=km, timeout=timeout, resources={"metadata": {"path": str(cwd)}}).execute()
    return node


def store(path: Path) -> int:
    """Run ``path`` in the smoke budget, write back the checked cells' stdout; returns how many were stored."""
    os.environ["CXRLIB_SMOKE"] = "1"
    os.environ.setdefault("MPLBACKEND", "Agg")
    nb = read_notebook(path)
    with tempfile.TemporaryDirectory(prefix="cxr-gan-nb-") as scratch:
        executed = read_notebook_from_node(execute(nb, scratch))
    for cell, ran in zip(nb["cells"], executed["cells"]):
        if is_checked_cell(cell):
            cell["outputs"] = ran.get("outputs", [])
    write_notebook(clear_outputs(nb, keep_checked=True), path)
    return sum(is_checked_cell(c) for c in nb["cells"])


def read_notebook_from_node(node) -> dict:
    """An executed nbformat node as the plain dict ``read_notebook`` returns (sources joined)."""
    import json

    from cxrlib.exercises.builder import join_sources

    return join_sources(json.loads(json.dumps(node)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", help="notebooks to run and update")
    args = parser.parse_args(argv)
    for p in args.notebooks:
        print(f"{p}: stored the output of {store(Path(p))} checked cell(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main))
