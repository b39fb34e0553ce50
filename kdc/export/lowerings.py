"""Data-consistency lowerings for export: one registered class per way of writing the DFT into a graph.

Every lowering has the interface of :class:`kdc.models.dc.DataConsistency` (``zero_filled(kspace)`` and
``forward(image, kspace, mask)``) and computes the same values, so an export swaps ``model.dc`` for one of them
and checks the result against the untouched model. Tensors follow docs/conventions.md: k-space ``(N, 2, H, W)``
uncentred and orthonormal, images ``(N, C, H, W)`` (``C = 1`` real, ``C = 2`` complex as real and imaginary
channels: exact complex DC), masks ``(1, 1, 1, W)``, ``(1, 1, H, 1)`` or ``(1, 1, H, W)``.

- ``dft``: ``torch.fft`` as is; the dynamo exporter writes ONNX ``DFT`` nodes (slow in onnxruntime's CPU kernel).
- ``matmul``: the 2-D DFT as real matrix products (factored cos/sin matrices, :mod:`kdc.export.dft`, no complex
  dtype); any mask.
- ``masked``: exact for 1-D Cartesian masks (whole columns or whole rows sampled). For columns the DFT along H
  cancels, so a DC step is ``x - x P + z`` with ``P = F_s^T conj(F_s)`` (``W x W``, ``F_s`` the sampled rows of the
  1-D DFT along W; only ``Re P`` for a real image) and ``z`` the zero-filled image. ``z`` and ``P`` depend on the
  k-space and mask only: :meth:`~kdc.models.dc.DataConsistency.bind` computes them once, before the cascades, so
  each cascade's DC is one ``W x W`` product and an addition in every exported graph (TorchScript included, which
  merges no copies). With a baked mask, ``P`` is a constant and ``z`` is computed from the sampled columns only;
  with a mask input, ``P`` is built in the graph. A row mask is the same computation on the transposed image and
  k-space.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch

from kdc.export.dft import dft, dft_pair
from kdc.mri.masks import sampled_lines
from kdc.models.dc import DataConsistency

MaskArray = np.ndarray


def dft_matrices(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(C, S)`` with the orthonormal 1-D DFT ``F = C - iS`` of size ``n`` (both symmetric, float32), dense: the
    inverse's ``C + iS`` from :func:`kdc.export.dft.dft_pair`."""
    return tuple(torch.from_numpy(matrix) for matrix in dft_pair(n, True, "ortho"))


class Lowering(DataConsistency):
    """Base of the registered lowerings: built from the image size, the ``(H, W)`` mask when baked, the image's
    channels and the axis of a 1-D mask (-1: columns, -2: rows; read from a baked mask)."""

    #: True when the lowering is exact only for 1-D Cartesian masks (whole columns or rows sampled).
    cartesian_only: ClassVar[bool] = False

    def __init__(self, image_size: tuple[int, int], baked_mask: MaskArray | None = None, image_channels: int = 1,
                 axis: int = -1) -> None:
        super().__init__(image_channels)
        self.image_size = tuple(image_size)

    def _from_parts(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        """The network's image from the real and imaginary parts: the real part alone for a real image."""
        return real if self.image_channels == 1 else torch.cat([real, imag], dim=1)


class FFTLowering(Lowering):
    """The reference layer on ``torch.fft``; exported as ONNX ``DFT`` nodes (opset 18)."""


class MatmulLowering(Lowering):
    """The 2-D DFT as products with real cos/sin matrices (factored, :func:`kdc.export.dft.dft`); exact for any
    mask."""

    def _dft2(
        self, real: torch.Tensor, imag: torch.Tensor | None, inverse: bool, real_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``F_H Z F_W`` (or its inverse) of ``Z = real + i imag``, factored (:func:`kdc.export.dft.dft`);
        ``imag=None`` means a real input."""
        real, imag = dft(real, imag, -2, inverse, "ortho")
        return dft(real, imag, -1, inverse, "ortho", real_only=real_only)

    def _inverse(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        return self._from_parts(*self._dft2(real, imag, inverse=True, real_only=self.image_channels == 1))

    def zero_filled(self, kspace: torch.Tensor) -> torch.Tensor:
        return self._inverse(kspace[:, 0:1], kspace[:, 1:2])

    def forward(self, image: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        imag = None if self.image_channels == 1 else image[:, 1:2]
        pred_real, pred_imag = self._dft2(image[:, 0:1], imag, inverse=False)
        res_real = mask * (kspace[:, 0:1] - pred_real)
        res_imag = mask * (kspace[:, 1:2] - pred_imag)
        return image + self._inverse(res_real, res_imag)


class MaskedLowering(Lowering):
    """Exact DC for 1-D Cartesian masks: ``x - x P + z`` (see the module docstring).

    The k-space must be zero outside the sampled lines (undersampled k-space, as the contract says): the
    zero-filled image ``z`` of a baked mask reads only the sampled lines. Internally the lines are columns; a row
    mask transposes the image, k-space and mask in and the image out.
    """

    cartesian_only = True

    def __init__(self, image_size: tuple[int, int], baked_mask: MaskArray | None = None, image_channels: int = 1,
                 axis: int = -1) -> None:
        super().__init__(image_size, baked_mask, image_channels, axis)
        self.baked = baked_mask is not None
        if self.baked:
            found = sampled_lines(baked_mask)
            if found is None:
                raise ValueError("the masked lowering needs a 1-D Cartesian mask (whole columns or rows sampled)")
            axis, lines = found
        self.rows = axis == -2
        other_size, line_size = self.image_size[::-1] if self.rows else self.image_size
        cos_h, sin_h = dft_matrices(other_size)
        cos_w, sin_w = dft_matrices(line_size)
        self.register_buffer("cos_h", cos_h, persistent=False)
        self.register_buffer("sin_h", sin_h, persistent=False)
        if self.baked:
            self.register_buffer("lines", torch.from_numpy(lines.astype(np.int64)), persistent=False)
            cos_s, sin_s = cos_w[:, lines].double(), sin_w[:, lines].double()
            # I - Re P and Im P with P = F_s^T conj(F_s), F_s the sampled rows of F_W = C - iS.
            keep = torch.eye(line_size) - (cos_s @ cos_s.T + sin_s @ sin_s.T).float()
            self.register_buffer("keep", keep, persistent=False)
            self.register_buffer("projection_imag", (cos_s @ sin_s.T - sin_s @ cos_s.T).float(), persistent=False)
            self.register_buffer("cos_w", cos_s.T.float().contiguous(), persistent=False)
            self.register_buffer("sin_w", sin_s.T.float().contiguous(), persistent=False)
        else:
            self.register_buffer("cos_w", cos_w, persistent=False)
            self.register_buffer("sin_w", sin_w, persistent=False)
            self.register_buffer("identity", torch.eye(line_size), persistent=False)

    def _lines_last(self, tensor: torch.Tensor) -> torch.Tensor:
        """Put the sampled lines along the last axis (transpose a row mask's tensors; the transpose is its inverse)."""
        return tensor.transpose(-2, -1) if self.rows else tensor

    def _zero_filled(self, kspace: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Real and imaginary parts of the zero-filled image, lines last."""
        if self.baked:
            kspace = kspace.index_select(3, self.lines)
        real, imag = kspace[:, 0:1], kspace[:, 1:2]
        left_real = self.cos_h @ real - self.sin_h @ imag
        left_imag = self.cos_h @ imag + self.sin_h @ real
        zero_real = left_real @ self.cos_w - left_imag @ self.sin_w
        if self.image_channels == 1:
            return zero_real, zero_real
        return zero_real, left_real @ self.sin_w + left_imag @ self.cos_w

    def zero_filled(self, kspace: torch.Tensor) -> torch.Tensor:
        return self._lines_last(self._from_parts(*self._zero_filled(self._lines_last(kspace))))

    def bind(self, kspace: torch.Tensor, mask: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The zero-filled image ``z`` and the projection ``P`` once; each cascade's step is then ``x - x P + z``."""
        mask = self._lines_last(mask)
        zero_real, zero_imag = self._zero_filled(self._lines_last(kspace))
        if self.baked:
            keep, projection_imag = self.keep, self.projection_imag
        else:
            # P = C diag(m) C + S diag(m) S + i (C diag(m) S - S diag(m) C), built from the mask input; Im P only
            # moves a complex image.
            keep = self.identity - ((self.cos_w * mask) @ self.cos_w + (self.sin_w * mask) @ self.sin_w)
            projection_imag = None if self.image_channels == 1 else (
                (self.cos_w * mask) @ self.sin_w - (self.sin_w * mask) @ self.cos_w)

        def step(image: torch.Tensor) -> torch.Tensor:
            image = self._lines_last(image)
            real = image[:, 0:1]
            if self.image_channels == 1:
                out = real @ keep + zero_real
            else:
                imag = image[:, 1:2]
                out = torch.cat([real @ keep + imag @ projection_imag + zero_real,
                                 imag @ keep - real @ projection_imag + zero_imag], dim=1)
            return self._lines_last(out)

        return step

    def forward(self, image: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.bind(kspace, mask)(image)


#: The DC lowerings an export can use, by ``--dc`` name.
LOWERINGS: dict[str, type[Lowering]] = {"dft": FFTLowering, "matmul": MatmulLowering, "masked": MaskedLowering}


def auto_lowering(mask: MaskArray, fmt: str) -> str:
    """The fastest lowering that is exact for ``mask`` on the runtime of ``fmt`` (see docs/export.md)."""
    if sampled_lines(mask) is not None:
        return "masked"
    return "dft" if fmt in ("torchscript", "pt2") else "matmul"
