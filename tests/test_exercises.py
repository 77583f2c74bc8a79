"""cxrlib.exercises: the check API, the student-version builder, and the student versions themselves."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrlib import exercises as ex
from cxrlib.errors import CxrError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
EXERCISES = ROOT / "exercises"
FIXTURES = ROOT / "tests" / "fixtures" / "notebooks"


# ======================================================================= check API
@pytest.fixture
def doubling():
    """A registered exercise '99.double' (reference: x * 2) that is removed again after the test."""

    def reference_double(x):
        return x * 2

    ex.register("99.double", reference_double, ex.compare_outputs(lambda: [ex.case(torch.arange(6.0).view(2, 3))]),
                hint="multiply every element by two")
    yield reference_double
    ex._REGISTRY.pop("99.double", None)


def test_correct_answer_is_kept_and_praised(doubling, capsys):
    def mine(x):
        return x + x

    assert ex.check("99.double", mine) is mine
    assert "✓ correct" in capsys.readouterr().out


def test_wrong_answer_explained_with_numbers_and_reference_returned(doubling, capsys):
    def mine(x):
        return x * 3

    assert ex.check("99.double", mine) is doubling
    out = capsys.readouterr().out
    assert "not right yet" in out and "hint: multiply every element by two" in out
    # the largest difference is at the last element: yours 15 vs reference 10
    assert "5 of 6 values differ" in out and "index (1, 2)" in out and "yours 15" in out and "reference 10" in out
    assert "tensor (2, 3) float32" in out  # the inputs are described


def test_unsolved_stub_is_treated_kindly(doubling, capsys):
    def mine(x):
        raise NotImplementedError("exercise '99.double': replace this line with your code")

    used = ex.check("99.double", mine)
    assert used is doubling and torch.equal(used(torch.ones(2)), torch.full((2,), 2.0))
    out = capsys.readouterr().out
    assert "not solved yet — the notebook continues with the reference version" in out
    assert "reference_double" in out


def test_rerunning_the_check_cell_does_not_praise_the_reference(doubling, capsys):
    used = ex.check("99.double", lambda x: x * 3)  # wrong: the name is rebound to the reference
    capsys.readouterr()
    assert ex.check("99.double", used) is doubling
    out = capsys.readouterr().out
    assert "already the reference version" in out and "✓" not in out


def test_missing_answer_is_treated_as_unsolved(doubling, capsys):
    assert ex.check("99.double", None) is doubling
    assert "not solved yet" in capsys.readouterr().out


def test_crashing_answer_is_reported_not_raised(doubling, capsys):
    def mine(x):
        return x.reshape(7)

    assert ex.check("99.double", mine) is doubling
    assert "your function raised RuntimeError" in capsys.readouterr().out


def test_wrong_shape_and_in_place_change_are_reported(doubling, capsys):
    ex.check("99.double", lambda x: (x * 2).flatten())
    assert "shape is (6,), expected (2, 3)" in capsys.readouterr().out
    ex.check("99.double", lambda x: x.mul_(2))
    assert "changed its input in place" in capsys.readouterr().out


def test_unknown_exercise_names_the_registered_ones(doubling):
    with pytest.raises(CxrError, match=r"no exercise named '99.nope'.*99\.double"):
        ex.check("99.nope", lambda x: x)


def test_dotted_reference_is_imported_when_checked(capsys):
    ex.register("99.sqrt", "math.sqrt", ex.compare_outputs([ex.case(2.0), ex.case(9.0)]))
    try:
        assert ex.check("99.sqrt", lambda v: v ** 0.5).__name__ == "<lambda>"
        import math

        assert ex.check("99.sqrt", lambda v: v / 2) is math.sqrt
        assert "expected 1.41421, got 1" in capsys.readouterr().out
    finally:
        ex._REGISTRY.pop("99.sqrt", None)


def test_random_functions_are_compared_under_the_same_seed(capsys):
    ex.register("99.noise", lambda n: torch.randn(n), ex.compare_outputs([ex.case(5)]))
    try:
        mine = lambda n: torch.randn(n)  # noqa: E731
        assert ex.check("99.noise", mine) is mine
    finally:
        ex._REGISTRY.pop("99.noise", None)


def test_property_checker_says_passes_with_its_numbers(capsys):
    def even_checker(candidate, reference):  # many answers are right: any function returning an even number
        got = candidate(3)
        return ex.Passes(f"f(3) = {got}, even") if got % 2 == 0 else f"f(3) = {got} is odd"

    def twice(v):
        return 2 * v

    ex.register("99.even", twice, even_checker)
    try:
        mine = lambda v: 4 * v  # noqa: E731
        assert ex.check("99.even", mine) is mine
        out = capsys.readouterr().out
        assert "✓ passes" in out and "f(3) = 12, even" in out and "one other answer" in out and "twice`" in out
        assert "✓ correct" not in out and "matches `" not in out
        assert ex.check("99.even", lambda v: v) is twice
        assert "f(3) = 3 is odd" in capsys.readouterr().out
        ex.self_check("99.even")  # a Passes verdict on the reference is a pass, not a complaint
    finally:
        ex._REGISTRY.pop("99.even", None)


def test_student_version_drops_the_nbval_marker_of_checked_cells():
    cell = {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
            "source": "# NBVAL_CHECK_OUTPUT\nprint(2 + 2)"}
    nb = {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    assert ex.student_notebook(nb, "99_x.ipynb")["cells"][0]["source"] == "print(2 + 2)"
    assert cell["source"].startswith("# NBVAL_CHECK_OUTPUT")  # the source notebook is left alone


def test_broken_checker_raises_for_the_author():
    def bad_checker(candidate, reference):
        return candidate(1).missing_attribute  # fails on the reference too: the checker is wrong

    ex.register("99.broken", lambda v: v, bad_checker)
    try:
        with pytest.raises(AttributeError):
            ex.check("99.broken", lambda v: v)
    finally:
        ex._REGISTRY.pop("99.broken", None)


def test_difference_describes_mismatches():
    assert ex.difference({"a": 1.0}, {"a": 1.0, "b": 2}) == "dict keys differ: missing ['b'], unexpected []"
    assert ex.difference((1.0, 2.5), (1.0, 2.0)) == "expected 2 at [1], got 2.5 (off by +0.5)"
    assert ex.difference(np.zeros(3, dtype=int), np.zeros(3)).startswith("dtype is int")
    assert ex.difference(torch.tensor([1.0, float("nan")]), torch.tensor([1.0, float("nan")])) is None
    assert ex.difference(torch.tensor(3.0), 3.0) is None


# ======================================================================= solution blocks → stubs
SOLVED_CELL = """# EXERCISE: 01.demo
def f(x):
    y = x + 1  # kept
    ### BEGIN SOLUTION
    z = y * 2
    return z
    ### END SOLUTION
    # kept too"""


def test_stub_replaces_each_block_at_its_indentation_and_keeps_the_rest():
    out = ex.strip_solutions(SOLVED_CELL, "01.demo")
    assert out.split("\n") == [
        "# EXERCISE: 01.demo",
        "def f(x):",
        "    y = x + 1  # kept",
        "    raise NotImplementedError(\"exercise '01.demo': replace this line with your code\")",
        "    # kept too",
    ]
    compile(out, "<stub>", "exec")


FIX_CELL = """# EXERCISE: 01.fix
def f(x):
    y = x + 1
    ### BEGIN SOLUTION
    return y.detach()
    ### END SOLUTION
    ### BEGIN BROKEN
    # return y  # the bug
    #return -y
    ### END BROKEN"""


def test_fix_exercise_gives_the_student_the_broken_code_live_and_no_solution():
    out = ex.strip_solutions(FIX_CELL, "01.fix")
    assert out.split("\n") == ["# EXERCISE: 01.fix", "def f(x):", "    y = x + 1", "    return y  # the bug",
                                "    return -y"]
    assert ex.is_fix_exercise(FIX_CELL) and not ex.is_fix_exercise(SOLVED_CELL)
    namespace = {}
    exec(FIX_CELL, namespace)  # the source notebook runs the solution: the broken code is only comments there
    assert namespace["f"](torch.ones(1, requires_grad=True)).requires_grad is False


def test_fix_exercise_refuses_uncommented_broken_code_and_a_missing_solution():
    with pytest.raises(CxrError, match="comment out the broken code"):
        ex.strip_solutions(FIX_CELL.replace("# return y  # the bug", "return y"), "01.fix")
    with pytest.raises(CxrError, match="needs the solution block"):
        ex.strip_solutions("def f():\n    ### BEGIN BROKEN\n    # pass\n    ### END BROKEN", "01.fix")


@pytest.mark.parametrize(
    "source, message",
    [
        ("def f():\n    ### BEGIN SOLUTION\n    pass", "without a '### END SOLUTION'"),
        ("def f():\n    ### END SOLUTION", "without a '### BEGIN SOLUTION'"),
        ("def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION", "inside another"),
        ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "inside a function body"),
    ],
)
def test_malformed_solution_blocks_are_refused_with_the_line(source, message):
    with pytest.raises(CxrError, match=re.escape(message)):
        ex.strip_solutions(source, "01.x", where="nb.ipynb, cell 3")


def _nb(*sources: str) -> dict:
    cells = [{"cell_type": "code", "metadata": {}, "execution_count": 1, "source": s,
              "outputs": [{"output_type": "stream", "name": "stdout", "text": "x\n"}]} for s in sources]
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 4}


def test_solution_cell_without_exercise_name_is_refused():
    with pytest.raises(CxrError, match=r"cell 0: a solution block needs '# EXERCISE: <name>'"):
        ex.student_notebook(_nb("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION"))


def test_duplicate_exercise_names_are_refused():
    with pytest.raises(CxrError, match="already used in cell 0"):
        ex.student_notebook(_nb(SOLVED_CELL, SOLVED_CELL))


def test_student_version_of_fixture_has_stubs_no_solutions_no_outputs(tmp_path):
    [path] = ex.build(FIXTURES, tmp_path)
    text = path.read_text(encoding="utf-8")
    assert "### BEGIN SOLUTION" not in text and "return y * factor" not in text
    assert "Because `check` returns the reference version" not in text  # the markdown answer too
    nb = ex.read_notebook(path)
    assert ex.exercise_cells(nb) == [(3, "90.scale"), (7, "90.stats")]
    for index, name in ex.exercise_cells(nb):
        cell = nb["cells"][index]
        assert f"exercise '{name}': replace this line with your code" in cell["source"]
        assert ex.EXERCISE_TAG in cell["metadata"]["tags"]
    assert "y = np.asarray(x, dtype=float)  # code before the block is kept" in nb["cells"][3]["source"]
    assert all(c.get("outputs", []) == [] and c.get("execution_count") is None for c in nb["cells"])
    assert "blob/main/exercises/90_fixture.ipynb" in nb["cells"][0]["source"]
    assert "notebooks/90_fixture" not in nb["cells"][0]["source"]
    import nbformat

    nbformat.validate(nbformat.reads(text, as_version=4))


def test_build_is_deterministic(tmp_path):
    first = ex.build(FIXTURES, tmp_path / "a")[0].read_bytes()
    second = ex.build(FIXTURES, tmp_path / "b")[0].read_bytes()
    again = ex.build(FIXTURES, tmp_path / "a")[0].read_bytes()
    assert first == second == again
    assert ex.notebook_text(ex.read_notebook(tmp_path / "a" / "90_fixture.ipynb")).encode() == first


def test_out_of_date_detects_edits_missing_and_stale_files(tmp_path):
    src, dst = tmp_path / "notebooks", tmp_path / "exercises"
    shutil.copytree(FIXTURES, src)
    ex.build(src, dst)
    assert ex.out_of_date(src, dst) == []
    nb = ex.read_notebook(src / "90_fixture.ipynb")
    nb["cells"][5]["source"] = "print('edited')"
    ex.write_notebook(nb, src / "90_fixture.ipynb")
    shutil.copy(src / "90_fixture.ipynb", src / "91_new.ipynb")
    (dst / "89_gone.ipynb").write_text("{}")
    problems = "\n".join(ex.out_of_date(src, dst))
    assert "90_fixture.ipynb: differs" in problems and "91_new.ipynb: missing" in problems
    assert "89_gone.ipynb: has no notebook" in problems
    cli = [sys.executable, "-m", "cxrlib.exercises"]
    stale = subprocess.run([*cli, "check", str(src), str(dst)], capture_output=True, text=True)
    assert stale.returncode == 1 and "make exercises" in stale.stderr
    subprocess.run([*cli, "build", str(src), str(dst)], check=True, capture_output=True)
    assert ex.out_of_date(src, dst) == [] and not (dst / "89_gone.ipynb").exists()


def test_builder_refuses_to_write_into_the_source_folder(tmp_path):
    shutil.copytree(FIXTURES, tmp_path / "nb")
    with pytest.raises(CxrError, match="refusing"):
        ex.build(tmp_path / "nb", tmp_path / "nb")


# ======================================================================= the course's notebooks and exercises/
def test_committed_exercises_are_up_to_date_with_notebooks():
    problems = ex.out_of_date(NOTEBOOKS, EXERCISES)
    assert problems == [], "\n".join(problems) + "\nrun `make exercises`"


def _course_exercises() -> list[tuple[Path, int, str]]:
    found = []
    for path in ex.source_notebooks(NOTEBOOKS):
        found += [(path, i, name) for i, name in ex.exercise_cells(ex.read_notebook(path))]
    return found


def test_every_course_exercise_is_registered_named_by_notebook_and_checked_next():
    for path, index, name in _course_exercises():
        assert name.startswith(path.name[:3].replace("_", ".")), f"{path.name}: name {name!r} must start NN."
        ex.get_exercise(name)  # registered in its bank, cxrlib/exercises/nbNN.py
        cells = ex.read_notebook(path)["cells"]
        following = next(c for c in cells[index + 1:] if c["cell_type"] == "code")
        assert f'check("{name}"' in following["source"], f"{path.name}: the cell after {name!r} must check it"


def test_every_registered_course_checker_accepts_its_reference():
    for name in ex.registered_names():
        ex.self_check(name)


@pytest.mark.parametrize("number", ["01", "02", "03", "04", "05"])
def test_course_notebooks_have_at_least_two_exercises(number):
    paths = sorted(NOTEBOOKS.glob(f"{number}_*.ipynb"))
    if not paths:
        pytest.skip(f"notebook {number} not written yet")
    assert len(ex.exercise_cells(ex.read_notebook(paths[0]))) >= 2


# ======================================================================= running student versions
def _execute(nb: dict, cwd: Path):
    """Run a notebook dict in a fresh kernel of this interpreter; only exercise-tagged cells may raise."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("store_checked_outputs", ROOT / "tools" / "store_checked_outputs.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if ex.EXERCISE_TAG in tags:
            tags.append("raises-exception")  # nbclient: an error here is recorded, the run goes on
    return tool.execute(nb, cwd, timeout=120)


def _stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def _assert_student_run(node, exercise_names: list[str], fix_names: tuple[str, ...] = ()) -> None:
    """Exercise cells may fail only with NotImplementedError; each check says 'not solved yet', and each
    fix-the-bug exercise (``fix_names``: the student runs the broken code) that its answer is not right yet."""
    for cell in node.cells:
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if ex.EXERCISE_TAG in cell.metadata.get("tags", []):
            assert all(e["ename"] == "NotImplementedError" for e in errors), errors
        else:
            assert not errors, (cell.source, errors)
    checks = "".join(_stdout(c) for c in node.cells)
    for name in exercise_names:
        if name in fix_names:
            assert f"✗ exercise '{name}' is not right yet" in checks
        else:
            assert f"exercise '{name}' not solved yet — the notebook continues with the reference version" in checks


def test_fixture_student_version_runs_to_the_end_on_reference_versions(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRLIB_SMOKE", "1")
    [path] = ex.build(FIXTURES, tmp_path / "exercises")
    node = _execute(ex.read_notebook(path), tmp_path)
    _assert_student_run(node, ["90.scale", "90.stats"])
    assert _stdout(node.cells[5]) == "[0. 2. 4.]\n"  # computed by the reference version
    assert _stdout(node.cells[-1]) == "reached the end\n"


def test_fixture_with_solutions_passes_its_checks(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRLIB_SMOKE", "1")
    node = _execute(ex.read_notebook(FIXTURES / "90_fixture.ipynb"), tmp_path)
    assert "✓ correct — exercise '90.scale'" in _stdout(node.cells[4])
    assert "✓ correct — exercise '90.stats'" in _stdout(node.cells[8])


@pytest.mark.parametrize(
    "name", sorted({p.name for p, _, _ in _course_exercises()}) or [pytest.param("none", marks=pytest.mark.skip(
        reason="no course notebook has exercises yet"))]
)
def test_student_version_runs_with_only_exercise_cells_raising(name, tmp_path, monkeypatch):
    monkeypatch.setenv("CXRLIB_SMOKE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    student = ex.student_notebook(ex.read_notebook(NOTEBOOKS / name), name)
    node = _execute(student, tmp_path)  # in a scratch folder: notebooks must not depend on their folder
    source = ex.read_notebook(NOTEBOOKS / name)
    fixes = tuple(n for i, n in ex.exercise_cells(source) if ex.is_fix_exercise(source["cells"][i]["source"]))
    _assert_student_run(node, [n for _, n in ex.exercise_cells(student)], fixes)
