"""Reconstruction metrics on 2-D slices ``(H, W)`` or volumes ``(S, H, W)``, numpy only, as fastMRI defines them.

PSNR and SSIM use ``data_range = gt.max()`` over the whole volume; SSIM is scikit-image's
``structural_similarity`` with its defaults (7x7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance,
mean over the windows that fit in the image), averaged over slices. HFEN is Ravishankar & Bresler's
``||LoG(pred) - LoG(gt)|| / ||LoG(gt)||`` with MATLAB's ``fspecial('log', 15, 1.5)`` and symmetric borders.

:func:`fastmri_evaluate` is fastMRI's ``evaluate.py`` for one volume: both volumes centre-cropped to the target's
width squared, then MSE, NMSE, PSNR and SSIM as above; with :func:`fastmri_target` (the root sum of squares of the
fully sampled coils, cropped to 320x320, fastMRI's ``reconstruction_rss``) as the target, kdc's numbers sit beside
fastMRI's. They agree with fastMRI's own functions to float32 rounding (fastMRI computes float32 data in float32,
kdc in float64; tests/data/test_metrics.py).
"""

from __future__ import annotations

import numpy as np

from kdc.data.errors import DataError
from kdc.mri.coils import root_sum_of_squares
from kdc.mri.fft import ifft2
from kdc.mri.layout import centre_crop

SSIM_WINDOW = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03
#: fastMRI's evaluation crop: ``reconstruction_rss`` is the central 320x320 of the RSS image.
FASTMRI_CROP = (320, 320)


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


def mse(gt: np.ndarray, pred: np.ndarray) -> float:
    """Mean squared error."""
    gt, pred = _pair(gt, pred)
    return float(np.mean((gt - pred) ** 2))


def fastmri_target(kspace: np.ndarray, crop: tuple[int, int] = FASTMRI_CROP) -> np.ndarray:
    """fastMRI's multi-coil target from fully sampled uncentred ``(..., C, H, W)`` k-space: the root sum of squares
    of the coil images, centre-cropped to ``crop`` (``reconstruction_rss``)."""
    return centre_crop(root_sum_of_squares(ifft2(kspace)), crop)


def fastmri_evaluate(target: np.ndarray, reconstruction: np.ndarray) -> dict[str, float]:
    """One volume scored as fastMRI's ``evaluate.py`` scores it: both ``(S, H, W)`` volumes centre-cropped to
    ``(W, W)`` of the target, then MSE, NMSE, PSNR and SSIM with the volume's maximum as data range."""
    target, reconstruction = np.asarray(target), np.asarray(reconstruction)
    if target.ndim != 3:
        raise DataError(f"fastMRI evaluation: expected an (S, H, W) target volume, got shape {target.shape}")
    side = target.shape[-1]
    if reconstruction.ndim != 3 or min(reconstruction.shape[-2:]) < side or target.shape[-2] < side:
        raise DataError(f"fastMRI evaluation: cannot crop target {target.shape} and reconstruction "
                        f"{reconstruction.shape} to {side}x{side}")
    target, reconstruction = centre_crop(target, (side, side)), centre_crop(reconstruction, (side, side))
    return {"mse": mse(target, reconstruction), "nmse": nmse(target, reconstruction),
            "psnr": psnr(target, reconstruction), "ssim": ssim(target, reconstruction)}
