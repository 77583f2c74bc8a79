"""Notebook 03's exercises (``notebooks/03_what_to_scale.ipynb``): steps for equal compute, and the smallest
training set that will do.

Each is registered as ``"03.<name>"``; see :mod:`cxrlib.exercises` for the convention."""

from __future__ import annotations

from cxrlib.exercises.checks import describe_value, register


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
    reference="cxrlib.exercises.smallest_sufficient_set",
    checker=_check_smallest_set,
    hint="for each size from the smallest: subtract the largest set's value seed by seed, then take the mean and "
    "twice the std (n − 1) of those differences; return the first size whose mean is not above twice the std",
)
