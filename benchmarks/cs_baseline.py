"""The classical row: compressed sensing with BART (``bart pics``, l1-wavelet) against zero-filling, per factor.

λ is tuned once per factor on a few training slices (:func:`kdc.compress.baselines.bart.tune_lambda`, never on
validation), then ZF and CS are scored on every ``--val-every``-th validation slice (the same slices for both), with
the seconds per slice of CS (one ``bart`` process per slice, one OpenMP thread).
Writes ``docs/results/cs_baseline.{md,json}``.

    python benchmarks/cs_baseline.py --data demo --factors 4 --val-every 8       # a handful of demo slices
    python benchmarks/cs_baseline.py --data data/brain --factors 4 5 8 --val-every 1
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path

from kdc._io import write_results
from kdc.compress.baselines import score_baseline
from kdc.compress.baselines.bart import BartCompressedSensing, tune_lambda
from kdc.compress.evaluate import predict, score
from kdc.compress.tasks import RECON


def factor_rows(args: argparse.Namespace, acc: int) -> dict:
    settings = {"acceleration": acc, "mask_kind": "random", "seed": 0}
    train, val = (RECON.open_split(args.data, split, settings) for split in ("train", "val"))
    indices = list(range(0, len(val), args.val_every))
    started = time.perf_counter()
    baseline = tune_lambda(train, args.tune_slices, args.iterations)
    tuning_s = time.perf_counter() - started
    subset = [val[i] for i in indices]
    zero_filled = score(predict(None, subset))
    cs = score_baseline(baseline, val, indices)
    return {"val_slices": indices, "zero-filled": zero_filled, "cs": cs, "tuning_s": round(tuning_s, 1)}


def render(results: dict) -> str:
    first = next(iter(results["factors"].values()))
    lines = ["# Compressed sensing (BART) against zero-filling", "",
             f"Written by `{results['command']}` on {results['machine']}. λ tuned on training slices "
             f"{first['cs']['settings']['lambda_tuning']['slices']}; PSNR/SSIM mean ± sd over the scored validation "
             "slices (data range = the largest target value among the scored slices of each volume).", "",
             "| factor | val slices | ZF PSNR | CS PSNR | ZF SSIM | CS SSIM | λ | iterations | CS s/slice |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for acc, row in results["factors"].items():
        zf, cs = row["zero-filled"], row["cs"]
        lines.append(
            f"| {acc}x | {len(row['val_slices'])} | {zf['psnr']['mean']:.2f} ± {zf['psnr']['sd']:.2f} | "
            f"{cs['psnr']['mean']:.2f} ± {cs['psnr']['sd']:.2f} | {zf['ssim']['mean']:.4f} | "
            f"{cs['ssim']['mean']:.4f} | {cs['settings']['lambda']:g} | {cs['settings']['iterations']} | "
            f"{cs['seconds_per_slice']:.2f} |")
    tuning = {acc: row["cs"]["settings"]["lambda_tuning"]["psnr_by_lambda"] for acc, row in results["factors"].items()}
    lines += ["", "PSNR by λ on the training slices: " + "; ".join(f"{acc}x {psnr}" for acc, psnr in tuning.items())]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="demo")
    parser.add_argument("--factors", type=int, nargs="+", default=[4])
    parser.add_argument("--val-every", type=int, default=8, help="score every N-th validation slice")
    parser.add_argument("--tune-slices", type=int, default=4, help="training slices λ is tuned on")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("docs/results/cs_baseline"))
    args = parser.parse_args(argv)
    missing = BartCompressedSensing.missing()
    if missing:
        sys.exit(f"cs_baseline: {missing}")
    results = {
        "command": shlex.join(["python", "benchmarks/cs_baseline.py", *argv]),
        "machine": f"{platform.machine()}, {platform.platform()}",
        "data": args.data,
        "factors": {str(acc): factor_rows(args, acc) for acc in args.factors},
    }
    write_results(args.out, results, render(results) + "\n")
    print(render(results))


if __name__ == "__main__":
    main(sys.argv[1:])
