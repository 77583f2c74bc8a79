"""KID (kernel Inception distance, Bińkowski et al. 2018) beside FID: unbiased, usable at a few hundred images, the
same as torchmetrics on the same features, in the random-CNN, Inception (weights on disk) or any feature space."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cxrlib import metrics as M
from cxrlib.errors import CxrError
from cxrlib.phantom import generate

SIZE = 32


@pytest.fixture(scope="module")
def sets():
    """Three sets of 300 phantoms at 32 px: two from one distribution, and the second one blurred."""
    a, b = generate(300, SIZE, seed=11).images, generate(300, SIZE, seed=12).images
    blurred = F.avg_pool2d(b.float(), 3, 1, 1, count_include_pad=False).round().to(torch.uint8)
    return a, b, blurred


def test_subset_size_works_at_the_course_set_sizes():
    assert M.kid_subset_size(500, 500) == 250 and M.kid_subset_size(500, 2000) == 250
    assert M.kid_subset_size(2000, 2000) == 1000 and M.kid_subset_size(10_000, 5_000) == M.KID_MAX_SUBSET
    f = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    k = M.kid_from_features(f[:250], f[250:], subsets=5)
    assert k["subset_size"] == 125 and k["subsets"] == 5 and k["std"] > 0  # subsets differ: a spread to report
    with pytest.raises(CxrError, match="subset size 300"):
        M.kid_from_features(f[:250], f[250:], subset_size=300)


def test_kid_is_near_zero_for_one_distribution_and_clearly_positive_for_a_shifted_one(sets):
    a, b, blurred = sets
    same, shifted = M.kid(a, b, seed=0), M.kid(a, blurred, seed=0)
    assert same["features"] == "random-cnn" and same["subset_size"] == 150 and same["subsets"] == M.KID_SUBSETS
    assert abs(same["mean"]) <= same["std"]
    assert shifted["mean"] > 5 * shifted["std"] and shifted["mean"] > 20 * abs(same["mean"])
    assert M.kid(a, b, seed=0) == same  # seeded: the same subsets, the same figures


def test_kid_is_unbiased_so_it_goes_below_zero_for_one_distribution():
    g = torch.Generator().manual_seed(1)
    estimates = torch.tensor([M.kid_from_features(torch.randn(60, 16, generator=g), torch.randn(60, 16, generator=g),
                                                  subsets=1, subset_size=60)["mean"] for _ in range(40)])
    assert (estimates < 0).sum() >= 5  # a biased (V-statistic) estimate would never be
    assert abs(estimates.mean()) < 3 * estimates.std() / len(estimates) ** 0.5


def test_kid_matches_torchmetrics_on_the_same_features():
    pytest.importorskip("torchmetrics")
    from torchmetrics.image.kid import KernelInceptionDistance

    g = torch.Generator().manual_seed(2)
    f_real, f_fake = torch.randn(200, 32, generator=g).double(), (torch.randn(150, 32, generator=g) + 0.2).double()
    for seed, size in ((0, 100), (5, 150)):
        ours = M.kid_from_features(f_real, f_fake, subsets=20, subset_size=size, seed=seed)
        metric = KernelInceptionDistance(feature=torch.nn.Identity(), subsets=20, subset_size=size)
        metric.update(f_real, real=True)
        metric.update(f_fake, real=False)
        torch.manual_seed(seed)  # torchmetrics draws its subsets from torch's global generator
        mean, std = metric.compute()
        assert ours["mean"] == pytest.approx(float(mean), rel=1e-9, abs=1e-12)
        assert ours["std"] == pytest.approx(float(std), rel=1e-9, abs=1e-12)


def test_kid_in_a_feature_space_you_bring(sets):
    a, b, _ = sets
    brighter = (b[:200].int() + 20).clamp(0, 255).to(torch.uint8)  # what 4×4 averages see (blur they do not)

    def pooled(x):  # stands for a chest-X-ray network's features (float in [-1, 1] in, (B, D) out)
        assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
        return F.adaptive_avg_pool2d(x, 4).flatten(1)

    same, shifted = M.kid(a, b, features=pooled), M.kid(a, brighter, features=pooled)
    assert same["features"] == "pooled" and shifted["subset_size"] == 100
    assert shifted["mean"] > max(abs(same["mean"]), same["std"])
    with pytest.raises(CxrError, match="unknown feature space"):
        M.kid(a, b, features="imagenet")


def test_inception_kid_without_weights_is_one_line_saying_how(sets, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(M.FID_WEIGHTS_ENV, raising=False)
    a, b, _ = sets
    with pytest.raises(CxrError) as caught:
        M.kid(a, b, features="inception")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("Inception features unavailable")
    result = M.evaluate(a[:40], b[:40], n_pairs=20)
    assert result["fid"] is None and set(result["kid"]) == {"random-cnn"}
    assert result["kid_skipped"].startswith("Inception KID skipped") and "\n" not in result["kid_skipped"]
    table = M.summary_table(result)
    lines = {line.split("  ")[0]: line for line in table.splitlines()}
    assert "KID ×1e3 random CNN" in lines and "skipped" in lines["KID Inception"] and "FID" in lines["KID Inception"]


def test_evaluate_reports_fid_and_kid_on_one_pass_of_inception(sets, tmp_path, monkeypatch):
    """Inception's path end to end, offline: torch-fidelity's network with random weights stands in for the real
    ones (the same network, initialised from one seed); FID must equal torchmetrics' own FID on that network."""
    pytest.importorskip("torchmetrics")
    pytest.importorskip("torch_fidelity")
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torchmetrics.image.fid import FrechetInceptionDistance

    weights = tmp_path / M.FID_WEIGHTS_NAME
    torch.save({}, weights)
    monkeypatch.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state, *a, **k: None)
    real_init = FeatureExtractorInceptionV3.__init__

    def seeded_init(self, *args, **kwargs):  # every construction gets the same random weights
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            real_init(self, *args, **kwargs)

    monkeypatch.setattr(FeatureExtractorInceptionV3, "__init__", seeded_init)
    a, b, _ = sets
    real, fake = a[:8], b[:8]
    result = M.evaluate(real, fake, n_pairs=10, fid_weights=weights)
    assert result["fid_skipped"] is None and result["kid_skipped"] is None
    assert set(result["kid"]) == {"random-cnn", "inception"} and result["kid"]["inception"]["subset_size"] == 4
    reference = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights))
    reference.update(real.repeat(1, 3, 1, 1), real=True)
    reference.update(fake.repeat(1, 3, 1, 1), real=False)
    assert result["fid"] == pytest.approx(float(reference.compute()), rel=1e-4)
    assert "KID ×1e3 Inception" in M.summary_table(result)


def test_evaluate_embeds_each_set_once_in_the_random_cnn_space(sets, monkeypatch):
    """Precision/recall and KID share one pass of the random CNN, and give what the two functions give alone."""
    from cxrlib.metrics import evaluation, feature_space

    a, b, _ = sets
    real, fake = a[:40], b[:40]
    pr, alone = M.precision_recall(real, fake), M.kid(real, fake)
    calls, original = [], feature_space.features

    def counted(x, **kwargs):
        calls.append(len(x))
        return original(x, **kwargs)

    monkeypatch.setattr(feature_space, "features", counted)
    monkeypatch.setattr(evaluation, "features", counted)
    result = M.evaluate(real, fake, n_pairs=20)
    assert calls == [40, 40]  # real, fake: once each
    assert result["precision_recall"] == {key: v for key, v in pr.items() if key != "warnings"}
    assert result["warnings"] == pr["warnings"]
    assert result["kid"]["random-cnn"] == {key: alone[key] for key in ("mean", "std", "subsets", "subset_size")}


def test_one_embed_helper_and_skip_reasons_named_by_their_caller(sets, tmp_path):
    a, _, _ = sets

    def pooled(x):
        return F.adaptive_avg_pool2d(x, 4)

    whole = M.embed(pooled, a[:50])
    assert whole.shape == (50, 16) and whole.dtype == torch.float32
    assert torch.equal(M.embed(pooled, a[:50], batch=7), whole)  # the batch changes nothing
    missing = tmp_path / "missing.pth"
    fid_reason, kid_reason = M.fid_skip_reason(missing), M.fid_skip_reason(missing, what="Inception KID skipped")
    assert fid_reason.startswith("FID skipped: ") and kid_reason == "Inception KID skipped: " + fid_reason[13:]


def test_the_report_figure_shows_kid_beside_fid_with_its_spread(sets, tmp_path, monkeypatch):
    """``evaluate --report``'s key numbers: KID ×1e3 in each space under FID, mean ± std; Inception's skipped like
    FID when its weights are not on disk. Tiny sets: 16 against 16 (subsets of 8)."""
    import io

    from cxrlib import viz

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(M.FID_WEIGHTS_ENV, raising=False)
    a, _, blurred = sets
    result = M.evaluate(a[:16], blurred[:16], n_pairs=8)
    fig = viz.evaluation_report(a[:16], blurred[:16], result)
    [numbers] = [t.get_text() for ax in fig.axes for t in ax.texts if "FID" in t.get_text()]
    lines = numbers.splitlines()
    k = result["kid"]["random-cnn"]
    assert k["subset_size"] == 8
    fid = next(i for i, line in enumerate(lines) if line.startswith("FID"))
    assert lines[fid:fid + 4] == ["FID          skipped", "KID ×1e3",
                                  f"  random CNN {1e3 * k['mean']:8.2f} ± {1e3 * k['std']:.2f}",
                                  "  Inception  skipped"]
    fig.savefig(io.BytesIO(), format="png", dpi=50)  # it draws
    result["kid"]["custom"], result["kid_skipped"] = dict(k, mean=-0.0012), None  # a feature space you bring
    assert viz._key_numbers(result).splitlines()[fid + 2:] == [
        f"  random CNN {1e3 * k['mean']:8.2f} ± {1e3 * k['std']:.2f}", f"  custom        -1.20 ± {1e3 * k['std']:.2f}"]
