"""The contract written into every artefact: what goes in, what comes out, and where the model came from.

The builders assemble the JSON object and parse it with :meth:`kdc.runtime.contract.Contract.from_dict`, the schema
the runtime reads back with, so every file kdc writes passes the loaders' checks. docs/export.md explains each field
to an integrator. Bump ``CONTRACT_VERSION`` (:mod:`kdc.runtime.contract`) when a field changes meaning.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdc import __version__
from kdc.runtime.contract import CONTRACT_VERSION, Contract
from kdc.tasks import LOWRES_INPUT, TaskSpec

#: What a contract's checks name as its file while the artefact is being built.
SOURCE = "kdc export"
KSPACE_LAYOUT = (
    "(N, 2, H, W) float32: channel 0 real part, channel 1 imaginary part; whole phase-encode lines sampled (columns "
    "along W, or rows along H: see the mask input or mask_columns/mask_rows); uncentred (DC term at [0, 0]); "
    "orthonormal 2-D FFT of the image; zero outside the sampled lines"
)
NORMALISATION = (
    "k-space of the image volume scaled so that its fully sampled magnitude maximum is 1 (training used [0, 1] "
    "images); without a fully sampled reference, scale by the maximum of the zero-filled magnitude volume and "
    "multiply the output back"
)
LOWRES_LAYOUT = (
    "(N, 1, H, W) float32 magnitude image at the output size H x W, holding only the central 1/scale of k-space "
    "along both axes (a low-resolution acquisition zero-padded in centred k-space, inverse FFT, magnitude)"
)
SR_NORMALISATION = (
    "image volume scaled so that its maximum is 1 (training used [0, 1] targets); scale the low-resolution volume "
    "by 1 / its maximum and multiply the output back"
)


def tensor_spec(name: str, shape: list[int | str], description: str) -> dict[str, Any]:
    return {"name": name, "shape": shape, "dtype": "float32", "description": description}


def output_fields(task: TaskSpec, image_size: tuple[int, int]) -> dict[str, Any]:
    """The task's name, its ``image`` output (``C`` channels: 1 real, 2 real and imaginary; ``(N, H, W)`` for a task
    without a channel axis) and ``output_kind``."""
    shape: list[int | str] = ["N", *([task.image_channels] if task.output_channels else []), *image_size]
    return {"task": task.name, "outputs": [tensor_spec("image", shape, task.output_description)],
            "output_kind": task.output_kind}


def build_contract(
    *,
    task: TaskSpec,
    image_size: tuple[int, int],
    mask: np.ndarray,
    mask_input_shape: list[int] | None,
    lines: tuple[int, np.ndarray] | None,
    lowering: str,
    fmt: str,
    model: dict[str, Any],
    meta: dict[str, Any],
    parity: dict[str, Any],
    quantization: dict[str, Any] | None = None,
    precision: dict[str, Any] | None = None,
) -> Contract:
    """Assemble the contract of a reconstruction; ``mask_input_shape`` is None when the mask is baked into the graph,
    ``lines`` the ``(axis, indices)`` of a 1-D mask, ``quantization`` None for a float32 graph, ``precision`` the
    validated precision (:func:`kdc.export.precision.precision_entry`)."""
    height, width = image_size
    inputs = [tensor_spec("kspace", ["N", 2, height, width], "undersampled k-space, see kspace_layout")]
    if mask_input_shape is not None:
        inputs.append(tensor_spec(
            "mask", mask_input_shape,
            "0/1 sampling mask, uncentred like the k-space; (1, 1, 1, W) marks sampled columns, (1, 1, H, 1) rows",
        ))
    baked_lines = None if lines is None or mask_input_shape is not None else lines
    acceleration = meta.get("acceleration", round(mask.size / np.count_nonzero(mask), 3))
    return Contract.from_dict({
        **common_fields(fmt=fmt, image_size=image_size, model=model, meta=meta, parity=parity,
                        quantization=quantization, precision=precision),
        **output_fields(task, image_size),
        "inputs": inputs,
        "kspace_layout": KSPACE_LAYOUT,
        "kspace_centred": False,
        "fft_norm": "ortho",
        "normalisation": NORMALISATION,
        "acceleration": acceleration,
        "mask_kind": meta.get("mask_kind"),
        "dc_lowering": lowering,
        "mask_baked": mask_input_shape is None,
        "mask_columns": baked_lines[1].tolist() if baked_lines and baked_lines[0] == -1 else None,
        "mask_rows": baked_lines[1].tolist() if baked_lines and baked_lines[0] == -2 else None,
    }, SOURCE)


def build_sr_contract(
    *, task: TaskSpec, image_size: tuple[int, int], scale: int | None, fmt: str, model: dict[str, Any], meta: dict[str, Any],
    parity: dict[str, Any], quantization: dict[str, Any] | None = None, precision: dict[str, Any] | None = None,
) -> Contract:
    """Contract of a super-resolution artefact: one low-resolution image in, one image out, no DC, no mask."""
    height, width = image_size
    return Contract.from_dict({
        **common_fields(fmt=fmt, image_size=image_size, model=model, meta=meta, parity=parity,
                        quantization=quantization, precision=precision),
        **output_fields(task, image_size),
        "scale": scale,
        "inputs": [tensor_spec(LOWRES_INPUT, ["N", 1, height, width], "low-resolution image, see input_layout")],
        "input_layout": LOWRES_LAYOUT,
        "normalisation": SR_NORMALISATION,
        "dc_lowering": "none",
    }, SOURCE)


def build_declared_contract(
    *, task: TaskSpec, image_size: tuple[int, int], input_shapes: dict[str, list[int | str]], fields: dict[str, Any],
    fmt: str, model: dict[str, Any], meta: dict[str, Any], parity: dict[str, Any],
    quantization: dict[str, Any] | None = None, precision: dict[str, Any] | None = None,
) -> Contract:
    """Contract of a registered user architecture (:mod:`kdc.export.architectures`): its inputs as declared
    (``input_shapes``, ``"N"`` and other names dynamic), the task's output, and the architecture's own ``fields``
    (input layouts, pre- and post-processing, lowering and adapters)."""
    descriptions = fields.get("input_descriptions", {})
    return Contract.from_dict({
        **common_fields(fmt=fmt, image_size=image_size, model=model, meta=meta, parity=parity,
                        quantization=quantization, precision=precision),
        **output_fields(task, image_size),
        "inputs": [tensor_spec(name, shape, descriptions.get(name, "")) for name, shape in input_shapes.items()],
        **{key: value for key, value in fields.items() if key != "input_descriptions"},
    }, SOURCE)


def common_fields(
    *, fmt: str, image_size: tuple[int, int], model: dict[str, Any], meta: dict[str, Any], parity: dict[str, Any],
    quantization: dict[str, Any] | None = None, precision: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fields every contract has, whatever the task; ``quantization`` is None for a float32 graph, ``precision``
    the validated precision and runtime (absent in files from before it was recorded: f32)."""
    return {
        "contract_version": CONTRACT_VERSION,
        "format": fmt,
        "model": model,
        "image_size": list(image_size),
        "trained_image_size": meta.get("image_size"),
        "parity": parity,
        "quantization": quantization,
        "precision": precision,
        "metrics": meta.get("metrics", {}),
        "kdc_version": __version__,
    }
