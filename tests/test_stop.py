"""Stopping a run never loses work (SIGINT/SIGTERM: finish the step, checkpoint, exit non-zero; ``--resume``
continues exactly) and one writer per run folder (``RUN/.lock``: refused while held, taken over when stale)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_same_training_state

from cxrlib import config
from cxrlib.cli import main
from cxrlib.config import make_config
from cxrlib.errors import TrainingStopped
from cxrlib.files import claim_folder
from cxrlib.train import Trainer, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["train", "--data", "phantom", "--n-images", "32", "--size", "32", "--batch", "8", "--log-every", "1",
         "--checkpoint-every", "1000", "--set", "width=0.25", "--set", "amp=\"off\"", "--quiet"]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch, tmp_path):
    monkeypatch.setattr(config, "set_threads", lambda n=None: torch.set_num_threads(1) or 1)
    monkeypatch.setenv("CXRLIB_CACHE", str(tmp_path / "cache"))


def cli(*argv, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CXRLIB_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "cxrlib", *map(str, argv)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def log_steps(run: Path) -> list[int]:
    import json

    try:
        lines = (run / "log.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(x)["step"] for x in lines if x.endswith("}")]


def test_sigterm_mid_run_checkpoints_the_step_reached_and_resume_ends_with_the_same_weights(tmp_path, capsys):
    run, straight, steps = tmp_path / "run", tmp_path / "straight", 200
    child = cli(*TRAIN, "--steps", steps, "--out", run)
    try:
        deadline = time.monotonic() + 120
        while len(log_steps(run)) < 3 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.poll() is None, child.stderr.read()
        # a second writer while the first runs is refused in one line naming the folder and the pid
        assert main([*TRAIN, "--steps", str(steps), "--out", str(run)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(run) in err[0] and f"pid {child.pid}" in err[0], err
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 143, err
    at = load_checkpoint(run)["step"]
    assert 3 <= at < steps and log_steps(run)[-1] == at  # the step it reached, not a periodic one
    assert not list((run / "checkpoints").glob("step_*.pt"))
    assert err.strip().splitlines()[-1] == f"stopped by SIGTERM at step {at}: checkpoint " \
        f"{run / 'checkpoints' / 'last.pt'} (continue with --resume)"
    assert not (run / ".lock").exists() and not list(run.rglob(".*tmp*"))

    resumed = cli(*TRAIN, "--steps", steps, "--out", run, "--resume")
    ref = cli(*TRAIN, "--steps", steps, "--out", straight)
    for p in (resumed, ref):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    a, b = load_checkpoint(run), load_checkpoint(straight)
    assert a["step"] == b["step"] == steps
    assert_same_training_state(a, b)
    assert log_steps(run) == list(range(1, steps + 1))


def test_sigint_in_process_finishes_the_step_checkpoints_and_restores_the_handlers(tmp_path):
    def mine(signum, frame):
        raise AssertionError("the trainer's handler should have taken this signal")

    def interrupt_at_3(trainer, record):
        if record["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    data = torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cfg = make_config("course", size=32, batch=8, width=0.25, amp="off", steps=10, log_every=1, checkpoint_every=1000)
    previous = signal.signal(signal.SIGINT, mine)
    try:
        trainer = Trainer(cfg, data, out=tmp_path / "run", callbacks=[interrupt_at_3])
        with pytest.raises(TrainingStopped, match=r"^stopped by SIGINT at step 3: checkpoint .*last\.pt") as e:
            trainer.fit(progress=False)
        assert signal.getsignal(signal.SIGINT) is mine
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, previous)
    assert e.value.exit_status == 130 and e.value.step == 3 == trainer.step
    assert load_checkpoint(tmp_path / "run")["step"] == 3
    assert not (tmp_path / "run" / ".lock").exists()


def test_a_trainer_on_a_folder_a_live_process_holds_is_refused(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = tmp_path / "run"
        run.mkdir()
        (run / ".lock").write_text(f"{holder.pid} {socket.gethostname()}\n")
        assert main([*TRAIN, "--steps", "2", "--out", str(run)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0] == f"error: '{run}' is in use by run pid {holder.pid} on this host; " \
            "wait for it to end or choose another --out"
        assert not (run / "config.json").exists()  # nothing of the run was touched
        assert (run / ".lock").read_text() == f"{holder.pid} {socket.gethostname()}\n"
    finally:
        holder.kill()
        holder.wait()


def test_trainers_on_the_folder_of_a_run_still_going_write_nothing_and_their_fit_is_refused(tmp_path):
    """A new Trainer, a resume and a finetune pointed at a live run's folder change none of its files (not its
    config.json, not the log lines it wrote past its checkpoint) and their fit is refused in one line."""
    from cxrlib.errors import CxrError

    data = torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cfg = make_config("course", size=32, batch=8, width=0.25, amp="off", steps=4, log_every=1, checkpoint_every=2,
                      sample_every=1000)
    run = tmp_path / "run"
    Trainer(cfg, data, out=run).fit(progress=False)  # as a run that is still going: logged past step 2's checkpoint
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(f"{holder.pid} {socket.gethostname()}\n")
        before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
        for second in (lambda: Trainer(cfg.replace(steps=8, seed=5), data, out=run),
                       lambda: Trainer.resume(run / "checkpoints" / "step_000002.pt", data, out=run),
                       lambda: Trainer.finetune(run, data, out=run, steps=2)):
            trainer = second()
            with pytest.raises(CxrError) as refused:
                trainer.fit(progress=False)
            assert str(refused.value) == (f"'{run}' is in use by run pid {holder.pid} on this host; wait for it to "
                                          "end or choose another --out")
            assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    finally:
        holder.kill()
        holder.wait()
    (run / ".lock").unlink()  # the run has ended: now the resume goes on, with its log cut back to its checkpoint
    resumed = Trainer.resume(run / "checkpoints" / "step_000002.pt", data, out=run)
    resumed.fit(progress=False)
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


def test_a_lock_left_by_a_dead_run_is_taken_over_with_a_notice(tmp_path, capsys):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text(f"{gone.pid} {socket.gethostname()}\n")
    assert main([*TRAIN, "--steps", "2", "--out", str(run)]) == 0
    err = capsys.readouterr().err
    assert f"notice: taking over '{run}' from run pid {gone.pid}, which is no longer running" in err
    assert load_checkpoint(run)["step"] == 2 and not (run / ".lock").exists()


def test_claims_nest_in_one_process_and_release_on_error(tmp_path):
    with claim_folder(tmp_path) as lock:
        with claim_folder(tmp_path):
            assert lock.read_text() == f"{os.getpid()} {socket.gethostname()}\n"
        assert lock.exists()
    assert not lock.exists()
    with pytest.raises(RuntimeError), claim_folder(tmp_path):
        raise RuntimeError
    assert not (tmp_path / ".lock").exists()
