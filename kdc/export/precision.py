"""``kdc export --precision``: the precision an artefact is validated at, and the runtime that runs it.

- ``f32``: the float32 graph, gated on parity (max abs error against PyTorch) as every export is.
- ``bf16``: the same float32 file, run by OpenVINO's CPU plugin with ``INFERENCE_PRECISION_HINT=bf16`` (AMX or
  AVX512-BF16 matrix units where the CPU has them); gated on PSNR: at most ``max_psnr_drop`` dB (default 0.05) below
  float32 PyTorch on the validation slices. onnxruntime's CPU provider has no bf16 kernels, so a bf16 file is
  validated, and by default run, on OpenVINO. An OpenVINO IR (``--format openvino``) keeps the data consistency at
  f32 (:func:`keep_dc_f32`): only the convolutions, their activations and the additions to their outputs run at
  bf16 (the 256x256 KD student: PSNR change +0.001 dB instead of -0.040 dB, no slower); an ONNX file cannot carry
  that mark, so OpenVINO runs all of it at bf16.
- ``int8``: ``--quantize int8`` (:mod:`kdc.export.quantize`), gated on PSNR (default 0.1 dB).

The contract's ``precision`` entry records the result (:func:`precision_entry`); :func:`kdc.runtime.load` reads it
to pick its default engine and precision hint.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from kdc.export.formats import OUTPUT_NAME, OpenVINOArtefact
from kdc.export.quantize import GateData, psnr_gate
from kdc.export.report import ExportError
from kdc.runtime.session import openvino_core

PRECISIONS = ("f32", "bf16", "int8")
#: Default ``--max-psnr-drop`` (dB) of each precision gated on PSNR, and of ``--quantize fp16``.
MAX_PSNR_DROP = {"bf16": 0.05, "int8": 0.1, "fp16": 0.1}
#: Formats whose files OpenVINO runs at bf16.
BF16_FORMATS = ("onnx", "openvino")
#: The runtime (:data:`kdc.runtime.session.ENGINES`, or ``torch``) that runs each format's file by default.
FORMAT_ENGINES = {"onnx": "ort", "openvino": "openvino", "torchscript": "torch", "pt2": "torch"}
#: Keys of a PSNR gate's result (:func:`kdc.export.quantize.psnr_gate`) copied into the ``precision`` entry.
GATE_KEYS = ("gate_slices", "psnr_fp32", "psnr", "psnr_drop", "ssim_fp32", "ssim", "max_psnr_drop",
             "max_abs_error_vs_fp32")


def resolve_precision(precision: str, quantize: str | None, fmt: str, max_psnr_drop: float | None
                      ) -> tuple[str, str | None, float]:
    """``(precision, quantize mode, PSNR gate)`` of an export: ``--precision int8`` is ``--quantize int8``, and
    ``--quantize`` alone names the precision. Refuses contradictions and formats that cannot run the precision."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown --precision {precision!r}: expected one of {list(PRECISIONS)}")
    if precision == "int8" and quantize in (None, "int8"):
        quantize = "int8"
    elif precision != "f32" and quantize is not None:
        raise ExportError(f"--precision {precision} and --quantize {quantize} contradict each other: give one")
    elif quantize is not None:
        precision = quantize
    if precision == "bf16" and fmt not in BF16_FORMATS:
        raise ExportError(f"--precision bf16 runs on OpenVINO: it needs --format {' or '.join(BF16_FORMATS)}, "
                          f"not {fmt}")
    if max_psnr_drop is not None and not math.isfinite(max_psnr_drop):
        raise ExportError(f"--max-psnr-drop must be a finite number of dB, got {max_psnr_drop}")
    return precision, quantize, MAX_PSNR_DROP.get(precision, 0.0) if max_psnr_drop is None else max_psnr_drop


#: IR node types of the CNN, which run at bf16; every other computing node (the data consistency, the k-space split)
#: is kept at f32 by :func:`keep_dc_f32`, as are the additions to a convolution's output (bias, residual).
CNN_NODE_TYPES = ("Convolution", "PRelu")
#: IR layer types that compute nothing.
NON_COMPUTING = ("Parameter", "Result", "Const")


def keep_dc_f32(model: Any, workdir: Path) -> tuple[Any, int]:
    """``model`` (an ``openvino.Model``) with every computing node outside the CNN marked ``precise`` (OpenVINO's
    ``ov::disable_fp16_compression``, which the CPU plugin's bf16 hint honours: the node runs at f32), and the number
    of nodes marked. OpenVINO's Python API cannot set that attribute, so the model goes through its IR: saved, marked
    in the XML kdc just wrote, read back; the IR written from it keeps the marks."""
    import openvino as ov

    staged = workdir / "keep-f32" / "model.xml"
    staged.parent.mkdir(exist_ok=True)
    ov.save_model(model, staged, compress_to_fp16=False)
    tree = ElementTree.parse(staged)  # kdc's own file, just written
    layers = {layer.get("id"): layer for layer in tree.getroot().iter("layer")}
    fed_by_cnn = {edge.get("to-layer") for edge in tree.getroot().iter("edge")
                  if layers[edge.get("from-layer")].get("type") == "Convolution"}
    marked = 0
    for layer_id, layer in layers.items():
        if layer.get("type") in CNN_NODE_TYPES + NON_COMPUTING or layer_id in fed_by_cnn:
            continue
        info = layer.find("rt_info")
        if info is None:
            info = ElementTree.SubElement(layer, "rt_info")
        ElementTree.SubElement(info, "attribute", name="precise", version="0")
        marked += 1
    tree.write(staged)
    return openvino_core().read_model(str(staged)), marked


def bf16_gate(artefact: Any, data: GateData, max_psnr_drop: float, out: Path, workdir: Path) -> dict[str, Any]:
    """Run the checked float32 graph on OpenVINO's CPU at bf16 and refuse it if its PSNR drops more than
    ``max_psnr_drop`` dB; returns the gate's measurements and the runtime that made them. An OpenVINO IR's data
    consistency is kept at f32 first (:func:`keep_dc_f32`; the IR written is the one gated)."""
    import openvino as ov

    kept_f32 = 0
    if isinstance(artefact, OpenVINOArtefact):
        artefact.model, kept_f32 = keep_dc_f32(artefact.model, workdir)
        model = artefact.model
    else:
        staged = workdir / "bf16.onnx"
        staged.write_bytes(artefact.proto.SerializeToString())
        model = openvino_core().read_model(str(staged))
    config = {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": 2}
    compiled = openvino_core().compile_model(model, "CPU", config)
    actual = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    runtime = f"openvino {ov.get_version().split('-')[0]} CPU {actual}"
    if actual != "bf16":
        raise ExportError(f"--precision bf16: this CPU has no bf16 support (OpenVINO runs {actual}); export at f32 "
                          f"or int8 here; {out} not written")
    return {"runtime": runtime, "f32_nodes": kept_f32,
            **psnr_gate("precision", f"bf16 ({runtime})", compiled(data.gate)[OUTPUT_NAME], data, max_psnr_drop, out)}


def precision_entry(precision: str, fmt: str, parity: dict[str, Any], gate: dict[str, Any] | None,
                    rewrites: list[str]) -> dict[str, Any]:
    """The contract's ``precision``: its ``name``, the ``engine`` and ``inference_precision`` hint that run it as
    validated, the ``runtime`` that validated it, the ``gate`` (``"parity"`` for f32, else the PSNR gate's
    results), the speed ``rewrites`` of the graph (:mod:`kdc.export.rewrites`) and ``f32_nodes``, how many nodes
    of a bf16 IR are marked to run at f32 (its data consistency, :func:`keep_dc_f32`; 0 for an ONNX file)."""
    return {
        "name": precision,
        "engine": "openvino" if precision == "bf16" else FORMAT_ENGINES[fmt],
        "inference_precision": "bf16" if precision == "bf16" else "f32",
        "runtime": parity["runtime"] if gate is None else gate["runtime"],
        "gate": "parity" if gate is None else {key: gate[key] for key in GATE_KEYS},
        "rewrites": rewrites,
        **({"f32_nodes": gate["f32_nodes"]} if gate is not None and "f32_nodes" in gate else {}),
    }
