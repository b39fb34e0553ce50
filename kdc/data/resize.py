"""Fit images to a shape: centred zero padding to the target's aspect ratio, then antialiased linear resampling.

Numpy only. Resampling is separable, ``out = Ry @ image @ Rx.T``, with a triangle filter widened by the
downsampling factor (what PIL and ``torch.nn.functional.interpolate(..., antialias=True)`` do), so every output
pixel is a convex combination of input pixels and [0, 1] images stay in [0, 1].
"""

from __future__ import annotations

import numpy as np


def resample_matrix(size_in: int, size_out: int) -> np.ndarray:
    """``(size_out, size_in)`` weights of antialiased linear resampling along one axis (pixel centres aligned)."""
    scale = size_in / size_out
    support = max(scale, 1.0)
    centres = (np.arange(size_out) + 0.5) * scale - 0.5
    weights = np.maximum(0.0, 1.0 - np.abs(np.arange(size_in)[None, :] - centres[:, None]) / support)
    return weights / weights.sum(axis=1, keepdims=True)


def pad_to_aspect(images: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Zero-pad ``(..., h, w)`` images, centred, to the aspect ratio of ``shape`` (never crops)."""
    height, width = images.shape[-2:]
    target_h, target_w = shape
    padded_h = max(height, round(width * target_h / target_w))
    padded_w = max(width, round(height * target_w / target_h))
    pad_h, pad_w = padded_h - height, padded_w - width
    pads = [(0, 0)] * (images.ndim - 2) + [(pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)]
    return np.pad(images, pads)


def fit_images(images: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pad ``(..., h, w)`` images to the aspect ratio of ``shape`` and resample them to ``shape`` (float32)."""
    padded = pad_to_aspect(np.asarray(images, dtype=np.float64), shape)
    rows = resample_matrix(padded.shape[-2], shape[0])
    cols = resample_matrix(padded.shape[-1], shape[1])
    return (rows @ padded @ cols.T).astype(np.float32)
