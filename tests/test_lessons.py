"""The results bank: resumable runs, settings changes, and the summary notebooks print."""

import json

import pytest

from cxrlib import experiments, lessons
from cxrlib.errors import CxrError


def _fake_runner(calls):
    def run(seed, settings):
        calls.append(seed)
        return {"arms": {"offline jitter": 0.08 + 0.001 * seed, "DiffAugment": 0.05 + 0.002 * seed,
                         "clean control": 0.04 + 0.001 * seed}, "seconds": 1.0,
                "reference": {"clean holdout": 0.06}}
    return run


def test_run_writes_each_part_and_resumes_where_it_stopped(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(lessons.RUNNERS, "leak", _fake_runner(calls))
    bank = tmp_path / "bank.json"
    lessons.run("leak", seeds=2, path=bank, log=lambda *_: None)
    assert calls == [0, 1]
    assert set(json.loads(bank.read_text())["leak"]["parts"]) == {"0", "1"}
    lessons.run("leak", seeds=3, path=bank, log=lambda *_: None)  # only the missing seed runs
    assert calls == [0, 1, 2]


def test_each_part_records_the_cpu_model_and_threads_it_ran_on(tmp_path, monkeypatch):
    """A live run on another CPU draws other numbers: the bank must say which CPU made its figures."""
    monkeypatch.setitem(lessons.RUNNERS, "leak", _fake_runner([]))
    monkeypatch.setattr("cxrlib.config.cpu_model", lambda: "Test CPU 9000")
    bank = tmp_path / "bank.json"
    lessons.run("leak", seeds=1, path=bank, log=lambda *_: None)
    machine = json.loads(bank.read_text())["leak"]["parts"]["0"]["machine"]
    assert machine.startswith("Test CPU 9000 (") and " threads · bf16 " in machine


def _runner_in_a_child(seed, settings):
    import os

    import torch

    if seed == 2:
        raise CxrError("seed 2 fails")
    return {"arms": {"a": 0.1 * seed}, "seconds": 1.0, "pid": os.getpid(), "threads": torch.get_num_threads(),
            "env": os.environ.get("CXRLIB_THREADS")}


def test_run_with_jobs_runs_parts_in_processes_of_their_own_and_keeps_the_others_when_one_fails(tmp_path, monkeypatch):
    import os

    monkeypatch.setattr(lessons, "MP_CONTEXT", "fork")  # the children see this test's runner (spawn would not)
    monkeypatch.setitem(lessons.RUNNERS, "leak", _runner_in_a_child)
    monkeypatch.setattr("cxrlib.config.cpu_cores", lambda: 4)
    bank = tmp_path / "bank.json"
    logged = []
    with pytest.raises(CxrError, match="seed 2 fails"):
        lessons.run("leak", seeds=3, path=bank, log=logged.append, jobs=2)
    parts = json.loads(bank.read_text())["leak"]["parts"]
    assert sorted(parts) == ["0", "1"]  # the failing seed's neighbours were saved
    assert all(p["pid"] != os.getpid() for p in parts.values())
    assert {(p["threads"], p["env"]) for p in parts.values()} == {(2, "2")}  # 4 cores / 2 jobs
    assert all(" 2 threads · " in p["machine"] for p in parts.values())
    assert any(line.startswith("leak, seed 2: failed (CxrError: seed 2 fails)") for line in logged)


def test_changed_settings_start_the_lesson_over(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(lessons.RUNNERS, "leak", _fake_runner(calls))
    bank = tmp_path / "bank.json"
    lessons.run("leak", seeds=1, path=bank, log=lambda *_: None)
    monkeypatch.setitem(lessons.LESSONS, "leak", {**lessons.LESSONS["leak"], "steps": 7})
    lessons.run("leak", seeds=1, path=bank, log=lambda *_: None)
    assert calls == [0, 0]
    assert json.loads(bank.read_text())["leak"]["settings"]["steps"] == 7


def test_summary_gives_mean_spread_and_verdicts(tmp_path, monkeypatch):
    monkeypatch.setitem(lessons.RUNNERS, "leak", _fake_runner([]))
    bank = tmp_path / "bank.json"
    lessons.run("leak", seeds=3, path=bank, log=lambda *_: None)
    text = lessons.bank_summary("leak", baseline="clean control", path=bank)
    assert "3 seeds" in text and "made 20" in text and "make lessons" not in text  # no dev command for students
    rows = {line.split()[0]: line for line in text.splitlines()[1:]}
    assert "0.0810 ± 0.0010" in rows["offline"] and "above twice the larger spread" in rows["offline"]
    assert "+0.0110 vs clean control" in rows["DiffAugment"]
    assert "references: clean holdout 0.0600" in text
    plain = lessons.bank_summary("leak", path=bank, compare=False)  # arms read seed by seed elsewhere: no verdicts
    assert "0.0810 ± 0.0010" in plain and "twice the larger spread" not in plain and " vs " not in plain


def test_summary_says_when_the_bank_is_empty_and_unknown_lessons_are_refused(tmp_path):
    assert "no 'leak' figures yet" in lessons.bank_summary("leak", path=tmp_path / "none.json")
    with pytest.raises(CxrError, match="unknown lesson"):
        lessons.run("nope", path=tmp_path / "b.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CxrError, match="not a results bank"):
        lessons.load_bank(tmp_path / "bad.json")


def test_the_shipped_bank_holds_the_leak_lesson_with_three_seeds():
    bank = lessons.load_bank()
    parts = bank["leak"]["parts"]
    assert bank["leak"]["settings"] == lessons.LESSONS["leak"]  # made with today's settings
    assert len(parts) >= 3
    for part in parts.values():
        assert set(part["arms"]) == {"offline jitter", "DiffAugment", "clean control"}
        assert all(0 < v < 0.5 for v in part["arms"].values())


def test_the_shipped_bank_holds_the_finetune_lesson_with_three_seeds():
    entry = lessons.load_bank()["finetune"]
    assert entry["settings"] == lessons.LESSONS["finetune"] and len(entry["parts"]) >= 3
    for part in entry["parts"].values():
        assert set(part["arms"]) == {"before", "continue", "original recipe", "adaptive"}
        assert all(5 < v < 200 for v in part["arms"].values())  # SWD ×10³ of a trained generator
        assert set(part["raw"]) == set(part["arms"]) and all(5 < v < 300 for v in part["raw"].values())
    assert "vs before" in lessons.bank_summary("finetune") and "raw G" in lessons.bank_summary("finetune", metric="raw")


def test_a_lesson_with_extra_figures_summarises_each_and_names_what_it_is(tmp_path, monkeypatch):
    def run(seed, settings):
        arms = ("1000 images", "50 images", "200 images")  # stored unordered: printed by size
        return {"arms": dict(zip(arms, (40.0 + seed, 90.0 + 2 * seed, 60.0))),
                "flagged": dict(zip(arms, (0.0, 0.30 + 0.01 * seed, 0.0))),
                "chance": dict(zip(arms, (0.0, 0.05, 0.01))), "seconds": 1.0}
    monkeypatch.setitem(lessons.RUNNERS, "volume", run)
    bank = tmp_path / "bank.json"
    lessons.run("volume", seeds=3, path=bank, log=lambda *_: None)
    swd = lessons.bank_summary("volume", path=bank)
    assert "metric: SWD" in swd
    rows = [line.split()[0] for line in swd.splitlines()[2:]]
    assert rows == ["50", "200", "1000"]
    flagged = lessons.bank_summary("volume", path=bank, metric="flagged")
    assert "memorisation audit" in flagged
    assert "0.310 ± 0.010" in flagged and "above twice the larger spread" in flagged and "vs 1000 images" in flagged
    assert "the same as 1000 images in every seed" in flagged  # 0 in every seed of both: no verdict to draw
    with pytest.raises(CxrError, match="has no figure 'nope'.*flagged"):
        lessons.bank_summary("volume", path=bank, metric="nope")


def test_run_live_trains_a_lesson_into_its_own_file_and_leaves_the_bank_alone(monkeypatch):
    calls = []
    monkeypatch.setitem(lessons.RUNNERS, "leak", _fake_runner(calls))
    shipped = lessons.BANK.read_bytes()
    path = lessons.run_live("leak", seeds=2, log=lambda *_: None)
    assert calls == [0, 1] and path != lessons.BANK and lessons.BANK.read_bytes() == shipped
    assert "2 seeds" in lessons.bank_summary("leak", path=path)


@pytest.mark.parametrize("name,arms", [("width", {"width 0.5", "width 2"}),
                                       ("volume", {"50 images", "200 images", "1000 images"})])
def test_the_shipped_bank_holds_notebook_02s_lessons_with_three_seeds(name, arms):
    entry = lessons.load_bank()[name]
    assert entry["settings"] == lessons.LESSONS[name] and len(entry["parts"]) >= 3
    for part in entry["parts"].values():
        assert set(part["arms"]) == arms and all(5 < v < 200 for v in part["arms"].values())  # SWD ×10³
        for extra in set(part) & {"flagged", "chance"}:
            assert set(part[extra]) == arms and all(0 <= v <= 1 for v in part[extra].values())
    assert "metric: SWD" in lessons.bank_summary(name)


def test_bank_difference_pairs_two_figures_of_the_same_runs_seed_by_seed(tmp_path, monkeypatch):
    def run(seed, settings):  # raw G worse than EMA by 5 ± 0 in "continue"; by −1, 0, +1 in "adaptive"
        return {"arms": {"before": 20.0 + seed, "continue": 22.0 + 3 * seed, "adaptive": 21.0},
                "raw": {"before": 20.5 + seed, "continue": 27.0 + 3 * seed, "adaptive": 20.0 + seed},
                "seconds": 1.0}
    monkeypatch.setitem(lessons.RUNNERS, "finetune", run)
    bank = tmp_path / "bank.json"
    lessons.run("finetune", seeds=3, path=bank, log=lambda *_: None)
    text = lessons.bank_difference("finetune", "raw", path=bank)
    rows = {line.split()[0]: line for line in text.splitlines()[1:]}
    assert "+5.000 ± 0.000   above" in rows["continue"]  # paired: the seeds' common drift cancels
    assert "+0.000 ± 1.000   within" in rows["adaptive"]
    assert "raw G" in text.splitlines()[0]
    with pytest.raises(CxrError, match="no figure 'nope'"):
        lessons.bank_difference("finetune", "nope", path=bank)


def test_bank_summary_of_an_extra_figure_without_the_baseline_arm(tmp_path):
    """The utility lessons' extra figures (the GAN's consistency) have one arm, not the lesson's baseline: they
    print mean ± std without a verdict instead of failing."""
    import json

    from cxrlib import lessons

    parts = {str(s): {"arms": {"real": 0.9 + s / 100, "real + 1×n synthetic": 0.8}, "consistency": {"GAN": 0.5 + s / 10},
                      "date": "2026-12-02", "machine": "test"} for s in range(3)}
    bank = tmp_path / "bank.json"
    bank.write_text(json.dumps({"utility-100": {"settings": lessons.LESSONS["utility-100"], "parts": parts}}))
    text = lessons.bank_summary("utility-100", path=bank, metric="consistency")
    gan_line = [line for line in text.splitlines() if line.strip().startswith("GAN")]
    assert gan_line == ["  GAN                0.600 ± 0.100"]  # mean ± std, no verdict against a missing arm
    main = lessons.bank_summary("utility-100", path=bank)
    assert "-0.110 vs real: above twice the larger spread" in main  # the main figure keeps its verdicts


@pytest.mark.parametrize("name,arms", [("modern", {"course", "modern"}),
                                       ("layers", {"course", "+ BatchNorm, skips, spectral norm"})])
def test_the_shipped_bank_holds_the_recipe_comparisons_with_three_seeds(name, arms):
    entry = lessons.load_bank()[name]
    assert entry["settings"] == lessons.LESSONS[name] and len(entry["parts"]) >= 3
    for part in entry["parts"].values():
        assert set(part["arms"]) == arms and all(5 < v < 200 for v in part["arms"].values())  # SWD ×10³
        assert set(part["train_seconds"]) == arms and all(v > 0 for v in part["train_seconds"].values())
    assert "metric: SWD" in lessons.bank_summary(name)


def test_run_recipes_trains_every_arm_for_its_steps_with_its_options(monkeypatch):
    """A recipe lesson's arm gets its own preset, steps and options (here two tiny arms, 2 and 3 steps)."""
    settings = {"size": 32, "batch": 8, "n_images": 16, "n_heldout": 16,
                "arms": {"a": {"preset": "course", "steps": 2, "set": {"width": 0.25}},
                         "b": {"preset": "modern", "steps": 3, "set": {"width": 0.25, "label_smoothing": 0.1}}}}
    seen = {}
    from cxrlib import train

    real_fit = train.Trainer.fit

    def fit(self, *a, **k):
        out = real_fit(self, *a, **k)
        seen[self.cfg.preset] = (self.step, self.cfg.loss, self.cfg.label_smoothing, self.cfg.width)
        return out

    monkeypatch.setattr(train.Trainer, "fit", fit)
    part = lessons.run_recipes(0, settings)
    assert seen == {"course": (2, "bce", 0.0, 0.25), "modern": (3, "rpgan", 0.1, 0.25)}
    assert set(part["arms"]) == {"a", "b"} and all(v > 0 for v in part["arms"].values())
    assert set(part["train_seconds"]) == {"a", "b"}


def test_the_layers_lesson_adds_exactly_the_layers_the_course_networks_left_out():
    from cxrlib import models

    arms = lessons.LESSONS["layers"]["arms"]
    assert arms["course"].get("set") is None and arms["course"]["steps"] == arms["+ BatchNorm, skips, spectral norm"]["steps"]
    assert arms["+ BatchNorm, skips, spectral norm"]["set"]["model_kwargs"] == models.LEGACY_NETWORKS["course"]
    # every lesson trained on the course networks names which ones, so a bank made with the old ones is redone
    for name in ("leak", "finetune", "width", "layers", "volume", "modern"):
        assert lessons.LESSONS[name]["nets"] == 2


def test_paired_differences_and_per_seed_columns(tmp_path, monkeypatch):
    def run(seed, settings):  # "adaptive" 1 lower than "before" in every seed, while the seeds drift by 3 each
        return {"arms": {"before": 20.0 + 3 * seed, "continue": 20.0 + 3 * seed + (seed - 1),
                         "adaptive": 19.0 + 3 * seed}, "raw": {"before": 1.0, "continue": 1.0, "adaptive": 1.0},
                "seconds": 1.0}
    monkeypatch.setitem(lessons.RUNNERS, "finetune", run)
    bank = tmp_path / "bank.json"
    lessons.run("finetune", seeds=3, path=bank, log=lambda *_: None)
    # unpaired, the drift hides the effect; paired by seed it stands out
    assert "within twice the larger spread" in [r for r in lessons.bank_summary("finetune", path=bank).splitlines()
                                         if r.split()[0] == "adaptive"][0]
    text = lessons.bank_paired("finetune", "adaptive", path=bank)
    assert "seed 0: -1.000 · seed 1: -1.000 · seed 2: -1.000" in text
    assert "mean -1.000 ± 0.000: above twice the spread" in text and "same sign in every seed" in text
    text = lessons.bank_paired("finetune", "continue", "before", path=bank)
    assert "mean +0.000 ± 1.000: within" in text and "signs differ" in text
    with pytest.raises(CxrError, match="no arm 'nope'"):
        lessons.bank_paired("finetune", "nope", path=bank)
    table = lessons.bank_summary("finetune", path=bank, per_seed=True).splitlines()
    assert table[2].split() == ["seed", "0", "seed", "1", "seed", "2", "mean", "±", "std"]
    assert [r for r in table if r.split()[0] == "adaptive"][0].split()[1:4] == ["19.000", "22.000", "25.000"]


def test_paired_verdict_prints_enough_digits_to_show_which_side_of_the_threshold(tmp_path, monkeypatch):
    def run(seed, settings):  # differences with mean -0.0081 and twice their std 0.0078: both "0.008" to 3 digits
        d = (-0.0042, -0.0081, -0.0120)[seed]
        return {"arms": {"before": 0.5, "continue": 0.5, "adaptive": 0.5 + d},
                "raw": {"before": 1.0, "continue": 1.0, "adaptive": 1.0}, "seconds": 1.0}
    monkeypatch.setitem(lessons.RUNNERS, "finetune", run)
    bank = tmp_path / "bank.json"
    lessons.run("finetune", seeds=3, path=bank, log=lambda *_: None)
    line = lessons.bank_paired("finetune", "adaptive", path=bank).splitlines()[-1]
    mean, threshold = line.split()[1], line.split("(")[1].split(")")[0]
    assert (mean, threshold) == ("-0.0081", "0.0078") and "above" in line


def test_a_utility_part_trains_the_judge_once_and_keeps_every_figure(tmp_path, monkeypatch):
    """The bank's utility study at toy scale: a part holds every arm's AUC and sensitivity, the GAN's and the
    judge's consistency, SWD and the memorisation shares; two seeds train the judge once (it is deterministic)."""
    from cxrlib import classifier

    tiny = dict(notebook="07", n_train=8, size=32, severity=[0.25, 0.6], gan_steps=2, ks=[1, 2], extra=[1],
                clf_steps=2, copies=1, n_test=40, judge=dict(n=40, steps=2, n_val=20), seeds=2)
    monkeypatch.setitem(lessons.LESSONS, "utility-100", tiny)
    monkeypatch.setattr(lessons, "_JUDGES", {})
    judges = []
    real_train = classifier.train_classifier

    def counting(*a, **kw):
        judges.append(kw.get("val") is not None)
        return real_train(*a, **kw)

    monkeypatch.setattr(classifier, "train_classifier", counting)
    bank = tmp_path / "bank.json"
    lessons.run("utility-100", path=bank, log=lambda *_: None)
    parts = json.loads(bank.read_text())["utility-100"]["parts"]
    assert sorted(parts) == ["0", "1"] and judges.count(True) == 1  # the judge: the only one trained with val
    for part in parts.values():
        assert list(part["arms"]) == list(part["sensitivity"]) == experiments.utility_arms([1, 2], [1])
        assert set(part["consistency"]) == {"GAN", "real"} and set(part["memorisation"]) == {"GAN", "held-out"}
        assert part["gan_steps"] == 2 and isinstance(part["usable"], bool) and part["gan_swd"]["GAN"] > 0


def test_a_seed_whose_gan_the_judge_rejected_stays_out_of_the_synthetic_verdicts(tmp_path):
    """The utility study keeps every seed in the bank, but a seed with an unusable GAN counts only for the arms
    without synthetic images: its synthetic figure is starred and left out of the mean and of the paired verdict."""
    parts = {str(k): {"arms": {"real": 0.80 + k / 100, "real + 1×n synthetic": v, "real + 1×n real": 0.9},
                      "usable": k != 2, "machine": "m", "date": "2026-12-06T12:00", "seconds": 1.0}
             for k, v in enumerate([0.82, 0.83, 0.10])}
    bank = tmp_path / "bank.json"
    bank.write_text(json.dumps({"utility-100": {"settings": lessons.LESSONS["utility-100"], "parts": parts}}))
    text = lessons.bank_summary("utility-100", path=bank, per_seed=True, compare=False)
    row = next(line for line in text.splitlines() if "synthetic" in line)
    assert "0.1000*" in row and "0.8250 ± 0.0071" in row  # the mean of seeds 0 and 1 only
    assert "0.8100 ± 0.0100" in text and "left out of the mean" in text  # real keeps all three seeds
    paired = lessons.bank_paired("utility-100", "real + 1×n synthetic", path=bank)
    assert "seed 0: +0.020 · seed 1: +0.020 (seed 2 left out" in paired and "seed 2:" not in paired
    assert "seed 2: +0.080" in lessons.bank_paired("utility-100", "real + 1×n real", path=bank)
    one = {"utility-100": {"settings": lessons.LESSONS["utility-100"], "parts": {"0": parts["0"]}}}
    bank.write_text(json.dumps(one))  # one seed so far: its difference, no verdict on a spread of one
    paired = lessons.bank_paired("utility-100", "real + 1×n synthetic", path=bank)
    assert "seed 0: +0.020" in paired and "no verdict yet" in paired and "above" not in paired
    summary = lessons.bank_summary("utility-100", path=bank)  # the same for the unpaired verdicts
    assert "no verdict yet" in summary and "above" not in summary and "within" not in summary
    assert "GAN up to 12000 steps (until the judge reads 85%)" in summary
    for part in parts.values():  # every GAN rejected: the differences shown, no verdict
        part["usable"] = False
    bank.write_text(json.dumps({"utility-100": {"settings": lessons.LESSONS["utility-100"], "parts": parts}}))
    paired = lessons.bank_paired("utility-100", "real + 1×n synthetic", path=bank)
    assert "no verdict" in paired and "seed 0: +0.020 · seed 1: +0.020 · seed 2: -0.720" in paired
    row = next(line for line in lessons.bank_summary("utility-100", path=bank, per_seed=True).splitlines()
               if "synthetic" in line)
    assert "0.820*" in row and "0.100*" in row and "(no seed counts)" in row  # shown, starred, no mean
    assert "above" not in paired and "within" not in paired
    parts["1"]["usable"] = True  # one usable seed of three: its figure is the "mean", with no spread
    bank.write_text(json.dumps({"utility-100": {"settings": lessons.LESSONS["utility-100"], "parts": parts}}))
    row = next(line for line in lessons.bank_summary("utility-100", path=bank, per_seed=True, compare=False)
               .splitlines() if "synthetic" in line)
    assert row.endswith("0.830 (1 seed)") and "±" not in row


def test_a_membership_part_attacks_every_size_at_every_length(tmp_path, monkeypatch):
    """The privacy notebook's lesson at toy scale: one arm per set size × length, each with the three attacks'
    AUCs (and intervals in "detail"), the white-box TPR at 1 % FPR and the SWD; the training runs on (length 2 is
    the same run as length 1, two steps on); the bank prints every figure."""
    tiny = dict(notebook="11", size=32, batch=4, volumes=[10, 12], lengths=[1, 2], n_generated=12, n_boot=20,
                n_heldout=12, seeds=1)
    monkeypatch.setitem(lessons.LESSONS, "membership", tiny)
    bank = tmp_path / "bank.json"
    lessons.run("membership", path=bank, log=lambda *_: None)
    part = json.loads(bank.read_text())["membership"]["parts"]["0"]
    arms = ["10 images · 1 steps", "10 images · 2 steps", "12 images · 1 steps", "12 images · 2 steps"]
    for key in ("arms", "pixel", "embedding", "tpr1", "swd", "detail"):
        assert list(part[key]) == arms, key
    for arm in arms:
        assert 0 <= part["arms"][arm] <= 1 and 0 <= part["tpr1"][arm] <= 1 and part["swd"][arm] > 0
        detail = part["detail"][arm]
        assert set(detail) == {"discriminator", "distance_pixel", "distance_embedding"}
        lo, hi = detail["discriminator"]["auc_interval"]
        assert lo <= part["arms"][arm] <= hi and detail["distance_pixel"]["auc"] == part["pixel"][arm]
    assert part["arms"]["10 images · 1 steps"] != part["arms"]["10 images · 2 steps"]  # D trained on between them
    for metric in lessons.METRICS["membership"]:
        assert "1 / 2 steps on sets of 10 / 12" in lessons.bank_summary("membership", path=bank, metric=metric)
    assert "1000 images · 500 steps" == lessons.BASELINES["membership"]


def test_a_dp_part_scores_every_arm_and_records_the_epsilon_spent(tmp_path, monkeypatch):
    """The privacy notebook's trade-off lesson at toy scale: the course recipe, the DP recipe without noise and
    DP-SGD at each ε, each with SWD, consistency, the attacks' figures, and ε spent only where DP-SGD ran."""
    pytest.importorskip("opacus")
    tiny = dict(notebook="11", size=32, batch=4, n_train=12, steps=2, epsilons=[10], n_generated=12, n_boot=20,
                n_heldout=12, judge=dict(n=40, steps=2), seeds=1)
    monkeypatch.setitem(lessons.LESSONS, "dp", tiny)
    monkeypatch.setattr(lessons, "_JUDGES", {})
    bank = tmp_path / "bank.json"
    lessons.run("dp", path=bank, log=lambda *_: None)
    part = json.loads(bank.read_text())["dp"]["parts"]["0"]
    arms = ["course recipe", "DP recipe, ε = ∞", "ε = 10"]
    for key in ("arms", "consistency", "attack", "pixel", "embedding", "tpr1", "detail"):
        assert list(part[key]) == arms, key
    assert all(part["arms"][a] > 0 and 0 <= part["consistency"][a] <= 1 for a in arms)
    spent = {a: part["detail"][a]["epsilon_spent"] for a in arms}
    assert spent["course recipe"] is None and spent["DP recipe, ε = ∞"] is None and 0 < spent["ε = 10"] <= 10
    assert lessons.BASELINES["dp"] in arms
    for metric in lessons.METRICS["dp"]:
        assert "2 steps (32 px, batch 4)" in lessons.bank_summary("dp", path=bank, metric=metric)


def test_a_diffusion_part_scores_the_gan_and_each_sampling_length_at_each_budget(tmp_path, monkeypatch):
    """The diffusion notebook's lesson at toy scale: a row per model (the diffusion model per DDIM step count) and
    budget, each with every figure; each model trains to each budget of its own training time in turn."""
    pytest.importorskip("diffusers")
    tiny = dict(notebook="12", size=32, n_train=12, budgets=[0.002, 0.05], sampling_steps=[1, 2], n_eval=10,
                n_heldout=12, seeds=1)
    monkeypatch.setitem(lessons.LESSONS, "diffusion", tiny)
    bank = tmp_path / "bank.json"
    lessons.run("diffusion", path=bank, log=lambda *_: None)
    part = json.loads(bank.read_text())["diffusion"]["parts"]["0"]
    rows = ["GAN · 0.002 min", "diffusion, 1 steps · 0.002 min", "diffusion, 2 steps · 0.002 min",
            "GAN · 0.05 min", "diffusion, 1 steps · 0.05 min", "diffusion, 2 steps · 0.05 min"]
    assert sorted(part["arms"]) == sorted(rows)
    for key in lessons.METRICS["diffusion"]:
        assert sorted(part[key]) == sorted(rows), key
    for r in rows:
        assert part["arms"][r] > 0 and 0 <= part["pixel"][r] <= 1 and part["sample_s"][r] > 0 and part["steps"][r] >= 1
    for model in ("GAN", "diffusion, 1 steps"):  # the same run, on: more steps and time at the larger budget
        assert part["steps"][f"{model} · 0.05 min"] > part["steps"][f"{model} · 0.002 min"]
    for metric in lessons.METRICS["diffusion"]:
        assert "0.002 and 0.05 min of training each" in lessons.bank_summary("diffusion", path=bank, metric=metric)


def test_a_timed_lesson_runs_its_parts_one_at_a_time_whatever_jobs_says(tmp_path, monkeypatch):
    """A lesson trained for a wall-clock budget would draw other figures on a shared CPU: run(jobs=2) keeps its
    parts in this process, on all cores."""
    import os

    monkeypatch.setattr(lessons, "MP_CONTEXT", "fork")
    monkeypatch.setattr(lessons, "TIMED", ("leak",))
    monkeypatch.setitem(lessons.RUNNERS, "leak", _runner_in_a_child)
    bank = tmp_path / "bank.json"
    lessons.run("leak", seeds=2, path=bank, log=lambda *_: None, jobs=2)
    parts = json.loads(bank.read_text())["leak"]["parts"]
    assert sorted(parts) == ["0", "1"] and all(p["pid"] == os.getpid() for p in parts.values())
