"""The contract written into every artefact: what goes in, what comes out, and where the model came from.

docs/export.md explains each field to an integrator; kdc/runtime reads it back. Bump ``CONTRACT_VERSION`` when a
field changes meaning.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdc import __version__

CONTRACT_VERSION = 1
KSPACE_LAYOUT = (
    "(N, 2, H, W) float32: channel 0 real part, channel 1 imaginary part; phase encodes along W (whole columns "
    "sampled); uncentred (DC term at [0, 0]); orthonormal 2-D FFT of the image; zero outside the sampled columns"
)
NORMALISATION = (
    "k-space of the image volume scaled so that its fully sampled magnitude maximum is 1 (training used [0, 1] "
    "images); without a fully sampled reference, scale by the maximum of the zero-filled magnitude volume and "
    "multiply the output back"
)
#: Graph input of a super-resolution (VDSR) artefact.
LOWRES_INPUT = "image_lowres"
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


def build_contract(
    *,
    image_size: tuple[int, int],
    mask: np.ndarray,
    mask_input_shape: list[int] | None,
    columns: np.ndarray | None,
    lowering: str,
    fmt: str,
    model: dict[str, Any],
    meta: dict[str, Any],
    parity: dict[str, Any],
    quantization: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the contract; ``mask_input_shape`` is None when the mask is baked into the graph, ``quantization``
    None for a float32 graph."""
    height, width = image_size
    inputs = [tensor_spec("kspace", ["N", 2, height, width], "undersampled k-space, see kspace_layout")]
    if mask_input_shape is not None:
        inputs.append(tensor_spec(
            "mask", mask_input_shape,
            "0/1 sampling mask, uncentred like the k-space; (1, 1, 1, W) marks sampled columns",
        ))
    acceleration = meta.get("acceleration", round(mask.size / np.count_nonzero(mask), 3))
    return {
        **common_fields(fmt=fmt, image_size=image_size, model=model, meta=meta, parity=parity,
                        quantization=quantization),
        "task": "recon",
        "inputs": inputs,
        "outputs": [tensor_spec("image", ["N", 1, height, width], "reconstructed image, real part, same scale as input")],
        "kspace_layout": KSPACE_LAYOUT,
        "kspace_centred": False,
        "fft_norm": "ortho",
        "normalisation": NORMALISATION,
        "output_kind": "real part",
        "acceleration": acceleration,
        "mask_kind": meta.get("mask_kind"),
        "dc_lowering": lowering,
        "mask_baked": mask_input_shape is None,
        "mask_columns": None if columns is None or mask_input_shape is not None else columns.tolist(),
    }


def build_sr_contract(
    *, image_size: tuple[int, int], scale: int | None, fmt: str, model: dict[str, Any], meta: dict[str, Any],
    parity: dict[str, Any], quantization: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Contract of a super-resolution artefact: one low-resolution image in, one image out, no DC, no mask."""
    height, width = image_size
    return {
        **common_fields(fmt=fmt, image_size=image_size, model=model, meta=meta, parity=parity,
                        quantization=quantization),
        "task": "sr",
        "scale": scale,
        "inputs": [tensor_spec(LOWRES_INPUT, ["N", 1, height, width], "low-resolution image, see input_layout")],
        "outputs": [tensor_spec("image", ["N", 1, height, width], "super-resolved image, same scale as the input")],
        "input_layout": LOWRES_LAYOUT,
        "normalisation": SR_NORMALISATION,
        "output_kind": "image (input + predicted detail)",
        "dc_lowering": "none",
    }


def common_fields(
    *, fmt: str, image_size: tuple[int, int], model: dict[str, Any], meta: dict[str, Any], parity: dict[str, Any],
    quantization: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fields every contract has, whatever the task; ``quantization`` is None for a float32 graph."""
    return {
        "contract_version": CONTRACT_VERSION,
        "format": fmt,
        "model": model,
        "image_size": list(image_size),
        "trained_image_size": meta.get("image_size"),
        "parity": parity,
        "quantization": quantization,
        "metrics": meta.get("metrics", {}),
        "kdc_version": __version__,
    }
