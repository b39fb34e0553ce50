"""Training precision (``--precision``): ``bf16`` autocasts the convolutions to bfloat16 in channels_last layout,
``fp32`` keeps everything in float32.

At ``bf16`` only the operations autocast lowers (convolutions, matrix products) run in bfloat16; data consistency
stays in float32/complex64 because every cascade's residual sum (float32 input + bfloat16 convolution) promotes
back to float32 before the FFTs, and the losses see float32 images and features
(:meth:`kdc.compress.losses.Outputs.float`). Weights, the optimiser's state and checkpoints stay float32, so a
checkpoint trained at ``bf16`` exports and runs like any other.
``auto`` picks ``bf16`` where the hardware has native bfloat16 (a CPU with AMX-BF16 or AVX512-BF16, a CUDA device
with bf16 support) and ``fp32`` elsewhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from kdc.errors import KdcError

PRECISIONS = ("auto", "bf16", "fp32")
#: CPU flags (``/proc/cpuinfo``) of native bfloat16 arithmetic.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True where the CPU advertises AMX-BF16 or AVX512-BF16 (Linux); False where it cannot be told."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        return False
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def resolve_precision(precision: str, device: str) -> str:
    """``bf16`` or ``fp32`` for ``--precision`` on ``device`` (``auto``: bf16 where the hardware has it natively)."""
    if precision not in PRECISIONS:
        raise KdcError(f"--precision {precision!r}: expected one of {list(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


@contextlib.contextmanager
def autocast(precision: str, device: str) -> Iterator[None]:
    """The forward passes of a step or of validation at ``precision`` (a no-op at ``fp32``)."""
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        yield


def prepare_model(model: nn.Module, precision: str) -> nn.Module:
    """``model`` in the memory layout its precision runs fastest in (channels_last for bf16 convolutions)."""
    return model.to(memory_format=torch.channels_last) if precision == "bf16" else model
