"""Is the dataset's mask a lucky or an unlucky draw? Zero-filled PSNR of the training slices under many mask seeds.

Every factor of a dataset is trained and scored with one random 1-D Cartesian mask (seed 0). This scores the
zero-filled image of every **training** slice (never validation) under ``--draws`` seeds of the same mask kind,
density and centre fraction, and says where the dataset's mask ranks among them: a mask far below the median
handicaps every model of that factor alike. Writes ``docs/results/mask_draw.{md,json}``.

    python benchmarks/mask_draw.py --data data/brain --draws 50
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from pathlib import Path

import numpy as np

from kdc._io import write_results
from kdc.data.metrics import psnr
from kdc.data.slices import dataset_root, open_split
from kdc.mri.fft import fft2, ifft2
from kdc.mri.masks import cartesian_mask


def zero_filled_psnr(targets: np.ndarray, mask: np.ndarray) -> float:
    """Mean PSNR (dB, data range 1: volumes are scaled to a maximum of 1) of ``|ifft2(fft2(x) * mask)|``."""
    zero_filled = np.abs(ifft2(fft2(targets) * mask))
    return float(np.mean([psnr(target, image, maxval=1.0) for target, image in zip(targets, zero_filled)]))


def factor_row(data: str, acc: int, draws: int) -> dict:
    dataset = open_split(data, "train", acc)
    targets = np.stack([dataset[i]["target"][0] for i in range(len(dataset))])
    used = zero_filled_psnr(targets, dataset.mask)
    psnr = np.array([zero_filled_psnr(targets, cartesian_mask("random", acc, dataset.image_shape, seed))
                     for seed in range(draws)])
    return {
        "slices": len(dataset),
        "sampled_fraction": float(dataset.mask.mean()),
        "dataset_mask_psnr": round(used, 3),
        "draws": draws,
        "psnr_by_seed": [round(float(value), 3) for value in psnr],
        "mean": round(float(psnr.mean()), 3),
        "sd": round(float(psnr.std(ddof=1)), 3),
        "min": round(float(psnr.min()), 3),
        "max": round(float(psnr.max()), 3),
        "percentile_of_dataset_mask": round(float((psnr < used).mean() * 100), 1),
    }


def render(results: dict) -> str:
    lines = ["# Mask draw: zero-filled PSNR of the training slices under random mask seeds", "",
             f"Written by `{results['command']}` on {results['machine']}. Data: `{results['data']}` (train split "
             "only). Same mask kind, density and centre fraction, seeds 0..N-1; the dataset's own mask is scored "
             "alongside.", "",
             "| factor | sampled | dataset mask ZF PSNR | draws: mean ± sd | min | max | dataset mask percentile |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for acc, row in results["factors"].items():
        lines.append(f"| {acc}x | {row['sampled_fraction']:.3f} | {row['dataset_mask_psnr']:.2f} | "
                     f"{row['mean']:.2f} ± {row['sd']:.2f} | {row['min']:.2f} | {row['max']:.2f} | "
                     f"{row['percentile_of_dataset_mask']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/brain")
    parser.add_argument("--factors", type=int, nargs="+", default=[4, 5, 8])
    parser.add_argument("--draws", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("docs/results/mask_draw"))
    args = parser.parse_args()
    dataset_root(args.data)
    results = {
        "command": shlex.join(["python", *sys.argv]),
        "machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version()},
        "data": args.data,
        "factors": {str(acc): factor_row(args.data, acc, args.draws) for acc in args.factors},
    }
    write_results(args.out, results, render(results))
    print(render(results))


if __name__ == "__main__":
    main()
