"""A run in TensorBoard: the ``cxrlib.board.TensorBoard`` callback and ``train --tensorboard`` write the log's curves
and the fixed-z grids into the run folder; without the package, one line says how to install it."""

from __future__ import annotations

import importlib.util
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cxrlib import config
from cxrlib.cli import main
from cxrlib.config import make_config
from cxrlib.phantom import generate
from cxrlib.train import Trainer


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setattr(config, "set_threads", lambda n=None: torch.set_num_threads(1) or 1)


def _events(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_a_four_step_run_writes_the_curves_and_grids(tmp_path):
    pytest.importorskip("tensorboard")
    from cxrlib.board import TensorBoard

    run = tmp_path / "run"
    cfg = make_config("course", size=32, batch=8, steps=4, width=0.25, amp="off", log_every=2, sample_every=2,
                      checkpoint_every=1000, augment="translation", ada=True)
    board = TensorBoard(run)
    trainer = Trainer(cfg, generate(32, 32, seed=0).images, out=run, callbacks=[board])
    drawn = []
    sample_grid = trainer.family.sample_grid
    trainer.family.sample_grid = lambda: drawn.append(trainer.step) or sample_grid()
    records = trainer.fit(progress=False)
    board.close()
    assert drawn == [2, 4, 4]  # save_samples' grids only (the last one again at the end): no pass of G of its own
    acc = _events(run)
    scalars = set(acc.Tags()["scalars"])
    assert {"loss/D", "loss/G", "loss/D_real", "loss/D_fake", "D_output/real_Dx", "D_output/fake_DGz", "ada/p",
            "lr/G", "lr/D"} <= scalars
    for key, tag in (("d_loss", "loss/D"), ("D(G(z))", "D_output/fake_DGz"), ("g_lr", "lr/G")):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [2, 4]
        assert [e.value for e in events] == pytest.approx([r[key] for r in records], rel=1e-6)
    assert [e.step for e in acc.Images("samples")] == [2, 4]  # the sample interval, each step once
    assert acc.Images("samples")[-1].width > 32 * 8  # the 8-wide grid of RUN/samples
    shown = np.asarray(Image.open(io.BytesIO(acc.Images("samples")[-1].encoded_image_string)).convert("L"), int)
    saved = np.asarray(Image.open(run / "samples" / "step_000004.png").convert("L"), int)
    assert shown.shape == saved.shape and np.abs(shown - saved).max() <= 1  # the same grid (PNG rounds, TB floors)
    plain = Trainer(cfg, generate(32, 32, seed=0).images, out=tmp_path / "plain")
    plain.fit(progress=False)
    assert all(torch.equal(a, b) for a, b in zip(plain.G.state_dict().values(), trainer.G.state_dict().values()))
    assert torch.equal(plain.rng.get_state(), trainer.rng.get_state())  # the board draws nothing of training's


def test_every_regulariser_has_a_tag_beside_r1():
    from cxrlib.board import tag

    assert {tag(k) for k in ("r1", "r2", "gp")} == {"regulariser/r1", "regulariser/r2", "regulariser/gp"}


def test_train_tensorboard_flag_writes_events_into_the_run(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorboard")
    monkeypatch.setenv("CXRLIB_SMOKE", "1")
    run = tmp_path / "run"
    assert main(["train", "--data", "phantom", "--n-images", "16", "--out", str(run), "--size", "32", "--steps",
                 "2", "--batch", "8", "--log-every", "1", "--set", "width=0.25", "--set", 'amp="off"', "--quiet",
                 "--tensorboard"]) == 0
    assert list(run.glob("events.out.tfevents.*"))
    assert [e.step for e in _events(run).Scalars("loss/G")] == [1, 2]


def test_finetune_tensorboard_flag_writes_events_into_the_new_run(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorboard")
    monkeypatch.setenv("CXRLIB_SMOKE", "1")
    base, ft = tmp_path / "run", tmp_path / "ft"
    small = ["--n-images", "16", "--steps", "2", "--quiet"]
    assert main(["train", "--data", "phantom", "--out", str(base), "--size", "32", "--batch", "8", "--set",
                 "width=0.25", "--set", 'amp="off"', *small]) == 0
    assert not list(base.glob("events.out.tfevents.*"))
    assert main(["finetune", "--ckpt", str(base / "checkpoints" / "last.pt"), "--data", "phantom", "--out", str(ft),
                 "--set", "log_every=1", *small, "--tensorboard"]) == 0  # steps 3, 4: it goes on counting
    assert list(ft.glob("events.out.tfevents.*"))
    acc = _events(ft)
    assert [e.step for e in acc.Scalars("loss/G")] == [3, 4] and {"lr/G", "lr/D"} <= set(acc.Tags()["scalars"])
    log = [json.loads(line) for line in (ft / "log.jsonl").read_text().splitlines()]
    base_lr = json.loads((base / "config.json").read_text())["g_lr"]
    assert [e.value for e in acc.Scalars("lr/G")] == pytest.approx([r["g_lr"] for r in log]) == [0.5 * base_lr] * 2


@pytest.mark.parametrize("command", [["train"], ["finetune", "--ckpt", "{tmp}/none.pt"]])
def test_tensorboard_without_the_package_is_one_line(command, tmp_path, monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard"
                        else find_spec(name, *a))
    command = [c.format(tmp=tmp_path) for c in command]  # finetune: said before the checkpoint is looked for
    assert main([*command, "--data", "phantom", "--out", str(tmp_path / "run"), "--tensorboard"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == 'error: TensorBoard logging needs the tensorboard package: pip install "cxrlib[tensorboard]"'


def test_train_closes_its_callbacks_when_training_stops_with_an_error(tmp_path, monkeypatch, capsys):
    from cxrlib import cli
    from cxrlib.errors import CxrError

    closed = []

    class Recorder:
        def __call__(self, trainer, record):
            pass

        def close(self):
            closed.append(True)

    def nan(self, *a, **k):
        raise CxrError("D's loss became NaN at step 1")

    monkeypatch.setenv("CXRLIB_SMOKE", "1")
    monkeypatch.setattr(cli, "_tensorboard", lambda args, out: [Recorder()])
    monkeypatch.setattr(Trainer, "fit", nan)
    assert main(["train", "--data", "phantom", "--n-images", "16", "--out", str(tmp_path / "run"), "--size", "32",
                 "--steps", "2", "--batch", "8", "--set", "width=0.25", "--quiet", "--tensorboard"]) == 2
    assert "became NaN" in capsys.readouterr().err and closed == [True]
