import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

from kdc.data import DataError
from kdc.data.metrics import fastmri_evaluate, fastmri_target, filter2d, hfen, log_kernel, nmse, psnr, ssim
from kdc.mri.fft import fft2


@pytest.fixture
def volume_pair(phantom):
    gt = phantom(3, 40, 33).astype(np.float64)
    noise = np.random.default_rng(1).normal(scale=0.05, size=gt.shape)
    return gt, np.clip(gt + noise, 0, None)


def test_agrees_with_scikit_image_on_a_slice(volume_pair):
    gt, pred = volume_pair[0][1], volume_pair[1][1]
    assert psnr(gt, pred) == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=gt.max()), abs=1e-6)
    assert ssim(gt, pred) == pytest.approx(structural_similarity(gt, pred, data_range=gt.max()), abs=1e-6)
    assert nmse(gt, pred) == pytest.approx(normalized_root_mse(gt, pred) ** 2, abs=1e-9)


def test_volume_metrics_follow_fastmri(volume_pair):
    gt, pred = volume_pair
    data_range = gt.max()
    per_slice = np.mean([structural_similarity(g, p, data_range=data_range) for g, p in zip(gt, pred)])
    assert ssim(gt, pred) == pytest.approx(per_slice, abs=1e-6)
    assert psnr(gt, pred) == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=data_range), abs=1e-6)
    assert psnr(gt, pred, maxval=2.0) == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=2.0), abs=1e-6)
    assert ssim(gt, pred, maxval=2.0) == pytest.approx(
        np.mean([structural_similarity(g, p, data_range=2.0) for g, p in zip(gt, pred)]), abs=1e-6
    )


def test_float32_inputs_are_computed_in_float64(volume_pair):
    gt, pred = volume_pair
    assert ssim(gt.astype(np.float32), pred.astype(np.float32)) == pytest.approx(ssim(gt, pred), abs=1e-6)


def test_log_kernel_matches_matlab_fspecial():
    # MATLAB: fspecial('log', 3, 0.5)
    expected = [[0.4038, 0.8021, 0.4038], [0.8021, -4.8233, 0.8021], [0.4038, 0.8021, 0.4038]]
    np.testing.assert_allclose(log_kernel(3, 0.5), expected, atol=1e-4)
    kernel = log_kernel()
    assert kernel.shape == (15, 15) and abs(kernel.sum()) < 1e-12
    np.testing.assert_allclose(kernel, kernel.T)
    assert kernel[7, 7] == kernel.min() < 0


def test_filter_matches_scipy_with_symmetric_borders(volume_pair):
    image = volume_pair[0][0]
    np.testing.assert_allclose(filter2d(image, log_kernel()), ndimage.correlate(image, log_kernel(), mode="reflect"))


def test_hfen_properties(volume_pair):
    gt, pred = volume_pair
    assert hfen(gt, gt) == 0
    assert hfen(3 * gt, 3 * pred) == pytest.approx(hfen(gt, pred))
    blurred = ndimage.gaussian_filter(gt, sigma=(0, 1, 1))
    more_blurred = ndimage.gaussian_filter(gt, sigma=(0, 2, 2))
    assert 0 < hfen(gt, blurred) < hfen(gt, more_blurred)
    log_gt, log_pred = ndimage.gaussian_laplace(gt[0], 1.5), ndimage.gaussian_laplace(pred[0], 1.5)
    independent = np.linalg.norm(log_pred - log_gt) / np.linalg.norm(log_gt)
    assert hfen(gt[0], pred[0]) == pytest.approx(independent, rel=0.1)


def test_mismatched_shapes_are_refused():
    with pytest.raises(DataError, match=r"got \(8, 8\), \(8, 9\)"):
        psnr(np.ones((8, 8)), np.ones((8, 9)))
    with pytest.raises(DataError, match="at least 7x7"):
        ssim(np.ones((5, 8)), np.ones((5, 8)))


def test_metrics_need_neither_torch_nor_scipy():
    code = "import sys, kdc.data.metrics; print(sorted({'torch', 'scipy', 'h5py'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def fastmri_functions() -> dict:
    """fastMRI's own ``evaluate.mse/nmse/psnr/ssim`` and ``data.transforms.center_crop``, run from the installed
    package's source (``pip install --no-deps fastmri``: its package imports torch, pandas and runstats, which these
    functions do not use, so only their definitions are executed)."""
    import ast
    import importlib.util
    from pathlib import Path
    from typing import Optional, Tuple

    spec = importlib.util.find_spec("fastmri")
    if spec is None or spec.origin is None:
        pytest.skip("fastmri not installed (make install runs pip install --no-deps fastmri): "
                    "kdc's metrics not compared with fastMRI's evaluate")
    package = Path(spec.origin).parent
    namespace = {"np": np, "Optional": Optional, "Tuple": Tuple, "torch": type("torch", (), {"Tensor": np.ndarray}),
                 "peak_signal_noise_ratio": peak_signal_noise_ratio, "structural_similarity": structural_similarity}
    for source, names in ((package / "evaluate.py", {"mse", "nmse", "psnr", "ssim"}),
                          (package / "data" / "transforms.py", {"center_crop"})):
        tree = ast.parse(source.read_text())
        definitions = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in names]
        assert {node.name for node in definitions} == names, f"{source}: fastMRI changed"
        exec(compile(ast.Module(definitions, type_ignores=[]), str(source), "exec"), namespace)
    return namespace


def test_fastmri_evaluate_matches_fastmris_own_code_on_an_rss_target(phantom):
    """A 4-coil volume wider than the crop: kdc's RSS target and scores against fastMRI's functions, which score
    float32 volumes (as fastMRI's h5 files hold them) in float32."""
    fastmri = fastmri_functions()
    rng = np.random.default_rng(0)
    images = phantom(3, 40, 36)[:, None] * (1 + rng.random((1, 4, 1, 1)))
    kspace = fft2(images * np.exp(1j * rng.random(images.shape)))
    target = fastmri_target(kspace, crop=(32, 24)).astype(np.float32)
    rss = np.sqrt((np.abs(images) ** 2).sum(axis=1))
    np.testing.assert_allclose(target, fastmri["center_crop"](rss, (32, 24)), rtol=1e-5, atol=1e-6)
    reconstruction = (rss + rng.normal(scale=0.05, size=rss.shape)).astype(np.float32)  # uncropped: 40x36
    ours = fastmri_evaluate(target, reconstruction)
    gt = fastmri["center_crop"](target, (24, 24))  # evaluate.py: both cropped to the target's width squared
    cropped = fastmri["center_crop"](reconstruction, (24, 24))
    assert ours["psnr"] == pytest.approx(fastmri["psnr"](gt, cropped), abs=1e-4)
    assert ours["ssim"] == pytest.approx(float(fastmri["ssim"](gt, cropped)[0]), abs=1e-5)
    assert ours["nmse"] == pytest.approx(float(fastmri["nmse"](gt, cropped)), rel=1e-5)
    assert ours["mse"] == pytest.approx(float(fastmri["mse"](gt, cropped)), rel=1e-5)
    with pytest.raises(DataError, match=r"cannot crop target \(3, 32, 24\) and reconstruction \(3, 20, 20\)"):
        fastmri_evaluate(target, reconstruction[:, :20, :20])
