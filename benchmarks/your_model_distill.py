"""A user's fastMRI VarNet teacher distilled into a smaller VarNet with ``kdc distill --teacher MODULE:CLASS``, on CPU.

The steps of docs/your-model.md, run as a user runs them:

1. ``kdc data build --coils C --size S``: multi-coil fastMRI files from the installed brain templates;
2. the teacher is trained the way a user brings one: here with kdc's own supervised stage (L1 to the RSS target,
   ``--teacher-epochs``), its weights saved as a plain state dict;
3. ``kdc distill --task multicoil --teacher fastmri.models:VarNet --teacher-init ... --teacher-weights FILE
   --student fastmri.models:VarNet --student-init ...``: the student trained alone (the baseline), AT pre-training on
   the default taps (teacher cascades evenly spread <-> every student cascade, ``model.unet.down_sample_layers.0``),
   then KD (L1 + imitation), the same epochs for the student alone and the KD student.

    .venv/bin/python benchmarks/your_model_distill.py [--size 32] [--coils 4] [--teacher-epochs 10] [--epochs 10]
        [--teacher-init JSON] [--student-init JSON]

``--teacher-init '{"num_cascades": 12, "chans": 18, "sens_chans": 8}' --student-init '{"num_cascades": 4, "chans":
8, "sens_chans": 4}'`` runs the full-size models of docs/your-model.md (29.9 M and 2.06 M parameters).

Results go to docs/results/your_model_distill.{json,md}: the validation table (zero-filled, teacher, student alone,
KD student), the seconds of every stage and the load average, which the wall-clock numbers depend on (the machine
is shared).
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
import tempfile
import time
from pathlib import Path

import torch

from kdc._io import write_results
from kdc.compress import recipe
from kdc.compress.trainer import read_history
from kdc.models import load_checkpoint

VARNET = "fastmri.models:VarNet"
#: The issue's VarNet(12, 18, 8) -> VarNet(4, 8, 4), widths scaled down to train on a shared 2-core CPU.
TEACHER_INIT = {"num_cascades": 12, "chans": 8, "sens_chans": 4, "pools": 3, "sens_pools": 3}
STUDENT_INIT = {"num_cascades": 4, "chans": 4, "sens_chans": 2, "pools": 3, "sens_pools": 3}


def kdc(*args: str) -> None:
    """Run ``kdc ARGS`` as a user does (a separate process), echoing the command."""
    print("$ kdc " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "kdc", *args], check=True)


def train_teacher(data: Path, runs: Path, epochs: int, settings: dict, teacher_init: dict) -> tuple[Path, float]:
    """A trained VarNet teacher as a user would bring it: a state-dict file (and the seconds it took). ``epochs`` 0
    takes the best epoch of the teacher run already in ``runs`` (e.g. of an interrupted run)."""
    started = time.perf_counter()
    if epochs:
        shutil.rmtree(runs / "teacher", ignore_errors=True)
        config = recipe.RunConfig(str(data), str(runs / "teacher"), epochs=epochs, task="multicoil", teacher=VARNET,
                                  teacher_init=json.dumps(teacher_init), **settings)
        with recipe.Run(config) as run:
            run.train_supervised("teacher")
    model, _ = load_checkpoint(runs / "teacher" / "teacher.pt", [VARNET])
    weights = runs / "varnet_teacher.pt"
    torch.save(model.state_dict(), weights)
    return weights, time.perf_counter() - started


def render(result: dict) -> str:
    table, args = result["table"], result["settings"]
    teacher_init, student_init = result["teacher_init"], result["student_init"]
    lines = ["# A user's fastMRI VarNet distilled by kdc (benchmarks/your_model_distill.py)", "",
             f"{result['machine']}; torch {result['torch']}, fastmri {result['fastmri']}, CPU, fp32. "
             f"Load average {result['load_before']:.1f} at the start, {result['load_after']:.1f} at the end (a shared "
             "machine: the seconds depend on it).", "",
             f"Data: `kdc data build --size {args['size']} --coils {args['coils']} --acc 4 --slices-per-volume "
             f"{args['slices_per_volume']}` (MNI 2009a + FSL MNI152 train, Colin27 val; {result['train_slices']} / "
             f"{result['val_slices']} slices of {args['size']}x{args['size']} x {args['coils']} coils, 4x random "
             "column mask). Targets: RSS of the fully sampled coils.", "",
             f"Teacher `VarNet(**{json.dumps(teacher_init)})`, {result['stages']['teacher']['epochs']} epochs of L1 "
             f"(best validation epoch {result['teacher_best_epoch']} kept); student "
             f"`VarNet(**{json.dumps(student_init)})`: alone and KD {args['epochs']} epochs each, AT pre-training "
             f"{args['pretrain_epochs']} epochs on the default taps; Adam lr {args['lr']}, cosine, batch "
             f"{args['batch_size']}, seed 0, one run.", "",
             "| model | params | val PSNR dB | SSIM |", "|---|---:|---:|---:|"]
    for name in ("zero-filled", "teacher", "student", "kd_student"):
        row = table[name]
        lines.append(f"| {name} | {row['params']:,} | {row['psnr']['mean']:.2f} | {row['ssim']['mean']:.4f} |")
    gain = table["kd_student"]["psnr"]["mean"] - table["student"]["psnr"]["mean"]
    gap = table["teacher"]["psnr"]["mean"] - table["student"]["psnr"]["mean"]
    lines += ["", f"KD student - student alone: **{gain:+.2f} dB** PSNR "
                  f"({100 * gain / gap:.0f} % of the teacher-student gap of {gap:.2f} dB)."
              if gap > 0 else f"KD student - student alone: **{gain:+.2f} dB** PSNR (the teacher is not above "
                              "the student: nothing to distil).", "",
              "| stage | epochs | first / last train loss | seconds (other jobs' load varied) |", "|---|---:|---|---:|"]
    for stage in ("teacher", "student", "student_at", "kd_student"):
        row = result["stages"][stage]
        lines.append(f"| {stage} | {row['epochs']} | {row['first_loss']:.4g} / {row['last_loss']:.4g} | "
                     f"{row['seconds']:.0f} |")
    alone, taught = result["stages"]["student"]["val_psnr"], result["stages"]["kd_student"]["val_psnr"]
    ahead = sum(k > a for a, k in zip(alone, taught))
    lines += ["", "Validation PSNR per epoch (dB), student alone: " + ", ".join(f"{v:.2f}" for v in alone)
              + "; KD student: " + ", ".join(f"{v:.2f}" for v in taught) + f" (KD ahead in {ahead} of {len(alone)} "
              "epochs). One seed and one small split: the gain is a single measurement, not a spread.",
              "", f"Command: `{result['command']}`.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--coils", type=int, default=4)
    parser.add_argument("--slices-per-volume", type=int, default=24)
    parser.add_argument("--teacher-epochs", type=int, default=10,
                        help="Epochs of the teacher; 0 reuses the best epoch of the teacher run in --runs.")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--teacher-init", type=json.loads, default=TEACHER_INIT,
                        help="VarNet constructor arguments of the teacher (JSON object).")
    parser.add_argument("--student-init", type=json.loads, default=STUDENT_INIT,
                        help="VarNet constructor arguments of the student (JSON object).")
    parser.add_argument("--runs", type=Path, default=None, help="Working directory (default: a temporary one).")
    parser.add_argument("--results", type=Path, default=Path("docs/results/your_model_distill"))
    args = parser.parse_args()
    runs = args.runs or Path(tempfile.mkdtemp(prefix="kdc-your-model-"))
    shutil.rmtree(runs / "distill", ignore_errors=True)
    load_before = os.getloadavg()[0]
    data = runs / "data"
    if not data.exists():
        kdc("data", "build", "--out", str(data), "--size", str(args.size), "--coils", str(args.coils), "--acc", "4",
            "--slices-per-volume", str(args.slices_per_volume))
    settings = {"lr": args.lr, "batch_size": args.batch_size, "precision": "fp32"}
    weights, teacher_seconds = train_teacher(data, runs, args.teacher_epochs, settings, args.teacher_init)
    started = time.perf_counter()
    kdc("distill", "--task", "multicoil", "--data", str(data), "--out", str(runs / "distill"),
        "--teacher", VARNET, "--teacher-init", json.dumps(args.teacher_init), "--teacher-weights", str(weights),
        "--student", VARNET, "--student-init", json.dumps(args.student_init), "--epochs", str(args.epochs),
        "--pretrain-epochs", str(args.pretrain_epochs), "--lr", str(args.lr), "--batch-size", str(args.batch_size),
        "--precision", "fp32")
    distill_seconds = time.perf_counter() - started
    metrics = json.loads((runs / "distill" / "metrics.json").read_text())
    history = read_history(runs / "teacher") + read_history(runs / "distill")
    stages = {}
    teacher_meta = load_checkpoint(runs / "teacher" / "teacher.pt", [VARNET])[1]
    for stage in ("teacher", "student", "student_at", "kd_student"):
        records = [r for r in history if r["stage"] == stage]
        stages[stage] = {"epochs": len(records), "first_loss": records[0]["train_loss"],
                         "last_loss": records[-1]["train_loss"], "seconds": sum(r["seconds"] for r in records),
                         "val_psnr": [r["val_psnr"] for r in records]}
    import fastmri

    dataset_info = json.loads((data / "dataset.json").read_text())
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__, "fastmri": fastmri.__version__, "threads": torch.get_num_threads(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("runs", "results", "teacher_init",
                                                                        "student_init")},
        "teacher_init": args.teacher_init, "student_init": args.student_init,
        "train_slices": sum(v["slices"] for v in dataset_info["volumes"] if v["split"] == "train"),
        "val_slices": sum(v["slices"] for v in dataset_info["volumes"] if v["split"] == "val"),
        "table": metrics["models"], "stages": stages, "teacher_best_epoch": teacher_meta["epochs"],
        "teacher_seconds": teacher_seconds,
        "distill_seconds": distill_seconds, "load_before": load_before, "load_after": os.getloadavg()[0],
        "command": "python benchmarks/your_model_distill.py " + shlex.join(sys.argv[1:]),
    }
    write_results(args.results, result, render(result))
    print(render(result))


if __name__ == "__main__":
    main()
