"""Notebook 04's exercises (``notebooks/04_adversarial_training_tricks.ipynb``): smoothed and flipped targets,
the toy GAN's step (write one, fix one), and rescuing a collapse.

Each is registered as ``"04.<name>"``; see :mod:`cxrlib.exercises` for the convention."""

from __future__ import annotations

from cxrlib.exercises.checks import describe_value, difference, register


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
    reference="cxrlib.exercises.smoothed_toy_step",
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
    reference="cxrlib.exercises.rescue_collapse",
    checker=_rescue_checker,
    hint="G takes three updates for each of D's: make D learn faster or G's updates smaller (cfg.replace(d_lr=..., "
    "g_lr=...)), or try a trick of section 3/4; a single seed that still collapses sinks the verdict",
)
