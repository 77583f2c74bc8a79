"""``python -m cxrlib.exercises build|check SRC DST``: runs the student-version builder (a tool; see builder.py)."""

from cxrlib.exercises.builder import main

if __name__ == "__main__":
    raise SystemExit(main())
