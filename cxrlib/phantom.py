"""Procedural PA chest radiographs ("phantoms"): the course's offline default data set.

A phantom is drawn the way a radiograph forms. Every structure adds to (bone, soft tissue, fluid) or takes
from (air in the lungs, trachea and stomach) a *density* map ``D`` — the attenuation summed along each
X-ray — and the film shows ``D`` through a display curve: dense is bright, air is dark. Because densities
add, the spine shows through the heart, ribs cross the lungs, and a consolidation that fills the air spaces
makes the lung as white as the heart beside it (the silhouette sign), without special cases.

The anatomy follows ``ANATOMY.md``: the image is seen as facing the patient, so the patient's right lung is
on the image's left. Coordinates are fractions of the image: ``x`` from the left edge, ``y`` from the top;
``dx = x - 0.5`` is negative on the image's left (patient's right). Parameters named ``..._r`` / ``..._l``
are the patient's right / left.

Every image ``i`` has its own random streams, derived from ``(seed, i)`` only, so image ``i`` never depends
on how many images are asked for. The anatomy and the film come from one stream and the pneumonia from
another, so ``pneumonia_fraction=1`` gives the same patients as ``pneumonia_fraction=0``, now ill.

Severity (``generate(..., severity=(lo, hi))``, ``python -m cxrlib phantom --severity LO-HI``): each ill image
draws its severity ``s`` uniformly from ``[lo, hi]`` within (0, 1], and ``s`` is a fraction of today's finding in
two ways at once: every consolidation patch covers ``s`` times its area (its radii scale by ``sqrt(s)``, same
centre, same shape) and replaces ``s`` times the air it replaced at each point (its density over the lung, after
the saturation that makes a dense patch flat-topped, scales by ``s``). ``s = 1`` is exactly today's look; a small
``s`` is the same patient's consolidation, smaller and fainter, with its patchiness, air bronchograms and
fissure still there. ``s`` is the last draw of the pneumonia stream, so the patches' number and places, and
everything else in the image, are those of the default set. Without ``severity`` no number is drawn and the
images are byte for byte those of earlier versions; ``severity=(1, 1)`` gives the same bytes too.

Rendering is vectorised: a chunk of images is computed with torch on coordinate grids (no per-pixel Python),
most of it on a half-size grid (see "rendering" below); the branching vessels and bronchi are grown as
random trees and projected into the film with numpy. Chunks run in parallel on the CPU cores, one torch
thread each. Same seed → same bytes on a given machine and torch version.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import math
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxrlib.errors import CxrError
from cxrlib.images import to_float

CLASSES = ("normal", "pneumonia")
MASK_NAMES = ("lungs", "heart", "ribs", "clavicles")
MIN_SIZE, MAX_SIZE = 32, 1024
MAX_PATCHES = 4  # pneumonia consolidation patches per image (unused ones get zero opacity)


@dataclass(eq=False)
class Phantoms:
    """A batch of phantom radiographs.

    images: (N, 1, S, S) uint8, 0 = black (air) … 255 = white (bone);
    labels: (N,) int64, index into ``classes`` (0 = normal, 1 = pneumonia);
    masks: ``{"lungs", "heart", "ribs", "clavicles"}`` → (N, 1, S, S) bool, or None when not asked for.
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: dict[str, torch.Tensor] | None = None
    classes: tuple[str, ...] = CLASSES
    seed: int = 0

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, idx) -> Phantoms:
        """A subset with the same fields: ``ph[:5]``, ``ph[ph.labels == 1]``, ``ph[3]`` (keeps the batch dim)."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1 if idx != -1 else None)
        masks = None if self.masks is None else {k: m[idx] for k, m in self.masks.items()}
        return Phantoms(self.images[idx], self.labels[idx], masks, self.classes, self.seed)

    def to_float(self) -> torch.Tensor:
        """images as (N, 1, S, S) float32 in [-1, 1], what the GAN trains on (:func:`cxrlib.images.to_float`)."""
        return to_float(self.images)


# ======================================================================= public API
def generate(
    n: int, size: int = 256, seed: int = 0, pneumonia_fraction: float = 0.5, masks: bool = False,
    workers: int | None = None, anatomy_seed: int | None = None, severity=None,
) -> Phantoms:
    """``n`` phantom PA chest radiographs of ``size`` x ``size`` px (32–1024).

    The share of pneumonia images is exactly ``pneumonia_fraction`` up to rounding, in every prefix of the
    sequence; which images they are depends on ``seed``. Same arguments → same bytes, and
    ``generate(10, ...)[:5]`` equals ``generate(5, ...)``. ``workers``: chunks of images rendered in
    parallel (default: the usable CPU cores); it changes the speed, never the images.

    ``anatomy_seed``: image i keeps the parameters that shape the masks (geometry, lungs, diaphragm, heart, ribs,
    clavicles: ``MASK_PARAMETERS``) of image i of ``anatomy_seed`` and draws everything else — body outline, soft
    tissue, bones' density, vessels, film, pneumonia — from ``seed``: another film that fits the same masks (all
    but ~0.1 % of their pixels), i.e. a sample of "X-rays given these masks" (the ideal Pix2Pix, notebook 08).

    ``severity``: ``(lo, hi)`` with 0 < lo <= hi <= 1, or one number for ``(s, s)``: each pneumonia image draws
    its severity from that range, the share of today's patch area and density it shows (module docstring).
    None (default): today's look, byte for byte.
    """
    _check_args(n, size, pneumonia_fraction)
    severity = check_severity(severity)
    return _generate_range(0, n, size, seed, pneumonia_fraction, masks, workers, anatomy_seed, severity)


def write_phantoms(
    out, n: int, size: int = 256, seed: int = 0, pneumonia_fraction: float = 0.5, masks: bool = False,
    severity=None,
) -> str:
    """Write ``n`` phantoms as a data-set folder and return a one-paragraph summary.

    Layout: ``out/normal/cxr_00000.png``, ``out/pneumonia/…``, ``out/manifest.csv`` (file, label, class,
    index, seed, size) and with ``masks`` ``out/masks/<structure>/<same stem>.png`` (0/255). The folder is
    built beside ``out`` under a temporary name and renamed when complete, so a failure leaves nothing
    half-written; an ``out`` that exists and is not empty is refused. ``severity``: as in :func:`generate`.
    """
    _check_args(n, size, pneumonia_fraction)
    severity = check_severity(severity)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CxrError(f"cannot write phantoms to '{out}': it exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise CxrError(f"cannot write phantoms to '{out}': the folder exists and is not empty (choose a new one)")
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        counts = _write_into(tmp, n, size, seed, pneumonia_fraction, masks, severity)
        if out.is_dir():
            out.rmdir()  # empty (checked above); rename needs the name free
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    secs = time.perf_counter() - t0
    mask_txt = f", masks of the {', '.join(MASK_NAMES)} under masks/" if masks else ""
    lo, hi = severity or (1.0, 1.0)
    sev_txt = "" if severity is None else f", pneumonia severity {lo:g}" + (f"-{hi:g}" if hi != lo else "")
    return (
        f"Wrote {n} phantom chest X-rays ({size}x{size} px, seed {seed}{sev_txt}) to '{out}': "
        f"{counts[0]} in normal/, {counts[1]} in pneumonia/, one row per image in manifest.csv{mask_txt} "
        f"({secs:.1f} s)."
    )


# ======================================================================= checks, labels, streams
def _check_args(n, size, pneumonia_fraction) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise CxrError(f"number of phantoms must be a whole number >= 1, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise CxrError(f"phantom size must be a whole number of px from {MIN_SIZE} to {MAX_SIZE}, got {size!r}")
    f = float(pneumonia_fraction)
    if not 0.0 <= f <= 1.0:  # also refuses NaN
        raise CxrError(f"pneumonia fraction must be between 0 and 1, got {pneumonia_fraction!r}")


def check_severity(severity) -> tuple[float, float] | None:
    """``severity`` as ``(lo, hi)`` floats with 0 < lo <= hi <= 1, or None; one number s means ``(s, s)``.
    Anything else is refused with a one-line :class:`CxrError`."""
    if severity is None:
        return None
    one = isinstance(severity, (int, float, np.integer, np.floating)) and not isinstance(severity, bool)
    try:
        lo, hi = (float(severity),) * 2 if one else (float(v) for v in severity)
    except (TypeError, ValueError):
        raise CxrError(f"pneumonia severity must be a range (lo, hi) within (0, 1], got {severity!r}") from None
    if not 0.0 < lo <= hi <= 1.0:  # also refuses NaN
        raise CxrError(f"pneumonia severity must be a range lo-hi with 0 < lo <= hi <= 1 (a share of the default "
                       f"finding), got {lo:g}-{hi:g}")
    return lo, hi


def _labels(start: int, stop: int, seed: int, fraction: float) -> np.ndarray:
    """Labels of images start..stop-1: image i is pneumonia when floor((i+1)f + u) > floor(i f + u).

    Every prefix then holds round(n f) pneumonia images (±1), label i does not depend on n, and the offset u
    (drawn from the seed) decides which images they are.
    """
    u = np.random.default_rng(np.random.SeedSequence([_entropy(seed), 7])).random()
    i = np.arange(start, stop, dtype=np.float64)
    return (np.floor((i + 1) * fraction + u) - np.floor(i * fraction + u)).astype(np.int64)


def _entropy(seed: int) -> int:
    return int(seed) % (1 << 64)  # SeedSequence wants a non-negative int; negative seeds stay distinct


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """The random stream ``stream`` (0 anatomy and film, 1 pneumonia) of image ``index``."""
    return np.random.default_rng(np.random.SeedSequence([_entropy(seed), int(index), stream]))


# Torch allocates tensors of 1 MB and more straight from the OS, and every fresh page then faults: the
# elementwise chains below run ~6x slower on such tensors. Work tensors are kept under this many floats.
_WORK_ELEMENTS = 1 << 17


def _coarse_size(size: int) -> int:
    """Side of the grid where everything but the sharpest edges is computed (half the size above 128 px)."""
    return size if size <= 128 else (size + 1) // 2


def _chunk_size(size: int) -> int:
    """Images rendered together. It depends on the size only, and chunks start at multiples of it, so an
    image is always computed in the same company and the same tensor shapes: bytes never depend on n."""
    return int(max(1, min(16, _WORK_ELEMENTS // _coarse_size(size) ** 2)))


def _generate_range(start, stop, size, seed, fraction, masks, workers=None, anatomy_seed=None,
                    severity=None) -> Phantoms:
    labels = _labels(start, stop, seed, fraction)
    B = _chunk_size(size)
    starts = list(range((start // B) * B, stop, B))

    def render(c0):
        img, m = _render_chunk(range(c0, c0 + B), _labels(c0, c0 + B, seed, fraction), size, seed, masks,
                               anatomy_seed, severity)
        lo, hi = max(start, c0) - c0, min(stop, c0 + B) - c0
        return img[lo:hi], None if m is None else {k: v[lo:hi] for k, v in m.items()}

    with _one_torch_thread():
        workers = max(1, min(len(starts), workers or _cores()))
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                parts = list(pool.map(render, starts))
        else:
            parts = [render(c0) for c0 in starts]
    images = torch.cat([p[0] for p in parts])
    mask_dict = {k: torch.cat([p[1][k] for p in parts]) for k in MASK_NAMES} if masks else None
    return Phantoms(images, torch.from_numpy(labels), mask_dict, CLASSES, int(seed))


def _cores() -> int:
    from cxrlib.config import cpu_cores

    return cpu_cores()


@contextlib.contextmanager
def _one_torch_thread():
    """Render with one intra-op torch thread, and spread whole chunks over the cores instead.

    The renderer runs thousands of short elementwise ops; splitting each across threads makes every op
    wait for all of them, and on a busy machine (a notebook beside a browser, a CI box) those waits cost
    tens of times the work. Chunks on Python threads (torch releases the GIL) never wait for each other.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _write_into(root: Path, n, size, seed, fraction, masks, severity=None) -> list[int]:
    from PIL import Image

    for c in CLASSES:
        (root / c).mkdir()
    if masks:
        for k in MASK_NAMES:
            (root / "masks" / k).mkdir(parents=True)
    digits = max(5, len(str(n - 1)))
    counts = [0, 0]
    step = _chunk_size(size) * max(1, 64 // _chunk_size(size))  # bounded memory for large n
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label", "class", "index", "seed", "size"])
        for s0 in range(0, n, step):
            ph = _generate_range(s0, min(n, s0 + step), size, seed, fraction, masks, severity=severity)
            for j in range(len(ph)):
                i, lab = s0 + j, int(ph.labels[j])
                stem = f"cxr_{i:0{digits}d}"
                rel = f"{CLASSES[lab]}/{stem}.png"
                Image.fromarray(ph.images[j, 0].numpy()).save(root / rel, compress_level=1)
                if masks:
                    for k in MASK_NAMES:
                        m = ph.masks[k][j, 0].numpy().astype(np.uint8) * 255
                        Image.fromarray(m).save(root / "masks" / k / f"{stem}.png", compress_level=1)
                w.writerow([rel, lab, CLASSES[lab], i, seed, size])
                counts[lab] += 1
    return counts


# ======================================================================= random parameters
class _Draw:
    """Scalar draws for the parameter tables below, read from a block of uniforms drawn at once (one numpy
    call instead of one per parameter); ``rng`` stays available for arrays."""

    def __init__(self, rng: np.random.Generator, block: int = 192):
        self.rng = rng
        self._block = rng.random(block).tolist()
        self._next = 0

    def _uniform(self) -> float:
        self._next += 1
        return self._block[self._next - 1]

    def u(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self._uniform()

    def p(self, prob: float) -> float:
        return float(self._uniform() < prob)

    def choice(self, n: int, probs) -> int:
        return int(np.searchsorted(np.cumsum(probs), self._uniform() * sum(probs), side="right").clip(0, n - 1))


def _anatomy_and_film(r: _Draw) -> dict[str, float]:
    """One patient and one exposure. Lengths are fractions of the image (ANATOMY.md gives the ranges);
    densities are relative to the full thickness of the trunk's soft tissue (1.0)."""
    p: dict[str, float] = {}
    # --- acquisition geometry: rotation, scale (patient size, distance), shift
    rot = math.radians(r.u(-3.5, 3.5))
    p["cos"], p["sin"] = math.cos(rot), math.sin(rot)
    p["scale"] = r.u(0.93, 1.07)
    p["tx"], p["ty"] = r.u(-0.025, 0.025), r.u(-0.035, 0.025)
    # --- body outline: neck, shoulders sloping down from it, flanks
    p["neck_hw"] = r.u(0.075, 0.10)
    p["neck_y"] = r.u(-0.01, 0.04)
    p["shoulder_slope"] = r.u(0.10, 0.22)
    p["shoulder_curv"] = r.u(0.1, 0.5)
    p["trunk_hw"] = r.u(0.44, 0.53)
    p["fat"] = r.u(0.05, 0.11)
    # --- lungs: a tapered superellipse per side, clipped by mediastinum, heart and diaphragm
    p["lung_a_l"] = r.u(0.18, 0.205)
    p["lung_a_r"] = p["lung_a_l"] * r.u(1.02, 1.08)  # the right lung (image left) is wider
    p["lung_dc"] = r.u(0.21, 0.235)
    p["apex_y"] = r.u(0.08, 0.12)
    p["lung_b"] = r.u(0.52, 0.60)
    p["lung_taper"] = r.u(0.25, 0.4)
    p["med_r"] = r.u(0.05, 0.065)
    p["med_l"] = r.u(0.05, 0.065)
    p["air"] = r.u(0.60, 0.72)  # share of the soft-tissue density that the air in the lungs replaces
    # --- diaphragm: domes (the right one, image left, higher), steeper laterally → sharp costophrenic angles
    p["dome_r"] = r.u(0.62, 0.71)
    p["dome_l"] = p["dome_r"] + r.u(0.01, 0.03)
    p["dome_xr"], p["dome_xl"] = r.u(0.13, 0.19), r.u(0.15, 0.21)
    p["dome_k"], p["dome_q"] = r.u(0.8, 1.6), r.u(4.0, 14.0)
    # --- heart: left ventricle (rotated ellipse, image right) ∪ right atrium (image left); CTR ≈ 0.4–0.5
    p["lv_x"], p["lv_rx"], p["lv_ry"] = r.u(0.06, 0.09), r.u(0.17, 0.2), r.u(0.095, 0.115)
    p["lv_y"] = p["dome_l"] - r.u(0.05, 0.075)
    ang = r.u(0.45, 0.75)  # the long axis points down to the apex, on the image right
    p["lv_cos"], p["lv_sin"] = math.cos(ang), math.sin(ang)
    p["ra_x"], p["ra_rx"], p["ra_ry"] = -r.u(0.03, 0.05), r.u(0.06, 0.075), r.u(0.08, 0.10)
    p["ra_y"] = p["dome_r"] - r.u(0.04, 0.06)
    p["heart_extra"] = r.u(0.02, 0.08)
    # --- aortic knob and pulmonary trunk (the upper left mediastinal border), trachea
    p["knob_x"], p["knob_y"], p["knob_r"] = r.u(0.055, 0.075), r.u(0.27, 0.32), r.u(0.028, 0.038)
    p["pa_x"], p["pa_r"] = r.u(0.055, 0.075), r.u(0.025, 0.035)
    p["tr_x"], p["tr_hw"], p["carina_y"] = r.u(-0.012, 0.002), r.u(0.018, 0.025), r.u(0.30, 0.35)
    p["tr_amp"] = r.u(0.18, 0.28)
    # --- spine
    p["sp_hw"], p["sp_period"], p["sp_phase"] = r.u(0.032, 0.042), r.u(0.045, 0.055), r.u(0.0, 1.0)
    p["sp_amp"] = r.u(0.08, 0.15)
    # --- ribs: rib k at distance d from the midline runs along y = y1 + s0 k + s1 k² + g(d)(1 + c k)
    p["rib_y1"], p["rib_s0"], p["rib_s1"] = r.u(0.075, 0.105), r.u(0.037, 0.045), r.u(0.0014, 0.0026)
    p["rib_c"] = r.u(0.0, 0.03)
    p["rib_g1"], p["rib_g2"], p["rib_g4"] = r.u(0.05, 0.14), r.u(0.8, 1.2), r.u(1.0, 4.0)
    p["rib_dy_l"] = r.u(-0.008, 0.008)  # left and right ribs are not exactly level
    p["rib_h"], p["rib_amp"] = r.u(0.0085, 0.0115), r.u(0.08, 0.13)
    p["rib_var"], p["rib_ph"] = r.u(0.1, 0.3), r.u(0.0, 6.3)  # ribs differ a little in how much they show
    p["ant_slope"], p["ant_curv"], p["ant_dcc"] = r.u(0.3, 0.5), r.u(0.0, 0.6), r.u(0.11, 0.16)
    p["ant_amp"] = p["rib_amp"] * r.u(0.3, 0.45)
    p["ant_h"] = p["rib_h"] * r.u(1.15, 1.4)
    p["ant_k0"] = r.u(0.0, 0.4)
    # --- clavicles (thicker medially, slightly S-shaped), humeral heads, scapulae
    p["cl_d0"], p["cl_y0"] = r.u(0.03, 0.05), r.u(0.18, 0.22)
    p["cl_d1"], p["cl_y1"] = r.u(0.30, 0.36), r.u(0.11, 0.15)
    p["cl_dy_l"] = r.u(-0.01, 0.01)
    p["cl_h"], p["cl_s"], p["cl_amp"] = r.u(0.010, 0.014), r.u(0.01, 0.04), r.u(0.2, 0.3)
    p["hum"] = r.p(0.65)
    p["hum_d"], p["hum_y"], p["hum_r"] = r.u(0.45, 0.51), r.u(0.15, 0.21), r.u(0.05, 0.07)
    p["scap"] = r.p(0.75)
    p["scap_d"], p["scap_k"], p["scap_yb"] = r.u(0.31, 0.37), r.u(0.05, 0.2), r.u(0.42, 0.52)
    # --- gastric bubble under the left dome (image right), with an air-fluid level
    p["gas"] = r.p(0.85)
    p["gas_x"], p["gas_rx"], p["gas_ry"] = r.u(0.14, 0.24), r.u(0.03, 0.05), r.u(0.015, 0.025)
    p["gas_amp"] = r.u(0.2, 0.35)
    # --- breasts (soft rounded densities over the lower lungs), hila, vessel markings
    p["breast"] = r.p(0.35)
    p["br_d"], p["br_y"], p["br_rx"], p["br_ry"] = r.u(0.22, 0.3), r.u(0.6, 0.68), r.u(0.13, 0.18), r.u(0.1, 0.14)
    p["br_amp"] = r.u(0.06, 0.14)
    p["hil_d"] = r.u(0.075, 0.1)
    p["hil_yr"] = r.u(0.40, 0.45)
    p["hil_yl"] = p["hil_yr"] - r.u(0.0, 0.03)  # the left hilum sits a little higher
    p["hil_amp"], p["ves_amp"] = r.u(0.12, 0.22), r.u(14.0, 24.0)
    p["texture"] = r.u(0.01, 0.03)
    p["ves_w"] = r.u(0.007, 0.010)
    # --- film: window, gamma, S-curve, contrast, blur, noise, collimation
    p["lo"], p["hi"] = r.u(0.04, 0.14), r.u(1.2, 1.4)
    p["gamma"], p["s_curve"] = r.u(0.85, 1.2), r.u(0.2, 0.8)
    p["contrast"], p["bright"] = r.u(0.92, 1.1), r.u(-0.04, 0.04)
    p["blur"] = r.u(0.25, 0.9) / 256.0  # Gaussian sigma as a fraction of the image
    p["noise"], p["mottle"] = r.u(0.006, 0.022), r.u(0.0, 0.02)
    for side in ("top", "bottom", "left", "right"):
        p[f"col_{side}"] = r.p(0.12) * r.u(0.01, 0.05)
    return p


# the parameters of _anatomy_and_film that shape the masks (names, or prefixes ending in "_")
MASK_PARAMETERS = ("cos", "sin", "scale", "tx", "ty", "lung_", "apex_y", "med_", "dome_", "lv_", "ra_", "heart_extra",
                   "rib_", "ant_", "cl_")


def _shapes_masks(key: str) -> bool:
    return any(key == p or (p.endswith("_") and key.startswith(p)) for p in MASK_PARAMETERS)


def _pneumonia(r: _Draw, a: dict[str, float], ill: bool, severity=None) -> dict[str, float]:
    """Consolidation patches: up to MAX_PATCHES blobs in lung zones (lower zones most often).

    severity (lo, hi): the image's severity s, drawn last (after every draw of the default), scales the patches'
    area (radii by sqrt(s)) and, through ``p["severity"]``, their density in :func:`_coarse`."""
    p: dict[str, float] = {}
    n = 1 + r.choice(4, [0.4, 0.35, 0.18, 0.07]) if ill else 0
    p["fissure"] = 0.0
    for j in range(MAX_PATCHES):
        side = -1.0 if r.p(0.55) else 1.0  # -1: the patient's right lung (image left)
        zone = r.choice(3, [0.2, 0.3, 0.5])  # upper, middle, lower
        top, dome = a["apex_y"] + 0.06, (a["dome_r"] if side < 0 else a["dome_l"])
        hil = a["hil_yr"] if side < 0 else a["hil_yl"]
        y0, y1 = [(top, hil - 0.05), (hil - 0.06, hil + 0.08), (hil + 0.06, dome - 0.03)][zone]
        # beside the heart (patient's left, lower zones) a patch must sit lateral to it to be seen
        p[f"pn{j}_x"] = side * (r.u(0.2, 0.3) if side > 0 and zone > 0 else r.u(0.12, 0.28))
        p[f"pn{j}_y"] = r.u(y0, max(y0 + 0.01, y1))
        big = 0.02 if j == 0 else 0.0  # the first patch is never a small one: every ill film shows it
        p[f"pn{j}_rx"], p[f"pn{j}_ry"] = r.u(0.05 + big, 0.13), r.u(0.05 + big, 0.13)
        p[f"pn{j}_amp"] = r.u(0.8 + 10 * big, 1.6) if j < n else 0.0
        if j == 0 and j < n and side < 0 and zone < 2 and r.p(0.3):
            p["fissure"] = 1.0 if zone == 0 else -1.0  # right upper / middle lobe: sharp at the minor fissure
    p["fissure_y"] = a["hil_yr"] + r.u(-0.03, 0.0)
    p["pn_fill"] = r.u(0.75, 0.95)  # how much of the air a dense patch replaces
    p["bronchogram"] = r.p(0.5) if ill else 0.0
    p["bronch_amp"] = r.u(5.0, 9.0)
    p["severity"] = 1.0
    if severity is not None:
        s = r.u(*severity)
        if ill:
            p["severity"] = s
            for j in range(MAX_PATCHES):
                p[f"pn{j}_rx"] *= math.sqrt(s)
                p[f"pn{j}_ry"] *= math.sqrt(s)
    return p


# ======================================================================= line layers: vessels, bronchi, marker
def _to_image(p: dict[str, float], x, y):
    """Anatomical (x, y) → image (u, v) fractions: the inverse of the grid mapping in ``_coords``."""
    X, Y, sc = np.asarray(x) - 0.5, np.asarray(y) - 0.5, p["scale"]
    u = 0.5 + p["tx"] + sc * (p["cos"] * X - p["sin"] * Y)
    v = 0.5 + p["ty"] + sc * (p["sin"] * X + p["cos"] * Y)
    return u, v


def _tree(rng, x0, y0, angles, length, width, generations, spread, bend=0.12, fade=0.85):
    """A branching tree of segments grown generation by generation (vectorised over branches).

    Each branch is two gently bending segments; at its end it forks into two children that diverge by
    ``spread`` (radians, ±), are 0.75x as wide and 0.8x as long, and ``fade`` x as dense (vessel markings
    fade towards the periphery). Returns rows (x0, y0, x1, y1, width, density factor), one column per segment.
    """
    x, y = np.asarray(x0, dtype=np.float64), np.asarray(y0, dtype=np.float64)
    ang, ln, w = np.asarray(angles, dtype=np.float64), np.asarray(length, dtype=np.float64), np.asarray(width)
    cols = []
    for gen in range(generations):
        turn = ang[None] + np.cumsum(rng.normal(0.0, bend, (2, len(ang))), axis=0)
        px = x + np.cumsum(0.5 * ln * np.cos(turn), axis=0)  # (2, n): the two joints
        py = y + np.cumsum(0.5 * ln * np.sin(turn), axis=0)
        dens = np.full(len(ang), fade ** gen)
        cols.append(np.stack([np.concatenate([x, px[0]]), np.concatenate([y, py[0]]),
                              px.reshape(-1), py.reshape(-1), np.concatenate([w, w]), np.concatenate([dens, dens])]))
        if gen + 1 < generations:
            n = len(ang)
            fork = rng.uniform(spread[0], spread[1], 2 * n) * np.repeat([-1.0, 1.0], n)
            x, y = np.concatenate([px[1], px[1]]), np.concatenate([py[1], py[1]])
            ang = np.concatenate([turn[1], turn[1]]) + fork
            ln = np.concatenate([ln, ln]) * rng.uniform(0.7, 0.9, 2 * n)
            w = np.concatenate([w, w]) * 0.75
    return np.concatenate(cols, axis=1)


def _vessels(rng, p) -> np.ndarray:
    """Pulmonary vessels from both hila: trunks spread from up-lateral to down (the lower lobes get the
    most), leaving the hilum at different points, forking four times, thinning towards the periphery."""
    n0 = 7
    lateral = np.repeat([-1.0, 1.0], n0)
    rel = np.tile(np.linspace(-1.3, 1.6, n0), 2) + rng.uniform(-0.15, 0.15, 2 * n0)  # from lateral, + down
    ang = np.where(lateral > 0, rel, math.pi - rel)
    hx = 0.5 + lateral * (p["hil_d"] + rng.uniform(-0.01, 0.015, 2 * n0))
    hy = np.where(lateral > 0, p["hil_yl"], p["hil_yr"]) + 0.045 * np.sin(rel) + rng.uniform(-0.01, 0.01, 2 * n0)
    return _tree(rng, hx, hy, ang, rng.uniform(0.05, 0.08, 2 * n0), p["ves_w"] * rng.uniform(0.8, 1.2, 2 * n0),
                 5, (0.25, 0.55), bend=0.13, fade=0.8)


def _bronchi(rng, p, pn) -> np.ndarray:
    """Air-filled bronchi heading from the hilum into each consolidation (air bronchograms)."""
    js = [j for j in range(MAX_PATCHES) if pn[f"pn{j}_amp"] > 0]
    if not js:
        return np.zeros((6, 0))
    right = np.array([pn[f"pn{j}_x"] < 0 for j in js for _ in range(2)])
    hx = 0.5 + np.where(right, -1.0, 1.0) * p["hil_d"]
    hy = np.where(right, p["hil_yr"], p["hil_yl"])
    tx = np.array([0.5 + pn[f"pn{j}_x"] for j in js for _ in range(2)])
    ty = np.array([pn[f"pn{j}_y"] for j in js for _ in range(2)])
    ang = np.arctan2(ty - hy, tx - hx) + rng.normal(0.0, 0.15, len(tx))
    dist = np.hypot(tx - hx, ty - hy)
    return _tree(rng, hx, hy, ang, 0.45 * dist, np.full(len(tx), 0.006), 3, (0.25, 0.5), bend=0.08, fade=0.9)


def _splat(p, S: int, segs: np.ndarray) -> np.ndarray:
    """Project segments (rows x0, y0, x1, y1, width, density factor; anatomical) as solid cylinders into an (S, S) float32
    layer: the value is the path length through the vessel, in fractions of the image.

    Each segment is sampled every 0.8 px along and every 0.75 px across its width, and each sample is
    spread bilinearly over its 4 neighbouring pixels, so lines are anti-aliased without per-pixel work.
    """
    if segs.shape[1] == 0:
        return np.zeros((S, S), np.float32)
    u0, v0 = _to_image(p, segs[0], segs[1])
    u1, v1 = _to_image(p, segs[2], segs[3])
    x0, y0, x1, y1 = u0 * S - 0.5, v0 * S - 0.5, u1 * S - 0.5, v1 * S - 0.5
    w_px = segs[4] * p["scale"] * S
    ln = np.hypot(x1 - x0, y1 - y0) + 1e-9
    n_along = np.maximum(1, np.ceil(ln / 0.8)).astype(np.int64)
    n_across = np.maximum(1, np.ceil(w_px / 0.75)).astype(np.int64)
    count = n_along * n_across
    seg = np.repeat(np.arange(len(ln)), count)
    j = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    t = (j // n_across[seg] + 0.5) / n_along[seg]  # along the segment, then across its width
    o = ((j % n_across[seg] + 0.5) / n_across[seg] - 0.5) * w_px[seg]
    nx, ny = -(y1 - y0) / ln, (x1 - x0) / ln  # unit normal
    px = x0[seg] + t * (x1 - x0)[seg] + o * nx[seg]
    py = y0[seg] + t * (y1 - y0)[seg] + o * ny[seg]
    # a vessel of diameter w is w thick at its centre; its cross-section (~w² in px²) is shared among the
    # samples. Thin vessels get more (w^1.5): on films the many small ones add up to visible markings.
    mass = (math.pi / 4.0) * w_px * w_px * np.sqrt(0.008 / segs[4]) * segs[5] * ln / count / S
    ix, iy = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
    fx, fy = px - ix, py - iy
    cx = np.concatenate([ix, ix + 1, ix, ix + 1])
    cy = np.concatenate([iy, iy, iy + 1, iy + 1])
    wt = np.concatenate([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy]) * np.tile(mass[seg], 4)
    ok = (cx >= 0) & (cx < S) & (cy >= 0) & (cy < S)
    layer = np.bincount((cy * S + cx)[ok], weights=wt[ok], minlength=S * S)
    return layer.reshape(S, S).astype(np.float32)


def _marker(r: _Draw, S: int) -> np.ndarray:
    """A lead side marker, "L" (image right) or "R" (image left), in a corner; (S, S) float32 in [0, 1]."""
    from PIL import Image, ImageDraw

    kind = r.choice(3, [0.35, 0.45, 0.2])  # none, L, R
    h, top = r.u(0.035, 0.05), r.p(0.7)
    x0 = r.u(0.86, 0.9) if kind == 1 else r.u(0.06, 0.1)
    y0 = r.u(0.06, 0.1) if top else r.u(0.82, 0.88)
    layer = np.zeros((S, S), np.float32)
    if kind == 0:
        return layer
    w = h * 0.6
    if kind == 1:
        strokes = [[(0.0, 0.0), (0.0, h), (w, h)]]
    else:
        t = np.linspace(-math.pi / 2, math.pi / 2, 9)
        bowl = [(w * 0.55 + w * 0.45 * math.cos(a), h * 0.25 + h * 0.25 * math.sin(a)) for a in t]
        strokes = [[(0.0, h), (0.0, 0.0), (w * 0.55, 0.0)] + bowl + [(0.0, h * 0.5)], [(w * 0.45, h * 0.5), (w, h)]]
    # drawn twice as large on a canvas just around the letter, then box-averaged down (anti-aliasing)
    i0, j0, box = max(0, int(y0 * S) - 2), max(0, int(x0 * S) - 2), int(math.ceil(h * S)) + 5
    big = 2 * S
    canvas = Image.new("L", (2 * box, 2 * box), 0)
    draw = ImageDraw.Draw(canvas)
    for stroke in strokes:
        xy = [((x0 + u) * big - 2 * j0, (y0 + v) * big - 2 * i0) for u, v in stroke]
        draw.line(xy, fill=255, width=max(2, round(h * 0.2 * big)), joint="curve")
    patch = np.asarray(canvas.reduce(2), dtype=np.float32) / 255.0
    layer[i0:i0 + box, j0:j0 + box] = patch[: S - i0, : S - j0]
    return layer


# ======================================================================= rendering
# Two grids. On the coarse grid (half the size above 128 px) every structure is drawn: signed distances
# of body, lungs and heart, and the density of bones, trachea, consolidation. On the full grid only the
# crispest edges are finished — the skin line and the lung borders, from the upsampled signed distances,
# which stay sharp (a signed distance is smooth, so interpolating it costs no sharpness) — and the fine
# vessels, noise and film are added. Elementwise torch ops are memory bound, so fewer full-size passes
# means faster phantoms.
def _ramp(s: torch.Tensor, w) -> torch.Tensor:
    """Soft inside-indicator of a signed distance s (positive inside): 0 → 1 over about 4w, linear (an
    anti-aliased edge when w is half a pixel; much cheaper than a sigmoid of the same slope)."""
    return (s * (0.25 / w) + 0.5).clamp_(0.0, 1.0)


def _smax(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    """Smooth maximum (union of shapes) with a rounded join of size k."""
    h = (k - (a - b).abs_()).clamp_(min=0.0).div_(k)
    return torch.maximum(a, b).add_(h.mul_(h).mul_(k * 0.25))


def _ellipse_sd(ex: torch.Tensor, ey: torch.Tensor, rx, ry) -> torch.Tensor:
    """Approximate signed distance to an axis-aligned ellipse (positive inside), exact to first order at
    its border: (1 - r²) / |grad r²|."""
    px, py = ex / rx, ey / ry
    g = (px / rx).square_().add_((py / ry).square_()).mul_(4.0).add_(1e-6).rsqrt_()
    return (1.0 - px.square_() - py.square_()).mul_(g)


def _curve_family(y, A, Bk, s1, slope, h, w):
    """Bands around the curves y = A + Bk·k + s1·k² (k = 1, 2, …; A may vary with position, Bk and s1 are
    per image). Solves for the continuous index k at every pixel, measures the distance to the nearest
    integer curve (perpendicular, from the curves' slope) and returns (band in [0, 1] of half-width h,
    k rounded)."""
    C = A - y
    k = (C * -2.0).div_((C * (-4.0 * s1)).add_(Bk * Bk).clamp_(min=0.0).sqrt_().add_(Bk))
    kr = torch.round(k)
    dist = (k - kr).abs_().mul_(k * (2.0 * s1) + Bk).mul_(slope.square().add_(1.0).rsqrt_())
    return _ramp(h - dist, w), kr


def _bump(q: torch.Tensor) -> torch.Tensor:
    """A smooth bump from a squared normalised radius q: 1 at 0, 0 from 1 on (cheaper than exp(-q))."""
    return (1.0 - q).clamp_(min=0.0).square_()


def _stack(dicts: list[dict[str, float]]) -> dict[str, torch.Tensor]:
    """List of per-image parameter dicts → name: (B, 1, 1) float32 tensor (views of one array)."""
    keys = list(dicts[0])
    table = torch.from_numpy(np.array([[d[k] for k in keys] for d in dicts], dtype=np.float32))
    return {k: table[:, j].reshape(-1, 1, 1) for j, k in enumerate(keys)}


def _coords(P, S: int, r0: int = 0, r1: int | None = None):
    """Anatomical coordinates (dx, y) of the pixel centres of rows r0..r1-1 of an S x S grid,
    (B, rows, S): the acquisition's rotation, scale and shift applied backwards, so the anatomy is drawn
    already moved."""
    r1 = S if r1 is None else r1
    g = (torch.arange(S, dtype=torch.float32) + 0.5) / S
    a = g.view(1, 1, S) - 0.5 - P["tx"]
    b = g[r0:r1].view(1, -1, 1) - 0.5 - P["ty"]
    inv = 1.0 / P["scale"]
    dx = (P["cos"] * inv) * a + (P["sin"] * inv) * b
    y = (P["cos"] * inv) * b - (P["sin"] * inv) * a + 0.5
    return dx, y


@functools.lru_cache(maxsize=4)
def _noise_texture(size: int) -> torch.Tensor:
    """A fixed (2S, 2S) standard-normal texture; each film reads a random window of it (flipped at random),
    which costs a view instead of drawing S² fresh numbers per image."""
    g = np.random.default_rng(np.random.SeedSequence([20240607, size]))
    return torch.from_numpy(g.standard_normal((2 * size, 2 * size), dtype=np.float32))


# coarse channels handed to the fine grid
_CH = {"extra": 0, "body": 1, "lung": 2, "vessel_vis": 3, "bronchus_vis": 4, "thick": 5}
_CH_MASKS = {"heart": 6, "ribs": 7, "clavicles": 8}


def _render_chunk(indices, labels, size: int, seed: int, want_masks: bool, anatomy_seed: int | None = None,
                  severity=None):
    """Render images ``indices`` (with their labels) → ((B, 1, S, S) uint8, masks dict or None)."""
    S, R = size, _coarse_size(size)
    params, vessels, bronchi, markers, small, offsets = [], [], [], [], [], []
    for i, lab in zip(indices, labels):
        ra, rp = _Draw(_rng(seed, i, 0)), _Draw(_rng(seed, i, 1))
        a = _anatomy_and_film(ra)
        if anatomy_seed is not None:
            kept = _anatomy_and_film(_Draw(_rng(anatomy_seed, i, 0)))
            a.update({k: v for k, v in kept.items() if _shapes_masks(k)})
        pn = _pneumonia(rp, a, bool(lab), severity)
        params.append({**a, **pn})
        vessels.append(_splat(a, S, _vessels(ra.rng, a)))
        markers.append(_marker(ra, S))
        offsets.append(ra.rng.integers(0, S + 1, 2).tolist() + [ra.rng.random() < 0.5])
        small.append((ra.rng.standard_normal((24, 24), dtype=np.float32),  # mottle
                      ra.rng.standard_normal((48, 48), dtype=np.float32),  # lung texture
                      rp.rng.standard_normal((12, 12), dtype=np.float32),  # consolidation patchiness
                      rp.rng.standard_normal((24, 24), dtype=np.float32)))
        bronchi.append(_splat(a, S, _bronchi(rp.rng, a, pn)) if pn["bronchogram"] else None)
    P = _stack(params)
    B = len(params)

    def up(j, mode="bilinear"):
        t = torch.from_numpy(np.stack([q[j] for q in small]))[:, None]
        return F.interpolate(t, size=(R, R), mode=mode, align_corners=False)[:, 0]

    fields = torch.stack([up(0), up(1), 0.6 * up(2, "bicubic") + 0.4 * up(3, "bicubic")], dim=1)
    n_ch = len(_CH) + (len(_CH_MASKS) if want_masks else 0)
    coarse = torch.empty(B, n_ch, R, R)
    rows = max(1, min(R, _WORK_ELEMENTS // (B * R)))
    for r0 in range(0, R, rows):
        r1 = min(R, r0 + rows)
        coarse[:, :, r0:r1] = _coarse(P, R, r0, r1, fields[:, :, r0:r1], want_masks)
    fine = coarse if R == S else F.interpolate(coarse, size=(S, S), mode="bilinear", align_corners=False)

    layers = {"vessels": torch.from_numpy(np.stack(vessels)), "marker": torch.from_numpy(np.stack(markers))}
    if any(b is not None for b in bronchi):
        zero = np.zeros((S, S), np.float32)
        layers["bronchi"] = torch.from_numpy(np.stack([zero if b is None else b for b in bronchi]))
    tex = _noise_texture(S)
    noise = torch.stack([(tex[oy:oy + S, ox:ox + S].t() if flip else tex[oy:oy + S, ox:ox + S])
                         for ox, oy, flip in offsets])
    rows = max(1, min(S, _WORK_ELEMENTS // (B * S)))  # full-size work is done in horizontal strips
    D = torch.empty(B, S, S)
    masks = {k: torch.empty(B, 1, S, S, dtype=torch.bool) for k in MASK_NAMES} if want_masks else None
    for r0 in range(0, S, rows):
        r1 = min(S, r0 + rows)
        strip = {k: v[:, r0:r1] for k, v in layers.items()}
        D[:, r0:r1] = _fine(P, S, r0, r1, fine[:, :, r0:r1], strip)
        if want_masks:
            masks["lungs"][:, 0, r0:r1] = fine[:, _CH["lung"], r0:r1] > 0
            for k, c in _CH_MASKS.items():
                masks[k][:, 0, r0:r1] = fine[:, c, r0:r1] > 0
    D = _gaussian_blur(D, P["blur"].view(-1) * S)
    img = torch.empty(B, 1, S, S, dtype=torch.uint8)
    for r0 in range(0, S, rows):
        r1 = min(S, r0 + rows)
        img[:, 0, r0:r1] = _film(P, D[:, r0:r1], layers["marker"][:, r0:r1], noise[:, r0:r1], S, r0, r1)
    return img, masks


def _thickness(s_body, ad, P) -> torch.Tensor:
    """Relative soft-tissue path length (0.45–1): the trunk is roughly elliptical in cross-section, so
    X-rays cross less tissue towards the flanks; it also rounds off inward from the skin over ``fat``."""
    q = (s_body / P["fat"]).clamp_(0.0, 1.0)
    q = q.mul_(2.0 - q)
    ell = (1.0 - (ad / P["trunk_hw"]).square_()).clamp_(min=0.0).sqrt_()
    return q.mul_(ell.mul_(0.45).add_(0.55))


def _fine(P, S, r0, r1, ch, layers) -> torch.Tensor:
    """Full-resolution density rows r0..r1-1 (B, rows, S): body and lung edges from the upsampled signed
    distances, plus the coarse densities and the fine vessel layer."""
    _, y = _coords(P, S, r0, r1)
    px = 1.0 / (S * P["scale"])
    s_body, s_lung = ch[:, _CH["body"]], ch[:, _CH["lung"]]
    T = _ramp(s_body, 0.5 * px + 0.002).mul_(ch[:, _CH["thick"]])
    lung = _ramp(s_lung, 0.5 * px + 0.0015)
    depth = (s_lung * (0.4 / 0.05)).clamp_(0.0, 0.4).add_(0.6).mul_(
        ((y - P["apex_y"]) * (0.22 / 0.18)).clamp_(0.0, 0.22).add_(0.78))
    D = T * (1.0 - (P["air"] * lung).mul_(depth))
    D += ch[:, _CH["extra"]]
    D += (P["ves_amp"] * layers["vessels"]).mul_(ch[:, _CH["vessel_vis"]])
    if "bronchi" in layers:
        D -= (P["bronch_amp"] * layers["bronchi"]).mul_(ch[:, _CH["bronchus_vis"]])
    return D


def _coarse(P, R, r0, r1, fields, want_masks) -> torch.Tensor:
    """Rows r0..r1-1 of the coarse channels (B, C, rows, R); see ``_CH``."""
    dx, y = _coords(P, R, r0, r1)
    px = 1.0 / (R * P["scale"])  # one coarse pixel in anatomical units
    edge = 0.5 * px  # ramp width of a crisp, anti-aliased edge
    ad = dx.abs()
    rs = (dx < 0).float()  # 1 on the image left (patient's right)

    def side(r_val, l_val):
        return l_val + (r_val - l_val) * rs

    # ---- body: neck, shoulders, flanks; soft tissue thickens inward from the skin
    rn = (ad - P["neck_hw"]).clamp_(min=0.0)
    s_shoulder = y - P["neck_y"] - rn * (P["shoulder_slope"] + P["shoulder_curv"] * rn)
    s_top = _smax(P["neck_hw"] - ad, s_shoulder, 0.05)
    s_body = torch.minimum(s_top, P["trunk_hw"] - ad + 0.04 * (y - 0.5).clamp(max=0.0))
    T = _ramp(s_body, edge + 0.002).mul_(_thickness(s_body, ad, P))

    # ---- diaphragm domes (the patient's right, image left, is higher)
    t = dx - side(-P["dome_xr"], P["dome_xl"])
    t2 = t * t
    y_dia = side(P["dome_r"], P["dome_l"]) + t2 * (P["dome_k"] + P["dome_q"] * t2)
    slope = t * (2.0 * P["dome_k"] + 4.0 * P["dome_q"] * t2)
    s_dia = (y_dia - y).mul_(slope.square_().add_(1.0).rsqrt_())
    below = _ramp(-s_dia, 0.01)  # 0 above the domes, 1 well below

    # ---- heart: left ventricle (rotated ellipse, image right) ∪ right atrium (image left)
    ex, ey = dx - P["lv_x"], y - P["lv_y"]
    s_lv = _ellipse_sd(P["lv_cos"] * ex + P["lv_sin"] * ey, P["lv_cos"] * ey - P["lv_sin"] * ex,
                       P["lv_rx"], P["lv_ry"])
    s_heart = _smax(s_lv, _ellipse_sd(dx - P["ra_x"], y - P["ra_y"], P["ra_rx"], P["ra_ry"]), 0.03)
    # the aortic knob and the pulmonary trunk bulge from the mediastinum into the left lung (image right)
    s_great = torch.maximum(_ellipse_sd(dx - P["knob_x"], y - P["knob_y"], P["knob_r"], P["knob_r"]),
                            _ellipse_sd(dx - P["pa_x"], y - P["hil_yl"] + 0.03, P["pa_r"], P["pa_r"] * 1.3))

    # ---- lungs: superellipses (|X|³ + |Y|³ < 1: rounded apices, full bases), narrower at the top, minus
    # mediastinum, heart and great vessels, above the domes
    yc = P["apex_y"] + P["lung_b"]
    Yn = (y - yc) / P["lung_b"]
    a_lung = side(P["lung_a_r"], P["lung_a_l"]) * (1.0 - P["lung_taper"] * (-Yn).clamp(0.0, 1.0).square_())
    Xn = (ad - P["lung_dc"]) / a_lung
    X2, Y2 = Xn * Xn, Yn * Yn
    grad = (X2 / a_lung).square_().add_((Y2 / P["lung_b"]).square_()).add_(1e-6).sqrt_().mul_(3.0)
    s_cage = (1.0 - X2 * Xn.abs() - Y2 * Yn.abs()).div_(grad)
    # mediastinum: a central band, merged smoothly with the great vessels and the heart
    s_medi = _smax(_smax(side(P["med_r"], P["med_l"]) - ad, s_great, 0.04), s_heart, 0.03)
    s_lung = torch.minimum(torch.minimum(s_cage, -s_medi), s_dia)
    lung = _ramp(s_lung, edge + 0.0015)
    depth = (s_lung * (0.4 / 0.05)).clamp_(0.0, 0.4).add_(0.6).mul_(
        ((y - P["apex_y"]) * (0.22 / 0.18)).clamp_(0.0, 0.22).add_(0.78))

    # ---- pneumonia: patchy, ill-defined consolidation replacing air (sharp where a fissure bounds a lobe)
    patchy = torch.tanh(fields[:, 2]).mul_(0.5).add_(1.0)  # 0.5–1.5: irregular, but no holes in a dense patch
    cons = torch.zeros_like(dx)
    for j in range(MAX_PATCHES):
        if not bool((P[f"pn{j}_amp"] > 0).any()):
            continue
        qq = ((dx - P[f"pn{j}_x"]) / P[f"pn{j}_rx"]).square_().add_(((y - P[f"pn{j}_y"]) / P[f"pn{j}_ry"]).square_())
        cons += P[f"pn{j}_amp"] * torch.exp(-qq * qq.sqrt().clamp_(min=0.3))  # flat-topped blobs
    cons = 1.0 - torch.exp(-1.6 * cons * patchy)  # saturating
    if bool((P["severity"] != 1.0).any()):  # a milder finding: s times the density (1: untouched, byte for byte)
        cons = cons * P["severity"]
    if bool((P["fissure"] != 0).any()):
        fis = _ramp(P["fissure"] * (P["fissure_y"] - y), edge + 0.002)
        cons = cons * (1.0 - P["fissure"].abs() * rs * (1.0 - fis))
    cons = cons * lung
    # the air the consolidation replaces comes back as density (the fine grid removes all the air)
    extra = T * P["air"] * lung * depth * P["pn_fill"] * cons

    # ---- heart, hila, lung texture, film mottle
    extra += P["heart_extra"] * _ramp(s_heart, edge + 0.002) * T
    hil_y = side(P["hil_yr"], P["hil_yl"])
    hil = _bump(((ad - P["hil_d"]) / 0.04).square_() + ((y - hil_y) / 0.07).square_())
    extra += (P["hil_amp"] * hil + P["texture"] * fields[:, 1]) * lung * (1.0 - cons)
    extra += P["mottle"] * fields[:, 0]

    # ---- trachea and main bronchi: a dark air column down to the carina, then two limbs
    s_tr = torch.minimum(P["tr_hw"] - (dx - P["tr_x"]).abs(), P["carina_y"] - y)
    yb = y - P["carina_y"] + 0.01
    for sgn, run, drop in ((-1.0, 0.055, 0.075), (1.0, 0.085, 0.06)):
        inv = 1.0 / math.hypot(run, drop)
        across = ((dx - P["tr_x"]) * (drop * inv) - sgn * yb * (run * inv)).abs_()
        s_tr = torch.maximum(s_tr, torch.minimum(P["tr_hw"] * 0.75 - across, torch.minimum(yb, drop - yb)))
    extra -= P["tr_amp"] * _ramp(s_tr, edge + 0.003) * T

    # ---- spine: vertebral bodies with darker discs, pedicles, spinous processes; full height
    yy = y.clamp(0.0, 1.0)
    hw = P["sp_hw"] * (0.8 + 0.35 * yy)
    period = P["sp_period"] * (0.85 + 0.3 * yy)
    phi = (y - P["sp_phase"] * P["sp_period"]) / period
    fr = phi - torch.floor(phi)
    body_y = _ramp((torch.minimum(fr, 1.0 - fr) - 0.11) * period, edge + 0.002)
    vert = _ramp(hw - ad, edge + 0.002) * (0.7 + 0.3 * body_y)
    vert += 0.5 * _bump(((ad - 0.78 * hw) / (0.22 * hw)).square_() + ((fr - 0.38) / 0.16).square_())  # pedicles
    vert += 0.3 * _bump((dx / (0.16 * hw)).square_() + ((fr - 0.8) / 0.14).square_())  # spinous processes
    extra += P["sp_amp"] * vert * T

    # ---- ribs: posterior (brighter, nearly horizontal at the spine, curving down laterally) and anterior
    # (fainter, sloping down towards the midline); inside the rib cage, faint over the abdomen
    cage = _ramp(s_cage + 0.02, edge + 0.003) * _ramp(ad - 0.9 * hw, edge + 0.004) * (1.0 - 0.85 * below)
    y1 = P["rib_y1"] + P["rib_dy_l"] * (1.0 - rs)
    ad2 = ad * ad
    gd = ad * (-P["rib_g1"] + ad * (P["rib_g2"] + P["rib_g4"] * ad2))
    gpd = -P["rib_g1"] + ad * (2.0 * P["rib_g2"] + 4.0 * P["rib_g4"] * ad2)
    post, kp = _curve_family(y, y1 + gd, P["rib_s0"], P["rib_s1"], gpd, P["rib_h"], edge + 0.0012)
    post *= kp.clamp(0.0, 1.0) * (13.0 - kp).clamp_(0.0, 1.0) * cage
    d_ref = 0.39
    g_ref = -P["rib_g1"] * d_ref + P["rib_g2"] * d_ref ** 2 + P["rib_g4"] * d_ref ** 4
    ri = (d_ref - ad).clamp_(min=0.0)
    ant, ka = _curve_family(y, y1 + g_ref + ri * (P["ant_slope"] + P["ant_curv"] * ri) + P["ant_k0"] * P["rib_s0"],
                            P["rib_s0"], P["rib_s1"], P["ant_slope"] + 2.0 * P["ant_curv"] * ri, P["ant_h"],
                            edge + 0.003)
    ant *= ka.clamp(0.0, 1.0) * (10.0 - ka).clamp_(0.0, 1.0) * cage * _ramp(ad - P["ant_dcc"], 0.006)
    post *= torch.sin(kp * 1.9 + P["rib_ph"]).mul_(P["rib_var"]).add_(1.0)
    extra += P["rib_amp"] * post + P["ant_amp"] * ant

    # ---- clavicles: S-shaped bars, thicker medially, rising to the shoulders
    L_cl = P["cl_d1"] - P["cl_d0"]
    tc = (ad - P["cl_d0"]) / L_cl
    tcc = tc.clamp(0.0, 1.0)
    ycl = P["cl_y0"] + P["cl_dy_l"] * (1.0 - rs) + (P["cl_y1"] - P["cl_y0"]) * tc + P["cl_s"] * tcc * (
        1.0 - tcc) * (1.0 - 2.0 * tcc)
    hcl = P["cl_h"] * (1.15 - 0.45 * tcc) + 0.005 * _bump((tc / 0.12).square_())
    s_clav = torch.minimum(hcl - (y - ycl).abs_(), torch.minimum(tc * L_cl, (1.0 - tc) * L_cl))
    extra += P["cl_amp"] * _ramp(s_clav, edge + 0.0015)

    # ---- optional structures, computed only when some image of the chunk has them
    if bool(P["hum"].any()):  # humeral heads at the top corners
        r_h = ((ad - P["hum_d"]).square_() + (y - P["hum_y"]).square_()).sqrt_()
        extra += 0.22 * P["hum"] * _ramp(P["hum_r"] - r_h, edge + 0.003) * T
    if bool(P["scap"].any()):  # faint scapulae over the upper lateral lungs, sharp medial border
        scap = _ramp(ad - (P["scap_d"] - P["scap_k"] * (y - 0.15)), edge + 0.003) * _ramp(y - 0.13, 0.01)
        extra += 0.07 * P["scap"] * scap * _ramp(P["scap_yb"] - y - 0.1 * (ad - P["scap_d"]), 0.008) * T
    if bool(P["breast"].any()):  # rounded densities over the lower lungs, sharp below, fading upwards
        bq = _ellipse_sd(ad - P["br_d"], y - P["br_y"], P["br_rx"], P["br_ry"])
        fade = ((y - P["br_y"] + P["br_ry"]) / (2.0 * P["br_ry"])).clamp_(0.0, 1.0).square_()
        extra += P["breast"] * P["br_amp"] * _ramp(bq, 0.004) * fade
    if bool(P["gas"].any()):  # gastric bubble: dome under the left hemidiaphragm, flat air-fluid level
        gy = y_dia + 0.014 + P["gas_ry"]
        s_gas = torch.minimum(_ellipse_sd(dx - P["gas_x"], y - gy, P["gas_rx"], P["gas_ry"] * 1.6),
                              gy + 0.35 * P["gas_ry"] - y)
        extra -= P["gas"] * P["gas_amp"] * _ramp(s_gas, edge + 0.003) * (1.0 - rs) * T

    out = [extra, s_body, s_lung, (0.35 + 0.65 * lung) * (1.0 - cons), cons * cons, _thickness(s_body, ad, P)]
    if want_masks:  # positive inside, like the signed distances
        out += [torch.minimum(s_heart, s_dia + 0.01), torch.maximum(post, ant) - 0.5, s_clav]
    return torch.stack(out, dim=1)


def _gaussian_blur(x: torch.Tensor, sigma_px: torch.Tensor) -> torch.Tensor:
    """Blur each image of x (B, S, S) with its own Gaussian sigma (B,) in px: separable, edge-replicating,
    as weighted sums of shifted views (cheaper than a grouped convolution on the CPU)."""
    B, S, _ = x.shape
    rad = max(1, min(S - 1, int(math.ceil(2.5 * float(sigma_px.max())))))
    k = torch.arange(-rad, rad + 1, dtype=torch.float32)
    w = torch.exp(-0.5 * (k[None] / sigma_px[:, None].clamp(min=0.05)) ** 2)
    w = (w / w.sum(dim=1, keepdim=True)).view(B, 1, 1, -1)
    for dim in (2, 1):  # columns, then rows
        pad = (rad, rad, 0, 0) if dim == 2 else (0, 0, rad, rad)
        xp = F.pad(x[None], pad, mode="replicate")[0]
        out = xp.narrow(dim, rad, S) * w[..., rad]
        for j in range(1, rad + 1):
            out.addcmul_(xp.narrow(dim, rad - j, S) + xp.narrow(dim, rad + j, S), w[..., rad + j])
        x = out
    return x


def _film(P, D, marker, noise, S, r0, r1) -> torch.Tensor:
    """Blurred density rows r0..r1-1 → displayed film (B, rows, S) uint8: window, gamma, S-curve,
    contrast, noise, collimation, side marker."""
    x = ((D - P["lo"]) * (1.0 / (P["hi"] - P["lo"]))).clamp_(0.0, 1.0).pow_(P["gamma"])
    x += P["s_curve"] * x * (1.0 - x) * (2.0 * x - 1.0)  # film-like S-curve: more contrast in the mids
    x = (x - 0.5).mul_(P["contrast"]).add_(0.5 + P["bright"])
    # quantum noise is stronger where fewer photons reach the detector (bright, dense areas)
    x += (0.6 + 0.8 * x).mul_(P["noise"] * noise)
    if bool(sum(P[f"col_{n}"] for n in ("top", "bottom", "left", "right")).any()):
        g = (torch.arange(S, dtype=torch.float32) + 0.5) / S
        col = torch.zeros_like(x)
        gy = g[r0:r1].view(1, -1, 1)
        for name, dist in (("top", gy), ("bottom", 1.0 - gy),
                           ("left", g.view(1, 1, S)), ("right", 1.0 - g.view(1, 1, S))):
            col = torch.maximum(col, (P[f"col_{name}"] > 0) * _ramp(P[f"col_{name}"] - dist, 0.5 / S))
        x += (0.92 - x) * col  # outside the collimated field the detector is not exposed: white
    if bool(marker.any()):
        x = torch.maximum(x, 0.97 * marker)
    return x.clamp_(0.0, 1.0).mul_(255.0).add_(0.5).to(torch.uint8)
