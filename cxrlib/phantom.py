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

Rendering is vectorised: a chunk of images is computed with torch on coordinate grids (no per-pixel Python);
thin branching vessels and bronchi are drawn as polylines with Pillow.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxrlib.errors import CxrError

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
        """images as (N, 1, S, S) float32 in [-1, 1], what the GAN trains on."""
        return self.images.float() / 127.5 - 1.0


# ======================================================================= public API
def generate(
    n: int, size: int = 256, seed: int = 0, pneumonia_fraction: float = 0.5, masks: bool = False
) -> Phantoms:
    """``n`` phantom PA chest radiographs of ``size`` x ``size`` px (32–1024).

    The share of pneumonia images is exactly ``pneumonia_fraction`` up to rounding, in every prefix of the
    sequence; which images they are depends on ``seed``. Same arguments → same bytes, and
    ``generate(10, ...)[:5]`` equals ``generate(5, ...)``.
    """
    _check_args(n, size, pneumonia_fraction)
    return _generate_range(0, n, size, seed, pneumonia_fraction, masks)


def write_phantoms(
    out, n: int, size: int = 256, seed: int = 0, pneumonia_fraction: float = 0.5, masks: bool = False
) -> str:
    """Write ``n`` phantoms as a data-set folder and return a one-paragraph summary.

    Layout: ``out/normal/cxr_00000.png``, ``out/pneumonia/…``, ``out/manifest.csv`` (file, label, class,
    index, seed, size) and with ``masks`` ``out/masks/<structure>/<same stem>.png`` (0/255). The folder is
    built beside ``out`` under a temporary name and renamed when complete, so a failure leaves nothing
    half-written; an ``out`` that exists and is not empty is refused.
    """
    _check_args(n, size, pneumonia_fraction)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CxrError(f"cannot write phantoms to '{out}': it exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise CxrError(f"cannot write phantoms to '{out}': the folder exists and is not empty (choose a new one)")
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        counts = _write_into(tmp, n, size, seed, pneumonia_fraction, masks)
        if out.is_dir():
            out.rmdir()  # empty (checked above); rename needs the name free
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    secs = time.perf_counter() - t0
    mask_txt = f", masks of the {', '.join(MASK_NAMES)} under masks/" if masks else ""
    return (
        f"Wrote {n} phantom chest X-rays ({size}x{size} px, seed {seed}) to '{out}': "
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


def _chunk_size(size: int) -> int:
    """Images rendered together. It depends on the size only, and chunks start at multiples of it, so an
    image is always computed in the same company and the same tensor shapes: bytes never depend on n."""
    return int(max(1, min(32, (1 << 18) // (size * size))))


def _generate_range(start, stop, size, seed, fraction, masks) -> Phantoms:
    labels = _labels(start, stop, seed, fraction)
    B = _chunk_size(size)
    first = (start // B) * B
    imgs, msks = [], {k: [] for k in MASK_NAMES}
    for c0 in range(first, stop, B):
        idx = range(c0, c0 + B)
        lab = _labels(c0, c0 + B, seed, fraction)
        img, m = _render_chunk(idx, lab, size, seed, masks)
        lo, hi = max(start, c0) - c0, min(stop, c0 + B) - c0
        imgs.append(img[lo:hi])
        if masks:
            for k in MASK_NAMES:
                msks[k].append(m[k][lo:hi])
    images = torch.cat(imgs)
    mask_dict = {k: torch.cat(v) for k, v in msks.items()} if masks else None
    return Phantoms(images, torch.from_numpy(labels), mask_dict, CLASSES, int(seed))


def _write_into(root: Path, n, size, seed, fraction, masks) -> list[int]:
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
            ph = _generate_range(s0, min(n, s0 + step), size, seed, fraction, masks)
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
    """Small helpers over a numpy Generator so the parameter lists below read like tables."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def p(self, prob: float) -> float:
        return float(self.rng.random() < prob)


def _anatomy_and_film(r: _Draw) -> dict[str, float]:
    """One patient and one exposure. Lengths are fractions of the image; see ANATOMY.md for the ranges."""
    p: dict[str, float] = {}
    # --- acquisition geometry: rotation, scale (patient size / distance), shift
    rot = math.radians(r.u(-3.5, 3.5))
    p["cos"], p["sin"] = math.cos(rot), math.sin(rot)
    p["scale"] = r.u(0.92, 1.07)
    p["tx"], p["ty"] = r.u(-0.03, 0.03), r.u(-0.035, 0.025)
    # --- body outline: neck, shoulders sloping down from it, flanks
    p["neck_hw"] = r.u(0.075, 0.10)
    p["neck_y"] = r.u(-0.01, 0.04)
    p["shoulder_slope"] = r.u(0.10, 0.22)
    p["shoulder_curv"] = r.u(0.1, 0.5)
    p["trunk_hw"] = r.u(0.43, 0.52)
    p["fat"] = r.u(0.04, 0.09)
    # --- lungs: a tapered ellipse per side, clipped by mediastinum, heart and diaphragm
    p["lung_a_l"] = r.u(0.175, 0.205)
    p["lung_a_r"] = p["lung_a_l"] * r.u(1.01, 1.08)  # the right lung (image left) is wider
    p["lung_dc"] = r.u(0.19, 0.22)
    p["apex_y"] = r.u(0.085, 0.125)
    p["lung_b"] = r.u(0.50, 0.58)
    p["lung_taper"] = r.u(0.2, 0.38)
    p["med_r"] = r.u(0.045, 0.06)
    p["med_l"] = r.u(0.035, 0.05)
    p["air"] = r.u(0.55, 0.68)  # how much of the soft-tissue density the air in the lungs removes
    # --- diaphragm: domes (the right one, image left, higher), steeper laterally → sharp costophrenic angles
    p["dome_r"] = r.u(0.61, 0.70)
    p["dome_l"] = p["dome_r"] + r.u(0.01, 0.03)
    p["dome_xr"], p["dome_xl"] = r.u(0.13, 0.19), r.u(0.15, 0.21)
    p["dome_k"], p["dome_q"] = r.u(1.0, 2.0), r.u(6.0, 20.0)
    # --- heart: left ventricle (rotated ellipse) + right atrium; CTR ≈ 0.4–0.5
    p["lv_x"], p["lv_rx"], p["lv_ry"] = r.u(0.05, 0.08), r.u(0.12, 0.155), r.u(0.10, 0.13)
    p["lv_y"] = p["dome_l"] - r.u(0.07, 0.10)
    ang = r.u(0.25, 0.55)
    p["lv_cos"], p["lv_sin"] = math.cos(ang), math.sin(ang)
    p["ra_x"], p["ra_rx"], p["ra_ry"] = -r.u(0.035, 0.06), r.u(0.06, 0.08), r.u(0.075, 0.10)
    p["ra_y"] = p["dome_r"] - r.u(0.06, 0.09)
    p["heart_extra"] = r.u(0.02, 0.08)
    # --- aortic knob, trachea, bronchi
    p["knob_x"], p["knob_y"], p["knob_r"] = r.u(0.05, 0.07), r.u(0.27, 0.32), r.u(0.026, 0.036)
    p["tr_x"], p["tr_hw"], p["carina_y"] = r.u(-0.012, 0.002), r.u(0.017, 0.024), r.u(0.30, 0.35)
    p["tr_amp"] = r.u(0.10, 0.18)
    # --- spine
    p["sp_hw"], p["sp_period"], p["sp_phase"] = r.u(0.032, 0.042), r.u(0.045, 0.056), r.u(0.0, 1.0)
    p["sp_amp"] = r.u(0.25, 0.38)
    # --- ribs: y = y1 + s0 k + s1 k² + g(d)(1 + c k) for rib k at distance d from the midline
    p["rib_y1"], p["rib_s0"], p["rib_s1"] = r.u(0.075, 0.11), r.u(0.037, 0.045), r.u(0.0014, 0.0026)
    p["rib_c"] = r.u(0.0, 0.03)
    p["rib_g1"], p["rib_g2"], p["rib_g4"] = r.u(0.05, 0.14), r.u(0.55, 0.9), r.u(1.0, 4.0)
    p["rib_dy_l"] = r.u(-0.008, 0.008)  # left and right ribs are not exactly level
    p["rib_h"], p["rib_amp"] = r.u(0.0085, 0.0115), r.u(0.13, 0.2)
    p["ant_slope"], p["ant_curv"], p["ant_dcc"] = r.u(0.3, 0.5), r.u(0.0, 0.6), r.u(0.11, 0.16)
    p["ant_amp"] = p["rib_amp"] * r.u(0.3, 0.5)
    p["ant_h"] = p["rib_h"] * r.u(1.15, 1.4)
    p["ant_k0"] = r.u(0.0, 0.4)
    # --- clavicles (thicker medially, slightly S-shaped), humeral heads, scapulae
    p["cl_d0"], p["cl_y0"] = r.u(0.03, 0.05), r.u(0.17, 0.21)
    p["cl_d1"], p["cl_y1"] = r.u(0.30, 0.36), r.u(0.09, 0.14)
    p["cl_dy_l"] = r.u(-0.01, 0.01)
    p["cl_h"], p["cl_s"], p["cl_amp"] = r.u(0.010, 0.014), r.u(0.002, 0.008), r.u(0.22, 0.32)
    p["hum"] = r.p(0.65)
    p["hum_d"], p["hum_y"], p["hum_r"] = r.u(0.44, 0.5), r.u(0.15, 0.21), r.u(0.05, 0.07)
    p["scap"] = r.p(0.75)
    p["scap_d"], p["scap_k"], p["scap_yb"] = r.u(0.30, 0.37), r.u(0.05, 0.2), r.u(0.42, 0.52)
    # --- gastric bubble under the left dome (image right), with an air-fluid level
    p["gas"] = r.p(0.85)
    p["gas_x"], p["gas_rx"], p["gas_ry"] = r.u(0.10, 0.2), r.u(0.03, 0.055), r.u(0.018, 0.03)
    p["gas_amp"] = r.u(0.2, 0.4)
    # --- breasts (soft rounded densities over the lower lungs), hila, vessel markings
    p["breast"] = r.p(0.35)
    p["br_d"], p["br_y"], p["br_rx"], p["br_ry"] = r.u(0.22, 0.3), r.u(0.6, 0.68), r.u(0.13, 0.18), r.u(0.1, 0.14)
    p["br_amp"] = r.u(0.06, 0.14)
    p["hil_d"] = r.u(0.075, 0.1)
    p["hil_yr"] = r.u(0.40, 0.45)
    p["hil_yl"] = p["hil_yr"] - r.u(0.0, 0.03)  # the left hilum sits a little higher
    p["hil_amp"], p["ves_amp"] = r.u(0.06, 0.12), r.u(0.10, 0.18)
    # --- film: window, gamma, contrast, blur, noise, collimation, side marker
    p["lo"], p["hi"] = r.u(-0.08, 0.02), r.u(1.30, 1.55)
    p["gamma"], p["contrast"], p["bright"] = r.u(0.8, 1.25), r.u(0.9, 1.15), r.u(-0.05, 0.05)
    p["blur"] = r.u(0.25, 0.9) / 256.0  # Gaussian sigma as a fraction of the image
    p["noise"], p["mottle"] = r.u(0.006, 0.022), r.u(0.0, 0.02)
    for side in ("top", "bottom", "left", "right"):
        p[f"col_{side}"] = r.p(0.15) * r.u(0.01, 0.05)
    return p


def _pneumonia(r: _Draw, a: dict[str, float], ill: bool) -> dict[str, float]:
    """Consolidation patches: up to MAX_PATCHES blobs in lung zones (lower zones most often)."""
    p: dict[str, float] = {}
    n = int(r.rng.choice([1, 2, 3, 4], p=[0.4, 0.35, 0.18, 0.07])) if ill else 0
    p["fissure"] = 0.0
    for j in range(MAX_PATCHES):
        side = -1.0 if r.rng.random() < 0.55 else 1.0  # -1: patient's right lung (image left)
        zone = int(r.rng.choice(3, p=[0.2, 0.3, 0.5]))  # upper, middle, lower
        top, dome = a["apex_y"] + 0.05, (a["dome_r"] if side < 0 else a["dome_l"])
        hil = a["hil_yr"] if side < 0 else a["hil_yl"]
        bands = [(top, hil - 0.04), (hil - 0.06, hil + 0.08), (hil + 0.06, dome - 0.03)]
        y0, y1 = bands[zone]
        p[f"pn{j}_x"] = side * r.u(0.1, 0.3)
        p[f"pn{j}_y"] = r.u(y0, max(y0 + 0.01, y1))
        p[f"pn{j}_rx"], p[f"pn{j}_ry"] = r.u(0.04, 0.11), r.u(0.04, 0.12)
        p[f"pn{j}_amp"] = r.u(0.6, 1.3) if j < n else 0.0
        if j == 0 and side < 0 and zone < 2 and r.rng.random() < 0.3:
            p["fissure"] = 1.0 if zone == 0 else -1.0  # right upper / middle lobe: sharp at the minor fissure
    p["fissure_y"] = a["hil_yr"] + r.u(-0.03, 0.0)
    p["pn_fill"] = r.u(0.75, 0.95)  # how much of the air a dense patch replaces
    p["bronchogram"] = r.p(0.5) if ill else 0.0
    p["bronch_amp"] = r.u(0.15, 0.3)
    return p


# ======================================================================= Pillow layers: vessels, bronchi, marker
def _to_image(p: dict[str, float], x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Anatomical (x, y) → image (u, v), the inverse of the grid mapping in ``_render_chunk``."""
    X, Y, sc = x - 0.5, y - 0.5, p["scale"]
    u = 0.5 + p["tx"] + sc * (p["cos"] * X - p["sin"] * Y)
    v = 0.5 + p["ty"] + sc * (p["sin"] * X + p["cos"] * Y)
    return u, v


def _branches(rng, x0, y0, angles, length, steps, jitter):
    """Random-walk polylines, one per start point (x0[i], y0[i]) heading at angles[i] (radians, y down).

    Returns (points (n, steps+1, 2), heading after each step (n, steps)).
    """
    n = len(angles)
    x0 = np.broadcast_to(np.asarray(x0, dtype=np.float64), (n,))
    y0 = np.broadcast_to(np.asarray(y0, dtype=np.float64), (n,))
    turn = np.cumsum(rng.normal(0.0, jitter, (n, steps)), axis=1) + np.asarray(angles)[:, None]
    step = (np.asarray(length)[:, None] / steps) * rng.uniform(0.7, 1.3, (n, steps))
    pts = np.empty((n, steps + 1, 2))
    pts[:, 0, 0], pts[:, 0, 1] = x0, y0
    pts[:, 1:, 0] = x0[:, None] + np.cumsum(step * np.cos(turn), axis=1)
    pts[:, 1:, 1] = y0[:, None] + np.cumsum(step * np.sin(turn), axis=1)
    return pts, turn


def _vessel_tree(rng, hx, hy, lateral, length, width):
    """Branching pulmonary vessels from a hilum at (hx, hy) in anatomical coordinates.

    lateral: -1 for the image-left lung, +1 for the image-right one. Returns a list of
    (points (k, 2), width, brightness 0–1) polylines: trunks, their branches and twigs, thinner and fainter
    with each generation, so the markings fade towards the periphery as on a film.
    """
    lines = []
    # angles measured from straight lateral, positive downward; the lower lobe gets most vessels
    rel = np.linspace(-1.45, 1.75, 8) + rng.uniform(-0.12, 0.12, 8)
    ang = np.where(lateral > 0, rel, math.pi - rel)
    ln = length * rng.uniform(0.45, 0.75, 8) * np.where(np.abs(rel) > 1.2, 0.7, 1.0)
    trunks, turn = _branches(rng, hx, hy, ang, ln, 6, 0.07)
    for t in range(len(trunks)):
        lines.append((trunks[t, :4], width, 1.0))
        lines.append((trunks[t, 3:], width * 0.65, 0.75))
    # branches leave each trunk at a random step, diverging by 0.3–0.7 rad, then twigs off them
    parent = rng.integers(0, len(trunks), 14)
    at = rng.integers(2, 5, 14)
    sgn = rng.choice([-1.0, 1.0], 14)
    bx, by = trunks[parent, at, 0], trunks[parent, at, 1]
    bang = turn[parent, at - 1] + sgn * rng.uniform(0.3, 0.7, 14)
    br, bturn = _branches(rng, bx, by, bang, length * rng.uniform(0.2, 0.4, 14), 4, 0.1)
    for b in range(len(br)):
        lines.append((br[b], width * 0.5, 0.7))
    parent = rng.integers(0, len(br), 16)
    at = rng.integers(1, 4, 16)
    tx, ty = br[parent, at, 0], br[parent, at, 1]
    tang = bturn[parent, at - 1] + rng.choice([-1.0, 1.0], 16) * rng.uniform(0.3, 0.8, 16)
    tw, _ = _branches(rng, tx, ty, tang, length * rng.uniform(0.08, 0.18, 16), 2, 0.1)
    for b in range(len(tw)):
        lines.append((tw[b], width * 0.35, 0.5))
    return lines


def _draw_lines(p, size: int, lines, oversample: int) -> np.ndarray:
    """Polylines in anatomical coordinates → an (S, S) float32 layer in [0, 1], antialiased by drawing
    ``oversample`` times larger and box-averaging down."""
    from PIL import Image, ImageDraw

    big = size * oversample
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    for pts, width, bright in lines:
        u, v = _to_image(p, pts[:, 0], pts[:, 1])
        w_px = width * p["scale"] * big
        # a vessel thinner than a pixel is drawn one pixel wide and proportionally fainter
        value = int(round(255 * bright * min(1.0, w_px)))
        if value <= 0:
            continue
        xy = list(zip((u * big - 0.5).tolist(), (v * big - 0.5).tolist()))
        draw.line(xy, fill=value, width=max(1, int(round(w_px))), joint="curve")
    if oversample > 1:
        img = img.reduce(oversample)
    return np.asarray(img, dtype=np.float32) / 255.0


def _marker_lines(r: _Draw, p) -> tuple[list, dict]:
    """A lead side marker, "L" (image right) or "R" (image left), as strokes in anatomical coordinates."""
    kind = r.rng.choice(3, p=[0.35, 0.45, 0.2])  # none, L, R
    h = r.u(0.035, 0.05)
    # the marker lies on the detector, not on the patient: no acquisition transform for it
    q = dict(p, cos=1.0, sin=0.0, scale=1.0, tx=0.0, ty=0.0)
    if kind == 0:
        return [], q
    x0 = r.u(0.86, 0.9) if kind == 1 else r.u(0.06, 0.1)
    y0 = r.u(0.06, 0.1) if r.rng.random() < 0.7 else r.u(0.82, 0.88)
    w = h * 0.6
    if kind == 1:
        strokes = [[(x0, y0), (x0, y0 + h), (x0 + w, y0 + h)]]
    else:
        t = np.linspace(-math.pi / 2, math.pi / 2, 9)
        bowl = [(x0 + w * 0.55 + w * 0.45 * math.cos(a), y0 + h * 0.25 + h * 0.25 * math.sin(a)) for a in t]
        strokes = [[(x0, y0 + h), (x0, y0), (x0 + w * 0.55, y0)] + bowl + [(x0, y0 + h * 0.5)],
                   [(x0 + w * 0.45, y0 + h * 0.5), (x0 + w, y0 + h)]]
    return [(np.asarray(s), h * 0.16, 1.0) for s in strokes], q


def _layers(p, pn, size, rng_a: _Draw, rng_p: _Draw) -> np.ndarray:
    """(3, S, S) float32: vessels, bronchi (air bronchograms), side marker."""
    over = 2 if size <= 512 else 1
    lines = []
    for side, hy in ((-1.0, p["hil_yr"]), (1.0, p["hil_yl"])):
        hx = 0.5 + side * p["hil_d"]
        lines += _vessel_tree(rng_a.rng, hx, hy, side, 0.36, rng_a.u(0.006, 0.009))
    vessels = _draw_lines(p, size, lines, over)
    strokes, q = _marker_lines(rng_a, p)
    mk = _draw_lines(q, size, strokes, over)
    bronchi = np.zeros((size, size), np.float32)
    if pn["bronchogram"]:
        blines = []
        for j in range(MAX_PATCHES):
            if pn[f"pn{j}_amp"] <= 0:
                continue
            side = -1.0 if pn[f"pn{j}_x"] < 0 else 1.0
            hx, hy = 0.5 + side * p["hil_d"], p["hil_yr"] if side < 0 else p["hil_yl"]
            tx, ty = 0.5 + pn[f"pn{j}_x"], pn[f"pn{j}_y"]
            ang = math.atan2(ty - hy, tx - hx)
            dist = math.hypot(tx - hx, ty - hy) + 0.06
            trunk, turn = _branches(rng_p.rng, hx, hy, np.array([ang]), np.array([dist]), 6, 0.05)
            blines.append((trunk[0], 0.007, 1.0))
            at = rng_p.rng.integers(2, 6, 4)
            bang = turn[0, at - 1] + rng_p.rng.choice([-1.0, 1.0], 4) * rng_p.rng.uniform(0.3, 0.6, 4)
            br, _ = _branches(rng_p.rng, trunk[0, at, 0], trunk[0, at, 1], bang, np.full(4, 0.07), 3, 0.1)
            blines += [(b, 0.005, 0.9) for b in br]
        bronchi = _draw_lines(p, size, blines, over)
    return np.stack([vessels, bronchi, mk])


# ======================================================================= rendering
def _soft(s: torch.Tensor, w) -> torch.Tensor:
    """Soft inside-indicator of a signed distance s (positive inside) with edge width w."""
    return torch.sigmoid(s / w)


def _smax(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    """Smooth maximum (union of shapes) with a rounded join of size k."""
    h = (k - (a - b).abs()).clamp(min=0.0) / k
    return torch.maximum(a, b) + h * h * (k * 0.25)


def _ellipse_sd(ex: torch.Tensor, ey: torch.Tensor, rx, ry) -> torch.Tensor:
    """Approximate signed distance to an axis-aligned ellipse (positive inside), first-order accurate near
    its border: (1 - r) / |grad r| with r the normalised radius."""
    px, py = ex / rx, ey / ry
    r2 = px * px + py * py + 1e-12
    g2 = (px / rx) ** 2 + (py / ry) ** 2 + 1e-12
    return (1.0 - torch.sqrt(r2)) * torch.sqrt(r2 / g2)


def _curve_family(y, A, Bk, s1, dA, dB, h, w):
    """Bands around the curves y = A + Bk·k + s1·k² (k = 1, 2, …; A, Bk may vary with position).

    Solves for the continuous index k at every pixel, measures the distance to the nearest integer curve
    (perpendicular, using the curves' slope dA + dB·k) and returns (band in [0, 1] of half-width h, k rounded).
    """
    C = A - y
    disc = (Bk * Bk - 4.0 * s1 * C).clamp(min=0.0)
    k = -2.0 * C / (Bk + torch.sqrt(disc))
    kr = torch.round(k)
    spacing = Bk + 2.0 * s1 * k
    slope = dA + dB * k
    dist = (k - kr).abs() * spacing * torch.rsqrt(1.0 + slope * slope)
    return _soft(h - dist, w), kr


def _stack(dicts: list[dict[str, float]]) -> dict[str, torch.Tensor]:
    """List of per-image parameter dicts → name: (B, 1, 1) float32 tensor."""
    return {k: torch.tensor([d[k] for d in dicts], dtype=torch.float32).view(-1, 1, 1) for k in dicts[0]}


def _lowres_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(cells, cells) standard normal field; upsampled later into smooth blotches."""
    return rng.standard_normal((cells, cells), dtype=np.float32)


def _render_chunk(indices, labels, size: int, seed: int, want_masks: bool):
    """Render images ``indices`` → ((B, 1, S, S) uint8, masks dict or None)."""
    S = size
    anat, pneu, layers, noise, blotch, patch = [], [], [], [], [], []
    for i, lab in zip(indices, labels):
        ra, rp = _Draw(_rng(seed, i, 0)), _Draw(_rng(seed, i, 1))
        a = _anatomy_and_film(ra)
        pn = _pneumonia(rp, a, bool(lab))
        anat.append(a)
        pneu.append(pn)
        layers.append(_layers(a, pn, S, ra, rp))
        noise.append(ra.rng.standard_normal((S, S), dtype=np.float32))
        blotch.append(_lowres_noise(ra.rng, S, 24))
        patch.append((_lowres_noise(rp.rng, S, 12), _lowres_noise(rp.rng, S, 24)))
    P = _stack([{**a, **q} for a, q in zip(anat, pneu)])
    L = torch.from_numpy(np.stack(layers))  # (B, 3, S, S)
    N = torch.from_numpy(np.stack(noise))  # (B, S, S)
    blotch = F.interpolate(torch.from_numpy(np.stack(blotch))[:, None], size=(S, S), mode="bilinear",
                           align_corners=False)[:, 0]
    patchy = sum(
        wt * F.interpolate(torch.from_numpy(np.stack([q[o] for q in patch]))[:, None], size=(S, S),
                           mode="bicubic", align_corners=False)[:, 0]
        for o, wt in ((0, 0.6), (1, 0.4))
    )
    D, M = _density(P, L, patchy, S, want_masks)
    img = _film(P, D, L[:, 2], N, blotch, S)
    return img, M


def _density(P, L, patchy, S, want_masks):
    """The density map D (B, S, S): soft tissue minus air plus bone, and the masks (bool, (B, 1, S, S))."""
    g = (torch.arange(S, dtype=torch.float32) + 0.5) / S
    a = g.view(1, 1, S) - 0.5 - P["tx"]
    b = g.view(1, S, 1) - 0.5 - P["ty"]
    dx = (P["cos"] * a + P["sin"] * b) / P["scale"]  # anatomical coordinates of every pixel
    y = 0.5 + (P["cos"] * b - P["sin"] * a) / P["scale"]
    px = 1.0 / (S * P["scale"])  # one pixel in anatomical units
    edge = 0.45 * px  # sigmoid width of a crisp (anti-aliased) edge
    ad = dx.abs()
    right = dx < 0  # image left = patient's right

    def side(r_val, l_val):
        return torch.where(right, r_val, l_val)

    # ---- body: neck, shoulders, flanks; soft tissue thickens inward from the skin
    rn = (ad - P["neck_hw"]).clamp(min=0.0)
    s_shoulder = y - (P["neck_y"] + P["shoulder_slope"] * rn + P["shoulder_curv"] * rn * rn)
    s_top = _smax(P["neck_hw"] - ad, s_shoulder, 0.05)
    s_body = torch.minimum(s_top, P["trunk_hw"] - ad + 0.04 * (y - 0.5).clamp(max=0.0))
    T = _soft(s_body, edge + 0.002) * (0.5 + 0.5 * torch.tanh(s_body.clamp(min=0.0) / P["fat"]))

    # ---- diaphragm domes (the patient's right, image left, is higher)
    t = dx - side(-P["dome_xr"], P["dome_xl"])
    t2 = t * t
    y_dia = side(P["dome_r"], P["dome_l"]) + P["dome_k"] * t2 + P["dome_q"] * t2 * t2
    slope = t * (2.0 * P["dome_k"] + 4.0 * P["dome_q"] * t2)
    s_dia = (y_dia - y) * torch.rsqrt(1.0 + slope * slope)

    # ---- heart: left ventricle (rotated ellipse, image right) ∪ right atrium (image left)
    ex, ey = dx - P["lv_x"], y - P["lv_y"]
    s_lv = _ellipse_sd(P["lv_cos"] * ex + P["lv_sin"] * ey, P["lv_cos"] * ey - P["lv_sin"] * ex,
                       P["lv_rx"], P["lv_ry"])
    s_ra = _ellipse_sd(dx - P["ra_x"], y - P["ra_y"], P["ra_rx"], P["ra_ry"])
    s_heart = _smax(s_lv, s_ra, 0.03)
    s_knob = P["knob_r"] - torch.sqrt((dx - P["knob_x"]) ** 2 + (y - P["knob_y"]) ** 2)

    # ---- lungs: tapered ellipses (narrow apices), minus mediastinum, heart, aortic knob; above the domes
    yc = P["apex_y"] + P["lung_b"]
    Yn = (y - yc) / P["lung_b"]
    a_lung = side(P["lung_a_r"], P["lung_a_l"]) * (1.0 - P["lung_taper"] * 0.5 * (1.0 - Yn.clamp(-1.0, 1.0)))
    s_cage = _ellipse_sd(ad - P["lung_dc"], y - yc, a_lung, P["lung_b"])
    s_lung = torch.minimum(torch.minimum(s_cage, ad - side(P["med_r"], P["med_l"])),
                           torch.minimum(torch.minimum(-s_heart, -s_knob), s_dia))
    lung = _soft(s_lung, edge + 0.0015)
    # air is thickest in the outer middle of each lung, thinner at the edges and under the shoulders
    depth = 0.6 + 0.4 * (s_lung / 0.05).clamp(0.0, 1.0)
    depth = depth * (0.78 + 0.22 * ((y - P["apex_y"]) / 0.18).clamp(0.0, 1.0))

    # ---- pneumonia: patchy consolidation replacing air (computed everywhere, zero opacity when normal)
    cons = torch.zeros_like(dx)
    for j in range(MAX_PATCHES):
        q = ((dx - P[f"pn{j}_x"]) / P[f"pn{j}_rx"]) ** 2 + ((y - P[f"pn{j}_y"]) / P[f"pn{j}_ry"]) ** 2
        cons = cons + P[f"pn{j}_amp"] * torch.exp(-q * q.sqrt().clamp(min=0.3))
    cons = cons * (0.75 + 0.9 * patchy).clamp(min=0.0)
    fissure = _soft(P["fissure"] * (P["fissure_y"] - y), edge + 0.002)
    cons = cons * torch.where(right & (P["fissure"] != 0), fissure, torch.ones_like(cons))
    cons = (1.0 - torch.exp(-1.6 * cons)) * lung

    D = T * (1.0 - P["air"] * lung * depth * (1.0 - P["pn_fill"] * cons))

    # ---- heart, hila and vessels
    heart = _soft(s_heart, edge + 0.002)
    D = D + P["heart_extra"] * heart * T
    hil_y = side(P["hil_yr"], P["hil_yl"])
    hil = torch.exp(-(((ad - P["hil_d"]) / 0.035) ** 2 + ((y - hil_y) / 0.055) ** 2))
    D = D + (P["hil_amp"] * hil + P["ves_amp"] * L[:, 0]) * (0.35 + 0.65 * lung) * (1.0 - cons)
    D = D - P["bronch_amp"] * L[:, 1] * cons * cons

    # ---- trachea and main bronchi: a dark air column down to the carina
    s_tr = torch.minimum(P["tr_hw"] - (dx - P["tr_x"]).abs(), P["carina_y"] - y)
    for sgn, ddx, ddy in ((-1.0, 0.055, 0.075), (1.0, 0.085, 0.06)):
        s_tr = torch.maximum(s_tr, P["tr_hw"] * 0.75 - _segment_dist(dx, y, P["tr_x"], P["carina_y"] - 0.01,
                                                                     P["tr_x"] + sgn * ddx, P["carina_y"] + ddy))
    D = D - P["tr_amp"] * _soft(s_tr, edge + 0.003) * T

    # ---- spine: vertebral bodies with darker discs, pedicles, spinous processes; full height
    hw = P["sp_hw"] * (0.8 + 0.35 * y.clamp(0.0, 1.0))
    period = P["sp_period"] * (0.85 + 0.3 * y.clamp(0.0, 1.0))
    phi = (y - P["sp_phase"] * P["sp_period"]) / period
    fr = phi - torch.floor(phi)
    body_y = _soft((torch.minimum(fr, 1.0 - fr) - 0.11) * period, edge + 0.002)
    vert = _soft(hw - ad, edge + 0.002) * (0.5 + 0.5 * body_y)
    ped = torch.exp(-(((ad - 0.78 * hw) / (0.2 * hw)) ** 2 + ((fr - 0.38) / 0.15) ** 2))
    spin = torch.exp(-((dx / (0.14 * hw)) ** 2 + ((fr - 0.8) / 0.12) ** 2))
    D = D + P["sp_amp"] * (vert + 0.45 * ped + 0.3 * spin) * T

    # ---- ribs: posterior (bright, nearly horizontal at the spine, curving down laterally) and anterior
    # (fainter, sloping down towards the midline); both only inside the rib cage
    cage = _soft(s_cage + 0.02, edge + 0.003) * _soft(ad - 0.9 * hw, edge + 0.004)
    y1 = P["rib_y1"] + torch.where(right, torch.zeros_like(dx), P["rib_dy_l"].expand_as(dx))
    gd = -P["rib_g1"] * ad + P["rib_g2"] * ad * ad + P["rib_g4"] * ad ** 4
    gpd = -P["rib_g1"] + 2.0 * P["rib_g2"] * ad + 4.0 * P["rib_g4"] * ad ** 3
    post, kp = _curve_family(y, y1 + gd, P["rib_s0"] + P["rib_c"] * gd, P["rib_s1"], gpd, P["rib_c"] * gpd,
                             P["rib_h"], edge + 0.0012)
    post = post * ((kp >= 1) & (kp <= 12)) * cage
    d_ref = 0.39
    g_ref = -P["rib_g1"] * d_ref + P["rib_g2"] * d_ref ** 2 + P["rib_g4"] * d_ref ** 4
    ri = (d_ref - ad).clamp(min=0.0)
    ga = P["ant_slope"] * ri + P["ant_curv"] * ri * ri
    ant, ka = _curve_family(y, y1 + g_ref + ga + P["ant_k0"] * P["rib_s0"], P["rib_s0"] + P["rib_c"] * g_ref,
                            P["rib_s1"], -(P["ant_slope"] + 2.0 * P["ant_curv"] * ri), 0.0 * ri,
                            P["ant_h"], edge + 0.003)
    ant = ant * ((ka >= 1) & (ka <= 9)) * cage * _soft(ad - P["ant_dcc"], 0.012)
    D = D + P["rib_amp"] * post + P["ant_amp"] * ant

    # ---- clavicles: S-shaped bars, thicker medially, rising to the shoulders
    L_cl = P["cl_d1"] - P["cl_d0"]
    tc = (ad - P["cl_d0"]) / L_cl
    cy0 = P["cl_y0"] + torch.where(right, torch.zeros_like(dx), P["cl_dy_l"].expand_as(dx))
    ycl = cy0 + (P["cl_y1"] - P["cl_y0"]) * tc + P["cl_s"] * torch.sin(6.2832 * tc)
    hcl = P["cl_h"] * (1.15 - 0.45 * tc.clamp(0.0, 1.0)) + 0.004 * torch.exp(-((tc / 0.08) ** 2))
    clav = _soft(hcl - (y - ycl).abs(), edge + 0.001) * _soft(tc * L_cl, edge + 0.003) * _soft(
        (1.0 - tc) * L_cl, edge + 0.006)
    D = D + P["cl_amp"] * clav

    # ---- humeral heads, scapulae (faint, lateral upper), breasts, gastric bubble
    hum = _soft(P["hum_r"] - torch.sqrt((ad - P["hum_d"]) ** 2 + (y - P["hum_y"]) ** 2), edge + 0.003)
    scap = _soft(ad - (P["scap_d"] - P["scap_k"] * (y - 0.15)), edge + 0.003) * _soft(y - 0.13, 0.02) * _soft(
        P["scap_yb"] - y - 0.1 * (ad - P["scap_d"]), 0.015)
    D = D + (0.22 * P["hum"] * hum + 0.07 * P["scap"] * scap) * T
    bq = _ellipse_sd(ad - P["br_d"], y - P["br_y"], P["br_rx"], P["br_ry"])
    breast = _soft(bq, 0.006) * ((y - P["br_y"] + P["br_ry"]) / (2.0 * P["br_ry"])).clamp(0.0, 1.0) ** 0.8
    D = D + P["breast"] * P["br_amp"] * breast
    gy = y_dia + 0.012 + P["gas_ry"]
    gas = _soft(_ellipse_sd(dx - P["gas_x"], y - gy, P["gas_rx"], P["gas_ry"] * 1.6), edge + 0.002)
    gas = gas * _soft(gy + 0.35 * P["gas_ry"] - y, edge + 0.001) * (~right) * P["gas"]
    D = D - P["gas_amp"] * gas * T

    masks = None
    if want_masks:
        heart_m = torch.minimum(s_heart, y_dia + 0.01 - y) > 0
        masks = {
            "lungs": (lung > 0.5)[:, None],
            "heart": heart_m[:, None],
            "ribs": ((post > 0.5) | (ant > 0.5))[:, None],
            "clavicles": (clav > 0.5)[:, None],
        }
    return D, masks


def _segment_dist(x, y, x0, y0, x1, y1):
    """Distance from (x, y) to the segment (x0, y0)–(x1, y1)."""
    vx, vy = x1 - x0, y1 - y0
    t = (((x - x0) * vx + (y - y0) * vy) / (vx * vx + vy * vy)).clamp(0.0, 1.0)
    return torch.sqrt((x - x0 - t * vx) ** 2 + (y - y0 - t * vy) ** 2)


def _gaussian_blur(x: torch.Tensor, sigma_px: torch.Tensor) -> torch.Tensor:
    """Blur each image of x (B, S, S) with its own Gaussian sigma (B,) in px (separable, reflect padding)."""
    B, S, _ = x.shape
    rad = max(1, int(math.ceil(3.0 * float(sigma_px.max()))))
    k = torch.arange(-rad, rad + 1, dtype=torch.float32)
    w = torch.exp(-0.5 * (k[None] / sigma_px[:, None].clamp(min=0.05)) ** 2)
    w = w / w.sum(dim=1, keepdim=True)  # (B, K)
    xp = F.pad(x[None], (rad, rad, rad, rad), mode="reflect")  # (1, B, S+2r, S+2r)
    xp = F.conv2d(xp, w.view(B, 1, 1, -1), groups=B)
    xp = F.conv2d(xp, w.view(B, 1, -1, 1), groups=B)
    return xp[0]


def _film(P, D, marker, noise, blotch, S) -> torch.Tensor:
    """Density → displayed film (B, 1, S, S) uint8: blur, window, gamma, contrast, noise, collimation,
    marker."""
    D = _gaussian_blur(D, P["blur"].view(-1) * S)
    img = ((D - P["lo"]) / (P["hi"] - P["lo"])).clamp(0.0, 1.0) ** P["gamma"]
    img = 0.5 + P["contrast"] * (img - 0.5) + P["bright"]
    # quantum noise is stronger where fewer photons arrive (bright, dense areas)
    img = img + P["noise"] * (0.6 + 0.8 * img.clamp(0.0, 1.0)) * noise + P["mottle"] * blotch
    g = (torch.arange(S, dtype=torch.float32) + 0.5) / S
    col = torch.zeros_like(img)
    for name, dist in (("top", g.view(1, S, 1)), ("bottom", 1.0 - g.view(1, S, 1)),
                       ("left", g.view(1, 1, S)), ("right", 1.0 - g.view(1, 1, S))):
        col = torch.maximum(col, (P[f"col_{name}"] > 0) * _soft(P[f"col_{name}"] - dist, 0.6 / S))
    img = img + (0.92 - img) * col  # outside the collimated field the detector gets no exposure: white
    img = torch.maximum(img, 0.97 * marker)
    return (img.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)[:, None]
