"""Reconstruction metrics on 2-D slices ``(H, W)`` or volumes ``(S, H, W)``, numpy only, as fastMRI defines them.

PSNR and SSIM use ``data_range = gt.max()`` over the whole volume; SSIM is scikit-image's
``structural_similarity`` with its defaults (7x7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance,
mean over the windows that fit in the image), averaged over slices. HFEN is Ravishankar & Bresler's
``||LoG(pred) - LoG(gt)|| / ||LoG(gt)||`` with MATLAB's ``fspecial('log', 15, 1.5)`` and symmetric borders.
"""

from __future__ import annotations

import numpy as np

from kdc.data.errors import DataError

SSIM_WINDOW = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _pair(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as float64 ``(S, H, W)`` stacks, if they have the same 2-D or 3-D shape."""
    gt, pred = np.asarray(gt, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if gt.shape != pred.shape or gt.ndim not in (2, 3):
        raise DataError(f"metrics: expected gt and pred of one (H, W) or (S, H, W) shape, got {gt.shape}, {pred.shape}")
    return (gt[None], pred[None]) if gt.ndim == 2 else (gt, pred)


def nmse(gt: np.ndarray, pred: np.ndarray) -> float:
    """Normalised mean squared error ``||gt - pred||^2 / ||gt||^2``."""
    gt, pred = _pair(gt, pred)
    return float(np.sum((gt - pred) ** 2) / np.sum(gt**2))


def psnr(gt: np.ndarray, pred: np.ndarray, maxval: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB, with the peak ``maxval`` (default ``gt.max()``)."""
    gt, pred = _pair(gt, pred)
    peak = gt.max() if maxval is None else maxval
    return float(10 * np.log10(peak**2 / np.mean((gt - pred) ** 2)))


def ssim(gt: np.ndarray, pred: np.ndarray, maxval: float | None = None) -> float:
    """Structural similarity, mean over slices, with the data range ``maxval`` (default ``gt.max()``)."""
    gt, pred = _pair(gt, pred)
    if min(gt.shape[-2:]) < SSIM_WINDOW:
        raise DataError(f"ssim: images must be at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {gt.shape[-2:]}")
    data_range = gt.max() if maxval is None else maxval
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2

    def window_mean(image: np.ndarray) -> np.ndarray:
        """Mean over every 7x7 window that fits, from a summed-area table (O(HW), not O(HW * 49))."""
        table = np.pad(image.cumsum(-2).cumsum(-1), [(0, 0)] * (image.ndim - 2) + [(1, 0), (1, 0)])
        w = SSIM_WINDOW
        sums = table[..., w:, w:] - table[..., :-w, w:] - table[..., w:, :-w] + table[..., :-w, :-w]
        return sums / w**2

    count = SSIM_WINDOW**2
    covariance = count / (count - 1)  # sample covariance, as scikit-image's default
    mean_x, mean_y = window_mean(gt), window_mean(pred)
    var_x = covariance * (window_mean(gt * gt) - mean_x**2)
    var_y = covariance * (window_mean(pred * pred) - mean_y**2)
    cov_xy = covariance * (window_mean(gt * pred) - mean_x * mean_y)
    numerator = (2 * mean_x * mean_y + c1) * (2 * cov_xy + c2)
    denominator = (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
    return float(np.mean((numerator / denominator).mean(axis=(-2, -1))))


def log_kernel(size: int = 15, sigma: float = 1.5) -> np.ndarray:
    """Laplacian of Gaussian, as MATLAB's ``fspecial('log', size, sigma)``: zero sum, ``(size, size)``."""
    half = (size - 1) / 2
    x, y = np.meshgrid(np.arange(-half, half + 1), np.arange(-half, half + 1))
    radius2, var = x**2 + y**2, sigma**2
    gaussian = np.exp(-radius2 / (2 * var))
    gaussian[gaussian < np.finfo(float).eps * gaussian.max()] = 0
    gaussian /= gaussian.sum()
    kernel = gaussian * (radius2 - 2 * var) / var**2
    return kernel - kernel.mean()


def filter2d(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate the last two axes with ``kernel``, symmetric borders (MATLAB ``imfilter(..., 'symmetric')``)."""
    rows, cols = kernel.shape
    height, width = images.shape[-2:]
    pads = [(0, 0)] * (images.ndim - 2) + [(rows // 2, rows - 1 - rows // 2), (cols // 2, cols - 1 - cols // 2)]
    padded = np.pad(images, pads, mode="symmetric")
    out = np.zeros(images.shape, dtype=np.float64)
    for (row, col), weight in np.ndenumerate(kernel):
        out += weight * padded[..., row : row + height, col : col + width]
    return out


def hfen(gt: np.ndarray, pred: np.ndarray) -> float:
    """High-frequency error norm ``||LoG(pred) - LoG(gt)||_2 / ||LoG(gt)||_2`` (Ravishankar & Bresler 2011)."""
    gt, pred = _pair(gt, pred)
    kernel = log_kernel()
    edges_gt = filter2d(gt, kernel)
    return float(np.linalg.norm(filter2d(pred, kernel) - edges_gt) / np.linalg.norm(edges_gt))
