"""Where the training images live and how a batch reaches the device.

The fast path keeps the whole uint8 set on the training device. A set larger than ``device_data_limit`` (or
memory-mapped from its cache file) stays on the host, and on a GPU ``HostBatches`` stages its random batches
one ahead in pinned memory. ``training_images`` decides all of it for a trainer."""

from __future__ import annotations

import os

import torch

from cxrlib.errors import CxrError
from cxrlib.images import as_images

# A data set larger than this share of the GPU's free memory stays in host memory (or memory-mapped) and is
# copied to the GPU batch by batch; ``$CXRLIB_DEVICE_DATA_BYTES`` sets the limit in bytes instead.
DEVICE_DATA_SHARE = 0.5


def device_data_limit(device: torch.device) -> int:
    """Bytes of training images that may go onto ``device`` whole (the fast path); more stay on the host."""
    value = os.environ.get("CXRLIB_DEVICE_DATA_BYTES", "").strip()
    if value:
        try:
            return int(float(value))
        except ValueError:
            raise CxrError(f"$CXRLIB_DEVICE_DATA_BYTES must be a number of bytes, got {value!r}") from None
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(DEVICE_DATA_SHARE * free)
    return 2**62  # the CPU trains from host memory anyway (the variable above still forces staged batches)


class HostBatches:
    """Random training batches of a data set that stays in host memory or in its memory-mapped cache file,
    one batch ahead: when a batch is taken, the next one's indices are drawn (from this object's own CPU
    generator, so resume is exact), a background thread gathers those images into pinned memory, and the
    copy to the device is ``non_blocking`` -- the GPU does not wait for the disk or the page cache.

    images: uint8 (N, 1, S, S) on the CPU, or a ``cxrlib.data.RowReader`` of a memory-mapped set's file; rows:
    the training rows of it (None: all); seed: the index stream's."""

    def __init__(self, images, device: torch.device, seed: int, rows: torch.Tensor | None = None):
        import concurrent.futures

        self.images, self.rows, self.device = images, rows, torch.device(device)
        self.gen = torch.Generator().manual_seed(seed)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="cxrlib-batches")
        self.pending = None  # (batch size, index-stream state before drawing it, future of the pinned batch)

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else len(self.images)

    def _gather(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.images.read(idx) if hasattr(self.images, "read") else self.images[idx]
        return x.pin_memory() if self.device.type == "cuda" else x

    def _launch(self, n: int) -> None:
        state = self.gen.get_state()
        idx = torch.randint(len(self), (n,), generator=self.gen)
        if self.rows is not None:
            idx = self.rows[idx]
        self.pending = (n, state, self.pool.submit(self._gather, idx))

    def take(self, n: int) -> torch.Tensor:
        """n random training images, uint8 (n, 1, S, S) on the device."""
        if self.pending is not None and self.pending[0] != n:  # another size: draw it from the same state
            self.gen.set_state(self.pending[1])
            self.pending = None
        if self.pending is None:
            self._launch(n)
        batch = self.pending[2].result()
        self._launch(n)
        return batch.to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        """The index stream as it was before the batch now being prefetched (that batch is drawn again)."""
        return {"gen": self.pending[1] if self.pending is not None else self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.pending = None
        self.gen.set_state(state["gen"])


def split_heldout(images, labels, seed: int, mapped: bool):
    """Hold out the adaptive learning rate's quality images (``Trainer.adapt_lr``): k = a fifth of the set,
    at least 8 and at most 256, chosen by a permutation seeded with ``seed``; D never trains on them.

    images: uint8 (N, 1, S, S) (for a memory-mapped set, its mapped tensor); labels: (N,) or None; mapped:
    the set is memory-mapped, so its training images are not copied out but named by ``rows``. Returns
    ``(images, labels, heldout, rows)``: the training images (all of them when mapped) and their labels, the
    held-out images, and the training rows of a mapped set (None otherwise)."""
    k = max(8, min(256, len(images) // 5))
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    rows = None
    if mapped:
        heldout, rows = images[perm[:k]], perm[k:]
    else:
        heldout, images = images[perm[:k]], images[perm[k:]]
    labels = None if labels is None else labels[perm[k:]]
    return images, labels, heldout, rows


def place_images(images, device: torch.device, memmap=None):
    """Where the training images stay: the whole set on ``device`` (the fast path), or on the host when it is
    larger than ``device_data_limit`` or memory-mapped (``memmap``: its cache file) and the device is a GPU.

    Returns ``(images, on_host, reader)``: the images where they stay (a mapped set's are never copied), whether
    batches come from the host, and a ``cxrlib.data.RowReader`` of the mapped file (its batches are read from
    the file, not faulted in through the map; None when not mapped)."""
    mapped = bool(memmap)
    on_host = (device.type != "cpu" and mapped) or images.numel() > device_data_limit(device)
    reader = None
    if mapped:
        from cxrlib.data import RowReader

        reader = RowReader(memmap)
    return (images if (on_host or mapped) else images.to(device)), on_host, reader


def training_images(data, cfg, device: torch.device) -> tuple:
    """The training images of ``data`` (an ``ImageSet`` or a uint8 tensor) for a run with ``cfg`` on ``device``:
    the adaptive learning rate's held-out images set aside (``split_heldout``), the rest placed where batches
    are drawn from (``place_images``). Returns ``(images, labels, heldout, rows, on_host, reader)``: labels on
    ``device`` (None: unlabelled), heldout (None without ``cfg.adaptive_lr``), the training rows of a
    memory-mapped set (None: all), and ``place_images``' on_host and reader."""
    try:
        images = as_images(data, cfg.size, uint8=True)
    except CxrError as e:
        raise CxrError(f"training data: {e}") from None
    labels = getattr(data, "labels", None)
    mapped = bool(getattr(data, "memmap", ""))  # pixels in a memory-mapped cache file: never copy them all
    heldout, rows = None, None
    if cfg.adaptive_lr:  # the quality signal compares samples with images D never trained on
        images, labels, heldout, rows = split_heldout(images, labels, cfg.seed, mapped)
    images, on_host, reader = place_images(images, device, data.memmap if mapped else None)
    return images, (None if labels is None else labels.to(device)), heldout, rows, on_host, reader
