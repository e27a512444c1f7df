"""Where the arithmetic runs and in which precision: the one policy for training, evaluation and benchmarks.

Precisions: `fp32` (plain float32), `tf32` (float32 tensors, TF32 matrix units in convolutions
and matrix products) and `bf16` (autocast to bfloat16 in the forward pass, on top of TF32). They
apply on CUDA only; the CPU always computes in fp32. `using_precision` sets the TF32 switches for the
code inside it and restores them on leaving, so no setting outlives the code that asked for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch

from rlcsc.errors import RlcscError

PRECISIONS = ("bf16", "tf32", "fp32")


def pick_device(name: str) -> torch.device:
    """`auto`: CUDA when present, else CPU; asking for CUDA without one is a clear error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RlcscError("device cuda was asked for but no CUDA GPU is available (use auto or cpu)")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def device_name(device: torch.device | str) -> str:
    """The GPU's name, or "cpu"."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def effective(device: torch.device | str, mode: str) -> str:
    """The precision that really applies on `device`: `mode` on CUDA, fp32 elsewhere."""
    return mode if torch.device(device).type == "cuda" else "fp32"


@contextmanager
def using_precision(device: torch.device | str, mode: str) -> Iterator[None]:
    """TF32 convolutions and matrix products on for `tf32` and `bf16`, off for `fp32`, inside the block only.

    (bf16's autocast belongs around the forward pass alone: see `autocast`.)
    """
    if mode not in PRECISIONS:
        raise RlcscError(f"precision must be one of {PRECISIONS}, got {mode!r}")
    if torch.device(device).type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode != "fp32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def autocast(device: torch.device | str, mode: str) -> AbstractContextManager:
    """bf16 autocast for a forward pass on CUDA when `mode` is bf16; nothing otherwise."""
    if mode == "bf16" and torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()
