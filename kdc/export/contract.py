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
        "contract_version": CONTRACT_VERSION,
        "format": fmt,
        "inputs": inputs,
        "outputs": [tensor_spec("image", ["N", 1, height, width], "reconstructed image, real part, same scale as input")],
        "kspace_layout": KSPACE_LAYOUT,
        "kspace_centred": False,
        "fft_norm": "ortho",
        "normalisation": NORMALISATION,
        "output_kind": "real part",
        "model": model,
        "acceleration": acceleration,
        "mask_kind": meta.get("mask_kind"),
        "image_size": [height, width],
        "trained_image_size": meta.get("image_size"),
        "dc_lowering": lowering,
        "mask_baked": mask_input_shape is None,
        "mask_columns": None if columns is None or mask_input_shape is not None else columns.tolist(),
        "parity": parity,
        "quantization": quantization,
        "metrics": meta.get("metrics", {}),
        "kdc_version": __version__,
    }
