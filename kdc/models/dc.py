"""Hard data consistency on ``torch.fft``: the reference every exported lowering is checked against.

Tensors: k-space ``(B, 2, H, W)`` with real and imaginary parts as channels, **uncentred** (DC at index 0);
images ``(B, 1, H, W)`` real; masks ``(B or 1, 1, H or 1, W)`` holding 0/1. The network's image is real, so the
layer returns the real part, as KD-MRI does.
"""

from __future__ import annotations

import torch
from torch import nn


def as_complex(kspace: torch.Tensor) -> torch.Tensor:
    """``(B, 2, H, W)`` real/imag channels -> complex ``(B, 1, H, W)``."""
    return torch.complex(kspace[:, 0:1], kspace[:, 1:2])


def as_channels(kspace: torch.Tensor) -> torch.Tensor:
    """Complex ``(B, 1, H, W)`` -> ``(B, 2, H, W)`` real/imag channels."""
    return torch.cat([kspace.real, kspace.imag], dim=1)


class DataConsistency(nn.Module):
    """Replace the sampled k-space of the image by the measurement: ``x + Re(F^H M (y - F x))``."""

    def zero_filled(self, kspace: torch.Tensor) -> torch.Tensor:
        """Real part of the inverse FFT of the undersampled k-space: the network's input image."""
        return torch.fft.ifft2(as_complex(kspace), norm="ortho").real

    def forward(self, image: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        predicted = torch.fft.fft2(image.to(torch.complex64), norm="ortho")
        residual = mask * (as_complex(kspace) - predicted)
        return image + torch.fft.ifft2(residual, norm="ortho").real
