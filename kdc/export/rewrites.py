"""Value-identical rewrites of the graph an f32 export writes, for speed on OpenVINO's and onnxruntime's CPU.

``tap_sum``: a k x k convolution to a single channel (the last convolution of every DC-CNN cascade, VDSR's last)
becomes a 1x1 convolution to its k*k taps, ``t_k = sum_c w[0, c, k] x_c``, and a k x k convolution with fixed one-hot
kernels that adds the shifted taps, ``y = sum_k shift_k(t_k) + b``: the same products, summed in another order
(float32 rounding only; the parity gate checks every export). Single-output k x k kernels are slow on both CPU
runtimes: on the 256x256 KD student at f32 (per-node counters, loaded machine) OpenVINO spent 22.2 of 75.7 ms in
its five 32->1 convolutions and 13.3 ms after the rewrite (total 59.7 ms); onnxruntime went from 148 to 122 ms
(median). OpenVINO at bf16 runs the rewritten graph slower (5.0 -> 6.4 ms in those convolutions) and int8 would
quantize the one-hot kernels too, so only f32 exports for ONNX and OpenVINO get it, and only convolutions with more
input channels than taps (the demo models' 32 -> 1; not 8 -> 1), whose taps' map is smaller than their input.
"""

from __future__ import annotations

import torch
from torch import nn

#: Formats whose f32 exports are rewritten (the runtimes it was measured on).
REWRITTEN_FORMATS = ("onnx", "openvino")


class TapSum(nn.Module):
    """``conv`` (k x k, one output channel, stride 1, 'same' zero padding) as taps then their shifted sum."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        height, width = conv.kernel_size
        taps = height * width
        weight = conv.weight.detach()[0]  # (C, k, k)
        self.taps = nn.Conv2d(conv.in_channels, taps, 1, bias=False)
        self.taps.weight = nn.Parameter(weight.permute(1, 2, 0).reshape(taps, conv.in_channels, 1, 1).clone())
        self.gather = nn.Conv2d(taps, 1, conv.kernel_size, padding=conv.padding, bias=conv.bias is not None)
        one_hot = torch.zeros(1, taps, height, width)
        one_hot[0, torch.arange(taps), torch.arange(taps) // width, torch.arange(taps) % width] = 1.0
        self.gather.weight = nn.Parameter(one_hot)
        if conv.bias is not None:
            self.gather.bias = nn.Parameter(conv.bias.detach().clone())

    @staticmethod
    def applies(conv: nn.Module) -> bool:
        taps = conv.kernel_size[0] * conv.kernel_size[1] if isinstance(conv, nn.Conv2d) else 0
        # More input channels than taps: the taps' map is smaller than the input's, so memory does not grow (a
        # 4-channel model's 1600-slice batch peaked 221 MB above its start with the rewrite, against a 200 MB bound).
        return (type(conv) is nn.Conv2d and conv.out_channels == 1 and conv.in_channels > taps and conv.groups == 1
                and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.padding_mode == "zeros"
                and conv.padding == tuple(k // 2 for k in conv.kernel_size) and all(k % 2 for k in conv.kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gather(self.taps(x))


def rewrite_for_speed(graph: nn.Module, fmt: str, precision: str) -> list[str]:
    """Apply the rewrites that suit ``fmt`` at ``precision`` to ``graph`` in place; return their names."""
    if precision != "f32" or fmt not in REWRITTEN_FORMATS:
        return []
    targets = [(name, module) for name, module in graph.named_modules() if name and TapSum.applies(module)]
    for name, conv in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(graph.get_submodule(parent_name) if parent_name else graph, child, TapSum(conv))
    return ["tap_sum"] if targets else []
