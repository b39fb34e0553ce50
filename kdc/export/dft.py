"""The 1-D DFT as real matrix products, for export: the one place kdc builds DFT matrices.

A graph that must not hold a complex dtype or an ONNX ``DFT`` node (slow in ONNX Runtime, wrong in OpenVINO at
opset >= 20: TOOLCHAIN.md) computes ``X = F x`` with real cos/sin matrices. A dense ``N x N`` product costs ``N``
complex multiply-adds per output; :func:`dft` factors ``N = N1 * N2`` (the four-step Cooley-Tukey DFT) and costs
``N1 + N2``: the axis is reshaped to ``(N1, N2)`` (``n = N2 n1 + n2``), transformed along ``N1`` by a small dense
product, multiplied by the twiddles ``W_N^(n2 k1)``, transformed along ``N2``, and read out transposed
(``k = k1 + N1 k2``). At 320 (16 x 20) that is 36 instead of 320. The twiddles are folded into one ``N2 x N2``
matrix per ``k1`` (no elementwise pass), and the axis is moved to -2 so that every product runs over a whole row of
columns (one large product, not thousands of tiny ones). A prime or small size keeps the dense product. Only MatMul,
Add/Sub, Reshape and Transpose reach the graph, with every leading dimension (batch, coils) free.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

#: Sizes up to this stay dense: a factored product would save little and add reshapes.
DENSE_UP_TO = 16

Pair = tuple[np.ndarray, np.ndarray]


def norm_scale(n: int, inverse: bool, norm: str | None) -> float:
    """The factor ``torch.fft``'s ``norm`` puts on a transform of size ``n``."""
    try:
        return {"ortho": 1 / math.sqrt(n), "forward": 1.0 if inverse else 1 / n,
                "backward": 1 / n if inverse else 1.0}[norm or "backward"]
    except KeyError:
        raise ValueError(f"norm must be 'backward', 'forward' or 'ortho', not {norm!r}") from None


def _pair(angles: np.ndarray, inverse: bool, scale: float = 1.0) -> Pair:
    """``(C, S)`` float32 with ``C + iS = scale * exp(-+i angles)`` (``+`` for the inverse)."""
    sign = 1 if inverse else -1
    return (np.cos(angles) * scale).astype(np.float32), (np.sin(angles) * scale * sign).astype(np.float32)


def _unscaled(n: int, inverse: bool, scale: float = 1.0) -> Pair:
    k = np.arange(n)
    return _pair(2 * np.pi * (np.outer(k, k) % n) / n, inverse, scale)


@functools.cache
def dft_pair(n: int, inverse: bool, norm: str | None) -> Pair:
    """``(C, S)`` float32, both symmetric, with the dense 1-D DFT of size ``n`` as ``C + iS`` (``norm`` as
    ``torch.fft``). ``dft_pair(n, True, "ortho")`` is also ``(C, S)`` of the orthonormal forward DFT ``C - iS``."""
    return _unscaled(n, inverse, norm_scale(n, inverse, norm))


@functools.cache
def factors(n: int) -> tuple[int, int] | None:
    """``(N1, N2)`` with ``N1 * N2 = n`` and ``N1 <= N2`` the divisor closest to ``sqrt(n)``; ``None`` (dense) for a
    prime or small ``n``."""
    if n <= DENSE_UP_TO:
        return None
    first = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return None if first == 1 else (first, n // first)


@functools.cache
def _factored(n: int, inverse: bool, norm: str | None) -> tuple[Pair, Pair]:
    """The DFT along ``N1`` (carrying ``norm``'s scale), and ``(N1, N2, N2)``: for each ``k1`` the DFT along ``N2``
    with the twiddles ``W_N^(n2 k1)`` folded into its columns (``[k1, k2, n2]``)."""
    first, second = factors(n)
    k1, k2, n2 = np.arange(first)[:, None, None], np.arange(second)[None, :, None], np.arange(second)[None, None, :]
    angles = 2 * np.pi * ((k2 * n2 % second) / second + (k1 * n2 % n) / n)
    return _unscaled(first, inverse, norm_scale(n, inverse, norm)), _pair(angles, inverse)


def _constant(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(array).to(device=like.device, dtype=like.dtype)


def _times(real: torch.Tensor, imag: torch.Tensor | None, pair: Pair, left: bool, real_only: bool = False
           ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(real + i imag)`` times the complex matrix ``C + iS`` from the left (``M @ x``) or right (``x @ M``);
    ``imag=None`` is a real input, ``real_only`` skips the imaginary part of the result."""
    cos, sin = (_constant(matrix, real) for matrix in pair)

    def product(matrix: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return matrix @ values if left else values @ matrix

    out_real = product(cos, real) if imag is None else product(cos, real) - product(sin, imag)
    if real_only:
        return out_real, None
    return out_real, product(sin, real) if imag is None else product(sin, real) + product(cos, imag)


def _second_last(real: torch.Tensor, imag: torch.Tensor | None, inverse: bool, norm: str | None, real_only: bool
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The DFT along axis -2 of ``(..., N, W)``: left products, every one over ``W`` columns at once."""
    n, width = real.shape[-2:]
    split = factors(n)
    if split is None:
        return _times(real, imag, dft_pair(n, inverse, norm), left=True, real_only=real_only)
    first, second = split
    outer, inner = _factored(n, inverse, norm)
    # (..., N, W) -> (..., N1, N2 * W) with n = N2 n1 + n2: along N1.
    real, imag = (None if part is None else part.unflatten(-2, (first, second)).flatten(-2) for part in (real, imag))
    real, imag = _times(real, imag, outer, left=True)
    # (..., N1, N2, W): along N2, the twiddles of row k1 in its matrix (a product batched over k1).
    real, imag = (part.unflatten(-1, (second, width)) for part in (real, imag))
    real, imag = _times(real, imag, inner, left=True, real_only=real_only)
    # (k1, k2) -> k = k1 + N1 k2: the transposed order, flattened.
    return tuple(None if part is None else part.transpose(-3, -2).flatten(-3, -2) for part in (real, imag))


def dft(real: torch.Tensor, imag: torch.Tensor | None, dim: int, inverse: bool, norm: str | None = "backward",
        real_only: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """1-D DFT (``torch.fft.fft``/``ifft`` with ``norm``) of ``real + i imag`` along ``dim`` as real matrix products;
    ``imag=None`` for a real input; ``real_only`` returns ``(real part, None)`` and saves its imaginary products.

    A dense last axis is one right product; any other axis is moved to -2 (the last one transposed), so that the
    small factored products each run over a whole row of columns rather than over many tiny matrices."""
    dim = dim - real.dim() if dim >= 0 else dim
    if dim == -1 and factors(real.shape[-1]) is None:
        return _times(real, imag, dft_pair(real.shape[-1], inverse, norm), left=False, real_only=real_only)
    if real.dim() == 1:
        def move(part: torch.Tensor) -> torch.Tensor:
            return part[:, None]

        def back(part: torch.Tensor) -> torch.Tensor:
            return part[:, 0]
    else:
        def move(part: torch.Tensor) -> torch.Tensor:
            return part.movedim(dim, -2)

        def back(part: torch.Tensor) -> torch.Tensor:
            return part.movedim(-2, dim)
    out = _second_last(move(real), None if imag is None else move(imag), inverse, norm, real_only)
    return tuple(None if part is None else back(part) for part in out)
