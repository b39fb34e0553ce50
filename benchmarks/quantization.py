"""Post-training quantization of the trained KD student: float32 vs int8 (onnxruntime QDQ, OpenVINO NNCF) vs fp16.

For the KD student of a run (``--run``; without it, one is trained on the shipped demo set with ``make demo``'s
settings into ``runs/quantization``), at the trained size and at 256x256, each variant is exported with ``kdc
export`` (mask input, ``auto`` lowering, its own gates) and then:

- latency with ``kdc bench``'s runners: 2 threads, batch 1, after ``--warmup`` runs each, ``--rounds`` rounds in
  which every variant of one size runs ``--iterations`` times in turn (interleaved, so that the load of a shared
  machine drifting over minutes hits every variant alike); median, p90, min over all timed runs;
- PSNR and SSIM (fastMRI: per volume, data range = volume maximum) against the fully sampled images of all
  validation slices of the demo set, next to the float32 PyTorch model on the same slices.

The goal was >= 1.8x faster than float32 on the same runtime with <= 0.1 dB PSNR drop.

    .venv/bin/python benchmarks/quantization.py [--run RUN] [--rounds 10] [--iterations 20] [--warmup 20]
                                                [--out docs/results/quantization]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdc._io import write_results
from kdc.data.demo import validation_images
from kdc.mri.fft import fft2
from kdc.data.metrics import psnr, ssim
from kdc.export import ExportError, export_model
from kdc.export.api import resolve_mask
from kdc.models import load_checkpoint
from kdc.runtime import load
from kdc.runtime.bench import Settings, environment, open_runner

THREADS = 2
EVAL_SLICES = 40  # every slice of the demo validation volume
GOAL_SPEEDUP, GOAL_PSNR_DROP = 1.8, 0.1
#: (name, --format, --quantize, runtime, suffix)
VARIANTS = [
    ("onnx fp32", "onnx", None, "ort", ".onnx"),
    ("onnx int8 (QDQ)", "onnx", "int8", "ort", ".onnx"),
    ("onnx fp16", "onnx", "fp16", "ort", ".onnx"),
    ("openvino fp32", "openvino", None, "openvino", ".xml"),
    ("openvino int8 (NNCF)", "openvino", "int8", "openvino", ".xml"),
]
DEMO_RUN = ["distill", "--data", "demo", "--acc", "4", "--epochs", "3", "--pretrain-epochs", "1", "--resume"]


def trained_run(run: Path | None) -> Path:
    """The given run, or a KD student trained on the demo set as ``make demo`` does."""
    if run is not None:
        return run
    run = Path("runs/quantization")
    if not (run / "kd_student.pt").is_file():
        subprocess.run([sys.executable, "-m", "kdc", *DEMO_RUN, "--out", str(run)], check=True)
    return run


def evaluation_set(size: tuple[int, int], mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(targets (N, H, W), kspace (N, 2, H, W), mask input (1, 1, 1, W))`` of every demo validation slice."""
    targets = validation_images(size, EVAL_SLICES)
    kspace = fft2(targets) * mask
    return targets, np.stack([kspace.real, kspace.imag], axis=1).astype(np.float32), mask[None, None, :1].copy()


def quality(targets: np.ndarray, images: np.ndarray) -> dict[str, float]:
    return {"psnr": psnr(targets, images[:, 0]), "ssim": ssim(targets, images[:, 0])}


def interleaved_latency(cases: list[tuple[Path, str]] | list[tuple[Path, str, str | None]], settings: Settings,
                        rounds: int) -> list[dict[str, Any]]:
    """Latency statistics (ms) of each ``(model, runtime[, precision])``, timed round-robin: ``rounds`` x
    ``iterations`` each."""
    runners = [open_runner(case[0], case[1], replace(settings, precision=case[2]) if len(case) > 2 else settings)
               for case in cases]
    for runner in runners:
        for _ in range(settings.warmup):
            runner.call()
    timings: list[list[float]] = [[] for _ in runners]
    for _ in range(rounds):
        for runner, times in zip(runners, timings):
            for _ in range(settings.iterations):
                tick = time.perf_counter()
                runner.call()
                times.append((time.perf_counter() - tick) * 1e3)
    return [{"backend": runner.backend, "threads": runner.threads, "shape": list(runner.shape), "runs": len(times),
             "median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
             "min_ms": float(np.min(times)), "max_ms": float(np.max(times))}
            for runner, times in zip(runners, timings)]


def bench_size(
    run: Path, size: tuple[int, int], workdir: Path, settings: Settings, rounds: int
) -> list[dict[str, Any]]:
    """Export, time and score every variant at ``size``; a variant refused by a gate is recorded with its error."""
    model, meta = load_checkpoint(run / "kd_student.pt")
    # The run's mask at the trained size; at another size, the training mask redrawn as `kdc export` does.
    mask = resolve_mask(None, run if tuple(meta["image_size"]) == size else None, meta, size)
    targets, kspace, mask_input = evaluation_set(size, mask)
    with torch.no_grad():
        reference = quality(targets, model(torch.from_numpy(kspace), torch.from_numpy(mask_input)).numpy())
    rows = []
    for name, fmt, quantize, runtime, suffix in VARIANTS:
        out = workdir / f"{fmt}-{quantize or 'fp32'}-{size[0]}x{size[1]}{suffix}"
        row: dict[str, Any] = {"variant": name, "format": fmt, "quantize": quantize, "runtime": runtime,
                               "size": list(size), "pytorch_fp32": reference}
        try:
            report = export_model(run, out, fmt=fmt, quantize=quantize, image_size=size, mask=mask,
                                  role="kd_student")
        except ExportError as err:
            rows.append({**row, "error": str(err)})
            continue
        row["gate"] = report.metadata["quantization"]
        reconstructor = load(out, threads=THREADS)
        row["quality"] = quality(targets, reconstructor.run({"kspace": kspace, "mask": mask_input})["image"])
        row["psnr_drop"] = reference["psnr"] - row["quality"]["psnr"]
        weights = out.with_suffix(".bin").stat().st_size if suffix == ".xml" else 0
        row["file_mb"] = (out.stat().st_size + weights) / 1e6
        row["path"] = out
        rows.append(row)
    timed = [row for row in rows if "path" in row]
    latencies = interleaved_latency([(row.pop("path"), row["runtime"]) for row in timed], settings, rounds)
    for row, latency in zip(timed, latencies):
        row["latency"] = latency
    for row in rows:
        base = next((r for r in rows if r["runtime"] == row["runtime"] and r["quantize"] is None), None)
        if "latency" in row and base and "latency" in base:
            row["speedup_vs_fp32"] = base["latency"]["median_ms"] / row["latency"]["median_ms"]
    return rows


def goal_met(row: dict[str, Any]) -> bool:
    return row.get("speedup_vs_fp32", 0) >= GOAL_SPEEDUP and row["psnr_drop"] <= GOAL_PSNR_DROP


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        "# Post-training quantization of the KD student",
        "",
        f"Made by `{report['command']}`. Student: `{report['run']}/kd_student.pt`, trained at 128x128 on the shipped "
        f"demo set by `kdc {' '.join(DEMO_RUN[:-1])}` (what `make demo` runs and what this script runs without "
        f"`--run`); validation PSNR in its meta {report['student_psnr']:.2f} dB. A short training: the quantization "
        "noise is small next to its reconstruction error, so the drop of a better-trained student may be larger.",
        "",
        f"Latency: {THREADS} threads, batch 1, {report['settings']['warmup']} warm-up runs, then "
        f"{report['settings']['rounds']} rounds in which the variants of one size each run "
        f"{report['settings']['iterations']} times in turn (`kdc.runtime.bench.open_runner`; interleaved so that "
        "load drift on the shared machine hits all alike); median and p90 over all timed runs. Quality: PSNR / "
        f"SSIM of the exported file on all {EVAL_SLICES} demo validation slices against the fully sampled images; "
        "drop = PyTorch float32 PSNR minus the file's (negative: the quantized file scores higher). The calibration "
        "slices (16 of 32 evenly spaced validation slices) overlap these slices: the demo set has a single "
        "validation volume. The demo slices are 128x128; at 256x256 they are upsampled (smoother, hence the higher "
        "PSNR), and the 4x training mask is redrawn at 256 columns as `kdc export` does.",
        "",
        "| size | variant | median ms | p90 ms | speed-up vs fp32 (same runtime) | PSNR dB | drop dB | SSIM | "
        "gate drop dB (16 slices) | file MB | goal met |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in report["rows"]:
        size = "x".join(map(str, row["size"]))
        if "error" in row:
            lines.append(f"| {size} | {row['variant']} | refused: {row['error']} | | | | | | | | no |")
            continue
        lat, q = row["latency"], row["quality"]
        gate = f"{row['gate']['psnr_drop']:.3f}" if row["gate"] else "-"
        speedup = f"{row['speedup_vs_fp32']:.2f}x" if "speedup_vs_fp32" in row else "-"
        met = {None: "-", "fp16": "n/a (GPU format)"}.get(row["quantize"], "yes" if goal_met(row) else "no")
        lines.append(
            f"| {size} | {row['variant']} | {lat['median_ms']:.1f} | {lat['p90_ms']:.1f} | {speedup} | "
            f"{q['psnr']:.3f} | {row['psnr_drop']:.3f} | {q['ssim']:.4f} | {gate} | {row['file_mb']:.2f} | {met} |"
        )
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    lines += [
        "",
        "PyTorch float32 on the same slices: " + "; ".join(
            f"{'x'.join(map(str, r['size']))}: PSNR {r['pytorch_fp32']['psnr']:.3f} dB, SSIM "
            f"{r['pytorch_fp32']['ssim']:.4f}" for r in report["rows"] if r["variant"] == VARIANTS[0][0]),
        "",
        f"Environment: {versions}; nncf {report['nncf']}; {env['cpu']} ({env['cpu_count']} CPUs), load average at "
        f"the end {env['load_average']}"
        + (". **Other processes shared the CPUs while this ran**: absolute latencies are inflated and noisy "
           "(compare TOOLCHAIN's 44 ms for the float32 student at 256x256 on an idle machine)"
           if env["load_average"] and env["load_average"][0] > env["cpu_count"] else "")
        + "; the speed-ups compare variants timed in turn within the same rounds.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="run directory with kd_student.pt and mask.npy")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=20, help="timed runs per variant and round")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("docs/results/quantization"))
    args = parser.parse_args()
    import nncf

    run = trained_run(args.run)
    settings = Settings(threads=THREADS, warmup=args.warmup, iterations=args.iterations)
    _, meta = load_checkpoint(run / "kd_student.pt")
    trained = tuple(meta["image_size"])
    rows = []
    with tempfile.TemporaryDirectory(prefix="kdc-quant-") as workdir:
        for size in dict.fromkeys([trained, (256, 256)]):
            rows += bench_size(run, size, Path(workdir), settings, args.rounds)
    command = "python benchmarks/quantization.py " + " ".join(sys.argv[1:])
    student_psnr = meta.get("metrics", {}).get("psnr", {}).get("mean")
    report = {"command": command.strip(), "run": str(run), "student_psnr": student_psnr,
              "settings": {**asdict(settings), "rounds": args.rounds}, "environment": environment(),
              "nncf": nncf.__version__, "rows": rows}
    write_results(args.out, report, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
