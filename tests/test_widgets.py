"""cxrlib.widgets: the logic of each tool on small real data, and each widget built and driven with no display."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cxrlib import widgets
from cxrlib.errors import CxrError


def mid_gray_image(seed: int = 0, size: int = 32) -> np.ndarray:
    """(size, size) uint8 in 60..190: room to brighten and darken without clipping."""
    return np.random.default_rng(seed).integers(60, 190, (size, size)).astype(np.uint8)


def decode_png(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(png)))


def find(box, dom_class: str):
    """The widget under ``box`` that carries a CSS class (how the browser test finds it too)."""
    if dom_class in getattr(box, "_dom_classes", ()):
        return box
    for child in getattr(box, "children", ()):
        hit = find(child, dom_class)
        if hit is not None:
            return hit
    return None


def images_in(box) -> list:
    import ipywidgets as W

    found = [box] if isinstance(box, W.Image) else []
    for child in getattr(box, "children", ()):
        found += images_in(child)
    return found


class TinyG(torch.nn.Module):
    """A generator whose train and eval modes differ (BatchNorm, Dropout), as the course generators do."""

    def __init__(self, z_dim: int = 8, size: int = 8):
        super().__init__()
        self.z_dim, self.size = z_dim, size
        self.net = torch.nn.Sequential(torch.nn.Linear(z_dim, size * size), torch.nn.BatchNorm1d(size * size),
                                       torch.nn.Dropout(0.5), torch.nn.Tanh(), torch.nn.Unflatten(1, (1, size, size)))

    def forward(self, z):
        return self.net(z)


@pytest.fixture
def G():
    torch.manual_seed(0)
    g = TinyG()
    g(torch.randn(16, g.z_dim))  # give BatchNorm non-trivial running statistics
    return g


# ======================================================================= augmentation explorer


def test_preview_at_neutral_settings_changes_nothing():
    img = mid_gray_image()
    p = widgets.augment_preview(img, brightness=0.0, contrast=1.0, quality=None)
    assert np.array_equal(p["image"], img)
    assert not p["diff"].any()
    assert np.array_equal(p["hist_before"], p["hist_after"])
    assert p["hist_before"].sum() == img.size


def test_brightness_shifts_the_histogram_by_the_offset():
    img = mid_gray_image()
    p = widgets.augment_preview(img, brightness=0.1, contrast=1.0, quality=None)
    centres = (p["bin_edges"][:-1] + p["bin_edges"][1:]) / 2
    mean_before = (centres * p["hist_before"]).sum() / p["hist_before"].sum()
    mean_after = (centres * p["hist_after"]).sum() / p["hist_after"].sum()
    assert mean_after - mean_before == pytest.approx(25.5, abs=0.6)
    assert np.abs(p["diff"] - 25.5).max() <= 1  # a uniform shift, pixel by pixel
    darker = widgets.augment_preview(img, brightness=-0.1)["image"]
    assert darker.mean() < img.mean() - 20


def test_contrast_stretches_about_the_mean_and_jpeg_quality_sets_the_error():
    img = mid_gray_image()
    stretched = widgets.apply_augmentation(img, contrast=1.1).astype(float)
    assert stretched.std() == pytest.approx(img.std() * 1.1, rel=0.02)
    assert stretched.mean() == pytest.approx(img.mean(), abs=0.5)
    err = {q: np.abs(widgets.apply_augmentation(img, quality=q).astype(int) - img).mean() for q in (10, 95)}
    assert 0 < err[95] < err[10]


def test_explicit_augmentation_matches_the_seed_augmentation_it_previews():
    augment = pytest.importorskip("cxrlib.augment")
    if not hasattr(augment, "original_augment_params"):
        pytest.skip("cxrlib.augment has no original_augment_params")
    img = mid_gray_image(1)
    params = augment.original_augment_params(np.random.default_rng(3))
    theirs = np.asarray(augment.original_augment(Image.fromarray(img), np.random.default_rng(3)))
    ours = widgets.apply_augmentation(img, params["brightness"], params["contrast"], params["jpeg_quality"])
    assert np.array_equal(ours, theirs)


def test_augmentation_explorer_redraws_and_strong_toggle_widens_ranges():
    box = widgets.augmentation_explorer(np.stack([mid_gray_image(0), mid_gray_image(1)])[:, None])
    bright, strong = find(box, "cxr-aug-brightness"), find(box, "cxr-aug-strong")
    (image,) = [im for im in images_in(box) if im.value]
    before = image.value
    assert decode_png(before).shape[1] > 400  # a four-panel figure
    bright.value = 0.08
    assert image.value != before
    assert (bright.min, bright.max) == (-0.1, 0.1)
    strong.value = True
    assert (bright.min, bright.max) == widgets.STRONG_RANGES["brightness"]
    bright.value = 0.4
    strong.value = False  # back to the seed's range: the value is clipped into it
    assert (bright.min, bright.max) == (-0.1, 0.1) and bright.value == pytest.approx(0.1)


# ======================================================================= training dashboard


class FakeTrainer:
    def __init__(self, G):
        self.G, self.calls = G, 0

    def sample(self, n, seed=0, ema=True):
        self.calls += 1
        return torch.from_numpy(widgets.to_uint8(widgets.generate(self.G, torch.randn(n, self.G.z_dim))))


def record(step: int) -> dict:
    return {"step": step, "images_seen": 16 * step, "seconds": 0.5 * step, "d_loss": 1.3 - step / 100,
            "g_loss": 0.7, "D(x)": 0.6, "D(G(z))": 0.4, "aug_p": 0.0}


def test_dashboard_keeps_every_record_and_samples_every_nth(G):
    dash, trainer = widgets.TrainingDashboard(every=2, n_samples=4), FakeTrainer(G)
    for step in range(0, 50, 10):
        dash(trainer, record(step))
    assert [r["step"] for r in dash.records] == [0, 10, 20, 30, 40]
    assert trainer.calls == 2 and [s for s, _ in dash.frames] == [10, 30]
    assert dash.frames[-1][1].shape == (2 * (8 + 2) + 2,) * 2  # a 2×2 grid of 8-px samples
    steps, d_loss = dash.series("d_loss")
    assert steps.tolist() == [0, 10, 20, 30, 40] and d_loss[-1] == pytest.approx(0.9)
    assert "step 40" in dash.status_text() and "d_loss 0.900" in dash.status_text()


def test_dashboard_renders_a_png_and_updates_its_widget_in_place(G):
    dash = widgets.TrainingDashboard(every=1, n_samples=4)
    box = dash.widget
    assert dash.widget is box
    (image,) = images_in(box)
    first = image.value
    assert decode_png(first).ndim >= 2
    dash(FakeTrainer(G), record(5))
    assert images_in(dash.widget) == [image] and image.value != first
    dash(None, {"step": 6, "d_loss": 1.0})  # replaying a log without a trainer, with missing keys
    assert len(dash.records) == 2 and decode_png(dash.render_png()).shape[1] > 400


def test_samples_animation_steps_through_frames_and_reads_a_run_folder(tmp_path):
    frames = [(s, np.full((10, 10), s, np.uint8)) for s in (0, 50, 100)]
    box = widgets.samples_animation(frames)
    import ipywidgets as W

    slider = [w for w in box.children[0].children if isinstance(w, W.IntSlider)][0]
    play = [w for w in box.children[0].children if isinstance(w, W.Play)][0]
    (image,) = images_in(box)
    assert play.max == 2
    slider.value = 2
    assert decode_png(image.value).min() == 100
    for step in (2, 10, 1):
        Image.fromarray(np.full((6, 6), step, np.uint8)).save(tmp_path / f"step_{step:06d}.png")
    loaded = widgets.load_sample_frames(tmp_path)
    assert [lab for lab, _ in loaded] == [1, 2, 10] and loaded[2][1].max() == 10
    assert widgets.animate_samples(tmp_path) is not None
    (tmp_path / "empty").mkdir()
    with pytest.raises(CxrError, match="no sample images"):
        widgets.animate_samples(tmp_path / "empty")


# ======================================================================= latent space


def test_slerp_hits_its_endpoints_and_keeps_the_norm_where_lerp_shrinks():
    z0, z1 = widgets.latent(64, 0), widgets.latent(64, 1)
    z1 = z1 / z1.norm() * z0.norm()
    assert torch.allclose(widgets.slerp(z0, z1, 0.0), z0, atol=1e-5)
    assert torch.allclose(widgets.slerp(z0, z1, 1.0), z1, atol=1e-5)
    path = widgets.slerp(z0, z1, torch.linspace(0, 1, 9))
    assert path.shape == (9, 64)
    assert torch.allclose(path.norm(dim=1), z0.norm().expand(9), rtol=1e-4)
    assert widgets.lerp(z0, z1, 0.5).norm() < 0.8 * z0.norm()  # nearly orthogonal: the midpoint is short
    same = widgets.slerp(z0, 2 * z0, 0.5)  # parallel vectors: no NaN, falls back to lerp
    assert torch.allclose(same, 1.5 * z0)


def test_truncation_at_psi_zero_gives_the_mean_and_at_one_leaves_z():
    z = widgets.latent(16, 3)
    assert torch.equal(widgets.truncate(z, 0.0), torch.zeros(16))
    mean = torch.full((16,), 0.5)
    assert torch.allclose(widgets.truncate(z, 0.0, mean), mean)
    assert torch.allclose(widgets.truncate(z, 1.0, mean), z)
    assert torch.allclose(widgets.truncate(z, 0.5, mean), (z + mean) / 2)


def test_interpolation_endpoints_are_the_endpoint_images_in_eval_mode(G):
    z0, z1 = widgets.latent(G.z_dim, 0), widgets.latent(G.z_dim, 1)
    G.train()
    images = widgets.interpolate(G, z0, z1, steps=5)
    assert images.shape == (5, 1, 8, 8) and G.training  # mode restored
    G.eval()
    with torch.no_grad():
        ends = G(torch.stack([z0, z1]))
    assert torch.allclose(images[0], ends[0], atol=1e-6) and torch.allclose(images[-1], ends[1], atol=1e-6)
    assert not torch.allclose(images[2], ends[0]) and images.abs().max() <= 1
    with pytest.raises(CxrError, match="unknown interpolation"):
        widgets.interpolate(G, z0, z1, method="cubic")


def test_latent_walk_moves_in_equal_steps_on_a_sphere_from_the_seed(G):
    zs = widgets.walk_latents(32, seed=4, steps=10, step_size=0.3)
    z0 = widgets.latent(32, 4)
    assert torch.allclose(zs[0], z0)
    assert torch.allclose(zs.norm(dim=1), z0.norm().expand(10), rtol=1e-4)
    gaps = (zs[1:] - zs[:-1]).norm(dim=1)
    assert torch.allclose(gaps, 2 * z0.norm() * torch.sin(torch.tensor(0.15)).expand(9), rtol=1e-4)
    walk = widgets.latent_walk(G, seed=4, steps=3)
    assert walk.shape == (3, 1, 8, 8)
    assert torch.allclose(walk[0], widgets.generate(G, widgets.latent(G.z_dim, 4)[None])[0])


def test_latent_explorer_redraws_when_t_moves(G):
    box = widgets.latent_explorer(G, walk_steps=4)
    t = find(box, "cxr-latent-t")
    (image,) = images_in(box)
    before = image.value
    t.value = 0.9
    assert image.value != before


# ======================================================================= Turing test


def real_and_fake(n: int = 6):
    real = np.stack([np.full((1, 8, 8), 200, np.uint8)] * n)
    fake = np.stack([np.full((1, 8, 8), 20, np.uint8)] * n)
    return real, fake


def test_turing_test_scores_answers_and_reveals_the_truth():
    real, fake = real_and_fake()
    test = widgets.TuringTest(real, fake, n_rounds=8, seed=1)
    truth = [is_real for is_real, _ in test.rounds]
    assert sum(truth) == 4  # balanced
    for _ in range(8):
        said_real = test.current().mean() > 100  # a perfect judge on this toy data
        assert test.answer(said_real) is True
    assert test.done and test.current() is None and test.score == 8 and test.accuracy == 1.0
    with pytest.raises(CxrError, match="over"):
        test.answer(True)
    revealed = test.reveal()
    assert [r["is_real"] for r in revealed] == truth and all((r["image"].mean() > 100) == r["is_real"] for r in revealed)


def test_turing_test_counts_fakes_judged_real_and_is_seeded():
    real, fake = real_and_fake()
    gullible = widgets.TuringTest(real, fake, n_rounds=10, seed=2)
    for _ in range(10):
        gullible.answer(True)
    assert gullible.score == 5 and gullible.fakes_passed == 5 and gullible.accuracy == 0.5
    assert widgets.TuringTest(real, fake, seed=2).rounds == widgets.TuringTest(real, fake, seed=2).rounds
    with pytest.raises(CxrError, match="resize one side"):
        widgets.TuringTest(real, np.zeros((3, 1, 16, 16), np.uint8))


def test_turing_widget_buttons_update_the_score_and_reveal():
    real, fake = real_and_fake()
    box = widgets.turing_test(real, fake, n_rounds=2, seed=0)
    real_b, score = find(box, "cxr-turing-real"), find(box, "cxr-turing-score")
    reveal_b = find(box, "cxr-turing-reveal")
    assert "round 1 of 2" in score.value
    real_b.click()
    assert "score" in score.value and len(box.test.history) == 1
    reveal_b.click()
    shown = [im for im in images_in(box) if im.value]
    assert len(shown) == 2 and shown[1].layout.display is None  # the reveal image is now visible
    find(box, "cxr-turing-fake").click()
    assert box.test.done and real_b.disabled and score.value.startswith("done")


# ======================================================================= no display needed


def test_importing_widgets_displays_nothing_and_loads_no_frontend(monkeypatch):
    import importlib

    frontend = ("ipywidgets", "matplotlib.pyplot", "IPython.display")
    for name in [m for m in sys.modules if m.startswith(frontend)]:
        monkeypatch.delitem(sys.modules, name)  # restored after the test
    importlib.reload(widgets)
    assert [m for m in frontend if m in sys.modules] == []


def test_grid_tiles_images_with_padding():
    g = widgets.grid(np.full((5, 1, 4, 6), 255, np.uint8), ncol=3, pad=1)
    assert g.shape == (2 * 5 + 1, 3 * 7 + 1)
    assert g[1:5, 1:7].min() == 255 and g[0].max() == 0 and g[6:10, 15:21].max() == 0  # the 6th tile is empty


def test_a_widget_leaves_a_still_picture_and_a_sentence_for_saved_copies(monkeypatch):
    from IPython.display import Image as IPImage

    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, **kw: shown.append(obj))
    box = widgets.augmentation_explorer(np.stack([mid_gray_image(0), mid_gray_image(1)]))
    bundle = box._repr_mimebundle_()
    # the still is the widget's first view, displayed just above it; no kernel is needed to see it
    [still] = shown
    assert isinstance(still, IPImage) and still.data == images_in(box)[0].value
    assert bundle["text/plain"].startswith("[augmentation explorer") and "VBox" not in bundle["text/plain"]
    assert repr(box) == bundle["text/plain"]


def test_progress_line_keeps_its_final_state_in_a_notebook(monkeypatch):
    from cxrlib import progress as P

    handles = []

    class Handle:
        def __init__(self, obj):
            self.texts = [obj.data]

        def update(self, obj):
            self.texts.append(obj.data)

    monkeypatch.setattr(P, "in_notebook", lambda: True)
    monkeypatch.setattr("IPython.display.display", lambda obj, display_id=False: handles.append(Handle(obj))
                        or handles[-1])
    bar = P.progress(total=5, desc="training", unit="steps", every=3600)  # no redraw between: only the final one
    for _ in range(5):
        bar.update(1)
    bar.set_postfix(d_loss="1.234")
    bar.close()
    [h] = handles
    assert h.texts[0].startswith("training: 0/5 steps")
    assert h.texts[-1].startswith("training: 5/5 steps") and h.texts[-1].endswith("d_loss 1.234")
    assert len(h.texts) == 2  # shown once, then updated in place at the end
    assert list(P.progress(range(3), desc="loop", every=3600)) == [0, 1, 2]


def test_progress_in_a_log_that_is_not_a_terminal_is_plain_lines(monkeypatch):
    """CI, nohup, SLURM: no carriage returns; a line per interval, and one at the end when it says more."""
    import io
    import types

    from cxrlib import progress as P

    log = io.StringIO()  # not a tty, like a file or a pipe
    now = [0.0]
    monkeypatch.setattr(P, "in_notebook", lambda: False)
    monkeypatch.setattr(P, "sys", types.SimpleNamespace(stderr=log))
    monkeypatch.setattr(P, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    bar = P.progress(total=6, desc="training", unit="steps", log_every=25)
    for _ in range(6):  # a step every 10 s
        now[0] += 10
        bar.update(1)
        bar.set_postfix(d_loss="1.234")
    bar.close()
    bar.close()  # the trainer's finally may close it again: still one final line
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 2, lines  # at 30 s and 60 s (none before; the end says no more)
    assert lines[0] == "training: 3/6 steps (50 %) · 30 s · 0.1 steps/s · 30 s left · d_loss 1.234"
    assert lines[-1] == "training: 6/6 steps (100 %) · 60 s · 0.1 steps/s · d_loss 1.234"
    assert list(P.progress(range(3), desc="loop")) == [0, 1, 2] and log.getvalue().splitlines()[-1].startswith(
        "loop: 3/3 it (100 %)")


def test_progress_in_a_terminal_is_tqdms_bar(monkeypatch):
    import io
    import types

    from tqdm import tqdm

    from cxrlib import progress as P

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(P, "in_notebook", lambda: False)
    monkeypatch.setattr(P, "sys", types.SimpleNamespace(stderr=Terminal()))
    assert isinstance(P.progress(range(2)), tqdm)
    monkeypatch.setattr(P, "sys", types.SimpleNamespace(stderr=None))  # pythonw: nowhere to write
    assert list(P.progress(range(2))) == [0, 1]
