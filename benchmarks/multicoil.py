"""Multi-coil reconstruction with kdc's SENSE models against zero-filled RSS and SENSE-CS, fastMRI's way.

On the validation split of a simulated 8-coil dataset (``kdc data build --coils 8``), every method is scored as
fastMRI's ``evaluate.py`` scores a volume (:func:`kdc.data.metrics.fastmri_evaluate`: PSNR, SSIM, NMSE against the
root sum of squares of the fully sampled coils, the volume's maximum as data range):

- zero-filled RSS;
- SENSE-CS (``bart ecalib -m 1`` + ``pics -R W:7:0:λ``, λ tuned on training slices: ``kdc evaluate --cs``'s row);
- the virtual-coil DC-CNN (``--vc-run``: a complex KD-MRI student trained on the same files' virtual coil, its
  magnitude scored against the RSS), when given;
- the SENSE DC-CNN (``multicoil_dccnn``) trained here for ``--dccnn-epochs`` with L1, when asked;
- the distilled run's teacher, student and KD student (``kdc distill --task multicoil``).

Then the student's and teacher's latency in ONNX Runtime (and OpenVINO) at 320x320 with 4 and 15 coils, one file
each (exported with a dynamic coil count), batch 1, 2 threads. Writes ``docs/results/multicoil.{md,json}``.

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/multicoil.py --run runs/mc4 --data data/brain8c128
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kdc._io import write_results
from kdc.compress.baselines import reconstruct_slices
from kdc.compress.baselines.bart import LAMBDA_GRID, BartSenseCompressedSensing, tune_lambda
from kdc.compress.evaluate import predict
from kdc.compress.precision import resolve_precision
from kdc.compress.tasks import get_task
from kdc.compress.trainer import Stage, TrainSettings, train_stage
from kdc.data.metrics import fastmri_evaluate
from kdc.data.slices import open_split
from kdc.errors import KdcError
from kdc.models import build_model, load_checkpoint

ROLES = ("teacher", "student", "kd_student")
#: The rows' names of kdc's multi-coil architectures (a run's student may be either).
ARCH_NAMES = {"sense_varnet": "SENSE VarNet", "sense_dccnn": "SENSE DC-CNN"}
#: SENSE-CS can take more regularisation with 8 coils (benchmarks/sensitivities.py).
GRID = (*LAMBDA_GRID, 0.1, 0.3)
LATENCY_SIZE = (320, 320)


def volumes(slices) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``(volume, target, image)`` per slice -> ``{volume: (targets (S, H, W), images (S, H, W))}``."""
    grouped: dict[str, list] = defaultdict(list)
    for volume, target, image in slices:
        grouped[volume].append((target, image))
    return {name: (np.stack([t for t, _ in pairs]), np.stack([i for _, i in pairs])) for name, pairs in grouped.items()}


def scored(slices, extra: dict | None = None) -> dict:
    """fastMRI's volume metrics, averaged over volumes (one here: the validation brain)."""
    rows = [fastmri_evaluate(target, image) for target, image in volumes(slices).values()]
    return {key: float(np.mean([row[key] for row in rows])) for key in ("psnr", "ssim", "nmse")} | (extra or {})


def sense_cs(train, val, iterations: int, tuning_slices: int) -> tuple[dict, float]:
    baseline = tune_lambda(train, slices=tuning_slices, iterations=iterations, grid=GRID,
                           baseline=BartSenseCompressedSensing)
    seconds: list[float] = []

    def slices():
        for volume, target, image, elapsed in reconstruct_slices(baseline, val):
            seconds.append(elapsed)
            yield volume, target, image

    row = scored(slices(), {"lambda": baseline.lam, "iterations": iterations})
    return row | {"seconds_per_slice": float(np.mean(seconds))}, baseline.lam


def virtual_coil_row(run: Path, data: Path, acceleration: int) -> dict:
    """A complex DC-CNN run on the same files' virtual coil (its KD student, else its student), the magnitude scored
    against the multi-coil RSS (the same volume scale: the peak of the virtual-coil image)."""
    recon = get_task("recon_complex")
    settings = {"acceleration": acceleration, "mask_kind": "random", "seed": 0, "image": "complex"}
    role = next(role for role in ("kd_student", "student") if (run / f"{role}.pt").is_file())
    model, _ = load_checkpoint(run / f"{role}.pt")
    images = [image for _, _, image in predict(model, recon.open_split(data, "val", settings), task=recon)]
    coil_items = open_split(data, "val", acceleration, coils=True)
    pairs = ((coil_items[index]["volume"], coil_items[index]["target"][0], image) for index, image in enumerate(images))
    params = sum(p.numel() for p in model.parameters())
    return {f"virtual-coil complex DC-CNN ({role})": scored(pairs, {"params": params})}


def train_sense_dccnn(train, val, epochs: int, out: Path) -> torch.nn.Module:
    """The SENSE DC-CNN preset trained with L1 to the RSS through kdc's trainer (a second student, no teacher)."""
    task = get_task("recon_multicoil")
    torch.manual_seed(0)
    model = build_model("multicoil_dccnn")

    def step_loss(batch: dict) -> torch.Tensor:
        return F.l1_loss(task.predict(model, batch).float(), batch["target"])

    precision = resolve_precision("auto", "cpu")
    settings = TrainSettings(epochs, batch_size=2, lr=2e-3, lr_schedule="cosine", precision=precision, val_slices=10)
    train_stage(Stage("sense_dccnn", model, step_loss, {"role": "sense_dccnn"}, task=task), train, val, settings, out)
    return load_checkpoint(out / "sense_dccnn.pt")[0]


def latency(model_path: Path, coils: int, engine: str, repeats: int) -> float:
    """Median ms of one 320x320 slice with ``coils`` coils, 2 threads."""
    import kdc.runtime as rt

    session = rt.load(model_path, engine=engine, threads=2)
    feeds = session.example_feeds(1)
    feeds["kspace"] = np.repeat(feeds["kspace"][:, :1], coils, axis=1)
    session.run(feeds)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(feeds)
        times.append(1000 * (time.perf_counter() - started))
    return float(np.median(times))


def latency_rows(run: Path, repeats: int) -> dict:
    from kdc.export import export_model

    rows = {}
    with tempfile.TemporaryDirectory(prefix="kdc-multicoil-") as tmp:
        for role in ("kd_student", "teacher"):
            path = Path(tmp) / f"{role}.onnx"
            report = export_model(run, path, role=role, image_size=LATENCY_SIZE)
            rows[role] = {"relative_l2_parity": report.metadata["parity"]["relative_l2_error"]}
            for engine in ("ort", "openvino"):
                for coils in (4, 15):
                    rows[role][f"{engine}_{coils}_coils_ms"] = latency(path, coils, engine, repeats)
    return rows


def render(results: dict) -> str:
    lines = ["# Multi-coil reconstruction: kdc's SENSE models, zero-filled RSS and SENSE-CS", "",
             f"Written by `{results['command']}` on {results['machine']}. {results['setting']}", "",
             f"Validation: {results['val_slices']} slices of {results['data']} ({results['coils']} coils, "
             f"{results['size']}), {results['acceleration']}x random column mask; scored as fastMRI's `evaluate.py` "
             "scores a volume, against the RSS of the fully sampled coils.", "",
             "| method | parameters | PSNR (dB) | SSIM | NMSE |", "|---|---:|---:|---:|---:|"]
    for name, row in results["rows"].items():
        params = f"{row['params']:,}" if "params" in row else "–"
        lines.append(f"| {name} | {params} | {row['psnr']:.2f} | {row['ssim']:.4f} | {row['nmse']:.4f} |")
    if "sense_cs_lambda" in results:
        lines += ["", f"SENSE-CS: λ = {results['sense_cs_lambda']:g} tuned on {results['tuning_slices']} training "
                  f"slices over {list(GRID)}, {results['rows']['SENSE-CS']['iterations']} iterations, "
                  f"{results['rows']['SENSE-CS']['seconds_per_slice']:.2f} s per slice"
                  + (f" (rows computed by `{results['baselines_from']}`)." if "baselines_from" in results else ".")]
    if "sense_cs_failed" in results:
        lines += ["", f"SENSE-CS: no row: {results['sense_cs_failed']}"]
    if results.get("latency"):
        lines += ["", "## Latency at 320x320, batch 1, 2 threads (one file per model, dynamic coil count)", "",
                  "| model | parity (rel. L2) | ORT 4 coils | ORT 15 coils | OpenVINO 4 coils | OpenVINO 15 coils |",
                  "|---|---:|---:|---:|---:|---:|"]
        for role, row in results["latency"].items():
            lines.append(f"| {role} | {row['relative_l2_parity']:.1e} | {row['ort_4_coils_ms']:.1f} ms | "
                         f"{row['ort_15_coils_ms']:.1f} ms | {row['openvino_4_coils_ms']:.1f} ms | "
                         f"{row['openvino_15_coils_ms']:.1f} ms |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="kdc distill --task multicoil run directory")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--acc", type=int, default=4)
    parser.add_argument("--vc-run", type=Path, help="a complex DC-CNN run on the same data (virtual coil)")
    parser.add_argument("--dccnn-epochs", type=int, default=0,
                        help="train the SENSE DC-CNN this long in RUN/sense_dccnn, resuming there (0: skip)")
    parser.add_argument("--cs-iterations", type=int, default=100)
    parser.add_argument("--tuning-slices", type=int, default=6)
    parser.add_argument("--latency-repeats", type=int, default=0, help="0: skip the latency table")
    parser.add_argument("--reuse-baselines", type=Path, help="take SENSE-CS from this results JSON (same data)")
    parser.add_argument("--setting", default="", help="the training setting, said in the results")
    parser.add_argument("--out", type=Path, default=Path("docs/results/multicoil"))
    args = parser.parse_args(argv)
    task = get_task("recon_multicoil")
    settings = {"acceleration": args.acc, "mask_kind": "random", "seed": 0}
    train, val = (task.open_split(args.data, split, settings) for split in ("train", "val"))
    first = val[0]["kspace"]
    rows = {"zero-filled RSS": scored(predict(None, val, task=task))}
    results: dict = {"command": "python " + shlex.join(["benchmarks/multicoil.py", *argv]),
                     "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "setting": args.setting,
                     "data": str(args.data), "coils": int(first.shape[0]), "size": f"{first.shape[1]}x{first.shape[2]}",
                     "acceleration": args.acc, "val_slices": len(val), "tuning_slices": args.tuning_slices}
    if args.reuse_baselines:  # the same data, factor and validation slices: the same rows
        previous = json.loads(args.reuse_baselines.read_text())
        if [previous[key] for key in ("data", "acceleration", "val_slices")] != [str(args.data), args.acc, len(val)]:
            sys.exit(f"{args.reuse_baselines}: scored other data, factor or slices")
        rows["SENSE-CS"] = previous["rows"]["SENSE-CS"]
        results.update(sense_cs_lambda=previous["sense_cs_lambda"], tuning_slices=previous["tuning_slices"],
                       baselines_from=previous["command"])
    elif not BartSenseCompressedSensing.missing():
        try:
            rows["SENSE-CS"], results["sense_cs_lambda"] = sense_cs(train, val, args.cs_iterations,
                                                                    args.tuning_slices)
        except KdcError as err:  # e.g. fewer calibration lines than ecalib's 6x6 kernel (8x at 128 columns)
            results["sense_cs_failed"] = str(err)
    if args.vc_run:
        rows.update(virtual_coil_row(args.vc_run, args.data, args.acc))
    if args.dccnn_epochs:
        model = train_sense_dccnn(train, val, args.dccnn_epochs, args.run / "sense_dccnn")
        rows["SENSE DC-CNN (multicoil_dccnn, L1)"] = scored(
            predict(model, val, task=task), {"params": sum(p.numel() for p in model.parameters())})
    for role in ROLES:
        if (args.run / f"{role}.pt").is_file():
            model, _ = load_checkpoint(args.run / f"{role}.pt")
            rows[f"{ARCH_NAMES[model.config['arch']]} {role}"] = scored(predict(model, val, task=task),
                                                 {"params": sum(p.numel() for p in model.parameters())})
    results["rows"] = rows
    if args.latency_repeats:
        results["latency"] = latency_rows(args.run, args.latency_repeats)
    write_results(args.out, results, render(results))
    print(render(results))


if __name__ == "__main__":
    main(sys.argv[1:])
