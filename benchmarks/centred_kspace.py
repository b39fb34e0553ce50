"""Evidence for the centred-k-space rule: the README's scanner snippet on fastMRI-centred k-space, before and after.

A trained model (default: the KD student of ``make demo``, else its teacher) is exported to ONNX and fed the
validation slices of the shipped demo set (Colin27) as a scanner or a fastMRI file gives them: centred k-space,
``fftshift(fft2(ifftshift(image)))`` orthonormal, at scanner scale (maximum 1e-4, as fastMRI files), with a centred 4x mask. Rows:

- ``kdc (uncentred input)``: kdc's own convention, the reference;
- ``README, ifftshift only``: what ``kspace_channels(..., centred=True)`` did before (only the DC term moved);
- ``README, shift + origin phase``: what it does now;
- ``without normalise``: the same input without ``normalise=True`` (scanner scale reaches the model as it is).

PSNR/SSIM against the fully sampled slices (volume maximum 1), mean over slices; written to
docs/results/centred_kspace.{md,json}.

    .venv/bin/python benchmarks/centred_kspace.py [--run runs/demo] [--out docs/results/centred_kspace]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from kdc._io import write_results
from kdc.data import metrics
from kdc.data.demo import demo_root
from kdc.data.volumes import read_volume
from kdc.export import export_model
from kdc.mri.fft import fft2, fft2c
from kdc.mri.masks import cartesian_lines
from kdc.runtime import load, mask_columns
from kdc.runtime.tensors import kspace_channels

#: Image maximum of the scanner-scale input: fastMRI single-coil volumes peak at about 1e-4 (attribute `max`).
SCANNER_SCALE = 1e-4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/centred_kspace"))
    args = parser.parse_args()
    role = next(r for r in ("kd_student", "student", "teacher") if (args.run / f"{r}.pt").is_file())
    targets = np.concatenate([read_volume(path).target for path in sorted((demo_root() / "val").glob("*.h5"))])
    height, width = targets.shape[-2:]
    centred_lines = cartesian_lines("random", 4, width, seed=0)
    lines = np.fft.ifftshift(centred_lines)
    scanner = targets * SCANNER_SCALE
    centred = fft2c(scanner) * centred_lines
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / f"{role}.onnx"
        export_model(args.run, path, role=role)
        model = load(path, threads=2)
        mask = mask_columns(centred_lines, width, centred=True)
        rows = {
            "kdc (uncentred input)": model.reconstruct(kspace_channels(fft2(scanner) * lines), lines, normalise=True),
            "README, ifftshift only": model.reconstruct(kspace_channels(np.fft.ifftshift(centred, axes=(-2, -1))), mask,
                                                        normalise=True),
            "README, shift + origin phase": model.reconstruct(kspace_channels(centred, centred=True), mask,
                                                              normalise=True),
            "without normalise": model.reconstruct(kspace_channels(centred, centred=True), mask),
        }
    table = {name: {"psnr": metrics.psnr(targets, image[:, 0] / SCANNER_SCALE, maxval=1.0),
                    "ssim": metrics.ssim(targets, image[:, 0] / SCANNER_SCALE, maxval=1.0)}
             for name, image in rows.items()}
    report = {"run": str(args.run), "model": role, "slices": len(targets), "size": [height, width],
              "acceleration": 4, "scanner_scale": SCANNER_SCALE, "rows": table}
    lines_md = [f"# README scanner snippet on fastMRI-centred k-space ({role} of {args.run}, {len(targets)} demo "
                f"validation slices {height}x{width}, 4x)", "",
                "Re-run: `.venv/bin/python benchmarks/centred_kspace.py`", "",
                "| input path | PSNR (dB) | SSIM |", "|---|---:|---:|"]
    lines_md += [f"| {name} | {row['psnr']:.2f} | {row['ssim']:.4f} |" for name, row in table.items()]
    write_results(args.out, report, "\n".join(lines_md) + "\n")
    print("\n".join(lines_md))


if __name__ == "__main__":
    main()
