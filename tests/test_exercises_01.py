"""Notebook 01's exercises: each check rejects the broken code the student starts from, with numbers, and the
probe check accepts any probe that sees exposure and ignores contrast and anatomy."""

import pytest
import torch

from cxrlib import exercises as ex
from cxrlib import metrics


def _verdict(name, candidate):
    exercise = ex.get_exercise(name)
    return exercise.checker(candidate, exercise.reference_function())


def test_brightness_contrast_check_rejects_the_mean_over_the_whole_batch():
    def broken(x, brightness=0.0, contrast=1.0):
        x = x + brightness
        mean = x.mean()
        return ((x - mean) * contrast + mean).clip(0.0, 1.0)

    problem = _verdict("01.brightness_contrast", broken)
    assert problem and "each image about its own mean" in problem and "largest difference" in problem


def test_is_inside_check_rejects_a_string_prefix_and_names_the_sibling_folder():
    problem = _verdict("01.is_inside", lambda path, folder: str(path).startswith(str(folder)))
    assert problem and "'data/train2'" in problem and "expected False, got True" in problem


@pytest.mark.parametrize("probe", [
    lambda x: metrics.mean_brightness(x).std(),                              # the reference's idea
    lambda x: metrics.mean_brightness(x).var(),                              # another scale, same idea
    lambda x: (metrics.mean_brightness(x) - metrics.mean_brightness(x).mean()).abs().mean(),
])
def test_exposure_probe_check_accepts_probes_of_the_films_mean_brightness(probe):
    assert _verdict("01.exposure_probe", probe) is None


@pytest.mark.parametrize("probe, why", [
    (lambda x: x.float().std() / 255, "at least double it"),                       # every pixel: anatomy dominates
    (lambda x: x.float().amax(dim=(1, 2, 3)).std(), "contrast-stretched films"),   # sees contrast, not exposure
    (lambda x: metrics.mean_brightness(x), "shape (200,)"),                        # one number per film
])
def test_exposure_probe_check_rejects_probes_that_miss_the_jitter_or_see_contrast(probe, why):
    problem = _verdict("01.exposure_probe", probe)
    assert problem and why in problem
    if "shape" not in why:
        assert "your probe: clean films" in problem and "×" in problem  # what it measured, as ratios


def test_exposure_probe_sets_have_the_known_answers():
    sets = ex._exposure_sets()
    spread = {k: float(metrics.mean_brightness(x).std()) for k, x in sets.items()}
    assert spread["brightness-shifted"] > 2 * spread["clean"]
    assert spread["pixels shuffled"] == pytest.approx(spread["clean"], rel=1e-6)
    assert spread["contrast-stretched"] == pytest.approx(spread["clean"], rel=0.05)
    assert all(x.dtype == torch.uint8 and x.shape[1] == 1 for x in sets.values())
