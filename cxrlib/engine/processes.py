"""This process's place in a run: its rank among the ``torchrun`` processes (``cxrlib.distributed``), the
device it trains on, its share of the global batch, and torch's thread count for it."""

from __future__ import annotations

import torch

from cxrlib import config, distributed
from cxrlib.errors import CxrError


def join_processes(device: str, batch: int) -> tuple[int, int, torch.device, int]:
    """Join the run's processes (under ``torchrun``; otherwise rank 0 of 1) and choose this one's device.

    device: ``TrainConfig.device`` (``"auto"``, ``"cpu"``, ``"cuda:1"``, …; under torchrun each process takes
    its local GPU); batch: the global batch, shared out among the processes. Returns ``(rank, world, device,
    batch per process)``; a batch that does not divide among the processes is a ``CxrError``."""
    dist_device = distributed.init(device)
    rank, world = distributed.rank(), distributed.world_size()
    if batch % world:
        raise CxrError(f"--batch {batch} is the global batch and must divide among the {world} "
                       f"processes (e.g. {max(1, batch // world) * world})")
    config.set_threads()
    return rank, world, dist_device or config.get_device(device), batch // world
