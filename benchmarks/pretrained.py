"""Turn a finished ``kdc distill`` run into a shipped pretrained entry (``pretrained:<name>``), and list them all.

Copies the run's settings, mask, validation metrics, training log and the three checkpoints (each must be under 2 MB
and load with ``weights_only=True``) into ``kdc/pretrained/<name>/``, exports each checkpoint to ONNX with kdc's own
exporter (its parity gate against PyTorch decides), writes PROVENANCE.md (data, command, seed, epochs, training time
from train.log, machine, validation metrics), adds the run to ``kdc/pretrained/index.json`` and rewrites
``docs/results/pretrained.md`` from every shipped run. The entry is written to a temporary directory and renamed.
``--baselines FILE`` adds the classical rows of ``kdc evaluate RUN --cs --json FILE`` (same validation slices and
mask) as ``baselines.json``, and the results check the targets against them: ZF < CS < student < KD <= teacher,
KD >= CS + 1.5 dB with a higher SSIM, KD - student >= 0.3 dB; a multi-coil run is held against SENSE-CS
(KD >= SENSE-CS + 1 dB, issue #21's target, which names no SSIM).

    .venv/bin/python benchmarks/pretrained.py runs/demo --name demo-4x \\
        --command "kdc distill --data demo --acc 4 --out runs/demo --epochs 3 --pretrain-epochs 1" \\
        --description "demo recipe: ..." --data-note "the demo set shipped in kdc/data/demo_set ..."
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from kdc._io import atomic_directory, atomic_path, write_json
from kdc.compress.evaluate import format_table
from kdc.compress.trainer import stage_seconds
from kdc.errors import KdcError
from kdc.export.api import export_model
from kdc.models.checkpoint import load_checkpoint
from kdc.pretrained import DIRECTORY, INDEX, MAX_CHECKPOINT_BYTES, ROLES, index, listing
from kdc.runtime.bench import environment

#: Files of the run directory copied as they are.
RUN_FILES = ("run.json", "mask.npy", "metrics.json", "train.log")
#: The classical rows of ``--baselines`` (kdc evaluate --cs --json), kept beside the entry.
BASELINES = "baselines.json"
#: KD's target margin over the student alone (issue #20), in dB.
KD_OVER_STUDENT_DB = 0.3
#: Per task of the run's metrics: the classical row a shipped model is held against (the first row whose name starts
#: so), KD's target margin over it in dB and whether KD's SSIM must be higher too: CS on one coil (issue #20),
#: SENSE-CS on every coil (issue #21).
CS_TARGETS = {"recon": ("CS", 1.5, True), "recon_multicoil": ("SENSE-CS", 1.0, False)}
RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "pretrained.md"


def this_machine() -> str:
    """CPU model and count (and the GPU torch sees) of the machine running this script."""
    import torch

    env = environment()
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{env['cpu']}, {env['cpu_count']} CPUs{gpu}, {platform.system()}"


def commit() -> str:
    """The kdc commit this script runs from (``unknown`` outside a git checkout)."""
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent)
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def provenance(name: str, args: argparse.Namespace, settings: dict, metrics: dict, seconds: dict[str, float],
               models: dict[str, dict]) -> str:
    """PROVENANCE.md of the entry."""
    stages = ", ".join(f"{stage} {value:.0f} s" for stage, value in seconds.items())
    total = sum(seconds.values())
    pretrain = settings.get("pretrain_epochs")
    rows = "\n".join(
        f"| `pretrained:{name}-{role}` | {info['stem']}.pt | {info['params']:,} | {info['pt_bytes'] / 1e3:.0f} kB "
        f"| {info['onnx_bytes'] / 1e3:.0f} kB | {info['dc']} | {info['parity']:.1e} |"
        for role, info in models.items()
    )
    return f"""# pretrained:{name}

{args.description}

| | |
|---|---|
| data | {args.data_note} (run.json: `data` = `{settings['data']}`) |
| command | `{args.command}` |
| seed | {settings['seed']} (weights, data order and the {settings['mask_kind']} mask) |
| acceleration | {settings['acceleration']}x, mask in mask.npy |
| epochs | {settings['epochs']} per stage, feature pre-training {settings['epochs'] if pretrain is None else pretrain}; \
feature loss `{settings['method']}`, imitation weight {settings['imitation_weight']}, teacher mode \
{settings.get('teacher_mode', 'plain')} |
| batch, learning rate | {settings['batch_size']}, {settings['lr']} ({settings['lr_schedule']}) |
| device | {settings['device']} |
| training time | {total:.0f} s ({total / 60:.1f} min), the epoch times of train.log: {stages} |
| machine | {args.machine} |
| built | {time.strftime('%Y-%m-%d')} from kdc commit {commit()} by `benchmarks/pretrained.py` |

## Validation metrics (metrics.json, written by the run; `kdc evaluate pretrained:{name}` reproduces them)

{format_table(metrics['models'])}

## Models

| name | checkpoint | params | .pt | .onnx | ONNX DC lowering | parity max abs error vs PyTorch |
|---|---|---:|---:|---:|---|---:|
{rows}
"""


def classical_rows(baselines: Path, metrics: dict) -> dict:
    """The rows of ``baselines`` (a ``kdc evaluate --cs --json`` table) that are not networks, checked to be scored
    on the same split and slices as ``metrics``."""
    table = json.loads(baselines.read_text())
    rows = {name: row for name, row in table["models"].items() if row.get("params", 0) == 0}
    ours = metrics["models"][next(iter(metrics["models"]))]["psnr"]["n"]
    if table.get("split") != metrics.get("split") or any(row["psnr"]["n"] != ours for row in rows.values()):
        raise KdcError(f"{baselines}: not scored on the run's {metrics.get('split')} slices ({ours})")
    return rows


def target_checks(models: dict, baselines: dict, task: str = "recon") -> dict[str, bool | float]:
    """The targets of issues #20/#21 for one factor: the order of the rows and KD's margins over (SENSE-)CS and the
    student."""
    prefix, margin, higher_ssim = CS_TARGETS[task]
    cs = next((row for name, row in baselines.items() if name.startswith(prefix)), None)
    key = prefix.lower().replace("-", "_")
    psnr = {name: row["psnr"]["mean"] for name, row in {**baselines, **models}.items()}
    checks: dict[str, bool | float] = {
        "kd_minus_student_db": psnr["kd_student"] - psnr["student"],
        f"kd_minus_student_at_least_{KD_OVER_STUDENT_DB}": psnr["kd_student"] - psnr["student"] >= KD_OVER_STUDENT_DB,
        "student_lt_kd_le_teacher": psnr["student"] < psnr["kd_student"] <= psnr["teacher"],
    }
    if cs is not None:
        kd = models["kd_student"]
        checks |= {
            f"zf_lt_{key}_lt_student": psnr["zero-filled"] < cs["psnr"]["mean"] < psnr["student"],
            f"kd_minus_{key}_db": kd["psnr"]["mean"] - cs["psnr"]["mean"],
            f"kd_at_least_{key}_plus_{margin}" + ("_and_higher_ssim" if higher_ssim else ""):
                kd["psnr"]["mean"] >= cs["psnr"]["mean"] + margin
                and (kd["ssim"]["mean"] > cs["ssim"]["mean"] or not higher_ssim),
        }
    return checks


def build_entry(run: Path, name: str, args: argparse.Namespace, into: Path) -> None:
    """Write ``into/name`` from the finished run directory ``run`` and add it to ``into/index.json``."""
    missing = [f for f in (*RUN_FILES, *(f"{stem}.pt" for stem in ROLES.values())) if not (run / f).is_file()]
    if missing:
        raise KdcError(f"{run}: not a finished distill run (missing {', '.join(missing)})")
    settings = json.loads((run / "run.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    seconds = stage_seconds(run)
    baselines = classical_rows(args.baselines, metrics) if args.baselines else None
    models: dict[str, dict] = {}
    image_size = None
    with atomic_directory(into / name, overwrite=True, mark=False) as tmp:  # package data: no output marker
        for file in RUN_FILES:
            shutil.copy2(run / file, tmp / file)
        for role, stem in ROLES.items():
            checkpoint = tmp / f"{stem}.pt"
            shutil.copy2(run / f"{stem}.pt", checkpoint)
            size = checkpoint.stat().st_size
            if size >= MAX_CHECKPOINT_BYTES:
                raise KdcError(f"{run / checkpoint.name}: {size:,} bytes, a shipped checkpoint must be under "
                               f"{MAX_CHECKPOINT_BYTES:,}")
            model, meta = load_checkpoint(checkpoint)  # weights_only=True
            image_size = meta["image_size"]
            report = export_model(checkpoint, tmp / f"{stem}.onnx")
            models[role] = {"stem": stem, "params": sum(p.numel() for p in model.parameters()), "pt_bytes": size,
                            "onnx_bytes": report.file_size, "dc": report.dc, "parity": report.parity_error}
            print(f"{name}-{role}: {stem}.pt {size:,} bytes, {report.path.name} parity {report.parity_error:.1e}")
        if baselines:
            write_json(tmp / BASELINES, {"source": f"kdc evaluate {run} --cs", "models": baselines})
            metrics = {**metrics, "models": {**metrics["models"], **baselines}}
        (tmp / "PROVENANCE.md").write_text(provenance(name, args, settings, metrics, seconds, models))
    write_json(into / INDEX, {**index(into), name: {"description": args.description, "image_size": image_size}})


def write_results(into: Path, results: Path) -> None:
    """``results``: the table of every shipped model (what ``kdc pretrained`` prints) and how it was made."""
    lines = ["# Pretrained models shipped in the package", "",
             f"Written by `benchmarks/pretrained.py` from `kdc/pretrained/*/metrics.json` ({time.strftime('%Y-%m-%d')}); "
             "each run's PROVENANCE.md has its command, data, seed and training time.", "",
             "| name | image | acc | params | .pt | .onnx | val PSNR (dB) | val SSIM |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in listing(into):
        lines.append(f"| `{row['name']}` | {'x'.join(map(str, row['image_size']))} | {row['acceleration']}x "
                     f"| {row['params']:,} | {row['checkpoint_bytes'] / 1e3:.0f} kB | {row['onnx_bytes'] / 1e3:.0f} kB "
                     f"| {row['psnr']:.2f} | {row['ssim']:.4f} |")
    for run, entry in index(into).items():
        lines += ["", f"- `pretrained:{run}`: {entry['description']}"]
    for run in index(into):
        if (into / run / BASELINES).is_file():
            lines += target_section(into / run, run)
    with atomic_path(results) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def target_section(entry: Path, run: str) -> list[str]:
    """The validation table of ``entry`` with its classical rows, and the targets checked."""
    metrics = json.loads((entry / "metrics.json").read_text())
    baselines = json.loads((entry / BASELINES).read_text())["models"]
    models = metrics["models"]
    table = {name: models[name] for name in models if name not in ROLES.values()}  # zero-filled first
    table |= baselines | {stem: models[stem] for stem in ROLES.values()}
    targets = target_checks(models, baselines, metrics.get("task", "recon"))
    checks = "; ".join(f"{key.replace('_', ' ')}: **{value:+.2f}**" if isinstance(value, float) else
                       f"{key.replace('_', ' ')}: **{value}**" for key, value in targets.items())
    return ["", f"## `pretrained:{run}` against compressed sensing ({metrics['models'][ROLES['kd']]['psnr']['n']} "
                "validation slices, the run's mask)", "", format_table(table), "", f"Targets: {checks}."]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="finished kdc distill run directory")
    parser.add_argument("--name", required=True, help="entry name: pretrained:<name>, e.g. brain-4x")
    parser.add_argument("--command", required=True, help="the command that trained the run")
    parser.add_argument("--description", required=True, help="one line shown by kdc pretrained")
    parser.add_argument("--data-note", required=True, help="what the data is and where it came from")
    parser.add_argument("--machine", default=None, help="machine that trained the run (default: this one)")
    parser.add_argument("--into", type=Path, default=DIRECTORY, help="registry directory (default: the package's)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results table to rewrite")
    parser.add_argument("--baselines", type=Path, help="kdc evaluate RUN --cs --json FILE: classical rows to ship")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", args.name) or any(args.name.endswith(f"-{r}") for r in ROLES):
        parser.error(f"--name {args.name!r}: lower-case words joined by '-', not ending in a role ({', '.join(ROLES)})")
    args.machine = args.machine or this_machine()
    try:
        build_entry(args.run, args.name, args, args.into)
        write_results(args.into, args.results)
    except KdcError as err:
        sys.exit(f"error: {err}")
    print(f"wrote {args.into / args.name} and {args.results}")


if __name__ == "__main__":
    main(sys.argv[1:])
