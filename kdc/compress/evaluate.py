"""Score reconstructions on a split: PSNR, SSIM, NMSE and HFEN per slice, data range per volume (fastMRI)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from kdc.compress.tasks import RECON, Task
from kdc.data import metrics

METRICS = {"psnr": metrics.psnr, "ssim": metrics.ssim, "nmse": metrics.nmse, "hfen": metrics.hfen}


def predict(
    model: nn.Module | None, dataset: Sequence[dict], device: str = "cpu", batch_size: int = 8, task: Task = RECON
):
    """Yield ``(volume, target, prediction)`` ``(H, W)`` per slice, magnitudes of complex images; ``model=None``
    gives the task's baseline (its input)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    if model is not None:
        model.eval().to(device)
    with torch.no_grad():
        for batch in loader:
            inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            image = task.baseline_image(inputs) if model is None else task.predict(model, inputs)
            magnitude = task.spec.magnitude
            for volume, target, prediction in zip(batch["volume"], batch["target"], image.cpu()):
                yield volume, magnitude(target.numpy())[0], magnitude(prediction.numpy())[0]


def score(slices: Iterable[tuple[str, np.ndarray, np.ndarray]], names: Iterable[str] = METRICS) -> dict:
    """Per-slice metrics with the volume's maximum as data range; ``{metric: {"mean", "sd", "n"}}``."""
    by_volume: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    for volume, target, prediction in slices:
        by_volume[volume].append((target, prediction))
    values: dict[str, list[float]] = defaultdict(list)
    for pairs in by_volume.values():
        data_range = max(float(target.max()) for target, _ in pairs)
        for target, prediction in pairs:
            for name in names:
                fn = METRICS[name]
                kwargs = {"maxval": data_range} if name in ("psnr", "ssim") else {}
                values[name].append(float(fn(target, prediction, **kwargs)))
    return {
        name: {"mean": float(np.mean(v)), "sd": float(np.std(v)), "n": len(v)} for name, v in values.items()
    }


def evaluate(
    models: Mapping[str, nn.Module | None], dataset: Sequence[dict], device: str = "cpu", task: Task = RECON
) -> dict[str, dict]:
    """Score each named model (``None`` = the task's baseline) on ``dataset``; adds ``params`` for networks."""
    table = {}
    for name, model in models.items():
        row = score(predict(model, dataset, device, task=task))
        row["params"] = 0 if model is None else sum(p.numel() for p in model.parameters())
        table[name] = row
    return table


def format_table(table: Mapping[str, Mapping]) -> str:
    """Markdown table: one row per model, mean ± sd per metric."""
    lines = ["| model | params | PSNR (dB) | SSIM | NMSE | HFEN |", "|---|---:|---:|---:|---:|---:|"]
    for name, row in table.items():
        cells = [f"{row[m]['mean']:.4f} ± {row[m]['sd']:.4f}" for m in ("ssim", "nmse", "hfen")]
        psnr = f"{row['psnr']['mean']:.2f} ± {row['psnr']['sd']:.2f}"
        lines.append(f"| {name} | {row['params']:,} | {psnr} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
