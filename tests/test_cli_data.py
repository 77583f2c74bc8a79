"""CLI end to end: inspect, prepare, augment (the contracts in cxrlib/cli.py's docstring and the README)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import snapshot
from PIL import Image

from cxrlib.cli import main

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("CXRLIB_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "cxrlib", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


@pytest.mark.parametrize("command", ["inspect", "prepare", "augment"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out


def test_inspect_prints_the_report_and_every_bad_file(image_folder, capsys):
    (image_folder / "normal" / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (image_folder / "pneumonia" / "empty.png").write_bytes(b"")
    before = snapshot(image_folder)
    assert main(["inspect", str(image_folder)]) == 0
    out = capsys.readouterr().out
    assert "classes : normal 2, pneumonia 2" in out  # readable images per class
    assert "4 readable, 2 unreadable" in out and "48x32 4" in out
    assert "normal/bad.jpg:" in out and "pneumonia/empty.png: empty file" in out
    assert snapshot(image_folder) == before


def test_prepare_end_to_end(tmp_path, image_folder, capsys):
    assert main(["prepare", "--src", str(image_folder), "--dst", str(tmp_path / "out"), "--size", "20"]) == 0
    assert "prepared 4 images" in capsys.readouterr().out
    pngs = sorted((tmp_path / "out").rglob("*.png"))
    assert [p.parent.name for p in pngs] == ["normal", "normal", "pneumonia", "pneumonia"]
    assert all(Image.open(p).size == (20, 20) and Image.open(p).mode == "L" for p in pngs)
    assert main(["prepare", "--src", str(image_folder), "--dst", str(tmp_path / "pad"), "--size", "20", "--crop", "pad"]) == 0
    padded = np.asarray(Image.open(tmp_path / "pad" / "normal" / "n1.png"))
    assert padded[:2].max() == 0 and padded[-2:].max() == 0  # 48x32 letterboxed into 20x20


def test_prepare_bad_file_is_one_line_error_then_skip_works(tmp_path, image_folder, capsys):
    bad = image_folder / "pneumonia" / "broken.png"
    bad.write_text("plain text")
    before = snapshot(image_folder)
    args = ["prepare", "--src", str(image_folder), "--dst", str(tmp_path / "out"), "--size", "16"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read ") and str(bad) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert main([*args, "--on-error", "skip"]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 unreadable: broken.png" in captured.out
    assert captured.err.startswith("warning: skipped 1 unreadable file(s)")
    assert len(list((tmp_path / "out").rglob("*.png"))) == 4 and snapshot(image_folder) == before


def test_augment_end_to_end(tmp_path, image_folder, capsys):
    args = ["augment", "--src", str(image_folder), "--dst", str(tmp_path / "aug"), "--copies", "2", "--seed", "3"]
    assert main(args) == 0
    assert "4 originals + 8 copies" in capsys.readouterr().out
    assert len(list((tmp_path / "aug").rglob("*_aug*.jpg"))) == 8


def test_augment_into_source_fails_in_a_subprocess_with_one_line(image_folder):
    before = snapshot(image_folder)
    r = run_cli("augment", "--src", str(image_folder), "--dst", str(image_folder / "aug"), "--copies", "1")
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: refusing to write into the source") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert snapshot(image_folder) == before


def test_inspect_missing_folder_is_an_error(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"error: folder not found: '{tmp_path / 'nope'}'"
