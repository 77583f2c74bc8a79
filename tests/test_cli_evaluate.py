"""``python -m cxrlib evaluate``: folders of PNGs in, a table, a JSON file and a PNG report out; bad input → one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from cxrlib.cli import main
from cxrlib.phantom import generate

SIZE = 32


def write_pngs(folder: Path, images) -> Path:
    """(N, 1, S, S) uint8 → folder/normal/img_000.png …"""
    (folder / "normal").mkdir(parents=True)
    for i, im in enumerate(images[:, 0].numpy()):
        Image.fromarray(im).save(folder / "normal" / f"img_{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """real (40), fake (40, fresh phantoms), train (40), copier (20 training images copied) at 32 px."""
    root = tmp_path_factory.mktemp("evaluate")
    pool = generate(120, SIZE, seed=3).images
    return {
        "real": write_pngs(root / "real", pool[:40]),
        "fake": write_pngs(root / "fake", pool[40:80]),
        "train": write_pngs(root / "train", pool[80:120]),
        "copier": write_pngs(root / "copier", pool[80:100]),
        "root": root,
    }


def test_evaluate_writes_json_and_report(folders, tmp_path, capsys):
    out_json, report = tmp_path / "out" / "metrics.json", tmp_path / "out" / "report.png"
    rc = main(["evaluate", "--real", str(folders["real"]), "--fake", str(folders["fake"]), "--train",
               str(folders["train"]), "--json", str(out_json), "--report", str(report)])
    assert rc == 0
    result = json.loads(out_json.read_text())
    assert result["n_real"] == 40 and result["n_fake"] == 40 and result["size"] == SIZE
    assert result["swd"]["avg"] > 0 and {"32px", "16px"} <= set(result["swd"])
    assert result["memorization"]["flagged_fraction"] <= 0.05
    assert result["folders"]["fake"] == str(folders["fake"])
    pr = result["precision_recall"]
    assert 0 <= pr["coverage"] <= 1 and pr["density"] >= 0 and {"precision", "recall"} <= set(pr)
    assert len(result["warnings"]) == 1 and "real 40, fake 40" in result["warnings"][0]  # too few for k-NN
    with Image.open(report) as im:
        assert im.format == "PNG" and im.width > 500
    assert not list(out_json.parent.glob(".*tmp*"))  # written atomically: no temporary file left
    printed = capsys.readouterr().out
    assert "SWD" in printed and "memorisation flagged" in printed and str(out_json) in printed
    assert "density / coverage" in printed and f"warning: {result['warnings'][0]}" in printed
    assert "KID ×1e3 random CNN" in printed and result["kid"]["random-cnn"]["subset_size"] == 20  # half of 40
    assert "KID Inception" in printed if result["kid_skipped"] else "KID ×1e3 Inception" in printed


def test_evaluate_flags_a_copying_generator(folders, tmp_path):
    out_json = tmp_path / "m.json"
    rc = main(["evaluate", "--real", str(folders["real"]), "--fake", str(folders["copier"]), "--train",
               str(folders["train"]), "--json", str(out_json)])
    assert rc == 0
    mem = json.loads(out_json.read_text())["memorization"]
    assert mem["flagged_fraction"] >= 0.95 and mem["top_pairs"][0]["distance"] < 1e-3


def test_evaluate_refuses_an_empty_folder(folders, capsys):
    empty = folders["root"] / "empty"
    empty.mkdir()
    rc = main(["evaluate", "--real", str(folders["real"]), "--fake", str(empty)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and str(empty) in err


def test_evaluate_refuses_images_of_different_sizes(folders, capsys):
    big = write_pngs(folders["root"] / "big", generate(10, 64, seed=0).images)
    rc = main(["evaluate", "--real", str(big), "--fake", str(folders["fake"])])
    err = capsys.readouterr().err
    assert rc == 2 and "64x64" in err and "--size 32" in err and err.count("\n") == 1


def test_evaluate_resizes_every_set_with_size(folders, tmp_path):
    big = folders["root"] / "big64"
    write_pngs(big, generate(10, 64, seed=0).images)
    out_json = tmp_path / "m.json"
    assert main(["evaluate", "--real", str(big), "--fake", str(folders["fake"]), "--size", "32",
                 "--json", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["size"] == 32


def test_evaluate_refuses_too_few_images(folders, capsys):
    few = write_pngs(folders["root"] / "few", generate(3, SIZE, seed=0).images)
    rc = main(["evaluate", "--real", str(folders["real"]), "--fake", str(few)])
    err = capsys.readouterr().err
    assert rc == 2 and "3 images" in err and "at least 8" in err


def test_evaluate_names_an_unreadable_file_or_skips_it(folders, tmp_path, capsys):
    broken = tmp_path / "broken"
    write_pngs(broken, generate(10, SIZE, seed=5).images)
    (broken / "normal" / "zz_bad.png").write_bytes(b"not a png")
    rc = main(["evaluate", "--real", str(folders["real"]), "--fake", str(broken)])
    assert rc == 2 and "zz_bad.png" in capsys.readouterr().err
    rc = main(["evaluate", "--real", str(folders["real"]), "--fake", str(broken), "--on-error", "skip"])
    assert rc == 0


def test_evaluate_help_and_error_without_traceback(tmp_path):
    run = [sys.executable, "-m", "cxrlib", "evaluate"]
    assert "--train" in subprocess.run([*run, "--help"], capture_output=True, text=True).stdout
    proc = subprocess.run([*run, "--real", str(tmp_path / "nope"), "--fake", str(tmp_path / "nope")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "not found" in proc.stderr
