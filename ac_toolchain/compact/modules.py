"""Layers of the compact model that no standard module expresses.

``CompactConv2d`` is a column-pruned convolution as a gather-GEMM. Layout (the native kernels implement the
same op):

* im2col rows are numbered tap-major, ``r = (kh * KW + kw) * C + c`` (the order of an NHWC im2col);
* ``index`` (int64 [K']) lists the kept rows in ascending order;
* ``weight`` is the dense [F, K'] GEMM matrix, column j multiplying row ``index[j]``;
* ``out[n, f, y, x] = bias[f] + sum_j weight[f, j] * x_pad[n, c_j, y*s + kh_j*d, x*s + kw_j*d]``.

The forward pads the input once, takes one strided slice per kernel tap that keeps any column, gathers the
kept channels of that tap, concatenates them ([N, K', Ho, Wo]) and applies one 1x1 conv with ``weight``. It
exports to standard ONNX ops (Pad, Slice, Gather, Concat, Conv).
"""

from __future__ import annotations

import torch
from torch import nn

from ac_toolchain.errors import ModelError


def tap_major_rows(in_channels: int, kh: int, kw: int) -> torch.Tensor:
    """[C*KH*KW] map from PyTorch's (c, kh, kw) column order to tap-major row numbers."""
    c, i, j = torch.meshgrid(torch.arange(in_channels), torch.arange(kh), torch.arange(kw), indexing="ij")
    return ((i * kw + j) * in_channels + c).reshape(-1)


class CompactConv2d(nn.Module):
    def __init__(
        self, conv: nn.Conv2d, keep: torch.Tensor
    ) -> None:  # keep: bool [C*KH*KW] in PyTorch (c, kh, kw) order
        super().__init__()
        kh, kw = conv.kernel_size
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = (kh, kw), conv.stride
        if not isinstance(conv.padding, tuple):
            raise ModelError(f"CompactConv2d needs numeric padding, not {conv.padding!r}")
        self.padding: tuple[int, ...] = conv.padding
        self.dilation: tuple[int, ...] = conv.dilation
        rows = tap_major_rows(conv.in_channels, kh, kw)[keep]  # tap-major ids of the kept columns
        order = torch.argsort(rows)
        self.register_buffer("index", rows[order])
        w = conv.weight.detach().reshape(conv.out_channels, -1)[:, keep][:, order]  # [F, K']
        self.weight = nn.Parameter(w.clone())
        self.bias = nn.Parameter(conv.bias.detach().clone()) if conv.bias is not None else None
        self._taps = self._tap_plan()

    def _tap_plan(self) -> list[tuple[int, int, torch.Tensor]]:
        """(kh, kw, kept channels) per tap with any kept column, in tap-major order."""
        kh_n, kw_n = self.kernel_size
        plan = []
        index: torch.Tensor = self.index  # type: ignore[assignment]
        for t in range(kh_n * kw_n):
            chans = index[(index >= t * self.in_channels) & (index < (t + 1) * self.in_channels)]
            if len(chans):
                plan.append((t // kw_n, t % kw_n, chans - t * self.in_channels))
        return plan

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [N, C, H, W]
        (ph, pw), (sh, sw), (dh, dw) = self.padding, self.stride, self.dilation
        kh_n, kw_n = self.kernel_size
        x = nn.functional.pad(x, (pw, pw, ph, ph))
        ho = (x.shape[2] - dh * (kh_n - 1) - 1) // sh + 1
        wo = (x.shape[3] - dw * (kw_n - 1) - 1) // sw + 1
        parts = []
        for kh, kw, chans in self._taps:
            tap = x[:, :, kh * dh : kh * dh + sh * (ho - 1) + 1 : sh, kw * dw : kw * dw + sw * (wo - 1) + 1 : sw]
            parts.append(tap if len(chans) == self.in_channels else tap.index_select(1, chans.to(x.device)))
        cols = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # [N, K', Ho, Wo]
        w = self.weight.reshape(self.out_channels, -1, 1, 1)  # [F, K', 1, 1]
        return nn.functional.conv2d(cols, w, self.bias)  # [N, F, Ho, Wo]

    def to_conv2d(self) -> nn.Conv2d:
        """The same layer as a plain ``nn.Conv2d`` whose pruned columns are zeros (what compilers import: the
        TVM build turns the zero columns back into kept rows of the kernels/ compact-conv kernel)."""
        kh, kw = self.kernel_size
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,  # type: ignore[arg-type]
                         self.dilation, bias=self.bias is not None)  # type: ignore[arg-type]  # fmt: skip
        full = torch.zeros(self.out_channels, kh * kw * self.in_channels)
        full[:, self.index] = self.weight.detach()  # type: ignore[index]
        order = tap_major_rows(self.in_channels, kh, kw)  # (c, kh, kw) -> tap-major row
        conv.weight.data.copy_(full[:, order].reshape_as(conv.weight))
        if self.bias is not None and conv.bias is not None:
            conv.bias.data.copy_(self.bias.detach())
        return conv

    def extra_repr(self) -> str:
        k = int(self.index.numel())  # type: ignore[operator]
        total = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, columns={k}/{total}"


class GatherLinear(nn.Module):
    """A linear layer with pruned input features: ``y = x[:, index] @ weight.T + bias``."""

    def __init__(self, linear: nn.Linear, keep: torch.Tensor) -> None:  # keep: bool [in_features]
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("index", keep.nonzero().flatten())
        self.weight = nn.Parameter(linear.weight.detach()[:, keep].clone())  # [F, K']
        self.bias = nn.Parameter(linear.bias.detach().clone()) if linear.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [N, in_features]
        return nn.functional.linear(x.index_select(1, self.index), self.weight, self.bias)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kept={self.weight.shape[1]}"
