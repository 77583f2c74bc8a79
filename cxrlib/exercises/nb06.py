"""Notebook 06's exercises (``notebooks/06_results_and_evaluation.ipynb``): slerp, the histogram distance, the
copy audit, and a probe for the metrics.

Each is registered as ``"06.<name>"``; see :mod:`cxrlib.exercises` for the convention."""

from __future__ import annotations

from cxrlib.exercises.checks import Passes, case, compare_outputs, describe_value, register


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
    reference="cxrlib.exercises.shuffle_pixels",
    checker=_probe_checker,
    hint="the histogram counts how many pixels have each value and ignores where they are: move pixels "
    "around (shuffle, flip upside down, swap halves…) without changing any value",
)
