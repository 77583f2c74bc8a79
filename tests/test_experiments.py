"""Small comparable experiments (cxrlib.experiments) and the run-comparison figure: real tiny runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from cxrlib import experiments, viz
from cxrlib.config import make_config
from cxrlib.data import load_dataset
from cxrlib.errors import CxrError


@pytest.fixture(scope="module")
def phantoms():
    data = load_dataset("phantom", size=32, n=24, seed=0)
    train, _, heldout = data.split((0.75, 0.0, 0.25))
    return train, heldout


def tiny(preset="course", **kw):
    return make_config(preset, size=32, batch=4, steps=2, log_every=1, amp="off", **kw)


def test_dirac_gan_circles_without_r1_and_spirals_in_with_it():
    plain = experiments.dirac_gan(400, 0.2)
    damped = experiments.dirac_gan(400, 0.2, r1_gamma=0.3)
    assert plain.shape == (401, 2) and plain[0].tolist() == [1.0, 1.0]
    late = slice(200, None)
    assert plain[late].norm(dim=1).min() > 0.2  # still circling after 400 steps
    assert damped[late].norm(dim=1).max() < 0.01  # R1: at the equilibrium
    ema = [plain[0, 0]]
    for theta in plain[1:, 0]:
        ema.append(0.97 * ema[-1] + 0.03 * theta)
    assert torch.stack(ema)[late].abs().max() < 0.5 * plain[late, 0].abs().max()  # the average sits nearer 0


def test_dirac_gan_refuses_nonsense():
    with pytest.raises(CxrError):
        experiments.dirac_gan(0)


def test_run_variant_trains_scores_and_keeps_the_steps_it_was_scored_at(phantoms):
    train, heldout = phantoms
    r = experiments.run_variant("course", tiny(), train, heldout)
    assert r.steps == 2 and r.trainer.step == 2 and len(r.log) == 2
    assert r.samples.shape == (len(heldout), 1, 32, 32) and r.samples.dtype == torch.uint8
    assert math.isfinite(r.swd["avg"]) and r.swd["avg"] > 0
    assert 0 < r.diversity <= 1
    assert r.ema  # the course recipe samples from its EMA generator
    assert 0 <= r.final("D(x)") <= 1
    r.trainer.fit(steps=1, progress=False)
    assert r.steps == 2  # a snapshot, not the trainer's current count


def test_run_variant_can_drop_its_trainer_to_save_memory(phantoms):
    train, heldout = phantoms
    r = experiments.run_variant("light", tiny(), train, heldout, keep_trainer=False)
    assert r.trainer is None and r.steps == 2 and len(r.samples) == len(heldout)


def test_evaluation_uses_the_same_latents_every_time(phantoms):
    train, heldout = phantoms
    r = experiments.run_variant("plain", tiny(ema_half_life_kimg=0.0), train, heldout)
    again = experiments.result_of("again", r.trainer, heldout)
    assert torch.equal(again.samples, r.samples) and again.swd == r.swd
    assert not r.ema  # no EMA in this config: samples come from G


def test_results_table_lists_every_run_and_the_floor(phantoms):
    train, heldout = phantoms
    trained = experiments.run_variant("trained", tiny(), train, heldout)
    from cxrlib.train import Trainer

    untrained = experiments.result_of("untrained", Trainer(tiny(), train), heldout)
    text = experiments.results_table([trained, untrained], floor=12.5, real_diversity=0.75)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["run", "steps", "D(x)"]
    assert lines[2].startswith("trained") and f"{trained.swd['avg']:.1f}" in lines[2]
    assert lines[3].startswith("untrained") and "—" in lines[3]  # never logged: no D(x)
    assert "12.5" in lines[4] and "0.750" in lines[4]


def test_compare_logs_draws_a_panel_per_quantity_a_line_per_run_and_the_mark():
    logs = {"a": [{"step": s, "images_seen": 1000 * s, "D(x)": 0.6, "g_lr": 2e-4} for s in range(1, 5)],
            "b": [{"step": s, "images_seen": 1000 * s, "D(x)": 0.7, "g_lr": 1e-4} for s in range(1, 5)]}
    fig = viz.compare_logs(logs, keys=("D(x)", "g_lr"), mark=2.5)
    axes = fig.axes
    assert len(axes) == 2 and fig._suptitle.get_text()
    assert [len(ax.lines) for ax in axes] == [2 + 1 + 1, 2 + 1]  # runs, the mark, (D panels) the 0.5 line
    assert axes[0].get_ylim() == (0, 1) and axes[1].get_xlabel() == "images seen (thousands)"
    assert axes[1].get_ylabel() == "G's learning rate"


def test_split_halves_are_disjoint_equal_and_seeded():
    x = torch.arange(11)
    a, b = experiments.split_halves(x, seed=3)
    assert len(a) == len(b) == 5 and not set(a.tolist()) & set(b.tolist())
    again = experiments.split_halves(x, seed=3)
    assert torch.equal(a, again[0]) and torch.equal(b, again[1])
    assert not torch.equal(a, experiments.split_halves(x, seed=4)[0])
    with pytest.raises(CxrError, match="at least 2"):
        experiments.split_halves(torch.zeros(1))


def test_split_half_measures_each_set_on_its_own_halves_and_leaves_the_global_rng_alone():
    x, y = torch.arange(20.0), torch.arange(100.0, 120.0)
    state = torch.get_rng_state()

    def stat(u, v):
        torch.rand(3)  # a metric that draws random numbers must not move anybody else's stream
        return float(v.mean() - u.mean())

    a, b = experiments.split_half(stat, x, y)
    assert torch.equal(torch.get_rng_state(), state)
    assert a + b == pytest.approx(2 * 100.0)  # the two halves of each set together are the whole set


def test_half_to_half_noise_is_about_the_spread_of_a_difference_between_full_measurements():
    # The mean of N standard normals, measured twice on halves, and two independent full-size measurements.
    gen = torch.Generator().manual_seed(0)
    n, trials = 64, 4000
    halves = torch.randn(trials, n, generator=gen)
    half_diff = (halves[:, : n // 2].mean(1) - halves[:, n // 2:].mean(1)).abs().mean()
    full_diff_sd = (torch.randn(trials, n, generator=gen).mean(1) - torch.randn(trials, n, generator=gen).mean(1)).std()
    assert 1.0 < float(half_diff / full_diff_sd) < 1.25  # ≈ 2·√(2/π)/√2 = 1.13, as noise_verdict's docstring says


def test_noise_verdict_and_compare_line_say_which_differences_stand_out():
    assert experiments.noise_verdict(0.05, 0.01) == "larger than the noise"
    assert experiments.noise_verdict(-0.005, 0.01) == "within the noise"
    assert experiments.noise_verdict(1.0, float("nan")) == "no noise estimate"
    line = experiments.compare_line("offline - control", 0.0612, 0.0081)
    assert line == "offline - control: +0.061 (noise 0.008) → larger than the noise"
    assert experiments.compare_line("a - b", -0.4, 1.25, fmt="+.1f").endswith("-0.4 (noise 1.2) → within the noise")


def test_swd_halves_score_a_run_twice_and_the_table_shows_both(phantoms):
    train, heldout = phantoms
    r = experiments.run_variant("course", tiny(), train, heldout)
    a, b = experiments.swd_halves(r, heldout)
    assert math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0 and a != b
    assert experiments.swd_halves(r, heldout) == (a, b)  # seeded: the same halves every time
    lines = experiments.results_table([r], floor=12.5, halves={"course": (a, b)}).splitlines()
    assert lines[0].split()[-4:] == ["half", "A", "half", "B"]
    assert lines[2].split()[-2:] == [f"{a:.1f}", f"{b:.1f}"]


def test_leak_runs_train_three_arms_with_the_same_steps_and_report_their_exposure_spread():
    import torch

    from cxrlib import augment

    g = torch.Generator().manual_seed(0)
    clean = torch.randint(60, 200, (16, 1, 32, 32), dtype=torch.uint8, generator=g)
    jittered = augment.augment_images(clean, copies=1, seed=0, brightness=0.4)
    calls = []
    out = experiments.leak_runs(clean, jittered, steps=2, size=32, batch=4, p=0.5, n_samples=8,
                                callbacks_for=lambda name: [lambda t, r, name=name: calls.append(name)])
    assert list(out) == list(experiments.LEAK_ARMS)
    for arm in out.values():
        assert arm["steps"] == 2 and arm["samples"].shape == (8, 1, 32, 32) and arm["samples"].dtype == torch.uint8
        assert arm["exposure_spread"] == experiments.exposure_spread(arm["samples"]) > 0
    assert set(calls) == set(experiments.LEAK_ARMS)  # every arm's callbacks were called
    assert not torch.equal(out["offline jitter"]["samples"], out["clean control"]["samples"])


def test_finetune_arms_continue_a_shipped_generator_three_ways(tmp_path):
    from cxrlib import assets
    from cxrlib.train import load_checkpoint

    found = assets.pretrained_checkpoint()
    if found is None:
        pytest.skip("no shipped pretrained generator")
    shipped = load_checkpoint(found)
    train = load_dataset("phantom", size=64, n=32)
    heldout = load_dataset("phantom", size=64, n=16, seed=1)
    out = experiments.finetune_arms(shipped, train, heldout, out=tmp_path, steps=2, warmup=1, seed=3)
    assert list(out) == ["before", *experiments.FINETUNE_ARMS]
    assert all(math.isfinite(v["swd"]) and v["swd"] > 0 for v in out.values())
    assert len({round(v["swd"], 6) for v in out.values()}) > 1  # the arms trained differently
    assert all(math.isfinite(v["swd_raw"]) and v["swd_raw"] != v["swd"] for v in out.values())  # raw G ≠ its EMA
    for folder in ("base", "continue", "finetune", "adaptive"):  # every run wrote its checkpoint under out
        assert (tmp_path / folder / "checkpoints" / "last.pt").is_file()


def test_data_volume_runs_train_each_set_size_the_same_steps_and_audit_against_its_own_images(monkeypatch):
    pool = load_dataset("phantom", size=32, n=24).images
    heldout = load_dataset("phantom", size=32, n=16, seed=1).images
    seen = []
    real_audit = experiments.metrics.memorization_audit

    def audit(fake, train, holdout, **kw):
        seen.append(len(train))
        return real_audit(fake, train, holdout, **kw)

    monkeypatch.setattr(experiments.metrics, "memorization_audit", audit)
    runs = experiments.data_volume_runs(pool, heldout, volumes=(4, 24), steps=2, batch=4, n_eval=16)
    assert list(runs) == ["4 images", "24 images"] and seen == [4, 24]
    for arm in runs.values():
        assert arm["steps"] == 2 and math.isfinite(arm["swd"]) and arm["swd"] > 0
        assert 0 <= arm["flagged"] <= 1 and 0 <= arm["chance"] <= 1
    with pytest.raises(CxrError, match="the pool has 24"):
        experiments.data_volume_runs(pool, heldout, volumes=(50,), steps=1)



def test_width_runs_give_every_width_the_same_compute(phantoms):
    train, heldout = phantoms
    logged = []
    runs = experiments.width_runs(train, heldout, widths=(0.25, 0.5), wide_steps=2, batch=4,
                                  log=lambda w, r: logged.append(w))
    narrow, wide = runs[0.25], runs[0.5]
    assert logged == [0.25, 0.5] and wide["steps"] == 2 and narrow["steps"] > wide["steps"]
    assert narrow["steps"] == round(wide["compute"] / narrow["step_flops"])  # the FLOPs the wide run spent
    assert narrow["params"] < wide["params"] and narrow["compute"] == wide["compute"]
    assert narrow["fake"].shape == (len(heldout.images), 1, 32, 32) and len(narrow["halves"]) == 2
    assert experiments.width_arm(2.0) == "width 2" and experiments.width_arm(0.5) == "width 0.5"


def test_utility_study_trains_every_arm_and_reports_the_gan_it_used():
    """Issue 29's study at toy scale: every arm of utility_arms gets an AUC and a sensitivity, the synthetic arms
    hold k×n generated images (checked through the classifier's inputs), the GAN's consistency is read against the
    judge's on real images, and its memorisation share sits beside the held-out one."""
    from cxrlib import classifier, experiments
    from cxrlib.data import load_dataset

    train = load_dataset("phantom", size=32, n=16, seed=100)
    test = load_dataset("phantom", size=32, n=40, seed=1)
    pool = load_dataset("phantom", size=32, n=48, seed=101)
    judge = classifier.train_classifier(pool, steps=5, batch=8)
    seen = []
    real_train = classifier.train_classifier

    def spy(x, y, **kw):
        seen.append(len(x))
        return real_train(x, y, **kw)

    import unittest.mock
    with unittest.mock.patch.object(classifier, "train_classifier", spy):
        r = experiments.utility_study(train, test, judge=judge, gan_steps=2, pool=pool, ks=(1, 2), extra=(1, 3),
                                      clf_steps=3, copies=1, batch=8, n_audit=16)
    arms = experiments.utility_arms((1, 2), (1, 3))
    assert list(r["arms"]) == arms == list(r["sensitivity"])
    assert seen == [16, 32, 32, 48, 16, 32, 64]  # real, aug (1 copy), +1×n, +2×n synthetic, synthetic only, +1×n, +3×n real
    assert all(0.0 <= v <= 1.0 for v in [*r["arms"].values(), *r["sensitivity"].values()])
    assert r["gan_steps"] == 2 and r["n"] == 16 and 0.0 <= r["consistency"]["GAN"] <= 1.0
    assert 0.0 <= r["memorisation"]["GAN"] <= 1.0 and 0.0 <= r["memorisation"]["held-out"] <= 1.0
    for bar, usable in ((0.0, True), (1.01, False)):  # the judge's verdict against the bar, both ways
        kw = dict(judge=judge, gan_steps=1, ks=(1,), clf_steps=1, copies=1, batch=8, n_audit=16, min_consistency=bar)
        assert experiments.utility_study(train, test, **kw)["usable"] is usable
    with pytest.raises(CxrError, match="pool of extra real images holds 48, the arms need 160"):
        experiments.utility_study(train, test, judge=judge, gan_steps=1, pool=pool, extra=(10,))
    built = []  # gan_config reaches the GAN's config (the bank's lessons train a narrower G)

    class Spy(experiments.Trainer):
        def __init__(self, cfg, *a, **kw):
            built.append(cfg)
            super().__init__(cfg, *a, **kw)

    with unittest.mock.patch.object(experiments, "Trainer", Spy):
        experiments.utility_study(train, test, judge=judge, gan_steps=1, ks=(1,), clf_steps=1, copies=1, batch=8,
                                  n_audit=16, gan_config={"width": 0.25})
    assert [(c.width, c.family, c.steps) for c in built] == [(0.25, "conditional", 1)]


def test_the_utility_study_script_runs_on_a_labelled_folder_and_refuses_one_too_small(tmp_path, capsys):
    """benchmarks/utility_study.py on a folder of real images (one sub-folder per class), as a GPU user runs it on
    a Kaggle set: the folder is cut into disjoint test, judge and pool parts, every arm is scored, the JSON holds
    every seed; a folder with too few images is refused in one line saying how many it needs."""
    import importlib.util
    import json

    from cxrlib.phantom import write_phantoms

    spec = importlib.util.spec_from_file_location("utility_study", "benchmarks/utility_study.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    write_phantoms(tmp_path / "xrays", n=120, size=32, seed=3)
    out = tmp_path / "study.json"
    assert script.main(["--quick", "--data", str(tmp_path / "xrays"), "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    run = saved["results"]["8"][0]
    assert len(saved["results"]["8"]) == 2 and list(run["arms"]) == experiments.utility_arms([1, 2], [1]) and run["n"] == 8
    assert "n = 8, ROC-AUC:" in capsys.readouterr().out
    # one patient's films (here: ten consecutive phantoms) never in two parts
    import argparse
    import re

    args = argparse.Namespace(data=str(tmp_path / "xrays"), size=32, n_test=40, judge_n=30, n_val=20, sizes=[8],
                              extra=[1], split_seed=0, patient_regex=r"^cxr_(\d{4})")
    parts = script.folder_sets(args)[:3]
    pool = script.folder_sets(args)[3](0, 16)
    patients = [{re.match(r"cxr_(\d{4})", Path(p).name).group(1) for p in s.paths} for s in (*parts, pool)]
    assert all(not (a & b) for i, a in enumerate(patients) for b in patients[i + 1:])
    assert len(parts[0]) >= 30 and len(parts[2]) >= 40 and len(pool) == 16  # judge, val, test: whole patients
    with pytest.raises(CxrError, match=r"the pool left after the test and judge sets holds \d+ class-balanced"):
        write_phantoms(tmp_path / "few_ill", n=120, size=32, seed=4, pneumonia_fraction=0.1)  # a 1:9 folder
        script.folder_sets(argparse.Namespace(**{**vars(args), "data": str(tmp_path / "few_ill")}))
    with pytest.raises(SystemExit, match=r"120 images; the study needs 1100 \(test 40, judge 40 \+ 20"):
        script.main(["--data", str(tmp_path / "xrays"), "--size", "32", "--sizes", "500", "--extra", "1",
                     "--n-test", "40", "--judge-n", "40", "--n-val", "20"])


def test_the_utility_gan_stops_at_the_judges_target_and_resumes_from_its_folder(tmp_path, monkeypatch):
    """utility_study's GAN: with a target, the judge reads it every check_every steps and training stops at the
    first check at or above the target; with a folder, each chunk is checkpointed and a second call resumes there
    (the bank's hour-long seeds survive a stop) -- first making the check of the step it resumed at when the stop
    came before it was recorded; a folder holding other files is refused, not emptied."""
    from cxrlib import classifier
    from cxrlib.data import load_dataset

    train = load_dataset("phantom", size=32, n=16, seed=100)
    reads = iter([0.5, 0.9, 0.95, 0.97])
    monkeypatch.setattr(classifier, "class_consistency", lambda *a, **kw: {"overall": next(reads)})
    cfg = make_config("course", size=32, batch=8, steps=10, family="conditional", log_every=100,
                      sample_every=10**9, checkpoint_every=10**9)
    gan, checks = experiments._judged_gan(cfg, train, None, 2, 0.85, None, 0, lambda *a: None)
    assert gan.step == 4 and checks == [[2, 0.5], [4, 0.9]]  # stopped at the first read above 0.85

    out, said = tmp_path / "gan", []
    gan, checks = experiments._judged_gan(cfg.replace(steps=4), train, None, 2, None, out, 0, lambda *a: None)
    assert gan.step == 4 and checks == [] and (out / "checkpoints" / "last.pt").exists()
    first = {k: v.clone() for k, v in gan.G.state_dict().items()}
    gan, checks = experiments._judged_gan(cfg.replace(steps=6), train, None, 2, 0.99, out, 0,
                                          lambda *a: said.append(" ".join(map(str, a))))
    assert any(line.startswith("GAN resumed at step 4") for line in said) and gan.step == 6
    assert checks == [[4, 0.95], [6, 0.97]]  # the missing check at the resumed step first, then the next chunk
    assert json.loads((out / "checks.json").read_text()) == checks
    assert any(not torch.equal(first[k], v) for k, v in gan.G.state_dict().items())  # it trained on from there

    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    with pytest.raises(CxrError, match="holds files the study did not write"):
        experiments._judged_gan(cfg, train, None, 2, None, mine, 0, lambda *a: None)
    assert (mine / "notes").exists()
