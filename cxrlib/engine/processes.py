"""This process's place in a run: its rank among the ``torchrun`` processes (``cxrlib.distributed``), the
device it trains on, its share of the global batch, and torch's thread count for it (``join_processes``); and
what several processes share: BatchNorm statistics (``sync_batchnorm``) and averaged gradients (``optimizers``)."""

from __future__ import annotations

import torch

from cxrlib import config, distributed
from cxrlib.engine.hardware import adam
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


def sync_batchnorm(G: torch.nn.Module, D: torch.nn.Module, world: int, device: torch.device,
                   wanted: bool = True) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(G, D) with SyncBatchNorm -- BatchNorm statistics over the global batch -- when several processes train
    on CUDA (torch's SyncBatchNorm is CUDA-only) and the family ``wanted`` it; else (G, D) as they are."""
    if world > 1 and device.type == "cuda" and wanted:
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(G), torch.nn.SyncBatchNorm.convert_sync_batchnorm(D)
    return G, D


def optimizers(G: torch.nn.Module, D: torch.nn.Module, cfg, world: int) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """G's and D's Adam (``cfg``'s learning rates and betas; fused where it can be); with several processes
    every optimiser step first averages the gradients over them."""
    g_opt = adam(G.parameters(), lr=cfg.g_lr, betas=cfg.g_betas)
    d_opt = adam(D.parameters(), lr=cfg.d_lr, betas=cfg.d_betas)
    if world > 1:
        distributed.sync_gradients_before_step(g_opt)
        distributed.sync_gradients_before_step(d_opt)
    return g_opt, d_opt
