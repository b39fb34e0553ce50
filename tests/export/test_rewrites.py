"""The f32 speed rewrite (tap_sum) computes what the convolution it replaces computes, and only f32 ONNX/OpenVINO
exports get it."""

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from kdc.export import export_model
from kdc.export.rewrites import TapSum, rewrite_for_speed
from kdc.mri.masks import cartesian_mask
from kdc.models import DCCNN

from .helpers import tiny_model

SIZE = (32, 32)


def wide_model() -> DCCNN:
    """A DC-CNN whose last convolutions (16 -> 1) have more input channels than taps (9)."""
    torch.manual_seed(0)
    return DCCNN(cascades=2, convs=3, channels=16).eval()


@pytest.mark.parametrize("kernel", [3, 5])
def test_tap_sum_matches_the_convolution_it_replaces(kernel):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 1, kernel, padding=kernel // 2)
    x = torch.randn(2, 8, 20, 17)
    with torch.no_grad():
        np.testing.assert_allclose(TapSum(conv)(x).numpy(), conv(x).numpy(), atol=1e-5)


def test_only_wide_single_output_same_padded_convolutions_are_rewritten():
    model = wide_model()
    assert rewrite_for_speed(model, "onnx", "f32") == ["tap_sum"]
    assert [type(c.convs[-1]) for c in model.cascades] == [TapSum, TapSum]  # 16 -> 1
    assert all(type(conv) is nn.Conv2d for c in model.cascades for conv in c.convs[:-1])  # 1 -> 16, 16 -> 16
    for fmt, precision in (("onnx", "bf16"), ("onnx", "int8"), ("torchscript", "f32")):
        assert rewrite_for_speed(wide_model(), fmt, precision) == []
    assert rewrite_for_speed(tiny_model(), "onnx", "f32") == []  # 8 -> 1: the taps' map would outgrow the input
    assert TapSum.applies(nn.Conv2d(16, 1, 3, padding=1))
    assert not TapSum.applies(nn.Conv2d(16, 1, 3, padding=0)) and not TapSum.applies(nn.Conv2d(16, 1, 3, stride=2))


def test_f32_export_writes_the_rewritten_graph_and_matches_pytorch(tmp_path):
    mask = cartesian_mask("random", 4, SIZE, seed=1)
    report = export_model(wide_model(), tmp_path / "m.onnx", mask=mask, role="student")
    assert report.metadata["precision"]["rewrites"] == ["tap_sum"] and report.parity_error < 1e-5
    kernels = [next(list(a.ints) for a in node.attribute if a.name == "kernel_shape")
               for node in onnx.load(report.path).graph.node if node.op_type == "Conv"]
    assert kernels.count([1, 1]) == 2 and len(kernels) == 8  # per cascade: 3x3, 3x3, 1x1 taps, 3x3 one-hot sum
