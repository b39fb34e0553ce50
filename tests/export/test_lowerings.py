import copy

import numpy as np
import pytest
import torch

from kdc.mri.masks import cartesian_mask
from kdc.export.lowerings import LOWERINGS, MaskedLowering, auto_lowering

from .helpers import column_mask, complex_model, line_mask, phased_undersampled, row_mask, tiny_model, undersampled

SIZES = [(150, 150), (240, 240), (640, 368)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", sorted(LOWERINGS))
@pytest.mark.parametrize("baked", [False, True], ids=["mask-input", "baked"])
def test_lowering_matches_reference_model(size, name, baked):
    model = tiny_model()
    mask = cartesian_mask("random", 4, size, seed=1)
    kspace, mask_input = undersampled(size, mask, count=2), column_mask(mask)
    lowered = copy.deepcopy(model)
    lowered.dc = LOWERINGS[name](size, mask if baked else None)
    with torch.no_grad():
        error = (lowered(kspace, mask_input) - model(kspace, mask_input)).abs().max().item()
    assert error < 1e-5


@pytest.mark.parametrize("name", ["matmul", "dft"])
def test_general_lowerings_take_a_2d_mask(name):
    size = (48, 40)
    mask = (np.random.default_rng(0).random(size) < 0.3).astype(np.float32)
    mask[0, 0] = 1
    model = tiny_model()
    kspace = undersampled(size, mask, count=2)
    lowered = copy.deepcopy(model)
    lowered.dc = LOWERINGS[name](size)
    mask_input = torch.from_numpy(mask[None, None])
    with torch.no_grad():
        assert (lowered(kspace, mask_input) - model(kspace, mask_input)).abs().max() < 1e-5


def test_masked_mask_input_serves_another_acceleration():
    size = (64, 48)
    model = tiny_model()
    lowered = copy.deepcopy(model)
    lowered.dc = MaskedLowering(size)
    for acceleration in (4, 8):
        mask = cartesian_mask("equispaced", acceleration, size)
        kspace, mask_input = undersampled(size, mask, count=2), column_mask(mask)
        with torch.no_grad():
            assert (lowered(kspace, mask_input) - model(kspace, mask_input)).abs().max() < 1e-5


def test_masked_refuses_a_2d_mask():
    mask = np.eye(32, dtype=np.float32)
    with pytest.raises(ValueError, match="1-D Cartesian"):
        MaskedLowering((32, 32), mask)


def test_auto_picks_masked_for_columns_and_a_general_lowering_otherwise():
    columns = cartesian_mask("random", 4, (32, 32))
    general = np.eye(32, dtype=np.float32)
    assert auto_lowering(columns, "onnx") == "masked"
    assert auto_lowering(general, "onnx") == "matmul"
    assert auto_lowering(general, "openvino") == "matmul"
    assert auto_lowering(general, "torchscript") == "dft"


@pytest.mark.parametrize("name", sorted(LOWERINGS))
@pytest.mark.parametrize("baked", [False, True], ids=["mask-input", "baked"])
@pytest.mark.parametrize("image", ["magnitude", "complex"])
@pytest.mark.parametrize("lines", ["columns", "rows"])
def test_lowering_is_exact_for_complex_images_and_row_masks(name, baked, image, lines):
    size = (40, 28)
    model = complex_model() if image == "complex" else tiny_model()
    mask = row_mask(size) if lines == "rows" else cartesian_mask("random", 4, size, seed=1)
    kspace = (phased_undersampled if image == "complex" else undersampled)(size, mask, 2)
    lowered = copy.deepcopy(model)
    lowered.dc = LOWERINGS[name](size, mask if baked else None, model.image_channels, -2 if lines == "rows" else -1)
    with torch.no_grad():
        expected = model(kspace, line_mask(mask))
        error = (lowered(kspace, line_mask(mask)) - expected).abs().max().item()
    assert expected.shape == (2, model.image_channels, *size)
    assert error < 1e-5


def test_auto_picks_masked_for_rows():
    assert auto_lowering(row_mask((32, 24)), "onnx") == "masked"


@pytest.mark.parametrize("baked", [False, True], ids=["mask-input", "baked"])
def test_masked_computes_the_zero_filled_image_and_projection_once_outside_the_cascades(baked, tmp_path):
    """The DC's fixed cost is out of the loop in the graph itself (not left to an exporter merging copies): a traced
    4-cascade DC-CNN has its fixed matrix products once and one ``x (I - Re P)`` product per cascade, and still
    equals the reference model."""
    from kdc.models import DCCNN

    torch.manual_seed(0)
    model = DCCNN(cascades=4, convs=3, channels=8).eval()
    size = (24, 32)
    mask = cartesian_mask("random", 4, size, seed=1)
    kspace, mask_input = undersampled(size, mask, count=2), column_mask(mask)
    lowered = copy.deepcopy(model)
    lowered.dc = MaskedLowering(size, mask if baked else None)
    with torch.no_grad():
        traced = torch.jit.trace(lowered, (kspace, mask_input), check_trace=False)
        torch.testing.assert_close(traced(kspace, mask_input), model(kspace, mask_input), atol=1e-5, rtol=0)
    products = sum(node.kind() == "aten::matmul" for node in traced.inlined_graph.nodes())
    zero_filled = 6  # z: 4 products along H, 2 along W (the real part)
    projection = 0 if baked else 2  # Re P from the mask input
    # zero_filled() of the network's input and bind()'s z are the same expression, traced twice.
    assert products == 2 * zero_filled + projection + model.cascades.__len__()
