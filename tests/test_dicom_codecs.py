"""Compressed DICOMs as hospitals export them: JPEG Lossless (process 14 and its selection value 1), JPEG-LS
(lossless and near-lossless) and JPEG 2000 read through the 'dicom' extra's decoder (python-gdcm); without a decoder
a file gets the usual one line naming the package to install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import GDCM_SYNTAXES, gdcm_compress

from cxrlib import data
from cxrlib.errors import ImageReadError

pytest.importorskip("pydicom")
from pydicom.pixels import get_decoder  # noqa: E402
from pydicom.uid import UID, JPEGLSLossless  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _decoder_or_skip(syntax: str) -> None:
    if not get_decoder(syntax).is_available:
        pytest.skip(f"no decoder for {UID(syntax).name} installed (the 'dicom' extra installs python-gdcm)")


@pytest.fixture
def compressed(tmp_path, make_dicom):
    """``compressed(path, pixels, syntax) -> Path``: a 12-bit DICOM of ``pixels`` in ``syntax``, written by GDCM
    as a PACS export would be (its uncompressed original is kept outside ``path``'s folder)."""
    pytest.importorskip("gdcm", reason="python-gdcm (the 'dicom' extra) writes the compressed test files")

    def make(path, pixels, syntax: str) -> Path:
        raw = make_dicom(tmp_path / "originals" / f"{Path(path).name}", pixels)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return gdcm_compress(raw, path, syntax)

    return make


def _film(seed: int, shape=(40, 56)) -> np.ndarray:
    """A 12-bit test film: a ramp (so the window is known) with noise (so the codec has work to do)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(100, 3900, shape[1])[None, :].repeat(shape[0], axis=0)
    return np.clip(ramp + rng.normal(0, 30, shape), 0, 4095).astype(np.uint16)


@pytest.mark.parametrize("syntax", sorted(GDCM_SYNTAXES), ids=lambda s: UID(s).name.split(" Image")[0])
def test_compressed_dicom_reads_like_its_uncompressed_original(tmp_path, make_dicom, compressed, syntax):
    import pydicom

    _decoder_or_skip(syntax)
    film = _film(int(syntax[-2:]))
    path = compressed(tmp_path / "export" / "cxr.dcm", film, syntax)
    assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    original = data.read_image(make_dicom(tmp_path / "plain.dcm", film))
    # lossless syntaxes give the same stored values, so the same image; GDCM writes near-lossless with error 0
    np.testing.assert_array_equal(data.read_image(path), original)


@pytest.mark.parametrize("name, syntax, same_as", [
    ("MR_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.80", "MR_small.dcm"),
    ("MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.90", "MR_small.dcm"),
    ("JPEGLSNearLossless_16.dcm", "1.2.840.10008.1.2.4.81", None),
    ("SC_rgb_jpeg_gdcm.dcm", "1.2.840.10008.1.2.4.70", None),  # colour, written by GDCM: read as luminance
])  # fmt: skip
def test_compressed_files_pydicom_ships_decode(name, syntax, same_as):
    """Files encoded by other software than GDCM (pydicom's bundled test files, offline)."""
    from pydicom.data import get_testdata_file

    _decoder_or_skip(syntax)
    path = get_testdata_file(name)
    a = data.read_image(path)
    assert a.dtype == np.float32 and a.ndim == 2 and 0 <= a.min() < a.max() <= 1
    if same_as:
        np.testing.assert_array_equal(a, data.read_image(get_testdata_file(same_as)))


def test_prepare_cli_on_a_folder_of_jpeg_lossless_and_jpeg_ls_exports(tmp_path, compressed):
    syntaxes = ["1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80"]
    for syntax in syntaxes:
        _decoder_or_skip(syntax)
    for i, syntax in enumerate(syntaxes):  # as a PACS exports: no extension, a class folder each
        compressed(tmp_path / "export" / ("normal" if i % 2 else "pneumonia") / f"IM{i:04d}", _film(i), syntax)
    env = {**os.environ, "PYTHONPATH": str(REPO), "CXRLIB_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "cxrlib", "prepare", "--src", str(tmp_path / "export"),
                        "--dst", str(tmp_path / "out"), "--size", "32"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "prepared 3 images" in r.stdout
    pngs = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert pngs == ["normal/IM0001.png", "pneumonia/IM0000.png", "pneumonia/IM0002.png"]


def _hide_decoders(monkeypatch, syntax: str) -> None:
    """Make pydicom behave as if no decoder for ``syntax`` were installed (its plugins' dependencies missing)."""
    decoder = get_decoder(syntax)
    if not hasattr(decoder, "_available") or not hasattr(decoder, "_unavailable"):
        pytest.skip("this pydicom keeps its decoder plugins differently")
    missing = {"gdcm": ("gdcm>=3.0.10",), "pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-libjpeg>=2.1"),
               "pyjpegls": ("pyjpegls>=1.3",)}
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", missing)


def test_compressed_dicom_without_decoder_names_file_and_package(tmp_path, make_dicom, monkeypatch):
    _hide_decoders(monkeypatch, JPEGLSLossless)
    path = make_dicom(tmp_path / "ls.dcm", np.zeros((8, 8)), transfer_syntax=JPEGLSLossless)
    with pytest.raises(ImageReadError) as e:
        data.read_image(path)
    msg = str(e.value)
    assert "ls.dcm" in msg and "JPEG-LS" in msg and "\n" not in msg
    assert "pip install python-gdcm (cxrlib's 'dicom' extra" in msg


def test_compressed_dicom_without_decoder_is_listed_by_inspect(tmp_path, make_dicom, monkeypatch, capsys):
    from cxrlib.cli import main

    _hide_decoders(monkeypatch, JPEGLSLossless)
    make_dicom(tmp_path / "src" / "normal" / "ls.dcm", np.zeros((8, 8)), transfer_syntax=JPEGLSLossless)
    make_dicom(tmp_path / "src" / "normal" / "plain.dcm", _film(0))
    assert main(["inspect", str(tmp_path / "src")]) == 0
    out = capsys.readouterr().out
    assert "ls.dcm" in out and "pip install python-gdcm" in out
