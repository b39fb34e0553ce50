"""Data-consistency lowerings for export: one registered class per way of writing the DFT into a graph.

Every lowering has the interface of :class:`kdc.models.dc.DataConsistency` (``zero_filled(kspace)`` and
``forward(image, kspace, mask)``) and computes the same values, so an export swaps ``model.dc`` for one of them
and checks the result against the untouched model. Tensors follow docs/conventions.md: k-space ``(N, 2, H, W)``
uncentred and orthonormal, images ``(N, 1, H, W)``, masks ``(1, 1, 1, W)`` or ``(1, 1, H, W)``.

- ``dft``: ``torch.fft`` as is; the dynamo exporter writes ONNX ``DFT`` nodes (slow in onnxruntime's CPU kernel).
- ``matmul``: the 2-D DFT as real matrix products (cos/sin matrices, no complex dtype); any mask.
- ``masked``: exact for 1-D Cartesian masks (whole columns sampled). The DFT along H cancels, so a DC step is
  ``x - x P + z`` with ``P = Re(F_s^H F_s)`` (``W x W``, ``F_s`` the sampled rows of the 1-D DFT along W) and ``z``
  the zero-filled image, the same expression in every cascade (the ONNX exporter's optimizer merges the copies). With a baked mask, ``P``
  is a constant and ``z`` is computed from the sampled columns only; with a mask input, ``P`` is built in the graph.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from kdc.mri.masks import sampled_columns
from kdc.models.dc import DataConsistency

MaskArray = np.ndarray


def dft_matrices(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(C, S)`` with the orthonormal 1-D DFT ``F = C - iS`` of size ``n`` (both symmetric, float32)."""
    k = np.arange(n)
    angle = 2 * np.pi * (np.outer(k, k) % n) / n
    scale = 1 / np.sqrt(n)
    return (torch.from_numpy((np.cos(angle) * scale).astype(np.float32)),
            torch.from_numpy((np.sin(angle) * scale).astype(np.float32)))


class Lowering(nn.Module):
    """Base of the registered lowerings: built from the image size and, when baked, the ``(H, W)`` mask."""

    #: True when the lowering is exact only for 1-D Cartesian masks (whole columns sampled).
    cartesian_only: ClassVar[bool] = False

    def __init__(self, image_size: tuple[int, int], baked_mask: MaskArray | None = None) -> None:
        super().__init__()
        self.image_size = tuple(image_size)


class FFTLowering(Lowering, DataConsistency):
    """The reference layer on ``torch.fft``; exported as ONNX ``DFT`` nodes (opset 18)."""


class MatmulLowering(Lowering):
    """The 2-D DFT as products with real cos/sin matrices; exact for any mask."""

    def __init__(self, image_size: tuple[int, int], baked_mask: MaskArray | None = None) -> None:
        super().__init__(image_size, baked_mask)
        height, width = self.image_size
        for axis, n in (("h", height), ("w", width)):
            cos, sin = dft_matrices(n)
            self.register_buffer(f"cos_{axis}", cos, persistent=False)
            self.register_buffer(f"sin_{axis}", sin, persistent=False)

    def _dft2(
        self, real: torch.Tensor, imag: torch.Tensor | None, inverse: bool, real_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``F_H Z F_W`` (or its inverse) of ``Z = real + i imag``; ``imag=None`` means a real input."""
        sign = 1.0 if inverse else -1.0
        # Along H: left product with C_H + sign*i*S_H.
        left_real = self.cos_h @ real
        left_imag = sign * (self.sin_h @ real)
        if imag is not None:
            left_real = left_real - sign * (self.sin_h @ imag)
            left_imag = left_imag + self.cos_h @ imag
        # Along W: right product with C_W + sign*i*S_W.
        out_real = left_real @ self.cos_w - sign * (left_imag @ self.sin_w)
        if real_only:
            return out_real, None
        return out_real, left_imag @ self.cos_w + sign * (left_real @ self.sin_w)

    def zero_filled(self, kspace: torch.Tensor) -> torch.Tensor:
        return self._dft2(kspace[:, 0:1], kspace[:, 1:2], inverse=True, real_only=True)[0]

    def forward(self, image: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pred_real, pred_imag = self._dft2(image, None, inverse=False)
        res_real = mask * (kspace[:, 0:1] - pred_real)
        res_imag = mask * (kspace[:, 1:2] - pred_imag)
        return image + self._dft2(res_real, res_imag, inverse=True, real_only=True)[0]


class MaskedLowering(Lowering):
    """Exact DC for 1-D Cartesian masks: ``x - x Re(F_s^H F_s) + z`` (see the module docstring).

    The k-space must be zero outside the sampled columns (undersampled k-space, as the contract says): the
    zero-filled image ``z`` of a baked mask reads only the sampled columns.
    """

    cartesian_only = True

    def __init__(self, image_size: tuple[int, int], baked_mask: MaskArray | None = None) -> None:
        super().__init__(image_size, baked_mask)
        height, width = self.image_size
        cos_h, sin_h = dft_matrices(height)
        cos_w, sin_w = dft_matrices(width)
        self.register_buffer("cos_h", cos_h, persistent=False)
        self.register_buffer("sin_h", sin_h, persistent=False)
        self.baked = baked_mask is not None
        if self.baked:
            columns = sampled_columns(baked_mask)
            if columns is None:
                raise ValueError("the masked lowering needs a 1-D Cartesian mask (whole columns sampled)")
            self.register_buffer("columns", torch.from_numpy(columns.astype(np.int64)), persistent=False)
            cos_s, sin_s = cos_w[:, columns], sin_w[:, columns]
            # Complement projection I - Re(F_s^H F_s); rows of conj(F_W) at the sampled columns.
            keep = torch.eye(width) - (cos_s.double() @ cos_s.T.double() + sin_s.double() @ sin_s.T.double()).float()
            self.register_buffer("keep", keep, persistent=False)
            self.register_buffer("cos_w", cos_s.T.contiguous(), persistent=False)
            self.register_buffer("sin_w", sin_s.T.contiguous(), persistent=False)
        else:
            self.register_buffer("cos_w", cos_w, persistent=False)
            self.register_buffer("sin_w", sin_w, persistent=False)

    def zero_filled(self, kspace: torch.Tensor) -> torch.Tensor:
        if self.baked:
            kspace = kspace.index_select(3, self.columns)
        real, imag = kspace[:, 0:1], kspace[:, 1:2]
        left_real = self.cos_h @ real - self.sin_h @ imag
        left_imag = self.cos_h @ imag + self.sin_h @ real
        return left_real @ self.cos_w - left_imag @ self.sin_w

    def forward(self, image: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        zero_filled = self.zero_filled(kspace)
        if self.baked:
            return image @ self.keep + zero_filled
        # Re(F_W^H diag(m) F_W) = C diag(m) C + S diag(m) S, built from the mask input.
        projection = (self.cos_w * mask) @ self.cos_w + (self.sin_w * mask) @ self.sin_w
        return image - image @ projection + zero_filled


#: The DC lowerings an export can use, by ``--dc`` name.
LOWERINGS: dict[str, type[Lowering]] = {"dft": FFTLowering, "matmul": MatmulLowering, "masked": MaskedLowering}


def auto_lowering(mask: MaskArray, fmt: str) -> str:
    """The fastest lowering that is exact for ``mask`` on the runtime of ``fmt`` (see docs/export.md)."""
    if sampled_columns(mask) is not None:
        return "masked"
    return "dft" if fmt in ("torchscript", "pt2") else "matmul"
