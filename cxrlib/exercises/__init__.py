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

**Registering an exercise** (done once, in its notebook's bank ``cxrlib/exercises/nbNN.py``)::

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

Register each exercise of notebook NN as ``"NN.short_name"`` in ``nbNN.py``; keep checks small (a few tiny
tensors) so a check cell runs in well under a second. Build inputs inside a function (not at import time) so
importing this package stays cheap: ``compare_outputs(lambda: [case(...), ...])``. A reference defined in a bank is
registered by its dotted name ``"cxrlib.exercises.<name>"`` and re-exported here, so the checks print that name.

**Where things are**: ``checks.py``, the check framework (registry, ``check``, checker builders, value diffing);
``builder.py``, the student-version builder (a tool for the course's authors, with the notebook reading and
writing that ``tools/`` uses too; ``__main__.py`` runs it); ``nb00.py`` … ``nb10.py``, one bank per notebook.
This module re-exports what notebooks, tests and tools import (``from cxrlib.exercises import check``).
"""

from __future__ import annotations

from cxrlib.exercises import nb00, nb01, nb02, nb03, nb04, nb05, nb06, nb07, nb08, nb09, nb10  # noqa: F401  (register)
from cxrlib.exercises.builder import (
    BADGES_MARKER,
    BEGIN,
    BROKEN_BEGIN,
    BROKEN_END,
    END,
    EXERCISE_PREFIX,
    EXERCISE_TAG,
    MARKDOWN_STUB,
    NBVAL_CHECK,
    NBVAL_CHECK_TAG,
    NOTEBOOK_GLOB,
    STUB,
    build,
    clear_outputs,
    exercise_cells,
    exercise_name,
    expected_student_files,
    is_checked_cell,
    is_fix_exercise,
    main,
    notebook_text,
    out_of_date,
    read_notebook,
    run_tool,
    solution_blocks,
    source_notebooks,
    strip_solutions,
    student_notebook,
    student_notebooks,
    write_notebook,
)
from cxrlib.exercises.checks import (
    _REGISTRY,  # noqa: F401  (tests remove the exercises they register)
    NAME_RE,
    Case,
    Checker,
    Exercise,
    Passes,
    case,
    check,
    compare_outputs,
    describe_value,
    difference,
    get_exercise,
    register,
    registered_names,
    self_check,
)
from cxrlib.exercises.nb01 import _exposure_sets  # noqa: F401  (tests/test_exercises_01.py)
from cxrlib.exercises.nb02 import spectral_normalise
from cxrlib.exercises.nb03 import smallest_sufficient_set
from cxrlib.exercises.nb04 import rescue_collapse, smoothed_toy_step
from cxrlib.exercises.nb05 import PHASE_MIN_STEPS, PHASE_SHARE, finetune_half_life, reduce_on_plateau
from cxrlib.exercises.nb06 import PROBE_HIST_MAX, PROBE_SWD_MIN, shuffle_pixels
from cxrlib.exercises.nb10 import pairing_g_loss

__all__ = [
    # the check framework
    "NAME_RE", "Case", "Checker", "Exercise", "Passes", "case", "check", "compare_outputs", "describe_value",
    "difference", "get_exercise", "register", "registered_names", "self_check",
    # the student-version builder and the notebook files
    "BADGES_MARKER", "BEGIN", "BROKEN_BEGIN", "BROKEN_END", "END", "EXERCISE_PREFIX", "EXERCISE_TAG",
    "MARKDOWN_STUB", "NBVAL_CHECK", "NBVAL_CHECK_TAG", "NOTEBOOK_GLOB", "STUB", "build", "clear_outputs",
    "exercise_cells", "exercise_name", "expected_student_files", "is_checked_cell", "is_fix_exercise", "main",
    "notebook_text", "out_of_date", "read_notebook", "run_tool", "solution_blocks", "source_notebooks",
    "strip_solutions", "student_notebook", "student_notebooks", "write_notebook",
    # references defined in the banks (their checks print `cxrlib.exercises.<name>`) and constants notebooks read
    "spectral_normalise", "smallest_sufficient_set", "rescue_collapse", "smoothed_toy_step", "finetune_half_life",
    "reduce_on_plateau", "shuffle_pixels", "pairing_g_loss", "PHASE_MIN_STEPS", "PHASE_SHARE", "PROBE_HIST_MAX",
    "PROBE_SWD_MIN",
]
