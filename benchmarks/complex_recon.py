"""Evidence for complex models: a short ``kdc distill --image complex`` on the shipped demo set (CPU), then
``kdc export`` per DC lowering with its parity against PyTorch, checked again through ``kdc.runtime``.

The demo volumes are written as fully sampled fastMRI files of complex images, each volume with a smooth random
phase (what ``kdc data build --complex`` does with its sources: :func:`kdc.mri.simulate.complex_coil_images`,
:func:`kdc.data.build.write_fastmri_volume`), and read back by kdc's own readers. The run is tiny (``--epochs``),
so its PSNR table proves the path, not the method. Writes ``OUT.json`` and ``OUT.md``.

    .venv/bin/python benchmarks/complex_recon.py [--epochs 1] [--out docs/results/complex_recon]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

import kdc.runtime as rt
from kdc.compress import recipe
from kdc.compress.evaluate import format_table
from kdc.data.build import write_fastmri_volume
from kdc.data.demo import demo_root
from kdc.data.slices import open_split
from kdc.data.volumes import read_volume
from kdc._io import write_results
from kdc.export import export_model
from kdc.models import build_model, load_checkpoint
from kdc.mri.simulate import complex_coil_images

LOWERINGS = [("masked", False), ("masked", True), ("matmul", False), ("dft", False)]
FORMATS = [("onnx", ".onnx"), ("openvino", ".xml")]


def complex_demo_set(root: Path) -> Path:
    """The demo set's volumes as fastMRI files of complex images (one smooth phase per volume) under ``root``."""
    for seed, path in enumerate(sorted(demo_root().glob("*/*.h5"))):
        (root / path.parent.name).mkdir(parents=True, exist_ok=True)
        images = complex_coil_images(read_volume(path).target, 1, seed)
        write_fastmri_volume(root / path.parent.name / path.name, images, multicoil=False)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("docs/results/complex_recon"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory(prefix="kdc-complex-") as work:
        data = complex_demo_set(Path(work) / "data")
        run = Path(work) / "run"
        config = recipe.RunConfig(str(data), str(run), 4, args.epochs, args.epochs, 4, image="complex")
        table = recipe.distill(config)
        val = open_split(data, "val", 4, image="complex")
        items = [val[i] for i in range(8)]
        kspace = np.stack([item["kspace"] for item in items])
        student = load_checkpoint(run / "kd_student.pt")[0]
        with torch.no_grad():
            reference = student(torch.from_numpy(kspace), torch.from_numpy(items[0]["mask"][None])).numpy()
        reference = reference[:, :1] + 1j * reference[:, 1:]
        parity = []
        for fmt, suffix in FORMATS:
            for lowering, bake in LOWERINGS:
                out = Path(work) / f"{lowering}{'_baked' if bake else ''}{suffix}"
                report = export_model(run, out, fmt=fmt, dc=lowering, bake_mask=bake)
                image = rt.load(out).reconstruct(kspace, None if bake else val.mask, output="complex")
                parity.append({"format": fmt, "lowering": lowering, "baked": bake, "gate_max_abs_error":
                               report.parity_error, "runtime_max_abs_error": float(np.abs(image - reference).max()),
                               "output_kind": report.metadata["output_kind"]})
    result = {
        "command": f"python benchmarks/complex_recon.py --epochs {args.epochs}",
        "data": "kdc demo set (80 train / 40 val slices, 128x128) as fastMRI files with a smooth random phase per "
                "volume, 4x",
        "parameters": {preset: sum(p.numel() for p in build_model(preset).parameters())
                       for preset in ("complex_teacher", "complex_student")},
        "epochs_per_stage": args.epochs,
        "table": table,
        "parity": parity,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }
    lines = [f"# Complex DC-CNN: distill, export, runtime ({result['command']})", "",
             f"Data: {result['data']}. Epochs per stage: {args.epochs} (CPU, a path check, not a quality result).",
             f"Parameters: complex teacher {result['parameters']['complex_teacher']:,}, complex student "
             f"{result['parameters']['complex_student']:,}.", "", "Validation (PSNR/SSIM on magnitude):", "",
             format_table(table), "",
             "Parity of the KD student's exports (max abs error on complex outputs; gate: 4 phased validation slices "
             "against PyTorch; runtime: 8 demo validation slices through `kdc.runtime`, `output=\"complex\"`):", "",
             "| format | lowering | baked | gate | runtime |", "|---|---|---|---:|---:|"]
    lines += [f"| {p['format']} | {p['lowering']} | {p['baked']} | {p['gate_max_abs_error']:.2e} | "
              f"{p['runtime_max_abs_error']:.2e} |" for p in parity]
    write_results(args.out, result, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
