"""Small command-line contracts: ``--version``, ``train --config RUN/config.json`` (flags override it; a bad file
is one line naming it), and what an exception that is not ``CxrError`` prints (a bug: its traceback; out of
memory or a device torch cannot use: one line saying what to change)."""

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

import cxrlib
from cxrlib import cli, config
from cxrlib.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "width=0.25", "--set", "amp=\"off\"", "--quiet"]


@pytest.fixture(autouse=True)
def _smoke(monkeypatch):
    monkeypatch.setenv("CXRLIB_SMOKE", "1")
    monkeypatch.delenv("CXRLIB_DEBUG", raising=False)
    monkeypatch.setattr(config, "set_threads", lambda n=None: torch.set_num_threads(1) or 1)


@pytest.fixture
def xray_folder(tmp_path):
    """12 small grayscale PNGs in two class folders."""
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for i in range(12):
        cls = root / ("normal" if i % 2 else "pneumonia")
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(cls / f"im{i:02d}.png")
    return root


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


# ----------------------------------------------------------------------------------------------- --version
def test_version_is_one_line_and_the_packages_version():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "cxrlib", "--version"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.returncode == 0 and p.stdout == f"cxrlib {cxrlib.__version__}\n" and p.stderr == ""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        pytest.skip("tomllib is Python 3.11+")
    # one version, written once: pyproject.toml declares it dynamic, read from cxrlib.__version__, so the installed
    # package's metadata (importlib.metadata, pip) says what `--version` says
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "cxrlib.__version__"}
    setuptools_config = pytest.importorskip("setuptools.config.pyprojecttoml")
    declared = setuptools_config.read_configuration(REPO / "pyproject.toml")["project"]["version"]
    assert cxrlib.__version__ == declared  # what setuptools will write into the metadata


# ----------------------------------------------------------------------------------------------- --config
def test_train_config_starts_a_new_run_from_a_saved_one_with_flags_overriding(tmp_path, xray_folder, capsys):
    first = tmp_path / "first"
    assert main(["train", "--data", str(xray_folder), "--out", str(first), "--preset", "dcgan", "--size", "32",
                 "--steps", "1", "--batch", "4", "--set", "r1_gamma=0.5", "--conditional", *TINY]) == 0
    saved = json.loads((first / "config.json").read_text())
    second = tmp_path / "second"
    assert main(["train", "--data", str(xray_folder), "--out", str(second), "--config", str(first / "config.json"),
                 "--steps", "2", "--set", "label_smoothing=0.2", "--quiet"]) == 0
    again = json.loads((second / "config.json").read_text())
    assert {k for k in saved if again[k] != saved[k]} == {"steps", "label_smoothing"}
    assert again["steps"] == 2 and again["label_smoothing"] == 0.2
    assert again["preset"] == "dcgan" and again["r1_gamma"] == 0.5 and again["family"] == "conditional"
    assert again["size"] == 32 and again["batch"] == 4 and again["width"] == 0.25  # not the budget's defaults
    third = tmp_path / "third"  # the run folder stands for its config.json; --size and --batch override it
    assert main(["train", "--data", str(xray_folder), "--out", str(third), "--config", str(first), "--size", "64",
                 "--batch", "2", "--quiet"]) == 0
    cfg = json.loads((third / "config.json").read_text())
    assert (cfg["size"], cfg["batch"], cfg["steps"], cfg["r1_gamma"]) == (64, 2, 1, 0.5)
    capsys.readouterr()


#: notebooks/runs/05_fine_tuning/base/config.json as the course wrote it before r1_every became reg_every
OLD_CONFIG = {
    "preset": "course", "family": "unconditional", "classes": [], "class_sampling": "frequency", "structures": [],
    "domains": [], "size": 64, "batch": 32, "steps": 3008, "minutes": 0.8333333333333334, "seed": 0, "z_dim": None,
    "width": 1.0, "model_kwargs": {}, "loss": "bce", "label_smoothing": 0.0, "flip_prob": 0.0,
    "g_steps_per_d_step": 1, "d_steps_per_g_step": 1, "r1_gamma": 0.1, "r1_every": 16, "r2_gamma": 0.0,
    "augment": "translation,cutout", "augment_p": 1.0, "ada": True, "ada_target": 0.6, "ada_speed_kimg": 20.0,
    "l1_weight": 100.0, "gan_weight": 1.0, "cycle_weight": 10.0, "identity_weight": 0.5, "pool_size": 50,
    "g_lr": 0.0002, "d_lr": 0.0002, "g_betas": [0.0, 0.99], "d_betas": [0.0, 0.99], "adaptive_lr": False,
    "adaptive_every": 200, "adaptive_patience": 2, "adaptive_factor": 0.5, "lr_decay_start": 1.0,
    "ema_half_life_kimg": 5.0, "ema_rampup": 0.05, "ema_bn_refresh": False, "log_every": 1, "sample_every": 250,
    "checkpoint_every": 500, "amp": "auto", "channels_last": True, "compile": False, "device": "auto",
}


def test_train_config_reads_a_run_saved_before_the_rename(tmp_path, xray_folder, capsys):
    old = tmp_path / "old" / "config.json"
    old.parent.mkdir()
    old.write_text(json.dumps({**OLD_CONFIG, "r1_every": 8}, indent=2))
    assert main(["train", "--data", str(xray_folder), "--out", str(tmp_path / "r"), "--config", str(old),
                 "--size", "32", "--steps", "1", "--batch", "4", *TINY]) == 0
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["reg_every"] == 8 and "r1_every" not in cfg
    old.write_text(json.dumps({**OLD_CONFIG, "reg_every": 4}))  # both names, two values: one line naming the file
    assert main(["train", "--data", str(xray_folder), "--out", str(tmp_path / "r2"), "--config", str(old),
                 "--quiet"]) == 2
    err = _error_line(capsys)
    assert f"--config '{old}'" in err and "r1_every is the old name of reg_every" in err, err


@pytest.mark.parametrize(("content", "name", "reason"), [
    (None, "none.json", "no such file"),
    ("{\"batch\": 4,", "cut.json", "not valid JSON (Expecting"),
    ("[1, 2]", "list.json", "expected a JSON object of training options, got a list"),
    ("{\"bach\": 4}", "typo.json", "unknown training option(s) bach"),
    ("{\"loss\": \"nope\"}", "value.json", "nope"),
    ("{\"batch\": \"many\"}", "type.json", "--config"),
    ("{\"preset\": \"nope\"}", "preset.json", "unknown preset 'nope'"),
    ("batch: 4\n", "run.yaml", "YAML is not read here"),
    ("{\"device\": \"cudax\"}", "device.json", "asks for device 'cudax' (--device overrides it): not a device"),
])
def test_a_bad_config_file_is_one_line_naming_it_and_the_reason(tmp_path, xray_folder, capsys, content, name,
                                                                   reason):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    assert main(["train", "--data", str(xray_folder), "--out", str(tmp_path / "r"), "--config", str(path),
                 "--quiet"]) == 2
    err = _error_line(capsys)
    assert f"--config '{path}'" in err and reason in err, err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_config_with_resume_or_another_preset_is_refused_in_one_line(tmp_path, xray_folder, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.make_config("dcgan", size=32).to_dict()))
    assert main(["train", "--data", str(xray_folder), "--out", str(tmp_path / "r"), "--config", str(path),
                 "--preset", "course"]) == 2
    assert "--preset course differs from the preset 'dcgan'" in _error_line(capsys)
    assert main(["train", "--data", str(xray_folder), "--out", str(tmp_path / "r"), "--config", str(path),
                 "--resume"]) == 2
    assert "give one" in _error_line(capsys)


def test_an_unknown_family_from_set_is_one_line_naming_the_families(tmp_path, xray_folder, capsys):
    assert main(["train", "--data", str(xray_folder), "--out", str(tmp_path / "r"), "--set", "family=foo"]) == 2
    assert _error_line(capsys) == ("error: unknown GAN family 'foo' (choose one of unconditional, conditional, "
                                   "pix2pix, cyclegan, diffusion)")
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------------------------- devices
@pytest.mark.parametrize(("argv", "expected"), [
    (["--device", "cudax"], "--device cudax: not a device"),
    (["--device", "cuda:7"], "--device cuda:7: "),
    (["--set", "device=\"cudax\""], "--set device=cudax: not a device"),
])
def test_a_device_this_machine_cannot_use_is_one_line(tmp_path, xray_folder, capsys, argv, expected):
    assert main(["train", "--data", str(xray_folder), "--out", str(tmp_path / "r"), "--size", "32", "--steps", "1",
                 *argv, "--quiet"]) == 2
    assert expected in _error_line(capsys)


def test_bench_checks_its_device_too(capsys):
    assert main(["bench", "--quick", "--device", "gpu"]) == 2
    assert "--device gpu: not a device" in _error_line(capsys)


# ----------------------------------------------------------------------------------------------- other exceptions
def _sample_raising(monkeypatch, exc):
    def boom(args):
        raise exc

    monkeypatch.setattr(cli, "_cmd_sample", boom)
    return ["sample", "--ckpt", "pretrained", "--n", "1", "--out", "unused"]


@pytest.mark.parametrize(("exc", "expected"), [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.11 GiB total capacity)\n"
                            "more text"), "out of memory (CUDA out of memory. Tried to allocate 20.00 GiB"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried to "
                  "allocate 68719476736 bytes."), "out of memory ("),
    (MemoryError(), "out of memory (MemoryError)"),
    (RuntimeError("Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU"),
     "the device cannot be used (Found no NVIDIA driver"),
    (AssertionError("Torch not compiled with CUDA enabled"), "run on the CPU"),
])
def test_out_of_memory_and_unusable_devices_are_one_line_saying_what_to_change(monkeypatch, capsys, exc,
                                                                                expected):
    assert main(_sample_raising(monkeypatch, exc)) == 2
    err = _error_line(capsys)
    assert expected in err, err


def test_out_of_memory_in_train_names_the_flags_to_lower(monkeypatch, tmp_path, xray_folder, capsys):
    def boom(self, progress=True):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("cxrlib.train.Trainer.fit", boom)
    assert main(["train", "--data", str(xray_folder), "--out", str(tmp_path / "r"), "--size", "32", *TINY]) == 2
    assert "use a smaller --batch or --size" in _error_line(capsys)


@pytest.mark.parametrize("exc", [ValueError("a bug"), RuntimeError("shape '[2, 3]' is invalid for input of size 5"),
                                 KeyError("x"), AssertionError("an internal check")])
def test_a_real_bug_keeps_its_traceback(monkeypatch, exc):
    with pytest.raises(type(exc)):
        main(_sample_raising(monkeypatch, exc))


def test_cxrlib_debug_shows_the_traceback_of_an_out_of_memory_too(monkeypatch):
    monkeypatch.setenv("CXRLIB_DEBUG", "1")
    with pytest.raises(torch.OutOfMemoryError):
        main(_sample_raising(monkeypatch, torch.OutOfMemoryError("CUDA out of memory.")))
