"""Turn a finished ``kdc distill`` run into a shipped pretrained entry (``pretrained:<name>``), and list them all.

Copies the run's settings, mask, validation metrics, training log and the three checkpoints (each must be under 1 MB
and load with ``weights_only=True``) into ``kdc/pretrained/<name>/``, exports each checkpoint to ONNX with kdc's own
exporter (its parity gate against PyTorch decides), writes PROVENANCE.md (data, command, seed, epochs, training time
from train.log, machine, validation metrics), adds the run to ``kdc/pretrained/index.json`` and rewrites
``docs/results/pretrained.md`` from every shipped run. The entry is written to a temporary directory and renamed.

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
from collections import defaultdict
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


def build_entry(run: Path, name: str, args: argparse.Namespace, into: Path) -> None:
    """Write ``into/name`` from the finished run directory ``run`` and add it to ``into/index.json``."""
    missing = [f for f in (*RUN_FILES, *(f"{stem}.pt" for stem in ROLES.values())) if not (run / f).is_file()]
    if missing:
        raise KdcError(f"{run}: not a finished distill run (missing {', '.join(missing)})")
    settings = json.loads((run / "run.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    seconds = stage_seconds(run)
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
    with atomic_path(results) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


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
