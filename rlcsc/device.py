"""Where the arithmetic runs and in which precision: the one policy for training, evaluation and benchmarks.

Training (`train.precision`, CUDA only; the CPU trains in fp32): `fp32` (plain float32), `tf32`
(float32 tensors, TF32 matrix units in convolutions and matrix products) and `bf16` (autocast to
bfloat16 in the forward pass, on top of TF32). `using_precision` sets the TF32 switches for the code
inside it and restores them on leaving, so no setting outlives the code that asked for it.

Inference (`evaluate.precision`, `rlcsc sr --precision`): `fp32`, `tf32` (CUDA; fp32 on the CPU),
`bf16`: the convolutions between the image and the image in bfloat16 (for RL-CSC W1, the K
applications of S and W2, 99% of its arithmetic), those that read or write the image (F0, F1 and H)
and the residual sum in fp32 (`bf16_inside`; rounding the image itself to bf16 costs tenths of a grey
level), and `winograd` (CPU): the same convolutions in fp32 by Winograd's F(6x6, 3x3)
(`rlcsc.winograd`), those of at least its `WIDE` input times output channels (narrower ones stay
direct). `inference_precision` says what really runs: bf16 needs a device that computes it natively
(a CPU with AVX-512 BF16 or AMX; elsewhere oneDNN emulates it, several times slower than fp32), and
falls back to winograd on a CPU (fp32 on a GPU) where there is none, saying so once; a GPU
runs winograd as fp32, its convolution library choosing its own algorithms.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import torch
from torch import nn

from rlcsc.errors import RlcscError

PRECISIONS = ("bf16", "tf32", "fp32")  # of training
INFERENCE_PRECISIONS = ("bf16", "winograd", "tf32", "fp32")


def pick_device(name: str) -> torch.device:
    """`auto`: CUDA when present, else CPU; asking for CUDA without one is a clear error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RlcscError("device cuda was asked for but no CUDA GPU is available (use auto or cpu)")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def device_name(device: torch.device | str) -> str:
    """The GPU's name, or "cpu"."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def cpu_description() -> str:
    """The CPU's model name and the instruction sets that decide its inference speed (AVX2, AVX-512, its
    BF16 and VNNI, AMX), as Linux reports them; the platform's processor string elsewhere."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    have = set(fields.get("flags", "").split())
    flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile") if f in have]
    return f"{fields.get('model name', 'unknown CPU')} ({', '.join(flags) or 'no AVX2'})"


# The environment variables by which a user limits the vector instructions that torch's own kernels,
# oneDNN and MKL use below what the CPU has.
ISA_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def machine(device: torch.device | str) -> dict:
    """What a computation runs on and with: the GPU when `device` is CUDA (and how many there are), the
    CPU with its vector instructions, those torch's own kernels use and any `ISA_LIMITS` set, its cores and
    torch's threads, and the versions of torch, CUDA, cuDNN, Python and the platform."""
    cuda = torch.device(device).type == "cuda"
    return {"gpu": device_name(device) if cuda else None, "gpus": torch.cuda.device_count(),
            "cpu": cpu_description(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "isa_limits": {name: os.environ[name] for name in ISA_LIMITS if os.environ.get(name)},
            "cpu_cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "python": platform.python_version(), "platform": platform.platform()}


def effective(device: torch.device | str, mode: str) -> str:
    """The training precision that really applies on `device`: `mode` on CUDA, fp32 elsewhere."""
    return mode if torch.device(device).type == "cuda" else "fp32"


# The values of ONEDNN_MAX_CPU_ISA below AVX512_CORE_BF16: oneDNN, which computes the CPU's convolutions,
# then emulates bf16, slower than fp32, whatever the CPU has.
ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def native_bf16(device: torch.device | str) -> bool:
    """Whether `device` computes bf16 natively: a CUDA GPU with bf16 units, or a CPU with AVX-512 BF16
    or AMX that ONEDNN_MAX_CPU_ISA does not keep oneDNN from."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_bf16_supported()
    return not _bf16_limit() and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def _bf16_limit() -> str | None:
    """ONEDNN_MAX_CPU_ISA where it keeps oneDNN below AVX512_CORE_BF16."""
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    return limit if limit.upper() in ISAS_WITHOUT_BF16 else None


@functools.cache
def _say_once(line: str) -> None:
    print(line, file=sys.stderr)


def resolve_precision(device: torch.device | str, mode: str) -> tuple[str, str | None]:
    """The precision a network runs in on `device` when `mode` is asked for, and why it is not `mode` (None when it
    is): on CUDA `mode`, but fp32 for winograd; on the CPU fp32 for tf32; where the device lacks native bf16,
    winograd on the CPU and fp32 on a GPU for bf16."""
    if mode not in INFERENCE_PRECISIONS:
        raise RlcscError(f"precision must be one of {', '.join(INFERENCE_PRECISIONS)}, got {mode!r}")
    cuda = torch.device(device).type == "cuda"
    if mode == "bf16" and not native_bf16(device):
        fallback = "fp32" if cuda else "winograd"
        what = ("this GPU has no bf16 units" if cuda else
                f"ONEDNN_MAX_CPU_ISA={_bf16_limit()} keeps oneDNN from AVX-512 BF16 and AMX" if _bf16_limit() else
                "this CPU has no AVX-512 BF16 or AMX")
        how = "" if cuda else " (fp32 by Winograd's F(6x6, 3x3) in the layers wide enough for it)"
        return fallback, (f"rlcsc: bf16 asked for, but {what}, where bf16 runs slower than fp32: computing in "
                          f"{fallback}{how}")
    if mode == "winograd" and cuda:
        return "fp32", ("rlcsc: winograd is for the CPU; on a GPU cuDNN picks its own convolution algorithms: "
                        "computing in fp32")
    return mode if cuda or mode in ("bf16", "winograd") else "fp32", None


def inference_precision(device: torch.device | str, mode: str) -> str:
    """`resolve_precision`'s precision, its reason for a fallback said once on stderr."""
    precision, why = resolve_precision(device, mode)
    if why:
        _say_once(why)
    return precision


def _input_as_weights(conv: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """A convolution's input in its weights' dtype (a forward pre-hook)."""
    return (args[0].to(conv.weight.dtype), *args[1:])


def bf16_inside(model: nn.Module) -> nn.Module:
    """`model` (in place) with the convolutions of its `inner_layers` in bfloat16 and the rest in fp32,
    each convolution casting its input to its own weights' dtype: the image goes in and comes out in
    fp32, and only what lies between its first and last layers is rounded to bf16."""
    inner = set(model.inner_layers())
    for conv in model.modules():
        if isinstance(conv, nn.Conv2d):
            if conv in inner:
                conv.to(torch.bfloat16)
            conv.register_forward_pre_hook(_input_as_weights)
    return model


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


def inferring(device: torch.device | str, precision: str) -> AbstractContextManager:
    """The TF32 switches around inference in `precision` (`rlcsc sr`, evaluation, benchmarks, the training
    monitor): on for tf32 only; under bf16 the layers it leaves in fp32 (F0, F1, H) compute in true fp32 on a
    GPU too, as on the CPU."""
    return using_precision(device, "tf32" if precision == "tf32" else "fp32")


def autocast(device: torch.device | str, mode: str) -> AbstractContextManager:
    """bf16 autocast for a training forward pass on CUDA when `mode` is bf16; nothing otherwise."""
    if mode == "bf16" and torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()
