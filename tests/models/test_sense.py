"""kdc's multi-coil SENSE models: SENSE operators (against fastMRI's), the calibration region, data consistency,
any coil count, scale equivariance and the presets' sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdc.models import SenseDCCNN, SenseVarNet, build_model
from kdc.models.sense import centre_lines, expand, fft2c, ifft2c, reduce, root_sum_of_squares
from kdc.models.sense_dccnn import hard_dc
from kdc.models.sense_varnet import soft_dc
from kdc.mri.fft import fft2c as numpy_fft2c
from kdc.mri.masks import cartesian_mask
from kdc.mri.simulate import complex_coil_images
from tests.conftest import make_phantom

SIZE = (24, 20)


def coil_inputs(coils: int, slices: int = 2, size: tuple[int, int] = SIZE, seed: int = 0):
    """Centred 4x-undersampled coil k-space ``(N, C, H, W, 2)`` of phantoms and its centred column mask."""
    kspace = numpy_fft2c(complex_coil_images(make_phantom(slices, *size, seed=seed), coils=coils, seed=seed))
    mask = np.fft.fftshift(cartesian_mask("random", 4, size, seed=seed)[0]).astype(np.float32)
    pairs = np.stack([kspace.real, kspace.imag], axis=-1).astype(np.float32) * mask[:, None]
    return torch.from_numpy(pairs), torch.from_numpy(mask.reshape(1, 1, 1, -1, 1))


def trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every parameter nudged, so the zero-initialised last convolutions act too."""
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model.eval()


@pytest.mark.parametrize("cls", [SenseVarNet, SenseDCCNN])
def test_one_model_takes_any_coil_count_and_odd_sizes(cls):
    model = trained_like(cls(2, 4, 1, 2, 1) if cls is SenseVarNet else cls(2, 2, 4, 2, 1))
    with torch.no_grad():
        for coils, size in ((4, SIZE), (6, SIZE), (3, (15, 13))):
            kspace, mask = coil_inputs(coils, size=size)
            image = model(kspace, mask)
            assert image.shape == (2, *size) and torch.isfinite(image).all()


@pytest.mark.parametrize("cls", [SenseVarNet, SenseDCCNN])
def test_an_untrained_model_is_the_zero_filled_reconstruction_of_its_data_consistency(cls):
    """The regularisers start at zero: the VarNet returns the zero-filled RSS, the SENSE DC-CNN iterates SENSE
    projection onto the measured lines once per cascade, starting from ``E^H k0``."""
    kspace, mask = coil_inputs(4)
    model = cls().eval()
    with torch.no_grad():
        image = model(kspace, mask)
        if cls is SenseVarNet:
            expected = root_sum_of_squares(ifft2c(kspace))
        else:
            sens, current = model.sensitivities(kspace, mask), kspace
            for _ in model.cascades:
                current = hard_dc(expand(reduce(current, sens), sens), kspace, mask)
            expected = root_sum_of_squares(ifft2c(current))
    torch.testing.assert_close(image, expected, rtol=1e-5, atol=1e-6)


def test_data_consistency_keeps_the_measured_lines():
    """Hard DC (infinite weight) puts the measured lines back exactly, soft DC at unit weight up to rounding; both
    leave the other lines alone."""
    measured, mask = coil_inputs(4)
    estimate = torch.randn_like(measured)
    sampled = mask[0, 0, 0, :, 0].bool()
    softened = estimate - soft_dc(estimate, measured, mask, torch.ones(1))
    for consistent, tolerance in ((hard_dc(estimate, measured, mask), 0.0), (softened, 1e-6)):
        torch.testing.assert_close(consistent[..., sampled, :], measured[..., sampled, :], rtol=0, atol=tolerance)
        torch.testing.assert_close(consistent[..., ~sampled, :], estimate[..., ~sampled, :], rtol=0, atol=0)


def test_centre_lines_are_the_sampled_run_around_the_centre_column():
    columns = torch.zeros(2, 1, 1, 16, 1)
    columns[0, ..., [1, 6, 7, 8, 9, 10, 13], :] = 1  # run 6..10 around column 8, two lines apart
    columns[1, ..., [7, 9], :] = 1  # the centre column not sampled: no calibration lines
    region = centre_lines(columns)[:, 0, 0, :, 0]
    assert region[0].nonzero().flatten().tolist() == [6, 7, 8, 9, 10]
    assert not region[1].any()


def test_sensitivities_are_normalised_and_the_model_is_scale_equivariant():
    model = trained_like(SenseVarNet(2, 4, 1, 2, 1))
    kspace, mask = coil_inputs(5)
    with torch.no_grad():
        sens = model.sensitivities(kspace, mask)
        energy = (sens ** 2).sum(dim=(-1, 1))
        torch.testing.assert_close(energy, torch.ones_like(energy), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model(1000 * kspace, mask), 1000 * model(kspace, mask), rtol=1e-4, atol=1e-3)


def test_sense_operators_equal_fastmris():
    transforms = pytest.importorskip("fastmri")
    from fastmri.models.varnet import VarNetBlock

    kspace, _ = coil_inputs(4)
    sens = torch.randn_like(kspace)
    image = torch.randn(2, 1, *SIZE, 2)
    block = VarNetBlock(torch.nn.Identity())
    torch.testing.assert_close(fft2c(image), transforms.fft2c(image), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ifft2c(kspace), transforms.ifft2c(kspace), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(expand(image, sens), block.sens_expand(image, sens), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reduce(kspace, sens), block.sens_reduce(kspace, sens), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(root_sum_of_squares(ifft2c(kspace)),
                               transforms.rss(transforms.complex_abs(transforms.ifft2c(kspace)), dim=1))


@pytest.mark.parametrize("preset, parameters", [("multicoil_teacher", 424_772), ("multicoil_student", 95_647),
                                                ("multicoil_dccnn", 22_008)])
def test_presets_have_the_documented_sizes(preset, parameters):
    model = build_model(preset)
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert build_model(model.config).config == model.config
