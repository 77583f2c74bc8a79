"""cxrlib.data paired (mask, image) and unpaired loading: load_pairs, phantom masks, load_unpaired."""

from __future__ import annotations

import csv
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import snapshot
from PIL import Image

from cxrlib import data, phantom
from cxrlib.errors import CxrError, ImageReadError

N, S = 12, 32


@pytest.fixture(scope="module")
def phantom_src(tmp_path_factory) -> Path:
    """A phantom folder with masks, written once; tests that change it work on a copy."""
    out = tmp_path_factory.mktemp("phantoms") / "ph"
    phantom.write_phantoms(out, N, S, masks=True)
    return out


@pytest.fixture(scope="module")
def generated():
    return phantom.generate(N, S, masks=True)


@pytest.fixture
def ph(phantom_src, tmp_path) -> Path:
    dst = tmp_path / "ph"
    shutil.copytree(phantom_src, dst)
    return dst


def _manifest_index(root: Path) -> dict[str, int]:
    """file stem → generation index, from the manifest write_phantoms writes."""
    with open(root / "manifest.csv", newline="") as fh:
        return {Path(row["file"]).stem: int(row["index"]) for row in csv.DictReader(fh)}


def _save(path: Path, a: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a.astype(np.uint8)).save(path)
    return path


def _rect(h: int, w: int, top: int, bottom: int, left: int, right: int, value: int = 255) -> np.ndarray:
    a = np.zeros((h, w), dtype=np.uint8)
    a[top:bottom, left:right] = value
    return a


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.rglob("*"))}


# --------------------------------------------------------------------------- phantom folders
def test_phantom_folder_pairs_match_the_generator(ph, generated):
    ds = data.load_pairs(ph, S)
    assert len(ds) == N and ds.structures == list(phantom.MASK_NAMES)
    assert ds.masks.shape == (N, 4, S, S) and ds.masks.dtype == torch.uint8
    assert set(torch.unique(ds.masks).tolist()) == {0, 255}
    assert ds.classes == ["normal", "pneumonia"]  # masks/ is not a class of X-rays
    assert not any("/masks/" in p for p in ds.paths)
    index = _manifest_index(ph)
    idx = [index[Path(p).stem] for p in ds.paths]
    assert sorted(idx) == list(range(N))
    for c, name in enumerate(phantom.MASK_NAMES):
        want = generated.masks[name][idx].to(torch.uint8) * 255
        assert torch.equal(ds.masks[:, c : c + 1], want), name
    assert torch.equal(ds.images, generated.images[idx])  # the images travel with their masks
    assert torch.equal(ds.labels, generated.labels[idx])
    assert ds.describe().endswith("classes normal=6 pneumonia=6, masks lungs/heart/ribs/clavicles")


def test_second_load_comes_from_the_cache_and_is_equal(ph, tmp_path):
    cache = tmp_path / "cache"
    a = data.load_pairs(ph, S, cache_dir=cache)
    assert list((cache / "pairs").glob("*.npy"))
    b = data.load_pairs(ph, S, cache_dir=cache)
    assert torch.equal(a.masks, b.masks) and a.paths == b.paths and torch.equal(a.images, b.images)
    # a changed mask file changes the key: the cache never serves stale masks
    m = ph / "masks" / "lungs" / "cxr_00000.png"
    _save(m, np.full((S, S), 255))
    c = data.load_pairs(ph, S, cache_dir=cache)
    row = [Path(p).stem for p in c.paths].index("cxr_00000")
    assert bool((c.masks[row, 0] == 255).all()) and not bool((a.masks[row, 0] == 255).all())


def test_source_folder_is_left_unchanged(ph):
    before, files = _listing(ph), snapshot(ph)
    data.load_pairs(ph, S)
    data.load_pairs(ph, S)  # the cached path too
    data.load_pairs(ph, S, need_images=False)
    assert _listing(ph) == before and snapshot(ph) == files


def test_missing_mask_raises_naming_the_expected_file(ph):
    (ph / "masks" / "heart" / "cxr_00003.png").unlink()
    with pytest.raises(CxrError, match=r"no heart mask for '.*cxr_00003\.png': expected '.*heart/cxr_00003\.png'") as e:
        data.load_pairs(ph, S)
    assert "\n" not in str(e.value)


def test_missing_mask_skipped_with_one_warning(ph):
    (ph / "masks" / "heart" / "cxr_00003.png").unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = data.load_pairs(ph, S, on_error="skip")
    assert len(ds) == N - 1 and ds.masks.shape[0] == N - 1
    assert len(ds.skipped) == 1 and "cxr_00003" in ds.skipped[0][0] and "no heart mask" in ds.skipped[0][1]
    assert not any("cxr_00003" in p for p in ds.paths)
    assert len([w for w in caught if "skipped 1" in str(w.message)]) == 1 and len(caught) == 1


def test_unreadable_mask_raises_or_is_skipped(ph):
    bad = ph / "masks" / "ribs" / "cxr_00005.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match=r"cxr_00005\.png"):
        data.load_pairs(ph, S)
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = data.load_pairs(ph, S, on_error="skip")
    assert len(ds) == N - 1 and ds.skipped == [(str(bad), ds.skipped[0][1])]
    assert not any("cxr_00005" in p for p in ds.paths)


def test_structures_pick_and_order_channels(ph):
    full = data.load_pairs(ph, S)
    two = data.load_pairs(ph, S, structures=["heart", "lungs"])
    assert two.structures == ["heart", "lungs"] and two.masks.shape[1] == 2
    assert torch.equal(two.masks[:, 0], full.masks[:, 1]) and torch.equal(two.masks[:, 1], full.masks[:, 0])
    with pytest.raises(CxrError, match=r"has no 'spleen' masks \(it has: lungs, heart, ribs, clavicles\)$"):
        data.load_pairs(ph, S, structures=["lungs", "spleen"])


def test_structure_order_sorted_by_name_unless_phantom_names(tmp_path):
    img = _rect(16, 16, 2, 14, 2, 14)
    _save(tmp_path / "a" / "x.png", img)
    for name in ("zeta", "alpha"):
        _save(tmp_path / "a" / "masks" / name / "x.png", img)
    assert data.load_pairs(tmp_path / "a", 16).structures == ["alpha", "zeta"]
    _save(tmp_path / "b" / "x.png", img)
    for name in ("heart", "clavicles", "lungs"):
        _save(tmp_path / "b" / "masks" / name / "x.png", img)
    assert data.load_pairs(tmp_path / "b", 16).structures == ["lungs", "heart", "clavicles"]


def test_need_images_false_reads_masks_only(ph):
    full = data.load_pairs(ph, S)
    only = data.load_pairs(ph, S, need_images=False)
    stems = sorted(Path(p).stem for p in full.paths)
    assert only.paths == stems and only.classes == ["masks"]
    assert only.images.shape == (N, 1, S, S) and only.images.dtype == torch.uint8 and not bool(only.images.any())
    assert only.labels.tolist() == [0] * N
    order = [[Path(p).stem for p in full.paths].index(s) for s in stems]
    assert torch.equal(only.masks, full.masks[order])
    # a folder that holds only the masks
    shutil.rmtree(ph / "normal"), shutil.rmtree(ph / "pneumonia")
    alone = data.load_pairs(ph / "masks", S, need_images=False)
    assert alone.paths == stems and torch.equal(alone.masks, only.masks)


def test_subset_and_split_keep_masks(ph):
    ds = data.load_pairs(ph, S)
    sub = ds.subset([3, 1])
    assert torch.equal(sub.masks, ds.masks[[3, 1]]) and sub.structures == ds.structures
    assert sub.paths == [ds.paths[3], ds.paths[1]]
    for part in ds.split((0.5, 0.5, 0.0), seed=1):
        rows = [ds.paths.index(p) for p in part.paths]
        assert torch.equal(part.masks, ds.masks[rows])


def test_no_mask_folder_is_one_line_error_with_the_layout(tmp_path):
    _save(tmp_path / "x" / "normal" / "a.png", _rect(8, 8, 0, 4, 0, 4))
    with pytest.raises(CxrError, match=r"masks/<structure>/<image stem>\.png") as e:
        data.load_pairs(tmp_path / "x", 8)
    assert str(tmp_path / "x" / "masks") in str(e.value) and "\n" not in str(e.value)


def test_duplicate_stems_are_refused_naming_both(tmp_path):
    root = tmp_path / "d"
    _save(root / "normal" / "x.png", _rect(8, 8, 0, 4, 0, 4))
    _save(root / "pneumonia" / "x.png", _rect(8, 8, 0, 4, 0, 4))
    _save(root / "masks" / "lungs" / "x.png", _rect(8, 8, 0, 4, 0, 4))
    with pytest.raises(CxrError, match=r"normal/x\.png.*pneumonia/x\.png"):
        data.load_pairs(root, 8)


# --------------------------------------------------------------------------- real-data layouts
def test_montgomery_left_and_right_masks_become_one_lungs_union(tmp_path):
    mont = tmp_path / "MontgomerySet"
    h = w = 40
    for stem in ("a", "b"):
        _save(mont / "CXR_png" / f"{stem}.png", np.full((h, w), 100))
        _save(mont / "ManualMask" / "leftMask" / f"{stem}.png", _rect(h, w, 4, 36, 4, 16))
        _save(mont / "ManualMask" / "rightMask" / f"{stem}.png", _rect(h, w, 4, 36, 24, 36))
    (mont / "ClinicalReadings").mkdir()
    (mont / "ClinicalReadings" / "a.txt").write_text("normal")
    ds = data.load_pairs(mont / "CXR_png", 20, masks_dir=mont / "ManualMask")
    assert ds.structures == ["lungs"] and ds.masks.shape == (2, 1, 20, 20)
    left = data.decode_square(mont / "ManualMask" / "leftMask" / "a.png", 20)[0] >= 128
    right = data.decode_square(mont / "ManualMask" / "rightMask" / "a.png", 20)[0] >= 128
    assert left.any() and right.any() and not (left & right).any()
    assert np.array_equal(ds.masks[0, 0].numpy(), np.where(left | right, 255, 0))
    # with the set's own folder as root, ManualMask/ is not a class
    whole = data.load_pairs(mont, 20, masks_dir=mont / "ManualMask")
    assert whole.classes == ["CXR_png"] and len(whole) == 2


def test_flat_mask_folder_and_mask_suffix(tmp_path):
    h, w = 24, 24
    for stem in ("CHNCXR_0001_0", "CHNCXR_0002_1"):
        _save(tmp_path / "CXR_png" / f"{stem}.png", np.full((h, w), 90))
        _save(tmp_path / "mask" / f"{stem}_mask.png", _rect(h, w, 2, 20, 2, 10 + int(stem[-1]) * 8))
    ds = data.load_pairs(tmp_path / "CXR_png", 12, masks_dir=tmp_path / "mask")
    assert ds.structures == ["lungs"] and len(ds) == 2
    assert ds.masks[1, 0].sum() > ds.masks[0, 0].sum() > 0  # each image got its own mask
    # a plain flat folder (no _mask suffix)
    for stem in ("CHNCXR_0001_0", "CHNCXR_0002_1"):
        _save(tmp_path / "plain" / f"{stem}.png", _rect(h, w, 2, 20, 2, 10))
    plain = data.load_pairs(tmp_path / "CXR_png", 12, masks_dir=tmp_path / "plain")
    assert torch.equal(plain.masks[0], ds.masks[0]) and not torch.equal(plain.masks[1], ds.masks[1])


@pytest.mark.parametrize("crop", ["center", "pad", "stretch"])
def test_masks_get_the_images_geometry(tmp_path, crop):
    shape = _rect(40, 60, 5, 30, 10, 50)  # non-square: crop/pad/stretch move pixels differently
    _save(tmp_path / "imgs" / "x.png", shape)
    _save(tmp_path / "elsewhere" / "organ" / "x.png", shape)
    ds = data.load_pairs(tmp_path / "imgs", 16, masks_dir=tmp_path / "elsewhere", crop=crop)
    img = ds.images[0, 0].numpy()
    assert np.array_equal(ds.masks[0, 0].numpy(), np.where(img >= 128, 255, 0))
    assert 0 < int((img >= 128).sum()) < 16 * 16


def test_zero_one_masks_are_read_as_0_255(tmp_path):
    _save(tmp_path / "imgs" / "x.png", np.full((16, 16), 80))
    _save(tmp_path / "imgs" / "masks" / "lungs" / "x.png", _rect(16, 16, 0, 16, 0, 8, value=1))
    ds = data.load_pairs(tmp_path / "imgs", 16)
    assert int(ds.masks[0, 0, :, :8].min()) == 255 and int(ds.masks[0, 0, :, 8:].max()) == 0


# --------------------------------------------------------------------------- load_dataset
def test_load_dataset_phantom_masks_equal_the_generator():
    ph = phantom.generate(8, 32, masks=True)
    for _ in range(2):  # generated, then from the cache
        ds = data.load_dataset("phantom", 32, 8, masks=True)
        assert ds.structures == list(phantom.MASK_NAMES) and ds.masks.dtype == torch.uint8
        for c, name in enumerate(phantom.MASK_NAMES):
            assert torch.equal(ds.masks[:, c : c + 1], ph.masks[name].to(torch.uint8) * 255)
        assert torch.equal(ds.images, ph.images)
    plain = data.load_dataset("phantom", 32, 8)
    assert plain.masks is None and plain.structures == [] and torch.equal(plain.images, ph.images)
    assert "masks" not in plain.describe()
    few = data.load_dataset("phantom", 32, 8, masks=True, pneumonia_fraction=1.0, structures=["ribs"])
    assert few.structures == ["ribs"] and few.labels.tolist() == [1] * 8
    assert torch.equal(few.masks, ph.masks["ribs"].to(torch.uint8) * 255)  # same patients, now ill


def test_load_dataset_folder_with_masks(ph):
    ds = data.load_dataset(ph, S, masks=True)
    assert ds.structures == list(phantom.MASK_NAMES) and len(ds) == N
    some = data.load_dataset(ph, S, n=5, masks=True, structures=["lungs"])
    assert len(some) == 5 and some.masks.shape == (5, 1, S, S)
    assert data.load_dataset(ph, S).masks is None
    with pytest.raises(CxrError, match="without masks=True"):
        data.load_dataset(ph, S, masks_dir=ph / "masks")


# --------------------------------------------------------------------------- unpaired
def test_load_unpaired_two_domains(tmp_path):
    a, b = tmp_path / "adults", tmp_path / "children"
    for i in range(3):
        _save(a / ("normal" if i else "pneumonia") / f"a{i}.png", np.full((16, 16), 40))
    for i in range(2):
        _save(b / f"b{i}.png", np.full((16, 16), 200))
    ds = data.load_unpaired(a, b, 8)
    assert ds.classes == ["adults", "children"] and ds.labels.tolist() == [0, 0, 0, 1, 1]
    assert ds.paths[:3] == sorted(str(p) for p in a.rglob("*.png")) and ds.paths[3:] == [str(b / "b0.png"), str(b / "b1.png")]
    assert ds.images[:3].max() < 100 and ds.images[3:].min() > 150
    same_a, same_b = tmp_path / "x" / "data", tmp_path / "y" / "data"
    _save(same_a / "p.png", np.full((8, 8), 1)), _save(same_b / "q.png", np.full((8, 8), 1))
    assert data.load_unpaired(same_a, same_b, 8).classes == ["data_a", "data_b"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(CxrError, match="no images found"):
        data.load_unpaired(a, tmp_path / "empty", 8)


def test_coloured_masks_are_read_as_0_255(tmp_path):
    _save(tmp_path / "imgs" / "x.png", np.full((16, 16), 80))
    red = np.zeros((16, 16, 3), dtype=np.uint8)
    red[:, :8, 0] = 255  # luminance 76: under 128, still the mask
    _save(tmp_path / "imgs" / "masks" / "lungs" / "x.png", red)
    ds = data.load_pairs(tmp_path / "imgs", 16)
    assert int(ds.masks[0, 0, :, :8].min()) == 255 and int(ds.masks[0, 0, :, 8:].max()) == 0


def test_mask_folder_nested_below_a_class_is_not_read_as_images(tmp_path):
    root = tmp_path / "r"
    _save(root / "normal" / "a.png", np.full((16, 16), 80))
    _save(root / "normal" / "seg" / "lungs" / "a.png", _rect(16, 16, 0, 16, 0, 8))
    ds = data.load_pairs(root, 16, masks_dir=root / "normal" / "seg")
    assert ds.paths == [str(root / "normal" / "a.png")] and ds.classes == ["normal"]
