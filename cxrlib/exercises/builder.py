"""The student-version builder, a tool for the course's authors (no notebook imports it): turns the notebooks
with solutions into the student versions and tells when those are out of date, with the deterministic notebook
reading and writing it needs (also used by ``tools/``).

``python -m cxrlib.exercises build notebooks exercises`` (``make exercises``) writes the student versions;
``python -m cxrlib.exercises check notebooks exercises`` exits 1 when ``exercises/`` is stale. The markers and what
they become are described in :mod:`cxrlib.exercises`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import sys
import warnings
from pathlib import Path

from cxrlib.errors import CxrError
from cxrlib.exercises.checks import NAME_RE
from cxrlib.files import atomic_write

# ======================================================================= markers (the notebook convention)
BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
BROKEN_BEGIN = "### BEGIN BROKEN"
BROKEN_END = "### END BROKEN"
EXERCISE_PREFIX = "# EXERCISE:"
STUB = "raise NotImplementedError(\"exercise '{name}': replace this line with your code\")"
MARKDOWN_STUB = "_(your answer here)_"
EXERCISE_TAG = "exercise"  # cell tag added to exercise cells in the student versions
BADGES_MARKER = "<!-- cxr-gan: badges"  # the badges cell of the fixed opening (see tools/notebook_opening.py)
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
NBVAL_CHECK = "# NBVAL_CHECK_OUTPUT"
NBVAL_CHECK_TAG = "nbval-check-output"  # the same as a cell tag (nbval reads both)


# ======================================================================= notebook files (deterministic)
# Read and written through nbformat (it comes with Jupyter; declared in the `dev` extra): a file is checked
# against the notebook schema when read and before it is written, so a cell without an id (nbformat 4.5) or a
# malformed cell is one line naming the file and the cell, not a notebook Jupyter refuses to open later.
def _nbformat():
    try:
        import nbformat
    except ImportError:
        raise CxrError("reading and writing notebooks needs nbformat (it comes with Jupyter): "
                       "pip install nbformat") from None
    return nbformat


def _schema_problem(nb: dict, e: Exception) -> str:
    """One line saying what is wrong with ``nb``: its first cell without an id, or the schema's first error."""
    nbformat = _nbformat()
    if not isinstance(e, nbformat.ValidationError):  # nbformat's warnings about cell ids, made errors
        if (nb.get("nbformat"), nb.get("nbformat_minor", 0)) >= (4, 5):
            for i, cell in enumerate(nb.get("cells", [])):
                if isinstance(cell, dict) and "id" not in cell:
                    return f"cell {i} has no id (from nbformat 4.5 every cell has a unique 'id')"
            seen = {}
            for i, cell in enumerate(nb.get("cells", [])):
                cid = cell.get("id") if isinstance(cell, dict) else None
                if cid is not None and cid in seen:
                    return f"cell {i} has the id {cid!r} of cell {seen[cid]} (cell ids must be unique)"
                seen.setdefault(cid, i)
        return str(e).split("\n")[0]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path).lstrip(".")
    where = re.sub(r"^cells\[(\d+)\]\.?", r"cell \1, ", where).strip(", ") or "the notebook"
    message, whole = e.message, repr(e.instance)
    if len(whole) > 40 and message.startswith(whole):  # "{...the whole cell...} is not valid": say what it is
        kind = e.instance.get("cell_type") if isinstance(e.instance, dict) else None
        message = ("it" if kind is None else f"a cell_type {kind!r} cell") + message[len(whole):]
    if len(message) > 160:
        message = message[:157] + "..."
    return f"{where}: {message}"


@contextlib.contextmanager
def _no_repairs():
    """nbformat's validate gives a cell without an id (or with another cell's) a new random one and only warns:
    here that warning is an error, so the file is reported, not silently changed."""
    from nbformat.warnings import DuplicateCellId, MissingIDFieldWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingIDFieldWarning)
        warnings.simplefilter("error", DuplicateCellId)
        yield (MissingIDFieldWarning, DuplicateCellId)


def read_notebook(path: str | os.PathLike) -> dict:
    """A notebook read with ``nbformat.read(as_version=4)`` and validated: a dict-like ``NotebookNode`` with every
    cell's source one string. Not a notebook, or not a valid one: ``CxrError`` in one line."""
    nbformat = _nbformat()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CxrError(f"cannot read '{path}': {getattr(e, 'strerror', None) or e}") from None
    captured: dict = {}
    with _no_repairs() as repairs:
        try:
            nb = nbformat.reads(text, as_version=4, capture_validation_error=captured)
            if captured:
                raise captured["ValidationError"]
        except nbformat.reader.NotJSONError as e:
            cause = e.__cause__
            detail = f" ({cause.msg} at line {cause.lineno})" if isinstance(cause, json.JSONDecodeError) else ""
            raise CxrError(f"cannot read '{path}': not a notebook{detail}") from None
        except (nbformat.ValidationError, *repairs) as e:
            problem = _schema_problem(nbformat.reader.reads(text), e)
            raise CxrError(f"cannot read '{path}': not a valid notebook: {problem}") from None
        except (nbformat.NBFormatError, KeyError, TypeError, AttributeError) as e:
            raise CxrError(f"cannot read '{path}': not a notebook ({type(e).__name__}: {e})") from None
    return nb


def join_sources(nb: dict) -> dict:
    """The notebook dict with every cell's source and every stream output's text as one string (in place)."""
    for cell in nb.get("cells", []):
        if isinstance(cell.get("source"), list):
            cell["source"] = "".join(cell["source"])
        for out in cell.get("outputs", []):
            if isinstance(out.get("text"), list):
                out["text"] = "".join(out["text"])
    return nb


def notebook_text(nb: dict) -> str:
    """The notebook as the text ``nbformat.write`` gives it (its v4 JSON: sorted keys, indent 1, sources as line
    lists, a final newline), without validating: same dict → same bytes, so generated files can be compared
    with the committed ones."""
    nbformat = _nbformat()
    return nbformat.v4.writes(nbformat.from_dict(nb)) + "\n"


def write_notebook(nb: dict, path: str | os.PathLike) -> Path:
    """Validate ``nb`` (not a valid notebook: ``CxrError`` in one line naming the file and the cell, nothing
    written), then write it with ``nbformat.write`` atomically (temporary name, then rename)."""
    nbformat = _nbformat()
    node = nbformat.from_dict(nb)  # a copy: nothing here changes the caller's dict
    with _no_repairs() as repairs:
        try:
            nbformat.validate(node)
        except (nbformat.ValidationError, *repairs) as e:
            problem = _schema_problem(nb, e)  # the caller's dict: validate may have "corrected" the copy's ids
            raise CxrError(f"not writing '{path}': not a valid notebook: {problem}") from None

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            nbformat.write(node, f, version=4)

    return atomic_write(path, write)


def run_tool(main, argv: list[str] | None = None) -> int:
    """``main(argv)`` of a notebook tool (``tools/*.py``), a ``CxrError`` (a file that is not a valid notebook…)
    printed as one line ``error: …`` on stderr with exit status 2 instead of a traceback."""
    try:
        return main(argv)
    except CxrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def is_checked_cell(cell: dict) -> bool:
    """True for a code cell that nbval compares with its stored output: tagged ``nbval-check-output`` (the course's
    way: a tag stays out of the code a student reads) or, nbval's other way, first line ``# NBVAL_CHECK_OUTPUT``."""
    if cell.get("cell_type") != "code":
        return False
    return NBVAL_CHECK_TAG in cell.get("metadata", {}).get("tags", []) or cell.get("source", "").lstrip().startswith(
        NBVAL_CHECK)


def clear_outputs(nb: dict, keep_checked: bool = False) -> dict:
    """Remove outputs, execution counts, widget state and per-run cell metadata (in place; returns nb).

    keep_checked: keep the printed (stdout) output of ``# NBVAL_CHECK_OUTPUT`` cells — the reference that
    nbval compares against; without it a checked cell compares with nothing and always passes. Such a cell
    gets its position among the code cells as execution count (nbval skips cells it thinks were never run).
    """
    nb.get("metadata", {}).pop("widgets", None)
    code_cells = 0
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            code_cells += 1
            keep = keep_checked and is_checked_cell(cell)
            cell["outputs"] = [
                {"output_type": "stream", "name": "stdout", "text": o["text"]}
                for o in cell.get("outputs", [])
                if keep and o.get("output_type") == "stream" and o.get("name") == "stdout"
            ]
            # nbval compares only cells that were run (execution_count set): a fixed count keeps the file stable
            cell["execution_count"] = code_cells if cell["outputs"] else None
        for key in ("execution", "collapsed", "scrolled", "ExecuteTime"):
            cell.get("metadata", {}).pop(key, None)
    return nb


# ======================================================================= solution blocks → stubs
def exercise_name(source: str) -> str | None:
    """The ``<name>`` of a ``# EXERCISE: <name>`` first line, or None when the cell is not an exercise."""
    first = source.lstrip("\n").split("\n", 1)[0].strip()
    if not first.startswith(EXERCISE_PREFIX):
        return None
    return first[len(EXERCISE_PREFIX):].strip()


def solution_blocks(source: str, where: str = "cell", begin_marker: str = BEGIN,
                    end_marker: str = END) -> list[tuple[int, int]]:
    """Line index pairs ``(begin, end)`` of each ``### BEGIN SOLUTION`` … ``### END SOLUTION`` block (or of the
    blocks between other markers, e.g. the broken code's)."""
    blocks, begin = [], None
    for i, line in enumerate(source.split("\n")):
        marker = line.strip()
        if marker == begin_marker:
            if begin is not None:
                raise CxrError(f"{where}, line {i + 1}: '{begin_marker}' inside another such block")
            begin = i
        elif marker == end_marker:
            if begin is None:
                raise CxrError(f"{where}, line {i + 1}: '{end_marker}' without a '{begin_marker}' before it")
            blocks.append((begin, i))
            begin = None
    if begin is not None:
        raise CxrError(f"{where}, line {begin + 1}: '{begin_marker}' without a '{end_marker}' after it")
    return blocks


def _uncomment(line: str, where: str) -> str:
    indent = line[: len(line) - len(line.lstrip())]
    body = line.lstrip()
    if not body:
        return line
    if not body.startswith("#"):
        raise CxrError(f"{where}: comment out the broken code ('# <code>') so the source notebook runs the solution")
    body = body[1:]
    return indent + (body[1:] if body.startswith(" ") else body)


def is_fix_exercise(source: str) -> bool:
    """True when an exercise cell shows broken code to fix (it has a ``### BEGIN BROKEN`` block)."""
    return any(line.strip() == BROKEN_BEGIN for line in source.split("\n"))


def strip_solutions(source: str, name: str | None, *, markdown: bool = False, where: str = "cell") -> str:
    """``source`` with each solution block (markers included) replaced by the stub, at the block's indent."""
    blocks = solution_blocks(source, where)
    broken = [] if markdown else solution_blocks(source, where, BROKEN_BEGIN, BROKEN_END)
    if broken and not blocks:
        raise CxrError(f"{where}: a '{BROKEN_BEGIN}' block needs the solution block it replaces")
    if not blocks:
        return source
    lines = source.split("\n")
    if broken:  # a fix-the-bug exercise: the student gets the broken code, live, instead of a stub
        drop = {i for b, e in blocks for i in range(b, e + 1)} | {i for b, e in broken for i in (b, e)}
        inside = {i for b, e in broken for i in range(b + 1, e)}
        return "\n".join(_uncomment(line, f"{where}, line {i + 1}") if i in inside else line
                         for i, line in enumerate(lines) if i not in drop)
    out, start = [], 0
    for begin, end in blocks:
        indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
        if not markdown and not indent:
            raise CxrError(
                f"{where}, line {begin + 1}: put the solution inside a function body (indent the markers) "
                "so the check can catch the stub and the notebook can go on"
            )
        out += lines[start:begin]
        out.append(indent + (MARKDOWN_STUB if markdown else STUB.format(name=name)))
        start = end + 1
    out += lines[start:]
    return "\n".join(out)


def student_notebook(nb: dict, source_name: str = "notebook") -> dict:
    """The student version of a notebook dict: solutions → stubs, no outputs, badges point at exercises/.

    source_name: the file name used in error messages and in the badge links (``01_data.ipynb``).
    """
    nb = clear_outputs(copy.deepcopy(nb))
    names_seen: dict[str, int] = {}
    for index, cell in enumerate(nb.get("cells", [])):
        where = f"{source_name}, cell {index}"
        src = cell.get("source", "")
        if cell.get("cell_type") == "markdown":
            if src.lstrip().startswith(BADGES_MARKER):
                cell["source"] = src.replace(f"notebooks/{source_name}", f"exercises/{source_name}").replace(
                    f"notebooks%2F{source_name}", f"exercises%2F{source_name}"
                )
            else:
                cell["source"] = strip_solutions(src, None, markdown=True, where=where)
            continue
        if src.lstrip().startswith(NBVAL_CHECK):  # nbval's marker is for the course's tests: student versions have no outputs
            src = cell["source"] = src.lstrip().partition("\n")[2]
        if cell.get("cell_type") != "code" or BEGIN not in src:
            continue
        name = exercise_name(src)
        if not name:
            raise CxrError(f"{where}: a solution block needs '{EXERCISE_PREFIX} <name>' as the cell's first line")
        if not NAME_RE.match(name):
            raise CxrError(f"{where}: exercise name {name!r}: use letters, digits, '_', '.', '-'")
        if name in names_seen:
            raise CxrError(f"{where}: exercise {name!r} already used in cell {names_seen[name]}")
        names_seen[name] = index
        cell["source"] = strip_solutions(src, name, where=where)
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if EXERCISE_TAG not in tags:
            tags.append(EXERCISE_TAG)
    nb.setdefault("metadata", {})["cxr-gan"] = {
        "generated_from": f"notebooks/{source_name}",
        "note": "student version written by `make exercises`; edit the notebook in notebooks/, not this file",
    }
    return nb


def exercise_cells(nb: dict) -> list[tuple[int, str]]:
    """``(cell index, exercise name)`` of every exercise cell of a (source or student) notebook."""
    found = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") == "code":
            name = exercise_name(cell.get("source", ""))
            if name:
                found.append((i, name))
    return found


# ======================================================================= build and up-to-date check
def source_notebooks(src_dir: str | os.PathLike) -> list[Path]:
    """The course notebooks ``NN_*.ipynb`` in ``src_dir``, sorted by name."""
    return sorted(Path(src_dir).glob(NOTEBOOK_GLOB))


def student_notebooks(src_dir: str | os.PathLike) -> dict[str, dict]:
    """``{file name: student version}`` of every notebook in ``src_dir``."""
    return {p.name: student_notebook(read_notebook(p), p.name) for p in source_notebooks(src_dir)}


def expected_student_files(src_dir: str | os.PathLike) -> dict[str, str]:
    """``{file name: exact text}`` of every student version ``src_dir`` should produce."""
    return {name: notebook_text(nb) for name, nb in student_notebooks(src_dir).items()}


def build(src_dir: str | os.PathLike, dst_dir: str | os.PathLike) -> list[Path]:
    """Write the student version of every notebook in ``src_dir`` to ``dst_dir``; remove stale ones.

    Returns the paths written. Files are rewritten only when their text changes.
    """
    dst = Path(dst_dir)
    if dst.resolve() == Path(src_dir).resolve():
        raise CxrError(f"refusing to write student versions into the source folder '{src_dir}'")
    dst.mkdir(parents=True, exist_ok=True)
    expected = student_notebooks(src_dir)
    written = []
    for name, nb in expected.items():
        path = dst / name
        if not path.exists() or path.read_text(encoding="utf-8") != notebook_text(nb):
            write_notebook(nb, path)
        written.append(path)
    for stale in dst.glob(NOTEBOOK_GLOB):
        if stale.name not in expected:
            stale.unlink()
    return written


def out_of_date(src_dir: str | os.PathLike, dst_dir: str | os.PathLike) -> list[str]:
    """What differs between ``dst_dir`` and what ``build(src_dir, dst_dir)`` would write (empty: in sync)."""
    dst = Path(dst_dir)
    expected = expected_student_files(src_dir)
    problems = []
    for name, text in expected.items():
        path = dst / name
        if not path.exists():
            problems.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path}: differs from its notebook in {src_dir}")
    for stale in sorted(dst.glob(NOTEBOOK_GLOB)):
        if stale.name not in expected:
            problems.append(f"{stale}: has no notebook in {src_dir}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """``python -m cxrlib.exercises build|check SRC DST``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m cxrlib.exercises", description="student versions of the course notebooks"
    )
    parser.add_argument("action", choices=("build", "check"), help="build: write DST; check: exit 1 when stale")
    parser.add_argument("src", help="folder of notebooks with solutions (notebooks)")
    parser.add_argument("dst", help="folder of student versions (exercises)")
    args = parser.parse_args(argv)
    try:
        if args.action == "build":
            for path in build(args.src, args.dst):
                n = len(exercise_cells(read_notebook(path)))
                print(f"{path}: {n} exercise{'s' if n != 1 else ''}")
            return 0
        problems = out_of_date(args.src, args.dst)
    except CxrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if problems:
        print("\n".join(problems) + "\nrun `make exercises` to rebuild the student versions", file=sys.stderr)
        return 1
    print(f"{args.dst} is up to date with {args.src}")
    return 0
