"""The ``torch`` runtime of ``kdc bench``: a kdc checkpoint in PyTorch eager mode, the baseline users run today.

It lives here, beside the models it loads, so that :mod:`kdc.runtime` never imports torch; ``kdc bench`` loads it
by name (:data:`kdc.runtime.bench.EAGER_RUNNER`) only when ``--runtime torch`` is asked for.
"""

from __future__ import annotations

from pathlib import Path

import torch

from kdc.models import load_checkpoint
from kdc.models.checkpoint import model_config
from kdc.runtime.bench import Runner
from kdc.runtime.tensors import RuntimeModelError, example_image, example_kspace, example_mask
from kdc.tasks import task_of_config


def torch_device(device: str) -> torch.device:
    """``kdc bench --device`` for torch: ``CPU``, or ``GPU`` / ``CUDA`` / ``cuda:N`` for a CUDA device."""
    name = device.lower().replace("gpu", "cuda")
    if name != "cpu" and not name.startswith("cuda"):
        raise RuntimeModelError(f"--device {device}: the torch runtime runs on CPU or a CUDA GPU (GPU, cuda:N)")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeModelError(f"--device {device}: torch sees no CUDA GPU on this machine")
    return torch.device(name)


def open_checkpoint(
    path: Path, *, threads: int | None, batch: int, size: tuple[int, int] | None, device: str = "CPU"
) -> Runner:
    """Load a ``.pt`` checkpoint and bind random undersampled k-space (a random image for super-resolution) at
    ``size`` (default: its trained size).

    On a GPU each call waits for the device (``synchronize``), so the latency covers the whole inference.
    """
    target = torch_device(device)
    model, meta = load_checkpoint(path)
    model = model.to(target)
    size = size or meta.get("image_size")
    if not size:
        raise RuntimeModelError(f"{path}: checkpoint has no image size in its meta; pass --size H W")
    if threads:
        torch.set_num_threads(threads)
    shape = (int(size[0]), int(size[1]))
    if not task_of_config(model_config(model)).takes_kspace:
        arrays = (example_image(batch, shape),)
    else:
        mask = example_mask(shape[1], float(meta.get("acceleration") or 1))
        arrays = (example_kspace(batch, shape, mask), mask)
    inputs = tuple(torch.from_numpy(array).to(target) for array in arrays)

    def call() -> torch.Tensor:
        with torch.inference_mode():
            image = model(*inputs)
        if target.type == "cuda":
            torch.cuda.synchronize(target)
        return image

    where = torch.cuda.get_device_name(target) if target.type == "cuda" else "CPU"
    backend = f"torch {torch.__version__.split('+')[0]} eager {where} f32"
    return Runner(str(meta.get("role", "unknown")), backend, torch.get_num_threads(), tuple(inputs[0].shape), call)
