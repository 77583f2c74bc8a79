"""Training one model on several processes: PyTorch's ``torchrun`` and its process group, nothing home-made.

    torchrun --nproc_per_node=4 -m cxrlib train --data DIR --out runs/a --size 256 --batch 64   # 4 GPUs
    torchrun --nproc_per_node=2 -m cxrlib train --data phantom --out runs/b --size 64         # 2 CPU processes

``torchrun`` starts N copies of the command and gives each its ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``;
:func:`init` joins them into one process group (NCCL on CUDA, gloo on CPU). Without ``torchrun``
(``WORLD_SIZE`` unset or 1) nothing here does anything and the trainer is the one-process trainer.

What the trainer does with N processes (``cxrlib.train.Trainer``):

* ``--batch`` is the **global** batch: each process draws ``batch / N`` images (N must divide it), so learning
  rates, the EMA half-life (in images) and ``images_seen`` mean the same with 1 and with N processes;
* every process starts from the same weights (same seed, then a broadcast from rank 0) and draws its own
  batches, latents and augmentations from its own random stream (:func:`stream_seed`);
* after each backward pass the gradients are averaged over the processes (:func:`average_gradients`, one
  all-reduce per network and step, run by an optimiser hook, so every GAN family gets it) -- the average of
  N gradients of B/N images each is the gradient of the B images, and every process takes the same Adam
  step: the weights stay identical (checked at the end of ``fit``). Gradients are all-reduced rather than
  wrapped in ``DistributedDataParallel``: the D step's R1 penalty (a double backward), the G step's frozen D
  and CycleGAN's four networks then need no special cases;
* minibatch-std and R1 are computed per process on its own images (as in StyleGAN2's multi-GPU training);
  BatchNorm becomes ``SyncBatchNorm`` on CUDA (torch has no CPU version: on gloo the statistics stay per
  process); ADA's statistics, the logged averages and the stop decision (NaN, wall-clock cap) are
  all-reduced, so every process stops at the same step;
* rank 0 alone writes ``log.jsonl``, samples and checkpoints; a checkpoint holds every rank's random
  streams, and ``--resume`` with the same N continues exactly (bit-exact on CPU);
* SIGINT/SIGTERM to torchrun, to one worker or to all of them (a SLURM preemption) stops every process after
  the same step: rank 0 writes ``checkpoints/last.pt``, says so in one line, and the run exits non-zero.
  torchrun kills a worker still running ``--shutdown-timeout`` seconds (30 by default) after it forwarded the
  signal: raise it when a step and a checkpoint take longer.

Multi-node is torchrun's job::

    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 -m cxrlib train …

and on SLURM, one task per node::

    srun --nodes=2 --ntasks-per-node=1 --gpus-per-node=8 torchrun --nnodes=$SLURM_NNODES --nproc_per_node=8 \\
        --rdzv-backend=c10d --rdzv-endpoint=$(scontrol show hostnames $SLURM_NODELIST | head -1):29500 \\
        -m cxrlib train --data /data/cxr --out runs/big --size 512 --batch 256
"""

from __future__ import annotations

import atexit
import hashlib
import os

import torch

from cxrlib.errors import CxrError


def env_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 without torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_active() -> bool:
    """True inside a process group of more than one process."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() and \
        torch.distributed.get_world_size() > 1


def rank() -> int:
    return torch.distributed.get_rank() if is_active() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if is_active() else 1


def is_writer() -> bool:
    """True in the process that writes files and prints (rank 0; the only one without torchrun)."""
    return rank() == 0


def init(device: str | None = "auto") -> torch.device | None:
    """Join torchrun's process group (once; later calls return the same device) and return this process's
    device: ``cuda:LOCAL_RANK`` with NCCL when CUDA is there and ``device`` allows it, else the CPU with gloo.
    Without torchrun (``WORLD_SIZE`` 1) returns None and does nothing."""
    if env_world_size() <= 1:
        return None
    if not torch.distributed.is_available():
        raise CxrError("WORLD_SIZE > 1 but this torch has no torch.distributed: run without torchrun")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want = str(device or "auto")
    cuda = torch.cuda.is_available() and (want == "auto" or want.startswith("cuda"))
    dev = torch.device("cuda", local) if cuda else torch.device("cpu")
    if not torch.distributed.is_initialized():
        _import_before_the_group()
        if cuda:
            torch.cuda.set_device(dev)
            torch.distributed.init_process_group("nccl", device_id=dev)
        else:
            torch.distributed.init_process_group("gloo")
        atexit.register(_leave)  # a process group left to the interpreter's teardown can abort at exit
    return dev


def _import_before_the_group() -> None:
    """Import, before the process group exists, the torch modules that bind ``group.WORLD`` as a default
    argument when they are imported: ``torch.distributed.nn.functional`` (``def all_reduce(..., group=group.WORLD)``),
    which every optimiser's constructor pulls in through ``torch._dynamo``. Imported after ``init``, it would hold
    the process group for the life of the interpreter, ``destroy_process_group`` could not free it, and gloo's
    worker threads would outlive :func:`_leave` -- then one that releases a finished collective's tensors while the
    interpreter shuts down needs the GIL, is ended by Python, and aborts the process ("terminate called without
    an active exception", exit -6; about 1 run in 30 on a busy 2-core machine)."""
    import torch.distributed.nn.functional  # noqa: F401


def _leave() -> None:
    """Destroy the process group while the interpreter still runs (at exit): freeing it waits for gloo's (or
    NCCL's) worker threads to finish their last collective and joins them."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def collective_device() -> torch.device:
    """Where tensors for the process group's collectives live (NCCL: this process's GPU; gloo: the CPU)."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def stream_seed(seed: int, name: str, rank: int = 0) -> int:
    """A seed for one named random stream of a run (e.g. ``"trainer"``, ``"cuda"``), different for every
    ``name`` and ``rank`` and never equal to ``seed`` itself, so no two streams of a run draw the same numbers
    (the network initialisation uses ``seed``)."""
    digest = hashlib.sha256(f"cxrlib:{seed}:{name}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@torch.no_grad()
def average_gradients(params) -> None:
    """Replace every gradient by its mean over the processes: one all-reduce of all of them, flattened.

    Parameters without a gradient are left out; every process runs the same code, so they have the same
    ones. A no-op in a single process."""
    if not is_active():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def sync_gradients_before_step(optimizer: torch.optim.Optimizer) -> None:
    """Register :func:`average_gradients` to run before every ``optimizer.step()`` (all its parameters)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: average_gradients(params))


@torch.no_grad()
def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every process."""
    if not is_active():
        return
    for t in list(module.parameters()) + list(module.buffers()):
        torch.distributed.broadcast(t.data, src=0)


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``values`` over the processes (a new tensor on ``values``' device)."""
    if not is_active():
        return values
    out = values.detach().to(collective_device(), dtype=torch.float64 if values.is_floating_point() else None)
    torch.distributed.all_reduce(out)
    return out.to(values.device, dtype=values.dtype)


def all_mean(values: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``values`` over the processes."""
    return all_sum(values) / world_size() if is_active() else values


def any_true(*flags: bool) -> list[bool]:
    """For each flag: True when it is True in any process (one small all-reduce)."""
    if not is_active():
        return [bool(f) for f in flags]
    t = torch.tensor([float(bool(f)) for f in flags], device=collective_device())
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def gather_objects(obj) -> list:
    """Every process's ``obj`` (picklable), in rank order, on every process."""
    if not is_active():
        return [obj]
    out = [None] * world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    """Rank 0's ``obj`` on every process."""
    if not is_active():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if is_active():
        torch.distributed.barrier()


def weights_fingerprint(*modules: torch.nn.Module) -> list[float]:
    """(sum, sum of squares, weighted sum) of all parameters, in float64: equal on every process when the
    weights are (the check at the end of a multi-process ``fit``)."""
    total = torch.zeros(3, dtype=torch.float64)
    for m in modules:
        for p in m.parameters():
            x = p.detach().double().flatten().cpu()
            w = torch.arange(1, x.numel() + 1, dtype=torch.float64) / max(1, x.numel())
            total += torch.stack([x.sum(), (x * x).sum(), (w * x).sum()])
    return total.tolist()


def check_in_sync(*modules: torch.nn.Module) -> None:
    """Raise ``CxrError`` when the processes' weights differ (they must not, after averaged gradients)."""
    if not is_active():
        return
    prints = gather_objects(weights_fingerprint(*modules))
    if any(p != prints[0] for p in prints[1:]):
        raise CxrError(f"the {len(prints)} processes' weights differ after training (fingerprints {prints}): "
                       "a gradient was not averaged; please report this")
