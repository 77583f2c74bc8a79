"""Notebook 00's exercises (``notebooks/00_welcome_and_setup.ipynb``): the Jensen-Shannon divergence of two
densities.

Each is registered as ``"00.<name>"``; see :mod:`cxrlib.exercises` for the convention."""

from __future__ import annotations

from cxrlib.exercises.checks import case, compare_outputs, register


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
