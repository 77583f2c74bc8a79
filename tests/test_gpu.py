"""CUDA-only paths (skipped without a GPU; `benchmarks/gpu_check.sh` runs them): fused Adam, bf16 autocast,
the CUDA random streams in checkpoints, resume on the GPU, staged host batches, a CPU checkpoint continued on
the GPU, and the NaN flag on a second GPU. The rest of the suite takes its device from ``device="auto"``,
i.e. runs on the GPU when there is one."""

from __future__ import annotations

import pytest
import torch

from cxrlib.config import make_config
from cxrlib.data import load_dataset
from cxrlib.train import Trainer, cuda_has_native_bf16

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def cfg(**kw):
    base = dict(size=32, steps=6, batch=8, log_every=2, sample_every=10**6, checkpoint_every=3, device="cuda")
    return make_config(kw.pop("preset", "course"), **{**base, **kw})


@pytest.fixture(scope="module")
def ds():
    return load_dataset("phantom", size=32, n=64)


def test_cuda_run_uses_fused_adam_bf16_and_device_streams(ds):
    t = Trainer(cfg(), ds)
    assert t.device.type == "cuda" and t.g_opt.defaults.get("fused") and t.d_opt.defaults.get("fused")
    assert t.amp_dtype == (torch.bfloat16 if cuda_has_native_bf16(t.device) else None)
    t.fit(progress=False)
    state = t.state_dict()
    assert state["rng"]["device"] == "cuda" and "cuda" in state["rng"] and state["rng"]["trainer"].numel() == 16


def test_resume_on_the_gpu_matches_within_tolerance(ds, tmp_path):
    whole = Trainer(cfg(), ds, out=tmp_path / "whole")
    whole.fit(progress=False)
    Trainer(cfg(steps=3), ds, out=tmp_path / "part").fit(progress=False)
    resumed = Trainer.resume(tmp_path / "part", ds, steps=6)
    resumed.fit(progress=False)
    # bit-exact on CPU; on CUDA upsampling's backward and cuDNN's algorithms are not deterministic
    for (k, a), b in zip(whole.G.state_dict().items(), resumed.G.state_dict().values()):
        if a.is_floating_point():
            assert torch.allclose(a, b, rtol=1e-2, atol=1e-2), k


def test_staged_host_batches_on_the_gpu(ds, monkeypatch):
    monkeypatch.setenv("CXRLIB_DEVICE_DATA_BYTES", "0")
    t = Trainer(cfg(), ds)
    assert t.on_host and t.host_batches is not None and t.images.device.type == "cpu"
    x = t.next_batch()
    assert x.device.type == "cuda" and x.shape == (8, 1, 32, 32)
    t.fit(progress=False)


def test_a_cpu_checkpoint_continues_on_the_gpu_with_a_notice(ds, tmp_path):
    Trainer(cfg(steps=2, device="cpu"), ds, out=tmp_path / "run").fit(progress=False)
    with pytest.warns(RuntimeWarning, match="cpu ones and this run is on cuda"):
        t = Trainer.resume(tmp_path / "run", ds, steps=4, device="cuda")
    t.fit(progress=False)
    assert t.step == 4


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_nan_flag_belongs_to_the_training_device(ds):
    torch.cuda.set_device(0)
    t = Trainer(cfg(device="cuda:1"), ds)
    t.fit(progress=False)  # no spurious divergence from an event recorded on cuda:0
    assert t.step == 6
