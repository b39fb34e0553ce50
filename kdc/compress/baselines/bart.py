"""Compressed sensing with BART (Uecker et al.): ``bart pics`` with l1-wavelet regularisation, single coil.

The ``bart`` command-line tool (Debian package ``bart``) is called once per slice on CFL files in a temporary
directory. kdc's k-space is uncentred with an orthonormal FFT; BART's ``pics`` models centred k-space
(``fftshift(fft2(ifftshift(x)))``), so k-space goes in through :func:`kdc.mri.fft.uncentred_to_centred` and the image
comes back upright. ``pics`` scales the data itself before it iterates (so λ is relative to the data's scale) and
``-S`` undoes that scaling on the result. Sensitivity map: ones (one coil). ``-c`` constrains the image to be real,
as kdc's targets are and as its networks assume (they output the real part); on training slices of the demo set it
gave 0.3 dB more than the unconstrained magnitude. BART runs with one OpenMP thread by default
(``threads``): with its default of every core it took 6-9 s instead of 0.8 s per 128x128 slice on a loaded 2-core
machine, and a benchmark runs slices in parallel processes instead.

SENSE-CS (``sense-cs``, multi-coil data): ``bart ecalib -m 1`` estimates ESPIRiT maps from the calibration lines
(:mod:`kdc.mri.sensitivity` is kdc's own numpy ESPIRiT, compared with it in docs/results/sensitivities.md) and
``bart pics -R W:7:0:λ`` reconstructs one image from every coil; k-space goes in as ``(x, y, 1, coils)``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdc.compress.baselines import Baseline, reconstruct_slices, register_baseline
from kdc.data.metrics import psnr
from kdc.errors import KdcError
from kdc.mri.fft import uncentred_to_centred
from kdc.mri.sensitivity import direct_maps, espirit_calibrates, espirit_maps

#: Where SENSE-CS's coil sensitivities come from: ``bart ecalib -m 1`` or kdc's numpy ESPIRiT.
SENSE_MAPS = ("ecalib", "kdc")
#: λ values :func:`tune_lambda` tries (``pics -r``), on BART's own data scaling.
LAMBDA_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
BART_DIMS = 16  # every CFL header lists BART's 16 dimensions


def write_cfl(stem: Path, array: np.ndarray) -> None:
    """``stem.hdr`` (dimensions) and ``stem.cfl`` (complex64, column-major: the first axis varies fastest)."""
    array = np.asarray(array, dtype=np.complex64)
    dims = list(array.shape) + [1] * (BART_DIMS - array.ndim)
    stem.with_suffix(".hdr").write_text("# Dimensions\n" + " ".join(map(str, dims)) + "\n")
    array.ravel(order="F").tofile(stem.with_suffix(".cfl"))


def read_cfl(stem: Path) -> np.ndarray:
    """The array of a CFL pair, with BART's trailing singleton dimensions dropped."""
    lines = stem.with_suffix(".hdr").read_text().splitlines()
    try:
        dims = [int(d) for d in lines[lines.index("# Dimensions") + 1].split()]
    except (ValueError, IndexError):
        raise KdcError(f"{stem.with_suffix('.hdr')}: not a CFL header (no '# Dimensions' line)") from None
    while len(dims) > 2 and dims[-1] == 1:
        dims.pop()
    data = np.fromfile(stem.with_suffix(".cfl"), dtype=np.complex64)
    if data.size != np.prod(dims):
        raise KdcError(f"{stem.with_suffix('.cfl')}: {data.size} values, header says {dims}")
    return data.reshape(dims, order="F")


def bart_missing() -> str | None:
    """Why ``bart`` cannot run here, or ``None``."""
    if shutil.which("bart") is None:
        return "the bart command is not installed (Debian: apt-get install bart)"
    return None


def run_bart(folder: Path, label: str, threads: int, *arguments: str) -> None:
    """``bart ARGUMENTS`` in ``folder`` with ``threads`` OpenMP threads; a one-line error naming ``label``."""
    command = ["bart", *arguments]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise KdcError(f"{label}: {' '.join(command)} failed: {(done.stderr or done.stdout).strip()}")


def _check_settings(label: str, lam: float, iterations: int, threads: int) -> None:
    if lam < 0 or iterations < 1 or threads < 1:
        raise KdcError(f"{label}: expected λ >= 0, iterations >= 1 and threads >= 1, got λ={lam}, "
                       f"iterations={iterations}, threads={threads}")


@register_baseline("cs")
class BartCompressedSensing(Baseline):
    """``bart pics -S -c -l1 -r λ -i iterations`` on one coil with a sensitivity of one; a real image
    (``real=False``: no ``-c``, the magnitude of the complex image, for a virtual coil with measured phase)."""

    row = "CS (BART pics l1-wavelet)"

    def __init__(self, lam: float = 1e-3, iterations: int = 100, tuning: dict | None = None, threads: int = 1,
                 real: bool = True) -> None:
        _check_settings("CS", lam, iterations, threads)
        self.lam, self.iterations, self.tuning, self.threads, self.real = lam, iterations, tuning, threads, real

    @classmethod
    def missing(cls) -> str | None:
        return bart_missing()

    def settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"tool": "bart pics", "regularisation": "l1-wavelet", "lambda": self.lam,
                                    "iterations": self.iterations, "real_constraint": self.real, "coils": 1,
                                    "sensitivity": "ones", "threads": self.threads}
        return settings | ({"lambda_tuning": self.tuning} if self.tuning else {})

    def reconstruct(self, kspace: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.missing():
            raise KdcError(f"CS: {self.missing()}")
        with tempfile.TemporaryDirectory(prefix="kdc-bart-") as tmp:
            folder = Path(tmp)
            write_cfl(folder / "kspace", uncentred_to_centred(np.asarray(kspace) * mask))
            write_cfl(folder / "pattern", np.fft.fftshift(mask))
            write_cfl(folder / "sens", np.ones(kspace.shape, np.complex64))
            run_bart(folder, "CS", self.threads, "pics", "-d", "0", "-S", *(["-c"] if self.real else []), "-l1",
                     "-r", str(self.lam), "-i", str(self.iterations), "-p", "pattern", "kspace", "sens", "image")
            image = read_cfl(folder / "image")
            return (image.real if self.real else np.abs(image)).astype(np.float32)


@register_baseline("sense-cs")
class BartSenseCompressedSensing(Baseline):
    """SENSE-CS: ``bart ecalib -m 1`` (ESPIRiT maps from the calibration lines), then
    ``bart pics -S -R W:7:0:λ -i iterations`` on every coil; the magnitude of the SENSE image, which matches the
    root sum of squares of the fully sampled coils (fastMRI's target) since the maps have unit norm.
    ``maps="kdc"``: kdc's own ESPIRiT maps (:func:`kdc.mri.sensitivity.espirit_maps`) instead of ``ecalib``'s.
    Fewer centre lines than ESPIRiT's kernel (8x on 128 columns) get direct maps
    (:func:`kdc.mri.sensitivity.direct_maps`) either way."""

    row = "SENSE-CS (BART ecalib + pics l1-wavelet)"
    multicoil = True

    def __init__(self, lam: float = 1e-3, iterations: int = 100, tuning: dict | None = None,
                 threads: int = 1, maps: str = "ecalib") -> None:
        _check_settings("SENSE-CS", lam, iterations, threads)
        if maps not in SENSE_MAPS:
            raise KdcError(f"SENSE-CS: maps {maps!r}: expected one of {SENSE_MAPS}")
        self.lam, self.iterations, self.tuning, self.threads, self.maps = lam, iterations, tuning, threads, maps

    @classmethod
    def missing(cls) -> str | None:
        return bart_missing()

    def settings(self) -> dict[str, Any]:
        tool = "bart ecalib -m 1 + bart pics" if self.maps == "ecalib" else "kdc espirit_maps + bart pics"
        settings: dict[str, Any] = {"tool": tool, "regularisation": "l1-wavelet", "lambda": self.lam,
                                    "iterations": self.iterations, "sensitivity": f"ESPIRiT ({self.maps})",
                                    "threads": self.threads}
        return settings | ({"lambda_tuning": self.tuning} if self.tuning else {})

    def reconstruct(self, kspace: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Magnitude ``(H, W)`` from undersampled uncentred ``(C, H, W)`` k-space and its ``(H, W)`` mask."""
        if self.missing():
            raise KdcError(f"SENSE-CS: {self.missing()}")
        kspace = np.asarray(kspace)
        if kspace.ndim != 3:
            raise KdcError(f"SENSE-CS: expected (coils, H, W) k-space, got shape {kspace.shape}")
        with tempfile.TemporaryDirectory(prefix="kdc-bart-") as tmp:
            folder = Path(tmp)
            sampled = kspace * mask
            # BART's k-space is (x, y, z, coils), centred.
            write_cfl(folder / "kspace", np.moveaxis(uncentred_to_centred(sampled), 0, -1)[:, :, None])
            write_cfl(folder / "pattern", np.fft.fftshift(mask))
            calibrates = espirit_calibrates(sampled, mask)
            if calibrates and self.maps == "ecalib":
                run_bart(folder, "SENSE-CS", self.threads, "ecalib", "-m", "1", "kspace", "sens")
            else:  # kdc's ESPIRiT, or direct maps from fewer centre lines than ESPIRiT's kernel
                maps = espirit_maps if calibrates else direct_maps
                write_cfl(folder / "sens", np.moveaxis(maps(sampled, mask), 0, -1)[:, :, None])
            run_bart(folder, "SENSE-CS", self.threads, "pics", "-d", "0", "-S", "-R", f"W:7:0:{self.lam}",
                     "-i", str(self.iterations), "-p", "pattern", "kspace", "sens", "image")
            return np.abs(read_cfl(folder / "image")).astype(np.float32)


def tune_lambda(
    dataset: Sequence[dict], slices: int = 4, iterations: int = 100, grid: Sequence[float] = LAMBDA_GRID,
    baseline: type[BartCompressedSensing] | type[BartSenseCompressedSensing] = BartCompressedSensing, **options: Any,
) -> BartCompressedSensing | BartSenseCompressedSensing:
    """The ``baseline`` (CS or SENSE-CS) with the λ of ``grid`` that gives the best mean PSNR on ``slices`` evenly
    spaced slices of ``dataset`` — the training split: λ is never tuned on the slices it is scored on. ``options``
    go to the baseline (e.g. ``real``, ``maps``)."""
    indices = sorted({int(i) for i in np.linspace(0, len(dataset) - 1, min(slices, len(dataset)))})
    scores = {}
    for lam in grid:
        pairs = reconstruct_slices(baseline(lam, iterations, **options), dataset, indices)
        scores[lam] = float(np.mean([psnr(target, image) for _, target, image, _ in pairs]))
    best = max(scores, key=scores.__getitem__)
    tuning = {"split": "train", "slices": indices, "psnr_by_lambda": {f"{k:g}": round(v, 3) for k, v in scores.items()}}
    return baseline(best, iterations, tuning, **options)
