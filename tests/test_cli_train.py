"""``python -m cxrlib train | sample | finetune | bench | demo`` end to end in the smoke budget; bad input → exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrlib import config
from cxrlib.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "width=0.25", "--set", "amp=\"off\"", "--quiet"]


@pytest.fixture(autouse=True)
def _smoke(monkeypatch):
    monkeypatch.setenv("CXRLIB_SMOKE", "1")
    # the test machine is shared: one thread per test process avoids OpenMP oversubscription stalls
    monkeypatch.setattr(config, "set_threads", lambda n=None: torch.set_num_threads(1) or 1)


@pytest.fixture
def xray_folder(tmp_path):
    """24 small grayscale PNGs in two class folders (smooth blobs, so they are image-like)."""
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:40] / 40.0
    for i in range(24):
        cls = root / ("normal" if i % 2 else "pneumonia")
        cls.mkdir(parents=True, exist_ok=True)
        cx, cy = rng.uniform(0.3, 0.7, 2)
        img = 200 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.05) + rng.uniform(0, 40, (40, 40))
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(cls / f"im{i:02d}.png")
    return root


def run(*argv) -> int:
    return main([str(a) for a in argv])


def test_train_sample_finetune_end_to_end(tmp_path, xray_folder, capsys):
    run_dir = tmp_path / "run"
    assert run("train", "--data", xray_folder, "--out", run_dir, "--size", 32, "--steps", 4, "--batch", 8,
               "--checkpoint-every", 2, "--log-every", 2, *TINY) == 0
    out = capsys.readouterr().out
    assert "24 images" in out and f"checkpoint {run_dir / 'checkpoints' / 'last.pt'}" in out
    log = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4] and {"images_seen", "seconds", "d_loss", "g_loss"} <= set(log[0])
    assert json.loads((run_dir / "config.json").read_text())["size"] == 32
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"last.pt", "step_000002.pt", "step_000004.pt"}
    assert list((run_dir / "samples").glob("*.png"))

    # resume to a longer run
    assert run("train", "--data", xray_folder, "--out", run_dir, "--steps", 6, "--resume", "--quiet") == 0
    assert "resuming" in capsys.readouterr().out
    assert [json.loads(x)["step"] for x in (run_dir / "log.jsonl").read_text().splitlines()][-1] == 6

    samples = tmp_path / "samples"
    assert run("sample", "--ckpt", run_dir / "checkpoints" / "last.pt", "--n", 5, "--out", samples, "--seed", 1) == 0
    assert "wrote 5 samples (EMA generator" in capsys.readouterr().out
    files = sorted(samples.iterdir())
    assert [f.name for f in files] == [f"sample_{i:05d}.png" for i in range(5)]
    first = np.asarray(Image.open(files[0]))
    assert first.shape == (32, 32) and first.dtype == np.uint8
    assert run("sample", "--ckpt", run_dir, "--n", 1, "--out", tmp_path / "again", "--seed", 1) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again" / "sample_00000.png")), first)

    ft = tmp_path / "ft"
    assert run("finetune", "--ckpt", run_dir / "checkpoints" / "last.pt", "--data", xray_folder, "--out", ft,
               "--lr-scale", 0.25, "--steps", 2, "--quiet") == 0
    cfg = json.loads((ft / "config.json").read_text())
    base = json.loads((run_dir / "config.json").read_text())
    assert cfg["g_lr"] == pytest.approx(base["g_lr"] * 0.25) and cfg["g_betas"] == [0.0, 0.99]
    assert torch.load(ft / "checkpoints" / "last.pt", weights_only=True)["step"] == 8


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "{tmp}/missing", "--out", "{tmp}/r", "--size", "32"], "data folder '{tmp}/missing' does not exist"),
    (["train", "--data", "{data}", "--out", "{tmp}/r", "--size", "48"], "48"),
    (["train", "--data", "{data}", "--out", "{tmp}/r", "--size", "32", "--resume"], "nothing to resume"),
    (["train", "--data", "{data}", "--out", "{tmp}/r", "--size", "32", "--set", "nonsense=1"], "nonsense"),
    (["train", "--data", "{data}", "--out", "{tmp}/r", "--size", "32", "--conditional", "--set", "loss=wgan-gp"],
     "for the unconditional family only"),
    (["train", "--data", "{data}", "--out", "{tmp}/r", "--size", "32", "--set", "loss=wgan-gp", "--set",
      "ada=false", "--set", "label_smoothing=0.1", "--quiet"], "set them to 0 with loss='wgan-gp'"),
    (["train", "--data", "{data}", "--out", "{tmp}/r", "--size", "32", "--set", "loss=wgan-gp"],
     "config field 'ada'=True: ADA steers p by the sign of D's outputs"),
    (["sample", "--ckpt", "{data}/normal/im01.png", "--n", "2", "--out", "{tmp}/s"], "is not a cxrlib checkpoint"),
    (["sample", "--ckpt", "{tmp}/none.pt", "--n", "2", "--out", "{tmp}/s"], "no checkpoint at"),
    (["finetune", "--ckpt", "{tmp}/none.pt", "--data", "{data}", "--out", "{tmp}/f"], "no checkpoint at"),
])
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, xray_folder, capsys, argv, message):
    fill = {"tmp": str(tmp_path), "data": str(xray_folder)}
    assert main([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message.format(**fill) in err


def test_train_with_wgan_gp_logs_finite_losses_and_its_penalty_and_resumes(tmp_path, xray_folder):
    """The brief's command at test size: dcgan's D has BatchNorm, which the paper's critic has not: a warning."""
    run_dir = tmp_path / "run"
    argv = ["--data", xray_folder, "--out", run_dir, "--preset", "dcgan", "--size", 32, "--batch", 8,
            "--log-every", 1, "--checkpoint-every", 2, "--set", "loss=wgan-gp", *TINY]
    with pytest.warns(UserWarning, match="BatchNorm"):
        assert run("train", "--steps", 2, *argv) == 0
        assert run("train", "--steps", 3, "--resume", *argv) == 0
    log = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    for r in log:
        assert all(np.isfinite(r[k]) for k in ("d_loss", "g_loss", "D(x)", "D(G(z))", "gp")), r
        assert r["gp"] > 0
    assert json.loads((run_dir / "config.json").read_text())["gp_weight"] == 10.0


def test_an_existing_run_is_not_overwritten_without_resume(tmp_path, xray_folder, capsys):
    run_dir = tmp_path / "run"
    assert run("train", "--data", xray_folder, "--out", run_dir, "--size", 32, "--steps", 1, "--batch", 8, *TINY) == 0
    before = (run_dir / "checkpoints" / "last.pt").read_bytes()
    assert run("train", "--data", xray_folder, "--out", run_dir, "--size", 32, "--steps", 1, "--quiet") == 2
    assert "add --resume" in capsys.readouterr().err
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == before


def test_the_real_command_line_exits_2_with_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "CXRLIB_SMOKE": "1"}
    p = subprocess.run([sys.executable, "-m", "cxrlib", "sample", "--ckpt", str(tmp_path / "no.pt"), "--n", "1",
                        "--out", str(tmp_path / "s")], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2 and p.stderr.strip() == f"error: no checkpoint at '{tmp_path / 'no.pt'}'"


def test_bench_quick_prints_a_throughput_table(capsys):
    assert main(["bench", "--quick", "--presets", "dcgan", "--sizes", "32", "--batch", "8", "--steps", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["preset", "size", "batch", "amp", "images/s", "ms/step"]
    row = lines[1].split()
    assert row[:3] == ["dcgan", "32", "8"] and float(row[4]) > 0


def test_demo_trains_and_says_where_the_pictures_are(tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--minutes", "0.05"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("demo done") and str(out / "samples.png") in last and str(out / "losses.png") in last
    for name in ("samples.png", "losses.png", "log.jsonl", "config.json", "checkpoints/last.pt"):
        assert (out / name).exists(), name
    assert Image.open(out / "losses.png").size[0] > 300
