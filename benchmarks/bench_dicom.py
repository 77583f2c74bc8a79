"""DICOM decoders: ms per file for a 2,048² 12-bit chest film in each JPEG transfer syntax hospitals export.

One phantom radiograph (1,024 px, upsampled to 2,048², scaled to 12 bits, with film grain of sigma 4 levels) is
written uncompressed, then re-encoded by GDCM as JPEG Lossless P14 (.57), JPEG Lossless SV1 (.70), JPEG-LS lossless
(.80) and near-lossless (.81). Each file is then read ``--repeat`` times with every pydicom decoding plugin that is
installed (``dcmread`` + ``pixel_array``, the path ``cxrlib.data`` takes), best of the repeats, single thread; the
decoded pixels are checked against the original (lossless syntaxes: equal; near-lossless: within its error).

    python benchmarks/bench_dicom.py              # needs python-gdcm (the encoder here) and pydicom >= 3
    python benchmarks/bench_dicom.py --repeat 3 --size 512
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # conftest: the DICOM writer and GDCM encoder the tests use

from conftest import GDCM_SYNTAXES, gdcm_compress, write_dicom  # noqa: E402

PLUGINS = {"gdcm": "python-gdcm", "pylibjpeg": "pylibjpeg-libjpeg", "pyjpegls": "pyjpegls"}


def film(size: int) -> np.ndarray:
    """A (size, size) uint16 chest phantom in 0..4095 with film grain."""
    import torch.nn.functional as F

    from cxrlib import phantom

    base = phantom.generate(1, size=min(size, 1024), seed=0).images[:1].float() / 255  # (1, 1, s, s) in [0, 1]
    if base.shape[-1] != size:
        base = F.interpolate(base, size=(size, size), mode="bicubic", align_corners=False)
    a = base[0, 0].clamp(0, 1).numpy().astype(np.float64) * 4000 + 40
    a += np.random.default_rng(0).normal(0, 4, a.shape)
    return np.clip(np.rint(a), 0, 4095).astype(np.uint16)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)

    import pydicom
    from pydicom.pixels import get_decoder

    print(f"python {platform.python_version()}, pydicom {pydicom.__version__}, "
          + ", ".join(f"{d} {_version(d)}" for d in PLUGINS.values()))
    original = film(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "raw.dcm"
        write_dicom(src, original)
        print(f"{args.size}² 12-bit, uncompressed {src.stat().st_size / 1e6:.1f} MB; best of {args.repeat}, ms per file")
        print("| transfer syntax | size | " + " | ".join(PLUGINS) + " |")
        print("|---|---|" + "---|" * len(PLUGINS))
        for syntax in GDCM_SYNTAXES:
            dst = Path(tmp) / f"{syntax}.dcm"
            gdcm_compress(src, dst, syntax)
            decoder = get_decoder(syntax)
            cells = []
            for plugin in PLUGINS:
                if plugin not in decoder.available_plugins:
                    cells.append("—")
                    continue
                times = []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    a = pydicom.pixels.pixel_array(pydicom.dcmread(dst), decoding_plugin=plugin)
                    times.append(time.perf_counter() - t)
                err = int(np.abs(a.astype(np.int32) - original).max())
                cells.append(f"{min(times) * 1e3:.0f}" + ("" if err == 0 else f" (max error {err})"))
            name = pydicom.uid.UID(syntax).name.replace("Image Compression", "").strip()
            print(f"| {name} ({syntax[-3:]}) | {dst.stat().st_size / 1e6:.2f} MB | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
