"""Training speed at 256x256 on this machine: the fp32 trainer kdc had before against today's default, in one run.

Part 1 (speed): ``--epochs`` teacher epoch(s) of ``kdc train --model teacher`` on ``--data`` (``make data``: 265
training slices of 256x256, 160 validation slices) for each trainer of :data:`TRAINERS` (fp32 validating on every
slice after each epoch, as kdc did; bf16 the same; bf16 with the default ``--val-slices``), each in a fresh run
directory, read back from the run's ``history.jsonl`` (:data:`kdc.compress.trainer.HISTORY`): seconds per epoch,
steps/s, and the share of the epoch outside the model's steps (data loading, validation).

Part 2 (recipe, ``--recipe``): the ``make demo`` recipe (``kdc distill --data demo --epochs 3 --pretrain-epochs 1
--augment scale``, seed 0) at fp32 and at bf16, side by side: the validation PSNR of every model must agree within
0.1 dB.

    .venv/bin/python benchmarks/train_speed.py [--data data/brain] [--epochs 1] [--recipe] [--runs DIR]

Results go to docs/results/train_speed.{json,md}; a part not run this time keeps its earlier result (with its own
date). Wall-clock numbers depend on what else the machine runs: the load average at the start and end of each
trainer is recorded with them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from kdc._io import write_results
from kdc.compress import recipe
from kdc.compress.precision import cpu_has_native_bf16
from kdc.compress.trainer import read_history

PRECISIONS = ("fp32", "bf16")
DEFAULT_VAL_SLICES = recipe.RunConfig("", "").val_slices
#: The trainers part 1 compares: the first is the baseline, the last kdc's default on this CPU.
TRAINERS: dict[str, dict] = {
    "fp32, all val slices (kdc before)": {"precision": "fp32", "val_slices": 0},
    "bf16, all val slices": {"precision": "bf16", "val_slices": 0},
    f"bf16, {DEFAULT_VAL_SLICES} val slices (default)": {"precision": "bf16", "val_slices": DEFAULT_VAL_SLICES},
}
#: The make-demo recipe is safe at bf16 when every model's validation PSNR is within this of fp32's.
RECIPE_TOLERANCE_DB = 0.1


def epoch_speed(data: str, epochs: int, runs: Path) -> dict[str, dict]:
    """Teacher epochs of each trainer; per trainer the mean of the epochs' timings."""
    rows = {}
    for number, (name, settings) in enumerate(TRAINERS.items()):
        run = runs / f"teacher-{number}"
        shutil.rmtree(run, ignore_errors=True)
        load = os.getloadavg()[0]
        started = time.perf_counter()
        recipe.train(recipe.RunConfig(data, str(run), epochs=epochs, **settings), "teacher")
        records = read_history(run)
        mean = {key: sum(r[key] for r in records) / len(records)
                for key in ("seconds", "step_seconds", "data_seconds", "validation_seconds", "steps")}
        rows[name] = {
            **mean, "epochs": len(records), "command_seconds": time.perf_counter() - started,
            "steps_per_second": mean["steps"] / mean["step_seconds"],
            "outside_steps_share": 1 - mean["step_seconds"] / mean["seconds"],
            "val_psnr": records[-1]["val_psnr"], "load_before": load, "load_after": os.getloadavg()[0],
        }
        print(f"{name}: {mean['seconds']:.1f} s per epoch", flush=True)
    baseline, default = (rows[name]["seconds"] for name in (next(iter(TRAINERS)), list(TRAINERS)[-1]))
    return {"trainers": rows, "speedup": baseline / default, "measured": time.strftime("%Y-%m-%d %H:%M")}


def recipe_check(runs: Path) -> dict[str, dict]:
    """The make-demo recipe at each precision, same seed: validation PSNR/SSIM per model."""
    tables = {}
    for precision in PRECISIONS:
        run = runs / f"demo-{precision}"
        shutil.rmtree(run, ignore_errors=True)
        config = recipe.RunConfig("demo", str(run), 4, epochs=3, pretrain_epochs=1, augment="scale",
                                  precision=precision)
        table = recipe.distill(config)
        tables[precision] = {name: {"psnr": row["psnr"]["mean"], "ssim": row["ssim"]["mean"]}
                             for name, row in table.items()}
    tables["measured"] = time.strftime("%Y-%m-%d %H:%M")
    tables["max_abs_psnr_difference"] = max(abs(tables["fp32"][m]["psnr"] - tables["bf16"][m]["psnr"])
                                            for m in tables["fp32"])
    return tables


def render(result: dict) -> str:
    lines = ["# Training speed: fp32 against bf16 (benchmarks/train_speed.py)", "",
             f"{result['machine']}; torch {result['torch']}, {result['threads']} threads; native bf16: "
             f"{result['native_bf16']}. Command: `{result['command']}`.", ""]
    speed = result.get("speed")
    if speed:
        lines += [f"## One 256x256 teacher epoch (kdc train --model teacher, batch 4; measured {speed['measured']})",
                  "", "| trainer | s/epoch | steps/s | model steps s | data s | validation s | outside the steps | "
                  "val PSNR dB | load avg before/after |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for name, row in speed["trainers"].items():
            lines.append(f"| {name} | {row['seconds']:.1f} | {row['steps_per_second']:.2f} | "
                         f"{row['step_seconds']:.1f} | {row['data_seconds']:.1f} | {row['validation_seconds']:.1f} | "
                         f"{100 * row['outside_steps_share']:.1f} % | {row['val_psnr']:.2f} | "
                         f"{row['load_before']:.1f} / {row['load_after']:.1f} |")
        lines += ["", f"**The default trainer is {speed['speedup']:.2f}x faster per epoch than kdc's fp32 trainer** "
                      "(goal >= 5x, stretch 8x). Validation PSNR after one epoch is over the slices each trainer "
                      "scores.", ""]
    check = result.get("recipe")
    if check:
        lines += [f"## The make-demo recipe at fp32 and bf16 (seed 0, 128x128 demo set, --augment scale; measured "
                  f"{check.get('measured', 'before 2026-12-06 10:00')})", "",
                  "| model | fp32 PSNR | bf16 PSNR | fp32 SSIM | bf16 SSIM |", "|---|---:|---:|---:|---:|"]
        for model in check["fp32"]:
            a, b = check["fp32"][model], check["bf16"][model]
            lines.append(f"| {model} | {a['psnr']:.2f} | {b['psnr']:.2f} | {a['ssim']:.4f} | {b['ssim']:.4f} |")
        diff = check["max_abs_psnr_difference"]
        verdict = "within" if diff <= RECIPE_TOLERANCE_DB else "NOT within"
        lines += ["", f"Largest PSNR difference {diff:.3f} dB: {verdict} {RECIPE_TOLERANCE_DB} dB.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/brain")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--recipe", action="store_true", help="Also train the make-demo recipe at both precisions.")
    parser.add_argument("--speed", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--runs", type=Path, default=None, help="Run directories (default: a temporary one).")
    parser.add_argument("--results", type=Path, default=Path("docs/results/train_speed"))
    args = parser.parse_args()
    runs = args.runs or Path(tempfile.mkdtemp(prefix="kdc-train-speed-"))
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "torch": torch.__version__, "threads": torch.get_num_threads(), "native_bf16": cpu_has_native_bf16(),
              "command": "python benchmarks/train_speed.py " + " ".join(sys.argv[1:]),
              "defaults": {k: v for k, v in dataclasses.asdict(recipe.RunConfig("", "")).items()
                           if k in ("batch_size", "lr", "workers", "precision")}}
    earlier = args.results.with_suffix(".json")
    earlier = json.loads(earlier.read_text()) if earlier.exists() else {}
    result["speed"] = epoch_speed(args.data, args.epochs, runs) if args.speed else earlier.get("speed")
    result["recipe"] = recipe_check(runs) if args.recipe else earlier.get("recipe")
    write_results(args.results, result, render(result))
    print(render(result))
    if args.runs is None:
        shutil.rmtree(runs, ignore_errors=True)


if __name__ == "__main__":
    main()
