"""Evidence for ``kdc export MODULE:CLASS``: fastMRI's own Unet and VarNet (random weights), exported at 320x320
(VarNet: 15 coils), their parity against PyTorch on onnxruntime and OpenVINO f32, file size, export time and the
latency of PyTorch eager, onnxruntime and OpenVINO, all on 2 threads, batch 1, in one process (same machine, same
load: the load average is recorded before and after).

    .venv/bin/python benchmarks/your_model.py [--repeats 5] [--models unet,varnet_small,varnet_large]
        [--out docs/results/your_model.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import kdc.runtime as rt
from kdc.data.demo import validation_images
from kdc.export import export_model
from kdc.export.architectures import ExportRequest, relative_error
from kdc.export.fastmri import MaskedVarNet, unet_feeds, varnet_feeds
from kdc.models.fastmri import NormalisedUnet
from kdc.models.user import load_user_model

SIZE = (320, 320)
COILS = 15
THREADS = 2
#: (label, MODULE:CLASS, constructor arguments, coils)
MODELS = {
    "unet": ("Unet(1, 1, 32, 4)", "fastmri.models:Unet",
             {"in_chans": 1, "out_chans": 1, "chans": 32, "num_pool_layers": 4}, None),
    "varnet_small": ("VarNet(4 cascades, chans 8, sens 4)", "fastmri.models:VarNet",
                     {"num_cascades": 4, "chans": 8, "sens_chans": 4}, COILS),
    "varnet_large": ("VarNet(12, 18, 8) (leaderboard)", "fastmri.models:VarNet",
                     {"num_cascades": 12, "chans": 18, "sens_chans": 8}, COILS),
}


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(key: str, repeats: int, workdir: Path) -> dict[str, object]:
    label, spec, init, coils = MODELS[key]
    torch.manual_seed(0)
    model = load_user_model(spec, init)
    weights = workdir / f"{key}.pt"
    torch.save(model.state_dict(), weights)
    images = validation_images(SIZE, 2)
    started = time.perf_counter()
    report = export_model(spec, workdir / f"{key}.onnx", init=init, weights=weights, image_size=SIZE, coils=coils,
                          images=images)
    export_seconds = time.perf_counter() - started
    request = ExportRequest(size=SIZE, fmt="onnx", images=images[:1], coils=coils)
    feeds = (unet_feeds if "unet" in key else varnet_feeds)(request)
    graph = (NormalisedUnet if "unet" in key else MaskedVarNet)(model).eval()
    inputs = [torch.from_numpy(value) for value in feeds.values()]
    with torch.inference_mode():
        reference = graph(*inputs).numpy()
    torch.set_num_threads(THREADS)
    ort_model = rt.load(report.path, threads=THREADS)
    ov_model = rt.load(report.path, engine="openvino", threads=THREADS)

    def eager() -> None:
        with torch.inference_mode():
            graph(*inputs)

    timings = {"PyTorch eager": median_seconds(eager, repeats),
               "onnxruntime": median_seconds(lambda: ort_model.run(feeds), repeats),
               "OpenVINO f32": median_seconds(lambda: ov_model.run(feeds), repeats)}
    name = ort_model.output_names[0]
    errors = {"onnxruntime": relative_error(ort_model.run(feeds)[name], reference),
              "OpenVINO f32": relative_error(ov_model.run(feeds)[name], reference)}
    size_mb = report.file_size / 1e6
    return {"label": label, "parameters": report.metadata["model"]["parameters"], "size_mb": size_mb,
            "export_s": export_seconds, "gate": report.metadata["parity"]["relative_l2_errors"], "errors": errors,
            "timings": timings}


def render(results: list[dict[str, object]], loads: tuple[str, str], repeats: int) -> str:
    lines = [
        "# Your model in: fastMRI's Unet and VarNet through `kdc export MODULE:CLASS`",
        "",
        "Made by `python benchmarks/your_model.py` (random weights; latency does not depend on them). Inputs at "
        f"{SIZE[0]}x{SIZE[1]}, VarNet with {COILS} coils (centred k-space, 4x random column mask), the U-Net on the "
        f"zero-filled magnitude with fastMRI's normalisation and clamp in the graph. {THREADS} threads, batch 1, "
        f"median of {repeats} runs after one warm-up, every runtime in the same process, one model after the other. "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs shared with other jobs: load average "
        f"{loads[0]} before, {loads[1]} after. torch {torch.__version__.split('+')[0]}.",
        "",
        "Parity: relative L2 error `||out - PyTorch|| / ||PyTorch||` of the exported file against the same graph in "
        "PyTorch (the export gate's metric, default tolerance 1e-3): *gate* on the export's parity slices (2 "
        "validation slices at batch 2 and 1, onnxruntime), *timed input* on the input that was timed (OpenVINO reads "
        "the same .onnx at f32).",
        "",
        "| model | params | .onnx | export | gate (ORT) | timed input ORT / OV "
        "| PyTorch eager | onnxruntime | OpenVINO f32 |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for result in results:
        gate = " / ".join(f"{value:.1e}" for value in result["gate"].values())  # the runtimes the gate ran
        errors = " / ".join(f"{value:.1e}" for value in result["errors"].values())
        timings = result["timings"]
        lines.append(
            f"| {result['label']} | {result['parameters'] / 1e6:.2f} M | {result['size_mb']:.1f} MB | "
            f"{result['export_s']:.0f} s | {gate} | {errors} | {timings['PyTorch eager']:.2f} s | "
            f"{timings['onnxruntime']:.2f} s | {timings['OpenVINO f32']:.2f} s |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", type=Path, default=Path("docs/results/your_model.md"))
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    before = " ".join(f"{value:.1f}" for value in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="kdc-your-model") as workdir:
        results = []
        for key in args.models.split(","):
            results.append(measure(key, args.repeats, Path(workdir)))
            print(results[-1], flush=True)
    after = " ".join(f"{value:.1f}" for value in os.getloadavg())
    args.out.write_text(render(results, (before, after), args.repeats))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
