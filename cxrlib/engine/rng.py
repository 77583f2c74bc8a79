"""The trainer's own random streams, so that a run resumes bit for bit and nothing outside changes it.

Every random draw of training comes from the trainer's ``torch.Generator``; dropout draws from torch's global
generator, which ``with_own_global_rng`` sets to the trainer's own saved stream around each D and G step.
``seeded_networks`` and ``own_generator`` seed a new trainer's networks and streams; ``save_streams`` gathers a
process's streams for the checkpoint and ``restore_streams`` continues them."""

from __future__ import annotations

import functools
import warnings

import torch

from cxrlib import distributed


def with_own_global_rng(step):
    """Decorator for the D and G steps: run them with torch's global RNG (what dropout draws from) set to
    the trainer's own saved stream, then store that stream back and restore the caller's. Two trainers in one
    notebook, or a ``torch.randn`` between steps, then never change a run's dropout masks."""

    @functools.wraps(step)
    def wrapped(self, *args, **kwargs):
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.set_rng_state(self.global_rng["torch"])
            if cuda:
                torch.cuda.set_rng_state(self.global_rng["cuda"], self.device)
            try:
                return step(self, *args, **kwargs)
            finally:
                self.global_rng["torch"] = torch.get_rng_state()
                if cuda:
                    self.global_rng["cuda"] = torch.cuda.get_rng_state(self.device)

    return wrapped


def save_streams(rng: torch.Generator, global_rng: dict, device: torch.device, host_batches=None) -> dict:
    """This process's random streams: the trainer's generator ``rng``, dropout's global stream(s)
    ``global_rng``, the host batch indices (``host_batches``, a ``HostBatches`` or None), and the device type
    they belong to (a CUDA generator's state does not fit a CPU one)."""
    streams = {"trainer": rng.get_state(), **global_rng, "device": device.type}
    if host_batches is not None:
        streams["batches"] = host_batches.state_dict()["gen"]
    return streams


def restore_streams(state: dict, rng: torch.Generator, global_rng: dict, host_batches, device: torch.device, *,
                    seed: int, step: int, rank: int, world: int, writer: bool, stacklevel: int = 3) -> dict:
    """Continue a checkpoint's random streams exactly -- or, when they cannot be (written on another device
    type, or by another number of processes), start fresh ones derived from the seed and the step, with a
    one-line notice (from the ``writer`` process): the run goes on, statistically the same but no longer
    bit-exact.

    state: the checkpoint; ``rng`` and ``host_batches`` are set in place; returns dropout's global stream(s) to
    use from now on (``global_rng`` itself when fresh streams start). The notice names the code ``stacklevel``
    frames up (3: the caller of the function that calls this one)."""
    saved = state["rng"]
    if world > 1 or "rng_ranks" in state:
        ranks = state.get("rng_ranks", [saved])
        saved = ranks[rank] if len(ranks) == world else None
        why = None if saved is not None else f"{len(ranks)} process(es) wrote the checkpoint, {world} resume it"
    else:
        why = None
    if saved is not None:
        saved_device = saved.get("device") or ("cpu" if saved["trainer"].numel() > 64 else "cuda")  # older files
        if saved_device != device.type:
            why = f"the checkpoint's random streams are {saved_device} ones and this run is on {device.type}"
    if why is not None:
        if writer:
            warnings.warn(f"resuming with fresh random streams ({why}): the run continues, but not bit-exactly "
                          "as it would have", RuntimeWarning, stacklevel=stacklevel)
        rng.manual_seed(distributed.stream_seed(seed, f"trainer-resumed-{step}", rank))
        return global_rng
    rng.set_state(saved["trainer"])
    if host_batches is not None and "batches" in saved:
        host_batches.load_state_dict({"gen": saved["batches"]})
    return {k: v for k, v in saved.items() if k in ("torch", "cuda")}


def seeded_networks(family, cfg, rank: int) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    """A family's (G, D) for ``cfg``, initialised from ``cfg.seed`` without touching the caller's CPU RNG, and
    dropout's own stream on this process (``{"torch": state}``, the ``global_rng`` of ``with_own_global_rng``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        G, D = family.build_models(cfg)
        torch.manual_seed(distributed.stream_seed(cfg.seed, "dropout", rank))
        return G, D, {"torch": torch.get_rng_state()}


def own_generator(seed: int, device: torch.device, rank: int, global_rng: dict) -> torch.Generator:
    """The trainer's own generator on ``device`` (every random draw of training but dropout's), seeded from
    ``seed`` for this process; on CUDA dropout's device stream is seeded into ``global_rng["cuda"]`` too."""
    rng = torch.Generator(device).manual_seed(distributed.stream_seed(seed, "trainer", rank))
    if device.type == "cuda":  # dropout on the GPU draws from the device's global generator
        with torch.random.fork_rng(devices=[device]):
            torch.cuda.manual_seed(distributed.stream_seed(seed, "cuda", rank))
            global_rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng
