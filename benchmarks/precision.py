"""Inference precision on this CPU: f32, bf16 and int8 per runtime, for the KD student and the teacher, in one run.

For a shipped KD student and teacher (``--run``: ``pretrained:brain-4x``, trained at 256x256, by default;
``demo-4x``, trained at 128x128, before it existed) at 256x256 and 320x320 (``kdc export --size`` redraws the mask
at another size), every variant is exported with
``kdc export --precision`` and its own gates (validation slices of ``--data``) and then run the way the contract
says, through ``kdc.runtime.load``'s defaults:

| variant | file | how it is loaded |
|---|---|---|
| onnxruntime f32 | ``--precision f32`` .onnx (with the f32 rewrites) | default: onnxruntime CPU |
| onnxruntime int8 | ``--precision int8`` .onnx (QDQ, convolutions) | default: onnxruntime CPU |
| OpenVINO f32 | the f32 .onnx | ``engine="openvino"``: OpenVINO CPU, f32 hint |
| OpenVINO bf16 | ``--precision bf16 --format openvino`` .xml (DC kept f32) | default: OpenVINO CPU, bf16 hint (AMX) |
| OpenVINO int8 | ``--precision int8 --format openvino`` .xml (NNCF) | default: OpenVINO CPU, f32 hint for the rest |

- latency with ``kdc bench``'s runners, 2 threads, batch 1 and 8, each (size, batch) group timed round-robin
  (``--rounds`` x ``--iterations`` runs per variant after ``--warmup``) so that load drifting over minutes hits all;
  median and p90;
- PSNR on the 16 odd of 32 evenly spaced validation slices (the export gates' slices; int8 calibrates on the even
  ones) against the fully sampled images, minus PyTorch float32's on the same slices;
- per-node profile of the student at 256x256, batch 1: OpenVINO ``PERF_COUNT`` at bf16 and f32 and
  onnxruntime's profiler at f32, summed by node type and kernel;
- what data consistency at bf16 costs: PyTorch autocast bf16 (a model of OpenVINO's bf16 rounding) of the
  exported graph with its DC layer in float32 and in bf16, PSNR change on the same slices;
- the load average before and after (the machine is shared).

``--from-json FILE`` re-renders an earlier run's measurements and recomputes the DC section and the goals.

    .venv/bin/python benchmarks/precision.py [--data data/brain] [--rounds 3] [--iterations 10] [--warmup 3]
                                             [--out docs/results/precision]
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quantization import interleaved_latency  # noqa: E402  (the round-robin timing of benchmarks/quantization.py)

from kdc._io import write_json  # noqa: E402
from kdc.data.demo import split_images, validation_images  # noqa: E402
from kdc.data.metrics import psnr  # noqa: E402
from kdc.export import ExportError, export_model  # noqa: E402
from kdc.export.dccnn import resolve_mask  # noqa: E402
from kdc.export.lowerings import MaskedLowering  # noqa: E402
from kdc.models import load_checkpoint  # noqa: E402
from kdc.models.dc import DataConsistency  # noqa: E402
from kdc.mri.fft import fft2  # noqa: E402
from kdc.mri.layout import to_channels  # noqa: E402
from kdc.pretrained import resolve  # noqa: E402
from kdc.runtime import load  # noqa: E402
from kdc.runtime.bench import Settings, environment  # noqa: E402
from kdc.runtime.contract import encoded  # noqa: E402
from kdc.runtime.session import openvino_core  # noqa: E402

THREADS = 2
SIZES = ((256, 256), (320, 320))
BATCHES = (1, 8)
#: The shipped models measured, by role: ``--run`` picks the pretrained run.
MODELS = {"student": "pretrained:brain-4x-kd", "teacher": "pretrained:brain-4x-teacher"}
EVAL_SLICES = 32  # the export gates' 32 slices; the odd 16 are scored
#: (variant, --format, --precision of the file, runtime, precision asked of the runtime: None = the contract's)
VARIANTS = [
    ("onnxruntime f32", "onnx", "f32", "ort", None),
    ("onnxruntime int8", "onnx", "int8", "ort", None),
    ("OpenVINO f32", "onnx", "f32", "openvino", None),
    ("OpenVINO bf16", "openvino", "bf16", "openvino", None),
    ("OpenVINO int8", "openvino", "int8", "openvino", None),
]
#: DC lowerings compared (256², batch 1, f32 files): the 1-D one ``--dc auto`` picks for a column mask, and the 2-D one.
DC_LOWERINGS = ("masked", "matmul")
#: (variant, runtime, precision asked) each DC lowering is timed on.
DC_RUNTIMES = (("onnxruntime f32", "ort", "f32"), ("OpenVINO f32", "openvino", "f32"),
               ("OpenVINO bf16", "openvino", "bf16"))
#: Goals of issue 24 (2 threads, batch 1, 256x256).
GOAL_STUDENT_MS, GOAL_RATIO, GOAL_F32_MS = 6.0, 2.3, 25.0


def evaluation_set(data: str, size: tuple[int, int], mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(targets, kspace, mask input)`` of the odd 16 of 32 validation slices of ``data`` (``demo``: kdc's)."""
    images = validation_images(size, EVAL_SLICES) if data == "demo" else split_images(data, "val", size, EVAL_SLICES)
    targets = images[1::2].astype(np.float32)
    return targets, to_channels(fft2(targets) * mask), mask[None, None, :1].astype(np.float32).copy()


def export_variants(role: str, size: tuple[int, int], data: str, workdir: Path) -> dict[tuple[str, str], Any]:
    """``{(format, precision): path or the gate's error line}`` of one model at one size."""
    checkpoint = resolve(MODELS[role], "checkpoint")
    files: dict[tuple[str, str], Any] = {}
    for _, fmt, precision, _, _ in VARIANTS:
        if (fmt, precision) in files:
            continue
        out = workdir / f"{role}-{size[0]}-{precision}{'.xml' if fmt == 'openvino' else '.onnx'}"
        try:
            export_model(checkpoint, out, fmt=fmt, precision=precision, image_size=size,
                         calibration=None if data == "demo" else data)
            files[(fmt, precision)] = out
        except ExportError as err:
            files[(fmt, precision)] = str(err)
            print(f"{out.name}: {err}", file=sys.stderr, flush=True)
    return files


def score(role: str, size: tuple[int, int], data: str, files: dict[tuple[str, str], Any]) -> list[dict[str, Any]]:
    """One row per variant: its file, engine, backend and PSNR change against PyTorch float32."""
    checkpoint = resolve(MODELS[role], "checkpoint")
    model, meta = load_checkpoint(checkpoint)
    targets, kspace, mask_input = evaluation_set(data, size, resolve_mask(None, checkpoint.parent, meta, size))
    with torch.no_grad():
        reference = psnr(targets, model(torch.from_numpy(kspace), torch.from_numpy(mask_input)).numpy()[:, 0])
    rows = []
    for name, fmt, precision, runtime, asked in VARIANTS:
        row: dict[str, Any] = {"role": role, "size": list(size), "variant": name, "runtime": runtime,
                               "asked": asked, "psnr_fp32": reference}
        found = files[(fmt, precision)]
        if isinstance(found, str):
            rows.append({**row, "error": found})
            continue
        reconstructor = load(found, engine=runtime, threads=THREADS, precision=asked)
        images = np.concatenate([reconstructor.run({"kspace": kspace[i:i + 8], "mask": mask_input})["image"]
                                 for i in range(0, len(kspace), 8)])
        row.update(path=str(found), backend=reconstructor.backend, psnr=psnr(targets, images[:, 0]),
                   contract_precision=encoded(reconstructor.contract.precision))
        row["psnr_change"] = row["psnr"] - reference
        rows.append(row)
    return rows


class Float32Dc(DataConsistency):
    """A DC lowering run in float32 whatever the autocast around it."""

    def __init__(self, dc: torch.nn.Module) -> None:
        super().__init__(dc.image_channels)
        self.dc = dc

    def zero_filled(self, kspace: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return self.dc.zero_filled(kspace.float())

    def forward(self, image: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return self.dc(image.float(), kspace.float(), mask.float())


def dc_bf16_cost(role: str, size: tuple[int, int], data: str) -> dict[str, float]:
    """PSNR change (dB) against float32 of the exported graph (``masked`` DC) under bf16 autocast, with the DC
    layer in float32 (convolutions only in bf16) and in bf16."""
    checkpoint = resolve(MODELS[role], "checkpoint")
    model, meta = load_checkpoint(checkpoint)
    targets, kspace, mask_input = evaluation_set(data, size, resolve_mask(None, checkpoint.parent, meta, size))
    exported = copy.deepcopy(model)
    exported.dc = MaskedLowering(size)
    float_dc = copy.deepcopy(exported)
    float_dc.dc = Float32Dc(exported.dc)
    inputs = (torch.from_numpy(kspace), torch.from_numpy(mask_input))
    with torch.no_grad():
        reference = psnr(targets, model(*inputs).numpy()[:, 0])
        changes = {}
        for name, graph in (("dc_f32", float_dc), ("dc_bf16", exported)):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                changes[name] = psnr(targets, graph(*inputs).float().numpy()[:, 0]) - reference
    return changes


def profile_openvino(path: Path, precision: str, runs: int = 20) -> list[dict[str, Any]]:
    """Mean ms per run of each (node type, kernel) of OpenVINO's per-node counters at batch 1; convolutions are
    told apart by their channels (``Convolution 1->32``)."""
    config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": THREADS, "PERF_COUNT": True}
    model = openvino_core().read_model(str(path))
    channels = {op.get_friendly_name(): "{1}->{0}".format(*op.get_input_partial_shape(1).to_shape()[:2])
                for op in model.get_ops() if op.get_type_name() == "Convolution"}
    compiled = openvino_core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    feeds = load(path, engine="openvino", precision=precision).example_feeds(1)
    for _ in range(5):
        request.infer(feeds)
    total: dict[tuple[str, str], float] = collections.defaultdict(float)
    count: collections.Counter[tuple[str, str]] = collections.Counter()
    for _ in range(runs):
        request.infer(feeds)
        for node in request.get_profiling_info():
            if node.status.name == "EXECUTED":
                width = channels.get(node.node_name) if node.node_type == "Convolution" else None
                key = (f"{node.node_type} {width}" if width else node.node_type, node.exec_type)
                total[key] += node.real_time.total_seconds() * 1e3 / runs
                count[key] += 1
    return [{"node": k[0], "kernel": k[1], "count": count[k] // runs, "ms": v}
            for k, v in sorted(total.items(), key=lambda item: -item[1])]


def profile_ort(path: Path, workdir: Path, runs: int = 20) -> list[dict[str, Any]]:
    """Mean ms per run of each operator type of onnxruntime's profiler (CPU provider) at batch 1."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.enable_profiling = True
    options.profile_file_prefix = str(workdir / "ort-profile")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = load(path, engine="ort").example_feeds(1)
    warmup = 5
    for _ in range(warmup + runs):  # onnxruntime profiles every run, warm-up included
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    total: dict[str, float] = collections.defaultdict(float)
    count: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            total[op] += event["dur"] / 1e3
            count[op] += 1
    calls = warmup + runs
    return [{"node": op, "count": count[op] // calls, "ms": ms / calls}
            for op, ms in sorted(total.items(), key=lambda item: -item[1])]


def dc_lowering_latency(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    """Latency of student and teacher at 256², batch 1, with each of :data:`DC_LOWERINGS` on each of
    :data:`DC_RUNTIMES`, all timed round-robin in the same rounds."""
    cases = []
    for role in MODELS:
        for dc in DC_LOWERINGS:
            out = workdir / f"{role}-dc-{dc}.onnx"
            export_model(resolve(MODELS[role], "checkpoint"), out, dc=dc, image_size=(256, 256))
            cases += [{"role": role, "dc": dc, "variant": name, "path": out, "runtime": runtime, "asked": asked}
                      for name, runtime, asked in DC_RUNTIMES]
    settings = Settings(threads=THREADS, batch=1, warmup=args.warmup, iterations=args.iterations)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 asked of f32-validated files: measured here, not deployed
        latencies = interleaved_latency([(case["path"], case["runtime"], case["asked"]) for case in cases], settings,
                                        args.rounds)
    return [{**{key: value for key, value in case.items() if key != "path"}, "median_ms": latency["median_ms"],
             "p90_ms": latency["p90_ms"]} for case, latency in zip(cases, latencies)]


def fusion_summary(path: Path, precision: str = "bf16") -> list[dict[str, Any]]:
    """What OpenVINO's CPU plugin made of the exported graph at ``precision`` (its runtime model): per executed
    node type and runtime precision, how many there are and which source operations were fused into them."""
    compiled = openvino_core().compile_model(
        str(path), "CPU", {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": THREADS})
    model = openvino_core().read_model(str(path))
    kinds = {op.get_friendly_name(): op.get_type_name() for op in model.get_ops()}
    groups: dict[tuple[str, str, str], int] = collections.Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str)
        if layer in ("Input", "Output", "Const", "Reshape"):
            continue
        names = info["originalLayersNames"].astype(str).split(",")
        fused = collections.Counter(kinds[name] for name in names[1:] if name in kinds)
        label = " + ".join(f"{kind} x{n}" if n > 1 else kind for kind, n in sorted(fused.items())) or "-"
        groups[(layer, info["runtimePrecision"].astype(str), label)] += 1
    return [{"node": layer, "precision": prec, "fused": fused, "count": count}
            for (layer, prec, fused), count in sorted(groups.items(), key=lambda item: (-item[1], item[0]))]


def ort_int8_gemm_probe(n: int = 1024, runs: int = 5) -> dict[str, float]:
    """GOP/s of onnxruntime's CPU provider on one ``n``³ f32 ``MatMul`` and one u8 x s8 ``MatMulInteger`` (2
    threads): whether its int8 GEMM uses the matrix units, apart from any model."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    cases = {"f32": ("MatMul", TensorProto.FLOAT, TensorProto.FLOAT, rng.standard_normal((n, n), np.float32),
                     rng.standard_normal((n, n), np.float32), []),
             "u8s8": ("MatMulInteger", TensorProto.UINT8, TensorProto.INT32,
                      rng.integers(0, 255, (n, n), dtype=np.uint8), rng.integers(-127, 127, (n, n), dtype=np.int8),
                      [numpy_helper.from_array(np.array(3, np.uint8), "zero")])}
    rates = {}
    for name, (op, in_type, out_type, a, b, extra) in cases.items():
        inputs = ["a", "b"] + [t.name for t in extra]
        graph = helper.make_graph([helper.make_node(op, inputs, ["y"])], name,
                                  [helper.make_tensor_value_info("a", in_type, [n, n])],
                                  [helper.make_tensor_value_info("y", out_type, [n, n])],
                                  [numpy_helper.from_array(b, "b"), *extra])
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
                                       .SerializeToString(), options, providers=["CPUExecutionProvider"])
        session.run(None, {"a": a})
        times = []
        for _ in range(runs):
            tick = time.perf_counter()
            session.run(None, {"a": a})
            times.append(time.perf_counter() - tick)
        rates[name] = 2 * n**3 / float(np.median(times)) / 1e9
    return rates


def render(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        "# Inference precision: f32, bf16 and int8 per runtime (`benchmarks/precision.py`)",
        "",
        f"{env['cpu']}, {THREADS} threads, {', '.join(f'{k} {v}' for k, v in env['versions'].items() if v)}. "
        f"Load average before {report['load_before']}, after {report['load_after']} (1, 5, 15 min); every variant "
        "of one (size, batch) was timed round-robin in the same rounds, so load drifting over minutes hits all.",
        *([f"With a load average of {report['load_before'][0]:g}-{report['load_after'][0]:g} on {env['cpu_count']} "
           "CPUs each process gets a fraction of a core: the absolute goals (idle 2-core numbers) cannot be judged "
           "from such a run, the speed-ups between variants can."]
          if report["load_before"][0] > env["cpu_count"] / 2 else []),  # before: the load this run did not make
        f"Models: `{MODELS['student']}` (KD student, 49,285 parameters) and `{MODELS['teacher']}` (141,765), "
        f"exported at each size with `kdc export --precision`; PSNR on {EVAL_SLICES // 2} validation slices of "
        f"`{report['data']}` against the fully sampled images, change against PyTorch float32 on the same slices.",
        "",
        "| model | size | batch | variant | backend | median ms | p90 ms | PSNR change (dB) |",
        "|---|---|---:|---|---|---:|---:|---:|",
    ]
    for row in report["rows"]:
        for batch in BATCHES:
            latency = row.get("latency", {}).get(str(batch))
            timing = f"{latency['median_ms']:.1f} | {latency['p90_ms']:.1f}" if latency else "- | -"
            change = f"{row['psnr_change']:+.3f}" if "psnr_change" in row else f"refused: {row['error']}"
            lines.append(f"| {row['role']} | {row['size'][0]}² | {batch} | {row['variant']} | "
                         f"{row.get('backend', '-')} | {timing} | {change} |")
    lines += ["", "## Student / teacher", "", "| size | batch | variant | student ms | teacher ms | speed-up |",
              "|---|---:|---|---:|---:|---:|"]
    for ratio in report["ratios"]:
        lines.append(f"| {ratio['size']}² | {ratio['batch']} | {ratio['variant']} | {ratio['student_ms']:.1f} | "
                     f"{ratio['teacher_ms']:.1f} | {ratio['speedup']:.2f}x |")
    lines += ["", "## Goals (256², batch 1, 2 threads)", ""]
    loaded = max(report["load_before"][0], report["load_after"][0]) > env["cpu_count"]
    for goal in report["goals"]:
        verdict = "met" if goal["met"] else "not met"
        if goal.get("absolute") and loaded:  # an idle-machine number: a loaded run can neither meet nor miss it
            verdict = (f"not judgeable here (load average up to {max(report['load_before'][0], report['load_after'][0]):g} "
                       f"on {env['cpu_count']} CPUs; {verdict} as measured)")
        lines.append(f"- {goal['goal']}: {goal['measured']} — **{verdict}**")
    lines += ["", "## Data consistency at bf16 (256², PyTorch bf16 autocast of the exported graph)", "",
              "| model | convolutions bf16, DC f32 | everything bf16 |", "|---|---:|---:|"]
    lines += [f"| {role} | {cost['dc_f32']:+.3f} dB | {cost['dc_bf16']:+.3f} dB |"
              for role, cost in report["dc_bf16"].items()]
    lines += ["", "The OpenVINO bf16 rows above are `--format openvino` files, whose data consistency OpenVINO keeps at "
              "f32 (`precision.f32_nodes` in their contract, docs/export.md); an ONNX file run at bf16 has its DC at "
              "bf16 too (the right-hand column's loss)."]
    lines += ["", "## Where the student's time goes (256², batch 1)", ""]
    for name, rows in report["profiles"].items():
        total = sum(r["ms"] for r in rows)
        lines += [f"{name} (sum of node times {total:.1f} ms per run):", "", "| node | kernel | count | ms | share |",
                  "|---|---|---:|---:|---:|"]
        lines += [f"| {r['node']} | {r.get('kernel', '')} | {r['count']} | {r['ms']:.2f} | {r['ms'] / total:.0%} |"
                  for r in rows[:12]]
        lines.append("")
    if report.get("fusion"):
        lines += ["What OpenVINO's CPU plugin made of the bf16 student (its runtime model at bf16: executed nodes, "
                  "their precision, the source operations fused into them; `PRelu` is the LeakyReLU, `Add` a bias or "
                  "a residual addition). Bias and LeakyReLU are fused into every hidden convolution; a 32->1 "
                  "convolution with `Add x2` also carries its cascade's residual addition; the first cascade's "
                  "stays a separate `Eltwise` because its other input, the zero-filled image, is read again by "
                  "every DC step, so the addition cannot be done in place. The other `Eltwise` nodes are the DC's "
                  "additions of the zero-filled image and the k-space split; the `Reorder`s convert between the "
                  "convolutions' channels-last bf16 layout and the DC's planar f32/bf16 one.", "",
                  "| node | precision | fused into it | count |", "|---|---|---|---:|"]
        lines += [f"| {r['node']} | {r['precision']} | {r['fused']} | {r['count']} |" for r in report["fusion"]]
        lines.append("")
    if report.get("dc_lowerings"):
        lines += ["## Data consistency along one axis (`masked`) against the 2-D DFT (`matmul`) (256², batch 1)", "",
                  "Both exports are float32 files with a mask input; `--dc auto` picks `masked` for a column mask. "
                  "Timed round-robin in the same rounds (median ms).", "",
                  "| model | runtime | 1-D `masked` | 2-D `matmul` | saved |", "|---|---|---:|---:|---:|"]
        timed = {(r["role"], r["variant"], r["dc"]): r["median_ms"] for r in report["dc_lowerings"]}
        for role in MODELS:
            for name, *_ in DC_RUNTIMES:
                one, two = timed.get((role, name, "masked")), timed.get((role, name, "matmul"))
                if one and two:
                    lines.append(f"| {role} | {name} | {one:.1f} | {two:.1f} | {1 - one / two:.0%} |")
        lines.append("")
        for name, *_ in DC_RUNTIMES:
            ratios = [timed.get(("teacher", name, dc), 0) / timed[("student", name, dc)] for dc in DC_LOWERINGS
                      if timed.get(("student", name, dc))]
            if len(ratios) == len(DC_LOWERINGS) and all(ratios):
                lines.append(f"- student/teacher on {name}: " + ", ".join(
                    f"{ratio:.2f}x with `{dc}`" for dc, ratio in zip(DC_LOWERINGS, ratios)))
        lines.append("")
    if report.get("ort_int8_gemm"):
        rates = report["ort_int8_gemm"]
        lines += [f"onnxruntime's own int8 GEMM is fast here: a 1024³ u8 x s8 `MatMulInteger` runs at "
                  f"{rates['u8s8']:.0f} GOP/s against {rates['f32']:.0f} GOP/s for the f32 `MatMul` "
                  f"({rates['u8s8'] / rates['f32']:.1f}x, 2 threads, same load), so its int8 path does reach the "
                  "int8 units; the student's int8 file gains little on onnxruntime because its `QLinearConv`s (see "
                  "the onnxruntime int8 profile) are not much faster than its f32 `Conv`s. For bf16 onnxruntime's CPU "
                  "provider runs f32 (`kdc bench` says so in one line and names OpenVINO).", ""]
    return "\n".join(lines) + "\n"


def ratios_and_goals(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Student/teacher speed-ups per (size, batch, variant) and the issue's goals."""
    def median(role: str, size: int, batch: int, variant: str) -> float | None:
        row = next((r for r in rows if (r["role"], r["size"][0], r["variant"]) == (role, size, variant)), None)
        latency = (row or {}).get("latency", {}).get(str(batch))
        return latency["median_ms"] if latency else None

    ratios = []
    for size, _ in SIZES:
        for batch in BATCHES:
            for variant, *_ in VARIANTS:
                student, teacher = median("student", size, batch, variant), median("teacher", size, batch, variant)
                if student and teacher:
                    ratios.append({"size": size, "batch": batch, "variant": variant, "student_ms": student,
                                   "teacher_ms": teacher, "speedup": teacher / student})
    low = [(median("student", 256, 1, v), v) for v in ("OpenVINO bf16", "OpenVINO int8", "onnxruntime int8")]
    best_ms, best = min((ms, v) for ms, v in low if ms) if any(ms for ms, _ in low) else (float("nan"), "none")
    f32 = min(ms for ms in (median("student", 256, 1, "OpenVINO f32"), median("student", 256, 1, "onnxruntime f32"))
              if ms)
    fastest = {role: min((ms, v) for v, *_ in VARIANTS if (ms := median(role, 256, 1, v))) for role in MODELS}
    goals = [
        {"goal": f"KD student <= {GOAL_STUDENT_MS:g} ms at bf16 or int8 within its gate",
         "measured": f"{best_ms:.1f} ms ({best})", "met": best_ms <= GOAL_STUDENT_MS, "absolute": True},
        {"goal": f"student/teacher >= {GOAL_RATIO}x, each at its fastest gated variant",
         "measured": f"{fastest['teacher'][0] / fastest['student'][0]:.2f}x (teacher {fastest['teacher'][0]:.1f} ms "
                     f"{fastest['teacher'][1]}, student {fastest['student'][0]:.1f} ms {fastest['student'][1]})",
         "met": fastest["teacher"][0] / fastest["student"][0] >= GOAL_RATIO},
        {"goal": f"f32 student <= {GOAL_F32_MS:g} ms", "measured": f"{f32:.1f} ms", "met": f32 <= GOAL_F32_MS,
         "absolute": True},
    ]
    return ratios, goals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/brain" if Path("data/brain").is_dir() else "demo")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=10, help="timed runs per round at batch 1 (batch 8: 1/3)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[size for size, _ in SIZES],
                        help="square image sizes to measure")
    parser.add_argument("--run", default="brain-4x", help="the pretrained run whose kd and teacher are measured")
    parser.add_argument("--out", type=Path, default=Path("docs/results/precision"))
    parser.add_argument("--from-json", type=Path, help="re-render this earlier run instead of measuring")
    parser.add_argument("--profile", type=Path, nargs=2, metavar=("BF16", "F32"),
                        help="with --from-json: profile these student exports (.onnx at 256x256) anew")
    args = parser.parse_args()
    if args.from_json and "--run" in sys.argv:
        parser.error("--run: --from-json re-renders the run its file records")
    earlier = json.loads(args.from_json.read_text()) if args.from_json else None
    run = earlier.get("settings", {}).get("run", "demo-4x") if earlier else args.run  # runs before --run: demo-4x
    MODELS.update(student=f"pretrained:{run}-kd", teacher=f"pretrained:{run}-teacher")
    if earlier:
        report = earlier
        if args.profile:
            with tempfile.TemporaryDirectory(prefix="kdc-precision") as tmp:
                report["profiles"] = profiles(*args.profile, Path(tmp))
            report["profile_load_average"] = [round(x, 2) for x in os.getloadavg()]
    else:
        report = measure(args)
    report["dc_bf16"] = {role: dc_bf16_cost(role, (256, 256), report["data"]) for role in MODELS}
    report["ratios"], report["goals"] = ratios_and_goals(report["rows"])
    write_json(args.out.with_suffix(".json"), report)
    args.out.with_suffix(".md").write_text(render(report))
    print(render(report))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Export, score, time and profile every variant; the report without the DC section and the goals."""
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kdc-precision") as tmp:
        workdir = Path(tmp)
        for size in [(side, side) for side in args.sizes]:
            group = []
            for role in MODELS:
                group += score(role, size, args.data, export_variants(role, size, args.data, workdir))
            for batch in BATCHES:
                timed = [row for row in group if "path" in row]
                settings = Settings(threads=THREADS, batch=batch, warmup=args.warmup,
                                    iterations=args.iterations if batch == 1 else max(1, args.iterations // 3))
                latencies = interleaved_latency([(Path(row["path"]), row["runtime"], row["asked"]) for row in timed],
                                                settings, args.rounds)
                for row, latency in zip(timed, latencies):
                    row.setdefault("latency", {})[str(batch)] = latency
                print(f"timed {size} batch {batch}", file=sys.stderr, flush=True)
            rows += group
        student = {row["variant"]: Path(row["path"]) for row in rows
                   if row["role"] == "student" and row["size"][0] == 256 and "path" in row}
        profiled = profiles(student.get("OpenVINO bf16"), student.get("OpenVINO f32"), workdir,
                            student.get("onnxruntime int8"))
        fusion = fusion_summary(student["OpenVINO bf16"]) if "OpenVINO bf16" in student else []
        dc_lowerings = dc_lowering_latency(args, workdir)
    for row in rows:
        row.pop("path", None)
    return {"environment": environment(), "data": args.data, "load_before": load_before,
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "settings": {key: str(value) for key, value in vars(args).items()}, "rows": rows, "profiles": profiled,
            "fusion": fusion, "dc_lowerings": dc_lowerings, "ort_int8_gemm": ort_int8_gemm_probe()}


def profiles(bf16: Path | None, f32: Path | None, workdir: Path, int8: Path | None = None
             ) -> dict[str, list[dict[str, Any]]]:
    """Per-node profiles of the student's bf16 export on OpenVINO at bf16, of its f32 export on OpenVINO and
    onnxruntime at f32, and of its int8 ONNX export on onnxruntime (those that exist)."""
    found = {"OpenVINO bf16 (PERF_COUNT)": profile_openvino(bf16, "bf16")} if bf16 else {}
    if f32:
        found["OpenVINO f32 (PERF_COUNT)"] = profile_openvino(f32, "f32")
        found["onnxruntime f32 (profiler)"] = profile_ort(f32, workdir)
    if int8:
        found["onnxruntime int8 (profiler)"] = profile_ort(int8, workdir)
    return found


if __name__ == "__main__":
    main()
