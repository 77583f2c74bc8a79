"""The hardware's fast paths: bf16 autocast where the device computes bf16 natively (``amp_dtype``,
``cuda_has_native_bf16``) and Adam as one fused kernel (``adam``)."""

from __future__ import annotations

import torch

from cxrlib import config


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``TrainConfig.amp`` on a device: bf16 or None (fp32)."""
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda":  # native bf16 only (Ampere, sm_80, and newer): a T4 would emulate it, slowly
        return torch.bfloat16 if cuda_has_native_bf16(device) else None
    if device.type == "cpu":
        return torch.bfloat16 if config.cpu_has_bf16() else None
    return None


def cuda_has_native_bf16(device=None) -> bool:
    """True on GPUs that compute in bf16 natively (compute capability 8.0 or newer: A100, L4, H100, …).

    ``torch.cuda.is_bf16_supported()`` also says True where bf16 is only emulated (a Colab T4, sm_75), where
    autocast to bf16 is slower than fp32; there ``amp="auto"`` trains in fp32."""
    if not torch.cuda.is_available():
        return False
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def adam(params, **kw) -> torch.optim.Adam:
    """Adam with one fused kernel for all tensors (CUDA; CPU from torch 2.4), else torch's multi-tensor form.

    On CPU torch's default is a loop of ~10 small ops per tensor, for each of the course G and D's 70 tensors;
    the fused kernel is several times faster (timings in benchmarks/RESULTS.md, issue 10)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, fused=True, **kw)
    except (RuntimeError, ValueError):  # an older torch without the fused CPU kernel
        return torch.optim.Adam(params, foreach=True, **kw)
