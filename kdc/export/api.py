"""``export_model``: load the source, let its registered architecture prepare the graph, build the artefact, gate it
on parity, then write it. Nothing here knows a family: each declares itself in :mod:`kdc.export.architectures`."""

from __future__ import annotations

import tempfile
import traceback
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from kdc._io import pid_tag, remove_stale_temps
from kdc.errors import KdcError
from kdc.export.architectures import (
    PARITY_SLICES, RELATIVE_TOLERANCE, ExportRequest, architecture_of, check_options, relative_error,
)
from kdc.export.complex_lowering import UnsupportedOperation
from kdc.export.formats import format_for
from kdc.export.precision import bf16_gate, precision_entry, resolve_precision
from kdc.export.quantize import QUANTIZATION_SLICES, check_quantize, quantize_and_gate
from kdc.export.rewrites import rewrite_for_speed
from kdc.export.report import ExportError, ExportReport
from kdc.models.checkpoint import load_checkpoint
from kdc.models.user import is_user_model, is_user_spec, load_user_model, parse_init

#: Prefix of the working directory an export builds and checks its artefact in (under the system temp dir).
EXPORT_TEMP_PREFIX = "kdc-export"
#: Checkpoints of a run directory, in the order ``export_model`` picks them.
RUN_MODELS = ("kd_student", "student", "teacher")
#: Default ``tolerance`` of each parity gate (:attr:`kdc.export.architectures.Architecture.gate`).
TOLERANCES = {"max_abs": 1e-4, "relative_l2": RELATIVE_TOLERANCE}


def load_source(
    source: str | Path | nn.Module, role: str | None, init: str | dict[str, Any] | None = None,
    weights: str | Path | None = None, trusted: Sequence[str] = (),
) -> tuple[nn.Module, dict[str, Any], Path | None]:
    """``(model, meta, directory holding its mask.npy or None)`` from a run directory, checkpoint, module, or a
    user's ``MODULE:CLASS`` built with ``init`` and loaded from ``weights`` (:mod:`kdc.models.user`). A checkpoint of
    a user's class is rebuilt only if ``trusted`` names it (``--user-class``, :mod:`kdc.models.checkpoint`)."""
    if isinstance(source, nn.Module):
        return source.eval(), {"role": role or "unknown"}, None
    if isinstance(source, str) and is_user_spec(source):
        try:
            kwargs = init if isinstance(init, dict) else parse_init(init)
            model = load_user_model(source, kwargs, None if weights is None else Path(weights))
        except KdcError as err:
            raise ExportError(str(err)) from None
        meta = {"role": role or ("trained" if weights else "untrained"), "init": kwargs, "source": source}
        return model, meta, None
    if init is not None or weights is not None:
        raise ExportError(f"{source}: --init and --weights build a user's MODULE:CLASS (e.g. fastmri.models:VarNet); "
                          "a kdc checkpoint or run holds its own config and weights")
    path = Path(source)
    if path.is_dir():
        names = [role] if role else list(RUN_MODELS)
        found = [path / f"{name}.pt" for name in names if (path / f"{name}.pt").is_file()]
        if not found:
            raise ExportError(f"{path}: run directory has no {' / '.join(f'{n}.pt' for n in names)}")
        path = found[0]
    try:
        model, meta = load_checkpoint(path, trusted)
    except KdcError as err:
        raise ExportError(str(err)) from None
    if is_user_model(model):  # what a MODULE:CLASS source records, from the checkpoint's config
        meta = {**meta, "init": model.kdc_config["init"], "source": model.kdc_config["class"]}
    return model, meta, path.parent


def resolve_size(image_size: tuple[int, int] | None, meta: dict[str, Any], mask: Any) -> tuple[int, int]:
    """Export size: given, else the trained size from the meta, else the shape of a mask array."""
    size = image_size or meta.get("image_size") or (np.shape(mask) if isinstance(mask, np.ndarray) else None)
    if size is None:
        raise ExportError("image size unknown: pass image_size (--size H W) or a checkpoint with meta 'image_size'")
    if len(size) != 2 or min(size) < 2:
        raise ExportError(f"image size must be two sizes >= 2 (H, W), got {list(size)}")
    return int(size[0]), int(size[1])


def calibration_images(data: str | Path, size: tuple[int, int], count: int) -> np.ndarray:
    """``count`` validation slices of the user's dataset ``data`` at ``size`` (fewer if the split has fewer)."""
    from kdc.data.demo import split_images
    from kdc.data.slices import dataset_root, split_volumes

    try:
        root = dataset_root(data)
        available = sum(info.slices for info in split_volumes(root, "val"))
        return split_images(root, "val", size, min(count, available))
    except KdcError as err:
        raise ExportError(f"--calibration: {err}") from None


def parity_check(artefact: Any, feeds: dict[str, np.ndarray], expected: np.ndarray, gate: str = "max_abs"
                 ) -> dict[str, dict[str, float]]:
    """Max abs and relative L2 error per runtime, the worse of all slices at once (batch N) and the first slice alone
    (batch 1): ``{"max_abs": {runtime: error}, "relative_l2": {runtime: error}}``."""
    errors: dict[str, dict[str, float]] = {"max_abs": {}, "relative_l2": {}}
    for batch in (slice(None), slice(0, 1)):
        outputs = artefact.run({name: value if name == "mask" else value[batch] for name, value in feeds.items()})
        for runtime, output in outputs.items():
            if output.shape != expected[batch].shape:
                raise ExportError(f"{runtime} returned shape {output.shape}, expected {expected[batch].shape}")
            measured = {"max_abs": float(np.max(np.abs(output - expected[batch]))),
                        "relative_l2": relative_error(output, expected[batch])}
            for metric, error in measured.items():
                previous = errors[metric].get(runtime, 0.0)
                errors[metric][runtime] = max(previous, error) if np.isfinite(error) else float("inf")
    return errors


def export_failure(err: Exception, model: nn.Module) -> ExportError:
    """One line for an exporter's failure: the operator (or the exporter's first line) and the model's source line."""
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    for cause in chain:
        if isinstance(cause, UnsupportedOperation):
            return ExportError(str(cause))
    innermost = chain[-1]
    where = "unknown source line"
    for cause in reversed(chain):
        frames = traceback_frames(cause)
        if frames:
            where = frames[-1]
            break
    first = (str(innermost).strip().splitlines() or [""])[0][:300]
    return ExportError(f"cannot export {type(model).__name__}: {type(innermost).__name__}: {first} at {where}")


def traceback_frames(err: BaseException) -> list[str]:
    """``file:line`` of the frames of ``err``'s traceback outside torch, kdc.export and the standard library."""
    skip = (str(Path(torch.__file__).parent), str(Path(__file__).parent), str(Path(tempfile.__file__).parent))
    return [f"{frame.filename}:{frame.lineno}" for frame in traceback.extract_tb(err.__traceback__)
            if not frame.filename.startswith(skip) and not frame.filename.startswith("<")]


def export_model(
    source: str | Path | nn.Module,
    out: str | Path,
    *,
    fmt: str | None = None,
    dc: str = "auto",
    bake_mask: bool = False,
    image_size: tuple[int, int] | None = None,
    mask: str | Path | np.ndarray | None = None,
    tolerance: float | None = None,
    role: str | None = None,
    images: np.ndarray | None = None,
    quantize: str | None = None,
    max_psnr_drop: float | None = None,
    calibration: str | Path | None = None,
    init: str | dict[str, Any] | None = None,
    weights: str | Path | None = None,
    coils: int | None = None,
    precision: str = "f32",
    trusted: Sequence[str] = (),
) -> ExportReport:
    """Export ``source`` (run directory, checkpoint, module, or a user's ``MODULE:CLASS``) to ``out`` if it matches
    PyTorch within ``tolerance``.

    ``fmt`` (``onnx``, ``openvino``, ``torchscript``, ``pt2``) defaults to the one of ``out``'s suffix (``.onnx``,
    ``.xml``, ``.pt``/``.ts``, ``.pt2``); a suffix that contradicts it is refused.
    ``role`` picks the checkpoint of a run directory (``kd_student``, ``student``, ``teacher``) and names a bare
    module. ``images`` are ``(count, H, W)`` [0, 1] slices for the parity gate (default: kdc's validation slices).
    A complex model (``--image complex``) is gated on complex slices (real ``images`` get a smooth phase). The
    model's registered architecture (:mod:`kdc.export.architectures`) decides the graph's inputs, its lowering, its
    contract and its gate: kdc's models on the max abs error on [0, 1] images (``tolerance`` default 1e-4), a
    user's architecture (fastMRI ``Unet``, ``VarNet``) on the relative L2 error (default 1e-3).
    ``init`` (JSON object or file) and ``weights`` (a state dict) build a ``MODULE:CLASS`` source; ``coils`` fixes
    the coils of a multi-coil model's input (None: dynamic). ``trusted``: users' classes a checkpoint of a run may be
    rebuilt from (``--user-class``; a checkpoint alone never imports a module).
    ``quantize`` (``int8``, ``fp16``) quantizes the checked float32 graph and writes it only if its PSNR on
    validation slices (``images``, default 32 of kdc's) is at most ``max_psnr_drop`` dB below PyTorch's
    (:mod:`kdc.export.quantize`). ``precision`` (``f32``, ``bf16``, ``int8``: :mod:`kdc.export.precision`) is the
    precision the file is validated at and recorded in its contract: ``bf16`` gates the float32 graph run by
    OpenVINO at bf16 on PSNR, ``int8`` is ``quantize="int8"``; ``max_psnr_drop`` defaults to 0.05 dB (bf16) or
    0.1 dB (int8, fp16). ``calibration`` names a dataset directory (``ROOT/val/*.h5``, or ``"demo"``)
    whose validation slices replace kdc's for the parity gate, quantization calibration and the PSNR gate.
    Raises :class:`ExportError` with nothing written on any failure.
    """
    out = Path(out)
    artefact_cls = format_for(out, fmt)
    fmt = artefact_cls.name
    if out.is_dir():
        raise ExportError(f"{out}: is a directory, expected a file path")
    precision, quantize, max_psnr_drop = resolve_precision(precision, quantize, fmt, max_psnr_drop)
    if quantize:
        check_quantize(quantize, fmt)
    psnr_gated = precision != "f32"
    if coils is not None and not 1 <= coils <= 1024:
        raise ExportError(f"--coils must be an integer from 1 to 1024 or 'dynamic', got {coils}")
    model, meta, mask_dir = load_source(source, role, init, weights, trusted)
    architecture = architecture_of(model)
    size = resolve_size(image_size, meta, mask)
    if calibration is not None:
        images = calibration_images(calibration, size, QUANTIZATION_SLICES if psnr_gated else PARITY_SLICES)
    task = architecture.task_of(model)
    if psnr_gated and task.name not in architecture.quantizable_tasks:
        option = "--quantize" if quantize else f"--precision {precision}"
        raise ExportError(f"{option} supports magnitude reconstruction (DC-CNN) models only, not {task.name!r}")
    request = ExportRequest(size=size, fmt=fmt, meta=meta, images=images, coils=coils, mask=mask, mask_dir=mask_dir,
                            dc=dc, bake_mask=bake_mask)
    check_options(architecture, task, request)
    graph, feeds, expected, contract, gate_data = architecture.prepare(model, request)
    tolerance = TOLERANCES[architecture.gate] if tolerance is None else tolerance
    rewrites = rewrite_for_speed(graph, fmt, precision)
    example = tuple(torch.from_numpy(feeds[name][:2]).clone() for name in feeds)
    if len(example[0]) < 2:  # torch.export specialises a batch of 1; trace with 2
        example = (example[0].repeat(2, *[1] * (example[0].dim() - 1)), *example[1:])

    remove_stale_temps(tempfile.gettempdir(), f"{EXPORT_TEMP_PREFIX}*")  # left by exports that were killed
    with tempfile.TemporaryDirectory(prefix=f"{EXPORT_TEMP_PREFIX}{pid_tag()}") as workdir:
        try:
            artefact = artefact_cls(graph.eval(), example, list(feeds), Path(workdir))
        except KdcError:
            raise
        except Exception as err:  # the exporters raise many types; the user gets the operator and the line
            raise export_failure(err, model) from None
        errors = parity_check(artefact, feeds, expected)
        gated = errors[architecture.gate]
        worst = max(gated.values())
        if not worst <= tolerance:
            detail = ", ".join(f"{runtime}: {error:.3g}" for runtime, error in gated.items())
            name = architecture.gate.replace("_", " ")
            raise ExportError(
                f"parity gate failed: {name} error {worst:.3g} > tolerance {tolerance:g} on {len(expected)} "
                f"validation slices ({detail}); {out} not written"
            )
        quantization = gate = None
        if quantize:
            quantization = gate = quantize_and_gate(artefact, quantize, gate_data(), max_psnr_drop, out,
                                                    Path(workdir))
        elif precision == "bf16":
            gate = bf16_gate(artefact, gate_data(), max_psnr_drop, out, Path(workdir))
        parity = {"max_abs_error": max(errors["max_abs"].values()), "runtime": ", ".join(gated),
                  "errors": errors["max_abs"], "slices": len(expected), "tolerance": tolerance}
        if architecture.gate != "max_abs":
            parity.update(metric=architecture.gate, relative_l2_error=worst, relative_l2_errors=gated)
        written = contract(fmt=fmt, parity=parity, quantization=quantization,
                           precision=precision_entry(precision, fmt, parity, gate, rewrites))
        artefact.write(written, out)
    size_bytes = out.stat().st_size + (out.with_suffix(".bin").stat().st_size if fmt == "openvino" else 0)
    return ExportReport(out, fmt, written.dc_lowering, size_bytes, worst, written)
