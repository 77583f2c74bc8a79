"""Configuration: the hardware budget, the device, threads and where caches live.

``budget()`` is what every notebook prints in its opening cell: it picks image size, data-set size,
batch and number of steps for the hardware, so nobody edits numbers to make a notebook fast.
Three budgets exist:

* ``smoke`` when the environment variable ``CXRLIB_SMOKE=1`` is set (CI: every training cell ~20 s),
* ``cpu``  on a laptop (a notebook training cell takes about 1–2 minutes),
* ``gpu``  when CUDA is available (real runs at 256 px and above).

The training configuration (``TrainConfig`` and the presets ``seed``, ``dcgan``, ``course``) lives in
``cxrlib.train``'s companion section below.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

SMOKE_ENV = "CXRLIB_SMOKE"


def is_smoke() -> bool:
    """True when ``CXRLIB_SMOKE`` is set to a true value (CI and quick checks)."""
    return os.environ.get(SMOKE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def cpu_cores() -> int:
    """Cores this process may use (respects affinity masks and container limits where visible)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    return max(1, n)


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to the number of usable cores (or ``n``); returns the number set."""
    import torch

    n = n or cpu_cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def get_device(device: str | None = "auto"):
    """``"auto"`` → CUDA when available, else Apple ``mps``, else CPU; any other string is passed to torch."""
    import torch

    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def cpu_has_bf16() -> bool:
    """True when this CPU has native bf16 arithmetic (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cache_dir() -> Path:
    """Where decoded data sets are cached: ``$CXRLIB_CACHE`` or ``~/.cache/cxrlib`` (never a source folder)."""
    root = os.environ.get("CXRLIB_CACHE")
    if root:
        return Path(root).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cxrlib"


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much work a notebook cell or ``make demo`` may do on this machine.

    kind: ``"smoke"``, ``"cpu"`` or ``"gpu"``; size: image side in px; n_images: data-set size;
    batch: training batch; steps: training iterations (one D step each); minutes: wall-clock cap of a
    training run; eval_images: images per side for metrics.
    """

    kind: str
    device: str
    size: int
    n_images: int
    batch: int
    steps: int
    minutes: float
    eval_images: int
    threads: int

    def __str__(self) -> str:
        return (
            f"budget: {self.kind} on {self.device} ({self.threads} CPU threads) · {self.size}px · "
            f"{self.n_images} images · batch {self.batch} · {self.steps} steps (≤ {self.minutes:g} min) · "
            f"{self.eval_images} images for metrics"
        )


def budget(kind: str | None = None) -> Budget:
    """The budget for this machine, or the named one (``"smoke"``, ``"cpu"``, ``"gpu"``)."""
    dev = get_device("auto")
    if kind is None:
        kind = "smoke" if is_smoke() else ("gpu" if dev.type == "cuda" else "cpu")
    threads = cpu_cores()
    if kind == "smoke":
        return Budget("smoke", dev.type, 32, 96, 16, 40, 0.3, 64, threads)
    if kind == "cpu":
        return Budget("cpu", dev.type, 64, 1000, 32, 600, 1.5, 500, threads)
    if kind == "gpu":
        return Budget("gpu", dev.type, 256, 3000, 32, 20000, 30.0, 2000, threads)
    raise ValueError(f"unknown budget {kind!r}: choose 'smoke', 'cpu' or 'gpu'")
