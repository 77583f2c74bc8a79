"""Shared test fixtures: small images of any Pillow mode, DICOM files written with pydicom (and compressed by
GDCM), folder snapshots.

Every test gets its own cache folder (``CXRLIB_CACHE``), so nothing is written under the home directory and
no test sees another's cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CXRLIB_CACHE", str(tmp_path_factory.mktemp("cxrlib-cache")))


# --------------------------------------------------------------------------- images
def gradient(width: int = 48, height: int = 32) -> np.ndarray:
    """(height, width) float64 in [0, 1], dark on the left, bright on the right."""
    return np.tile(np.linspace(0.0, 1.0, width), (height, 1))


def pil_image(values: np.ndarray, mode: str = "L"):
    """(H, W) floats in [0, 1] → a PIL image in ``mode`` whose gray levels follow ``values`` (colour modes
    carry the same value in every channel; wide modes use their full range)."""
    from PIL import Image

    v = np.clip(values, 0.0, 1.0)
    gray = Image.fromarray(np.rint(v * 255).astype(np.uint8))
    if mode == "L":
        return gray
    if mode == "I;16":
        return Image.fromarray(np.rint(v * 65535).astype(np.uint16))
    if mode == "I":
        return Image.fromarray(np.rint(v * 1_000_000 - 200_000).astype(np.int32))
    if mode == "F":
        return Image.fromarray((v * 3000.0 - 1000.0).astype(np.float32))
    if mode == "P":
        return gray.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    return gray.convert(mode)


@pytest.fixture
def make_image():
    """``make_image(path, mode="L", values=None, fmt=None, **save_kw) -> Path``: write a small image of any
    Pillow mode (default: a 48x32 left-to-right gradient); parent folders are created."""

    def make(path, mode: str = "L", values: np.ndarray | None = None, fmt: str | None = None, **save_kw) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        img = pil_image(gradient() if values is None else values, mode)
        img.save(path, format=fmt, **save_kw)
        return path

    return make


# --------------------------------------------------------------------------- DICOM
def write_dicom(path, pixels, transfer_syntax=None, preamble: bool = True, **attrs) -> Path:
    """A real DICOM written by pydicom (see the ``make_dicom`` fixture); also used by benchmarks/bench_dicom.py."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    transfer_syntax = transfer_syntax or ExplicitVRLittleEndian
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.asarray(pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    for key, value in attrs.items():
        setattr(ds, key, value)
    if transfer_syntax == ExplicitVRLittleEndian:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    else:
        ds.PixelData = encapsulate([b"\xff\xd8" + b"\0" * 62])
        ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    if not preamble:  # some archives strip the 128-byte preamble and "DICM": keep what follows
        raw = path.read_bytes()
        assert raw[128:132] == b"DICM"
        path.write_bytes(raw[132:])
    return path


# the compressed transfer syntaxes GDCM writes → its name for each
GDCM_SYNTAXES = {
    "1.2.840.10008.1.2.4.57": "JPEGLosslessProcess14",  # JPEG Lossless, process 14
    "1.2.840.10008.1.2.4.70": "JPEGLosslessProcess14_1",  # JPEG Lossless, process 14, selection value 1
    "1.2.840.10008.1.2.4.80": "JPEGLSLossless",
    "1.2.840.10008.1.2.4.81": "JPEGLSNearLossless",
}


def gdcm_compress(src, dst, transfer_syntax: str) -> Path:
    """Re-encode the uncompressed DICOM ``src`` as ``dst`` in ``transfer_syntax`` (a key of ``GDCM_SYNTAXES``)
    with GDCM, the way a PACS export writes it. Needs python-gdcm."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, GDCM_SYNTAXES[transfer_syntax])))
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(dst))
    if not reader.Read():
        raise RuntimeError(f"GDCM cannot read {src}")
    change.SetInput(reader.GetImage())
    if not change.Change():
        raise RuntimeError(f"GDCM cannot encode {transfer_syntax}")
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    if not writer.Write():
        raise RuntimeError(f"GDCM cannot write {dst}")
    return Path(dst)


@pytest.fixture
def make_dicom():
    """``make_dicom(path, pixels, transfer_syntax=ExplicitVRLittleEndian, preamble=True, **attrs) -> Path``:
    a real DICOM written by pydicom. pixels: (H, W) or (frames, H, W) integers stored as unsigned 16-bit
    (BitsStored 12 unless given); attrs are DICOM keywords (RescaleSlope, WindowCenter, ...). A compressed
    transfer syntax gets a placeholder encapsulated fragment (enough to test the missing-decoder path)."""
    pytest.importorskip("pydicom")
    return write_dicom


# --------------------------------------------------------------------------- folders
def snapshot(folder) -> dict[str, bytes]:
    """Every file under ``folder`` (relative posix path → bytes), to prove a source was not touched."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def image_folder(tmp_path, make_image):
    """A small two-class folder: normal/ (PNG, JPEG), pneumonia/ (PNG, BMP), all 48x32 gradients."""
    root = tmp_path / "xrays"
    make_image(root / "normal" / "n1.png")
    make_image(root / "normal" / "n2.jpg", quality=95)
    make_image(root / "pneumonia" / "p1.png", values=1.0 - gradient())
    make_image(root / "pneumonia" / "p2.bmp")
    return root


def png_class_folder(root, image_set) -> Path:
    """An ``ImageSet``'s images as PNGs in one sub-folder per class under ``root`` (as ``--data`` reads them)."""
    from PIL import Image

    for i, (img, y) in enumerate(zip(image_set.images, image_set.labels)):
        d = Path(root) / image_set.classes[int(y)]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy()).save(d / f"{i:03d}.png")
    return Path(root)


def assert_same_training_state(sa: dict, sb: dict) -> None:
    """Two checkpoint-shaped states hold equal networks (G, D, G_ema) and optimiser moments, tensor for tensor."""
    import torch

    for key in ("G", "D", "G_ema"):
        if key in sa:
            for name in sa[key]:
                assert torch.equal(sa[key][name], sb[key][name]), f"{key}.{name}"
    for key in ("g_opt", "d_opt"):
        for i, st in sa[key]["state"].items():
            for name, v in st.items():
                assert torch.equal(v, sb[key]["state"][i][name]), f"{key}[{i}].{name}"
