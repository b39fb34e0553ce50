"""Shared by ``kd_methods.py`` and ``ablation.py``: run ``kdc distill`` once per table row against one trained
teacher and one plain student per seed, then write the validation table (markdown + JSON) with each command and time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from kdc._io import write_results
from kdc.data.slices import dataset_root


@dataclass
class Row:
    """One table row: a label, what the row changes in words, and the ``kdc distill`` options that make it."""

    label: str
    description: str
    options: list[str]


def parser(description: str, name: str) -> argparse.ArgumentParser:
    """The options both tables share; the defaults are the reduced CPU setting on the demo set."""
    arguments = argparse.ArgumentParser(description=description)
    arguments.add_argument("--data", default="demo", help="dataset directory or 'demo'")
    arguments.add_argument("--train-every", type=int, default=4, help="keep every N-th train slice of each volume")
    arguments.add_argument("--val-every", type=int, default=2, help="keep every N-th val slice of each volume")
    arguments.add_argument("--acc", type=int, default=4)
    arguments.add_argument("--epochs", type=int, default=2, help="epochs of the student and KD stages")
    arguments.add_argument("--pretrain-epochs", type=int, default=1, help="epochs of feature pre-training")
    arguments.add_argument("--teacher-epochs", type=int, default=3, help="epochs of the teacher (unless --teacher)")
    arguments.add_argument("--teacher", help="reuse this trained teacher (checkpoint or run directory)")
    arguments.add_argument("--seeds", type=int, nargs="+", default=[0])
    arguments.add_argument("--device", default="cpu")
    arguments.add_argument("--work", type=Path, default=Path("runs/bench") / name, help="run directories (replaced)")
    arguments.add_argument("--out", type=Path, default=Path("docs/results") / name, help="writes OUT.md and OUT.json")
    return arguments


def subset(data: str, train_every: int, val_every: int, out: Path) -> str:
    """``data`` itself, or a copy in the KD-MRI layout (targets only) with every N-th slice of each volume."""
    if train_every == val_every == 1:
        return data
    for split, every in (("train", train_every), ("val", val_every)):
        (out / split).mkdir(parents=True)
        for path in sorted((dataset_root(data) / split).glob("*.h5")):
            with h5py.File(path) as source, h5py.File(out / split / path.name, "w") as copy:
                if "volfs" not in source:
                    raise SystemExit(f"{path}: --train-every/--val-every need the KD-MRI layout (volfs); pass 1 and 1")
                copy["volfs"] = source["volfs"][..., ::every]
    return str(out)


def kdc(*args: str) -> tuple[str, float]:
    """Run ``kdc ARGS`` in a subprocess; return the command as a user types it and its wall time (s)."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "kdc", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"kdc {shlex.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    elapsed = time.perf_counter() - started
    print(f"{elapsed:7.1f} s  kdc {shlex.join(args)}", flush=True)
    return "kdc " + shlex.join(args), elapsed


def run_seed(args: argparse.Namespace, rows: Sequence[Row], seed: int) -> dict:
    """Teacher (or ``--teacher``), plain student, then one ``kdc distill`` per row; metrics and timings."""
    work = args.work / f"seed{seed}"
    common = ["--data", args.data_used, "--acc", str(args.acc), "--device", args.device, "--seed", str(seed)]
    steps = {}
    teacher = args.teacher
    if teacher is None:
        teacher = str(work / "teacher")
        steps["teacher"] = kdc("train", "--model", "teacher", *common, "--out", teacher,
                               "--epochs", str(args.teacher_epochs))
    steps["student"] = kdc("train", "--model", "student", *common, "--out", str(work / "student"),
                           "--epochs", str(args.epochs))
    results = {"steps": {k: {"command": c, "seconds": s} for k, (c, s) in steps.items()}, "rows": {}}
    for row in rows:
        out = work / row.label.replace(" ", "_")
        pretraining = [] if "--pretrain-epochs" in row.options else ["--pretrain-epochs", str(args.pretrain_epochs)]
        command, seconds = kdc(
            "distill", *common, "--out", str(out), "--epochs", str(args.epochs), *pretraining,
            "--teacher", teacher, "--student", str(work / "student"), *row.options,
        )
        table = json.loads((out / "metrics.json").read_text())["models"]
        results["baselines"] = {k: table[k] for k in ("zero-filled", "teacher", "student")}
        results["rows"][row.label] = {"command": command, "seconds": seconds, "metrics": table["kd_student"]}
    return results


def cell(per_seed: list[dict], metric: str, digits: int) -> str:
    """``mean ± sd`` over validation slices (means over seeds), plus the sd of the seed means when > 1 seed."""
    means = [m[metric]["mean"] for m in per_seed]
    text = f"{np.mean(means):.{digits}f} ± {np.mean([m[metric]['sd'] for m in per_seed]):.{digits}f}"
    return text + (f" (seeds sd {np.std(means):.{digits}f})" if len(means) > 1 else "")


def run_table(args: argparse.Namespace, title: str, notes: str, rows: Sequence[Row], script: str) -> None:
    """Run every seed, then write ``OUT.json`` (everything) and ``OUT.md`` (the table)."""
    torch_threads = torch.get_num_threads()
    if args.work.exists():
        shutil.rmtree(args.work)
    started = time.perf_counter()
    args.data_used = subset(args.data, args.train_every, args.val_every, args.work / "data")
    seeds = {seed: run_seed(args, rows, seed) for seed in args.seeds}
    environment = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cpus": os.cpu_count(),
        "torch_threads": torch_threads, "torch": torch.__version__, "python": platform.python_version(),
        "device": args.device, "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }
    report = {
        "title": title, "notes": notes, "command": f"python benchmarks/{script} {shlex.join(sys.argv[1:])}".strip(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "environment": environment, "total_seconds": time.perf_counter() - started,
        "rows": [{"label": row.label, "description": row.description} for row in rows],
        "seeds": {str(seed): result for seed, result in seeds.items()},
    }
    write_results(args.out, report, markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    """The table of ``OUT.json``: baselines, then one row per ``kdc distill``, then the commands of the first seed."""
    settings, seeds = report["settings"], list(report["seeds"].values())
    first = seeds[0]
    teacher = settings["teacher"] or f"{settings['teacher_epochs']} epochs"
    kept = (f"slices kept: 1 in {settings['train_every']} of each train volume, 1 in {settings['val_every']} "
            "of each val volume" if settings["train_every"] * settings["val_every"] > 1 else "all slices")
    lines = [
        f"# {report['title']}", "", report["notes"], "",
        f"Reproduce: `{report['command']}` ({report['total_seconds'] / 60:.1f} min in all).", "",
        f"Settings: data `{settings['data']}` ({kept}), {settings['acc']}x, teacher {teacher}, student and KD "
        f"{settings['epochs']} epoch(s), pre-training {settings['pretrain_epochs']} epoch(s), "
        f"seeds {settings['seeds']}, device {settings['device']}. Environment: "
        + ", ".join(f"{k} {v}" for k, v in report["environment"].items()) + ".", "",
        "PSNR and SSIM: mean ± sd over the validation slices (data range = volume maximum, as fastMRI). Time: wall "
        "time of the row's command (for a `kdc distill` row: pre-training, KD and the final evaluation) on the "
        "machine above; where other jobs shared it (see the load average) times are longer than on an idle one.", "",
        "| model | what | PSNR (dB) | SSIM | time (s) |", "|---|---|---:|---:|---:|",
    ]
    for name, what in (("zero-filled", "undersampled input"), ("teacher", "DC-CNN 5x5x32, L1"),
                       ("student", "DC-CNN 5x3x32 trained alone, L1")):
        per_seed = [r["baselines"][name] for r in seeds]
        seconds = f"{np.mean([r['steps'][name]['seconds'] for r in seeds]):.0f}" if name in first["steps"] else "–"
        lines.append(f"| {name} | {what} | {cell(per_seed, 'psnr', 2)} | {cell(per_seed, 'ssim', 4)} | {seconds} |")
    for row in report["rows"]:
        per_seed = [r["rows"][row["label"]]["metrics"] for r in seeds]
        seconds = np.mean([r["rows"][row["label"]]["seconds"] for r in seeds])
        lines.append(f"| {row['label']} | {row['description']} | {cell(per_seed, 'psnr', 2)} "
                     f"| {cell(per_seed, 'ssim', 4)} | {seconds:.0f} |")
    if settings["train_every"] > 1 or settings["epochs"] < 10:
        lines += ["", "**Reduced setting.** Very short training (a few epochs, each a handful of optimisation "
                  "steps, on a subset of the demo set): this checks that every row runs end to end with the same teacher, baseline and seed. Differences "
                  "between rows of a few tenths of a dB are within the run-to-run noise of so short a training "
                  "(compare the sd over slices; run `--seeds 0 1 2` for the sd over seeds) and say nothing about "
                  "which method is better after a full run."]
    lines += ["", f"Commands (seed {settings['seeds'][0]}):", "", "```"]
    lines += [first["steps"][step]["command"] for step in ("teacher", "student") if step in first["steps"]]
    lines += [first["rows"][row["label"]]["command"] for row in report["rows"]] + ["```", ""]
    return "\n".join(lines)
