"""Odd files and an unusable cache end in one line naming the file (or folder), never a traceback (issue 28).

Every reader goes through ``data._open_any``: whatever a decoder raises becomes ``cannot read 'FILE': REASON``;
``inspect`` lists it and goes on, ``prepare``/``augment``/``load_dataset`` stop on it or skip it when asked."""

from __future__ import annotations

import io
import os
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from cxrlib import data
from cxrlib.cli import main
from cxrlib.errors import CxrError, ImageReadError

BOMB_LIMIT = 1000  # Pillow refuses images over twice MAX_IMAGE_PIXELS at open time: 48 × 48 = 2,304 > 2,000


@pytest.fixture
def bomb_limit(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", BOMB_LIMIT)


def _png(path, side: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(side).integers(0, 256, (side, side), dtype=np.uint8)).save(buf, "PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def _bomb(path):
    _png(path, side=48)  # readable until the limit is lowered (bomb_limit)


def _truncated(path):
    raw = _png(path)
    path.write_bytes(raw[: len(raw) // 2])


def _zero(path):
    path.write_bytes(b"")


def _text(path):
    path.write_text("patient list, not a picture\n" * 10)


def _no_pixels(path):
    pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality = "DX"
    ds.save_as(path, enforce_file_format=True)


ODD = {  # name → (writer, what the reason says)
    "bomb.png": (_bomb, "image too large"),
    "truncated.png": (_truncated, "truncated file"),
    "empty.png": (_zero, "empty file (0 bytes)"),
    "notes.png": (_text, "not an image"),
    "report.dcm": (_no_pixels, "DICOM file without pixel data"),
}


def _one_line(message: str, path) -> None:
    assert "\n" not in message and "Traceback" not in message
    assert f"cannot read '{path}'" in message


@pytest.mark.parametrize("name", sorted(ODD))
def test_each_odd_file_is_one_line_naming_it(tmp_path, bomb_limit, name):
    write, reason = ODD[name]
    path = tmp_path / name
    write(path)
    with pytest.raises(ImageReadError) as e:
        data.read_image(path)
    _one_line(str(e.value), path)
    assert reason in e.value.reason


def test_decompression_bomb_says_the_size_and_the_limit(tmp_path, bomb_limit):
    path = tmp_path / "big.png"
    _bomb(path)
    with pytest.raises(ImageReadError, match=r"2,304 pixels; Pillow refuses more than 2,000 .*MAX_IMAGE_PIXELS"):
        data.read_image(path)


def test_any_exception_a_decoder_raises_becomes_one_line(tmp_path, monkeypatch):
    path = tmp_path / "ok.png"
    _png(path)

    def broken(self, *a, **kw):
        raise RuntimeError("decoder exploded\nsecond line")

    monkeypatch.setattr(Image.Image, "load", broken)
    with pytest.raises(ImageReadError) as e:
        data.read_image(path)
    _one_line(str(e.value), path)
    assert e.value.reason == "cannot decode (RuntimeError: decoder exploded)"


def test_pydicom_2_is_told_to_upgrade_not_to_install(tmp_path, monkeypatch, make_dicom):
    path = make_dicom(tmp_path / "a.dcm", np.zeros((8, 8)))
    monkeypatch.setitem(sys.modules, "pydicom.pixels", None)  # as with pydicom 2.x: no pixels module
    with pytest.raises(ImageReadError, match=r"pydicom 3\.0 or newer \(this is .+\): pip install -U 'pydicom>=3\.0\.1'"):
        data.read_image(path)


@pytest.fixture
def odd_folder(tmp_path, bomb_limit):
    root = tmp_path / "films"
    for i in range(2):
        _png(root / "normal" / f"good{i}.png", side=24)
    for name, (write, _) in ODD.items():
        (root / "normal").mkdir(parents=True, exist_ok=True)
        write(root / "normal" / name)
    return root


def test_inspect_lists_every_odd_file_and_goes_on(odd_folder, capsys):
    report = data.inspect_folder(odd_folder, workers=1)
    assert report.n_readable == 2
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in report.unreadable) == sorted(ODD)
    assert main(["inspect", str(odd_folder)]) == 0
    out = capsys.readouterr().out
    for name, (_, reason) in ODD.items():
        assert f"{name}: {reason}" in out


def test_prepare_stops_with_one_line_or_skips(odd_folder, tmp_path, capsys):
    assert main(["prepare", "--src", str(odd_folder), "--dst", str(tmp_path / "out"), "--size", "16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot read '") and "\n" not in err and "--on-error skip" in err
    assert main(["prepare", "--src", str(odd_folder), "--dst", str(tmp_path / "out2"), "--size", "16",
                 "--on-error", "skip"]) == 0
    out = capsys.readouterr().out
    assert "prepared 2 images" in out and f"skipped {len(ODD)} unreadable" in out


def test_augment_stops_with_one_line(odd_folder, tmp_path, capsys):
    assert main(["augment", "--src", str(odd_folder), "--dst", str(tmp_path / "aug"), "--copies", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot read '") and "\n" not in err


def test_load_dataset_of_a_folder_stops_or_skips(odd_folder):
    with pytest.raises(ImageReadError) as e:
        data.load_dataset(odd_folder, size=16, workers=1)
    assert "\n" not in str(e.value) and str(odd_folder) in str(e.value)
    with pytest.warns(UserWarning, match=f"skipped {len(ODD)} unreadable"):
        ds = data.load_dataset(odd_folder, size=16, on_error="skip", workers=1)
    assert len(ds) == 2


def test_an_odd_mask_file_names_the_mask(tmp_path, bomb_limit):
    root = tmp_path / "pairs"
    for i in range(2):
        _png(root / f"x{i}.png", side=16)
        _png(root / "masks" / "lungs" / f"x{i}.png", side=16)
    _bomb(root / "masks" / "lungs" / "x1.png")
    with pytest.raises(ImageReadError, match=r"masks/lungs/x1\.png'.*image too large"):
        data.load_pairs(root, 16)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 half a zip"])
def test_an_odd_medmnist_npz_is_one_line(tmp_path, content):
    path = tmp_path / "pneumoniamnist.npz"
    path.write_bytes(content)
    with pytest.raises(CxrError) as e:
        data.read_medmnist_npz(path)
    assert str(e.value).startswith(f"cannot read '{path}' as a MedMNIST .npz (") and "\n" not in str(e.value)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04 half a zip"])
def test_an_odd_checkpoint_is_one_line(tmp_path, content):
    from cxrlib.train import load_checkpoint

    path = tmp_path / "last.pt"
    path.write_bytes(content)
    with pytest.raises(CxrError) as e:
        load_checkpoint(path)
    assert f"'{path}'" in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------- a cache folder that cannot be used
@pytest.fixture
def two_films(tmp_path):
    for i in range(2):
        _png(tmp_path / "films" / "normal" / f"{i}.png", side=24)
    return tmp_path / "films"


def _loads_without_cache(source, folder, why: str) -> None:
    """The set still loads; ONE warning names the folder, the reason and CXRLIB_CACHE, and no temporary file."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = data.load_dataset(source, size=32, n=4, **({} if source == "phantom" else {"workers": 1}))
    assert len(ds) == (2 if source != "phantom" else 4)
    notices = [str(w.message) for w in caught if "cach" in str(w.message)]
    assert len(notices) == 1, notices
    assert notices[0] == (f"not caching decoded data: the cache folder '{folder}' cannot be used ({why}); "
                          "set CXRLIB_CACHE to a writable folder")


@pytest.mark.parametrize("source", ["folder", "phantom"])
def test_cache_pointing_at_a_file_loads_without_cache(tmp_path, two_films, monkeypatch, source):
    cache = tmp_path / "cache.txt"
    cache.write_text("not a folder")
    monkeypatch.setenv("CXRLIB_CACHE", str(cache))
    _loads_without_cache(two_films if source == "folder" else "phantom", cache, "it is a file, not a folder")
    assert cache.read_text() == "not a folder"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write a read-only folder")
def test_read_only_cache_folder_loads_without_cache(tmp_path, two_films, monkeypatch):
    cache = tmp_path / "ro"
    cache.mkdir()
    cache.chmod(0o555)
    monkeypatch.setenv("CXRLIB_CACHE", str(cache))
    try:
        _loads_without_cache(two_films, cache, "it is not writable")
    finally:
        cache.chmod(0o755)


def test_unwritable_cache_folder_loads_without_cache_even_as_root(tmp_path, two_films, monkeypatch):
    """The same path as the read-only test, for runs as root (where chmod does not stop writes)."""
    cache = tmp_path / "ro"
    cache.mkdir()
    monkeypatch.setenv("CXRLIB_CACHE", str(cache))
    monkeypatch.setattr(data.cache.os, "access", lambda path, mode: False)
    _loads_without_cache(two_films, cache, "it is not writable")


def test_cache_folder_that_cannot_be_created_loads_without_cache(tmp_path, two_films, monkeypatch):
    parent = tmp_path / "file"
    parent.write_text("x")
    monkeypatch.setenv("CXRLIB_CACHE", str(parent / "cache"))
    _loads_without_cache(two_films, parent / "cache", "Not a directory")

