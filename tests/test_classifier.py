"""cxrlib.classifier: ROC-AUC by hand, a classifier that learns phantoms (and not shuffled labels),
determinism, class consistency and the one-line errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from cxrlib import classifier as C
from cxrlib import config
from cxrlib.data import ImageSet
from cxrlib.errors import CxrError
from cxrlib.phantom import generate

SIZE = 32
STEPS = 300


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # the test machine is shared: one thread avoids OpenMP oversubscription stalls (module-wide, because the
    # trained classifier below is built once per module, before any function-scoped fixture runs)
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(config, "set_threads", lambda n=None: torch.set_num_threads(1) or 1)
        yield
    torch.set_num_threads(threads)


def phantom_set(n: int, seed: int, size: int = SIZE, **kw) -> ImageSet:
    """n phantoms as an ImageSet (made directly, not through load_dataset's cache)."""
    p = generate(n, size, seed=seed, **kw)
    return ImageSet(p.images, p.labels, list(p.classes), origin="phantom")


@pytest.fixture(scope="module")
def train_set() -> ImageSet:
    return phantom_set(200, seed=11)


@pytest.fixture(scope="module")
def test_set() -> ImageSet:
    """Other patients (another seed): never trained on."""
    return phantom_set(200, seed=12)


@pytest.fixture(scope="module")
def trained(train_set) -> C.XrayClassifier:
    return C.train_classifier(train_set, steps=STEPS, seed=0)


def pairwise_auc(scores, labels) -> float:
    """AUC by its definition: the mean over (positive, negative) pairs of 1 when the positive scores higher,
    ½ on a tie, else 0."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels).astype(bool)
    wins = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(s[y], s[~y])]
    return float(np.mean(wins))


def error_message(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, f"error message is not one line: {msg!r}"
    return msg


# ======================================================================= roc_auc
def test_roc_auc_hand_computed_values():
    assert C.roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0  # perfect separation
    assert C.roc_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0  # reversed
    assert C.roc_auc([0.5] * 6, [0, 1, 0, 1, 1, 0]) == 0.5  # all tied
    # positives {0.4, 0.8}, negatives {0.1, 0.4}: 0.4>0.1 (1), 0.4=0.4 (½), 0.8>0.1 (1), 0.8>0.4 (1) → 3.5/4
    assert C.roc_auc([0.1, 0.4, 0.4, 0.8], [0, 0, 1, 1]) == pytest.approx(0.875)
    # positives {0.2, 0.3, 0.7}, negatives {0.3, 0.5}: 0.2 loses both; 0.3 ties 0.3 (½) and loses to 0.5;
    # 0.7 wins both → 2.5/6
    scores, labels = torch.tensor([0.2, 0.3, 0.3, 0.5, 0.7]), torch.tensor([1, 0, 1, 0, 1])
    assert C.roc_auc(scores, labels) == pytest.approx(2.5 / 6)
    # only the order matters: a monotone transform of the scores leaves the AUC unchanged
    assert C.roc_auc(np.exp([0.1, 0.4, 0.4, 0.8]), [False, False, True, True]) == pytest.approx(0.875)


def test_roc_auc_matches_the_pairwise_definition_with_many_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        labels = rng.integers(0, 2, 60)
        scores = np.round(rng.normal(labels * 0.7, 1.0), 1)  # rounded: many ties across the classes
        assert C.roc_auc(scores, labels) == pytest.approx(pairwise_auc(scores, labels), abs=1e-12)


def test_roc_auc_agrees_with_scikit_learn_including_ties():
    roc_auc_score = pytest.importorskip("sklearn.metrics").roc_auc_score
    rng = np.random.default_rng(1)
    for n, decimals in [(7, 1), (40, 0), (200, 1), (1000, 2), (1000, 6)]:  # coarse rounding: ties across classes
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]  # both classes present
        scores = np.round(rng.normal(labels * 0.5, 1.0), decimals)
        assert C.roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12), (n, decimals)
    scores, labels = torch.tensor([0.3, 0.3, 0.3, 0.9, 0.1, 0.9]), torch.tensor([0, 1, 1, 0, 0, 1])
    assert C.roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-12)


def test_roc_auc_refuses_one_class_and_non_binary_labels():
    with pytest.raises(CxrError) as e:
        C.roc_auc([0.1, 0.7, 0.3], [1, 1, 1])
    assert "both classes" in error_message(e)
    with pytest.raises(CxrError) as e:
        C.roc_auc([0.1, 0.7, 0.3], [0, 1, 2])
    assert "binary" in error_message(e)
    with pytest.raises(CxrError) as e:
        C.roc_auc([0.1, 0.7], [0, 1, 0])
    assert "2 scores but 3 labels" in error_message(e)


# ======================================================================= the network
@pytest.mark.parametrize("size", [32, 64, 128, 512])
def test_classifier_takes_any_power_of_two_side(size):
    model = C.XrayClassifier(n_classes=3).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 1, size, size) * 2 - 1)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_classifier_is_small():
    n = sum(p.numel() for p in C.XrayClassifier().parameters())
    assert 50_000 < n < 200_000, n


def test_augmentation_shifts_and_jitters_but_never_flips():
    # a horizontal ramp, dark left → bright right: a flip would turn the left-right difference around
    ramp = torch.linspace(-0.8, 0.8, SIZE).expand(1, 1, SIZE, SIZE).repeat(64, 1, 1, 1)
    out = C._augment(ramp, torch.Generator().manual_seed(0))
    assert out.shape == ramp.shape and out.min() >= -1 and out.max() <= 1
    half = SIZE // 2
    assert (out[..., half:].mean(dim=(1, 2, 3)) > out[..., :half].mean(dim=(1, 2, 3))).all()
    assert not torch.equal(out[0], out[1])  # each image gets its own shift and jitter
    assert torch.equal(out, C._augment(ramp, torch.Generator().manual_seed(0)))  # the generator decides all


def test_batches_are_class_balanced_however_rare_a_class():
    labels = torch.tensor([0] * 95 + [1] * 5)
    idx = C._balanced_sampler(labels, 2)(4000, torch.Generator().manual_seed(0))
    assert idx.min() >= 0 and idx.max() < len(labels)
    share = labels[idx].float().mean().item()
    assert abs(share - 0.5) < 0.03, share
    assert set(idx[labels[idx] == 1].tolist()) == {95, 96, 97, 98, 99}  # every rare image is drawn


# ======================================================================= training
def test_trained_classifier_separates_held_out_phantoms(trained, test_set):
    r = C.evaluate_classifier(trained, test_set)
    print(f"held-out phantoms: AUC {r['auc']:.4f}, accuracy {r['accuracy']:.3f}, {r['per_class_accuracy']}")
    assert r["n"] == 200 and trained.classes == ["normal", "pneumonia"] and not trained.training
    assert r["auc"] > 0.9  # measured 0.997–0.999 over seeds 0–2
    assert r["accuracy"] > 0.8
    assert set(r["per_class_accuracy"]) == {"normal", "pneumonia"}


def uninformative_labels(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """Labels that carry nothing about the true class: half of each true class is called 0, half 1."""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty_like(labels)
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=g)]
        out[members[: len(members) // 2]], out[members[len(members) // 2 :]] = 0, 1
    return out


def test_classifier_trained_on_shuffled_labels_stays_near_chance(train_set, test_set):
    # what the classifier learns from noise is some random feature of the images, and a random feature of a
    # phantom can still correlate with pneumonia: one seed's AUC spread 0.34–0.64 over 8 seeds, so average two
    aucs = []
    for seed in (0, 1):
        model = C.train_classifier(
            train_set.images, uninformative_labels(train_set.labels, seed), steps=STEPS, seed=seed
        )
        aucs.append(C.evaluate_classifier(model, test_set)["auc"])
    print(f"shuffled labels: held-out AUC {aucs}")
    assert abs(np.mean(aucs) - 0.5) < 0.2, aucs


def test_unbalanced_training_set_still_finds_the_rare_class(train_set, test_set):
    pneumonia = (train_set.labels == 1).nonzero().flatten()
    keep = torch.cat([(train_set.labels == 0).nonzero().flatten(), pneumonia[:10]]).sort().values
    rare = train_set.subset(keep)  # 100 normal, 10 pneumonia
    r = C.evaluate_classifier(C.train_classifier(rare, steps=STEPS, seed=0), test_set)
    print(f"100 normal + 10 pneumonia: {r}")
    assert r["per_class_accuracy"]["pneumonia"] > 0.5  # measured 0.70–0.75 over seeds 0–2
    assert r["auc"] > 0.85  # measured 0.93–0.95


def test_training_is_deterministic_and_leaves_the_global_rng_alone(train_set, test_set):
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    a = C.train_classifier(train_set, steps=20, seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    b = C.train_classifier(train_set, steps=20, seed=3)
    c = C.train_classifier(train_set, steps=20, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    pa, pc = C.predict_proba(a, test_set), C.predict_proba(c, test_set)
    assert torch.equal(pa, C.predict_proba(b, test_set)) and not torch.equal(pa, pc)
    assert torch.equal(torch.get_rng_state(), before)


def test_validation_set_returns_the_best_checkpoint(train_set, test_set):
    model = C.train_classifier(train_set, steps=40, seed=0, val=(test_set.images, test_set.labels))
    history = model.val_history
    assert len(history) == C.VAL_CHECKS and history[-1]["step"] == 40
    best = max(h["auc"] for h in history)
    assert C.evaluate_classifier(model, test_set)["auc"] == pytest.approx(best, abs=1e-9)


def test_predict_proba_is_a_distribution_for_uint8_and_float_input(trained, test_set):
    model = trained.train()  # predict_proba must run it in eval mode and give the mode back
    try:
        p8 = C.predict_proba(model, test_set.images[:50], batch=16)
        pf = C.predict_proba(model, test_set.to_float()[:50])
        assert model.training
    finally:
        model.eval()
    assert p8.shape == (50, 2) and p8.device.type == "cpu" and p8.dtype == torch.float32
    assert torch.allclose(p8.sum(1), torch.ones(50), atol=1e-6)
    torch.testing.assert_close(p8, pf, atol=1e-6, rtol=0)  # a generator's float output scores the same


# ======================================================================= class consistency
def test_class_consistency_on_real_images_equals_per_class_accuracy(trained, test_set):
    r = C.evaluate_classifier(trained, test_set)
    everything = C.class_consistency(trained, test_set, test_set.labels)
    assert everything["per_class"] == pytest.approx(r["per_class_accuracy"])
    assert everything["overall"] == pytest.approx(r["accuracy"]) and everything["n"] == 200
    for c, name in enumerate(trained.classes):
        images = test_set.images[test_set.labels == c]
        as_int = C.class_consistency(trained, images, c)
        as_tensor = C.class_consistency(trained, images, torch.full((len(images),), c, dtype=torch.int64))
        assert as_int == as_tensor
        assert as_int["per_class"] == {name: pytest.approx(r["per_class_accuracy"][name])}
        assert as_int["overall"] == pytest.approx(r["per_class_accuracy"][name])
    # calling the normal images "pneumonia" flips the score: consistency is 1 − accuracy there
    normal = test_set.images[test_set.labels == 0]
    assert C.class_consistency(trained, normal, 1)["overall"] == pytest.approx(
        1 - r["per_class_accuracy"]["normal"]
    )


def test_class_names_default_to_indices():
    model = C.XrayClassifier(n_classes=2)
    out = C.class_consistency(model, torch.zeros(4, 1, SIZE, SIZE, dtype=torch.uint8), 1)
    assert set(out["per_class"]) == {"1"}
    with pytest.raises(CxrError) as e:
        C.class_consistency(model, torch.zeros(4, 1, SIZE, SIZE, dtype=torch.uint8), 2)
    assert "out of range" in error_message(e)


class _ByBrightness(nn.Module):
    """A stand-in classifier of 3 classes: class = the image's mean brightness in thirds (perfect on the set
    below), so the multi-class AUC and accuracies have known values."""

    n_classes = 3

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.classes = ["dark", "mid", "bright"]

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([-(m - t).abs() * 10 for t in (-0.66, 0.0, 0.66)], 1) + self.anchor


def test_evaluate_three_classes_uses_mean_one_vs_rest_auc():
    levels = torch.tensor([30, 128, 225] * 4, dtype=torch.uint8)
    images = levels[:, None, None, None].expand(12, 1, 8, 8).clone()
    labels = torch.tensor([0, 1, 2] * 4)
    r = C.evaluate_classifier(_ByBrightness(), images, labels)
    assert (
        r["auc"] == 1.0
        and r["accuracy"] == 1.0
        and r["per_class_accuracy"] == {"dark": 1, "mid": 1, "bright": 1}
    )
    swapped = C.evaluate_classifier(_ByBrightness(), images, torch.tensor([1, 0, 2] * 4))
    # dark↔mid swapped: "bright" is still perfect (AUC 1); dark and mid one-vs-rest AUCs drop below chance
    proba = C.predict_proba(_ByBrightness(), images)
    y = torch.tensor([1, 0, 2] * 4)
    expect = np.mean([C.roc_auc(proba[:, c], y == c) for c in range(3)])
    assert swapped["auc"] == pytest.approx(expect) and swapped["auc"] < 0.75
    assert swapped["per_class_accuracy"] == {"dark": 0, "mid": 0, "bright": 1}


# ======================================================================= errors
def test_training_errors_are_one_helpful_line(train_set):
    x, y = train_set.images, train_set.labels
    with pytest.raises(CxrError) as e:
        C.train_classifier(x, torch.zeros_like(y), steps=1)
    assert "at least 2 classes" in error_message(e)
    with pytest.raises(CxrError) as e:
        C.train_classifier(x, y[:-1], steps=1)
    assert "200 images but 199 labels" in error_message(e)
    with pytest.raises(CxrError) as e:
        C.train_classifier(train_set.to_float(), y, steps=1)
    assert "uint8" in error_message(e) and "float32" in str(e.value)
    with pytest.raises(CxrError) as e:
        C.train_classifier(x, y, classes=["normal", "pneumonia", "covid"], steps=1)
    assert "'covid' has no training images" in error_message(e)
    with pytest.raises(CxrError) as e:
        C.train_classifier(x, y * 2, steps=1)  # labels 0 and 2: class "1" is empty
    assert "'1' has no training images" in error_message(e)
    with pytest.raises(CxrError) as e:
        C.train_classifier(x, y, classes=["normal"], steps=1)
    assert "out of range" in error_message(e)
    with pytest.raises(CxrError) as e:
        C.train_classifier(x, None, steps=1)
    assert "labels are missing" in error_message(e)


# ======================================================================= sensitivity at a fixed specificity
def test_sensitivity_at_specificity_reads_the_negatives_quantile():
    """Ten negatives scoring 0.0…0.9: at 90 % specificity the threshold is the 9th lowest (0.8), so only positives
    above 0.8 count; ties with the threshold go against the test."""
    neg = [i / 10 for i in range(10)]
    pos = [0.85, 0.95, 0.8, 0.3]
    scores, labels = neg + pos, [0] * 10 + [1] * 4
    assert C.sensitivity_at_specificity(scores, labels, 0.9) == pytest.approx(0.5)  # 0.85 and 0.95
    assert C.sensitivity_at_specificity(scores, labels, 0.5) == pytest.approx(0.75)  # above the 5th lowest, 0.4
    assert C.sensitivity_at_specificity([0.1, 0.9], [0, 1], 0.9) == 1.0
    with pytest.raises(CxrError, match="both classes"):
        C.sensitivity_at_specificity([0.1, 0.2], [0, 0])
    with pytest.raises(CxrError, match="specificity"):
        C.sensitivity_at_specificity([0.1, 0.2], [0, 1], 1.0)
