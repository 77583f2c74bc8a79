"""Exercises: auto-checked solutions in the notebooks, and the student versions built from them.

**In a notebook** (``notebooks/NN_*.ipynb``, the source of truth, with solutions) an exercise is one code
cell that opens with ``# EXERCISE: <name>`` and holds its solution between ``### BEGIN SOLUTION`` and
``### END SOLUTION`` lines *inside a function body*; the next code cell checks it::

    # EXERCISE: 01.brightness
    def adjust_brightness(x, delta):
        \"\"\"x: (B, 1, H, W) float in [-1, 1]; delta: float → same shape, clamped to [-1, 1].\"\"\"
        ### BEGIN SOLUTION
        return (x + delta).clamp(-1, 1)
        ### END SOLUTION

    adjust_brightness = check("01.brightness", adjust_brightness)   # ← the next cell

``check`` runs small real computations against the library's reference and prints ``✓ correct`` or what is
wrong, with numbers. It returns the function the rest of the notebook should use: the student's when correct,
otherwise the library's reference, so a student who skips an exercise still runs to the end.

**Student versions** (``python -m cxrlib.exercises build notebooks exercises``, i.e. ``make exercises``)
replace each solution block by ``raise NotImplementedError("exercise '<name>': replace this line with your
code")`` at the block's indentation, drop all outputs and write the same bytes for the same input, so a test
can tell when ``exercises/`` is out of date (``python -m cxrlib.exercises check notebooks exercises``).

**Registering an exercise** (done once, here, in the section of its notebook)::

    register(
        "01.brightness",
        reference="cxrlib.augment.adjust_brightness",       # dotted name (imported lazily) or a callable
        checker=compare_outputs(lambda: [case(_ramp(), 0.1), case(_ramp(), -0.3)]),
        hint="add delta to every pixel, then clamp to [-1, 1]",
    )

**Fix-the-bug exercises**: right after the solution block, the broken code, commented out, between
``### BEGIN BROKEN`` and ``### END BROKEN`` (each line ``# <code>`` at the block's indent). The source notebook runs
the solution; the student version drops the solution block and uncomments the broken lines, so the student runs the
bug, the check says what is wrong, and the notebook goes on with the reference::

        ### BEGIN SOLUTION
        fake_logits = D(fake.detach())
        ### END SOLUTION
        ### BEGIN BROKEN
        # fake_logits = D(fake)
        ### END BROKEN

A checker is any function ``checker(candidate, reference) -> str | None``: ``None`` means correct, a string
says what is wrong. ``compare_outputs`` builds the usual one: call both on the same inputs and compare. A checker
that tests properties (many answers are right, the reference is one of them) returns ``Passes("…numbers…")`` for a
right answer, and ``check`` prints "✓ passes" with those numbers instead of claiming the answer matches.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import math
import os
import random
import re
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cxrlib.errors import CxrError
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
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")

Checker = Callable[[Callable, Callable], "str | None"]


# ======================================================================= registry and check
@dataclasses.dataclass(frozen=True)
class Exercise:
    """One registered exercise: its name (``"NN.short_name"``), reference, checker and an optional hint."""

    name: str
    reference: Callable | str
    checker: Checker
    hint: str = ""

    def reference_function(self) -> Callable:
        """The reference as a callable (a dotted name is imported now, not at registration)."""
        if callable(self.reference):
            return self.reference
        module, _, attr = self.reference.rpartition(".")
        return getattr(importlib.import_module(module), attr)

    @property
    def reference_name(self) -> str:
        """``cxrlib.module.function`` — what the notebook goes on with when the exercise is not done."""
        if isinstance(self.reference, str):
            return self.reference
        return f"{getattr(self.reference, '__module__', '?')}.{getattr(self.reference, '__qualname__', '?')}"


_REGISTRY: dict[str, Exercise] = {}


def register(name: str, reference: Callable | str, checker: Checker, *, hint: str = "") -> Exercise:
    """Register (or replace) the exercise ``name`` with its reference implementation and checker."""
    if not NAME_RE.match(name):
        raise CxrError(f"exercise name {name!r}: use letters, digits, '_', '.', '-' (e.g. '01.brightness')")
    ex = Exercise(name, reference, checker, hint)
    _REGISTRY[name] = ex
    return ex


def registered_names() -> list[str]:
    """Names of all registered exercises, sorted."""
    return sorted(_REGISTRY)


def get_exercise(name: str) -> Exercise:
    """The registered exercise ``name``; a ``CxrError`` listing the known names when there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(registered_names()) or "none"
        raise CxrError(f"no exercise named {name!r} (registered: {known})") from None


class _CandidateRaised(Exception):
    """Wraps an exception raised inside the student's function, to tell it apart from a checker bug."""

    def __init__(self, error: BaseException):
        super().__init__(repr(error))
        self.error = error


def _guarded(candidate: Callable) -> Callable:
    def call(*args, **kwargs):
        try:
            return candidate(*args, **kwargs)
        except Exception as e:  # the student's code: any error is reported, not raised
            raise _CandidateRaised(e) from e

    return call


class Passes(str):
    """A property checker's verdict for an answer that passes: what it measured (``check`` prints it after
    "✓ passes" and names the reference as one other answer, not as the answer to match)."""


def _is_stub(candidate: Any) -> bool:
    return candidate is None or candidate is Ellipsis or candidate is NotImplemented


def check(name: str, candidate: Callable | None) -> Callable:
    """Check a student's function against the reference of exercise ``name``; print the verdict.

    Returns the function the notebook should go on with: ``candidate`` when correct, else the reference.
    Never raises for a wrong or unfinished answer (only for an unknown name or a broken checker).
    """
    ex = get_exercise(name)
    reference = ex.reference_function()
    go_on = f"the notebook continues with the reference version `{ex.reference_name}`"
    if _is_stub(candidate):
        print(f"… exercise '{name}' not solved yet — {go_on}.")
        return reference
    if not callable(candidate):
        print(f"✗ exercise '{name}': expected a function, got {type(candidate).__name__} — {go_on}.")
        return reference
    if candidate is reference:  # the check cell run twice: the name already holds the reference
        print(f"… exercise '{name}': this is already the reference version `{ex.reference_name}`; "
              "run the exercise cell first to check your own.")
        return reference
    try:
        problem = ex.checker(_guarded(candidate), reference)
    except _CandidateRaised as raised:
        if isinstance(raised.error, NotImplementedError):
            print(f"… exercise '{name}' not solved yet — {go_on}.")
            return reference
        problem = f"your function raised {type(raised.error).__name__}: {raised.error}"
    except Exception as e:  # the checker choked on the candidate's result; a checker bug if the reference fails too
        self_check(name)
        problem = f"your function's result could not be checked ({type(e).__name__}: {e})"
    if isinstance(problem, Passes):
        print(f"✓ passes — exercise '{name}': {problem} (one other answer: `{ex.reference_name}`).")
        return candidate
    if not problem:
        print(f"✓ correct — exercise '{name}' matches `{ex.reference_name}`.")
        return candidate
    lines = [f"✗ exercise '{name}' is not right yet: {problem}"]
    if ex.hint:
        lines.append(f"  hint: {ex.hint}")
    lines.append(f"  Fix it and run both cells again; meanwhile {go_on}.")
    print("\n".join(lines))
    return reference


def self_check(name: str) -> None:
    """Run exercise ``name``'s checker on its own reference; raise ``CxrError`` unless it passes (for tests)."""
    ex = get_exercise(name)
    reference = ex.reference_function()
    problem = ex.checker(reference, reference)
    if problem and not isinstance(problem, Passes):
        raise CxrError(f"exercise {name!r}: its checker rejects the reference `{ex.reference_name}`: {problem}")


# ======================================================================= checker builders
@dataclasses.dataclass
class Case:
    """The inputs of one call: ``fn(*args, **kwargs)``, with a label used in messages."""

    args: tuple
    kwargs: dict
    label: str = ""

    def describe(self) -> str:
        if self.label:
            return self.label
        parts = [describe_value(a) for a in self.args]
        parts += [f"{k}={describe_value(v)}" for k, v in self.kwargs.items()]
        return "(" + ", ".join(parts) + ")"


def case(*args, label: str = "", **kwargs) -> Case:
    """One set of inputs for ``compare_outputs``: ``case(x, 0.1)`` calls ``fn(x, 0.1)``."""
    return Case(args, kwargs, label)


def _seed_everything(seed: int) -> None:
    """Same random numbers for the reference and the candidate (only for libraries already imported)."""
    random.seed(seed)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def compare_outputs(
    cases: Callable[[], Iterable[Case]] | Iterable[Case],
    *,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    seed: int = 0,
    check_inputs_unchanged: bool = True,
) -> Checker:
    """A checker that calls candidate and reference on each case and compares the results.

    cases: a list of ``case(...)``, or a function returning one (so tensors are built only when checked).
    Outputs may be tensors, arrays, numbers, strings, None, or tuples/lists/dicts of these. Each call gets
    fresh deep copies of the inputs and the same seed, so random functions are compared fairly; a
    candidate that changes its inputs in place (when the reference does not) is reported.
    """

    def checker(candidate: Callable, reference: Callable) -> str | None:
        for c in cases() if callable(cases) else cases:
            ref_args, ref_kwargs = copy.deepcopy((c.args, c.kwargs))
            _seed_everything(seed)
            expected = reference(*ref_args, **ref_kwargs)
            args, kwargs = copy.deepcopy((c.args, c.kwargs))
            _seed_everything(seed)
            got = candidate(*args, **kwargs)
            problem = difference(got, expected, atol=atol, rtol=rtol)
            if problem:
                return f"for inputs {c.describe()}: {problem}"
            if check_inputs_unchanged:
                ref_changed = difference((ref_args, ref_kwargs), (c.args, c.kwargs), atol=0, rtol=0)
                changed = difference((args, kwargs), (c.args, c.kwargs), atol=0, rtol=0)
                if changed and not ref_changed:
                    return f"for inputs {c.describe()}: your function changed its input in place ({changed})"
        return None

    return checker


# ======================================================================= comparing values, for people
def _is_tensor(x) -> bool:
    return "torch" in sys.modules and isinstance(x, sys.modules["torch"].Tensor)


def _is_array(x) -> bool:
    return "numpy" in sys.modules and isinstance(x, sys.modules["numpy"].ndarray)


def _to_numpy(x):
    if _is_tensor(x):
        x = x.detach().cpu()
        return (x.double() if x.dtype.is_floating_point else x).numpy()  # bf16/fp16 have no numpy dtype
    return x


def describe_value(x) -> str:
    """A short description for messages: ``tensor (2, 1, 8, 8) float32 in [-1.00, 1.00]``, ``0.1``, …"""
    if _is_tensor(x) or _is_array(x):
        kind = "tensor" if _is_tensor(x) else "array"
        dtype = str(x.dtype).replace("torch.", "")
        shape = tuple(x.shape)
        if (x.size if _is_array(x) else x.numel()) == 0:
            return f"{kind} {shape} {dtype} (empty)"
        a = _to_numpy(x)
        return f"{kind} {shape} {dtype} in [{float(a.min()):.3g}, {float(a.max()):.3g}]"
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, (int, bool, str)) or x is None:
        return repr(x)
    if isinstance(x, (tuple, list)):
        inner = ", ".join(describe_value(v) for v in x[:4]) + (", …" if len(x) > 4 else "")
        return f"({inner})" if isinstance(x, tuple) else f"[{inner}]"
    return type(x).__name__


def difference(got, expected, *, atol: float = 1e-5, rtol: float = 1e-4, where: str = "") -> str | None:
    """``None`` when ``got`` matches ``expected``, else one sentence saying how they differ, with numbers."""
    at = f" at {where}" if where else ""
    if _is_tensor(expected) or _is_array(expected):
        return _array_difference(got, expected, atol, rtol, at)
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return f"expected a dict{at}, got {describe_value(got)}"
        if set(got) != set(expected):
            missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
            return f"dict keys differ{at}: missing {missing}, unexpected {extra}"
        for k in expected:
            problem = difference(got[k], expected[k], atol=atol, rtol=rtol, where=f"{where}[{k!r}]")
            if problem:
                return problem
        return None
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return f"expected {len(expected)} values{at}, got {describe_value(got)}"
        if len(got) != len(expected):
            return f"expected {len(expected)} values{at}, got {len(got)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            problem = difference(g, e, atol=atol, rtol=rtol, where=f"{where}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        return None if got == expected and type(got) is type(expected) else (
            f"expected {expected!r}{at}, got {describe_value(got)}"
        )
    if isinstance(expected, (int, float)):
        if _is_tensor(got) or _is_array(got):
            if getattr(got, "ndim", 1) != 0:
                return f"expected a number{at}, got {describe_value(got)}"
            got = float(got)
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            return f"expected a number{at}, got {describe_value(got)}"
        if math.isnan(expected) and math.isnan(got):
            return None
        if not math.isclose(got, expected, rel_tol=rtol, abs_tol=atol):
            return f"expected {expected:.6g}{at}, got {got:.6g} (off by {got - expected:+.3g})"
        return None
    return None if got == expected else f"expected {describe_value(expected)}{at}, got {describe_value(got)}"


def _array_difference(got, expected, atol: float, rtol: float, at: str) -> str | None:
    import numpy as np

    if not (_is_tensor(got) or _is_array(got)):
        return f"expected {describe_value(expected)}{at}, got {describe_value(got)}"
    if tuple(got.shape) != tuple(expected.shape):
        return f"shape{at} is {tuple(got.shape)}, expected {tuple(expected.shape)}"
    g, e = np.asarray(_to_numpy(got)), np.asarray(_to_numpy(expected))
    if (g.dtype.kind == "f") != (e.dtype.kind == "f") or (g.dtype.kind == "b") != (e.dtype.kind == "b"):
        return f"dtype{at} is {str(got.dtype).replace('torch.', '')}, expected {str(expected.dtype).replace('torch.', '')}"
    if g.size == 0:
        return None
    g64, e64 = g.astype(np.float64), e.astype(np.float64)
    close = np.isclose(g64, e64, rtol=rtol, atol=atol, equal_nan=True)
    if close.all():
        return None
    err = np.where(close, 0.0, np.nan_to_num(np.abs(g64 - e64), nan=np.inf))
    idx = np.unravel_index(int(np.argmax(err)), err.shape)
    n_bad = int((~close).sum())
    with warnings.catch_warnings():  # an all-NaN result: its mean is nan, said in the message, not warned about
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_got, mean_expected = float(np.nanmean(g64)), float(np.nanmean(e64))
    return (
        f"{n_bad} of {g.size} values differ{at}; largest difference {float(err[idx]):.3g} at index "
        f"{tuple(int(i) for i in idx)} (yours {float(g64[idx]):.4g}, reference {float(e64[idx]):.4g}); "
        f"mean yours {mean_got:.4g} vs reference {mean_expected:.4g}"
    )


# ======================================================================= notebook files (deterministic)
def read_notebook(path: str | os.PathLike) -> dict:
    """A notebook as a plain dict (nbformat 4 JSON), with every cell's source joined into one string."""
    with open(path, encoding="utf-8") as f:
        try:
            nb = json.load(f)
        except json.JSONDecodeError as e:
            raise CxrError(f"cannot read '{path}': not a notebook ({e.msg} at line {e.lineno})") from None
    for cell in nb.get("cells", []):
        if isinstance(cell.get("source"), list):
            cell["source"] = "".join(cell["source"])
        for out in cell.get("outputs", []):
            if isinstance(out.get("text"), list):
                out["text"] = "".join(out["text"])
    return nb


def notebook_text(nb: dict) -> str:
    """The notebook as JSON text the way Jupyter writes it (sorted keys, indent 1, sources as line lists).

    Same dict → same bytes, so generated files can be compared with the committed ones.
    """
    nb = copy.deepcopy(nb)
    for cell in nb.get("cells", []):
        src = cell.get("source", "")
        cell["source"] = src.splitlines(keepends=True) if isinstance(src, str) else src
        for out in cell.get("outputs", []):
            if isinstance(out.get("text"), str):
                out["text"] = out["text"].splitlines(keepends=True)
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def write_notebook(nb: dict, path: str | os.PathLike) -> Path:
    """Write ``nb`` to ``path`` atomically (temporary name, then rename)."""
    text = notebook_text(nb)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


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


def expected_student_files(src_dir: str | os.PathLike) -> dict[str, str]:
    """``{file name: exact text}`` of every student version ``src_dir`` should produce."""
    return {
        p.name: notebook_text(student_notebook(read_notebook(p), p.name)) for p in source_notebooks(src_dir)
    }


def build(src_dir: str | os.PathLike, dst_dir: str | os.PathLike) -> list[Path]:
    """Write the student version of every notebook in ``src_dir`` to ``dst_dir``; remove stale ones.

    Returns the paths written. Files are rewritten only when their text changes.
    """
    dst = Path(dst_dir)
    if dst.resolve() == Path(src_dir).resolve():
        raise CxrError(f"refusing to write student versions into the source folder '{src_dir}'")
    dst.mkdir(parents=True, exist_ok=True)
    expected = expected_student_files(src_dir)
    written = []
    for name, text in expected.items():
        path = dst / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            atomic_write(path, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
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


# ======================================================================= the course's exercises
# One section per notebook. Register each exercise of notebook NN as "NN.short_name"; keep checks small
# (a few tiny tensors) so a check cell runs in well under a second. Build inputs inside a function (not at
# import time) so importing this module stays cheap: `compare_outputs(lambda: [case(...), ...])`.

# ----------------------------------------------------------------------- 00 welcome & setup
def _jsd_cases():
    import numpy as np

    x = np.linspace(-5.0, 12.0, 3401)
    dx = float(x[1] - x[0])

    def normal(mean, std):
        return np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))

    return [
        case(normal(0, 1), normal(2.5, 0.6), dx, label="the data N(0, 1) and a generator N(2.5, 0.6)"),
        case(normal(0, 1), normal(0, 1), dx, label="two equal densities (the JSD is 0)"),
        case(normal(0, 1), normal(9, 0.5), dx, label="two densities that do not overlap (the JSD is log 2)"),
    ]


register(
    "00.jsd",
    reference="cxrlib.toy.jsd",
    checker=compare_outputs(_jsd_cases, atol=1e-4),
    hint="compare p and q each with their mixture m = (p + q) / 2, not with each other: where q is 0 and p is "
         "not, log(p / q) is infinite, while log(p / m) never is; the JSD can never exceed log 2 ≈ 0.693",
)


# ----------------------------------------------------------------------- 01 data & augmentation
def _unit_ramp(shape=(2, 1, 4, 8)):
    """Values 0 … 1 spread over ``shape``, a different range per image (float32)."""
    import torch

    n = math.prod(shape)
    x = torch.linspace(0.0, 1.0, n).reshape(shape)
    return x * torch.linspace(1.0, 0.6, shape[0]).view(-1, *([1] * (len(shape) - 1)))


register(
    "01.brightness_contrast",
    reference="cxrlib.augment.adjust_brightness_contrast",
    checker=compare_outputs(lambda: [
        case(_unit_ramp(), 0.1, 1.0, label="brightness +0.1, contrast 1.0"),
        case(_unit_ramp(), 0.0, 0.5, label="two images, contrast 0.5 only (each image about its own mean)"),
        case(_unit_ramp(), -0.05, 1.1, label="brightness -0.05, contrast 1.1 (the original project's ranges)"),
        case(_unit_ramp(), 0.4, 1.5, label="strong: brightness +0.4, contrast 1.5 (must clip to [0, 1])"),
    ], atol=1e-6),
    hint="the stretch is about each image's own mean, not the whole batch's: which axes does your mean average "
    "over? Keep them so the mean broadcasts back onto the image; clip to [0, 1] last",
)


def _exposure_sets():
    """Four sets of 200 small films (uint8) with known answers for an exposure probe: the clean films, the same
    with a random brightness shift each (b ∈ [-0.3, 0.3]: what offline jitter does), with each film's contrast
    stretched about its own mean (c ∈ [0.6, 1.4]) and with each film's pixels shuffled (other anatomy, same
    exposure)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    n, side = 200, 16
    coarse = (torch.rand(n, 1, 4, 4, generator=g) - 0.5) * 0.8
    anatomy = F.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    clean = 0.5 + 0.04 * torch.randn(n, 1, 1, 1, generator=g) + anatomy
    mean = clean.mean(dim=(2, 3), keepdim=True)
    shift = (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.6
    stretch = 0.6 + 0.8 * torch.rand(n, 1, 1, 1, generator=g)
    order = torch.stack([torch.randperm(side * side, generator=g) for _ in range(n)])
    shuffled = clean.flatten(1).gather(1, order).view_as(clean)

    def films(x):
        return (x.clamp(0, 1) * 255).round().to(torch.uint8)

    return {"clean": films(clean), "brightness-shifted": films(clean + shift),
            "contrast-stretched": films((clean - mean) * stretch + mean), "pixels shuffled": films(shuffled)}


def _check_exposure_probe(candidate, reference):
    import torch

    sets = _exposure_sets()
    values = {}
    for name, x in sets.items():
        v = candidate(x.clone())
        if isinstance(v, torch.Tensor) and v.numel() != 1:
            return (f"your probe returned a tensor of shape {tuple(v.shape)} for {len(x)} films: it must return "
                    "one number for the whole set")
        try:
            values[name] = float(v)
        except (TypeError, ValueError):
            return f"your probe returned {type(v).__name__}, not a number"
        if not math.isfinite(values[name]):
            return f"your probe gave {values[name]} on the {name} films: it must be a finite number"
    base = values["clean"]
    if base == 0:
        return "your probe gives 0 on the clean films, so it cannot say how much a change multiplies it"
    ratios = {k: v / base for k, v in values.items()}
    ref = {k: float(reference(x)) for k, x in sets.items()}
    said = (f"your probe: clean films {base:.4g} · " + " · ".join(f"{k} {values[k]:.4g} (×{ratios[k]:.2f})"
            for k in list(sets)[1:]) + f"; a probe that works gives ×{ref['brightness-shifted'] / ref['clean']:.2f}"
            f", ×{ref['contrast-stretched'] / ref['clean']:.2f} and ×{ref['pixels shuffled'] / ref['clean']:.2f}")
    if ratios["brightness-shifted"] < 2:
        return f"a brightness shift per film must at least double it — {said}"
    for k in ("contrast-stretched", "pixels shuffled"):
        if abs(ratios[k] - 1) > 0.1:
            return f"{k} films have the same exposures, so it must move by less than 10 % — {said}"
    return None


register(
    "01.exposure_probe",
    reference="cxrlib.experiments.exposure_spread",
    checker=_check_exposure_probe,
    hint="give each film one number for its exposure first (section 1 has one), then measure how much that "
    "number varies across the set",
)


def _inside_cases():
    return [
        case("data/train/aug", "data/train", label="('data/train/aug', 'data/train'): a sub-folder"),
        case("data/train", "data/train", label="('data/train', 'data/train'): the folder itself"),
        case("data/train2", "data/train", label="('data/train2', 'data/train'): a sibling whose name starts alike"),
        case("data/train/../val", "data/train", label="('data/train/../val', 'data/train'): '..' leads out"),
        case("data/val/../train/aug", "data/train", label="('data/val/../train/aug', 'data/train'): '..' leads in"),
        case("data", "data/train", label="('data', 'data/train'): the parent"),
    ]


register(
    "01.is_inside",
    reference="cxrlib.data.is_inside",
    checker=compare_outputs(_inside_cases),
    hint="compare paths, not strings: Path(...).resolve() removes '..' and relative parts, and "
    "path == folder or path.is_relative_to(folder) compares whole folder names ('train2' is not 'train')",
)


# ----------------------------------------------------------------------- 02 architecture
def _check_conv_params(candidate, reference):
    """Compare with what PyTorch allocates; name the usual slip (bias, k for k², one filter for all) by its number."""
    from torch import nn

    for c_in, c_out, k, bias in ((1, 8, 3, True), (64, 128, 5, True), (512, 256, 7, True), (16, 4, 1, False)):
        label = f"nn.Conv2d({c_in}, {c_out}, {k}{'' if bias else ', bias=False'})"
        conv = nn.Conv2d(c_in, c_out, k, bias=bias, device="meta")  # shapes only
        want = sum(p.numel() for p in conv.parameters())
        got = candidate(c_in, c_out, k, bias)
        if hasattr(got, "item") and getattr(got, "ndim", 0) == 0:  # a numpy or torch scalar
            got = got.item()
        if isinstance(got, float) and got.is_integer():
            got = int(got)
        if not isinstance(got, int) or isinstance(got, bool):
            return f"for {label} expected a whole number, got {describe_value(got)}"
        if got == want:
            continue
        weights, biases = c_out * c_in * k * k, c_out if bias else 0
        slips = [  # the first that matches names the slip
            (weights, f"that is the weights alone: the layer also has {c_out} biases, one per output channel"),
            (weights + c_out, "bias=False: this layer has no biases, only weights"),
            (weights + c_in, f"one bias per output channel ({c_out}), not per input channel ({c_in})"),
            (c_out * c_in * k + biases, f"a kernel is k×k = {k * k} numbers per channel pair, not k = {k}"),
            (c_out * k * k + biases, f"each output channel has one k×k filter per input channel: {c_in}, not one"),
            (c_in * k * k + (1 if bias else 0), f"that is one output channel; the layer has {c_out}"),
        ]
        why = next((text for n, text in slips if n == got), f"list its tensors: [(n, tuple(t.shape)) for n, t in "
                    f"{label}.named_parameters()]")
        return f"for {label} your count is {got:,}, PyTorch allocates {want:,}: {why}"
    return None


register(
    "02.conv_params",
    reference="cxrlib.models.conv2d_params",
    checker=_check_conv_params,
    hint="each output channel runs one k×k filter over each input channel and adds one bias; "
    "nn.Conv2d(c_in, c_out, k).weight.shape shows the filters",
)


def _check_upsample_block(candidate, reference):
    import torch
    from torch import nn

    for c_in, c_out, k in ((8, 4, 3), (3, 5, 5)):
        torch.manual_seed(0)
        block, ref = candidate(c_in, c_out, k), reference(c_in, c_out, k)
        if not isinstance(block, nn.Module):
            return f"upsample_conv_block({c_in}, {c_out}, {k}) should return an nn.Module, got {describe_value(block)}"
        if any(isinstance(m, nn.ConvTranspose2d) for m in block.modules()):
            return "it uses ConvTranspose2d: upsample first (nn.Upsample), then a normal Conv2d"
        with torch.no_grad():
            y = block(torch.randn(2, c_in, 6, 6))
            want = (2, c_out, 12, 12)
            if tuple(y.shape) != want:
                return (f"for c_in={c_in}, c_out={c_out}, k={k} an input (2, {c_in}, 6, 6) gave {tuple(y.shape)}, "
                        f"expected {want} (×2 upsampling, 'same' padding k // 2)")
            n, n_ref = sum(p.numel() for p in block.parameters()), sum(p.numel() for p in ref.parameters())
            if n != n_ref:
                return f"for c_in={c_in}, c_out={c_out}, k={k} it has {n} parameters, expected {n_ref} (one Conv2d)"
            flat = block(torch.ones(1, c_in, 8, 8))[..., k:-k, k:-k]
            spread = float((flat - flat.mean(dim=(-2, -1), keepdim=True)).abs().max())
            if spread > 1e-4:
                return (f"a constant input does not stay constant away from the borders (values differ by "
                        f"{spread:.3g}): use nearest-neighbour upsampling before the convolution")
            if not any(isinstance(m, (nn.LeakyReLU, nn.ReLU)) for m in block.modules()):
                return "it has no activation after the convolution: end the block with nn.LeakyReLU(0.2)"
    return None


register(
    "02.upsample_conv_block",
    reference="cxrlib.models.upsample_conv_block",
    checker=_check_upsample_block,
    hint="nn.Sequential(nn.Upsample(scale_factor=2, mode='nearest'), nn.Conv2d(c_in, c_out, kernel_size, "
    "padding=kernel_size // 2), nn.LeakyReLU(0.2))",
)


def spectral_normalise(weight):
    """Reference of exercise 02.spectral_normalise: ``weight / σ_max``, σ_max the largest singular value of the
    weight seen as a matrix (out_features, everything else) -- what spectral normalisation divides by (computed
    exactly here; the library layer estimates it with one power iteration per training forward pass).

    weight: a Linear (out, in) or Conv2d (out, in, k, k) weight → a new tensor of the same shape, σ_max = 1."""
    import torch

    return weight / torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2)


def _check_spectral_normalise(candidate, reference):
    import torch

    g = torch.Generator().manual_seed(0)
    cases = [("a Linear weight (8, 20)", torch.randn(8, 20, generator=g)),
             ("a Conv2d weight (16, 8, 3, 3)", 0.2 * torch.randn(16, 8, 3, 3, generator=g)),
             ("a Conv2d weight (32, 16, 3, 3) scaled ×3", 0.6 * torch.randn(32, 16, 3, 3, generator=g))]
    for label, w in cases:
        keep = w.clone()
        got = candidate(w)
        if not torch.equal(w, keep):
            return f"for {label} it changed the weight in place: return a new tensor (weight / σ), leave W as it is"
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(w.shape):
            return f"for {label} expected a tensor of shape {tuple(w.shape)}, got {describe_value(got)}"
        ratio = (got.reshape(-1).double() / w.reshape(-1).double())
        if not torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-4) or float(ratio[0]) <= 0:
            return f"for {label} the result is not W times one positive number: divide the whole weight by σ_max"
        sigma = float(torch.linalg.matrix_norm(got.reshape(got.shape[0], -1).double(), ord=2))
        if abs(sigma - 1.0) > 1e-3:
            raw = float(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1).double(), ord=2))
            return (f"for {label} (raw σ_max {raw:.2f}, Frobenius norm {float(w.norm()):.2f}) your result has "
                    f"σ_max = {sigma:.3f}, expected 1.000: you divided by {raw / sigma:.2f}. A layer scaled so would "
                    f"shrink its input ×{sigma:.2f} at most, and {sigma:.2f}^12 = {sigma ** 12:.1e} through 12 such "
                    "layers (the course D at 64 px)")
    return None


register(
    "02.spectral_normalise",
    reference=spectral_normalise,
    checker=_check_spectral_normalise,
    hint="see W as a matrix: w = weight.reshape(weight.shape[0], -1); σ_max = torch.linalg.matrix_norm(w, ord=2) "
    "(the largest singular value); weight.norm() is the Frobenius norm √(Σ σᵢ²), larger than σ_max",
)


# ----------------------------------------------------------------------- 03 what to scale (width, data, steps)
def _check_equal_compute(candidate, reference):
    from cxrlib.experiments import step_flops
    from cxrlib.models import build_models, count_params

    for widths, wide_steps, size, batch in (((0.5, 2.0), 60, 32, 16), ((0.25, 1.0), 10, 32, 8)):
        setting = f"widths {widths}, the widest {wide_steps} steps, {size} px, batch {batch}"
        got, want = candidate(widths, wide_steps, size, batch), reference(widths, wide_steps, size, batch)
        if not isinstance(got, dict) or set(got) != set(widths):
            return f"for {setting} expected a dict {{width: steps}} with keys {widths}, got {describe_value(got)}"
        cost = {w: step_flops(w, size, batch) for w in widths}
        compute = cost[max(widths)] * wide_steps
        for w in widths:
            if not isinstance(got[w], int) and not (hasattr(got[w], "is_integer") and got[w].is_integer()):
                return f"for {setting} width {w} gets {got[w]!r} steps: a run takes whole steps (round, int)"
            if abs(got[w] - want[w]) > 1:
                params = {v: sum(count_params(m) for m in build_models("course", size, width=v)) for v in widths}
                lo, hi = min(widths), max(widths)
                return (f"for {setting}: width {w} gets {got[w]} steps = {got[w] * cost[w] / compute:.2f}× the widest "
                        f"run's FLOPs, expected {want[w]} steps (1.00×). Between widths {lo} and {hi} the FLOPs per "
                        f"step differ {cost[hi] / cost[lo]:.1f}×, the parameter counts only "
                        f"{params[hi] / params[lo]:.1f}×")
    return None


register(
    "03.scale_equal_compute",
    reference="cxrlib.experiments.equal_compute_steps",
    checker=_check_equal_compute,
    hint="a step costs the compute it spends, not the weights it holds: section 1's table counted both per width, "
    "and only one of its columns is what a run pays for",
)


def _paired(swd, n, largest):
    """Seed-paired differences of size ``n`` to ``largest``: (mean, twice their std with n − 1)."""
    import statistics

    d = [a - b for a, b in zip(swd[n], swd[largest])]
    return statistics.fmean(d), 2 * statistics.stdev(d)


def smallest_sufficient_set(swd, largest):
    """Reference of exercise 03.scale_smallest_set. swd: {training-set size: [SWD ×10³ per seed]} (same seeds, same
    order); returns (size, mean, twice_spread): the smallest size whose seed-paired differences to ``largest`` have
    a mean not above twice their standard deviation, with that mean and twice that std."""
    for n in sorted(swd):
        mean, twice_spread = _paired(swd, n, largest)
        if mean <= twice_spread:
            return n, mean, twice_spread
    raise ValueError("the largest set always qualifies against itself")  # not reached


def _smallest_set_cases():
    """(label, swd, largest): the bank's volume lesson, and made-up runs where pairing or n − 1 decides."""
    cases = []
    try:
        from cxrlib import lessons

        entry = lessons.load_bank(lessons.BANK)["volume"]
        parts = [entry["parts"][k] for k in sorted(entry["parts"], key=int)]
        swd = {n: [p["arms"][f"{n} images"] for p in parts] for n in entry["settings"]["volumes"]}
        cases.append(("the bank's volume lesson", swd, max(swd)))
    except (KeyError, OSError, ValueError):  # no bank: the made-up runs still check the rule
        pass
    cases += [
        ("made-up runs where the seeds differ a lot but 100 images are worse in every seed",
         {100: [10.5, 20.5, 30.5], 1000: [10.0, 20.0, 30.0]}, 1000),
        ("made-up runs where no smaller set will do", {50: [30.0, 31.0, 29.0], 200: [25.0, 26.0, 24.5],
                                                        1000: [20.0, 20.5, 19.5]}, 1000),
        ("made-up runs of 4 seeds where the smallest set will do",
         {50: [20.1, 19.9, 20.3, 20.0], 200: [20.4, 19.8, 20.0, 20.2], 1000: [20.0, 20.2, 20.1, 19.9]}, 1000),
        ("made-up runs where the std's divisor (n − 1, not n) decides", {50: [21.0, 22.0, 23.4], 1000: [20.0, 20.0, 20.0]},
         1000),
    ]
    return cases


def _check_smallest_set(candidate, reference):
    import statistics

    for label, swd, largest in _smallest_set_cases():
        got, want = candidate({k: list(v) for k, v in swd.items()}, largest), reference(swd, largest)
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            return f"for {label} expected (size, mean, twice_spread), got {describe_value(got)}"
        try:
            n, mean, twice = int(got[0]), float(got[1]), float(got[2])
        except (TypeError, ValueError):
            return f"for {label} expected (size, mean, twice_spread) as numbers, got {describe_value(got)}"
        if n not in swd:
            return f"for {label} you chose {n} images, which is not one of the sizes {sorted(swd)}"
        if n != want[0]:
            m, t = _paired(swd, n, largest)
            means = {k: statistics.fmean(v) for k, v in swd.items()}
            if n > want[0]:
                wm, wt = want[1], want[2]
                return (f"for {label} you chose {n} images, but {want[0]} images will do: its seed-paired differences "
                        f"to {largest} have mean {wm:+.3f}, not above twice their spread {wt:.3f} (the std divides "
                        f"by n − 1, as torch.std and statistics.stdev do; numpy's default divides by n)")
            return (f"for {label} you chose {n} images, but its seed-paired differences to {largest} have mean "
                    f"{m:+.3f}, above twice their spread {t:.3f}: worse beyond the spread (its mean SWD "
                    f"{means[n]:.2f} against {means[largest]:.2f}). Pair by seed: subtract seed by seed, then take "
                    f"the mean and std of the differences, not of each size's values")
        if abs(mean - want[1]) > 1e-4 or abs(twice - want[2]) > 1e-4 * max(1.0, want[2]):
            hint = ""
            if want[2] > 0 and abs(twice / want[2] - ((len(swd[n]) - 1) / len(swd[n])) ** 0.5) < 1e-3:
                hint = ": your std divides by n, the course's by n − 1 (torch.std, statistics.stdev)"
            elif abs(twice - want[2] / 2) < 1e-4 * max(1.0, want[2]):
                hint = ": you returned one spread, not twice it"
            elif abs(twice - 2 * max(statistics.stdev(swd[n]), statistics.stdev(swd[largest]))) < 1e-3:
                hint = (": that is twice the larger of the two sizes' own spreads (the unpaired rule); the seeds are "
                        "shared, so take the spread of the seed-by-seed differences")
            return (f"for {label} the choice {n} images is right, but the number that defends it is (mean {mean:+.4f}, "
                    f"twice the spread {twice:.4f}), expected ({want[1]:+.4f}, {want[2]:.4f}){hint}")
    return None


register(
    "03.scale_smallest_set",
    reference=smallest_sufficient_set,
    checker=_check_smallest_set,
    hint="for each size from the smallest: subtract the largest set's value seed by seed, then take the mean and "
    "twice the std (n − 1) of those differences; return the first size whose mean is not above twice the std",
)


# ----------------------------------------------------------------------- 03 adversarial training tricks
def _bce_targets_checker(candidate, reference):
    import torch

    # 1. no randomness: the smoothed targets themselves
    for s in (0.0, 0.1, 0.3):
        problem = difference(candidate(3, 2, label_smoothing=s), reference(3, 2, label_smoothing=s), atol=1e-6)
        if problem:
            return f"with label_smoothing={s}, flip_prob=0 (3 real, 2 fake): {problem}"
    # 2. flipping: statistics over many targets, so any correct way of drawing the flips passes
    s, p, n = 0.1, 0.2, 20_000
    hi, lo = 1 - s / 2, s / 2
    got = candidate(n, n, label_smoothing=s, flip_prob=p, generator=torch.Generator().manual_seed(0))
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return f"expected a pair (t_real, t_fake), got {describe_value(got)}"
    t_real, t_fake = (torch.as_tensor(t).float() for t in got)
    if t_real.shape != (n,) or t_fake.shape != (n,):
        return f"with {n} real and {n} fake, the shapes are {tuple(t_real.shape)} and {tuple(t_fake.shape)}"
    for name, t in (("t_real", t_real), ("t_fake", t_fake)):
        odd = ~(torch.isclose(t, torch.tensor(hi)) | torch.isclose(t, torch.tensor(lo)))
        if odd.any():
            return f"{name} holds {int(odd.sum())} values other than {hi} and {lo} (e.g. {float(t[odd][0]):.4g})"
    share = {"t_real": float(torch.isclose(t_real, torch.tensor(lo)).float().mean()),
             "t_fake": float(torch.isclose(t_fake, torch.tensor(hi)).float().mean())}
    for name, f in share.items():
        if abs(f - p) > 0.02:
            return f"with flip_prob={p}, {f:.1%} of {name} were flipped (expected about {p:.0%})"
    again = candidate(n, n, label_smoothing=s, flip_prob=p, generator=torch.Generator().manual_seed(0))
    if any(not torch.equal(torch.as_tensor(a), torch.as_tensor(b)) for a, b in zip(got, again)):
        return "the same generator seed gave different flips: draw the random numbers from `generator`"
    other = candidate(n, n, label_smoothing=s, flip_prob=p, generator=torch.Generator().manual_seed(1))
    if all(torch.equal(torch.as_tensor(a), torch.as_tensor(b)) for a, b in zip(got, other)):
        return "two different generator seeds gave identical flips: draw the random numbers from `generator`"
    flipped_both = (torch.isclose(t_real, torch.tensor(lo)) & torch.isclose(t_fake, torch.tensor(hi))).float().mean()
    if abs(float(flipped_both) - p * p) > 0.02:
        return (f"real and fake targets at the same index were flipped together {float(flipped_both):.1%} of the "
                f"time (independent flips give about {p * p:.0%})")
    return None


register(
    "04.bce_targets",
    reference="cxrlib.losses.bce_targets",
    checker=_bce_targets_checker,
    hint="targets 1 - s/2 and s/2 (torch.full); flip = torch.rand(n, generator=generator) < flip_prob, "
    "then torch.where(flip, swapped, kept) -- one independent draw per target (a flipped real target becomes s/2, "
    "a flipped fake one 1 - s/2)",
)


# The toy GAN of notebook 04 (cxrlib.toy): a step is judged by what it does -- it must move both networks, and a
# short training run with it must find most of the ring's 8 modes, as the library's step does.
TOY_CHECK_STEPS, TOY_CHECK_SEEDS, TOY_CHECK_MODES, TOY_CHECK_GOOD = 1200, 2, 5.0, 0.3
TOY_SMOOTHING = 0.1  # exercise 04.toy_train_step: the original project's label smoothing, on D's targets only


def smoothed_toy_step(G, D, g_opt, d_opt, real, z) -> dict:
    """Reference of exercise 04.toy_train_step: one D step with the original project's label smoothing (D's
    targets 1 - s/2 and s/2, s = 0.1), then the plain G step on the same z (G's target stays 1)."""
    from cxrlib import toy

    return {**toy.d_step(G, D, d_opt, real, z, toy.ToyConfig(label_smoothing=TOY_SMOOTHING)),
            **toy.g_step(G, D, g_opt, z)}


def _toy_weights_after_one_step(step):
    """G's and D's weights (flat) after one call of ``step`` from fixed weights and batches, with plain SGD: its
    update is proportional to the gradient, so a changed target shows (Adam's first update is about lr·sign)."""
    import torch

    from cxrlib import toy

    cfg = toy.ToyConfig()
    G, D = toy.toy_models(1, seed=0)
    g_opt, d_opt = (torch.optim.SGD(m.parameters(), lr=0.5) for m in (G, D))
    gen = torch.Generator().manual_seed(0)
    step(G, D, g_opt, d_opt, toy.ring(cfg.batch, generator=gen, shape=(1,)),
         torch.randn(1, cfg.batch, cfg.z_dim, generator=gen))
    return [torch.cat([p.detach().flatten() for p in m.parameters()]) for m in (G, D)]


def _toy_step_checker(candidate, reference, compare_one_step=False) -> str | None:
    import torch

    from cxrlib import toy

    cfg = toy.ToyConfig(steps=TOY_CHECK_STEPS)
    G, D = toy.toy_models(1, seed=0)
    g_opt, d_opt = (torch.optim.Adam(m.parameters(), lr=cfg.g_lr, betas=cfg.betas) for m in (G, D))
    before = [[p.detach().clone() for p in m.parameters()] for m in (G, D)]
    gen = torch.Generator().manual_seed(0)
    candidate(G, D, g_opt, d_opt, toy.ring(cfg.batch, generator=gen, shape=(1,)),
              torch.randn(1, cfg.batch, cfg.z_dim, generator=gen))  # what it raises, check() reports
    for name, m, old in (("G", G, before[0]), ("D", D, before[1])):
        if all(torch.equal(p, q) for p, q in zip(m.parameters(), old)):
            return f"after one call {name}'s weights have not changed: call {name[0].lower()}_opt.step() in its step"
    if compare_one_step:  # the same fixed start and batches as the reference: D's step first, then G's
        (g_got, d_got), (g_ref, d_ref) = _toy_weights_after_one_step(candidate), _toy_weights_after_one_step(reference)
        s = TOY_SMOOTHING
        d_off, g_off = float((d_got - d_ref).abs().max()), float((g_got - g_ref).abs().max())
        if d_off > 1e-5:
            return (f"after one step from the same weights and batches, D's weights differ from the reference's by up "
                    f"to {d_off:.2g}: D's targets with smoothing s = {s} are 1 - s/2 = {1 - s / 2:g} on real points "
                    f"and s/2 = {s / 2:g} on G's (no flipping)")
        if g_off > 1e-5:
            return (f"D's step matches the reference, but G's weights then differ by up to {g_off:.2g}: smoothing "
                    "changes D's targets only -- G's target stays 1 (section 3); G's step uses the same z")
    result = toy.train(cfg, seeds=TOY_CHECK_SEEDS, step_fn=candidate)
    modes, good = float(result.modes_covered.float().mean()), float(result.good_share.mean())
    if modes < TOY_CHECK_MODES or good < TOY_CHECK_GOOD:
        return (f"{TOY_CHECK_STEPS} steps with your function found {modes:.1f} of 8 modes with {good:.0%} good samples "
                f"(the library's step: 7–8 modes, ~60 %); compare it line by line with the D step and G step of "
                "section 1 -- targets, zero_grad, which optimiser steps")
    return None


register(
    "04.toy_train_step",
    reference=smoothed_toy_step,
    checker=lambda candidate, reference: _toy_step_checker(candidate, reference, compare_one_step=True),
    hint="D step: fake = G(z) under no_grad; d_loss = BCE(D(real), 0.95) + BCE(D(fake), 0.05) (torch.full_like); "
    "d_opt.zero_grad(); backward; d_opt.step(). G step: g_loss = BCE(D(G(z)), 1) -- G's target is not smoothed; "
    "g_opt.zero_grad(); backward; g_opt.step()",
)

register(
    "04.fix_broken_step",
    reference="cxrlib.toy.plain_step",
    checker=_toy_step_checker,
    hint="where do D's gradients come from when d_opt.step() runs? The G step's backward also fills them",
)


# Choose a setting and defend it with a number: the recipe that collapses in every seed (3 G steps per D step)
# must, with one or two settings changed, cover the ring better than twice the larger seed-to-seed spread.
RESCUE_STEPS, RESCUE_SEEDS = 1200, 4
RESCUE_KEEP = ("g_steps_per_d_step", "d_steps_per_g_step", "steps", "batch", "loss", "modes", "std", "n_train",
               "z_dim", "hidden", "depth")


def rescue_collapse(cfg):
    """Reference of exercise 04.rescue_collapse: the collapsing recipe ``cfg`` (3 G steps per D step), rescued by
    letting D learn faster (5× its learning rate), so that it keeps up with G's three updates."""
    return cfg.replace(d_lr=5 * cfg.d_lr)


def _collapsing_recipe():
    from cxrlib import toy

    return toy.trick_variants(RESCUE_STEPS)["3 G steps per D step"]


_COLLAPSE_COUNTS: dict = {}  # trained once per session: a second try of the exercise costs one training, not two


def _rescue_checker(candidate, reference) -> str | None:
    from cxrlib import toy

    base = _collapsing_recipe()
    cfg = candidate(base)
    if not isinstance(cfg, toy.ToyConfig):
        return f"expected a toy.ToyConfig (write `return cfg.replace(...)`), got {describe_value(cfg)}"
    for field in RESCUE_KEEP:
        if getattr(cfg, field) != getattr(base, field):
            return (f"keep {field}={getattr(base, field)!r} (yours: {getattr(cfg, field)!r}): the exercise is to make "
                    "3 G steps per D step work on the same ring, with the same networks and steps")
    if not _COLLAPSE_COUNTS:
        r = toy.train(base, seeds=RESCUE_SEEDS)
        _COLLAPSE_COUNTS.update(modes=r.modes_covered.float(), good=r.good_share.float())
    r = toy.train(cfg, seeds=RESCUE_SEEDS)

    def ms(x):
        return float(x.mean()), float(x.std())

    problems = []
    print(f"{RESCUE_STEPS} steps, {RESCUE_SEEDS} seeds, 3 G steps per D step as given → with your settings:")
    for what, old, new, scale, unit in (("modes covered", _COLLAPSE_COUNTS["modes"], r.modes_covered.float(), 1, ""),
                                        ("good samples", _COLLAPSE_COUNTS["good"], r.good_share.float(), 100, " %")):
        (a, sa), (b, sb) = ms(scale * old), ms(scale * new)
        noise = 2 * max(sa, sb)
        verdict = "above" if b - a > noise else "within"
        print(f"  {what:<14} {' '.join(f'{scale * float(v):.0f}' for v in old):<14} → "
              f"{' '.join(f'{scale * float(v):.0f}' for v in new):<14} mean {a:.1f} → {b:.1f}{unit} "
              f"({b - a:+.1f}), {verdict} twice the larger spread ({noise:.1f})")
        if verdict == "within":
            problems.append(f"{what}: {b - a:+.1f}{unit} is not above twice the larger spread ({noise:.1f})")
    if problems:
        return "; ".join(problems) + " -- these seeds cannot tell your recipe from the collapse"
    return None


register(
    "04.rescue_collapse",
    reference=rescue_collapse,
    checker=_rescue_checker,
    hint="G takes three updates for each of D's: make D learn faster or G's updates smaller (cfg.replace(d_lr=..., "
    "g_lr=...)), or try a trick of section 3/4; a single seed that still collapses sinks the verdict",
)


# ----------------------------------------------------------------------- 04 fine-tuning
def _ema_beta_cases():
    return [
        case(8, 5.54, label="batch 8, half-life 5.54 kimg (the original project's beta 0.999)"),
        case(32, 5.0, label="batch 32, half-life 5 kimg (the course recipe)"),
        case(64, 0.5, label="batch 64, half-life 0.5 kimg"),
        case(32, 5.0, images_seen=1000, rampup=0.05, label="ramp-up: 1,000 images seen, rampup 0.05"),
        case(32, 5.0, images_seen=10**7, rampup=0.05, label="ramp-up long past: 10 million images seen"),
        case(32, 0.0, label="half-life 0 (no EMA: beta 0)"),
    ]


register(
    "05.ema_beta",
    reference="cxrlib.train.ema_beta",
    checker=compare_outputs(_ema_beta_cases, atol=1e-9, rtol=1e-9),
    hint="the EMA is updated once per G step, and one step shows G `batch` images: what fraction of a half-life "
    "is that? beta = 0.5 ** (that fraction)",
)


def reduce_on_plateau(history, patience=2, factor=0.5, threshold=0.01):
    """Reference of exercise 05.reduce_on_plateau: the learning-rate scale after each quality measurement.

    history: measurements of a distance (lower is better, e.g. SWD), in order. A measurement *improves* when it
    is below ``(1 - threshold)`` × the best so far; after ``patience`` measurements in a row without improvement
    the scale is multiplied by ``factor`` and the count starts again. Returns a list of floats, one per
    measurement, starting from a scale of 1. The rule itself is ``cxrlib.train.plateau_step``, which
    ``Trainer.adapt_lr`` applies.
    """
    from cxrlib.train import plateau_step

    best, bad, scale, scales = math.inf, 0, 1.0, []
    for d in history:
        best, bad, reduce = plateau_step(best, bad, d, patience, threshold)
        if reduce:
            scale *= factor
        scales.append(scale)
    return scales


def _plateau_cases():
    falling = [10.0, 9.0, 8.0, 7.5, 7.0]
    stuck = [10.0, 9.0, 9.5, 9.2, 9.1, 9.3, 8.0, 8.5, 8.4]
    return [
        case(falling, label="a distance that keeps falling: never reduce"),
        case(stuck, label="a plateau after the 2nd measurement (patience 2)"),
        case(stuck, patience=1, factor=0.1, label="the same with patience=1, factor=0.1"),
        case([10.0, 9.95, 9.92, 9.9], label="improvements smaller than 1 % do not count"),
        case([], label="no measurements yet"),
    ]


register(
    "05.reduce_on_plateau",
    reference=reduce_on_plateau,
    checker=compare_outputs(_plateau_cases, atol=1e-12),
    hint="a measurement improves when it beats the *best so far* by the threshold, not the last measurement: "
    "best may change only when a measurement improves",
)


PHASE_SHARE, PHASE_MIN_STEPS = 0.75, 10  # exercise 05.finetune_half_life's demands (a) and (b)


def finetune_half_life(steps, batch):
    """Reference of exercise 05.finetune_half_life: an EMA half-life (thousands of images) for a fine-tuning phase of
    ``steps`` G steps at ``batch`` images: a third of the phase's images, so the phase makes up 1 - 0.5**3 = 7/8 of
    the EMA generator at its end (demand (a): at least 3/4), but never under 10 steps' images (demand (b)); a phase
    shorter than 30 steps then keeps less than 7/8, and one of 20 steps exactly 3/4, (a)'s limit."""
    return max(steps / 3, PHASE_MIN_STEPS) * batch / 1000


def _half_life_checker(candidate, reference):
    for steps, batch in ((150, 32), (1000, 32), (400, 16), (60, 64), (25, 32)):  # the last: a short phase
        plan = f"a phase of {steps} steps at batch {batch}"
        h = candidate(steps, batch)
        try:
            h = float(h)
        except (TypeError, ValueError):
            return f"for {plan}: expected a number of thousands of images, got {describe_value(h)}"
        if not math.isfinite(h) or h <= 0:
            return f"for {plan}: expected a positive number of thousands of images, got {h:g}"
        share = 1 - 0.5 ** (steps * batch / (h * 1000))
        span = h * 1000 / batch
        if share < PHASE_SHARE - 1e-9:  # a rule exactly at a limit meets it (floating-point rounding aside)
            return (f"for {plan}, a half-life of {h:g} thousand images leaves the phase only {share:.0%} of the EMA "
                    f"at its end (demand (a): at least {PHASE_SHARE:.0%}, i.e. a half-life of at most "
                    f"{steps * batch / 2000:g} thousand images)")
        if span < PHASE_MIN_STEPS - 1e-9:
            return (f"for {plan}, a half-life of {h:g} thousand images spans only {span:.1f} steps: the average "
                    f"would follow the raw G's jitter (demand (b): at least {PHASE_MIN_STEPS} steps, i.e. "
                    f"{PHASE_MIN_STEPS * batch / 1000:g} thousand images)")
    return Passes("your rule meets demands (a) and (b) on all five plans")  # many rules are right


register(
    "05.finetune_half_life",
    reference=finetune_half_life,
    checker=_half_life_checker,
    hint="after P images the phase makes up 1 - 0.5 ** (P / half-life) of the EMA: solve (a) for the half-life; "
    "(b) is a half-life of at least 10·batch images; pick a rule between the two bounds that holds for short "
    "phases too",
)


# ----------------------------------------------------------------------- 05 results & evaluation
def _slerp_cases():
    import torch

    g = torch.Generator().manual_seed(5)
    z0, z1 = torch.randn(16, generator=g), torch.randn(16, generator=g)
    return [
        case(z0, z1, 0.25, label="two random 16-d latents, t=0.25"),
        case(z0, z1, 0.5, label="the midpoint, t=0.5 (lerp's is about 30 % too short here)"),
        case(z0, z1, 0.0, label="t=0 (must give z0)"),
        case(z0, 3.0 * z1, 0.7, label="latents of different lengths (z1 made 3× longer), t=0.7"),
        case(torch.full((16,), 0.5), torch.full((16,), 1.0), 0.3,
             label="z1 = 2·z0, the same direction (Ω = 0, so the formula gives 0/0), t=0.3: expected the straight "
             "line (1 − t)·z0 + t·z1"),
    ]


register(
    "06.slerp",
    reference="cxrlib.widgets.slerp",
    checker=compare_outputs(_slerp_cases, atol=1e-5),
    hint="Ω = arccos(z0·z1 / (|z0| |z1|)), the cosine clamped to [-1, 1]; slerp = (sin((1−t)Ω)·z0 + sin(tΩ)·z1) "
    "/ sin Ω; where sin Ω is (almost) 0, return (1 − t)·z0 + t·z1",
)


def _histogram_distance_cases():
    import torch

    g = torch.Generator().manual_seed(6)
    a = torch.randint(40, 200, (4, 1, 8, 8), generator=g, dtype=torch.uint8)
    b = torch.randint(0, 256, (4, 1, 8, 8), generator=g, dtype=torch.uint8)
    brighter = (a.int() + 26).clamp(0, 255).to(torch.uint8)  # +0.1 on the [0, 1] scale
    return [
        case(a, brighter, label="a set and the same set brightened by 0.1 (W1 ≈ 0.1)"),
        case(a, b, label="two different sets of 4 tiny images"),
        case(a, b, bins=16, label="the same with bins=16"),
    ]


register(
    "06.histogram_distance",
    reference="cxrlib.metrics.histogram_distance",
    checker=compare_outputs(_histogram_distance_cases, atol=1e-6),
    hint="W1 = Σ |CDF_real − CDF_fake| / bins, with CDF = intensity_histogram(...).cumsum(0)",
)


def _copy_flags_cases():
    import torch

    # A small map in 2-D, so every verdict can be checked by hand (distances in brackets):
    # t0, t1 are each other's nearest (1.0); t2, t3 are near-duplicates (0.2); t4's nearest is t5 (3.0).
    train = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [10.0, 0.2], [0.0, 10.0], [3.0, 10.0],
                          [10.0, 10.0]])
    fake = torch.tensor([
        [0.0, 0.0],     # an exact copy of t0: flagged
        [0.47, 0.0],    # between t0 and t1 (0.47 vs 0.53): close, but not closer to one: NOT flagged
        [10.0, -0.05],  # next to t2, much closer than t2 is to t3: flagged
        [0.0, 11.0],    # 1.0 from t4, whose nearest neighbour is 3.0 away: flagged
        [-5.0, 15.0],   # far from everything: not flagged
        [10.0, 12.0],   # 2.0 from t6, whose nearest neighbour is 7.0 away: flagged
    ])
    g = torch.Generator().manual_seed(7)
    t_rand = torch.randn(20, 16, generator=g)
    f_rand = torch.cat([t_rand[:5] + 0.01 * torch.randn(5, 16, generator=g), torch.randn(10, 16, generator=g)])
    return [
        case(fake, train, label="six samples on a 2-D map of seven training points (see the comments)"),
        case(f_rand, t_rand, label="5 noisy copies and 10 new points in 16-d"),
        case(fake, train, alpha=0.3, ratio_threshold=0.5, label="the 2-D map with alpha=0.3, ratio_threshold=0.5"),
    ]


_copy_flags_compare = compare_outputs(_copy_flags_cases)


def _copy_flags_checker(candidate, reference) -> str | None:
    """Compare with the reference; an audit that flags nothing at all gets a pointed message (the notebook's
    broken version: each training point counts as its own nearest neighbour, so every ρ is 0)."""
    import torch

    problem = _copy_flags_compare(candidate, reference)
    if problem is None:
        return None
    first = _copy_flags_cases()[0]
    got, expected = torch.as_tensor(candidate(*first.args)), reference(*first.args)
    if got.shape == expected.shape and int(got.sum()) == 0 < int(expected.sum()):
        return (f"on the 2-D map of seven training points your audit flags 0 of {len(expected)} samples, the "
                f"reference {int(expected.sum())} — even the exact copy of t0 passes. An audit that never flags "
                "is worthless: print rho; is every training point's nearest neighbour itself, at distance 0?")
    return problem


register(
    "06.copy_flags",
    reference="cxrlib.metrics.copy_flags",
    checker=_copy_flags_checker,
    hint="rho must be each training point's distance to its nearest *other* training point: what does d_train "
    "hold on its diagonal, and what does min() then return?",
)


#: notebook 06's probe: two halves of PROBE_N phantoms at PROBE_SIZE px; a probe passes when the histogram
#: distance stays within PROBE_HIST_MAX × its floor and SWD ×10³ reaches PROBE_SWD_MIN × its floor
PROBE_SIZE, PROBE_N, PROBE_HIST_MAX, PROBE_SWD_MIN = 32, 64, 1.5, 3.0


def shuffle_pixels(images, seed: int = 0):
    """images: (N, C, H, W) → the same shape and dtype, every image's pixels put in one fixed random order.

    Each image keeps exactly its pixel values (its intensity histogram), and loses every structure: a
    corruption the histogram distance cannot see and SWD can (notebook 06's probe)."""
    import torch

    n, c, h, w = images.shape
    order = torch.randperm(h * w, generator=torch.Generator().manual_seed(seed))
    return images.reshape(n, c, h * w)[:, :, order].reshape(n, c, h, w)


def _probe_checker(candidate, reference) -> str | None:
    from cxrlib import data, metrics

    x = data.load_dataset("phantom", size=PROBE_SIZE, n=2 * PROBE_N, seed=3).images  # classes alternate
    ref, other = x[:PROBE_N], x[PROBE_N:]
    out = candidate(other.clone())
    if getattr(out, "shape", None) != other.shape:
        return f"expected images of the input's shape {tuple(other.shape)}, got {describe_value(out)}"
    out = metrics.as_images(out)
    hist_floor, swd_floor = metrics.histogram_distance(ref, other), metrics.swd(ref, other, n_repeats=1)["avg"]
    hist, swd = metrics.histogram_distance(ref, out), metrics.swd(ref, out, n_repeats=1)["avg"]
    problems = []
    if hist > PROBE_HIST_MAX * hist_floor:
        problems.append(f"the histogram sees it: hist. W1 {hist:.4f} is {hist / hist_floor:.1f}× its floor "
                        f"{hist_floor:.4f} (at most {PROBE_HIST_MAX}× passes) — keep every pixel value")
    if swd < PROBE_SWD_MIN * swd_floor:
        problems.append(f"SWD barely sees it: SWD ×10³ {swd:.1f} is {swd / swd_floor:.1f}× its floor {swd_floor:.1f} "
                        f"(at least {PROBE_SWD_MIN}× passes) — change what small patches look like")
    if problems:
        return f"on two sets of {PROBE_N} phantoms at {PROBE_SIZE} px, " + "; ".join(problems)
    return Passes(f"on two sets of {PROBE_N} phantoms at {PROBE_SIZE} px your probe puts hist. W1 at "
                  f"{hist / hist_floor:.1f}× its floor (at most {PROBE_HIST_MAX}×) and SWD ×10³ at "
                  f"{swd / swd_floor:.1f}× its floor (at least {PROBE_SWD_MIN}×)")


register(
    "06.probe",
    reference=shuffle_pixels,
    checker=_probe_checker,
    hint="the histogram counts how many pixels have each value and ignores where they are: move pixels "
    "around (shuffle, flip upside down, swap halves…) without changing any value",
)


# ----------------------------------------------------------------------- notebook 07: the conditional GAN
def _projection_cases():
    import torch

    g = torch.Generator().manual_seed(6)
    h, psi = torch.randn(5, 8, generator=g), torch.randn(5, generator=g)
    emb, y = torch.randn(3, 8, generator=g), torch.tensor([0, 2, 1, 2, 0])
    return [
        case(h, psi, emb, y, label="5 images, 8 features, 3 classes"),
        case(h, torch.zeros(5), torch.zeros(3, 8), y, label="a zero class embedding: only ψ is left (here 0)"),
        case(torch.ones(2, 4), torch.zeros(2), torch.eye(4)[:2], torch.tensor([0, 1]),
             label="one-hot class vectors: the logit picks feature y"),
    ]


register(
    "07.projection_logit",
    reference="cxrlib.models.projection_logit",
    checker=compare_outputs(_projection_cases, atol=1e-5),
    hint="h @ class_embedding.T scores every image against every class's vector, and summing over the classes "
    "throws y away. Keep only each image's own class: class_embedding[y] is (B, F); multiply it with h, sum over "
    "the features, then add psi_out",
)

SHARE_CHECK_N, SHARE_CHECK_TOL = 40000, 0.015


def _class_labels_checker(candidate, reference) -> str | None:
    import torch

    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)  # shares 0.6 / 0.3 / 0.1
    for balanced, want in ((False, [0.6, 0.3, 0.1]), (True, [1 / 3] * 3)):
        y = candidate(labels, SHARE_CHECK_N, torch.Generator().manual_seed(0), balanced)
        if not isinstance(y, torch.Tensor) or y.shape != (SHARE_CHECK_N,):
            return f"expected a tensor of {SHARE_CHECK_N} labels (balanced={balanced}), got {describe_value(y)}"
        if y.dtype != torch.long or int(y.min()) < 0 or int(y.max()) > 2:
            return f"labels must be int64 class indices 0, 1, 2 (balanced={balanced}); got {y.dtype}, {y.min()}…{y.max()}"
        got = torch.bincount(y, minlength=3).float() / SHARE_CHECK_N
        if (got - torch.tensor(want)).abs().max() > SHARE_CHECK_TOL:
            shown = ", ".join(f"{v:.3f}" for v in got.tolist())
            wanted = ", ".join(f"{v:.3f}" for v in want)
            return (f"with balanced={balanced} the class shares of your labels are {shown}, expected about {wanted} "
                    f"(training labels 60 % / 30 % / 10 %)")
    a = candidate(labels, 50, torch.Generator().manual_seed(1), False)
    b = candidate(labels, 50, torch.Generator().manual_seed(1), False)
    if not torch.equal(a, b):
        return "the same generator seed gave different labels: draw every random number from `generator`"
    return None


register(
    "07.class_labels",
    reference="cxrlib.conditional.sample_class_labels",
    checker=_class_labels_checker,
    hint="uniform labels are right only for balanced=True; otherwise draw with the training labels' shares: "
    "shares = torch.bincount(labels, minlength=n_classes) / len(labels), then "
    "torch.multinomial(shares, n, replacement=True, generator=generator)",
)


# ----------------------------------------------------------------------- notebook 08: image-to-image
def _receptive_field_cases():
    return [
        case([(3, 1)], label="one 3×3 convolution"),
        case([(3, 1), (3, 1)], label="two 3×3 convolutions, stride 1"),
        case([(4, 2), (4, 2), (4, 2), (4, 1), (4, 1)], label="the 70×70 PatchGAN of Pix2Pix"),
        case([(4, 2), (4, 1), (4, 1)], label="the one-layer PatchGAN used at 64 px"),
        case([(7, 1), (3, 2), (3, 2), (3, 1)], label="a ResNet generator's first layers"),
        case([], label="no layers: one pixel sees itself"),
    ]


register(
    "08.receptive_field",
    reference="cxrlib.models.receptive_field_of",
    checker=compare_outputs(_receptive_field_cases),
    hint="one output pixel sees 1 pixel; a layer with kernel k widens the field by k - 1 of its input's pixels, and "
    "each of those is 'jump' input pixels apart, where jump is the product of the strides of the layers before it: "
    "start with field = 1 and jump = 1; for each (kernel, stride): field += (kernel - 1) * jump, then "
    "jump *= stride",
)


def _cycle_cases():
    import torch

    g = torch.Generator().manual_seed(7)
    a, b = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1, torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    return [
        case(a, b, lambda x: x, lambda x: x, label="identity generators: every image comes back, loss 0"),
        case(a, b, lambda x: x + 0.5, lambda x: x - 0.5,
             label="G_ab adds 0.5 and G_ba takes it away: every image comes back exactly, so the loss must be 0"),
        case(a, b, lambda x: -x, lambda x: -x, label="two inversions undo each other: loss 0 again"),
        case(a, b, lambda x: 0.5 * x, lambda x: x, label="G_ab halves, G_ba keeps: nothing comes back whole"),
        case(a, b, lambda x: x + 0.1, lambda x: x.clamp(-0.5, 0.5), label="a shift and a clamp"),
    ]


register(
    "08.cycle_loss",
    reference="cxrlib.cyclegan.cycle_loss",
    checker=compare_outputs(_cycle_cases),
    hint="a round trip must give back the image it started from: compare g_ba(g_ab(real_a)) with real_a and "
    "g_ab(g_ba(real_b)) with real_b, not with the translations fake_b, fake_a (that loss is 0 whenever the "
    "second generator copies its input, whatever the first one drew)",
)



# ----------------------------------------------------------------------- notebook 09: StyleGAN ideas
def _modulated_weights_cases():
    import torch

    g = torch.Generator().manual_seed(8)
    weight = torch.randn(4, 3, 3, 3, generator=g)
    s = torch.rand(2, 3, generator=g) + 0.5
    return [
        case(weight, s, False, label="modulation only: each input channel's weights scaled by its style"),
        case(weight, s, True, label="modulation and demodulation"),
        case(weight, torch.ones(1, 3), True, label="styles of 1: demodulated weights of unit norm per output"),
        case(weight[:, :1, :1, :1], 10 * s[:, :1], True, label="1×1 kernels, one input channel, large styles"),
    ]


def _modulated_weights_checker(candidate, reference) -> str | None:
    """What demodulation must do, in numbers, before the element-by-element comparison: one norm per sample and
    output channel, equal to 1, and weights that still follow the style."""
    import torch

    g = torch.Generator().manual_seed(8)
    weight, s = torch.randn(4, 3, 3, 3, generator=g), torch.rand(2, 3, generator=g) + 0.5
    got = candidate(weight.clone(), s.clone(), True)
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != (2, 4, 3, 3, 3):
        return (f"weight (4, 3, 3, 3) and s (2, 3) should give (B, C_out, C_in, k, k) = (2, 4, 3, 3, 3), "
                f"got {describe_value(got)}")
    restyled = candidate(weight.clone(), s.flip(1) * torch.tensor([1.0, 3.0]).view(2, 1), True)
    if isinstance(restyled, torch.Tensor) and (restyled - got).abs().max() < 1e-4:
        return (f"with demodulate=True your weights do not change when the styles do (largest change "
                f"{float((restyled - got).abs().max()):.1e}): the normalisation divides s out again, so w no "
                "longer steers the layer. Which dimensions does your norm sum over?")
    norms = got.pow(2).sum((2, 3, 4)).sqrt()  # (B, C_out): one norm per sample and output channel
    if (norms - 1).abs().max() > 1e-3:
        return (f"with demodulate=True each output channel of each sample should have weights of norm 1 (summed "
                f"over C_in and the kernel, dims 2, 3, 4); yours have norms from {float(norms.min()):.3f} to "
                f"{float(norms.max()):.3f}")
    return compare_outputs(_modulated_weights_cases, atol=1e-5)(candidate, reference)


register(
    "09.modulated_weights",
    reference="cxrlib.models.style.modulated_weights",
    checker=_modulated_weights_checker,
    hint="w has shape (B, C_out, C_in, k, k). A style scales input channels, so a norm that sums over the "
    "input channels keeps the output's scale whatever the styles' size, one norm per (sample, output "
    "channel); a norm per input channel divides each style out again",
)


def _truncate_cases():
    import torch

    g = torch.Generator().manual_seed(9)
    w, w_avg = torch.randn(5, 6, generator=g), torch.randn(6, generator=g)
    return [
        case(w, w_avg, 1.0, label="ψ = 1: w itself"),
        case(w, w_avg, 0.5, label="ψ = 0.5: half-way to the average"),
        case(w, w_avg, 0.0, label="ψ = 0: every w becomes w_avg"),
        case(torch.randn(2, 10, 6, generator=g), w_avg, 0.7, label="per-layer ws (B, num_ws, w_dim), ψ = 0.7"),
    ]


def _truncate_checker(candidate, reference) -> str | None:
    """Where ψ = 0 lands (w_avg, not the origin of W) and where ψ = 1 lands (w itself), before the comparison."""
    import torch

    g = torch.Generator().manual_seed(9)
    w, w_avg = torch.randn(5, 6, generator=g), torch.randn(6, generator=g) + 2.0  # a mean far from the origin
    got = candidate(w.clone(), w_avg.clone(), 0.0)
    if not isinstance(got, torch.Tensor) or got.shape != w.shape:
        return f"w (5, 6) should give the same shape back, got {describe_value(got)}"
    off = float((got - w_avg).norm(dim=-1).max())
    if off > 1e-4:
        at_origin = float(got.norm(dim=-1).max())
        where = ("it lands on w = 0: your pull goes toward the origin of W, which is not the average w"
                 if at_origin < 1e-4 else f"it lands {at_origin:.2f} from the origin")
        return (f"at ψ = 0 every w should become w_avg; yours lands {off:.2f} from w_avg "
                f"(|w_avg| = {float(w_avg.norm()):.2f}) — {where}")
    return compare_outputs(_truncate_cases, atol=1e-6)(candidate, reference)


register(
    "09.truncate",
    reference="cxrlib.models.style.truncate_toward",
    checker=_truncate_checker,
    hint="ψ scales the offset from the point the pull goes toward: at ψ = 0 every w must become w_avg, at ψ = 1 "
    "stay w",
)

if __name__ == "__main__":
    raise SystemExit(main())
