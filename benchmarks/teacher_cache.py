"""Speed-up of the teacher cache: AT pre-training and KD training steps with the live teacher vs the cached one.

The recipe's own pieces (``teacher_targets``, ``outputs``, the AT and imitation losses, Adam) on the demo set
(128x128, 4x): teacher ``DCCNN(5, 5, 32)`` and student ``DCCNN(5, 3, 32)`` with random weights (speed does not depend
on them), batch 4. A step is what the trainer does per batch: load and collate the slices, forward, loss, backward,
Adam. Each repetition times ``--steps`` steps with the live teacher and the same steps with the cache (alternating
which goes first); the table gives the median over repetitions of the time per step, and the median of the
per-repetition ratios (more robust on a shared machine, as the two runs of a repetition are next to each other). The
convolution-FLOP ratio (teacher forward + student forward and backward, backward = 2 forwards, over the latter) is
the speed-up to expect when convolutions dominate. The one-off cost of building the cache and the loss difference
between the two paths on the first batch are recorded too.

    .venv/bin/python benchmarks/teacher_cache.py [--device cpu] [--steps 10] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from kdc._io import write_results
from kdc.compress.losses import build_kd_loss
from kdc.compress.tasks import RECON
from kdc.compress.teacher_cache import TeacherTargets, teacher_targets
from kdc.data.slices import open_split
from kdc.models import build_model

outputs = RECON.outputs  # the reconstruction task's (image, distilled features, hidden maps)

BATCH = 4
IMITATION_WEIGHT = 0.5


def step_loss(method: str, student: torch.nn.Module, teacher: TeacherTargets) -> Callable[[dict], torch.Tensor]:
    """The loss of one step of the recipe's AT pre-training (``at``) or KD (``imitation``) stage."""
    loss = build_kd_loss(method)
    if method == "at":
        return lambda batch: loss(outputs(student, batch), teacher.outputs(batch))

    def kd(batch: dict) -> torch.Tensor:
        produced = outputs(student, batch)
        return F.l1_loss(produced.image, batch["target"]) + IMITATION_WEIGHT * loss(produced, teacher.outputs(batch))

    return kd


def time_steps(source: TeacherTargets, method: str, device: str, steps: int) -> float:
    """Seconds per training step over ``steps`` batches (data loading included)."""
    torch.manual_seed(1)
    student = build_model("student").to(device)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    compute = step_loss(method, student, source)
    loader = DataLoader(source.train_set, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(0))
    batches = iter(loader)
    synchronise(device)
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(batches)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        loss = compute(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronise(device)
    return (time.perf_counter() - start) / steps


def conv_flops(model: torch.nn.Module, size: tuple[int, int]) -> float:
    """Multiply-adds x 2 of every 3x3 convolution of one slice at ``size``."""
    return sum(2 * m.weight.numel() * size[0] * size[1] for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def first_batch_loss_difference(live: TeacherTargets, cached: TeacherTargets, method: str, device: str) -> float:
    torch.manual_seed(1)
    student = build_model("student").to(device)
    losses = []
    for source in (live, cached):
        batch = next(iter(DataLoader(source.train_set, batch_size=BATCH)))
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with torch.no_grad():
            losses.append(step_loss(method, student, source)(batch).item())
    return abs(losses[0] - losses[1])


def benchmark(data: str, device: str, steps: int, repeats: int, cache_dir: Path) -> dict:
    train_set = open_split(data, "train", 4)
    torch.manual_seed(0)
    teacher = build_model("teacher").to(device).eval().requires_grad_(False)
    size = train_set.image_shape
    student_step = 3 * conv_flops(build_model("student"), size)
    flop_ratio = (conv_flops(teacher, size) + student_step) / student_step
    stages = {}
    for method, stage in (("at", "AT pre-training"), ("imitation", "KD")):
        loss = build_kd_loss(method)
        live = teacher_targets(teacher, loss, method, train_set, outputs, None, device)
        started = time.perf_counter()
        cached = teacher_targets(teacher, loss, method, train_set, outputs, cache_dir, device)
        build_s = time.perf_counter() - started
        time_steps(live, method, device, 2)  # warm-up: reads the volumes, first kernels
        time_steps(cached, method, device, 2)
        runs: dict[str, list[float]] = {"live": [], "cached": []}
        for repeat in range(repeats):
            order = ("live", "cached") if repeat % 2 == 0 else ("cached", "live")
            for name in order:
                runs[name].append(time_steps(live if name == "live" else cached, method, device, steps))
        median = {name: statistics.median(times) for name, times in runs.items()}
        stages[stage] = {
            "method": method,
            "live_s_per_step": median["live"],
            "cached_s_per_step": median["cached"],
            "speedup": median["live"] / median["cached"],
            "paired_speedup": statistics.median(a / b for a, b in zip(runs["live"], runs["cached"])),
            "conv_flop_ratio": flop_ratio,
            "runs_s_per_step": runs,
            "cache_build_s": build_s,
            "cache_file": cached.cache.name,
            "cache_mb": cached.cache.stat().st_size / 1e6,
            "first_batch_loss_abs_difference": first_batch_loss_difference(live, cached, method, device),
        }
        print(f"{stage}: live {median['live'] * 1e3:.0f} ms/step, cached {median['cached'] * 1e3:.0f} ms/step, "
              f"x{stages[stage]['speedup']:.2f} (paired x{stages[stage]['paired_speedup']:.2f})")
    return stages


def render(result: dict) -> str:
    host = result["host"]
    lines = [
        "# Teacher cache: training-step speed-up",
        "",
        f"`{result['command']}` — {result['slices']} training slices of the demo set (128x128, 4x), batch {BATCH}, "
        f"device {result['device']}, torch {host['torch']} with {host['torch_threads']} threads on "
        f"{host['cpus']} CPUs ({host['processor']}). Median of {result['repeats']} repetitions of "
        f"{result['steps']} steps; a step includes loading the batch.",
        "",
        "| stage | live teacher (ms/step) | cached (ms/step) | speed-up | paired speed-up | conv FLOP ratio "
        "| cache build (s) | cache size (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for stage, row in result["stages"].items():
        lines.append(
            f"| {stage} | {row['live_s_per_step'] * 1e3:.0f} | {row['cached_s_per_step'] * 1e3:.0f} | "
            f"{row['speedup']:.2f}x | {row['paired_speedup']:.2f}x | {row['conv_flop_ratio']:.2f}x | "
            f"{row['cache_build_s']:.1f} | {row['cache_mb']:.1f} |"
        )
    load = host["load_average_before"], host["load_average_after"]
    lines += [
        "",
        f"1-minute load average {load[0]:.1f} before and {load[1]:.1f} after on {host['cpus']} CPUs"
        + (" (other processes were running)" if max(load) > host["cpus"] else " (this benchmark alone)")
        + "; single repetitions still vary, the JSON holds every one.",
        "Loss of the first batch, live vs cached teacher: "
        + ", ".join(f"{s} differs by {r['first_batch_loss_abs_difference']:.1e}" for s, r in result["stages"].items())
        + ".",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="demo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("docs/results/teacher_cache"))
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as cache_dir:
        stages = benchmark(args.data, args.device, args.steps, args.repeats, Path(cache_dir))
    result = {
        "command": f"python benchmarks/teacher_cache.py --device {args.device} --steps {args.steps} "
                   f"--repeats {args.repeats}",
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "slices": len(open_split(args.data, "train", 4)),
        "steps": args.steps,
        "repeats": args.repeats,
        "host": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg()[0],
            "shared_with_other_agents": True,
        },
        "stages": stages,
    }
    write_results(args.out, result, render(result))


if __name__ == "__main__":
    main()
