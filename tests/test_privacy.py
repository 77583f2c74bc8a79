"""Membership inference (``cxrlib.privacy``, ``python -m cxrlib privacy``): the attacks find a generator that returns
its training images and find nothing in one that draws other patients; TPR at low FPR, the bootstrap intervals and
the verdicts on scores with known answers; the white-box attack on a trained D; the command's one-line refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cxrlib import config, privacy, train
from cxrlib.cli import main
from cxrlib.config import make_config
from cxrlib.data import ImageSet
from cxrlib.errors import CxrError
from cxrlib.images import to_float
from cxrlib.phantom import generate

SIZE = 32
TINY = dict(size=SIZE, batch=8, width=0.25, amp="off", log_every=2, sample_every=10**6, checkpoint_every=10**6)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setattr(config, "set_threads", lambda n=None: torch.set_num_threads(1) or 1)


def phantoms(n: int, seed: int) -> ImageSet:
    """n phantom patients of ``seed`` at 32 px (another seed: other patients), classes normal / pneumonia."""
    p = generate(n, SIZE, seed=seed, workers=1)
    return ImageSet(torch.as_tensor(p.images), torch.as_tensor(p.labels), list(p.classes))


@pytest.fixture(scope="module")
def sets():
    """members (the training images), non-members and fresh images: other patients each. With 40 of each, two
    phantom sets' distance AUC against fresh samples spreads by about ±0.07 (seeds 1 and 2: 0.60–0.65, a set a
    little more typical than the other); seeds 6 and 7 sit near 0.5, so the null case is not on an edge."""
    return {"members": phantoms(40, 6), "nonmembers": phantoms(40, 7), "fresh": phantoms(120, 3)}


class PoolGenerator(torch.nn.Module):
    """A stand-in generator that returns the images of ``pool`` in turn, whatever z is: a generator that has
    memorised its training set (pool = the members) or one that draws other patients (pool = fresh phantoms)."""

    z_dim = 8

    def __init__(self, pool: torch.Tensor):
        super().__init__()
        self.pool, self.drawn = pool, 0
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # where the images go (the device)

    def forward(self, z):
        idx = (self.drawn + torch.arange(len(z))) % len(self.pool)
        self.drawn += len(z)
        return to_float(self.pool[idx])


def audit_pool(monkeypatch, pool, members, nonmembers, **kw) -> dict:
    """``audit_checkpoint`` of a checkpoint whose generator is ``PoolGenerator(pool)`` and that holds no D."""
    monkeypatch.setattr(train, "load_generator", lambda ckpt, **_: (PoolGenerator(pool), make_config("course", **TINY)))
    monkeypatch.setattr(train, "load_discriminator", lambda ckpt, **_: None)
    return privacy.audit_checkpoint("stand-in", members, nonmembers, n_boot=200, **kw)


# ------------------------------------------------------------------ the black-box attacks
@pytest.mark.parametrize("space", privacy.SPACES)
def test_distance_attack_identifies_copies_and_finds_nothing_in_other_patients(sets, space):
    members, nonmembers = sets["members"].images, sets["nonmembers"].images
    copies = members[torch.arange(120) % 40]  # a generator that returns its training images
    leaky = privacy.membership_report(privacy.distance_scores(members, copies, space),
                                      privacy.distance_scores(nonmembers, copies, space), seed=0)
    assert leaky["auc"] == 1.0 and leaky["tpr_at_fpr"]["1%"]["tpr"] == 1.0
    assert leaky["verdict"].startswith("members are identifiable (AUC 1.00")
    fresh = sets["fresh"].images  # a generator that draws other patients
    private = privacy.membership_report(privacy.distance_scores(members, fresh, space),
                                        privacy.distance_scores(nonmembers, fresh, space), seed=0)
    lo, hi = private["auc_interval"]
    assert lo < 0.5 < hi and 0.35 < private["auc"] < 0.65
    assert private["verdict"].startswith("no evidence of membership leakage at this sample size (AUC ")


def test_nearest_distance_is_zero_for_a_copy_and_the_rms_difference_otherwise():
    a = torch.zeros(2, 1, 4, 4)
    b = torch.stack([torch.full((1, 4, 4), 0.5), torch.zeros(1, 4, 4)])
    b[1, 0, 0, 0] = 1.0  # one pixel of 16 differs by 1: RMS 1/4
    assert privacy.nearest_distance(a[:1], b[:1]).tolist() == pytest.approx([0.5])
    assert privacy.nearest_distance(a[:1], b[1:]).tolist() == pytest.approx([0.25])
    assert privacy.nearest_distance(a, b).tolist() == pytest.approx([0.25, 0.25])  # the nearer of the two
    x = phantoms(6, 4).images
    assert privacy.nearest_distance(x, x, "embedding").max() < 1e-2  # each image's copy is its nearest
    brighter = (x.float() * 0.8 + 30).round().to(torch.uint8)  # the embedding standardises brightness and contrast
    assert privacy.nearest_distance(brighter, x, "embedding").max() < 0.05 < privacy.nearest_distance(brighter, x).min()
    with pytest.raises(CxrError, match="32x32 px but generated ones 64x64 px"):
        privacy.nearest_distance(x, torch.zeros(2, 1, 64, 64))


def test_audit_of_a_memorising_generator_and_of_one_that_draws_other_patients(sets, monkeypatch):
    members, nonmembers = sets["members"], sets["nonmembers"]
    leaky = audit_pool(monkeypatch, members.images, members, nonmembers, n_generated=80)
    assert set(leaky["attacks"]) == {"distance_pixel", "distance_embedding"}
    assert "no discriminator" in leaky["skipped"]["discriminator"]
    assert all(r["auc"] == 1.0 for r in leaky["attacks"].values())
    assert leaky["n_members"] == leaky["n_nonmembers"] == 40 and leaky["n_generated"] == 80
    assert max(leaky["scores"]["distance_pixel"]["members"]) == pytest.approx(0, abs=1e-3)  # each member copied
    private = audit_pool(monkeypatch, sets["fresh"].images, members, nonmembers, n_generated=120)
    for r in private["attacks"].values():
        assert r["auc_interval"][0] < 0.5 < r["auc_interval"][1], r
    printed = privacy.format_report(private)
    assert printed.count("no evidence of membership leakage") == 2 and "skipped discriminator" in printed


# ------------------------------------------------------------------ TPR at low FPR, intervals, verdicts
def test_tpr_at_fpr_on_scores_with_a_known_answer():
    nonmembers = np.arange(1000.0)  # 0 … 999: 1 % of them lie above 989, 0.1 % above 998
    members = np.array([1000, 999.5, 995, 990, 989.5, 989, 998, 500, 100, 0])
    assert privacy.tpr_at_fpr(members, nonmembers, 0.01) == pytest.approx(0.6)  # > 989: 6 of 10 (989 is a tie)
    assert privacy.tpr_at_fpr(members, nonmembers, 0.001) == pytest.approx(0.2)  # > 998: 1000 and 999.5
    assert privacy.tpr_at_fpr(members, nonmembers[:100], 0.001) == pytest.approx(0.9)  # above every one (> 99)
    report = privacy.membership_report(members, nonmembers[:100], seed=0, n_boot=50)
    assert report["tpr_at_fpr"]["1%"]["resolvable"] and not report["tpr_at_fpr"]["0.1%"]["resolvable"]
    assert report["tpr_at_fpr"]["0.1%"]["tpr"] == pytest.approx(0.9)
    assert privacy.membership_report(members, nonmembers, seed=0, n_boot=50)["tpr_at_fpr"]["0.1%"]["resolvable"]


def test_bootstrap_interval_covers_the_estimate_narrows_with_n_and_repeats_with_its_seed():
    rng = np.random.default_rng(0)
    widths = {}
    for n in (30, 1000):
        r = privacy.membership_report(rng.normal(1, 1, n), rng.normal(0, 1, n), seed=0)
        assert r["auc_interval"][0] <= r["auc"] <= r["auc_interval"][1]
        assert r["n_members"] == r["n_nonmembers"] == n and r["n_boot"] == privacy.N_BOOT
        widths[n] = r["auc_interval"][1] - r["auc_interval"][0]
    at1 = r["tpr_at_fpr"]["1%"]
    assert at1["interval"][0] <= at1["tpr"] <= at1["interval"][1] and at1["interval"][1] - at1["interval"][0] > 0
    assert widths[1000] < widths[30] / 3  # ~1/√n: √(1000/30) ≈ 5.8
    m, n = rng.normal(1, 1, 50), rng.normal(0, 1, 50)
    assert privacy.membership_report(m, n, seed=3) == privacy.membership_report(m, n, seed=3)
    assert privacy.membership_report(m, n, seed=3)["auc_interval"] != privacy.membership_report(m, n, seed=4)["auc_interval"]
    with pytest.raises(CxrError, match="at least 10 members and 10 non-members .got 9 and 50"):
        privacy.membership_report(m[:9], n)


def test_verdict_says_what_the_intervals_license():
    rng = np.random.default_rng(0)
    nonmembers = rng.normal(size=500)
    say = lambda members: privacy.membership_report(members, nonmembers, seed=0)["verdict"]  # noqa: E731
    assert say(rng.normal(1, 1, 500)).startswith("members are identifiable (AUC 0.7")
    assert say(rng.normal(0, 1, 500)).startswith("no evidence of membership leakage at this sample size (AUC 0.")
    assert say(rng.normal(-1, 1, 500)).startswith("members score lower than non-members (AUC 0.2")
    # AUC near 0.5, but a tenth of the members far above every non-member (Carlini et al.'s point)
    few = say(np.r_[np.full(50, 10.0), rng.normal(size=450) - 0.3])
    assert few.startswith("some members are identifiable: TPR 10.") and "includes 0.5" in few


# ------------------------------------------------------------------ the white-box attack
class MeanD(torch.nn.Module):
    """A stand-in D: its logit is the image's mean pixel (+ the class index of a conditional one); it records
    the batches it was given."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.calls = []

    def forward(self, x, y=None):
        self.calls.append(x.mean((1, 2, 3)))
        return x.mean((1, 2, 3)) + (0 if y is None else y.float())


def test_discriminator_scores_come_back_in_the_images_order_from_batches_of_distinct_images():
    x = torch.arange(37, dtype=torch.uint8).mul(6).reshape(37, 1, 1, 1).expand(37, 1, 4, 4).contiguous()
    D = MeanD()
    scores = privacy.discriminator_scores(D, x, batch=16, seed=1)
    assert torch.allclose(scores, to_float(x).mean((1, 2, 3)))  # the shuffle is undone
    assert [len(c) for c in D.calls] == [16, 16, 16] and all(len(set(c.tolist())) == 16 for c in D.calls)
    assert not torch.equal(D.calls[0], to_float(x[:16]).mean((1, 2, 3)))  # … but the batches were shuffled
    labels = torch.arange(37) % 2
    assert torch.allclose(privacy.discriminator_scores(MeanD(), x, labels, batch=16) - scores, labels.float())


def test_white_box_attack_on_a_briefly_trained_d_gives_one_score_per_image(tmp_path):
    members, nonmembers = phantoms(24, 0), phantoms(24, 5)
    trainer = train.Trainer(make_config("course", steps=3, family="conditional", **TINY), members, out=tmp_path / "r")
    trainer.fit(progress=False)
    D = train.load_discriminator(tmp_path / "r")
    scores = privacy.discriminator_scores(D, members, members.labels)
    assert scores.shape == (24,) and torch.isfinite(scores).all() and scores.std() > 0
    renamed = ImageSet(nonmembers.images, 1 - nonmembers.labels, ["PNEUMONIA", "Normal"])  # other order and case
    result = privacy.audit_checkpoint(tmp_path / "r", members, renamed, n_generated=32, n_boot=50)
    assert set(result["attacks"]) == set(privacy.ATTACKS) and result["skipped"] == {}
    expected = privacy.discriminator_scores(D, torch.cat([members.images, nonmembers.images]),
                                            torch.cat([members.labels, nonmembers.labels]))
    got = result["scores"]["discriminator"]
    assert got["members"] + got["nonmembers"] == pytest.approx(expected.tolist(), abs=1e-5)


# ------------------------------------------------------------------ the command line
def write_folder(root, images: ImageSet, flat: bool = False):
    """images → root/<class>/img_XXX.png (``flat``: root/img_XXX.png)."""
    for i, (img, y) in enumerate(zip(images.images[:, 0].numpy(), images.labels.tolist())):
        d = root if flat else root / images.classes[y]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"img_{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """A briefly trained unconditional and conditional run on 20 phantoms, and folders for the command."""
    root = tmp_path_factory.mktemp("privacy")
    members, nonmembers = phantoms(20, 0), phantoms(20, 5)
    for family in ("unconditional", "conditional"):
        with torch.random.fork_rng():
            train.Trainer(make_config("course", steps=2, family=family, **TINY), members, out=root / family).fit(
                progress=False)
    big = generate(20, 64, seed=5, workers=1)
    return {
        "root": root, "members": write_folder(root / "members", members),
        "nonmembers": write_folder(root / "nonmembers", nonmembers),
        "fewer": write_folder(root / "fewer", nonmembers.subset(torch.arange(15))),
        "flat": write_folder(root / "flat", nonmembers, flat=True),
        "big": write_folder(root / "big", ImageSet(torch.as_tensor(big.images), torch.as_tensor(big.labels),
                                                   list(big.classes))),
        "empty": root / "empty",
    }


def test_cli_privacy_prints_the_attacks_and_writes_json(cli, tmp_path, capsys):
    out = tmp_path / "out" / "privacy.json"
    args = ["privacy", "--ckpt", str(cli["root"] / "conditional"), "--members", str(cli["members"]),
            "--nonmembers", str(cli["nonmembers"]), "--n-generated", "40", "--json", str(out)]
    before = sorted(p.relative_to(cli["members"]) for p in cli["members"].rglob("*"))
    assert main(args) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert sorted(p.relative_to(cli["members"]) for p in cli["members"].rglob("*")) == before  # nothing written there
    assert set(result["attacks"]) == set(privacy.ATTACKS) and result["n_members"] == 20
    assert result["folders"] == {"members": str(cli["members"]), "nonmembers": str(cli["nonmembers"])}
    assert all(r["verdict"] in printed for r in result["attacks"].values())
    assert "white-box: D's logit" in printed and "TPR @ 0.1% FPR" in printed and str(out) in printed
    assert not list(out.parent.glob(".*tmp*"))  # written atomically


@pytest.mark.parametrize("flags, message", [
    (["--nonmembers", "fewer"], "error: 20 members but 15 non-members: give as many of each, or draw that many at "
                                "random from the larger set (--subsample"),
    (["--nonmembers", "empty"], "error: no images found in '{empty}'"),
    (["--nonmembers", "nowhere"], "error: folder not found: '{nowhere}'"),
    (["--nonmembers", "big"], "error: --nonmembers images are 64x64 px ('{big}') but the generator draws 32x32 px: "
                              "pass --resize"),
    (["--ckpt", "pretrained-cyclegan"], "error: 'pretrained-cyclegan' is a cyclegan checkpoint, which translates "
                                        "images rather than drawing them from noise"),
    (["--ckpt", "conditional", "--nonmembers", "flat"], "error: the non-member images from '{flat}' are in class "
                                                       "'flat' (files directly in a folder take its name), which the "
                                                       "conditional checkpoint does not know (normal, pneumonia)"),
])
def test_cli_privacy_refuses_bad_input_in_one_line(cli, capsys, flags, message):
    (cli["root"] / "empty").mkdir(exist_ok=True)
    folders = {k: str(cli["root"] / k) for k in ("fewer", "empty", "nowhere", "big", "flat", "conditional")}
    given = {"--ckpt": str(cli["root"] / "unconditional"), "--members": str(cli["members"]),
             "--nonmembers": str(cli["nonmembers"])}
    for flag, value in zip(flags[::2], flags[1::2]):
        given[flag] = folders.get(value, value)
    args = ["privacy", *[a for kv in given.items() for a in kv], "--n-generated", "8"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(message.format(**folders)), err


def test_cli_privacy_subsamples_and_resizes_when_asked(cli, capsys):
    base = ["privacy", "--ckpt", str(cli["root"] / "unconditional"), "--members", str(cli["members"]),
            "--n-generated", "8"]
    assert main([*base, "--nonmembers", str(cli["fewer"]), "--subsample"]) == 0
    assert "15 members, 15 non-members" in capsys.readouterr().out
    assert main([*base, "--nonmembers", str(cli["big"]), "--resize"]) == 0
    assert "20 members, 20 non-members" in capsys.readouterr().out


def test_cli_privacy_help_names_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        main(["privacy", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "--ckpt RUN --members DIR --nonmembers DIR" in " ".join(out.split())
    assert all(flag in out for flag in ("--n-generated N", "--json PATH", "--seed S", "--subsample", "--resize"))


def test_cli_privacy_on_a_diffusion_checkpoint_skips_the_discriminator_attack(tmp_path, capsys):
    pytest.importorskip("diffusers")
    members, nonmembers = phantoms(12, 0), phantoms(12, 5)
    cfg = make_config("diffusion", steps=1, size=SIZE, batch=4, width=0.25, amp="off", log_every=1,
                      sample_every=10**6, checkpoint_every=10**6, model_kwargs={"sampling_steps": 2})
    train.Trainer(cfg, members, out=tmp_path / "run").fit(progress=False)
    out = tmp_path / "privacy.json"
    assert main(["privacy", "--ckpt", str(tmp_path / "run"), "--members", str(write_folder(tmp_path / "m", members)),
                 "--nonmembers", str(write_folder(tmp_path / "n", nonmembers)), "--n-generated", "8",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["family"] == "diffusion" and set(result["attacks"]) == {"distance_pixel", "distance_embedding"}
    assert result["skipped"] == {"discriminator": "the diffusion model has no discriminator"}
    assert "skipped discriminator: the diffusion model has no discriminator" in capsys.readouterr().out
