"""One training stage: epochs over a split, validation, best-checkpoint and resumable state, all atomic."""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from kdc._io import atomic_path
from kdc.compress import distributed
from kdc.compress.evaluate import predict, score
from kdc.compress.precision import autocast, prepare_model
from kdc.compress.progress import epoch_progress
from kdc.compress.tasks import RECON, Task
from kdc.data.slices import one_thread_per_worker
from kdc.models.checkpoint import save_checkpoint

#: ``step_loss(batch) -> loss`` for one batch already on the device.
StepLoss = Callable[[dict[str, torch.Tensor]], torch.Tensor]
log = logging.getLogger("kdc")
#: File in the run directory with one JSON line per finished epoch: stage, losses, validation, where the time went.
HISTORY = "history.jsonl"


@dataclass
class TrainSettings:
    """Optimisation settings shared by every stage of a run."""

    epochs: int
    batch_size: int = 4
    lr: float = 1e-3
    device: str = "cpu"
    seed: int = 0
    lr_schedule: str = "constant"  # or "cosine": lr decays to 0 over the stage's steps (see docs/distill.md)
    workers: int = 0  # DataLoader worker processes (0: slices are read in the training process)
    precision: str = "fp32"  # "bf16": convolutions autocast to bfloat16, channels_last (kdc.compress.precision)
    val_slices: int = 0  # validate each epoch on this many evenly spaced validation slices (0: all of them)


#: Learning-rate factor at ``progress`` (steps done / all steps of the stage) for each schedule.
LR_SCHEDULES: dict[str, Callable[[float], float]] = {
    "constant": lambda progress: 1.0,
    "cosine": lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)),
}


@dataclass
class Stage:
    """A model trained with ``step_loss``; ``extra`` holds trainable loss modules (e.g. regressors)."""

    name: str
    model: nn.Module
    step_loss: StepLoss
    meta: dict = field(default_factory=dict)
    extra: Sequence[nn.Module] = ()
    keep_best: bool = True  # False: keep the last epoch (feature-only stages do not optimise the image)
    task: Task = RECON  # how validation calls the model


#: An epoch line of ``train.log``, before (``teacher epoch 2/3: ..., 81.2 s``) and since ``--precision``
#: (``teacher epoch 2/3 (bf16): ..., 38.5 s (steps 26.7 s, data 2.3 s, validation 9.5 s)``).
EPOCH_LINE = re.compile(r" (?P<stage>\w+) epoch \d+/\d+(?: \(\w+\))?: .*?, (?P<seconds>[\d.]+) s(?: \(steps [^)]*\))?$")


def stage_seconds(run_dir: Path) -> dict[str, float]:
    """Seconds per stage (training and per-epoch validation) summed over the finished epochs in ``train.log``, which
    every run has, also those from before :data:`HISTORY`."""
    seconds: dict[str, float] = {}
    for match in map(EPOCH_LINE.search, (run_dir / "train.log").read_text().splitlines()):
        if match:
            seconds[match["stage"]] = seconds.get(match["stage"], 0.0) + float(match["seconds"])
    return {stage: round(value, 1) for stage, value in seconds.items()}


def read_history(run_dir: Path) -> list[dict]:
    """The run's finished epochs, in order, as :func:`train_stage` logged them in :data:`HISTORY`."""
    return [json.loads(line) for line in (run_dir / HISTORY).read_text().splitlines()]


def validation_subset(val_set: Sequence[dict], count: int) -> Sequence[dict]:
    """``count`` evenly spaced slices of ``val_set`` (all of it when ``count`` is 0 or not smaller than it)."""
    if count <= 0 or count >= len(val_set):
        return val_set
    return Subset(val_set, np.linspace(0, len(val_set) - 1, count).round().astype(int).tolist())


def _to_device(batch: dict, device: str) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def train_stage(
    stage: Stage, train_set: Sequence[dict], val_set: Sequence[dict], settings: TrainSettings, run_dir: Path
) -> dict:
    """Train ``stage`` for ``settings.epochs``, resuming from ``run_dir/state/<name>.pt`` if it exists.

    After every epoch the best model so far (by validation PSNR) is written to ``run_dir/<name>.pt`` and the
    resumable state to ``run_dir/state/<name>.pt``, both atomically, so a kill loses at most the running epoch.
    Returns the validation metrics of the best epoch (on ``settings.val_slices`` of ``val_set``). In a process group
    (:mod:`kdc.compress.distributed`) each rank trains on its share of every global batch and rank 0 alone validates
    and writes; ``step_loss`` must be a mean over the batch's items.
    """
    state_path = run_dir / "state" / f"{stage.name}.pt"
    val_set = validation_subset(val_set, settings.val_slices)
    schedule = LR_SCHEDULES[settings.lr_schedule]
    model = prepare_model(stage.model.to(settings.device), settings.precision)
    params = [p for m in (model, *stage.extra) for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=settings.lr)
    step_loss = distributed.data_parallel(stage.step_loss, [model, *stage.extra])
    start, best = 0, {"psnr": {"mean": float("-inf")}}
    if state_path.exists():
        state = torch.load(state_path, map_location=settings.device, weights_only=True)
        model.load_state_dict(state["model"])
        for module, weights in zip(stage.extra, state["extra"]):
            module.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        start, best = state["epoch"], json.loads(state["best"])
        if start >= settings.epochs:
            return best
        log.info("%s: resuming after epoch %d", stage.name, start)

    for epoch in range(start, settings.epochs):
        started = time.perf_counter()
        model.train()
        generator = torch.Generator().manual_seed(settings.seed * 1000 + epoch)
        torch.manual_seed(settings.seed * 1000 + epoch)
        order = torch.randperm(len(train_set), generator=generator).tolist()
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        size = settings.batch_size
        shares = [distributed.share(order[i : i + size]) for i in range(0, len(order), size)]
        loader = DataLoader(train_set, batch_sampler=[items for items, _ in shares], num_workers=settings.workers,
                            worker_init_fn=one_thread_per_worker)
        total, step_seconds = 0.0, 0.0
        with epoch_progress(f"{stage.name} epoch {epoch + 1}/{settings.epochs}", len(loader)) as report:
            for step, ((_, weight), batch) in enumerate(zip(shares, loader), 1):
                step_started = time.perf_counter()
                progress = (epoch * len(loader) + step - 1) / (settings.epochs * len(loader))
                for group in optimizer.param_groups:
                    group["lr"] = settings.lr * schedule(progress)
                with autocast(settings.precision, settings.device):
                    loss = step_loss(_to_device(batch, settings.device)) * weight
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item()  # waits for the device, so the step's time is all in step_seconds
                step_seconds += time.perf_counter() - step_started
                report(step, total / step)
        train_seconds = time.perf_counter() - started
        total = distributed.mean(total)
        if not distributed.is_main():
            distributed.barrier()  # rank 0 validates and writes
            continue
        validation_started = time.perf_counter()
        with autocast(settings.precision, settings.device):
            metrics = score(predict(model, val_set, settings.device, task=stage.task), ("psnr", "ssim"))
        validation_seconds = time.perf_counter() - validation_started
        if not stage.keep_best or metrics["psnr"]["mean"] > best["psnr"]["mean"]:
            best = metrics
            save_checkpoint(run_dir / f"{stage.name}.pt", model, {**stage.meta, "metrics": best, "epochs": epoch + 1})
        with atomic_path(state_path) as tmp:
            torch.save(
                {
                    "model": model.state_dict(),
                    "extra": [m.state_dict() for m in stage.extra],
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch + 1,
                    "best": json.dumps(best),
                },
                tmp,
            )
        distributed.barrier()
        record = {"stage": stage.name, "epoch": epoch + 1, "precision": settings.precision,
                  "train_loss": total / max(len(loader), 1), "val_psnr": metrics["psnr"]["mean"],
                  "val_ssim": metrics["ssim"]["mean"], "val_slices": len(val_set), "steps": len(loader),
                  "seconds": time.perf_counter() - started, "step_seconds": step_seconds,
                  "data_seconds": train_seconds - step_seconds, "validation_seconds": validation_seconds}
        with open(run_dir / HISTORY, "a") as history:  # one whole line per finished epoch
            history.write(json.dumps(record) + "\n")
        log.info(
            "%s epoch %d/%d (%s): train loss %.4g, val PSNR %.2f dB, SSIM %.4f, %.1f s (steps %.1f s, data %.1f s, "
            "validation %.1f s)", stage.name, epoch + 1, settings.epochs, settings.precision, record["train_loss"],
            record["val_psnr"], record["val_ssim"], record["seconds"], step_seconds, record["data_seconds"],
            validation_seconds,
        )
    return best
