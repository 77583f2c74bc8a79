"""Scale: data larger than memory (memory-mapped caches, batches staged from the host), several processes
under torchrun (gloo on this CPU), and the GPU-path defects that can be checked on a CPU (issue 14)."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import snapshot

from cxrlib import data as cxdata
from cxrlib import distributed, train
from cxrlib.config import make_config
from cxrlib.data import ImageSet, load_dataset, load_images
from cxrlib.errors import CxrError
from cxrlib.train import Trainer, amp_dtype

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def write_folder(root: Path, n: int = 24, size: int = 40, bad: bool = False) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        cls = "normal" if i % 2 else "pneumonia"
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size + 8), dtype=np.uint8)).save(root / cls / f"x{i:03d}.png")
    if bad:
        (root / "normal" / "broken.png").write_bytes(b"not a png")
    return root


def cfg(**kw):
    base = dict(size=32, steps=6, batch=8, log_every=2, sample_every=10**6, checkpoint_every=3, amp="off")
    return make_config(kw.pop("preset", "dcgan"), **{**base, **kw})


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# =========================================================================== memory-mapped data
def test_folder_is_decoded_into_a_memory_mapped_cache_file(tmp_path):
    src = write_folder(tmp_path / "xr", bad=True)
    before = snapshot(src)
    load = functools.partial(load_images, src, size=32, on_error="skip")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        mapped = load(mmap=True)
    assert mapped.memmap and Path(mapped.memmap).is_file() and "memory-mapped" in mapped.describe()
    assert len(mapped) == 24 and len(mapped.skipped) == 1  # the kept rows only: the header says 24
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        plain = load(cache=False)
    assert not plain.memmap and torch.equal(mapped.images, plain.images) and mapped.paths == plain.paths
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        again = load(mmap=False)  # the cache, read into memory
    assert not again.memmap and torch.equal(again.images, plain.images)
    assert snapshot(src) == before  # nothing written into the source folder
    cache = Path(os.environ["CXRLIB_CACHE"])
    assert not [p for p in cache.rglob("*") if ".tmp-" in p.name]  # no half-written files left behind
    mapped.images[0, 0, 0, 0] = 7  # copy-on-write: the cache file itself never changes
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        assert torch.equal(load(mmap=True).images, plain.images)


def test_auto_memmap_follows_the_threshold(tmp_path, monkeypatch):
    src = write_folder(tmp_path / "xr", n=6)
    monkeypatch.setenv("CXRLIB_MEMMAP_BYTES", "0")
    assert load_images(src, size=32).memmap
    monkeypatch.setenv("CXRLIB_MEMMAP_BYTES", str(10**9))
    assert not load_images(src, size=32).memmap
    assert load_dataset("phantom", size=32, n=8, mmap=True).memmap  # phantoms too
    monkeypatch.setenv("CXRLIB_MEMMAP_BYTES", "lots")
    with pytest.raises(CxrError, match="CXRLIB_MEMMAP_BYTES"):
        load_images(src, size=32)


def test_a_cache_disk_too_small_fails_before_decoding(tmp_path, monkeypatch):
    import shutil

    src = write_folder(tmp_path / "xr", n=6)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12 - 100, 100))
    decoded = []
    monkeypatch.setattr(cxdata.decoding, "decode_square", lambda *a, **k: decoded.append(a) or (_ for _ in ()).throw(AssertionError))
    with pytest.raises(CxrError) as e:
        load_images(src, size=64)
    msg = str(e.value)
    assert "\n" not in msg and "0.00 GB needed" in msg and os.environ["CXRLIB_CACHE"] in msg and "CXRLIB_CACHE" in msg
    assert decoded == []


def test_training_from_a_memory_map_is_the_same_run(tmp_path):
    mapped = load_dataset("phantom", size=32, n=64, mmap=True)
    plain = load_dataset("phantom", size=32, n=64, mmap=False)
    assert mapped.memmap and not plain.memmap
    a, b = Trainer(cfg(), mapped), Trainer(cfg(), plain)
    a.fit(progress=False), b.fit(progress=False)
    assert same_weights(a.G.state_dict(), b.G.state_dict())
    # the adaptive schedule's held-out images come out of a mapped set without copying the rest
    t = Trainer(cfg(adaptive_lr=True), mapped)
    assert t.rows is not None and t.n_train == 64 - len(t.heldout) and t.images.data_ptr() == mapped.images.data_ptr()
    t.fit(steps=2, progress=False)


def test_staged_host_batches_resume_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRLIB_DEVICE_DATA_BYTES", "0")  # force the GPU path's staging (here on the CPU)
    ds = load_dataset("phantom", size=32, n=64)
    whole = Trainer(cfg(), ds, out=tmp_path / "whole")
    assert whole.host_batches is not None
    whole.fit(progress=False)
    part = Trainer(cfg(steps=3), ds, out=tmp_path / "part")
    part.fit(progress=False)  # a batch is prefetched when it stops: the checkpoint draws it again
    resumed = Trainer.resume(tmp_path / "part", ds, steps=6)
    resumed.fit(progress=False)
    assert same_weights(whole.G.state_dict(), resumed.G.state_dict())
    assert same_weights(whole.D.state_dict(), resumed.D.state_dict())


def test_host_batches_draw_the_same_after_a_size_change():
    images = torch.arange(50, dtype=torch.uint8).reshape(50, 1, 1, 1)
    hb = train.HostBatches(images, torch.device("cpu"), seed=3)
    first = hb.take(4)
    state = hb.state_dict()
    odd = hb.take(5)  # the prefetched 4 are dropped and 5 drawn from the same state
    twin = train.HostBatches(images, torch.device("cpu"), seed=3)
    twin.take(4)
    twin.load_state_dict(state)
    assert torch.equal(twin.take(5), odd) and not torch.equal(first, odd[:4])


RSS_SCRIPT = """
import json, sys, numpy as np, torch
from cxrlib.data import ImageSet
from cxrlib.config import make_config
from cxrlib.train import Trainer

def rss():
    fields = dict(l.split(':') for l in open('/proc/self/status') if l.startswith(('VmRSS', 'RssAnon')))
    return {k: int(v.split()[0]) * 1024 for k, v in fields.items()}

path, mode = sys.argv[1], sys.argv[2]
cfg = make_config('dcgan', size=128, width=0.25, batch=16, steps=12, amp='off', log_every=6)
Trainer(cfg, torch.zeros(16, 1, 128, 128, dtype=torch.uint8)).fit(steps=1, progress=False)  # warm up the allocator
before = rss()
arr = np.load(path, mmap_mode='c' if mode == 'mapped' else None)
ds = ImageSet(torch.from_numpy(arr), torch.zeros(len(arr), dtype=torch.int64), ['x'], memmap=path if mode == 'mapped' else '')
t = Trainer(cfg, ds)
t.fit(progress=False)
after = rss()
print(json.dumps({k: after[k] - before[k] for k in before} | {'bytes': arr.nbytes, 'steps': t.step}))
"""


def test_a_memory_mapped_set_trains_without_being_held_in_memory(tmp_path):
    n, s = 20_000, 128  # 328 MB of pixels
    path = tmp_path / "big.npy"
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 1, s, s))
    for i in range(0, n, 2000):
        arr[i:i + 2000] = (np.arange(i, i + 2000) % 251).astype(np.uint8)[:, None, None, None]
    arr.flush()
    del arr
    script = tmp_path / "rss.py"
    script.write_text(RSS_SCRIPT)
    env = {**os.environ, "CXRLIB_THREADS": "1"}

    def grow(mode):
        out = subprocess.run([PY, str(script), str(path), mode], capture_output=True, text=True, env=env, cwd=ROOT)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    mapped = grow("mapped")
    assert mapped["steps"] == 12
    assert mapped["VmRSS"] < mapped["bytes"] / 4, mapped  # 12 batches of 16 touch a few MB of the file
    in_memory = grow("memory")  # the same set read into memory: the measurement can tell the difference
    assert in_memory["VmRSS"] > 0.9 * in_memory["bytes"], in_memory


# =========================================================================== several processes (torchrun, gloo)
def torchrun(*args, timeout=240, **popen):
    cmd = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}  # this checkout's cxrlib, also for a script
    if popen:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, **popen)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


TORCHRUN_TRAIN = ["-m", "cxrlib", "train", "--data", "phantom", "--n-images", "64", "--size", "32", "--preset",
                  "course", "--batch", "8", "--log-every", "2", "--checkpoint-every", "2", "--quiet", "--amp", "off"]


def naming(marker: Path) -> list[int]:
    """The pids of the processes whose command line names ``marker`` (torchrun's workers: each runs in its own
    process group, so signalling torchrun's group does not reach them)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if str(marker).encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def signal_all(pids, signum) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def kill_all(proc, marker: Path) -> None:
    """SIGKILL torchrun and every process whose command line names ``marker``."""
    victims = [proc.pid] + [p for p in naming(marker) if p != proc.pid]
    signal_all(victims, signal.SIGKILL)
    def alive(pid: int) -> bool:
        try:
            return b"zombie" not in Path(f"/proc/{pid}/status").read_bytes().lower()
        except OSError:
            return False

    for _ in range(100):  # until the workers are gone
        if not any(alive(p) for p in victims[1:]):
            return
        time.sleep(0.1)


def test_two_processes_average_gradients_like_one_process_with_the_whole_batch(tmp_path):
    out = tmp_path / "g.json"
    run = torchrun("tests/distributed_script.py", "gradients", out)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world"] == 2 and result["close"], result  # 2 × B/2 averaged == 1 × B
    assert result["half_differs"]  # (a half batch alone does not give it)
    assert result["noticed"]  # check_in_sync raises when the processes' weights differ
    assert result["threads_left"] == [], result  # the process group is freed at exit, its threads joined


def test_torchrun_trains_one_model_and_resumes_exactly_after_a_kill(tmp_path):
    train_cmd = TORCHRUN_TRAIN
    killed = tmp_path / "killed"
    proc = torchrun(*train_cmd, "--steps", "100000", "--out", killed, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while not (killed / "checkpoints" / "step_000002.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline, "no checkpoint within 3 minutes"
        time.sleep(0.2)
    time.sleep(0.5)
    kill_all(proc, killed)  # torchrun and both workers, mid-step
    proc.wait()
    state = train.load_checkpoint(killed)
    at = int(state["step"])
    assert len(state["rng_ranks"]) == 2 and state["config"]["batch"] == 8
    target = at + 4
    resumed = torchrun(*train_cmd, "--steps", target, "--out", killed, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("done:") == 1 and f"resuming '{killed}' at step {at}" in resumed.stdout
    straight = tmp_path / "straight"
    run = torchrun(*train_cmd, "--steps", target, "--out", straight)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 processes (cpu, 4 images each)" in run.stdout

    a, b = train.load_checkpoint(killed), train.load_checkpoint(straight)
    assert a["step"] == b["step"] == target and a["images_seen"] == b["images_seen"] == target * 8
    for k in ("G", "D", "G_ema"):
        assert same_weights(a[k], b[k]), k  # bit-exact on CPU
    log = [json.loads(line) for line in (killed / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(2, target + 1, 2))  # one log, cut back to the checkpoint
    assert sorted(p.name for p in straight.iterdir()) == ["checkpoints", "config.json", "log.jsonl", "samples"]


def test_sigterm_to_torchrun_and_its_workers_stops_at_one_step_checkpoints_and_resumes_exactly(tmp_path):
    """SLURM's preemption: SIGTERM to torchrun and to every worker (which torchrun then signals again)."""
    run, straight = tmp_path / "run", tmp_path / "straight"
    cmd = [*TORCHRUN_TRAIN, "--checkpoint-every", "1000"]  # (the last flag wins: no periodic checkpoint)
    proc = torchrun(*cmd, "--steps", "100000", "--out", run, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True)
    try:
        deadline = time.time() + 180
        while not (run / "log.jsonl").exists() or not (run / "log.jsonl").read_text().endswith("\n"):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.time() < deadline, "no log line within 3 minutes"
            time.sleep(0.1)
        workers = [p for p in naming(run) if p != proc.pid]
        assert len(workers) == 2, workers
        signal_all([proc.pid, *workers], signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            kill_all(proc, run)
            proc.wait()
    assert proc.returncode != 0
    state = train.load_checkpoint(run)
    at = int(state["step"])
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert at >= 2 and log[-1]["step"] == at and len(state["rng_ranks"]) == 2  # the step both reached, both streams
    stopped = [line for line in err.splitlines() if line.startswith("stopped by")]
    assert stopped == [f"stopped by SIGTERM at step {at}: checkpoint {run / 'checkpoints' / 'last.pt'} "
                       "(continue with --resume)"], err[-3000:]  # one line, from rank 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt"]  # no half-written file
    assert not (run / ".lock").exists()

    target = at + 4
    resumed = torchrun(*cmd, "--steps", target, "--out", run, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ref = torchrun(*cmd, "--steps", target, "--out", straight)
    assert ref.returncode == 0, ref.stderr[-3000:]
    a, b = train.load_checkpoint(run), train.load_checkpoint(straight)
    assert a["step"] == b["step"] == target
    for k in ("G", "D", "G_ema"):
        assert same_weights(a[k], b[k]), k  # bit-exact on CPU


def test_a_torchrun_worker_takes_a_repeated_signal_as_the_same_request(monkeypatch):
    from cxrlib.engine.stopping import StopSignals

    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
        with StopSignals() as stop:
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)  # torchrun's copy after SLURM's
            assert stop.signum == signal.SIGTERM and seen == []
        monkeypatch.delenv("TORCHELASTIC_RUN_ID")
        with StopSignals() as stop:  # one process: a second signal acts at once, as the previous handler would
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
            assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


# =========================================================================== GPU-path defects, checked on the CPU
def test_amp_auto_uses_bf16_only_on_gpus_with_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # counts emulation
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # a Colab T4
    assert amp_dtype("auto", torch.device("cuda")) is None
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))  # A100 and newer
    assert amp_dtype("auto", torch.device("cuda")) is torch.bfloat16
    assert amp_dtype("off", torch.device("cuda")) is None


def test_compiled_discriminator_with_r1_trains(monkeypatch):
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", functools.partial(real_compile, backend="aot_eager"))
    ds = load_dataset("phantom", size=32, n=16)
    for preset in ("dcgan", "modern"):  # R1 (and the modern recipe's R2) every other step
        t = Trainer(cfg(preset=preset, r1_gamma=1.0, r1_every=2, compile=True, steps=3), ds)
        assert t.D_fwd is not t.D
        t.fit(progress=False)  # R1's double backward goes through the uncompiled D
        assert t.step == 3 and t.D_fwd is not t.D


def test_resume_on_another_device_type_continues_with_a_notice(tmp_path):
    ds = load_dataset("phantom", size=32, n=32)
    Trainer(cfg(steps=2), ds, out=tmp_path / "run").fit(progress=False)
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    state = torch.load(ckpt, weights_only=True)
    assert state["rng"]["device"] == "cpu"
    state["rng"] = {"trainer": torch.zeros(16, dtype=torch.uint8), "torch": state["rng"]["torch"],
                    "cuda": torch.zeros(16, dtype=torch.uint8), "device": "cuda"}  # as a GPU run writes it
    torch.save(state, ckpt)
    with pytest.warns(RuntimeWarning, match="fresh random streams.*cuda ones and this run is on cpu"):
        t = Trainer.resume(tmp_path / "run", ds, steps=4)
    t.fit(progress=False)
    assert t.step == 4


def test_every_random_stream_has_its_own_seed():
    seeds = {distributed.stream_seed(0, name, r) for name in ("trainer", "cuda", "dropout", "batches") for r in range(4)}
    assert len(seeds) == 16 and 0 not in seeds
    t = Trainer(cfg(), load_dataset("phantom", size=32, n=16))
    z = t.sample_z(4)
    init = torch.Generator().manual_seed(0)
    assert not torch.allclose(z.cpu(), torch.randn(4, t.z_dim, generator=init))  # not the init's numbers


def test_global_batch_is_shared_out_and_counted_once(monkeypatch):
    ds = load_dataset("phantom", size=32, n=16)
    t = Trainer(cfg(batch=8), ds)
    assert (t.world, t.batch) == (1, 8)
    monkeypatch.setattr(distributed, "world_size", lambda: 4)  # as in one of 4 torchrun processes
    t4 = Trainer(cfg(batch=8), ds)
    assert (t4.world, t4.batch) == (4, 2) and t4.next_batch().shape[0] == 2 and t4.sample_z().shape[0] == 2
    t4.count_images(2)
    assert t4.images_seen == 8  # images of all processes
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(CxrError, match="global batch and must divide among the 3 processes"):
        Trainer(cfg(batch=8), ds)


def test_imageset_fields_default_to_in_memory():
    ds = ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), ["a"])
    assert ds.memmap == "" and "memory-mapped" not in ds.describe()
