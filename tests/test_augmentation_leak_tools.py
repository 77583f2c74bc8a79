"""Helpers of notebook 01: the seed's pixel maths, offline copies in memory, per-image brightness, spectra, paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrlib import augment, data, exercises, metrics, widgets
from cxrlib.errors import CxrError


def _texture(n: int = 3, size: int = 16) -> torch.Tensor:
    """(n, 1, size, size) uint8, smooth mid-range values (no clipping at ±0.1)."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = 0.5 + 0.15 * torch.sin(6.28 * xx) * torch.cos(6.28 * yy)
    imgs = torch.stack([base + 0.05 * k for k in range(n)])[:, None]
    return (imgs * 255).round().to(torch.uint8)


def test_brightness_contrast_matches_the_explorer_widget_on_arrays_and_tensors():
    img = _texture(1)[0, 0].numpy()
    for b, c in ((0.1, 1.0), (-0.08, 0.9), (0.35, 1.6)):
        want = widgets.apply_augmentation(img, b, c, quality=None).astype(int)
        x = img.astype(np.float32) / 255
        got_np = np.rint(augment.adjust_brightness_contrast(x, b, c) * 255).astype(int)
        got_t = torch.round(augment.adjust_brightness_contrast(torch.from_numpy(x), b, c) * 255).int().numpy()
        assert np.abs(got_np - want).max() <= 1 and np.array_equal(got_np, got_t)


def test_brightness_contrast_shifts_mean_stretches_spread_and_clips():
    x = _texture(2).float() / 255
    y = augment.adjust_brightness_contrast(x, 0.1, 1.1)
    assert torch.allclose(y.mean(dim=(-2, -1)), x.mean(dim=(-2, -1)) + 0.1, atol=1e-5)
    assert torch.allclose(y.std(dim=(-2, -1)), 1.1 * x.std(dim=(-2, -1)), atol=1e-5)
    strong = augment.adjust_brightness_contrast(x, 0.6, 2.0)
    assert strong.max() == 1.0 and (strong == 1.0).float().mean() > 0.3  # saturated: information lost


def test_augment_images_keeps_originals_first_and_shifts_each_copy_by_its_drawn_brightness():
    x = _texture(3)
    out = augment.augment_images(x, copies=2, seed=5, brightness=0.2, contrast=(1.0, 1.0), jpeg_quality=(100, 100))
    assert out.shape == (9, 1, 16, 16) and out.dtype == torch.uint8
    assert torch.equal(out[:3], x)
    rng = np.random.default_rng(5)
    drawn = [augment.original_augment_params(rng, 0.2, (1.0, 1.0), (100, 100))["brightness"] for _ in range(6)]
    shift = (metrics.mean_brightness(out[3:]) - metrics.mean_brightness(torch.cat([x, x]))).numpy()
    assert np.allclose(shift, drawn, atol=0.01)
    again = augment.augment_images(x, copies=2, seed=5, brightness=0.2, contrast=(1.0, 1.0), jpeg_quality=(100, 100))
    assert torch.equal(out, again)


def test_strong_offline_jitter_widens_the_spread_of_mean_brightness():
    x = _texture(1).repeat(8, 1, 1, 1)  # eight identical images: all the spread comes from the copies
    mild = metrics.mean_brightness(augment.augment_images(x, copies=2, seed=0)).std()
    strong = metrics.mean_brightness(augment.augment_images(x, copies=2, seed=0, brightness=0.3)).std()
    assert strong > 2 * mild


def test_augment_images_refuses_float_images_and_negative_copies():
    with pytest.raises(CxrError, match="uint8"):
        augment.augment_images(torch.zeros(2, 1, 8, 8))
    with pytest.raises(CxrError, match="copies"):
        augment.augment_images(_texture(1), copies=-1)


def test_mean_brightness_reads_uint8_and_float_alike():
    flat = torch.stack([torch.full((1, 4, 4), v, dtype=torch.uint8) for v in (0, 51, 255)])
    assert torch.allclose(metrics.mean_brightness(flat), torch.tensor([0.0, 0.2, 1.0]), atol=1e-6)
    assert torch.allclose(metrics.mean_brightness(flat.float() / 127.5 - 1), torch.tensor([0.0, 0.2, 1.0]), atol=1e-6)


def test_power_spectrum_puts_a_checkerboard_at_the_border_and_a_constant_nowhere():
    i = torch.arange(16)
    board = ((i[:, None] + i[None, :]) % 2).float()
    s = metrics.power_spectrum(board)
    assert s.shape == (16, 16) and s.argmax() == 0  # fftshift puts the frequency 1/2 (period 2) at index 0
    stripes = (i[None, :].expand(16, 16) // 2 % 2).float()  # period 4 along x
    col = int(metrics.power_spectrum(stripes).max(dim=0).values.argmax())
    assert abs(col - 8) == 4  # 16 / 4 bins from the centre
    assert metrics.power_spectrum(torch.ones(8, 8)).max() < -10


@pytest.mark.parametrize(("path", "folder", "inside"), [
    ("data/train/aug", "data/train", True),
    ("data/train", "data/train", True),
    ("data/train2", "data/train", False),
    ("data/train/../val", "data/train", False),
    ("data/val/../train/x", "data/train", True),
])
def test_is_inside_resolves_dots_and_is_not_fooled_by_name_prefixes(path, folder, inside):
    assert data.is_inside(path, folder) is inside


def test_is_inside_follows_links(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "src")
    assert data.is_inside(tmp_path / "link" / "out", tmp_path / "src")


def test_exercise_checks_of_notebook_01_catch_typical_mistakes(capsys):
    def no_clip(x, brightness=0.0, contrast=1.0):
        x = x + brightness
        m = x.mean(axis=(-2, -1), keepdims=True)
        return (x - m) * contrast + m

    def startswith(path, folder):
        return str(path).startswith(str(folder))

    for name, wrong in (("01.brightness_contrast", no_clip), ("01.is_inside", startswith)):
        assert exercises.check(name, wrong) is not wrong
        assert "not right yet" in capsys.readouterr().out
