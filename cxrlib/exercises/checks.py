"""The check framework: the registry of exercises, ``check`` (the verdict a notebook prints), the checker
builders (``compare_outputs``, ``case``, ``Passes``) and the value diffing behind their messages (``difference``,
``describe_value``).

The convention, and how to register an exercise, are in :mod:`cxrlib.exercises`; each notebook's exercises are
registered in its bank, ``cxrlib/exercises/nbNN.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import math
import random
import re
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from cxrlib.errors import CxrError

# ======================================================================= exercise names and checkers
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
