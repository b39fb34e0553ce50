"""SENSE building blocks of kdc's multi-coil models, in fastMRI's layout: complex values as a last axis of 2.

Tensors: coil k-space ``(N, C, H, W, 2)`` **centred** (DC term at ``(H/2, W/2)``), orthonormal; images ``(N, 1, H,
W, 2)``; coil sensitivities ``(N, C, H, W, 2)`` with ``sum_c |S_c|^2 = 1`` wherever there is signal; column masks
``(N or 1, 1, 1, W, 1)`` holding 0/1. Products and sums are written on the real pairs; only the FFTs go through
complex tensors, which :mod:`kdc.export.complex_lowering` turns into matrix products at export. The coil count is
never fixed: one model (and one exported file) takes any number of coils.

- :func:`expand`: ``E x = F(S x)``, the image to every coil's k-space; :func:`reduce`: ``E^H k = sum_c conj(S_c)
  F^H k_c``, every coil's k-space to one image;
- :func:`centre_lines`: the auto-calibration region of a column mask, the run of sampled columns around the centre;
- :class:`NormalisedRegulariser`: a U-Net correction of a complex image normalised per slice (so a model is
  scale-equivariant: k-space at any scale gives the image at that scale), zero when untrained;
- :class:`SensitivityNet`: coil sensitivities learned from the centre lines (E2E-VarNet's idea, kdc's compact
  module): the centre lines' coil images, corrected per coil by a small U-Net, divided by their root sum of squares.
"""

from __future__ import annotations

import torch
from torch import nn

from kdc.models.unet import UNet

#: Added to a root sum of squares or a standard deviation before dividing by it.
EPS = 1e-12


def complex_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a * b`` of complex values stored as ``(..., 2)`` pairs (broadcasting)."""
    real = a[..., 0] * b[..., 0] - a[..., 1] * b[..., 1]
    imag = a[..., 0] * b[..., 1] + a[..., 1] * b[..., 0]
    return torch.stack([real, imag], dim=-1)


def complex_conj(a: torch.Tensor) -> torch.Tensor:
    return torch.stack([a[..., 0], -a[..., 1]], dim=-1)


def root_sum_of_squares(a: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """``sqrt(sum |a|^2)`` over ``dim`` of ``(..., 2)`` pairs (the pair axis dropped)."""
    return (a ** 2).sum(dim=-1).sum(dim=dim).sqrt()


def _centred(a: torch.Tensor, inverse: bool) -> torch.Tensor:
    values = torch.view_as_complex(a.float().contiguous())
    values = torch.fft.ifftshift(values, dim=(-2, -1))
    values = (torch.fft.ifft2 if inverse else torch.fft.fft2)(values, dim=(-2, -1), norm="ortho")
    return torch.view_as_real(torch.fft.fftshift(values, dim=(-2, -1)))


def fft2c(image: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D FFT over ``H, W`` of ``(..., H, W, 2)`` (fastMRI's ``fft2c``)."""
    return _centred(image, inverse=False)


def ifft2c(kspace: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal inverse 2-D FFT over ``H, W`` of ``(..., H, W, 2)``."""
    return _centred(kspace, inverse=True)


def expand(image: torch.Tensor, sens: torch.Tensor) -> torch.Tensor:
    """``(N, 1, H, W, 2)`` image -> ``(N, C, H, W, 2)`` coil k-space ``F(S x)``."""
    return fft2c(complex_mul(image, sens))


def reduce(kspace: torch.Tensor, sens: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W, 2)`` coil k-space -> ``(N, 1, H, W, 2)`` image ``sum_c conj(S_c) F^H k_c``."""
    return complex_mul(ifft2c(kspace), complex_conj(sens)).sum(dim=1, keepdim=True)


def centre_lines(mask: torch.Tensor) -> torch.Tensor:
    """The auto-calibration columns of a centred column mask ``(B, 1, 1, W, 1)``: the sampled columns joined to the
    centre column ``W // 2`` by sampled columns only (none when the centre is not sampled). Written with a cumulative
    sum and comparisons, so the mask stays an input of an exported graph."""
    width = mask.shape[-2]
    centre = width // 2
    gaps = torch.cumsum(1.0 - mask.reshape(mask.shape[0], width).float(), dim=-1)  # unsampled columns in [0, j]
    column = torch.arange(width, device=mask.device)
    right = gaps - gaps[:, centre - 1 : centre]  # unsampled in [centre, j]
    left = gaps[:, centre : centre + 1] - gaps + (1.0 - mask.reshape(mask.shape[0], width).float())  # in [j, centre]
    count = torch.where(column >= centre, right, left)
    return (count == 0).to(mask.dtype).reshape(mask.shape[0], 1, 1, width, 1)


class NormalisedRegulariser(nn.Module):
    """A correction of complex images ``(B, 1, H, W, 2)`` -> ``(B, 1, H, W, 2)``: a U-Net on the real and imaginary
    parts as two channels, normalised per image (minus the mean, over the standard deviation), its output times the
    standard deviation. The U-Net's last convolution starts at zero, so an untrained model corrects nothing (a
    VarNet starts as the zero-filled reconstruction, the sensitivities as the centre lines' coil images)."""

    def __init__(self, channels: int, pools: int) -> None:
        super().__init__()
        self.unet = UNet(2, 2, channels, pools)
        nn.init.zeros_(self.unet.out.weight)
        nn.init.zeros_(self.unet.out.bias)

    def forward_features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The correction and the U-Net's first block's activations ``(B, channels, H, W)``."""
        batch, _, height, width, _ = image.shape
        channels = image.reshape(batch, height, width, 2).permute(0, 3, 1, 2)
        flat = channels.reshape(batch, -1)
        mean = flat.mean(dim=1).reshape(batch, 1, 1, 1)
        std = flat.std(dim=1).reshape(batch, 1, 1, 1) + EPS
        output, feature = self.unet.forward_features((channels - mean) / std)
        output = output.float() * std
        return output.permute(0, 2, 3, 1).reshape(batch, 1, height, width, 2), feature

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.forward_features(image)[0]


class SensitivityNet(nn.Module):
    """Coil sensitivities ``(N, C, H, W, 2)`` from the centre lines of the undersampled k-space: each coil's
    low-resolution image plus a :class:`NormalisedRegulariser`'s correction (coils folded into the batch, so any coil
    count works), divided by the root sum of squares over coils."""

    def __init__(self, channels: int, pools: int) -> None:
        super().__init__()
        self.refine = NormalisedRegulariser(channels, pools)

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, _, height, width, _ = kspace.shape
        images = ifft2c(kspace * centre_lines(mask))
        coils = images.reshape(-1, 1, height, width, 2)
        maps = (coils + self.refine(coils)).reshape(batch, -1, height, width, 2)
        return maps / (root_sum_of_squares(maps).reshape(batch, 1, height, width, 1) + EPS)
