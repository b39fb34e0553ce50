"""The ``torch`` runtime of ``kdc bench``: a kdc checkpoint in PyTorch eager mode, the baseline users run today, or
a TorchScript / ``.pt2`` file written by ``kdc export`` (read through its contract, like the other runtimes).

It lives here, beside the models it loads, so that :mod:`kdc.runtime` never imports torch; ``kdc bench`` loads it
by name (:data:`kdc.runtime.bench.EAGER_RUNNER`) only when ``--runtime torch`` is asked for.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from kdc.export.formats import CONTRACT_FILE, quiet_torch
from kdc.models import load_checkpoint
from kdc.models.checkpoint import model_config
from kdc.runtime.bench import Runner
from kdc.runtime.session import Reconstructor, parse_contract
from kdc.runtime.tensors import (
    EXAMPLE_COILS, RuntimeModelError, example_coil_feeds, example_image, example_kspace, example_mask,
)
from kdc.tasks import task_of_config


def torch_device(device: str) -> torch.device:
    """``kdc bench --device`` for torch: ``CPU``, or ``GPU`` / ``CUDA`` / ``cuda:N`` for a CUDA device."""
    name = device.lower().replace("gpu", "cuda")
    if name != "cpu" and not name.startswith("cuda"):
        raise RuntimeModelError(f"--device {device}: the torch runtime runs on CPU or a CUDA GPU (GPU, cuda:N)")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeModelError(f"--device {device}: torch sees no CUDA GPU on this machine")
    return torch.device(name)


def exported_contract(path: Path) -> str | None:
    """The kdc contract of a TorchScript / ``.pt2`` file written by ``kdc export`` (a zip entry), else None."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        names = [name for name in archive.namelist() if name.endswith(f"/extra/{CONTRACT_FILE}")]
        return archive.read(names[0]).decode() if names else None


class TorchReconstructor(Reconstructor):
    """A TorchScript (``.pt``/``.ts``) or ``torch.export`` (``.pt2``) file of ``kdc export``, run by torch."""

    engine = "torch"

    def __init__(self, path: Path, contract: str, *, threads: int | None, device: str = "CPU") -> None:
        self.device = torch_device(device)
        if threads:
            torch.set_num_threads(threads)
        with quiet_torch():
            if path.suffix == ".pt2":
                self.module = torch.export.load(path).module().to(self.device)
            else:
                self.module = torch.jit.load(str(path), map_location=self.device)
        parsed = parse_contract(contract, path)
        # A traced module states no shapes of its own: the contract's shapes stand for the graph's.
        shapes = {spec.name: tuple(d if isinstance(d, int) else None for d in spec.shape)
                  for spec in (*parsed.inputs, *parsed.outputs)}
        names = parsed.input_names
        where = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        backend = f"torch {torch.__version__.split('+')[0]} {path.suffix[1:]} {where} f32"
        super().__init__(path, parsed, names, backend, torch.get_num_threads(), [], shapes)

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            output = self.module(*(torch.from_numpy(np.require(feeds[name], requirements="W")).to(self.device)
                                   for name in self.input_names))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return {self.output_names[0]: output.cpu().numpy()}


def open_checkpoint(
    path: Path, *, threads: int | None, batch: int, size: tuple[int, int] | None, device: str = "CPU"
) -> Runner:
    """Load a ``.pt`` checkpoint and bind random undersampled k-space (a random image for super-resolution) at
    ``size`` (default: its trained size); a TorchScript or ``.pt2`` export runs at its exported size.

    On a GPU each call waits for the device (``synchronize``), so the latency covers the whole inference.
    """
    contract = exported_contract(path)
    if contract is not None:
        exported = TorchReconstructor(path, contract, threads=threads, device=device)
        feeds = exported.example_feeds(batch)
        return Runner(exported.role, exported.backend, exported.threads, feeds[exported.input_names[0]].shape,
                      lambda: exported.run(feeds), exported.warnings)
    target = torch_device(device)
    model, meta = load_checkpoint(path)
    model = model.to(target)
    size = size or meta.get("image_size")
    if not size:
        raise RuntimeModelError(f"{path}: checkpoint has no image size in its meta; pass --size H W")
    if threads:
        torch.set_num_threads(threads)
    shape = (int(size[0]), int(size[1]))
    task = task_of_config(model_config(model), meta.get("task"))
    if not task.takes_kspace:
        arrays = (example_image(batch, shape),)
    elif task.kspace_layout == "coils_last":  # every coil's k-space: kdc's SENSE models, a user's VarNet
        feeds = example_coil_feeds(batch, EXAMPLE_COILS, shape, float(meta.get("acceleration") or 1))
        arrays = (feeds["kspace"], feeds["mask"])
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
