"""``kdc export``: torch and the runtimes are imported only when the command runs.

Register it wrapped in :func:`kdc._cli.user_errors` (as :mod:`kdc.cli` does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kdc.pretrained import resolve

def export(
    source: Annotated[Path, typer.Argument(
        help="Run directory or checkpoint (.pt) to export, a shipped pretrained:<run>-<role> (or pretrained:<run>), "
             "or your own model as MODULE:CLASS (e.g. fastmri.models:VarNet; see --init, --weights).")],
    out: Annotated[Path, typer.Option(help="File to write: .onnx, .xml (OpenVINO IR), .pt/.ts (TorchScript), .pt2.")],
    format: Annotated[str | None, typer.Option(
        "--format", help="onnx, openvino, torchscript or pt2.  [default: from the --out suffix]",
        show_default=False)] = None,
    dc: Annotated[str, typer.Option(help="DC lowering: auto, dft, matmul or masked.")] = "auto",
    bake_mask: Annotated[bool, typer.Option(help="Bake the mask in (no 'mask' input).")] = False,
    model: Annotated[str | None, typer.Option(
        help="Checkpoint of a run directory: kd_student, student or teacher.  [default: the first of these the run "
             "has]", show_default=False)] = None,
    size: Annotated[tuple[int, int] | None, typer.Option(help="Image size H W (default: the trained size).")] = None,
    mask: Annotated[Path | None, typer.Option(help="Mask .npy (default: RUN/mask.npy or drawn as in training).")] = None,
    tolerance: Annotated[float | None, typer.Option(
        help="Parity gate against PyTorch: max abs error for kdc's models [default: 1e-4], relative L2 error for "
             "MODULE:CLASS models [default: 1e-3].", show_default=False)] = None,
    quantize: Annotated[
        str | None, typer.Option(help="int8 (onnx, openvino: convolutions only) or fp16 (onnx, for GPUs).")
    ] = None,
    precision: Annotated[str, typer.Option(
        help="Precision to validate and record: f32, bf16 (OpenVINO's bf16 hint, PSNR-gated) or int8 (= --quantize "
             "int8).")] = "f32",
    max_psnr_drop: Annotated[float | None, typer.Option(
        help="PSNR gate of bf16/int8/fp16: max drop (dB) against PyTorch on validation slices.  [default: 0.05 for "
             "bf16, 0.1 for int8 and fp16]", show_default=False)] = None,
    init: Annotated[str | None, typer.Option(
        help="MODULE:CLASS constructor arguments: a JSON object or a file holding one.")] = None,
    weights: Annotated[Path | None, typer.Option(
        help="MODULE:CLASS state dict (.pt/.pth/.ckpt, loaded with weights_only; a Lightning 'model.' prefix is "
             "stripped).  [default: the untrained model]", show_default=False)] = None,
    coils: Annotated[str | None, typer.Option(
        help="Coils of a multi-coil model's k-space input: N, or dynamic.  [default: dynamic]",
        show_default=False)] = None,
    user_class: Annotated[list[str] | None, typer.Option(
        help="MODULE:CLASS of a user's model a run's checkpoint may be rebuilt from (repeatable): importing it runs "
             "that module's code, so a checkpoint alone never does.")] = None,
    calibration: Annotated[Path | None, typer.Option(
        help="Dataset directory (ROOT/val/*.h5) whose slices calibrate --quantize and feed both gates "
             "[default: kdc's shipped validation slices].", show_default=False)] = None,
) -> None:
    """Export a trained model as a self-contained file that runs without kdc's model code."""
    from kdc.export.api import export_model
    from kdc.models.user import is_user_spec

    spec = str(source)
    report = export_model(
        spec if is_user_spec(spec) else resolve(source, "checkpoint"), out, fmt=format, dc=dc, bake_mask=bake_mask,
        image_size=size, mask=mask,
        tolerance=tolerance, role=model, quantize=quantize, max_psnr_drop=max_psnr_drop, calibration=calibration,
        init=init, weights=weights, coils=parse_coils(coils), precision=precision, trusted=user_class or (),
    )
    written = report.metadata  # the contract's JSON once: the gate's details are not typed fields
    validated = written["precision"]
    quantization = written.get("quantization")
    metric = {"max_abs": "max abs error", "relative_l2": "relative L2 error"}[
        written["parity"].get("metric", "max_abs")]
    typer.echo(
        f"wrote {report.path} ({report.format}, dc={report.dc}, {report.file_size / 1e6:.2f} MB, "
        f"{'float32 graph ' if quantization else ''}parity {metric} {report.parity_error:.2e})"
    )
    if isinstance(gate := validated["gate"], dict):
        engine = {"ort": "onnxruntime", "openvino": "OpenVINO"}.get(validated["engine"], validated["engine"])
        typer.echo(
            f"{validated['name']} on {validated['runtime']}: PSNR {gate['psnr']:.3f} dB vs float32 "
            f"{gate['psnr_fp32']:.3f} dB (drop {gate['psnr_drop']:.3f} dB, gate {gate['max_psnr_drop']:g} dB) on "
            f"{gate['gate_slices']} validation slices; runs on {engine} at {validated['inference_precision']} by "
            f"default{preset_note(quantization)}"
        )


def preset_note(quantization: dict[str, Any] | None) -> str:
    """``; NNCF preset mixed (performance refused: drop 0.206 dB)`` for an OpenVINO int8 file, else nothing."""
    settings = (quantization or {}).get("settings", {})
    if "preset" not in settings:
        return ""
    refused = ", ".join(f"{r['preset']} refused: " + (f"drop {r['psnr_drop']:.3f} dB" if r["psnr_drop"] is not None
                                                      else "no finite PSNR") for r in settings.get("refused", []))
    return f"; NNCF preset {settings['preset']}" + (f" ({refused})" if refused else "")


def parse_coils(coils: str | None) -> int | None:
    """``--coils``: a positive count, or ``dynamic`` (None)."""
    if coils is None or coils == "dynamic":
        return None
    if not coils.isdigit() or int(coils) < 1:
        raise typer.BadParameter(f"expected a positive number of coils or 'dynamic', got {coils!r}", param_hint="--coils")
    return int(coils)
