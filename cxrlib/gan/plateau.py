"""The reduce-on-plateau rule of the adaptive learning rate: one quality measurement at a time.

``Trainer.adapt_lr`` measures the sliced Wasserstein distance of EMA samples to held-out images every
``cfg.adaptive_every`` steps and applies ``plateau_step``; exercise 05.reduce_on_plateau asks for the same rule.

Student tier: a plain function, no trainer, no engine.
"""

from __future__ import annotations

PLATEAU_THRESHOLD = 0.01  # a quality measurement must beat the best so far by 1 % to count as an improvement


def plateau_step(best: float, bad: int, d: float, patience: int,
                 threshold: float = PLATEAU_THRESHOLD) -> tuple[float, int, bool]:
    """The reduce-on-plateau rule, one measurement at a time (``Trainer.adapt_lr``; exercise 05.reduce_on_plateau).

    ``d``: the new measurement of a distance (lower is better, e.g. SWD); ``best``: the best so far; ``bad``: how
    many measurements in a row did not improve. ``d`` improves when it is below ``(1 - threshold)`` × ``best``.
    Returns the new ``(best, bad, reduce)``: ``reduce`` is True when ``bad`` reaches ``patience`` -- multiply the
    learning rates by the factor -- and the count then starts again."""
    if d < best * (1 - threshold):
        return d, 0, False
    bad += 1
    if bad >= patience:
        return best, 0, True
    return best, bad, False

