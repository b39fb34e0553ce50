"""The FFT lowering of export, dense against factored (:mod:`kdc.export.dft`), on the models whose FFTs run on every
coil's full k-space: kdc's SENSE VarNet student (preset ``multicoil_student``) and fastMRI's ``VarNet(4, 8, 4)``,
random weights (latency does not depend on them).

Each model is exported twice at 320x320 with a dynamic coil count: once with every DFT a dense ``N x N`` product
(kdc's lowering before :mod:`kdc.export.dft` factored it: :func:`kdc.export.dft.factors` patched to ``None``), once as
kdc exports it now. Both files run in ONNX Runtime (a plain CPU session, threads not spinning) and OpenVINO (``kdc.runtime``, f32,
reading the same ``.onnx``) with 4 and 15
coils, batch 1, 2 threads, in one process and round-robin (every configuration once per round), so a change of
load hits all of them; the median per configuration is reported with the relative L2 error against PyTorch on the
timed input. The load average is recorded before and after.

    nice -n 10 python benchmarks/fft_lowering.py [--repeats 5] [--size 320 320] [--models sense_student,fastmri_varnet]
        [--out docs/results/fft_lowering]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

import kdc.export.dft
import kdc.runtime as rt
from kdc._io import write_results
from kdc.data.demo import validation_images
from kdc.export import export_model
from kdc.export.architectures import ExportRequest, relative_error
from kdc.export.fastmri import MaskedVarNet, patched, varnet_feeds
from kdc.models import build_model
from kdc.models.user import load_user_model

COILS = (4, 15)
THREADS = 2
ENGINES = {"ort": "ONNX Runtime", "openvino": "OpenVINO f32"}
LOWERINGS = ("dense", "factored")
FASTMRI_VARNET = ("fastmri.models:VarNet", {"num_cascades": 4, "chans": 8, "sens_chans": 4})


def lowering(name: str) -> contextlib.AbstractContextManager[None]:
    """``dense``: every DFT as one ``N x N`` product; ``factored``: kdc's lowering as it is."""
    return patched(kdc.export.dft, "factors", lambda n: None) if name == "dense" else contextlib.nullcontext()


def export(key: str, name: str, workdir: Path, images: np.ndarray, size: tuple[int, int], reuse: Path | None = None
           ) -> tuple[Path, torch.nn.Module, float | None]:
    """The ``.onnx`` of model ``key`` with lowering ``name`` (``reuse``: a file an earlier run exported, not exported
    again), the PyTorch graph it was checked against, the export's seconds."""
    torch.manual_seed(0)
    out = reuse or workdir / f"{key}-{name}.onnx"
    started = time.perf_counter()
    with lowering(name):
        if key == "sense_student":
            model = build_model("multicoil_student").eval()
            if reuse is None:
                export_model(model, out, image_size=size, role="student", images=images)
            graph = model
        else:
            spec, init = FASTMRI_VARNET
            model = load_user_model(spec, init)
            weights = workdir / "varnet.pt"
            torch.save(model.state_dict(), weights)
            if reuse is None:
                export_model(spec, out, init=init, weights=weights, image_size=size, images=images)
            graph = MaskedVarNet(model).eval()
    return out, graph, None if reuse else time.perf_counter() - started


class OrtSession:
    """A plain ONNX Runtime CPU session on ``THREADS`` threads whose idle threads sleep instead of spinning, so that
    the process's CPU time counts the work alone; ``run`` as :class:`kdc.runtime.Reconstructor`'s."""

    def __init__(self, path: Path) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.output_names = [output.name for output in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))


def measure(keys: list[str], repeats: int, workdir: Path, size: tuple[int, int], dense: Path | None
            ) -> dict[str, dict]:
    images = validation_images(size, 2)
    results: dict[str, dict] = {}
    runs = {}  # (key, lowering, engine, coils) -> (session, feeds)
    for key in keys:
        feeds = {coils: varnet_feeds(ExportRequest(size=size, fmt="onnx", images=images[:1], coils=coils))
                 for coils in COILS}
        results[key] = {"export_s": {}, "file_mb": {}, "relative_l2": {}, "median_ms": {}, "median_cpu_ms": {}}
        graph = None
        for name in LOWERINGS:
            path, graph, seconds = export(key, name, workdir, images, size, dense if name == "dense" else None)
            results[key]["export_s"][name] = seconds
            print(f"exported {key} {name} in {seconds} s", flush=True)
            results[key]["file_mb"][name] = path.stat().st_size / 1e6
            for engine in ENGINES:
                session = OrtSession(path) if engine == "ort" else rt.load(path, engine=engine, threads=THREADS)
                for coils in COILS:
                    runs[key, name, engine, coils] = (session, feeds[coils])
        results[key]["parameters"] = sum(p.numel() for p in graph.parameters())
        torch.set_num_threads(THREADS)
        for coils in COILS:
            with torch.inference_mode():
                reference = graph(*(torch.from_numpy(value) for value in feeds[coils].values())).numpy()
            for name in LOWERINGS:
                for engine in ENGINES:
                    session, feed = runs[key, name, engine, coils]
                    got = session.run(feed)[session.output_names[0]]  # also the warm-up
                    results[key]["relative_l2"][f"{name} {engine} {coils}"] = relative_error(got, reference)
    times: dict[tuple, list[float]] = {config: [] for config in runs}
    cpu_times: dict[tuple, list[float]] = {config: [] for config in runs}
    for round_ in range(repeats):
        print(f"round {round_ + 1} of {repeats}", flush=True)
        for config, (session, feed) in runs.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            session.run(feed)
            times[config].append(1000 * (time.perf_counter() - started))
            cpu_times[config].append(1000 * (time.process_time() - cpu_started))
    for (key, name, engine, coils), values in times.items():
        results[key]["median_ms"][f"{name} {engine} {coils}"] = statistics.median(values)
        results[key]["median_cpu_ms"][f"{name} {engine} {coils}"] = statistics.median(cpu_times[key, name, engine, coils])
    return results


LABELS = {"sense_student": "SENSE VarNet student (`multicoil_student`)", "fastmri_varnet": "fastMRI VarNet(4, 8, 4)"}


def seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} s"


def render(data: dict) -> str:
    lines = [
        "# FFT lowering: dense against factored DFT matrix products",
        "",
        f"Made by `python benchmarks/fft_lowering.py --repeats {data['repeats']}` (random weights). Exported at "
        f"{data['size'][0]}x{data['size'][1]} with a dynamic coil count, timed with {' and '.join(map(str, COILS))} coils (centred "
        f"k-space, 4x random column mask), batch 1, {THREADS} threads, median of {data['repeats']} round-robin runs "
        "after one warm-up, every file and runtime in one process. *dense*: every DFT one `N x N` product (kdc's "
        "lowering before `kdc.export.dft`); *factored*: four-step products, `N = N1 x N2` "
        f"({data['factors']}). {data['machine']}, {os.cpu_count()} CPUs, load "
        f"average (1, 5, 15 min) {data['load_before']} before, {data['load_after']} after. torch {data['torch']}. "
        "Absolute wall times are those of this load: read the ratios. *CPU* is the process's CPU time per run "
        "(both threads; ONNX Runtime's idle threads set to sleep rather than spin): the work, less sensitive to the "
        "share of the cores the process got than the wall time.",
        "",
        "| model | runtime | coils | wall dense | wall factored | speed-up | CPU dense | CPU factored | CPU ratio "
        "| rel. L2 vs PyTorch dense / factored |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, result in data["models"].items():
        for engine, engine_label in ENGINES.items():
            for coils in COILS:
                dense, factored = (result["median_ms"][f"{name} {engine} {coils}"] for name in LOWERINGS)
                cpu_dense, cpu_factored = (result["median_cpu_ms"][f"{name} {engine} {coils}"] for name in LOWERINGS)
                errors = " / ".join(f"{result['relative_l2'][f'{name} {engine} {coils}']:.1e}" for name in LOWERINGS)
                lines.append(f"| {LABELS[key]} | {engine_label} | {coils} | {dense:.0f} ms | {factored:.0f} ms | "
                             f"{dense / factored:.2f}x | {cpu_dense:.0f} ms | {cpu_factored:.0f} ms | "
                             f"{cpu_dense / cpu_factored:.2f}x | {errors} |")
    lines += ["", "Export (dynamo, parity gate included; – where reused from an earlier run) dense / factored: " + "; ".join(
        f"{LABELS[key]} {seconds(result['export_s']['dense'])} / {seconds(result['export_s']['factored'])}, "
        f"{result['file_mb']['dense']:.2f} MB / {result['file_mb']['factored']:.2f} MB"
        for key, result in data["models"].items()) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default=",".join(LABELS))
    parser.add_argument("--size", type=int, nargs=2, default=(320, 320), metavar=("H", "W"))
    parser.add_argument("--dense", type=Path, help="a dense .onnx of the one model in --models that an earlier run "
                        "exported (same seed): timed again, not exported again")
    parser.add_argument("--out", type=Path, default=Path("docs/results/fft_lowering"))
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    before = " ".join(f"{value:.1f}" for value in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="kdc-fft-lowering-") as workdir:
        models = measure(args.models.split(","), args.repeats, Path(workdir), tuple(args.size), args.dense)
    factors = ", ".join(f"{n} = {' x '.join(map(str, kdc.export.dft.factors(n) or (n,)))}" for n in sorted(set(args.size)))
    data = {"repeats": args.repeats, "size": list(args.size), "factors": factors, "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__.split("+")[0], "load_before": before,
            "load_after": " ".join(f"{value:.1f}" for value in os.getloadavg()), "models": models}
    write_results(args.out, data, render(data))
    print(render(data))


if __name__ == "__main__":
    main()
