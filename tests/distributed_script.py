"""Run by tests/test_scale.py under ``torchrun --nproc_per_node=2`` (gloo, CPU): checks that need every process.

    python -m torch.distributed.run --nproc_per_node=2 tests/distributed_script.py gradients OUT.json

``gradients``: the averaged gradient of 2 processes × B/2 images equals 1 process's gradient of the B images
(a D without batch-coupled layers), and ``check_in_sync`` notices weights that differ; then the exit path:
after ``distributed._leave`` (what runs at exit) no gloo thread is left, with an optimiser built after ``init``
as the trainer builds one (issue 28: a worker thread alive at interpreter shutdown aborted 1 run in ~30). Rank 0
writes OUT.json.
"""

from __future__ import annotations

import json
import os
import sys

import torch

from cxrlib import distributed, models
from cxrlib.errors import CxrError


def gradients(out: str) -> None:
    distributed.init("cpu")
    rank, world = distributed.rank(), distributed.world_size()
    torch.manual_seed(0)  # the same D and the same batch in both processes
    _, D = models.build_models("course", 32, mbstd_group=1, spectral_norm=False)
    x = torch.rand(8, 1, 32, 32) * 2 - 1
    part = x.chunk(world)[rank]

    D.zero_grad()
    D(part).square().mean().backward()
    distributed.average_gradients(D.parameters())
    averaged = [p.grad.clone() for p in D.parameters()]

    D.zero_grad()
    D(x).square().mean().backward()
    whole = [p.grad.clone() for p in D.parameters()]
    close = all(torch.allclose(a, w, rtol=1e-4, atol=1e-6) for a, w in zip(averaged, whole))
    max_diff = max(float((a - w).abs().max()) for a, w in zip(averaged, whole))
    own = [p.grad.clone() for p in D.parameters()]  # a single process's half-batch gradient differs
    D.zero_grad()
    D(part).square().mean().backward()
    half_differs = any(not torch.allclose(p.grad, w, rtol=1e-4, atol=1e-6) for p, w in zip(D.parameters(), own))

    distributed.check_in_sync(D)  # same weights: passes
    with torch.no_grad():
        if rank == 1:
            next(D.parameters()).add_(1e-3)
    try:
        distributed.check_in_sync(D)
        noticed = False
    except CxrError:
        noticed = True

    torch.optim.Adam(D.parameters())  # (its constructor imports torch._dynamo, which imports torch.distributed.nn)
    distributed.gather_objects(rank)
    distributed._leave()
    left = [n for n in map(_thread_name, os.listdir("/proc/self/task")) if "gloo" in n]
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"world": world, "close": close, "max_diff": max_diff, "half_differs": half_differs,
                       "noticed": noticed, "threads_left": left}, f)


def _thread_name(tid: str) -> str:
    try:
        with open(f"/proc/self/task/{tid}/comm") as f:
            return f.read().strip()
    except OSError:  # (it ended meanwhile)
        return ""


if __name__ == "__main__":
    {"gradients": gradients}[sys.argv[1]](*sys.argv[2:])
