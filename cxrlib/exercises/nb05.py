"""Notebook 05's exercises (``notebooks/05_fine_tuning.ipynb``): the EMA's beta, reduce-on-plateau, and a
fine-tuning phase's EMA half-life.

Each is registered as ``"05.<name>"``; see :mod:`cxrlib.exercises` for the convention."""

from __future__ import annotations

import math

from cxrlib.exercises.checks import Passes, case, compare_outputs, describe_value, register


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
    reference="cxrlib.gan.ema.ema_beta",
    checker=compare_outputs(_ema_beta_cases, atol=1e-9, rtol=1e-9),
    hint="the EMA is updated once per G step, and one step shows G `batch` images: what fraction of a half-life "
    "is that? beta = 0.5 ** (that fraction)",
)


def reduce_on_plateau(history, patience=2, factor=0.5, threshold=0.01):
    """Reference of exercise 05.reduce_on_plateau: the learning-rate scale after each quality measurement.

    history: measurements of a distance (lower is better, e.g. SWD), in order. A measurement *improves* when it
    is below ``(1 - threshold)`` × the best so far; after ``patience`` measurements in a row without improvement
    the scale is multiplied by ``factor`` and the count starts again. Returns a list of floats, one per
    measurement, starting from a scale of 1. The rule itself is ``cxrlib.gan.plateau.plateau_step``, which
    ``Trainer.adapt_lr`` applies.
    """
    from cxrlib.gan.plateau import plateau_step

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
    reference="cxrlib.exercises.reduce_on_plateau",
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
    reference="cxrlib.exercises.finetune_half_life",
    checker=_half_life_checker,
    hint="after P images the phase makes up 1 - 0.5 ** (P / half-life) of the EMA: solve (a) for the half-life; "
    "(b) is a half-life of at least 10·batch images; pick a rule between the two bounds that holds for short "
    "phases too",
)
