"""Hard data consistency on ``torch.fft``: the reference every exported lowering is checked against.

Tensors: k-space ``(B, 2, H, W)`` with real and imaginary parts as channels, **uncentred** (DC term at index 0);
images ``(B, C, H, W)``: ``C = 1`` a real image (the layer returns the real part, as KD-MRI does), ``C = 2`` a
complex image as real and imaginary channels (exact complex DC, nothing dropped); masks ``(B or 1, 1, H or 1,
W or 1)`` holding 0/1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def as_complex(kspace: torch.Tensor) -> torch.Tensor:
    """``(B, 2, H, W)`` real/imag channels -> complex ``(B, 1, H, W)``."""
    return torch.complex(kspace[:, 0:1], kspace[:, 1:2])


def as_channels(kspace: torch.Tensor) -> torch.Tensor:
    """Complex ``(B, 1, H, W)`` -> ``(B, 2, H, W)`` real/imag channels."""
    return torch.cat([kspace.real, kspace.imag], dim=1)


class DataConsistency(nn.Module):
    """Replace the sampled k-space of the image by the measurement: ``x + F^H M (y - F x)`` (its real part for a
    real image)."""

    def __init__(self, image_channels: int = 1) -> None:
        super().__init__()
        self.image_channels = image_channels

    def _image(self, values: torch.Tensor) -> torch.Tensor:
        """Complex ``(B, 1, H, W)`` -> the network's image: real part, or real and imaginary channels."""
        return values.real if self.image_channels == 1 else as_channels(values)

    def zero_filled(self, kspace: torch.Tensor) -> torch.Tensor:
        """Inverse FFT of the undersampled k-space (its real part for a real image): the network's input image."""
        return self._image(torch.fft.ifft2(as_complex(kspace), norm="ortho"))

    def bind(self, kspace: torch.Tensor, mask: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The DC step of every cascade for one k-space and mask: ``bind(kspace, mask)(image) == self(image,
        kspace, mask)``. An export lowering computes here, once, what does not depend on the image (the zero-filled
        image, the projection), so that it is outside the cascades' loop in every graph traced from the model."""
        return lambda image: self(image, kspace, mask)

    def forward(self, image: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        values = image.to(torch.complex64) if self.image_channels == 1 else as_complex(image)
        residual = mask * (as_complex(kspace) - torch.fft.fft2(values, norm="ortho"))
        return image + self._image(torch.fft.ifft2(residual, norm="ortho"))
