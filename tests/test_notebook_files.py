"""Notebook files go through nbformat (cxrlib.exercises.read_notebook / write_notebook and the tools on top):
the repository's format byte for byte, and a notebook that is not valid is one line naming the file and the cell."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cxrlib import exercises as ex
from cxrlib.errors import CxrError

pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "notebooks" / "90_fixture.ipynb"
STRIP = [sys.executable, str(ROOT / "tools" / "strip_outputs.py")]


def _cells(*cells: dict) -> dict:
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _md(cell_id: str | None, source: str) -> dict:
    cell = {"cell_type": "markdown", "metadata": {}, "source": source}
    return cell if cell_id is None else {"id": cell_id, **cell}


def _one_line_error(path: Path) -> str:
    run = subprocess.run([*STRIP, str(path)], capture_output=True, text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    [line] = run.stderr.splitlines()
    return line


def test_a_written_notebook_is_the_committed_text_byte_for_byte(tmp_path):
    """nbformat's writer with no options is the repository's format: sorted keys, indent 1, lines, final newline."""
    written = ex.write_notebook(ex.read_notebook(FIXTURE), tmp_path / FIXTURE.name)
    assert written.read_bytes() == FIXTURE.read_bytes()
    assert ex.notebook_text(ex.read_notebook(FIXTURE)).encode() == FIXTURE.read_bytes()
    again = json.dumps(json.loads(FIXTURE.read_text(encoding="utf-8")), sort_keys=True, indent=1, ensure_ascii=False)
    assert FIXTURE.read_text(encoding="utf-8") == again + "\n"


def test_a_cell_without_an_id_is_one_line_from_the_tool_and_is_not_given_a_random_one(tmp_path):
    path = tmp_path / "01_x.ipynb"
    path.write_text(json.dumps(_cells(_md("title", "# x"), _md(None, "no id here")), indent=1), encoding="utf-8")
    before = path.read_bytes()
    line = _one_line_error(path)
    assert line == (f"error: cannot read '{path}': not a valid notebook: cell 1 has no id "
                    "(from nbformat 4.5 every cell has a unique 'id')")
    assert path.read_bytes() == before  # nbformat's own validate would have added a random id in memory
    with pytest.raises(CxrError, match=r"^not writing '.*02_y.ipynb': not a valid notebook: cell 1 has no id"):
        ex.write_notebook(_cells(_md("a", "x"), _md(None, "y")), tmp_path / "02_y.ipynb")
    assert not (tmp_path / "02_y.ipynb").exists()


def test_a_repeated_cell_id_names_both_cells_and_is_not_corrected(tmp_path):
    path = tmp_path / "03_z.ipynb"
    path.write_text(json.dumps(_cells(_md("a", "x"), _md("b", "y"), _md("a", "z")), indent=1), encoding="utf-8")
    before = path.read_bytes()
    assert _one_line_error(path) == (f"error: cannot read '{path}': not a valid notebook: cell 2 has the id 'a' of "
                                     "cell 0 (cell ids must be unique)")
    assert path.read_bytes() == before
    with pytest.raises(CxrError, match=r"cell 1 has the id 'a' of cell 0 \(cell ids must be unique\)$"):
        ex.write_notebook(_cells(_md("a", "x"), _md("a", "y")), tmp_path / "04_w.ipynb")


def test_an_invalid_cell_is_one_line_naming_the_cell(tmp_path):
    path = tmp_path / "01_x.ipynb"
    bad = {**_md("b", "text"), "outputs": []}  # a markdown cell has no outputs
    path.write_text(json.dumps(_cells(_md("a", "# x"), bad)), encoding="utf-8")
    assert _one_line_error(path) == (f"error: cannot read '{path}': not a valid notebook: cell 1: Additional "
                                     "properties are not allowed ('outputs' was unexpected)")
    unknown = {"id": "c", "cell_type": "kode", "metadata": {}, "source": "x = 1"}
    with pytest.raises(CxrError, match=r"cell 0: a cell_type 'kode' cell is not valid under any of the given"):
        ex.write_notebook(_cells(unknown), tmp_path / "02_y.ipynb")
    with pytest.raises(CxrError, match=r"cell 0, source: 3 is not valid under any of the given schemas"):
        ex.write_notebook(_cells(_md("d", 3)), tmp_path / "02_y.ipynb")
    with pytest.raises(CxrError, match=r"cell 1 has the id 'a' of cell 0"):
        ex.write_notebook(_cells(_md("a", "x"), _md("a", "y")), tmp_path / "02_y.ipynb")


def test_a_file_that_is_not_a_notebook_is_one_line(tmp_path):
    path = tmp_path / "01_x.ipynb"
    path.write_text('{"cells": [}', encoding="utf-8")  # a merge gone wrong
    assert _one_line_error(path).startswith(f"error: cannot read '{path}': not a notebook (Expecting value at line 1")


def test_the_builder_refuses_an_invalid_source_notebook_in_one_line(tmp_path):
    src = tmp_path / "notebooks"
    src.mkdir()
    (src / "01_x.ipynb").write_text(json.dumps(_cells(_md(None, "# x"))), encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "cxrlib.exercises", "build", str(src), str(tmp_path / "ex")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.strip().endswith("cell 0 has no id (from nbformat 4.5 every cell "
                                                               "has a unique 'id')"), run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_an_older_notebook_without_ids_is_valid_and_kept_as_it_is(tmp_path):
    nb = {**_cells({"cell_type": "markdown", "metadata": {}, "source": "# old\nline two"}), "nbformat_minor": 4}
    path = ex.write_notebook(nb, tmp_path / "01_old.ipynb")
    assert ex.read_notebook(path)["cells"][0] == {"cell_type": "markdown", "metadata": {}, "source": "# old\nline two"}
    assert json.loads(path.read_text())["cells"][0]["source"] == ["# old\n", "line two"]
