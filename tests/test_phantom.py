"""cxrlib.phantom: deterministic procedural chest X-rays with plausible anatomy, and their folder writer."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrlib.errors import CxrError
from cxrlib.phantom import CLASSES, MASK_NAMES, Phantoms, generate, write_phantoms

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def normal_and_ill():
    """The same 16 patients at 64 px, healthy and with pneumonia (the pneumonia has its own random stream)."""
    healthy = generate(16, 64, seed=5, pneumonia_fraction=0.0, masks=True)
    ill = generate(16, 64, seed=5, pneumonia_fraction=1.0, masks=True)
    return healthy, ill


def _lung_split(lungs: torch.Tensor) -> torch.Tensor:
    """Column between the two lungs of each (N, S, S) mask: the least-lung column of the central third."""
    S = lungs.shape[-1]
    cols = lungs.float().sum(1)
    lo, hi = int(0.35 * S), int(0.65 * S)
    return lo + cols[:, lo:hi].argmin(1)


# --------------------------------------------------------------------------- determinism
def test_same_seed_gives_same_bytes_and_image_i_does_not_depend_on_n():
    a = generate(10, 32, seed=3, masks=True)
    b = generate(5, 32, seed=3, masks=True)
    assert torch.equal(a.images[:5], b.images) and torch.equal(a.labels[:5], b.labels)
    assert all(torch.equal(a.masks[k][:5], b.masks[k]) for k in MASK_NAMES)
    again = generate(10, 32, seed=3, masks=True)
    assert torch.equal(again.images, a.images)
    sliced = a[:5]
    assert isinstance(sliced, Phantoms) and torch.equal(sliced.images, b.images)


def test_prefix_is_stable_across_render_chunks():
    # images are rendered in fixed chunks (16 at 32 px): 20 images span two of them, 3 images one
    a, b = generate(20, 32, seed=1), generate(3, 32, seed=1)
    assert torch.equal(a.images[:3], b.images)
    threads = torch.get_num_threads()
    assert torch.equal(generate(20, 32, seed=1, workers=1).images, a.images)  # parallel chunks: same bytes
    assert torch.get_num_threads() == threads  # rendering gives torch its threads back
    # above 128 px a coarse grid is upsampled: the same bytes again
    assert torch.equal(generate(2, 136, seed=1).images[:1], generate(1, 136, seed=1).images)


def test_different_seeds_give_different_images():
    a, b = generate(4, 32, seed=0), generate(4, 32, seed=1)
    for i in range(4):
        assert not torch.equal(a.images[i], b.images[i])
    assert len({bytes(x.numpy()) for x in a.images}) == 4  # and no two images of a batch are alike


def test_anatomy_seed_keeps_the_masks_and_redraws_the_rest():
    """Another film of the same masks: the masks agree in all but a sliver of pixels, the images differ as much as
    two patients' do outside the masks' shapes; anatomy_seed = seed changes nothing."""
    true = generate(8, 64, seed=3, masks=True)
    other = generate(8, 64, seed=40, masks=True)
    same = generate(8, 64, seed=40, masks=True, anatomy_seed=3)
    for k in MASK_NAMES:
        assert (same.masks[k] != true.masks[k]).float().mean() < 0.005, k
        assert (other.masks[k] != true.masks[k]).float().mean() > 0.01, k  # another patient's masks differ
    assert (same.images.float() - true.images.float()).abs().mean() > 5  # not the same film
    assert torch.equal(same.labels, other.labels)  # pneumonia drawn from seed 40
    again = generate(8, 64, seed=3, masks=True, anatomy_seed=3)
    assert torch.equal(again.images, true.images)


# --------------------------------------------------------------------------- shapes and arguments
@pytest.mark.parametrize("size", [32, 96, 129])
def test_shapes_dtypes_and_classes(size):
    ph = generate(6, size, seed=2, masks=True)
    assert ph.images.shape == (6, 1, size, size) and ph.images.dtype == torch.uint8
    assert ph.labels.shape == (6,) and ph.labels.dtype == torch.int64
    assert ph.classes == CLASSES == ("normal", "pneumonia")
    assert set(ph.masks) == set(MASK_NAMES)
    for m in ph.masks.values():
        assert m.shape == (6, 1, size, size) and m.dtype == torch.bool
    assert 20 < ph.images.float().mean() < 235 and ph.images.float().std() > 20  # not blank, not flat
    x = ph.to_float()
    assert x.dtype == torch.float32 and -1.0 <= x.min() and x.max() <= 1.0


def test_masks_are_none_unless_asked_for():
    assert generate(2, 32).masks is None


def test_pneumonia_fraction_is_exact_in_every_prefix():
    labels = generate(20, 32, seed=4, pneumonia_fraction=0.3).labels
    for n in (5, 10, 20):
        assert abs(int(labels[:n].sum()) - 0.3 * n) < 1.0
    assert generate(6, 32, pneumonia_fraction=0.0).labels.sum() == 0
    assert generate(6, 32, pneumonia_fraction=1.0).labels.sum() == 6


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(n=3, size=31), "size"),
        (dict(n=3, size=1025), "size"),
        (dict(n=3, size=64.5), "size"),
        (dict(n=0, size=32), "number"),
        (dict(n=3, size=32, pneumonia_fraction=-0.1), "fraction"),
        (dict(n=3, size=32, pneumonia_fraction=1.5), "fraction"),
        (dict(n=3, size=32, pneumonia_fraction=math.nan), "fraction"),
    ],
)
def test_bad_arguments_raise_one_clear_line(kwargs, words):
    with pytest.raises(CxrError) as e:
        generate(**kwargs)
    assert words in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------- anatomy
def test_lung_fields_are_darker_than_heart_and_spine(normal_and_ill):
    ph, _ = normal_and_ill
    img = ph.images[:, 0].float()
    lungs, heart = ph.masks["lungs"][:, 0], ph.masks["heart"][:, 0]
    lung_mean = (img * lungs).sum((1, 2)) / lungs.sum((1, 2))
    heart_mean = (img * heart).sum((1, 2)) / heart.sum((1, 2))
    S = img.shape[-1]
    spine_mean = img[:, int(0.3 * S):int(0.6 * S), int(0.48 * S):int(0.52 * S) + 1].mean((1, 2))  # mediastinum
    assert (heart_mean - lung_mean).min() > 40  # grey levels, per image
    assert (spine_mean - lung_mean).min() > 40


def test_masks_cover_plausible_areas(normal_and_ill):
    ph, _ = normal_and_ill
    area = {k: m[:, 0].float().mean((1, 2)) for k, m in ph.masks.items()}
    assert ((area["lungs"] > 0.15) & (area["lungs"] < 0.45)).all()
    assert (area["heart"] > 0.02).all() and (area["heart"] < area["lungs"]).all()
    assert (area["ribs"] > 0.05).all() and (area["clavicles"] > 0.003).all()
    assert (area["clavicles"] < area["ribs"]).all()


def test_heart_lies_right_of_centre_and_right_lung_is_larger(normal_and_ill):
    ph, _ = normal_and_ill
    lungs, heart = ph.masks["lungs"][:, 0], ph.masks["heart"][:, 0].float()
    S = lungs.shape[-1]
    centroid = (heart.sum(1) * torch.arange(S)).sum(1) / heart.sum((1, 2))  # column, px
    assert centroid.mean() > 0.52 * S  # shifted to the image right (the patient's left) ...
    split = _lung_split(lungs)
    assert (centroid > split.float()).all()  # ... of the mediastinum, in every image
    cols = lungs.float().sum(1)
    left = torch.stack([cols[i, : split[i]].sum() for i in range(len(cols))])  # the patient's right lung
    right = torch.stack([cols[i, split[i]:].sum() for i in range(len(cols))])
    assert (left > right).all()


def test_clavicles_lie_in_the_upper_fifth_and_ribs_span_the_lungs(normal_and_ill):
    ph, _ = normal_and_ill
    S = ph.images.shape[-1]
    rows = torch.arange(S).float()
    clav = ph.masks["clavicles"][:, 0].float().sum(2)
    clav_row = (clav * rows).sum(1) / clav.sum(1)
    assert (clav_row < 0.3 * S).all() and (clav_row > 0.05 * S).all()
    ribs_in_lungs = (ph.masks["ribs"] & ph.masks["lungs"]).float().sum((1, 2, 3))
    assert (ribs_in_lungs > 0.2 * ph.masks["lungs"].float().sum((1, 2, 3))).all()


def test_pneumonia_raises_lung_opacity_of_the_same_patients(normal_and_ill):
    healthy, ill = normal_and_ill
    assert (healthy.labels == 0).all() and (ill.labels == 1).all()
    for k in MASK_NAMES:  # same anatomy: the illness comes from its own random stream
        assert torch.equal(healthy.masks[k], ill.masks[k])
    lungs = healthy.masks["lungs"][:, 0]
    mean_in_lungs = [(p.images[:, 0].float() * lungs).sum((1, 2)) / lungs.sum((1, 2)) for p in (healthy, ill)]
    rise = mean_in_lungs[1] - mean_in_lungs[0]
    assert (rise > 1.0).all() and rise.mean() > 5.0
    outside = ~ph_lungs_dilated(lungs)
    same = (healthy.images[:, 0] == ill.images[:, 0])[outside].float().mean()
    assert same > 0.99  # the rest of the film is untouched


def ph_lungs_dilated(lungs: torch.Tensor) -> torch.Tensor:
    """Lung masks grown by two pixels (the film blur carries consolidation a little past the border)."""
    x = lungs[:, None].float()
    return (torch.nn.functional.max_pool2d(x, 5, stride=1, padding=2) > 0)[:, 0]


# --------------------------------------------------------------------------- severity
# sha256 (first 16 hex digits) of generate(24, 64, seed=0, masks=True)'s images, labels and masks, before severity
# existed (main at 3bce00b) and after; the bytes are exact on a given torch version and CPU, so it is checked there.
_DEFAULT_HASH = {("2.14.1+cu130", "AVX512"): "795c5f91eb0487f6"}


def _digest(ph) -> str:
    import hashlib

    d = hashlib.sha256(ph.images.numpy().tobytes() + ph.labels.numpy().tobytes())
    for k in MASK_NAMES:
        d.update(ph.masks[k].numpy().tobytes())
    return d.hexdigest()[:16]


def test_default_phantoms_are_the_bytes_they_were_before_severity_and_severity_1_too():
    default = generate(24, 64, seed=0, masks=True)
    pinned = _DEFAULT_HASH.get((torch.__version__, torch.backends.cpu.get_cpu_capability()))
    if pinned is not None:
        assert _digest(default) == pinned
    for sev in ((1, 1), 1.0, [1.0, 1.0]):
        assert _digest(generate(24, 64, seed=0, masks=True, severity=sev)) == _digest(default)
    # above 128 px (coarse grid upsampled) and with anatomy_seed: (1, 1) is the default, byte for byte
    a = generate(3, 136, seed=4, pneumonia_fraction=1.0, anatomy_seed=2)
    assert torch.equal(generate(3, 136, seed=4, pneumonia_fraction=1.0, anatomy_seed=2, severity=(1, 1)).images,
                       a.images)


def test_milder_severity_is_fainter_in_the_lungs_only_and_keeps_everything_else(normal_and_ill):
    healthy, ill = normal_and_ill
    lungs = healthy.masks["lungs"][:, 0]

    def rise(ph):
        return ((ph.images[:, 0].float() - healthy.images[:, 0].float()) * lungs).sum((1, 2)) / lungs.sum((1, 2))

    mild = generate(16, 64, seed=5, pneumonia_fraction=1.0, masks=True, severity=(0.3, 0.3))
    mid = generate(16, 64, seed=5, pneumonia_fraction=1.0, masks=True, severity=0.6)
    r_mild, r_mid, r_full = rise(mild), rise(mid), rise(ill)
    assert (r_mild > 0).all() and (r_mild < r_mid).all() and (r_mid < r_full).all()  # still there, fainter
    assert torch.equal(mild.labels, ill.labels)
    for k in MASK_NAMES:  # the same patients
        assert torch.equal(mild.masks[k], ill.masks[k])
    outside = ~ph_lungs_dilated(lungs)
    assert (mild.images[:, 0] == ill.images[:, 0])[outside].float().mean() > 0.99
    # normal images carry no finding: a severity changes none of them
    normal = generate(16, 64, seed=5, pneumonia_fraction=0.0, severity=(0.2, 0.4))
    assert torch.equal(normal.images, healthy.images)
    # a range draws each image's severity from it, deterministically; image i does not depend on n
    ranged = generate(16, 64, seed=5, pneumonia_fraction=1.0, severity=(0.3, 0.6))
    assert torch.equal(ranged.images[:5], generate(5, 64, seed=5, pneumonia_fraction=1.0, severity=(0.3, 0.6)).images)
    r_ranged = rise(ranged)
    assert (r_ranged >= r_mild - 0.5).all() and (r_ranged <= r_mid + 0.5).all()
    assert r_ranged.std() > 0


@pytest.mark.parametrize("bad", [(0, 0.5), (0.6, 0.4), (0.5, 1.2), (0.2,), "x", float("nan"), True, -0.1])
def test_bad_severity_is_one_line_error(bad):
    with pytest.raises(CxrError, match="severity") as e:
        generate(2, 32, severity=bad)
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- writing a data set
def test_write_phantoms_layout_manifest_and_masks(tmp_path):
    out = tmp_path / "ph"
    summary = write_phantoms(out, n=6, size=32, seed=3, masks=True)
    assert "6 phantom chest X-rays" in summary and "\n" not in summary
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ph"]  # no temporary folder left beside it
    with open(out / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["index"]) for r in rows] == list(range(6))
    assert {"file", "label", "index", "seed"} <= set(rows[0])
    ph = generate(6, 32, seed=3, masks=True)
    from PIL import Image

    for r in rows:
        i, path = int(r["index"]), out / r["file"]
        assert r["seed"] == "3" and int(r["label"]) == int(ph.labels[i])
        assert path.parent.name == CLASSES[int(r["label"])]
        with Image.open(path) as im:
            assert im.mode == "L" and im.size == (32, 32)
            assert np.array_equal(np.asarray(im), ph.images[i, 0].numpy())  # the PNG holds the exact bytes
        for k in MASK_NAMES:
            with Image.open(out / "masks" / k / path.name) as im:
                assert np.array_equal(np.asarray(im) > 0, ph.masks[k][i, 0].numpy())
    assert len(list((out / "normal").glob("*.png"))) + len(list((out / "pneumonia").glob("*.png"))) == 6


def test_write_phantoms_refuses_a_non_empty_folder_and_leaves_it_alone(tmp_path):
    out = tmp_path / "ph"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(CxrError, match="not empty"):
        write_phantoms(out, n=2, size=32)
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    write_phantoms(empty, n=2, size=32)  # an existing empty folder is fine
    assert (empty / "manifest.csv").exists()


def test_write_phantoms_failing_midway_leaves_nothing_behind(tmp_path, monkeypatch):
    from PIL import Image

    calls = {"n": 0}
    real_save = Image.Image.save

    def flaky_save(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real_save(self, *a, **kw)

    monkeypatch.setattr(Image.Image, "save", flaky_save)
    with pytest.raises(OSError, match="disk full"):
        write_phantoms(tmp_path / "ph", n=6, size=32)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- command line
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "cxrlib", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_cli_phantom_writes_a_data_set_with_masks(tmp_path):
    out = tmp_path / "cli"
    r = _cli("phantom", "--out", str(out), "--n", "6", "--size", "64", "--masks", "--seed", "2")
    assert r.returncode == 0, r.stderr
    assert "6 phantom chest X-rays" in r.stdout
    pngs = sorted((out / "normal").glob("*.png")) + sorted((out / "pneumonia").glob("*.png"))
    assert len(pngs) == 6
    for k in MASK_NAMES:
        assert sorted(p.name for p in (out / "masks" / k).glob("*.png")) == sorted(p.name for p in pngs)
    assert len((out / "manifest.csv").read_text().splitlines()) == 7


def test_cli_phantom_bad_size_is_one_error_line_and_exit_2(tmp_path, capsys):
    from cxrlib.cli import main  # in-process: `python -m cxrlib` exits with what main returns

    assert main(["phantom", "--out", str(tmp_path / "x"), "--n", "2", "--size", "8"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "size" in lines[0]
    assert not (tmp_path / "x").exists()


def test_cli_phantom_severity_writes_the_milder_set_and_says_so(tmp_path):
    from PIL import Image

    from cxrlib.cli import main

    out = tmp_path / "mild"
    assert main(["phantom", "--out", str(out), "--n", "4", "--size", "32", "--seed", "3", "--severity", "0.3-0.5"]) == 0
    files = sorted(out.glob("*/*.png"))
    want = generate(4, 32, seed=3, severity=(0.3, 0.5))
    got = {int(f.stem.split("_")[1]): np.asarray(Image.open(f)) for f in files}
    assert all(np.array_equal(got[i], want.images[i, 0].numpy()) for i in range(4))
    assert main(["phantom", "--out", str(tmp_path / "one"), "--n", "2", "--size", "32", "--severity", "0.4"]) == 0


@pytest.mark.parametrize("bad", ["0.5-0.2", "0-0.5", "0.2-1.5", "mild", "0.1-0.2-0.3", ""])
def test_cli_phantom_bad_severity_is_one_error_line_and_exit_2(tmp_path, capsys, bad):
    from cxrlib.cli import main

    assert main(["phantom", "--out", str(tmp_path / "x"), "--n", "2", "--size", "32", "--severity", bad]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "severity" in lines[0]
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- the grid figure
def test_show_grid_titles_each_image_with_its_class(tmp_path):
    from matplotlib.figure import Figure

    from cxrlib.viz import show_grid

    ph = generate(5, 32, seed=0)
    fig = show_grid(ph.images, ph.labels, ncols=3, title="phantoms")
    assert isinstance(fig, Figure) and fig._suptitle.get_text() == "phantoms"
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 5 and len(fig.axes) == 6  # 2 rows of 3, the spare one blank
    assert [ax.get_title() for ax in shown] == [CLASSES[int(i)] for i in ph.labels]
    fig.savefig(tmp_path / "grid.png")  # headless, no pyplot
    assert (tmp_path / "grid.png").stat().st_size > 1000
    floats = show_grid(ph.to_float())  # float in [-1, 1], no labels
    assert not any(ax.get_title() for ax in floats.axes)
    np.testing.assert_allclose(floats.axes[0].images[0].get_array(), ph.images[0, 0].numpy() / 255.0, atol=1e-6)


# --------------------------------------------------------------------------- the phantom cache on a failing disk
def _disk_full():
    import errno

    return OSError(errno.ENOSPC, "No space left on device")


def _fail_midway(monkeypatch, which: str) -> None:
    """Make the cache's write of ``which`` ("pixels": the images' .npy, "facts": the .json that marks an entry
    complete, "masks": the masks' .npy) write half its bytes to the file and then raise ENOSPC."""
    import io

    real_save, real_write_bytes = np.save, Path.write_bytes

    def save(file, arr, *a, **kw):
        if which == "pixels" and not isinstance(file, io.BytesIO):
            buf = io.BytesIO()
            real_save(buf, arr, *a, **kw)
            file.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            raise _disk_full()
        return real_save(file, arr, *a, **kw)

    def write_bytes(self, data):
        suffix = {"facts": ".json.tmp-", "masks": ".masks.npy.tmp-"}.get(which)
        if suffix and suffix in self.name:
            real_write_bytes(self, bytes(data)[: len(data) // 2])
            raise _disk_full()
        return real_write_bytes(self, data)

    monkeypatch.setattr(np, "save", save)
    monkeypatch.setattr(Path, "write_bytes", write_bytes)


@pytest.mark.parametrize("which", ["pixels", "facts", "masks"])
def test_a_cache_write_failing_midway_leaves_no_entry_a_later_run_would_read(tmp_path, monkeypatch, which):
    """Disk full while the phantom cache is written: the set still comes back, no half-written or temporary
    file is left, and the next run generates the set again (it is not served a partial entry) and caches it."""
    from cxrlib import phantom
    from cxrlib.data import load_dataset

    cache, kw = tmp_path / "cache", {"size": 32, "n": 6, "seed": 3, "masks": which == "masks"}
    expected = generate(6, 32, seed=3, masks=True)
    with monkeypatch.context() as m:
        _fail_midway(m, which)
        got = load_dataset("phantom", cache_dir=cache, **kw)
    assert torch.equal(got.images, expected.images.reshape(6, 1, 32, 32))
    left = sorted(p for p in cache.rglob("*") if p.is_file())
    if which == "facts":  # the pixels were written whole before the .json failed; without it, no entry
        assert [p.suffix for p in left] == [".npy"] and np.load(left[0]).shape == (6, 1, 32, 32)
    else:
        assert left == []  # neither a half-written file nor a temporary one

    calls = []
    real_generate = phantom.generate
    monkeypatch.setattr(phantom, "generate", lambda *a, **k: calls.append(a) or real_generate(*a, **k))
    again = load_dataset("phantom", cache_dir=cache, **kw)
    assert len(calls) == 1 and torch.equal(again.images, got.images)  # generated afresh, not read back half
    third = load_dataset("phantom", cache_dir=cache, **kw)
    assert len(calls) == 1 and torch.equal(third.images, got.images)  # now a complete entry: read from the cache
    if which == "masks":
        assert torch.equal(third.masks, again.masks) and third.masks.shape == (6, len(MASK_NAMES), 32, 32)


def test_the_mild_cases_figure_outlines_each_patients_finding_on_the_last_row_only():
    """cxrlib.viz.mild_cases (notebook 07, benchmarks/utility_curve.py --figure): 4 rows × n patients; the red
    finding outline (where the ill twin is brighter than the healthy one) and the green lungs on every patient of
    the last row and nowhere else."""
    from cxrlib.viz import mild_cases

    def outlined(fig, colour):
        return [sum(1 for c in ax.collections if np.allclose(c.get_edgecolor()[0][:3], colour)) for ax in fig.axes]

    fig = mild_cases((0.3, 0.6), size=48, n=3, seed=7)
    assert len(fig.axes) == 12
    red, green = outlined(fig, (1, 0, 0)), outlined(fig, (0, 1, 0))
    assert sum(red[:9]) == sum(green[:9]) == 0 and all(red[9:]) and all(green[9:])
    assert "severity 0.3" in fig.axes[6].get_ylabel()  # row 3, first column
