"""The DFT as real matrix products (:mod:`kdc.export.dft`): equal to numpy.fft dense or factored, and exported with
dynamic batch and coil dimensions to a graph that ONNX Runtime and OpenVINO run with small matrices only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kdc.export.architectures import LoweredGraph
from kdc.export.dft import dft, dft_pair, factors
from kdc.export.formats import OnnxArtefact
from kdc.export.lowerings import dft_matrices
from kdc.runtime.session import openvino_core

SIZES = (8, 12, 20, 23, 64, 320)


def test_factors_split_near_the_square_root_and_keep_primes_and_small_sizes_dense():
    assert [factors(n) for n in SIZES] == [None, None, (4, 5), None, (8, 8), (16, 20)]
    assert factors(368) == (16, 23) and factors(2 * 23) == (2, 23)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("inverse", [False, True], ids=["fft", "ifft"])
@pytest.mark.parametrize("norm", ["backward", "forward", "ortho"])
@pytest.mark.parametrize("data", ["real", "complex"])
def test_dft_equals_numpy_fft_along_any_axis(n, inverse, norm, data):
    rng = np.random.default_rng(n)
    for axis, shape in ((-1, (2, 3, n)), (-2, (2, n, 5)), (0, (n, 3, 2))):
        signal = rng.standard_normal(shape) + (1j * rng.standard_normal(shape) if data == "complex" else 0)
        expected = (np.fft.ifft if inverse else np.fft.fft)(signal, axis=axis, norm=norm)
        imag = torch.tensor(signal.imag, dtype=torch.float32) if data == "complex" else None
        real_part, imag_part = dft(torch.tensor(signal.real, dtype=torch.float32), imag, axis, inverse, norm)
        got = real_part.numpy() + 1j * imag_part.numpy()
        assert got.shape == shape
        np.testing.assert_allclose(got, expected, atol=2e-6 * np.abs(expected).max(), rtol=0)
        real_only, none = dft(torch.tensor(signal.real, dtype=torch.float32), imag, axis, inverse, norm, real_only=True)
        assert none is None and torch.equal(real_only, real_part)


def test_dense_pair_is_the_orthonormal_dft_of_the_masked_lowering():
    cos, sin = dft_matrices(150)
    assert np.array_equal(cos.numpy(), dft_pair(150, True, "ortho")[0])
    signal = np.random.default_rng(0).standard_normal(150)
    expected = np.fft.fft(signal, norm="ortho")
    np.testing.assert_allclose(cos.numpy() @ signal, expected.real, atol=1e-5)
    np.testing.assert_allclose(-(sin.numpy() @ signal), expected.imag, atol=1e-5)


class CentredSpectra(nn.Module):
    """fastMRI's ``fft2c`` of ``(N, C, H, W, 2)`` and an unnormalised inverse along H, stacked."""

    def forward(self, data: torch.Tensor) -> torch.Tensor:
        z = torch.view_as_complex(data)
        centred = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(z, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
        return torch.stack([torch.view_as_real(centred), torch.view_as_real(torch.fft.ifft(z, dim=-2))])


def test_exported_dft_matches_numpy_in_onnxruntime_and_openvino_with_any_coil_count(tmp_path):
    size = (20, 18)  # both factored: 4 x 5 and 3 x 6
    graph = LoweredGraph(CentredSpectra(), (), {0: {1: "C"}}).eval()
    artefact = OnnxArtefact(graph, (torch.randn(2, 3, *size, 2),), ["kspace"], tmp_path)
    largest = max(max(initializer.dims, default=0) for initializer in artefact.proto.graph.initializer)
    assert largest <= 6  # the N1 x N1 and N2 x N2 products and twiddles, no 20 x 20 or 18 x 18 matrix
    path = tmp_path / "spectra.onnx"
    path.write_bytes(artefact.proto.SerializeToString())
    openvino = openvino_core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for batch, coils in ((1, 4), (3, 1)):
        data = np.random.default_rng(coils).standard_normal((batch, coils, *size, 2)).astype(np.float32)
        z = data[..., 0] + 1j * data[..., 1]
        centred = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(z, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
        expected = np.stack([np.stack([part.real, part.imag], -1) for part in (centred, np.fft.ifft(z, axis=-2))])
        for got in (artefact.session.run(None, {"kspace": data})[0], openvino(data)[0]):
            np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
