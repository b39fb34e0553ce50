"""kdc's numpy ESPIRiT against ``bart ecalib -m 1``, and SENSE-CS against CS on kdc's virtual coil.

Two 8-coil cases: the simulated brain (real demo brain slices, 128x128, with a smooth phase and birdcage coils:
:func:`kdc.mri.simulate.complex_coil_images`, what ``kdc data build --coils 8`` writes) and an ISMRMRD Shepp-Logan
phantom (``ismrmrd_generate_cartesian_shepp_logan -m 256 -c 8``, measured noise, its own coil maps). k-space is
undersampled with fastMRI's random column mask (``--factor``, 8 % centre at 4x); the maps are calibrated from its
centre lines.

Maps: ``|<s_kdc, s_bart>|`` per pixel where both keep a map (1 = the same map up to a phase), the pixels where the
two supports agree, the eigenvalue maps' difference, the SENSE-combined fully sampled images' agreement, and the
seconds per slice (one BLAS / OpenMP thread each, the way a benchmark runs one slice per core). Reconstructions:
zero-filled RSS, ``bart pics`` CS on the virtual coil (complex, no real constraint), SENSE-CS with ``ecalib`` maps and
with kdc's maps, scored with :func:`kdc.data.metrics.fastmri_evaluate` against the RSS of the fully sampled coils.
λ is tuned on brain training slices (every method its own; the phantom has no training data, so it uses the brain's
λ, and the best λ on the phantom itself is listed as an oracle). Writes ``docs/results/sensitivities.{md,json}``.

    OPENBLAS_NUM_THREADS=1 python benchmarks/sensitivities.py            # about 3 minutes on 2 busy cores
"""

from __future__ import annotations

import argparse
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kdc._io import write_results
from kdc.compress.baselines.bart import (
    LAMBDA_GRID,
    BartCompressedSensing,
    BartSenseCompressedSensing,
    read_cfl,
    run_bart,
    write_cfl,
)
from kdc.data.formats import read_slices
from kdc.data.metrics import fastmri_evaluate, psnr
from kdc.data.slices import open_split
from kdc.mri.coils import apply_compression, calibration_region, coil_covariance, compression_matrix, root_sum_of_squares
from kdc.mri.fft import fft2, ifft2, uncentred_to_centred
from kdc.mri.masks import cartesian_mask
from kdc.mri.sensitivity import combine, espirit_maps
from kdc.mri.simulate import birdcage_maps, complex_coil_images

COILS = 8
#: ``kdc evaluate``'s λ grid and two larger values: multi-coil SENSE-CS can take more regularisation.
GRID = (*LAMBDA_GRID, 0.1, 0.3)


def brain_slices(split: str, every: int) -> np.ndarray:
    """``(S, C, H, W)`` uncentred k-space of every ``every``-th demo slice of ``split`` with 8 birdcage coils."""
    dataset = open_split("demo", split, 4)
    images = np.stack([dataset[index]["target"][0] for index in range(0, len(dataset), every)])
    return fft2(complex_coil_images(images, COILS, seed=1 if split == "val" else 0))


def phantom_slice(folder: Path) -> np.ndarray:
    path = folder / "phantom.h5"
    subprocess.run(["ismrmrd_generate_cartesian_shepp_logan", "-m", "256", "-c", str(COILS), "-o", str(path)],
                   check=True, capture_output=True)
    return read_slices(path).uncentred()


def bart_maps(kspace: np.ndarray, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    write_cfl(folder / "kspace", np.moveaxis(uncentred_to_centred(kspace), 0, -1)[:, :, None])
    run_bart(folder, "ecalib", 1, "ecalib", "-m", "1", "kspace", "sens", "values")
    maps = np.moveaxis(read_cfl(folder / "sens").reshape(*kspace.shape[1:], kspace.shape[0]), -1, 0)
    return maps, read_cfl(folder / "values").real.reshape(kspace.shape[1:])


def compare_maps(kspace: np.ndarray, mask: np.ndarray, truth: np.ndarray | None) -> dict:
    """kdc's and bart's maps of every slice; means over slices."""
    rows = []
    for coils in kspace:
        with tempfile.TemporaryDirectory(prefix="kdc-ecalib-") as tmp:
            started = time.perf_counter()
            theirs, their_values = bart_maps(coils * mask, Path(tmp))
            bart_s = time.perf_counter() - started
        started = time.perf_counter()
        ours, our_values = espirit_maps(coils * mask, mask, eigenvalues=True)
        kdc_s = time.perf_counter() - started
        support, their_support = our_values >= 0.8, their_values >= 0.8
        both = support & their_support
        correlation = np.abs(np.sum(ours.conj() * theirs, axis=0))[both]
        full = ifft2(coils)
        ours_combined, theirs_combined = np.abs(combine(full, ours)), np.abs(combine(full, theirs))
        row = {"kdc_s": kdc_s, "bart_s": bart_s, "correlation_mean": float(correlation.mean()),
               "correlation_p01": float(np.quantile(correlation, 0.01)), "correlation_min": float(correlation.min()),
               "support_agreement": float((support == their_support).mean()),
               "eigenvalue_median_difference": float(np.median(np.abs(our_values - their_values)[our_values > 0])),
               "combined_psnr_kdc_vs_bart": psnr(theirs_combined, ours_combined)}
        if truth is not None:
            row["truth_correlation_kdc"] = float(np.abs(np.sum(ours.conj() * truth, axis=0))[support].mean())
            row["truth_correlation_bart"] = float(np.abs(np.sum(theirs.conj() * truth, axis=0))[their_support].mean())
        rows.append(row)
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]} | {"slices": len(rows)}


def virtual_coil(kspace: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(S, H, W)`` kdc's virtual coil of undersampled k-space (the volume's compression matrix)."""
    matrix = compression_matrix(coil_covariance(kspace, calibration_region(mask, mask.shape)))
    return apply_compression(kspace, matrix)[:, 0]


METHODS = ("CS, virtual coil", "SENSE-CS, ecalib maps", "SENSE-CS, kdc maps")


def build(method: str, lam: float, iterations: int) -> BartCompressedSensing | BartSenseCompressedSensing:
    if method == "CS, virtual coil":
        return BartCompressedSensing(lam, iterations, real=False)
    return BartSenseCompressedSensing(lam, iterations, maps="kdc" if method.endswith("kdc maps") else "ecalib")


def reconstruct(name: str, baseline: BartCompressedSensing | BartSenseCompressedSensing, kspace: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """``(S, H, W)`` images of one method and its seconds per slice."""
    inputs = virtual_coil(kspace * mask, mask) if name == "CS, virtual coil" else kspace * mask
    started = time.perf_counter()
    images = np.stack([baseline.reconstruct(slice_kspace, mask) for slice_kspace in inputs])
    return images, (time.perf_counter() - started) / len(inputs)


def tune(kspace: np.ndarray, mask: np.ndarray, iterations: int) -> dict[str, dict[str, float]]:
    """PSNR by λ on ``kspace`` (against its RSS) for CS on the virtual coil and SENSE-CS with ecalib maps."""
    target = root_sum_of_squares(ifft2(kspace))
    grid = {}
    for name in ("CS, virtual coil", "SENSE-CS, ecalib maps"):
        grid[name] = {}
        for lam in GRID:
            images, _ = reconstruct(name, build(name, lam, iterations), kspace, mask)
            grid[name][f"{lam:g}"] = round(fastmri_evaluate(target, images)["psnr"], 3)
    return grid


def best(grid: dict[str, dict[str, float]]) -> dict[str, float]:
    return {name: float(max(scores, key=scores.__getitem__)) for name, scores in grid.items()}


def score_case(kspace: np.ndarray, mask: np.ndarray, lams: dict[str, float], iterations: int) -> dict:
    target = root_sum_of_squares(ifft2(kspace))
    rows = {"zero-filled RSS": fastmri_evaluate(target, root_sum_of_squares(ifft2(kspace * mask)))}
    for name in METHODS:
        # kdc's maps go with the λ tuned for ecalib's: the same maps, the same λ.
        baseline = build(name, lams[name if name in lams else "SENSE-CS, ecalib maps"], iterations)
        images, seconds = reconstruct(name, baseline, kspace, mask)
        rows[name] = fastmri_evaluate(target, images) | {"seconds_per_slice": seconds, "lambda": baseline.lam}
    return rows


def render(results: dict) -> str:
    lines = ["# Coil sensitivities: kdc's ESPIRiT against bart ecalib, and SENSE-CS", "",
             f"Written by `{results['command']}` on {results['machine']} (load: other jobs shared the 2 cores, "
             f"so seconds are upper bounds). {results['factor']}x random column mask (fastMRI's, "
             f"{results['centre_lines']}), {results['iterations']} `pics` iterations; maps calibrated from the "
             "mask's centre lines with BART's defaults (6x6 kernel, region at most 24x24, threshold 0.001, "
             "crop 0.8).", "",
             "## Maps: kdc `espirit_maps` vs `bart ecalib -m 1`", "",
             "| case | slices | mean \\|<s_kdc, s_bart>\\| | 1st percentile | min | same support | eigenvalue "
             "median \\|Δ\\| | SENSE-combined PSNR kdc vs bart | vs true maps (kdc / bart) | kdc s | bart s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for case, row in results["maps"].items():
        truth = (f"{row['truth_correlation_kdc']:.4f} / {row['truth_correlation_bart']:.4f}"
                 if "truth_correlation_kdc" in row else "n/a")
        lines.append(f"| {case} | {row['slices']} | {row['correlation_mean']:.5f} | {row['correlation_p01']:.4f} | "
                     f"{row['correlation_min']:.4f} | {100 * row['support_agreement']:.2f} % | "
                     f"{row['eigenvalue_median_difference']:.1e} | {row['combined_psnr_kdc_vs_bart']:.1f} dB | "
                     f"{truth} | {row['kdc_s']:.2f} | {row['bart_s']:.2f} |")
    lines += ["", "## Reconstructions against the RSS of the fully sampled coils (fastMRI's `evaluate`)", "",
              "| case | method | PSNR | SSIM | NMSE | λ | s/slice |", "|---|---|---:|---:|---:|---:|---:|"]
    for case, rows in results["reconstructions"].items():
        for name, row in rows.items():
            extra = (f"{row['lambda']:g} | {row['seconds_per_slice']:.2f}" if "lambda" in row else " | ")
            lines.append(f"| {case} | {name} | {row['psnr']:.2f} | {row['ssim']:.4f} | {row['nmse']:.4f} | {extra} |")
    lines += ["", f"λ tuned on brain training slices {results['tuning_slices']} (PSNR by λ): "
              f"{results['tuning']['brain']}.", "",
              f"Oracle for the phantom (PSNR by λ on the phantom itself, not used above): "
              f"{results['tuning'].get('phantom (oracle)', 'n/a')}."]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--val-every", type=int, default=10, help="score every N-th demo validation slice")
    parser.add_argument("--train-every", type=int, default=40, help="tune λ on every N-th demo training slice")
    parser.add_argument("--out", type=Path, default=Path("docs/results/sensitivities"))
    args = parser.parse_args(argv)
    if BartCompressedSensing.missing():
        sys.exit(f"sensitivities: {BartCompressedSensing.missing()}")
    train, val = brain_slices("train", args.train_every), brain_slices("val", args.val_every)
    cases = {"brain 8x128²": val}
    if shutil.which("ismrmrd_generate_cartesian_shepp_logan"):
        with tempfile.TemporaryDirectory(prefix="kdc-phantom-") as tmp:
            cases["ISMRMRD phantom 8x256²"] = phantom_slice(Path(tmp))
    else:
        print("sensitivities: ismrmrd_generate_cartesian_shepp_logan not found: no phantom case", file=sys.stderr)
    masks = {case: cartesian_mask("random", args.factor, kspace.shape[-2:], seed=0) for case, kspace in cases.items()}
    tuning = {"brain": tune(train, masks["brain 8x128²"], args.iterations)}
    lams = best(tuning["brain"])
    results = {
        "command": shlex.join(["python", "benchmarks/sensitivities.py", *argv]),
        "machine": f"{platform.machine()}, {platform.platform()}",
        "factor": args.factor, "iterations": args.iterations,
        "centre_lines": ", ".join(f"{case}: {int(np.fft.fftshift(calibration_region(mask, mask.shape))[0].sum())} "
                                  "centre lines" for case, mask in masks.items()),
        "tuning_slices": list(range(0, len(train) * args.train_every, args.train_every)),
        "maps": {case: compare_maps(kspace, masks[case],
                                    birdcage_maps(COILS, kspace.shape[-2:]) if case.startswith("brain") else None)
                 for case, kspace in cases.items()},
        "reconstructions": {case: score_case(kspace, masks[case], lams, args.iterations)
                            for case, kspace in cases.items()},
        "tuning": tuning,
    }
    if "ISMRMRD phantom 8x256²" in cases:
        tuning["phantom (oracle)"] = tune(cases["ISMRMRD phantom 8x256²"], masks["ISMRMRD phantom 8x256²"],
                                          args.iterations)
    write_results(args.out, results, render(results) + "\n")
    print(render(results))


if __name__ == "__main__":
    main(sys.argv[1:])
