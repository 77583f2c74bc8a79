"""cxrlib.data: formats and modes, DICOM intensities, bad input, cache, crop, split, MedMNIST, inspect, prepare."""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import gradient, snapshot
from PIL import Image

from cxrlib import data
from cxrlib.errors import CxrError, ImageReadError


def _corr_with_gradient(a: np.ndarray) -> float:
    """Correlation of an (H, W) image's column means with a left-to-right ramp."""
    cols = a.mean(axis=0)
    return float(np.corrcoef(cols, np.arange(len(cols)))[0, 1])


# --------------------------------------------------------------------------- formats and modes
PIL_CASES = [
    ("L", "png"), ("L", "jpg"), ("L", "bmp"), ("L", "tif"),
    ("RGB", "jpg"), ("RGB", "png"), ("RGBA", "png"), ("LA", "png"), ("P", "png"), ("P", "bmp"),
    ("CMYK", "jpg"), ("CMYK", "tif"), ("1", "png"), ("1", "bmp"),
    ("I;16", "png"), ("I;16", "tif"), ("I", "tif"), ("F", "tif"),
]  # fmt: skip


@pytest.mark.parametrize("mode,ext", PIL_CASES, ids=[f"{m}-{e}" for m, e in PIL_CASES])
def test_every_format_and_mode_reads_as_the_same_gray_gradient(tmp_path, make_image, mode, ext):
    path = make_image(tmp_path / f"img.{ext}", mode=mode)
    stored = Image.open(path).mode  # the file really is stored in that mode (Pillow 10.0 opens a 16-bit PNG as "I")
    assert stored == mode or (mode, ext, stored) == ("I;16", "png", "I")
    a = data.read_image(path)
    assert a.dtype == np.float32 and a.shape == (32, 48)
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert _corr_with_gradient(a) > 0.97
    assert a[:, :4].mean() < 0.15 and a[:, -4:].mean() > 0.85  # full range: dark left, bright right


@pytest.mark.parametrize("peak", [4095, 65535])
def test_16bit_images_are_scaled_not_clipped(tmp_path, peak):
    ramp = np.tile(np.linspace(0, peak, 256), (4, 1)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "wide.png")
    a = data.read_image(tmp_path / "wide.png")
    assert a.min() == 0.0 and a.max() == 1.0
    assert len(np.unique(np.rint(a * 255))) > 250  # every 8-bit level used: no clipping at 255
    u8, _ = data.decode_square(tmp_path / "wide.png", 4, crop="stretch")
    assert u8[:, 0].max() < 40 and u8[:, -1].min() > 215


def test_exif_orientation_is_honoured(tmp_path, make_image):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = make_image(tmp_path / "phone.jpg", values=gradient(48, 32), exif=exif.tobytes(), quality=95)
    a = data.read_image(path)
    assert a.shape == (48, 32)  # width and height swapped
    rows = a.mean(axis=1)
    assert rows[:4].mean() < 0.15 and rows[-4:].mean() > 0.85  # the dark left edge is now the top


def test_mode_pillow_cannot_map_to_gray_is_refused_naming_the_file():
    class Odd:
        mode = "XYZ;7"

    with pytest.raises(ImageReadError, match=r"'scan\.tif'.*unsupported image mode 'XYZ;7'"):
        data._to_gray(Odd(), "scan.tif")


# --------------------------------------------------------------------------- DICOM
def test_dicom_rescale_slope_intercept_and_window(tmp_path, make_dicom):
    stored = np.tile(np.arange(0, 1001, dtype=np.uint16), (4, 1))  # stored values 0..1000
    # modality LUT: HU = 2·stored − 1000 → −1000..1000; window [−500, 500] → stored 250 black, 750 white
    path = make_dicom(
        tmp_path / "ct.dcm", stored, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=0, WindowWidth=1000
    )
    a = data.read_image(path)[0]
    assert a[:240].max() == 0.0 and a[760:].min() == 1.0
    assert a[500] == pytest.approx(0.5, abs=0.01)  # stored 500 → HU 0 → the window's centre
    assert a[375] == pytest.approx(0.25, abs=0.01)


def test_dicom_voi_lut_sequence_is_applied(tmp_path, make_dicom):
    from pydicom.dataset import Dataset

    lut = Dataset()
    lut.LUTDescriptor = [256, 0, 8]  # 256 entries, first input value 0, 8-bit output
    lut.LUTData = np.rint(255 * (np.arange(256) / 255) ** 2).astype("<u2").tobytes()  # a curve: squares the input
    stored = np.tile(np.arange(256, dtype=np.uint16), (2, 1))
    a = data.read_image(make_dicom(tmp_path / "lut.dcm", stored, BitsStored=8, HighBit=7, VOILUTSequence=[lut]))[0]
    np.testing.assert_allclose(a, (np.arange(256) / 255) ** 2, atol=0.003)  # not the linear ramp it stores


def test_dicom_without_window_uses_its_own_range(tmp_path, make_dicom):
    stored = np.tile(np.arange(100, 3101, 3, dtype=np.uint16), (2, 1))
    a = data.read_image(make_dicom(tmp_path / "dx.dcm", stored))[0]
    assert a[0] == 0.0 and a[-1] == 1.0 and np.all(np.diff(a) > 0)


def test_dicom_monochrome1_is_inverted(tmp_path, make_dicom):
    stored = np.tile(np.arange(0, 4000, 40, dtype=np.uint16), (2, 1))
    m2 = data.read_image(make_dicom(tmp_path / "m2.dcm", stored))
    m1 = data.read_image(make_dicom(tmp_path / "m1.dcm", stored, PhotometricInterpretation="MONOCHROME1"))
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)
    assert m1[0, 0] == 1.0  # lowest stored value is white in MONOCHROME1


def test_dicom_multiframe_uses_first_frame_with_a_warning(tmp_path, make_dicom):
    frames = np.stack([np.tile(np.arange(64, dtype=np.uint16) * 10, (8, 1)), np.full((8, 64), 7, np.uint16)])
    path = make_dicom(tmp_path / "cine.dcm", frames)
    with pytest.warns(UserWarning, match=r"multi-frame DICOM \(2 frames\), using the first"):
        a = data.read_image(path)
    assert a.shape == (8, 64) and _corr_with_gradient(a) > 0.99  # frame 0 (the ramp), not the flat frame 1


def test_dicom_found_by_content_without_extension_or_preamble(tmp_path, make_dicom):
    ramp = np.tile(np.arange(0, 960, 20, dtype=np.uint16), (32, 1))
    no_ext = make_dicom(tmp_path / "d" / "IM0001", ramp)
    stripped = make_dicom(tmp_path / "d" / "IM0002.dcm", ramp, preamble=False)
    assert no_ext.read_bytes()[128:132] == b"DICM" and stripped.read_bytes()[128:132] != b"DICM"
    ds = data.load_images(tmp_path / "d", 16, cache=False)
    assert len(ds) == 2
    assert _corr_with_gradient(ds.images[0, 0].numpy().astype(float)) > 0.99
    torch.testing.assert_close(ds.images[0], ds.images[1])


def test_dicom_folder_loads_alongside_pngs(tmp_path, make_image, make_dicom):
    make_image(tmp_path / "src" / "a" / "x.png")
    make_dicom(tmp_path / "src" / "b" / "y.dcm", np.tile(np.arange(48, dtype=np.uint16) * 80, (32, 1)))
    ds = data.load_images(tmp_path / "src", 16, cache=False)
    assert ds.classes == ["a", "b"] and ds.labels.tolist() == [0, 1]
    # same gradient through both paths (DICOM min-max maps 0..3760 to 0..255 like the 8-bit PNG)
    assert (ds.images[0].int() - ds.images[1].int()).abs().max() <= 6


# --------------------------------------------------------------------------- bad input
BAD_KINDS = {
    "truncated_jpeg": ("n3.jpg", "truncated"),
    "truncated_png": ("n3.png", "truncated"),
    "text_as_png": ("n3.png", "not an image"),
    "empty_file": ("n3.jpeg", "empty file"),
    "unsupported_format": ("n3.tif", "not an image (or a format Pillow cannot read)"),
    "dicom_without_pixels": ("n3.dcm", "without pixel data"),
}


def _write_bad(folder, kind: str, make_image, make_dicom):
    name, _ = BAD_KINDS[kind]
    path = folder / "normal" / name
    if kind.startswith("truncated"):
        good = make_image(folder / f"tmp.{name.split('.')[-1]}", values=np.random.default_rng(0).random((64, 64)))
        raw = good.read_bytes()
        good.unlink()
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "text_as_png":
        path.write_text("this is not a picture\n" * 20)
    elif kind == "empty_file":
        path.write_bytes(b"")
    elif kind == "unsupported_format":
        path.write_bytes(b"%PDF-1.4\n" + b"0" * 400)
    elif kind == "dicom_without_pixels":
        make_dicom(path, np.zeros((4, 4)))
        import pydicom

        ds = pydicom.dcmread(path)
        del ds.PixelData
        ds.save_as(path)
    return path


@pytest.mark.parametrize("kind", list(BAD_KINDS))
def test_bad_file_raises_naming_it_by_default(image_folder, make_image, make_dicom, kind):
    bad = _write_bad(image_folder, kind, make_image, make_dicom)
    before = snapshot(image_folder)
    with pytest.raises(ImageReadError) as e:
        data.load_images(image_folder, 16)
    msg = str(e.value)
    assert str(bad) in msg and BAD_KINDS[kind][1] in msg and "\n" not in msg
    assert e.value.path == str(bad)
    assert snapshot(image_folder) == before


@pytest.mark.parametrize("kind", list(BAD_KINDS))
def test_bad_file_is_skipped_counted_and_warned_once(image_folder, make_image, make_dicom, kind):
    bad = _write_bad(image_folder, kind, make_image, make_dicom)
    before = snapshot(image_folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = data.load_images(image_folder, 16, on_error="skip")
    skip_warnings = [w for w in caught if "skipped" in str(w.message)]
    assert len(skip_warnings) == 1 and "skipped 1 unreadable" in str(skip_warnings[0].message)
    assert len(ds) == 4 and str(bad) not in ds.paths
    assert [p for p, _ in ds.skipped] == [str(bad)] and BAD_KINDS[kind][1] in ds.skipped[0][1]
    assert "1 unreadable file skipped" in ds.describe()
    assert snapshot(image_folder) == before  # byte-for-byte, and no cache or temp file inside


def test_mixed_folder_stops_at_first_bad_file_in_order_and_skip_lists_all(image_folder, make_image, make_dicom):
    (image_folder / "normal" / "a_empty.png").write_bytes(b"")
    (image_folder / "pneumonia" / "z_text.jpg").write_text("nope")
    _write_bad(image_folder, "truncated_jpeg", make_image, make_dicom)
    with pytest.raises(ImageReadError, match="a_empty.png"):
        data.load_images(image_folder, 16, cache=False)
    with pytest.warns(UserWarning, match=r"skipped 3 unreadable file\(s\) of 7: .*a_empty.png: empty file"):
        ds = data.load_images(image_folder, 16, on_error="skip", cache=False)
    assert len(ds) == 4 and len(ds.skipped) == 3


def test_no_readable_images_is_a_clear_error(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.png").write_bytes(b"")
    (tmp_path / "d" / "b.jpg").write_text("x")
    with pytest.warns(UserWarning), pytest.raises(CxrError, match="no readable images"):
        data.load_images(tmp_path / "d", 16, on_error="skip")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "notes.txt").write_text("x")
    with pytest.raises(CxrError, match="no images found"):
        data.load_images(tmp_path / "e", 16)
    with pytest.raises(CxrError, match="folder not found"):
        data.load_images(tmp_path / "missing", 16)


def test_classes_from_first_subfolder_and_non_images_ignored(tmp_path, make_image):
    make_image(tmp_path / "d" / "normal" / "deep" / "er" / "a.png")
    make_image(tmp_path / "d" / "pneumonia" / "b.png")
    make_image(tmp_path / "d" / "masks" / "lungs" / "b.png")  # phantom --masks output: not a class
    (tmp_path / "d" / "manifest.csv").write_text("file,label\n")
    make_image(tmp_path / "d" / ".ipynb_checkpoints" / "c.png")
    ds = data.load_images(tmp_path / "d", 8, cache=False)
    assert ds.classes == ["normal", "pneumonia"] and ds.labels.tolist() == [0, 1]
    make_image(tmp_path / "flat" / "x.png")
    make_image(tmp_path / "flat" / "y.jpg")
    flat = data.load_images(tmp_path / "flat", 8, cache=False)
    assert flat.classes == ["flat"] and flat.labels.tolist() == [0, 0]


# --------------------------------------------------------------------------- crop modes
def _bands(tmp_path):
    """A folder with one 60x20 image: black | mid gray | white vertical bands, 20 px each."""
    a = np.zeros((20, 60), dtype=np.uint8)
    a[:, 20:40], a[:, 40:] = 128, 255
    (tmp_path / "wide").mkdir(exist_ok=True)
    Image.fromarray(a).save(tmp_path / "wide" / "w.png")
    return tmp_path / "wide"


def test_crop_center_keeps_the_middle_square(tmp_path):
    img = data.load_images(_bands(tmp_path), 30, crop="center", cache=False).images[0, 0].int()
    assert img.shape == (30, 30)
    assert (img[:, 2:-2] - 128).abs().max() <= 2  # only the middle band survives


def test_crop_pad_letterboxes_with_black(tmp_path):
    img = data.load_images(_bands(tmp_path), 30, crop="pad", cache=False).images[0, 0].int()
    assert img[:10].max() == 0 and img[20:].max() == 0  # 30x10 content, centred
    row = img[15]
    assert row[:8].max() <= 2 and (row[12:18] - 128).abs().max() <= 2 and row[-8:].min() >= 253


def test_crop_stretch_keeps_all_three_bands(tmp_path):
    img = data.load_images(_bands(tmp_path), 30, crop="stretch", cache=False).images[0, 0].int()
    assert img[:, :8].max() <= 2 and (img[:, 12:18] - 128).abs().max() <= 2 and img[:, -8:].min() >= 253
    with pytest.raises(CxrError, match="unknown crop mode"):
        data.load_images(tmp_path / "wide", 30, crop="zoom")


def test_downscaled_jpeg_matches_full_decode(tmp_path):
    """The JPEG fast path (draft at 1/8 scale + reducing_gap) stays close to a full-resolution resize."""
    yy, xx = np.mgrid[0:512, 0:512] / 512.0
    smooth = 0.5 + 0.2 * np.sin(2 * np.pi * 3 * xx) * np.cos(2 * np.pi * 2 * yy) + 0.2 * (xx - 0.5)  # 512 px
    Image.fromarray(np.rint(smooth * 255).astype(np.uint8)).save(tmp_path / "big.jpg", quality=95)
    fast, _ = data.decode_square(tmp_path / "big.jpg", 64)
    ref = np.asarray(Image.open(tmp_path / "big.jpg").convert("L").resize((64, 64), Image.Resampling.BICUBIC))
    assert np.abs(fast.astype(int) - ref.astype(int)).mean() < 1.5


# --------------------------------------------------------------------------- cache
def _count_decodes(monkeypatch) -> list:
    calls = []
    real = data.decoding.decode_square  # the loader looks it up there at each call

    def counting(*a, **k):
        calls.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(data.decoding, "decode_square", counting)
    return calls


def test_second_load_comes_from_cache_without_decoding(image_folder, tmp_path, monkeypatch):
    calls = _count_decodes(monkeypatch)
    cache = tmp_path / "cache"
    first = data.load_images(image_folder, 16, cache_dir=cache)
    assert len(calls) == 4
    second = data.load_images(image_folder, 16, cache_dir=cache)
    assert len(calls) == 4  # nothing decoded again
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert first.paths == second.paths and first.classes == second.classes
    assert np.load(next(cache.rglob("*.npy")), allow_pickle=False).shape == (4, 1, 16, 16)
    data.load_images(image_folder, 24, cache_dir=cache)  # another size is another entry
    data.load_images(image_folder, 16, crop="pad", cache_dir=cache)  # so is another crop
    assert len(calls) == 12
    assert not any(p.name.startswith(".") for p in cache.rglob("*"))  # no temp file left


def test_touched_added_or_removed_file_invalidates_cache(image_folder, make_image, tmp_path, monkeypatch):
    calls = _count_decodes(monkeypatch)
    cache = tmp_path / "cache"
    data.load_images(image_folder, 16, cache_dir=cache)
    n = len(calls)
    target = image_folder / "normal" / "n1.png"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    data.load_images(image_folder, 16, cache_dir=cache)
    assert len(calls) == 2 * n
    make_image(image_folder / "normal" / "n9.png")
    assert len(data.load_images(image_folder, 16, cache_dir=cache)) == 5
    (image_folder / "pneumonia" / "p2.bmp").unlink()
    assert len(data.load_images(image_folder, 16, cache_dir=cache)) == 4
    assert len(calls) == 2 * n + 5 + 4
    data.load_images(image_folder, 16, cache_dir=cache)
    assert len(calls) == 2 * n + 9  # the last state is cached


def test_corrupt_cache_is_ignored_and_rebuilt(image_folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    good = data.load_images(image_folder, 16, cache_dir=cache)
    npy = next(cache.rglob("*.npy"))
    npy.write_bytes(b"\x93NUMPY garbage")
    calls = _count_decodes(monkeypatch)
    again = data.load_images(image_folder, 16, cache_dir=cache)
    assert len(calls) == 4 and torch.equal(good.images, again.images)
    next(cache.rglob("*.json")).write_text("{not json")
    assert torch.equal(data.load_images(image_folder, 16, cache_dir=cache).images, good.images)
    assert len(calls) == 8


def test_cache_is_never_written_inside_the_source(image_folder):
    before = snapshot(image_folder)
    with pytest.warns(UserWarning, match="not caching"):
        data.load_images(image_folder, 16, cache_dir=image_folder / ".cache")
    assert snapshot(image_folder) == before and not (image_folder / ".cache").exists()


def test_cached_set_with_skipped_files_still_refuses_under_raise(image_folder, tmp_path):
    (image_folder / "normal" / "bad.png").write_bytes(b"")
    with pytest.warns(UserWarning, match="skipped 1"):
        data.load_images(image_folder, 16, on_error="skip", cache_dir=tmp_path / "c")
    with pytest.raises(ImageReadError, match="bad.png.*empty file"):
        data.load_images(image_folder, 16, cache_dir=tmp_path / "c")


def test_default_cache_lives_under_config_cache_dir(image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("CXRLIB_CACHE", str(tmp_path / "env-cache"))
    data.load_images(image_folder, 16)
    assert len(list((tmp_path / "env-cache").rglob("*.npy"))) == 1


# --------------------------------------------------------------------------- the ImageSet
def _toy_set(n_per_class=(30, 10)) -> data.ImageSet:
    labels = torch.cat([torch.full((k,), c) for c, k in enumerate(n_per_class)])
    n = len(labels)
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return data.ImageSet(images, labels, ["normal", "pneumonia"], [f"f{i}" for i in range(n)], [], "toy")


def test_split_is_deterministic_disjoint_complete_and_stratified():
    ds = _toy_set((30, 10))
    a = ds.split((0.8, 0.1, 0.1), seed=3)
    b = ds.split((0.8, 0.1, 0.1), seed=3)
    c = ds.split((0.8, 0.1, 0.1), seed=4)
    assert [p.paths for p in a] == [p.paths for p in b]
    assert a[0].paths != c[0].paths
    everything = sum((p.paths for p in a), [])
    assert sorted(everything) == sorted(ds.paths) and len(set(everything)) == len(ds)
    assert [len(p) for p in a] == [32, 4, 4]
    assert a[0].class_counts() == {"normal": 24, "pneumonia": 8}
    assert a[2].class_counts() == {"normal": 3, "pneumonia": 1}
    for part in a:  # images travel with their paths and labels
        assert [f"f{int(v)}" for v in part.images[:, 0, 0, 0]] == part.paths


def test_to_float_subset_and_describe():
    ds = _toy_set((3, 2))
    x = ds.to_float()
    assert x.dtype == torch.float32 and x.shape == (5, 1, 4, 4)
    full = data.ImageSet(torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1), torch.tensor([0, 1]), ["a", "b"])
    assert full.to_float().flatten().tolist() == [-1.0, 1.0]
    sub = ds.subset([4, 0])
    assert sub.paths == ["f4", "f0"] and sub.labels.tolist() == [1, 0]
    assert ds.subset(ds.labels == 1).paths == ["f3", "f4"]
    assert ds.describe() == "5 toy images, 4 px, classes normal=3 pneumonia=2"


# --------------------------------------------------------------------------- load_dataset
def test_load_dataset_phantom_describes_itself():
    pytest.importorskip("cxrlib.phantom")
    ds = data.load_dataset("phantom", size=32, n=4, seed=1)
    assert ds.images.shape == (4, 1, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.classes == ["normal", "pneumonia"] and ds.paths == [f"phantom:{i}" for i in range(4)]
    assert ds.describe() == "4 phantom images, 32 px, classes normal=2 pneumonia=2"
    assert ds.images.float().std() > 10  # a picture, not a blank


def test_load_dataset_phantom_is_cached_and_equal(monkeypatch):
    from cxrlib import phantom

    first = data.load_dataset("phantom", size=32, n=4, seed=2)
    calls = []
    monkeypatch.setattr(phantom, "generate", lambda *a, **k: calls.append(a) or pytest.fail("not cached"))
    again = data.load_dataset("phantom", size=32, n=4, seed=2)
    assert calls == [] and torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    assert again.describe() == first.describe() and again.paths == first.paths
    monkeypatch.undo()
    other = data.load_dataset("phantom", size=32, n=4, seed=3)  # another seed is another entry
    assert not torch.equal(other.images, first.images)


def test_load_dataset_phantom_severity_is_its_own_cache_entry(monkeypatch):
    from cxrlib import phantom

    default = data.load_dataset("phantom", size=32, n=4, seed=2)
    mild = data.load_dataset("phantom", size=32, n=4, seed=2, severity=(0.3, 0.5))
    assert torch.equal(mild.images, phantom.generate(4, 32, seed=2, severity=(0.3, 0.5)).images)
    assert not torch.equal(mild.images, default.images) and torch.equal(mild.labels, default.labels)
    monkeypatch.setattr(phantom, "generate", lambda *a, **k: pytest.fail("not cached"))
    assert torch.equal(data.load_dataset("phantom", size=32, n=4, seed=2, severity=None).images, default.images)
    assert torch.equal(data.load_dataset("phantom", size=32, n=4, seed=2, severity=[0.3, 0.5]).images, mild.images)
    with pytest.raises(CxrError, match="severity"):
        data.load_dataset("phantom", size=32, n=4, seed=2, severity=(0.5, 0.3))


def test_load_dataset_folder_with_n_takes_a_seeded_subset(image_folder):
    ds = data.load_dataset(image_folder, size=16, n=3, seed=0)
    assert len(ds) == 3 and ds.describe().startswith(f"3 images from '{image_folder}', 16 px")
    assert data.load_dataset(image_folder, size=16, n=3, seed=0).paths == ds.paths
    with pytest.raises(CxrError, match="unknown data source"):
        data.load_dataset("kaggle-xrays-that-are-not-here")


def _fake_medmnist_npz(path, size=28, multilabel=False):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = rng.integers(0, 2, (n, 14 if multilabel else 1))
        arrays[f"{split}_labels"] = labels
    np.savez(path, **arrays)
    return arrays


def test_medmnist_npz_is_read_directly_and_resized(tmp_path):
    arrays = _fake_medmnist_npz(tmp_path / "pneumoniamnist_64.npz", size=64)
    ds = data.load_dataset(tmp_path / "pneumoniamnist_64.npz", size=32)
    assert ds.images.shape == (11, 1, 32, 32) and ds.classes == ["normal", "pneumonia"]
    want = np.concatenate([arrays[f"{s}_labels"][:, 0] for s in ("train", "val", "test")])
    assert ds.labels.tolist() == want.tolist()
    mean_in = arrays["train_images"][0].mean()
    assert abs(ds.images[0].float().mean().item() - mean_in) < 2  # resizing keeps brightness
    by_name = data.load_dataset("pneumoniamnist", size=64, root=tmp_path, split="test")
    assert len(by_name) == 3 and torch.equal(by_name.images[:, 0], torch.from_numpy(arrays["test_images"]))


def test_chestmnist_multilabel_becomes_finding_or_not(tmp_path):
    arrays = _fake_medmnist_npz(tmp_path / "chestmnist_64.npz", size=64, multilabel=True)
    ds = data.load_dataset("chestmnist", size=64, root=tmp_path / "chestmnist_64.npz", split="train")
    assert ds.classes == ["no_finding", "finding"]
    assert ds.labels.tolist() == (arrays["train_labels"].sum(1) > 0).astype(int).tolist()


def test_medmnist_offline_fails_with_one_line_suggesting_phantom(tmp_path, monkeypatch):
    with pytest.raises(CxrError) as e:
        data.load_dataset("pneumoniamnist", size=64, root=tmp_path / "empty", download=False)
    assert "source='phantom'" in str(e.value) and "\n" not in str(e.value)

    class OfflineMedMNIST:  # stands in for the medmnist package without a network (and its slow import)
        INFO = {"pneumoniamnist": {"python_class": "PneumoniaMNIST"}}

        class PneumoniaMNIST:
            def __init__(self, **kw):
                raise RuntimeError("\n  Automatic download failed! Please download pneumoniamnist_64.npz manually.")

    monkeypatch.setitem(sys.modules, "medmnist", OfflineMedMNIST)
    with pytest.raises(CxrError) as e:
        data.load_dataset("pneumoniamnist", size=64, root=tmp_path / "empty")
    msg = str(e.value)
    assert "download failed" in msg and "source='phantom'" in msg and "\n" not in msg
    assert not list(tmp_path.rglob("*.npz"))


# --------------------------------------------------------------------------- inspect
def test_inspect_reports_everything_and_every_bad_file(image_folder, make_image, make_dicom):
    make_image(image_folder / "pneumonia" / "p3.tif", mode="I;16")
    make_dicom(image_folder / "pneumonia" / "p4.dcm", np.zeros((16, 16)), PhotometricInterpretation="MONOCHROME1")
    (image_folder / "normal" / "broken.png").write_text("no")
    (image_folder / "normal" / "zero.jpg").write_bytes(b"")
    (image_folder / "readme.txt").write_text("hi")
    before = snapshot(image_folder)
    report = data.inspect_folder(image_folder)
    text = str(report)
    assert report.classes == {"normal": 2, "pneumonia": 4} and report.n_files == 8 and not report.ok
    assert report.formats == {"PNG": 2, "JPEG": 1, "BMP": 1, "TIFF": 1, "DICOM": 1}
    assert report.sizes == {"48x32": 5, "16x16": 1}
    assert "I;16 (16-bit gray)" in text and "MONOCHROME1 12-bit" in text
    assert "normal/broken.png: not an image" in text and "normal/zero.jpg: empty file" in text
    assert "readme.txt" in text and "6 readable, 2 unreadable" in text
    assert snapshot(image_folder) == before


# --------------------------------------------------------------------------- prepare
def test_prepare_writes_clean_square_gray_pngs_keeping_classes(tmp_path, image_folder, make_dicom, make_image):
    make_dicom(image_folder / "pneumonia" / "p3.dcm", np.tile(np.arange(48, dtype=np.uint16) * 80, (32, 1)))
    make_image(image_folder / "pneumonia" / "p4.tif", mode="I;16")
    before = snapshot(image_folder)
    summary = data.prepare_folder(image_folder, tmp_path / "out", size=24)
    files = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert files == [
        "normal/n1.png", "normal/n2.png", "pneumonia/p1.png", "pneumonia/p2.png", "pneumonia/p3.png",
        "pneumonia/p4.png",
    ]  # fmt: skip
    for f in (tmp_path / "out").rglob("*.png"):
        im = Image.open(f)
        assert im.mode == "L" and im.size == (24, 24)
    assert "prepared 6 images" in summary and "normal=2 pneumonia=4" in summary
    assert snapshot(image_folder) == before
    again = data.load_images(tmp_path / "out", 24, cache=False)
    assert again.classes == ["normal", "pneumonia"] and len(again) == 6


def test_prepare_on_bad_file_leaves_no_partial_output(tmp_path, image_folder):
    (image_folder / "pneumonia" / "p9.png").write_text("not an image")
    with pytest.raises(ImageReadError, match="p9.png"):
        data.prepare_folder(image_folder, tmp_path / "out", size=16)
    assert not (tmp_path / "out").exists()
    with pytest.warns(UserWarning, match="skipped 1"):
        summary = data.prepare_folder(image_folder, tmp_path / "out", size=16, on_error="skip")
    assert "skipped 1 unreadable: p9.png" in summary and len(list((tmp_path / "out").rglob("*.png"))) == 4


def test_prepare_refuses_to_write_into_the_source(image_folder):
    before = snapshot(image_folder)
    for dst in (image_folder, image_folder / "normal" / "out"):
        with pytest.raises(CxrError, match="refusing to write into the source"):
            data.prepare_folder(image_folder, dst, size=16)
    with pytest.raises(CxrError, match="inside the destination"):
        data.prepare_folder(image_folder / "normal", image_folder, size=16)
    assert snapshot(image_folder) == before


def test_prepare_keeps_colliding_names_apart(tmp_path, make_image):
    make_image(tmp_path / "src" / "c" / "x.jpg")
    make_image(tmp_path / "src" / "c" / "x.png")
    data.prepare_folder(tmp_path / "src", tmp_path / "out", size=8)
    assert sorted(p.name for p in (tmp_path / "out" / "c").iterdir()) == ["x.png", "x_png.png"]


def test_disk_full_while_decoding_into_the_cache_leaves_no_entry(image_folder, tmp_path, monkeypatch):
    """Rows are written into the cache file as they are decoded: a write failing midway (disk full) stops the load
    with that error and leaves neither a temporary file nor an entry a later load would read."""
    import errno

    cache = tmp_path / "cache"
    real_write, written = data.RowReader.write, []

    def write(self, i, pixels):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(i)
        return real_write(self, i, pixels)

    with monkeypatch.context() as m:
        m.setattr(data.RowReader, "write", write)
        with pytest.raises(OSError, match="No space left"):
            data.load_images(image_folder, 16, cache_dir=cache)
    assert written and [p for p in cache.rglob("*") if p.is_file()] == []
    calls = _count_decodes(monkeypatch)
    again = data.load_images(image_folder, 16, cache_dir=cache)
    assert len(calls) == len(again) and torch.equal(again.images, data.load_images(image_folder, 16, cache=False).images)
