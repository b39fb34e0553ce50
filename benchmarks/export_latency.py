"""Evidence for ``kdc export``: file size, parity and onnxruntime CPU latency per DC lowering.

Teacher and student (random weights: latency does not depend on them) at 256x256 and 640x368, 4x random mask.
Each artefact goes through ``export_model`` (parity gate on real validation slices). The DC share of a model's
latency is ``(t - t0) / t`` where ``t0`` is the same model with an identity DC (zero-filled input = real channel,
DC = no-op), which is not a reconstruction but times the CNN alone.

    .venv/bin/python benchmarks/export_latency.py [--repeats 20] [--out docs/results/export_latency]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from kdc.mri.masks import cartesian_mask
from kdc._io import write_results
from kdc.export import ExportError, export_model
from kdc.export.api import validation_kspace
from kdc.models.checkpoint import build_model

SIZES = [(256, 256), (640, 368)]
ROLES = ["teacher", "student"]
#: (label, --dc, --bake-mask)
VARIANTS = [("dft", "dft", False), ("matmul", "matmul", False), ("masked", "masked", False),
            ("masked, baked", "masked", True)]
THREADS = 2


class IdentityDC(nn.Module):
    """No data consistency: the CNN alone, for the DC-share baseline."""

    def zero_filled(self, kspace: torch.Tensor) -> torch.Tensor:
        return kspace[:, 0:1]

    def forward(self, image: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return image


def session(path: Path) -> tuple[ort.InferenceSession, float]:
    """An onnxruntime CPU session with ``THREADS`` intra-op threads, and its creation time (ms)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # CPU time = work done
    start = time.perf_counter()
    created = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return created, (time.perf_counter() - start) * 1e3


def interleaved_latency(runs: dict[str, tuple[Path, dict[str, np.ndarray]]], repeats: int) -> dict[str, dict]:
    """Time every graph round-robin (one run each per round), so load from other processes hits all alike.

    Per graph: session creation and first run, then median, p90, min and max wall time (ms) of ``repeats``
    rounds, and the median process CPU time (ms, all threads), which waiting for a busy CPU does not inflate.
    """
    sessions, stats = {}, {}
    for name, (path, feeds) in runs.items():
        sessions[name], created_ms = session(path)
        feeds = {i.name: feeds[i.name] for i in sessions[name].get_inputs()}  # identity graph may drop the mask
        tick = time.perf_counter()
        sessions[name].run(None, feeds)
        stats[name] = {"session_ms": created_ms, "first_ms": (time.perf_counter() - tick) * 1e3, "feeds": feeds}
    times: dict[str, list[float]] = {name: [] for name in runs}
    cpu_times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(repeats + 2):
        for name, sess in sessions.items():
            tick, cpu_tick = time.perf_counter(), time.process_time()
            sess.run(None, stats[name]["feeds"])
            if round_ >= 2:  # two warm-up rounds
                times[name].append((time.perf_counter() - tick) * 1e3)
                cpu_times[name].append((time.process_time() - cpu_tick) * 1e3)
    for name, values in times.items():
        values.sort()
        del stats[name]["feeds"]
        stats[name].update(median_ms=statistics.median(values), p90_ms=values[int(0.9 * (len(values) - 1))],
                           min_ms=values[0], max_ms=values[-1], cpu_ms=statistics.median(cpu_times[name]))
    return stats


def identity_graph(model: nn.Module, kspace: np.ndarray, mask: np.ndarray, path: Path) -> None:
    baseline = copy.deepcopy(model)
    baseline.dc = IdentityDC()
    example = (torch.from_numpy(kspace[:1]), torch.from_numpy(mask))
    torch.onnx.export(baseline, example, path, dynamo=True, opset_version=18, input_names=["kspace", "mask"],
                      output_names=["image"], verbose=False)


def measure(repeats: int, workdir: Path) -> list[dict]:
    rows = []
    for height, width in SIZES:
        mask = cartesian_mask("random", 4, (height, width))
        kspace = validation_kspace(None, (height, width), mask)
        feeds = {"kspace": kspace[:1], "mask": mask[None, None, :1].copy()}
        for role in ROLES:
            torch.manual_seed(0)
            model = build_model(role).eval()
            runs = {"identity": (workdir / f"{role}-{height}x{width}-identity.onnx", feeds)}
            identity_graph(model, kspace, feeds["mask"], runs["identity"][0])
            reports = {}
            for label, dc, bake in VARIANTS:
                path = workdir / f"{role}-{height}x{width}-{dc}-{bake}.onnx"
                try:
                    reports[label] = export_model(model, path, dc=dc, bake_mask=bake, mask=mask, role=role)
                    runs[label] = (path, feeds)
                except ExportError as err:
                    rows.append({"role": role, "size": [height, width], "lowering": label, "error": str(err)})
            stats = interleaved_latency(runs, repeats)
            base = stats["identity"]
            print(f"{role} {height}x{width} CNN alone: {base['median_ms']:.1f} ms", flush=True)
            for label, report in reports.items():
                timing = stats[label]
                share = (timing["median_ms"] - base["median_ms"]) / timing["median_ms"]
                cpu_share = (timing["cpu_ms"] - base["cpu_ms"]) / timing["cpu_ms"]
                rows.append({"role": role, "size": [height, width], "lowering": label, "cnn_only_ms": base["median_ms"],
                             "cnn_only_cpu_ms": base["cpu_ms"], **timing, "file_bytes": report.file_size,
                             "parity": report.parity_error, "dc_share": share, "dc_share_cpu": cpu_share})
                print(f"  {label}: {timing['median_ms']:.1f} ms, DC {100 * share:.1f} % (CPU time {100 * cpu_share:.1f} %), "
                      f"parity {report.parity_error:.1e}, {report.file_size / 1e6:.2f} MB", flush=True)
    return rows


def markdown(rows: list[dict], environment: dict) -> str:
    lines = [
        "# `kdc export`: file size, parity and onnxruntime CPU latency per DC lowering",
        "",
        "Produced by `benchmarks/export_latency.py`. Random-weight KD-MRI teacher (DC-CNN 5x5x32) and student "
        "(5x3x32), 4x random 1-D Cartesian mask, batch 1. Parity: max abs error against the PyTorch model on 4 real "
        "validation slices ([0, 1] images), onnxruntime CPU, batch 4 and 1. Latency: onnxruntime "
        f"{environment['onnxruntime']} CPU EP, {THREADS} intra-op threads, median of {environment['repeats']} runs "
        "after 2 warm-up runs, all graphs of a row group timed round-robin so that load from other processes hits "
        "them alike. DC share = (t - t_CNN) / t, t_CNN the same graph with an identity DC, from the wall-time medians and "
        "from the process CPU-time medians (thread spinning off, so CPU time is the work done; waiting for a core "
        "shared with other jobs does not count). If other jobs share the 2 cores (see the load average below), "
        "wall times include that load; CPU times and the CPU-time DC share are the stable numbers.",
        "",
        "| model | size | DC lowering | file (MB) | parity (max abs) | median (ms) | p90 (ms) | min (ms) "
        "| CNN alone (ms) | DC share | CPU time (ms) | CNN alone CPU (ms) | DC share (CPU) | session + first run (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        size = "x".join(map(str, r["size"]))
        if "error" in r:
            lines.append(f"| {r['role']} | {size} | {r['lowering']} | | {r['error']} |" + " |" * 9)
            continue
        lines.append(
            f"| {r['role']} | {size} | {r['lowering']} | {r['file_bytes'] / 1e6:.2f} | {r['parity']:.1e} "
            f"| {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['min_ms']:.1f} | {r['cnn_only_ms']:.1f} "
            f"| {100 * r['dc_share']:.1f} % | {r['cpu_ms']:.1f} | {r['cnn_only_cpu_ms']:.1f} "
            f"| {100 * r['dc_share_cpu']:.1f} % | {r['session_ms']:.0f} + {r['first_ms']:.0f} |"
        )
    lines += ["", "Environment: " + ", ".join(f"{k} {v}" for k, v in environment.items()), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("docs/results/export_latency"))
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    environment = {"onnxruntime": ort.__version__, "torch": torch.__version__, "python": platform.python_version(),
                   "cpu": platform.processor() or platform.machine(), "threads": THREADS, "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as workdir:
        rows = measure(args.repeats, Path(workdir))
    environment["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    write_results(args.out, {"environment": environment, "rows": rows}, markdown(rows, environment))
    print(f"wrote {args.out}.md and .json")


if __name__ == "__main__":
    main()
