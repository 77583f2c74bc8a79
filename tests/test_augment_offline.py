"""The seed's offline augmentation: parameter ranges, pixel statistics, JPEG quality, augment_folder's safety."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from conftest import pil_image, snapshot
from PIL import Image

from cxrlib.augment import augment_folder, original_augment, original_augment_params
from cxrlib.errors import CxrError, ImageReadError


def _textured(h: int = 64, w: int = 64) -> np.ndarray:
    """Smooth mid-range values (0.3–0.7): no clipping after ±0.1 brightness and ×1.1 contrast."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    return 0.5 + 0.2 * np.sin(2 * np.pi * 2 * xx) * np.cos(2 * np.pi * yy)


def _jpeg_tables(quality: int):
    buf = io.BytesIO()
    Image.new("L", (16, 16), 128).save(buf, "JPEG", quality=quality)
    return Image.open(buf).quantization


def test_parameters_stay_in_the_seed_ranges_and_vary():
    rng = np.random.default_rng(0)
    draws = [original_augment_params(rng) for _ in range(400)]
    b = np.array([d["brightness"] for d in draws])
    c = np.array([d["contrast"] for d in draws])
    q = np.array([d["jpeg_quality"] for d in draws])
    assert b.min() >= -0.1 and b.max() <= 0.1 and b.min() < -0.08 and b.max() > 0.08
    assert c.min() >= 0.9 and c.max() <= 1.1 and c.min() < 0.92 and c.max() > 1.08
    assert set(q.tolist()) == set(range(90, 101))  # 90..100 inclusive, every value reachable


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_brightness_and_contrast_change_mean_and_spread_as_drawn(seed):
    img = pil_image(_textured())
    params = original_augment_params(np.random.default_rng(seed))
    out = original_augment(img, np.random.default_rng(seed))  # draws the same parameters first
    x = np.asarray(img, dtype=np.float64)
    y = np.asarray(out, dtype=np.float64)
    assert out.mode == "L" and out.size == img.size and out.format == "JPEG"
    assert y.mean() - x.mean() == pytest.approx(params["brightness"] * 255, abs=1.0)
    assert y.std() / x.std() == pytest.approx(params["contrast"], abs=0.02)


def test_same_generator_state_gives_same_image_and_narrow_ranges_are_respected():
    img = pil_image(_textured())
    a = np.asarray(original_augment(img, np.random.default_rng(7)))
    b = np.asarray(original_augment(img, np.random.default_rng(7)))
    assert np.array_equal(a, b)
    rng = np.random.default_rng(0)
    for _ in range(5):  # no brightness change, no contrast change: only JPEG at quality 100 remains
        out = np.asarray(original_augment(img, rng, brightness=0.0, contrast=(1.0, 1.0), jpeg_quality=(100, 100)))
        assert np.abs(out.astype(int) - np.asarray(img, dtype=int)).max() <= 2


def test_any_mode_is_augmented_as_grayscale():
    for mode in ("RGB", "I;16", "P"):
        out = original_augment(pil_image(_textured(32, 48), mode), np.random.default_rng(0))
        assert out.mode == "L" and out.size == (48, 32)


# --------------------------------------------------------------------------- augment_folder
def test_folder_gets_originals_plus_k_copies_with_recorded_jpeg_quality(tmp_path, image_folder, make_dicom):
    make_dicom(image_folder / "pneumonia" / "p3.dcm", np.tile(np.arange(48, dtype=np.uint16) * 80, (32, 1)))
    before = snapshot(image_folder)
    summary = augment_folder(image_folder, tmp_path / "aug", copies=3, seed=1)
    out = snapshot(tmp_path / "aug")
    for rel, blob in before.items():  # originals unchanged, byte for byte
        assert out[rel] == blob
    copies = sorted(k for k in out if "_aug" in k)
    assert len(copies) == 5 * 3 and "normal/n1_aug1.jpg" in copies and "pneumonia/p3_aug3.jpg" in copies
    with open(tmp_path / "aug" / "augmentations.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["file"] for r in rows) == copies
    for r in rows:  # each copy really is a JPEG at the recorded quality, from the recorded source
        im = Image.open(tmp_path / "aug" / r["file"])
        assert im.format == "JPEG" and im.mode == "L"
        assert 90 <= int(r["jpeg_quality"]) <= 100 and im.quantization == _jpeg_tables(int(r["jpeg_quality"]))
        assert abs(float(r["brightness"])) <= 0.1 and 0.9 <= float(r["contrast"]) <= 1.1
        assert r["file"].startswith(r["source"].rsplit(".", 1)[0] + "_aug")
    assert "5 originals + 15 copies" in summary and snapshot(image_folder) == before


def test_copies_are_deterministic_per_seed(tmp_path, image_folder):
    augment_folder(image_folder, tmp_path / "a", copies=2, seed=5)
    augment_folder(image_folder, tmp_path / "b", copies=2, seed=5)
    augment_folder(image_folder, tmp_path / "c", copies=2, seed=6)
    a, b, c = (snapshot(tmp_path / k) for k in "abc")
    assert a == b
    assert a["normal/n1_aug1.jpg"] != c["normal/n1_aug1.jpg"]
    assert a["normal/n1_aug1.jpg"] != a["normal/n1_aug2.jpg"]


def test_augment_refuses_to_write_into_source_or_around_it(tmp_path, image_folder):
    before = snapshot(image_folder)
    for dst in (image_folder, image_folder / "normal", image_folder / "sub" / "aug"):
        with pytest.raises(CxrError, match="refusing to write into the source"):
            augment_folder(image_folder, dst, copies=1)
    with pytest.raises(CxrError, match="inside the destination"):
        augment_folder(image_folder / "normal", image_folder, copies=1)
    assert snapshot(image_folder) == before
    with pytest.raises(CxrError, match="copies"):
        augment_folder(image_folder, tmp_path / "x", copies=-1)
    assert not (tmp_path / "x").exists()


def test_bad_file_stops_without_partial_output_or_is_skipped(tmp_path, image_folder):
    (image_folder / "pneumonia" / "p9.jpg").write_bytes(b"")
    before = snapshot(image_folder)
    with pytest.raises(ImageReadError, match=r"p9\.jpg.*empty file"):
        augment_folder(image_folder, tmp_path / "aug", copies=2)
    assert not (tmp_path / "aug").exists()
    with pytest.warns(UserWarning, match="skipped 1"):
        summary = augment_folder(image_folder, tmp_path / "aug", copies=2, on_error="skip")
    assert "4 originals + 8 copies" in summary and "skipped 1 unreadable: p9.jpg" in summary
    assert not (tmp_path / "aug" / "pneumonia" / "p9.jpg").exists()
    assert snapshot(image_folder) == before


def test_zero_copies_copies_the_originals_only(tmp_path, image_folder):
    augment_folder(image_folder, tmp_path / "aug", copies=0)
    files = set(snapshot(tmp_path / "aug"))
    assert files == set(snapshot(image_folder)) | {"augmentations.csv"}


def test_output_name_collision_is_refused_before_writing(tmp_path, make_image):
    make_image(tmp_path / "src" / "a.png")
    make_image(tmp_path / "src" / "a_aug1.jpg")
    with pytest.raises(CxrError, match="would both write 'a_aug1.jpg'"):
        augment_folder(tmp_path / "src", tmp_path / "out", copies=1)
    assert not (tmp_path / "out").exists()
