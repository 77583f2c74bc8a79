"""Checkpoints: exact resume (in-process and after kill -9), safe loading, atomic writes, fine-tuning."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import assert_same_training_state

from cxrlib import config
from cxrlib.config import make_config
from cxrlib.errors import CxrError
from cxrlib.train import Trainer, load_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    # the test machine is shared: one thread per test process avoids OpenMP oversubscription stalls
    monkeypatch.setattr(config, "set_threads", lambda n=None: torch.set_num_threads(1) or 1)


# every trick with state or random draws is on: batches, z, DiffAugment with ADA (fast, so p moves), label
# flips, R1 timing, EMA ramp-up
TRICKY = dict(size=32, batch=8, width=0.25, amp="off", augment="color,translation,cutout", ada=True,
              ada_speed_kimg=0.05, label_smoothing=0.1,
              flip_prob=0.1, r1_gamma=0.5, r1_every=2, ema_half_life_kimg=0.05, ema_rampup=0.05, log_every=2,
              sample_every=1000)


def images(n=32, size=32):
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def assert_same_state(a: Trainer, b: Trainer):
    assert_same_training_state(a.state_dict(), b.state_dict())
    assert (a.step, a.images_seen, a.d_updates) == (b.step, b.images_seen, b.d_updates)
    assert torch.equal(a.rng.get_state(), b.rng.get_state())
    if a.ada is not None:
        assert torch.equal(a.ada.p, b.ada.p)
        assert torch.equal(a.ada.r_t, b.ada.r_t) or bool(a.ada.r_t.isnan() and b.ada.r_t.isnan())


# original (old name "seed", kept as an alias): dropout draws from torch's global RNG; refresh: recomputing the EMA's BatchNorm statistics at every
# sample grid and checkpoint changes nothing of the run
# wgan-gp: the penalty's ε per image come from the trainer's generator, five D steps per G step (no ADA: refused)
WGAN_GP = dict(loss="wgan-gp", label_smoothing=0.0, flip_prob=0.0, d_steps_per_g_step=5, ada=False)


@pytest.mark.parametrize("preset,refresh,loss", [("course", False, {}), ("original", False, {}), ("course", True, {}),
                                                 ("seed", True, {}), ("course", False, WGAN_GP)])
def test_resume_continues_exactly_in_process(tmp_path, preset, refresh, loss):
    cfg = make_config(preset, steps=6, checkpoint_every=3, ema_bn_refresh=refresh,
                      **{**TRICKY, "width": 0.125 if preset in ("original", "seed") else 0.25, **loss})
    reference = Trainer(cfg, images())
    reference.fit(progress=False)

    first = Trainer(cfg, images(), out=tmp_path / "run")
    first.fit(3, progress=False)
    torch.randn(100)  # unrelated use of torch's global RNG between the two halves changes nothing
    resumed = Trainer.resume(tmp_path / "run", images())
    assert resumed.step == 3
    resumed.fit(progress=False)  # up to cfg.steps = 6 in total
    assert_same_state(reference, resumed)
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 3, 4, 6]


CHILD = """
import sys, time, torch
from cxrlib import config
config.set_threads = lambda n=None: torch.set_num_threads(1) or 1
from cxrlib.config import make_config
from cxrlib.train import Trainer
cfg = make_config("course", steps=8, checkpoint_every=4, **{tricky!r})
data = torch.randint(0, 256, (32, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

def hang_after_step_6(trainer, record):
    if record["step"] == 6:
        print("ready", flush=True)
        time.sleep(120)  # the parent kills us here: after the step-4 checkpoint, before the end

Trainer(cfg, data, out=sys.argv[1], callbacks=[hang_after_step_6]).fit(progress=False)
"""


def test_resume_after_kill_9_ends_with_the_same_weights(tmp_path):
    run = tmp_path / "run"
    code = textwrap.dedent(CHILD.format(tricky=TRICKY))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert load_checkpoint(run)["step"] == 4
    assert not list(run.rglob(".*tmp*"))

    resumed = Trainer.resume(run, images())
    assert resumed.step == 4
    resumed.fit(progress=False)
    reference = Trainer(make_config("course", steps=8, checkpoint_every=4, **TRICKY), images())
    reference.fit(progress=False)
    assert_same_state(reference, resumed)
    steps = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8]  # the killed run's line for step 6 was replaced, not duplicated


# ----------------------------------------------------------------------------- safe loading
class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_without_running_its_code(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    torch.save({"format": "cxrlib-gan-checkpoint", "G": Evil(marker)}, bad)
    with pytest.raises(CxrError) as e:
        load_checkpoint(bad)
    msg = str(e.value)
    assert msg.startswith(f"refusing to load '{bad}': it contains Python objects, not just tensors (")
    assert "system" in msg and "\n" not in msg
    assert not marker.exists()
    with pytest.raises(CxrError, match="refusing to load"):
        Trainer.resume(bad, images())


@pytest.mark.parametrize("content", [b"just some text\n", b"", None])
def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path, content):
    path = tmp_path / "x.pt"
    if content is None:
        torch.save({"weights": torch.zeros(3)}, path)  # a torch file, but not ours
    else:
        path.write_bytes(content)
    with pytest.raises(CxrError, match=rf"'{path}' is not a cxrlib checkpoint"):
        load_checkpoint(path)


def test_a_checkpoint_without_its_config_is_refused_in_one_line(tmp_path):
    from cxrlib.train import CHECKPOINT_FORMAT

    path = tmp_path / "x.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "G": {}}, path)  # our marker, but no training config
    with pytest.raises(CxrError, match=rf"'{path}' is an incomplete cxrlib checkpoint \(no training config"):
        load_checkpoint(path)


# ----------------------------------------------------------------------------- atomic writes
def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    cfg = make_config("dcgan", steps=2, checkpoint_every=1, **{**TRICKY, "augment": "", "r1_gamma": 0.0})
    t = Trainer(cfg, images(), out=tmp_path / "run")
    t.fit(progress=False)
    folder = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt", "step_000001.pt", "step_000002.pt"]
    good = (folder / "last.pt").read_bytes()

    def disk_full(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        t.save_checkpoint()
    assert (folder / "last.pt").read_bytes() == good  # the old checkpoint is untouched
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt", "step_000001.pt", "step_000002.pt"]
    state = load_checkpoint(folder / "last.pt")  # weights_only=True: tensors and primitives only
    assert state["step"] == 2 and state["config"]["preset"] == "dcgan"
    assert isinstance(state["rng"]["trainer"], torch.Tensor) and isinstance(state["rng"]["torch"], torch.Tensor)


# ----------------------------------------------------------------------------- fine-tuning
def test_finetune_without_a_length_trains_the_budgets_steps_not_zero(tmp_path, monkeypatch):
    from cxrlib import config

    cfg = make_config("original", steps=2, **{**TRICKY, "width": 0.125, "augment": "", "r1_gamma": 0.0,
                                          "ema_half_life_kimg": 0.0})
    Trainer(cfg, images(), out=tmp_path / "run").fit(progress=False)
    small = dataclasses.replace(config.budget("smoke"), steps=3)
    monkeypatch.setattr(config, "budget", lambda kind=None: small)
    ft = Trainer.finetune(tmp_path / "run", images(), out=tmp_path / "ft")
    ft.fit(progress=False)
    assert ft.step == 2 + 3 and not ft.stopped_by_time  # before: the checkpoint's own total, i.e. 0 more steps


def test_finetune_uses_the_seeds_learning_rates_and_switches_on_ema(tmp_path):
    cfg = make_config("original", steps=2, **{**TRICKY, "width": 0.125, "augment": "", "r1_gamma": 0.0,
                                          "ema_half_life_kimg": 0.0})
    base = Trainer(cfg, images(), out=tmp_path / "run")
    base.fit(progress=False)
    ft = Trainer.finetune(tmp_path / "run" / "checkpoints" / "last.pt", images(), out=tmp_path / "ft", steps=2)
    assert (ft.cfg.g_lr, ft.cfg.d_lr) == pytest.approx((5e-5, 1e-4))
    assert ft.cfg.g_betas == ft.cfg.d_betas == (0.0, 0.99)
    assert ft.g_opt.param_groups[0]["betas"] == (0.0, 0.99) and ft.g_opt.param_groups[0]["lr"] == pytest.approx(5e-5)
    # the seed's EMA decay of 0.999 per step, expressed as a half-life in images
    assert 0.5 ** (8 / (ft.cfg.ema_half_life_kimg * 1000)) == pytest.approx(0.999)
    for a, b in zip(ft.G.parameters(), base.G.parameters()):
        assert torch.equal(a, b)
    ft.fit(progress=False)
    assert ft.step == 4 and (tmp_path / "ft" / "checkpoints" / "last.pt").exists()


def test_adaptive_lr_halves_the_rates_after_a_plateau(tmp_path, monkeypatch):
    cfg = make_config("dcgan", steps=8, adaptive_lr=True, adaptive_every=1, adaptive_patience=2,
                      **{**TRICKY, "augment": "", "r1_gamma": 0.0})
    t = Trainer(cfg, images(), out=tmp_path / "run")
    assert len(t.images) + len(t.heldout) == 32  # held-out images are not trained on
    signal_values = iter([10.0, 9.0, 9.0, 9.0, 8.0, 8.5, 8.5])
    monkeypatch.setattr(t, "quality", lambda: next(signal_values))
    scales = [t.adapt_lr()["lr_scale"] for _ in range(7)]
    assert scales == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    assert t.g_opt.param_groups[0]["lr"] == pytest.approx(cfg.g_lr * 0.25)
    t.save_checkpoint()
    again = Trainer.resume(tmp_path / "run", images())
    assert again.lr_scale == 0.25 and again.d_opt.param_groups[0]["lr"] == pytest.approx(cfg.d_lr * 0.25)


def test_adaptive_quality_signal_is_a_real_swd(tmp_path):
    cfg = make_config("dcgan", steps=2, adaptive_lr=True, **{**TRICKY, "augment": "", "r1_gamma": 0.0})
    t = Trainer(cfg, images(n=48))
    d = t.quality(n=16)
    assert d > 0 and d == t.quality(n=16)  # deterministic: fixed z and fixed projections


def test_resuming_a_finished_run_trains_no_further_unless_asked(tmp_path):
    cfg = make_config("dcgan", steps=2, **{**TRICKY, "augment": "", "r1_gamma": 0.0})
    Trainer(cfg, images(), out=tmp_path / "run").fit(progress=False)
    again = Trainer.resume(tmp_path / "run", images())
    assert again.fit(progress=False) == [] and again.step == 2
    longer = Trainer.resume(tmp_path / "run", images(), steps=3)
    assert [r["step"] for r in longer.fit(progress=False)] == [3] and longer.step == 3


def test_finetune_carries_ada_p_over_and_starts_its_own_clock(tmp_path):
    cfg = make_config("course", steps=2, **TRICKY)
    base = Trainer(cfg, images(), out=tmp_path / "run")
    base.fit(progress=False)
    state = base.ada.state_dict()
    state["p"] = torch.tensor(0.35)  # as if D had started to memorise the reals
    base.ada.load_state_dict(state)
    base.save_checkpoint()
    assert base.seconds > 0
    ft = Trainer.finetune(tmp_path / "run", images(), out=tmp_path / "ft", steps=1, minutes=0.5)
    assert float(ft.aug_p) == pytest.approx(0.35)  # D keeps seeing augmented images, not clean ones all at once
    assert torch.equal(ft.ada.r_t, base.ada.r_t) or bool(ft.ada.r_t.isnan() and base.ada.r_t.isnan())
    assert ft.seconds == 0.0  # its minutes cap the fine-tuning, not the base run's history
    ft.fit(progress=False)
    assert ft.step == 3 and not ft.stopped_by_time and 0 < ft.seconds < 30


def test_a_checkpoint_from_before_a_config_field_existed_resumes(tmp_path):
    cfg = make_config("dcgan", steps=3, **{**TRICKY, "augment": "", "r1_gamma": 0.0})
    Trainer(cfg, images(), out=tmp_path / "run").fit(2, progress=False)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    del state["config"]["ema_bn_refresh"]  # as written before the field was added
    torch.save(state, last)
    (tmp_path / "run" / "config.json").unlink()
    again = Trainer.resume(tmp_path / "run", images())
    assert again.step == 2 and again.cfg.ema_bn_refresh is False
    again.fit(progress=False)
    assert again.step == 3


def test_a_checkpoint_from_before_the_lean_course_networks_rebuilds_the_networks_it_was_trained_with(tmp_path):
    from cxrlib import models
    from cxrlib.train import load_generator

    legacy = models.LEGACY_NETWORKS["course"]
    cfg = make_config("course", steps=3, model_kwargs=legacy, **{**TRICKY, "augment": "", "r1_gamma": 0.0})
    trained = Trainer(cfg, images(), out=tmp_path / "run")
    trained.fit(2, progress=False)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    state["version"], state["config"]["model_kwargs"] = 1, {}  # as written when these were the defaults
    torch.save(state, last)
    with pytest.raises(RuntimeError):  # today's defaults do not fit those weights ...
        models.build_models("course", 32, width=0.25)[1].load_state_dict(state["D"])
    assert load_checkpoint(last)["config"]["model_kwargs"] == legacy  # ... so loading names the old ones
    again = Trainer.resume(tmp_path / "run", images())
    assert again.step == 2 and again.cfg.model_kwargs == legacy
    assert_same_state(trained, again)
    again.fit(progress=False)
    G, _ = load_generator(last)
    z = torch.randn(2, G.z_dim)
    assert torch.equal(G(z), load_generator(last)[0](z))
    # a checkpoint written today keeps today's defaults
    cfg = make_config("course", steps=1, **{**TRICKY, "augment": "", "r1_gamma": 0.0})
    Trainer(cfg, images(), out=tmp_path / "new").fit(1, progress=False)
    assert load_checkpoint(tmp_path / "new")["config"]["model_kwargs"] == {}
