"""``kdc report``: KD-MRI's figure (reconstructions and residual maps of chosen slices) and the metrics table.

Columns: the network's input (zero-filled, or low-res for super-resolution), target, teacher, student, KD
student (those the run holds). Per slice, one row of images and one row of ``|reconstruction - target|`` on one
fixed scale for the whole figure (``error_max``, a fraction of the volume maximum, shown by a colour bar), each
panel titled with its PSNR / SSIM. By default the slices drawn are those with the most anatomy (foreground).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from kdc._io import atomic_path
from kdc.compress.evaluate import evaluate, format_table
from kdc.compress.recipe import open_run, resolve_device
from kdc.compress.tasks import Task
from kdc.data import metrics
from kdc.errors import KdcError

LABELS = {"zero-filled": "Zero-filled", "low-res": "Low-res", "target": "Target", "teacher": "Teacher",
          "student": "Student", "kd_student": "KD student"}
PANEL_INCHES = (2.6, 2.8)  # width, height of one panel (image + title)
DPI = 100
#: Data range of PSNR/SSIM: readers scale every volume to a maximum of 1 (docs/conventions.md), as evaluate uses.
VOLUME_MAX = 1.0
#: Default top of the residual maps' scale, as a fraction of the volume maximum.
ERROR_MAX = 0.1
#: A pixel above this fraction of the volume maximum counts as anatomy when picking default slices.
FOREGROUND_LEVEL = 0.1


def figure_pixels(columns: int, slices: int) -> tuple[int, int]:
    """``(width, height)`` of the PNG for ``columns`` panels across and ``slices`` slices (two rows each)."""
    return round(columns * PANEL_INCHES[0] * DPI), round(2 * slices * PANEL_INCHES[1] * DPI)


def parse_slices(text: str | None, dataset: Sequence[dict]) -> list[int]:
    """Slice indices of the split from ``"3,10"``; by default those with the most anatomy (see :func:`anatomy_slices`)."""
    count = len(dataset)
    if not text:
        return anatomy_slices(dataset)
    try:
        picks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise KdcError(f"--slices {text!r}: expected comma-separated slice numbers, e.g. 3,10") from None
    bad = [p for p in picks if not 0 <= p < count]
    if not picks or bad:
        raise KdcError(f"--slices {text!r}: expected numbers from 0 to {count - 1} (the split has {count} slices)")
    return picks


def anatomy_slices(dataset: Sequence[dict], count: int = 2) -> list[int]:
    """The slice with the largest foreground in each of ``count`` equal parts of the split (not the neck or the
    skull's top, which evenly spaced picks land on)."""
    foreground = np.array([np.mean(dataset[i]["target"] > FOREGROUND_LEVEL * VOLUME_MAX) for i in range(len(dataset))])
    parts = np.array_split(np.arange(len(dataset)), min(count, len(dataset)))
    return [int(part[np.argmax(foreground[part])]) for part in parts]


def saved_table(run: Path, rows: Sequence[str]) -> dict | None:
    """The validation table ``kdc distill`` left in ``metrics.json``, if it covers ``rows`` with every metric."""
    try:
        table = json.loads((run / "metrics.json").read_text())["models"]
        format_table({row: table[row] for row in rows})
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None
    return {row: table[row] for row in rows}


def reconstruct(task: Task, models: dict[str, torch.nn.Module], item: dict, device: str) -> dict[str, np.ndarray]:
    """Target, the task's input image and each model's output for one slice, as ``(H, W)`` arrays."""
    batch = {k: torch.from_numpy(v)[None].to(device) for k, v in item.items() if isinstance(v, np.ndarray)}
    with torch.no_grad():
        images = {task.baseline: task.baseline_image(batch)}
        for role, model in models.items():
            images[role] = task.predict(model.eval().to(device), batch)
    magnitude = task.spec.magnitude
    return {"target": magnitude(item["target"])[0], **{k: magnitude(v.cpu().numpy())[0, 0] for k, v in images.items()}}


def draw(rows: list[tuple[str, dict[str, np.ndarray]]], columns: list[str], out: Path, title: str,
         error_max: float = ERROR_MAX) -> None:
    """Write the figure: per slice, images then residual maps on ``[0, error_max]`` with a colour bar; PNG written
    atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image  # matplotlib's own dependency

    width, height = figure_pixels(len(columns), len(rows))
    figure, axes = plt.subplots(
        2 * len(rows), len(columns), figsize=(width / DPI, height / DPI), dpi=DPI, squeeze=False, layout="constrained"
    )
    for index, (name, images) in enumerate(rows):
        target = images["target"]
        errors = {c: np.abs(images[c] - target) for c in columns if c != "target"}
        residual = None
        for column, role in enumerate(columns):
            top, bottom = axes[2 * index, column], axes[2 * index + 1, column]
            image = np.clip(images[role], 0, VOLUME_MAX)
            top.imshow(image, cmap="gray", vmin=0, vmax=VOLUME_MAX, interpolation="nearest")
            if role == "target":
                top.set_title(f"{LABELS[role]}\n{name}", fontsize=10)
                bottom.text(0.5, 0.5, f"|error|, fixed scale:\n0 (black) to {error_max:g}\n(white) of the\n"
                                      "volume maximum", ha="center", va="center", fontsize=10,
                            transform=bottom.transAxes)
            else:
                psnr = metrics.psnr(target, images[role], maxval=VOLUME_MAX)
                ssim = metrics.ssim(target, images[role], maxval=VOLUME_MAX)
                top.set_title(f"{LABELS[role]}\n{psnr:.2f} dB / {ssim:.3f}", fontsize=10)
                residual = bottom.imshow(errors[role], cmap="gray", vmin=0, vmax=error_max, interpolation="nearest")
            for ax in (top, bottom):
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_frame_on(role != "target" or ax is top)
        if residual is not None:
            bar = figure.colorbar(residual, ax=list(axes[2 * index + 1]), shrink=0.9, pad=0.01)
            bar.set_label("|error| / volume max", fontsize=9)
    figure.suptitle(title, fontsize=11)
    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())
    plt.close(figure)
    with atomic_path(out) as tmp:  # every colour is grey: an 8-bit grey PNG is a third of the RGBA one, and lossless
        Image.fromarray(pixels).convert("L").save(tmp, format="png", optimize=True)


def report(
    run: Path, out: Path | None, slices: str | None = None, data: str | None = None, split: str = "val",
    device: str = "cpu", error_max: float = ERROR_MAX, trusted: Sequence[str] = (),
) -> str:
    """Draw the figure to ``out`` (if given) and return the split's metrics table as markdown; ``trusted``: users'
    classes the run's checkpoints may be rebuilt from (``--user-class``)."""
    if out is not None and out.suffix.lower() != ".png":
        raise KdcError(f"--out {out}: expected a .png file")
    if not error_max > 0:
        raise KdcError(f"--error-max {error_max}: expected a fraction of the volume maximum > 0, e.g. 0.1")
    device = resolve_device(device)
    settings, task, dataset, models = open_run(run, data, split, trusted=trusted)
    picks = parse_slices(slices, dataset) if out is not None else []
    table = saved_table(run, [task.baseline, *models]) if data is None and split == "val" else None
    if table is None:
        table = evaluate({task.baseline: None, **models}, dataset, device, task)
    if out is not None:
        rows = []
        for pick in picks:
            item = dataset[pick]
            rows.append((f"{item['volume']} slice {item['slice']} (#{pick})", reconstruct(task, models, item, device)))
        columns = [task.baseline, "target", *models]
        draw(rows, columns, out, f"{run.name}: {task.label(settings)}, {split} split (PSNR / SSIM per slice)",
             error_max)
    return format_table(table)
