"""Post-training quantization of an exported graph, gated on PSNR against the fully sampled targets.

``--quantize int8``: onnxruntime static QDQ quantization (ONNX) or NNCF (OpenVINO IR) of the **convolutions only**,
calibrated on real validation slices; quantizing the DFT matrix products of the DC layers ruins accuracy
(TOOLCHAIN.md). ``--quantize fp16`` (ONNX only, for GPU execution providers): the CNN (convolutions and
activations) in float16, the DC layers and the graph inputs/outputs in float32.

A quantized model is not bit-close to PyTorch, so the max-abs parity gate checks the float32 graph before
quantization and this gate checks the quantized one: its PSNR against the fully sampled validation images may be at
most ``max_psnr_drop`` dB below the float32 PyTorch model's PSNR on the same slices.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdc.data.metrics import SSIM_WINDOW, psnr, ssim
from kdc.export.formats import OUTPUT_NAME, OpenVINOArtefact
from kdc.export.report import ExportError
from kdc.runtime.session import openvino_core

QUANTIZE_MODES = ("int8", "fp16")
#: Formats each mode can write.
QUANTIZE_FORMATS = {"int8": ("onnx", "openvino"), "fp16": ("onnx",)}
#: Validation slices drawn for quantization: even ones calibrate, odd ones are the PSNR gate's.
QUANTIZATION_SLICES = 32
#: ONNX ops kept in float16 by ``--quantize fp16``; everything else (the DC layers) stays float32.
FP16_OPS = ("Conv", "LeakyRelu")
Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class GateData:
    """Slices for quantization: calibration feeds (batch 1 each), gate feeds (batch N) and their targets."""

    calibration: list[Feeds]
    gate: Feeds
    targets: np.ndarray  # (N, H, W) fully sampled images
    reference: np.ndarray  # (N, 1, H, W) float32 PyTorch output on the gate feeds


def split_slices(feeds: Feeds, images: np.ndarray, reference: np.ndarray) -> GateData:
    """Even slices calibrate, odd slices gate (one slice does both)."""
    count = len(images)
    gate = slice(1, None, 2) if count > 1 else slice(None)
    calibration = [{**feeds, "kspace": feeds["kspace"][i : i + 1]} for i in range(0, count, 2)]
    return GateData(calibration, {**feeds, "kspace": feeds["kspace"][gate]}, images[gate], reference[gate])


def check_quantize(mode: str, fmt: str) -> None:
    """Refuse a mode or format that cannot be quantized before anything is exported."""
    if mode not in QUANTIZE_MODES:
        raise ExportError(f"unknown quantization {mode!r}: expected one of {list(QUANTIZE_MODES)}")
    if fmt not in QUANTIZE_FORMATS[mode]:
        hint = " (OpenVINO runs f16 with kdc.runtime.load(..., precision='f16'))" if fmt == "openvino" else ""
        raise ExportError(f"--quantize {mode} needs --format {' or '.join(QUANTIZE_FORMATS[mode])}, not {fmt}{hint}")


def quantize_onnx_int8(proto: Any, calibration: list[Feeds], workdir: Path) -> tuple[Any, dict[str, Any]]:
    """Static QDQ quantization of the Conv nodes, after ``quant_pre_process`` (shape inference, graph clean-up)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(calibration)

        def get_next(self) -> Feeds | None:
            return next(self.feeds, None)

    fp32, prepared, quantized = (workdir / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
    fp32.write_bytes(proto.SerializeToString())
    quant_pre_process(str(fp32), str(prepared))
    settings = {"quant_format": "QDQ", "op_types_to_quantize": ["Conv"], "per_channel": True,
                "activation_type": "QUInt8", "weight_type": "QInt8", "calibrate_method": "MinMax"}
    quantize_static(str(prepared), str(quantized), Reader(), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["Conv"], per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    model = onnx.load(str(quantized))
    settings["float_readers_restored"] = unquantize_non_conv_readers(model.graph)
    return model, {"engine": "onnxruntime.quantization", **settings}


def unquantize_non_conv_readers(graph: Any) -> int:
    """Let the non-convolution readers of a quantized convolution input (residual additions, DC) read float32.

    ``quantize_static`` makes every reader of a quantized tensor read its ``DequantizeLinear`` output. Convolution
    outputs keep it (onnxruntime fuses ``Q -> DQ`` around a convolution into ``QLinearConv``). Returns how many
    readers were moved back to the float32 tensor.
    """
    made_by = {output: node for node in graph.node for output in node.output}
    float_of = {node.output[0]: made_by[node.input[0]].input[0] for node in graph.node
                if node.op_type == "DequantizeLinear" and node.input[0] in made_by
                and made_by[node.input[0]].op_type == "QuantizeLinear"}
    conv_outputs = {output for node in graph.node if node.op_type == "Conv" for output in node.output}
    moved = 0
    for reader in (node for node in graph.node if node.op_type not in ("Conv", "QuantizeLinear", "DequantizeLinear")):
        for i, name in enumerate(reader.input):
            if name in float_of and float_of[name] not in conv_outputs:
                reader.input[i] = float_of[name]
                moved += 1
    return moved


def quantize_onnx_fp16(proto: Any) -> tuple[Any, dict[str, Any]]:
    """Convolutions and activations in float16; DC layers, inputs and outputs in float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    keep_fp32 = sorted({node.op_type for node in proto.graph.node} - set(FP16_OPS))
    converted = convert_float_to_float16(proto, keep_io_types=True, op_block_list=keep_fp32)
    return converted, {"engine": "onnxruntime.transformers.float16", "fp16_op_types": list(FP16_OPS),
                       "fp32_op_types": keep_fp32, "io_types": "float32"}


#: NNCF presets an OpenVINO int8 export tries, in order: symmetric activations (AMX's fastest int8 kernels: the 256²
#: brain-4x KD student 10.0 ms at 2 threads, 0.21 dB below float32), then asymmetric ones (11.9 ms, 0.03 dB).
OPENVINO_INT8_PRESETS = ("performance", "mixed")


def quantize_openvino_int8(model: Any, calibration: list[Feeds], preset: str) -> tuple[Any, dict[str, Any]]:
    """NNCF post-training quantization of the Convolution nodes (every other op type is ignored) with the NNCF
    ``preset`` (:data:`OPENVINO_INT8_PRESETS`)."""
    import nncf

    nncf.set_log_level(logging.ERROR)
    structural = {"Parameter", "Result", "Constant", "Convolution"}
    ignored = sorted({op.get_type_name() for op in model.get_ops()} - structural)
    # validate=False: not every ignored type need be present, and IgnoredScope(types=...) requires it (TOOLCHAIN.md).
    scope = nncf.IgnoredScope(types=ignored, validate=False)
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars
        quantized = nncf.quantize(model.clone(), nncf.Dataset(calibration), subset_size=len(calibration),
                                  ignored_scope=scope, preset=nncf.QuantizationPreset(preset))
    return quantized, {"engine": f"nncf {nncf.__version__}", "op_types_to_quantize": ["Convolution"],
                       "preset": preset, "ignored_types": ignored}


def quantize_artefact(
    artefact: Any, mode: str, data: GateData, workdir: Path, preset: str | None = None
) -> tuple[str, Callable[[Feeds], np.ndarray], dict[str, Any]]:
    """Replace the artefact's graph (what ``write`` writes) by its quantized version (``preset``: the NNCF preset of
    an OpenVINO graph, default the first of :data:`OPENVINO_INT8_PRESETS`).

    Returns the runtime that runs it, a function running it and the quantization settings.
    """
    if isinstance(artefact, OpenVINOArtefact):
        artefact.model, settings = quantize_openvino_int8(artefact.model, data.calibration,
                                                          preset or OPENVINO_INT8_PRESETS[0])
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2}
        compiled = openvino_core().compile_model(artefact.model, "CPU", config)
        settings["inference_precision"] = "f32"
        return artefact.ov_runtime, lambda feeds: compiled(feeds)[OUTPUT_NAME], settings
    import onnxruntime as ort

    if mode == "int8":
        artefact.proto, settings = quantize_onnx_int8(artefact.proto, data.calibration, workdir)
    else:
        artefact.proto, settings = quantize_onnx_fp16(artefact.proto)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(artefact.proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return artefact.runtime, lambda feeds: session.run([OUTPUT_NAME], feeds)[0], settings


def quality(targets: np.ndarray, images: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM (None below 7x7) of ``(N, 1, H, W)`` reconstructions against ``(N, H, W)`` targets."""
    fits_ssim = min(targets.shape[-2:]) >= SSIM_WINDOW
    return {"psnr": psnr(targets, images[:, 0]), "ssim": ssim(targets, images[:, 0]) if fits_ssim else None}


def gate_scores(output: np.ndarray, data: GateData, max_psnr_drop: float) -> dict[str, Any]:
    """PSNR/SSIM of ``output`` on the gate slices beside the float32 PyTorch output's, and the PSNR drop."""
    reference, measured = quality(data.targets, data.reference), quality(data.targets, output)
    return {
        "gate_slices": len(data.targets),
        "psnr_fp32": reference["psnr"],
        "psnr": measured["psnr"],
        "psnr_drop": reference["psnr"] - measured["psnr"],
        "ssim_fp32": reference["ssim"],
        "ssim": measured["ssim"],
        "max_psnr_drop": max_psnr_drop,
        "max_abs_error_vs_fp32": float(np.max(np.abs(output - data.reference))),
    }


def gate_failure(gate: str, label: str, scores: dict[str, Any], out: Path, tried: str = "") -> ExportError:
    """The one-line refusal of a failed PSNR gate (``tried``: what else was tried, in brackets)."""
    return ExportError(
        f"{gate} gate failed: {label} PSNR {scores['psnr']:.3f} dB vs float32 PyTorch {scores['psnr_fp32']:.3f} dB "
        f"on {scores['gate_slices']} validation slices, a drop of {scores['psnr_drop']:.3f} dB > --max-psnr-drop "
        f"{scores['max_psnr_drop']:g} dB{tried}; {out} not written"
    )


def psnr_gate(gate: str, label: str, output: np.ndarray, data: GateData, max_psnr_drop: float,
              out: Path) -> dict[str, Any]:
    """Score ``output`` on the gate slices against the float32 PyTorch output; refuse (``ExportError`` naming the
    ``gate`` and ``label``, e.g. ``quantization``/``int8``) if its PSNR is more than ``max_psnr_drop`` dB lower."""
    scores = gate_scores(output, data, max_psnr_drop)
    if not scores["psnr_drop"] <= max_psnr_drop:
        raise gate_failure(gate, label, scores, out)
    return scores


def quantize_and_gate(artefact: Any, mode: str, data: GateData, max_psnr_drop: float, out: Path,
                      workdir: Path) -> dict[str, Any]:
    """Quantize the artefact and refuse (``ExportError``) if its PSNR drops more than ``max_psnr_drop`` dB. An
    OpenVINO int8 graph is quantized with each of :data:`OPENVINO_INT8_PRESETS` in turn until one passes
    (``settings.refused``: the presets that did not, with their drops; None where the PSNR was not finite)."""
    openvino = isinstance(artefact, OpenVINOArtefact)
    original = artefact.model if openvino else None
    refused: list[dict[str, Any]] = []
    for preset in OPENVINO_INT8_PRESETS if openvino else (None,):
        if openvino:
            artefact.model = original
        runtime, run, settings = quantize_artefact(artefact, mode, data, workdir, preset)
        scores = gate_scores(run(data.gate), data, max_psnr_drop)
        if scores["psnr_drop"] <= max_psnr_drop:
            break
        drop = scores["psnr_drop"]
        refused.append({"preset": preset, "psnr_drop": float(drop) if np.isfinite(drop) else None})
    else:
        if not openvino:
            raise gate_failure("quantization", mode, scores, out)
        artefact.model = original
        earlier = "; ".join(f"{r['preset']} preset: drop {r['psnr_drop']:.3f} dB" if r["psnr_drop"] is not None
                            else f"{r['preset']} preset: no finite PSNR" for r in refused[:-1])
        raise gate_failure("quantization", f"{mode} (NNCF {preset} preset)", scores, out, f" ({earlier})")
    if openvino:
        settings["refused"] = refused
    return {"mode": mode, "settings": settings, "runtime": runtime, "calibration_slices": len(data.calibration),
            **scores}
