"""KD-MRI's claim on real MRI: the distilled student beats the same student trained alone.

For each acceleration (4x, 5x, 8x) and seed, ``kdc distill`` trains (or, on a second call, resumes and reuses) the
teacher, the student alone and the KD student, then the validation table of zero-filled, teacher, student and KD
student (PSNR and SSIM, mean ± sd over the val slices) goes to ``docs/results/quality.{md,json}``, one section per
setting, with the command, the machine and the time of every stage. Every seed trains its own teacher;
``--shared-teacher`` reuses the first seed's (``--teacher``), so that the seeds vary the students only.
``--augment`` is ``kdc distill --augment`` for every stage, ``--precision`` its ``--precision``. ``--jobs`` cells
(factor, seed) train at once in their own processes; each cell resumes from its run directory, so a table cut off in
one session is finished by the same command in the next.

    python benchmarks/quality.py --setting cpu                    # demo set (128x128), shared 2-core CPU
    python benchmarks/quality.py --setting cpu128 --cs --augment scale  # `make data` set at 128x128, 3 seeds, CPU
    python benchmarks/quality.py --setting gpu --data data/brain  # `make data` set (256x256), CUDA

``--cs`` adds the classical row, compressed sensing with BART (``bart pics`` l1-wavelet, λ tuned once per factor on
four training slices, scored on every validation slice, cached in ``RUNS/{acc}x/cs.json``); ``--teacher-mode sft``
trains SFT-KD-Recon's student-friendly teacher instead (use another ``--runs`` and ``--results`` for it);
``--sft-runs RUNS`` then adds that table's SFT teacher and KD student as rows of this one (same seeds and masks; the
student alone does not depend on the teacher).
Any preset value can be overridden (``--epochs``, ``--seeds``, ...). ``--report-only`` rebuilds the results from
finished run directories without training. Every seed of a factor must see the same mask, so a dataset without
``masks/mask_{acc}x.npy`` is copied under ``--runs`` with the masks ``kdc`` would draw for seed 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from kdc._io import atomic_path, write_json
from kdc.compress.baselines import score_baseline
from kdc.compress.baselines.bart import BartCompressedSensing, tune_lambda
from kdc.compress.recipe import TABLE_ROLES, RunConfig, distill
from kdc.compress.tasks import RECON
from kdc.compress.trainer import stage_seconds
from kdc.data.formats import inspect_volume
from kdc.mri.masks import cartesian_mask
from kdc.data.slices import dataset_root

SETTINGS: dict[str, dict] = {
    "cpu": {"data": "demo", "epochs": 2, "pretrain_epochs": 1, "seeds": [0], "device": "cpu", "jobs": 1, "threads": 1,
            "precision": "auto"},
    # What this 2-core CPU finishes in a session: the `make data` set resliced at 128x128 (`kdc data build --size 128
    # --out data/brain128`), 3 seeds, bf16 on the CPU's matrix units, one thread per cell.
    "cpu128": {"data": "data/brain128", "epochs": 8, "pretrain_epochs": 2, "seeds": [0, 1, 2], "device": "cpu",
               "jobs": 1, "threads": 1, "precision": "bf16"},
    # Every cell (factor, seed) at once: these small models leave one GPU mostly idle (benchmarks/gpu_sprint.sh).
    "gpu": {
        "data": "data/brain", "epochs": 16, "pretrain_epochs": 4, "seeds": [0, 1, 2], "device": "cuda", "jobs": 9,
        "threads": 1, "precision": "bf16",
    },
}
FACTORS = (4, 5, 8)
CS = BartCompressedSensing.row
ROWS = ("zero-filled", *TABLE_ROLES)
#: Rows read from ``--sft-runs`` (a table trained with ``--teacher-mode sft``): row -> the role in those runs.
SFT_ROWS = {"sft_teacher": "teacher", "sft_kd_student": "kd_student"}
LABELS = {"zero-filled": "ZF", CS: "CS (BART)", "teacher": "teacher", "student": "student", "kd_student": "KD student",
          "sft_teacher": "SFT teacher", "sft_kd_student": "KD student (SFT teacher)"}


def with_fixed_masks(data: str, factors: list[int], runs: Path) -> str:
    """``data`` if it ships a mask per factor, else a copy under ``runs`` with seed-0 masks (same for every seed)."""
    root = dataset_root(data)
    if all((root / "masks" / f"mask_{acc}x.npy").is_file() for acc in factors):
        return str(root)
    copy = runs / "data"
    if not copy.is_dir():
        staging = runs / ".data.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(root, staging)
        shape = inspect_volume(next((root / "train").glob("*.h5"))).image_shape
        (staging / "masks").mkdir(exist_ok=True)
        for acc in factors:
            np.save(staging / "masks" / f"mask_{acc}x.npy", cartesian_mask("random", acc, shape, 0))
        os.replace(staging, copy)
    return str(copy)


def run_cells(cells: list[tuple[int, int]], args: argparse.Namespace) -> None:
    """Train (or resume) the runs of ``cells`` (``(acc, seed)``) one after the other in this process; a cell's run
    directory holds its finished stages, so a killed table continues where it stopped."""
    import torch

    torch.set_num_threads(args.threads)  # collation of batches is slow with idle threads spinning
    for acc, seed in cells:
        out = args.runs / f"{acc}x" / f"seed{seed}"
        first = args.runs / f"{acc}x" / f"seed{args.seeds[0]}"
        teacher = str(first) if args.shared_teacher and seed != args.seeds[0] else None
        config = RunConfig(
            args.data, str(out), acc, args.epochs, args.pretrain_epochs, device=args.device, teacher=teacher, seed=seed,
            teacher_mode=args.teacher_mode, augment=args.augment, precision=args.precision,
        )
        started = time.perf_counter()
        distill(config, resume=True)
        wall = time.perf_counter() - started
        timing_path = out / "timing.json"
        if not timing_path.exists():  # the first call that trained it; a resumed call only re-evaluates
            write_json(timing_path, {"wall_s": wall})
        print(f"{acc}x seed {seed}: done in {wall:.0f} s", flush=True)


def work_units(args: argparse.Namespace) -> list[list[tuple[int, int]]]:
    """The cells each worker process trains: one cell each (every seed has its own teacher), or one factor's seeds
    in order (``--shared-teacher``: the later seeds wait for the first seed's teacher)."""
    if args.shared_teacher:
        return [[(acc, seed) for seed in args.seeds] for acc in args.factors]
    return [[(acc, seed)] for acc in args.factors for seed in args.seeds]


def cs_row(acc: int, args: argparse.Namespace) -> dict:
    """The CS row of one factor (same masks as the runs), computed once and kept in ``RUNS/{acc}x/cs.json``."""
    path = args.runs / f"{acc}x" / "cs.json"
    if not path.exists():
        settings = {"acceleration": acc, "mask_kind": "random", "seed": args.seeds[0]}
        train, val = (RECON.open_split(args.data, split, settings) for split in ("train", "val"))
        write_json(path, score_baseline(tune_lambda(train), val))
    return json.loads(path.read_text())


def finished(acc: int, args: argparse.Namespace) -> bool:
    return any((args.runs / f"{acc}x" / f"seed{seed}" / "metrics.json").exists() for seed in args.seeds)


def collect(acc: int, args: argparse.Namespace) -> dict:
    """Per-seed metrics, their mean over seeds, timings and the issue's targets for one factor."""
    seeds = {}
    cs = {CS: cs_row(acc, args)} if args.cs else {}
    sft = sft_tables(acc, args)
    rows = rows_of(args) + (tuple(SFT_ROWS) if sft else ())
    for seed in args.seeds:
        out = args.runs / f"{acc}x" / f"seed{seed}"
        if not (out / "metrics.json").exists():  # cut off before it finished: reported as missing
            continue
        saved = json.loads((out / "metrics.json").read_text())
        table = saved["models"] | ({row: sft[seed][role] for row, role in SFT_ROWS.items()} if sft else {})
        timing = json.loads((out / "timing.json").read_text()) if (out / "timing.json").exists() else {}
        seeds[seed] = {
            "models": {row: {m: {**table, **cs}[row][m] for m in ("psnr", "ssim")} for row in rows},
            "stage_s": stage_seconds(out),
            "wall_s": round(timing.get("wall_s", float("nan")), 1),
            **({"note": saved["note"]} if "note" in saved else {}),  # how a run was scored, if not as usual
        }
    mean = {
        row: {
            metric: {
                "mean": float(np.mean([s["models"][row][metric]["mean"] for s in seeds.values()])),
                "sd": float(np.mean([s["models"][row][metric]["sd"] for s in seeds.values()])),
                "seed_sd": float(np.std([s["models"][row][metric]["mean"] for s in seeds.values()])),
            }
            for metric in ("psnr", "ssim")
        }
        for row in rows
    }
    extra = {"cs": {k: cs[CS][k] for k in ("settings", "seconds_per_slice")}} if cs else {}
    found = targets(seeds)
    if sft:
        gains = kd_gains(seeds, "sft_kd_student")
        found |= {"sft_kd_gain_db": round(float(np.mean(gains)), 3),
                  "sft_kd_gain_db_per_seed": [round(g, 3) for g in gains]}
    return {"seeds": {str(k): v for k, v in seeds.items()}, "mean": mean, "targets": found, **extra}


def sft_tables(acc: int, args: argparse.Namespace) -> dict[int, dict] | None:
    """``--sft-runs``' metrics per seed for one factor, when every seed finished there as here; else None."""
    if args.sft_runs is None:
        return None
    paths = {seed: args.sft_runs / f"{acc}x" / f"seed{seed}" / "metrics.json" for seed in args.seeds
             if (args.runs / f"{acc}x" / f"seed{seed}" / "metrics.json").exists()}
    missing = [str(path) for path in paths.values() if not path.exists()]
    if not paths or missing:
        print(f"--sft-runs: {acc}x left out of the SFT rows, not finished: {', '.join(missing) or 'no seed here'}",
              file=sys.stderr)
        return None
    return {seed: json.loads(path.read_text())["models"] for seed, path in paths.items()}


def rows_of(args: argparse.Namespace) -> tuple[str, ...]:
    """The table's rows: ZF, CS when asked for, then the networks."""
    return ("zero-filled", *((CS,) if args.cs else ()), *TABLE_ROLES)


def kd_gains(seeds: dict[int, dict], row: str = "kd_student") -> list[float]:
    """Per seed, the PSNR of the KD student ``row`` minus the student alone's (dB)."""
    return [s["models"][row]["psnr"]["mean"] - s["models"]["student"]["psnr"]["mean"] for s in seeds.values()]


def targets(seeds: dict[int, dict]) -> dict:
    """The targets on PSNR (mean over seeds): ZF < CS < student < KD <= teacher, KD - student >= 0.3 dB, KD closes
    >= 80 % of the teacher-student gap, KD - CS >= 1.5 dB (the CS terms when the CS row was run)."""
    psnr = {row: float(np.mean([s["models"][row]["psnr"]["mean"] for s in seeds.values()])) for row in ROWS}
    cs = [s["models"][CS]["psnr"]["mean"] for s in seeds.values() if CS in s["models"]]
    gains = kd_gains(seeds)
    gap = psnr["teacher"] - psnr["student"]
    closed = (psnr["kd_student"] - psnr["student"]) / gap if gap > 0 else float("nan")
    return {
        "order_zf_student_kd_teacher": psnr["zero-filled"] < psnr["student"] < psnr["kd_student"] <= psnr["teacher"],
        "kd_gain_db": round(float(np.mean(gains)), 3),
        "kd_gain_db_per_seed": [round(g, 3) for g in gains],
        "kd_gain_at_least_0.3_db": bool(np.mean(gains) >= 0.3),
        "teacher_student_gap_db": round(gap, 3),
        "gap_closed": round(closed, 3),
        "gap_closed_at_least_80_percent": bool(closed >= 0.8),
        **({"kd_over_cs_db": round(psnr["kd_student"] - cs[0], 3),
            "kd_over_cs_at_least_1.5_db": bool(psnr["kd_student"] - cs[0] >= 1.5),
            "order_zf_cs_student": psnr["zero-filled"] < cs[0] < psnr["student"]} if cs else {}),
    }


def machine(device: str) -> dict:
    import torch

    info = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


INTRO = (
    "Written by `benchmarks/quality.py` (see its docstring and docs/distill.md). PSNR/SSIM: mean ± sd over the "
    "validation slices (data range = the volume's maximum), then the mean over the finished seeds; `seed sd` is the "
    "sd of the per-seed means. Each setting says whether every seed trained its own teacher or the first seed's "
    "teacher was reused for the others (`--shared-teacher`, the only way before 2026-12-01)."
)


def render(results: dict) -> str:
    """``quality.md``: one section per setting, one table per factor, then the targets and the timings."""
    lines = ["# KD-MRI on real brain MRI: does the distilled student beat the student trained alone?", "", INTRO, ""]
    for name, entry in sorted(results.items()):
        lines += render_setting(name, entry)
    return "\n".join(lines)


def render_setting(name: str, entry: dict) -> list[str]:
    volumes, slices = entry["volumes"], entry["slices"]
    total = f"{entry['total_s']:.0f} s" if entry.get("total_s") else "cut off by the time limit (see per-run times)"
    lines = [
        f"## Setting `{name}`", "", f"Command: `{entry['command']}`", "",
        f"Machine: {json.dumps(entry['machine'])}", "",
        f"Data: `{entry['data']}`: {slices['train']} train slices ({', '.join(volumes['train'])}), "
        f"{slices['val']} val slices ({', '.join(volumes['val'])}), {entry['image_size']}.", "",
        f"Training: {json.dumps(entry['config'])}; total {total}.", "",
        "Teachers: " + ("one per seed." if entry["config"].get("teacher_per_seed") else
                        "one per factor (first seed), reused for the other seeds."), "",
    ]
    if "sft_command" in entry:
        lines += [f"SFT rows: the teacher and KD student of `{entry['sft_command']}` (same data, masks and seeds).", ""]
    for acc, factor in entry["factors"].items():
        lines += render_factor(acc, factor)
        missing = [seed for seed in entry["config"]["seeds"] if str(seed) not in factor["seeds"]]
        if missing:
            lines += [f"Not finished (cut off by the time limit): seed {', '.join(map(str, missing))}.", ""]
    return lines


def render_factor(acc: str, factor: dict) -> list[str]:
    seeds = list(factor["seeds"])
    lines = [
        f"### {acc}x", "",
        "| model | PSNR (dB) | seed sd | SSIM | seed sd | " + " | ".join(f"PSNR seed {s}" for s in seeds) + " |",
        "|---|" + "---:|" * (4 + len(seeds)),
    ]
    for row in [row for row in ("zero-filled", CS, *TABLE_ROLES, *SFT_ROWS) if row in factor["mean"]]:
        m = factor["mean"][row]
        per_seed = " | ".join(f"{factor['seeds'][s]['models'][row]['psnr']['mean']:.2f}" for s in seeds)
        lines.append(
            f"| {LABELS[row]} | {m['psnr']['mean']:.2f} ± {m['psnr']['sd']:.2f} | {m['psnr']['seed_sd']:.2f} | "
            f"{m['ssim']['mean']:.4f} ± {m['ssim']['sd']:.4f} | {m['ssim']['seed_sd']:.4f} | {per_seed} |"
        )
    t = targets(factor["seeds"])
    lines += [
        "",
        f"Targets: order ZF < student < KD <= teacher: **{t['order_zf_student_kd_teacher']}**; KD - student = "
        f"{t['kd_gain_db']:+.2f} dB (per seed {t['kd_gain_db_per_seed']}; "
        f">= 0.3: **{t['kd_gain_at_least_0.3_db']}**); "
        f"teacher - student = {t['teacher_student_gap_db']:+.2f} dB, KD closes {t['gap_closed']:.0%} of it "
        f"(>= 80 %: **{t['gap_closed_at_least_80_percent']}**).",
        "",
    ]
    runs = []
    for s in seeds:
        stages = ", ".join(f"{k} {v:.0f} s" for k, v in factor["seeds"][s]["stage_s"].items())
        wall = factor["seeds"][s]["wall_s"]
        runs.append(f"seed {s}: {stages}" + (f", whole run {wall:.0f} s" if wall == wall else ""))
    if "sft_kd_gain_db" in factor["targets"]:
        lines += [f"With the SFT teacher (`--sft-runs`): KD - student = {factor['targets']['sft_kd_gain_db']:+.2f} dB "
                  f"(per seed {factor['targets']['sft_kd_gain_db_per_seed']}).", ""]
    lines += [f"Time per stage (training + per-epoch validation): {'; '.join(runs)}.", ""]
    if "cs" in factor:
        cs = factor["cs"]
        lines += [f"CS: bart pics -l1, λ = {cs['settings']['lambda']:g} (tuned on training slices "
                  f"{cs['settings']['lambda_tuning']['slices']}), {cs['settings']['iterations']} iterations, "
                  f"{cs['seconds_per_slice']:.2f} s per slice; "
                  f"KD - CS = {t['kd_over_cs_db']:+.2f} dB (>= 1.5: **{t['kd_over_cs_at_least_1.5_db']}**); "
                  f"order ZF < CS < student: **{t['order_zf_cs_student']}**.", ""]
    for s in seeds:
        if "note" in factor["seeds"][s]:
            lines += [f"Seed {s}: {factor['seeds'][s]['note']}.", ""]
    return lines


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="cpu")
    parser.add_argument("--data", help="dataset directory or 'demo' (default: the setting's)")
    parser.add_argument("--factors", type=int, nargs="+", default=list(FACTORS))
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--epochs", type=int, help="epochs of the teacher, student and KD stages")
    parser.add_argument("--pretrain-epochs", type=int, help="epochs of attention-transfer pre-training")
    parser.add_argument("--device")
    parser.add_argument("--jobs", type=int, help="cells (factor, seed) trained in parallel processes")
    parser.add_argument("--precision", help="kdc distill --precision: bf16, fp32 or auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads per process")
    parser.add_argument("--runs", type=Path, help="where the run directories go (default runs/quality/SETTING)")
    parser.add_argument("--results", type=Path, default=Path("docs/results/quality"), help="writes .md and .json")
    parser.add_argument("--report-only", action="store_true", help="only collect finished runs")
    parser.add_argument("--cs", action="store_true", help="add the CS (BART) row (needs the bart command)")
    parser.add_argument("--teacher-mode", default="plain", help="plain or sft (kdc distill --teacher-mode)")
    parser.add_argument("--augment", default="", help="training-set augmentation (kdc distill --augment)")
    parser.add_argument("--sft-runs", type=Path,
                        help="--runs of the same setting trained with --teacher-mode sft: its rows join this table")
    parser.add_argument("--shared-teacher", action="store_true",
                        help="train one teacher (first seed) for all seeds instead of one per seed")
    args = parser.parse_args(argv)
    for key, value in SETTINGS[args.setting].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.runs = args.runs or Path("runs/quality") / args.setting
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.cs and BartCompressedSensing.missing():
        sys.exit(f"--cs: {BartCompressedSensing.missing()}")
    args.runs.mkdir(parents=True, exist_ok=True)
    source = args.data
    args.data = with_fixed_masks(args.data, args.factors, args.runs)
    session_path = args.runs / "session.json"  # how the runs were trained, for --report-only on another machine
    if not args.report_only:
        session = {"command": shlex.join(["python", "benchmarks/quality.py", *argv]), "machine": machine(args.device)}
        write_json(session_path, session)
        started = time.perf_counter()
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            for future in [pool.submit(run_cells, cells, args) for cells in work_units(args)]:
                future.result()
        write_json(session_path, {**session, "total_s": round(time.perf_counter() - started, 1)})
    if not session_path.exists():
        sys.exit(f"{args.runs}: no session.json, nothing trained there yet (run without --report-only)")
    session = json.loads(session_path.read_text())
    manifest_path = Path(args.data) / "dataset.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    volumes = {split: [p.stem for p in sorted((Path(args.data) / split).glob("*.h5"))] for split in ("train", "val")}
    entry = {
        "command": session["command"],
        "machine": session["machine"],
        "data": source,
        "volumes": volumes,
        "slices": manifest.get("slices") or {split: sum(inspect_volume(Path(args.data) / split / f"{name}.h5").slices
                                                       for name in names) for split, names in volumes.items()},
        "image_size": manifest.get("image_size"),
        "config": {k: v for k, v in dataclasses.asdict(
            RunConfig(source, "", 0, args.epochs, args.pretrain_epochs, device=args.device,
                      teacher_mode=args.teacher_mode, augment=args.augment, precision=args.precision)
        ).items() if k not in ("out", "acceleration", "teacher", "seed", "data")} | {
            "seeds": args.seeds, "teacher_per_seed": not args.shared_teacher},
        "total_s": session.get("total_s"),  # None when the training was cut off
        **({"sft_command": json.loads((args.sft_runs / "session.json").read_text())["command"]}
           if args.sft_runs and (args.sft_runs / "session.json").exists() else {}),
        "factors": {f"{acc}": collect(acc, args) for acc in args.factors if finished(acc, args)},
    }
    json_path = args.results.with_suffix(".json")
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    results[args.setting] = entry
    write_json(json_path, results)
    with atomic_path(args.results.with_suffix(".md")) as tmp:
        tmp.write_text(render(results) + "\n")
    print(render({args.setting: entry}))


if __name__ == "__main__":
    main(sys.argv[1:])
